"""The README's main job, `make demo` (scripts/demo.py), run small: it trains, compiles, and prints
accuracy against dense and PyTorch, per-layer speed and the layers' observed ratios."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


def test_the_demo_runs_and_reports_accuracy_speed_and_ratios():
    command = [sys.executable, str(DEMO), "--seconds", "2", "--ratios", "0.5", "--rounds", "1", "--timing-images", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ, TVM_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    torch_accuracy = float(re.search(r"PyTorch eager: accuracy ([\d.]+)%", out).group(1))
    rows = {m.group(1): m for m in re.finditer(r"^\s*(dense|0\.50)\s+([\d.]+)%\s+([\d.]+)((?:\s+[\d.]+ \([\d.]+x, [\d.]+x\)){3})",
                                              out, re.MULTILINE)}
    assert set(rows) == {"dense", "0.50"}, out
    dense_accuracy, dual_accuracy = float(rows["dense"].group(2)), float(rows["0.50"].group(2))
    assert abs(dense_accuracy - torch_accuracy) < 0.05  # the dense build is PyTorch's model, image for image
    assert torch_accuracy > 70.0  # two seconds of training on the real data, not chance (10%)
    assert abs(dual_accuracy - dense_accuracy) < 2.0
    observed = [float(v) for v in re.findall(r"^(?:fc1|fc2)\s+\w+\s+\d+x\d+\s+\d+\s+0\.500\s+[\d.]+\s+([\d.]+)", out, re.MULTILINE)]
    assert len(observed) == 2 and all(abs(v - 0.5) <= 0.05 for v in observed), out
