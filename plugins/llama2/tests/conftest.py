import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Helper modules next to the tests (uniquely named per plugin) import under any pytest import mode.
sys.path.insert(0, str(Path(__file__).parent))
