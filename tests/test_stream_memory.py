"""A 10,000-step LSTM stream (a one-step LSTMCell model compiled once, its state fed back each call)
runs with flat memory: resident set size after warm-up grows by less than a few MiB."""

import gc

import psutil
import torch
from torch import nn

import tvm_dual

STEPS = 10_000
WARMUP = 1_000
MAX_GROWTH = 4 * 2**20  # bytes; keeping each step's output alive grows RSS by about 32 MiB here


class Step(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(32, 64)

    def forward(self, x, h, c):
        return self.cell(x, (h, c))


@torch.no_grad()
def test_lstm_stream_keeps_memory_flat():
    torch.manual_seed(0)
    model = Step().eval()
    calibration = []
    for _ in range(30):
        h = c = torch.zeros(1, 64)
        for x in torch.randn(20, 1, 32):
            calibration.append((x, h, c))
            h, c = model(x, h, c)
    zeros = torch.zeros(1, 64)
    mod = tvm_dual.compile_dual(model, (torch.zeros(1, 32), zeros, zeros), calibration=calibration, insensitive_ratio=0.5)
    assert [layer["name"] for layer in mod.metadata["layers"]] == ["cell"]  # the gates are dual

    inputs = torch.randn(STEPS, 1, 32)
    process = psutil.Process()
    h, c = zeros, zeros
    for step in range(STEPS):
        if step == WARMUP:
            gc.collect()
            start = process.memory_info().rss
        h, c = mod(inputs[step], h, c)
    gc.collect()
    growth = process.memory_info().rss - start
    print(f"RSS growth over {STEPS - WARMUP} steps after warm-up: {growth / 2**20:.2f} MiB")
    assert growth < MAX_GROWTH, f"RSS grew by {growth / 2**20:.1f} MiB over {STEPS - WARMUP} steps"
    assert torch.isfinite(h).all() and torch.isfinite(c).all()
    (stats,) = mod.stats()
    assert stats.calls == STEPS and 0.3 < stats.observed_ratio < 0.7
