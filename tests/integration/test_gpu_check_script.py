"""The prepared GPU check (benchmarks/gpu_check.py) runs its CPU path here, so a session lent a GPU finds it working."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_cpu_and_reports_every_figure(tmp_path):
    out = tmp_path / "gpu-check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["mfu"]["tokens_per_s"] > 0 and 0 < figures["mfu"]["mfu"] < 1
    assert figures["generation"]["passed"] and figures["generation"]["decisive_rows"] > 0
    assert "generation check: passed" in result.stdout
