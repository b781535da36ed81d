"""The quickstart draws its curves into the run directory and says where: a real (shortened) run, its image checked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

C0 = (31, 119, 180)  # matplotlib's first line colour


@pytest.mark.slow
def test_the_quickstart_writes_its_curves_with_the_evaluation_and_prints_the_path(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    env = {**os.environ, "PRISM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    overrides = ["train.max_steps=20", "data.num_train=256", "data.num_test=24", f"train.output_dir={tmp_path}",
                 "train.run_name=qs"]
    result = subprocess.run([sys.executable, "-m", "prism_core.cli.run", *overrides], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    plot = tmp_path / "qs" / "curves.png"
    assert f"curves: {plot}" in result.stdout.splitlines()
    with Image.open(plot) as image:
        assert image.size == (1100, 750)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert sum(n for n, rgb in colours if rgb != (255, 255, 255)) > 0.03 * 1100 * 750  # not blank
        bottom_right = image.convert("RGB").crop((550, 375, 1100, 750)).getcolors(maxcolors=1 << 20)
        assert sum(n for n, rgb in bottom_right if rgb == C0) > 20  # the held-out accuracy markers
