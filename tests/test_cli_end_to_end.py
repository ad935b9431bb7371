"""The tvm-dual command end to end, in subprocesses: compile -> .so -> eval -> report, on a tiny
model from a factory module, and one-line errors with a non-zero exit."""

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import tvm_dual as tvm_dual_lib
from tvm_dual.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(48, 96)
            self.fc2 = nn.Linear(96, 64)
            self.head = nn.Linear(64, 5)

        def forward(self, x):
            return self.head(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))

    def make():
        torch.manual_seed(0)
        model = Tiny().eval()
        # inputs near a plane: the rank-3 little modules are accurate, so predictions mostly agree
        data = torch.randn(1200, 2) @ torch.randn(2, 48) + 0.01 * torch.randn(1200, 48)
        return model, (data[:1],), [(data[i : i + 200],) for i in range(0, 1200, 200)]

    def agreement(m):
        # fraction of held-out inputs whose predicted class is the exact model's
        model, _, _ = make()
        torch.manual_seed(1)
        x = torch.randn(500, 2) @ torch.randn(2, 48) + 0.01 * torch.randn(500, 48)
        return float((m(x).argmax(1) == model(x).argmax(1)).float().mean())
    """
)


def tvm_dual(args, cwd, check=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), str(ROOT)]), TVM_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "tvm_dual.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"tvm-dual {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli")
    (path / "tiny_factory.py").write_text(FACTORY)
    return path


def _factory(workdir):
    sys.path.insert(0, str(workdir))
    try:
        import tiny_factory
    finally:
        sys.path.remove(str(workdir))
    return tiny_factory.make()


def test_compile_eval_report(workdir):
    lib = workdir / "tiny.so"
    done = tvm_dual(["compile", "tiny_factory:make", "-o", str(lib), "--ratio", "fc1=0.5", "--ratio", "fc2=0.3"], workdir)
    assert lib.is_file()
    assert "fc1" in done.stdout and "fc2" in done.stdout

    # eval on the factory's data: its numbers are those of the library run here on the same data
    done = tvm_dual(["eval", str(lib), "--model", "tiny_factory:make", "--limit", "300"], workdir)
    assert "on 300 input tuple(s)" in done.stdout
    model, _, calibration = _factory(workdir)
    rows = np.concatenate([batch[0].numpy() for batch in calibration])[:300]
    module = tvm_dual_lib.load(lib)
    dual = np.concatenate([module(rows[i : i + 1]) for i in range(len(rows))])
    with torch.no_grad():
        exact = model(torch.from_numpy(rows)).numpy()
    max_error = float(done.stdout.split("max |error| ")[1].split()[0])
    assert max_error == pytest.approx(np.abs(dual - exact).max(), rel=1e-3)
    agreement = float(done.stdout.split("argmax agreement of the first output: ")[1].split("= ")[1].split()[0])
    assert agreement == pytest.approx((dual.argmax(1) == exact.argmax(1)).mean(), abs=1e-4)
    assert agreement > 0.8, done.stdout

    # report on an .npz of stacked samples: the per-layer table, observed ratios near target, the plot
    np.savez(workdir / "samples.npz", rows[:200, None, :])
    png = workdir / "tiny.png"
    done = tvm_dual(["report", str(lib), "--inputs", str(workdir / "samples.npz")], workdir)
    assert "200 input tuple(s)" in done.stdout
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.split() and line.split()[0] in ("fc1", "fc2", "other")}
    assert rows["fc1"][1] == "relu" and rows["fc1"][2] == "96x48"
    assert float(rows["fc1"][3]) == 0.5 and abs(float(rows["fc1"][4]) - 0.5) < 0.1
    assert float(rows["fc2"][3]) == 0.3 and abs(float(rows["fc2"][4]) - 0.3) < 0.1
    shares = [float(rows[name][-1].rstrip("%")) for name in ("fc1", "fc2", "other")]
    assert all(0 < share < 100 for share in shares) and abs(sum(shares) - 100) < 0.5
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compile_with_a_quality_budget(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    lib = workdir / "budget.so"
    assert main(["compile", "tiny_factory:make", "-o", str(lib), "--metric", "tiny_factory:agreement", "--max-drop", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "quality budget: metric 1 exact, at most -0.02" in out and "best uniform ratio" in out
    report = tvm_dual_lib.load(lib).metadata["quality_budget"]
    assert report["per_layer"]["metric"] >= 0.98 and report["per_layer"]["bytes_saved"] >= report["uniform"]["bytes_saved"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["compile", "tiny_factory:nope", "-o", "x.so"], "has no attribute 'nope'"),
        (["compile", "tiny_factory:make", "-o", "x.so", "--ratio", "1.5"], "must be a number in [0, 1)"),
        (["compile", "tiny_factory:make", "-o", "x.so", "--ratio", "fc9=0.5"], "no dual-capable layer named 'fc9'"),
        (["compile", "tiny_factory:make", "-o", "x.so", "--ratio", "fc1=0.5", "--ratio", "0.3"], "not both"),
        (["compile", "tiny_factory:make", "-o", "x.so", "--metric", "tiny_factory:make"], "--metric and --max-drop go together"),
        (["eval", "missing.so", "--model", "tiny_factory:make"], "no tvm_dual library at 'missing.so'"),
        (["report", "tiny_factory.py"], "is not a loadable shared library"),
    ],
)
def test_errors_are_one_line(workdir, monkeypatch, capsys, args, message):
    # in process (main() is what the console script runs); the subprocess path is tested above
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tvm-dual {args[0]}: error: ") and message in err[0], err


def test_help_has_examples():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in ("compile", "eval", "report"):
        text = subparsers[command].format_help()
        assert "examples:" in text and f"tvm-dual {command} " in text


def test_verbose_shows_the_traceback(capsys):
    assert main(["-v", "eval", "missing.so", "--model", "tiny_factory:make"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "tvm-dual eval: error: no tvm_dual library at 'missing.so'"


def test_npz_inputs_that_are_not_samples_are_named(tmp_path):
    from tvm_dual.commands.common import npz_inputs
    from tvm_dual.frontend import TensorSpec

    specs = [TensorSpec("x", (1, 16), "float32")]
    np.save(tmp_path / "plain.npy", np.zeros((3, 1, 16), np.float32))
    np.savez(tmp_path / "empty.npz", np.zeros((0, 1, 16), np.float32))
    np.savez(tmp_path / "good.npz", np.zeros((3, 1, 16), np.float32))
    with pytest.raises(ValueError, match="is a single array, not an .npz archive"):
        npz_inputs(str(tmp_path / "plain.npy"), specs)
    with pytest.raises(ValueError, match="holds no samples"):
        npz_inputs(str(tmp_path / "empty.npz"), specs)
    assert len(npz_inputs(str(tmp_path / "good.npz"), specs)) == 3
