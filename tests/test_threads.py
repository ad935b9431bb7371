"""TVM_NUM_THREADS decides how many threads compiled modules use."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import torch, tvm, tvm_dual
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh()).eval()
mod = tvm_dual.compile_dual(model, (torch.randn(1, 64),), insensitive_ratio=0.0)
mod(torch.randn(1, 64))
print(tvm.get_global_func("runtime.NumThreads")())
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_tvm_num_threads_is_respected(threads):
    env = dict(os.environ, TVM_NUM_THREADS=threads)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == threads
