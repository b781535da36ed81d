import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Helper modules next to the tests (uniquely named per plugin) import under any pytest import mode.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """Every benchmark's tiny fixture under one data root (tests that change files copy it first)."""
    from vlm_eval_fixtures import write_all

    return write_all(tmp_path_factory.mktemp("vlm-eval-data"))
