"""What a larger little module costs in speed: one step of a random-weight LSTM layer, dense and at
one insensitive ratio for several little-module ranks, interleaved in rounds in one process.

    TVM_NUM_THREADS=1 .venv/bin/python scripts/bench_little_rank.py --hidden 750 --ranks 100 200 384

The quality side of the trade needs a trained model (scripts/simulate_gate_ratios.py --rank,
scripts/eval_ptb.py --rank); speed depends on the shapes and the fraction of rows read, which the
thresholds fix, so random weights serve here. Threads: TVM_NUM_THREADS (pass the same --threads).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

import tvm_dual
from tvm_dual.bench.engines.tvm import aligned_copy
from tvm_dual.bench.timing import CacheFlusher, TimingPlan, measure
from tvm_dual.little import LittleConfig


class LSTMStep(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.rnn = torch.nn.LSTM(hidden, hidden)

    def forward(self, x, h, c):
        out, (h2, c2) = self.rnn(x, (h, c))
        return out, h2, c2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=750)
    parser.add_argument("--ranks", type=int, nargs="+", default=[100, 200, 384])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="threads of the cache flush; set TVM_NUM_THREADS too")
    args = parser.parse_args()
    torch.manual_seed(0)
    H = args.hidden
    model = LSTMStep(H).eval()

    def state() -> tuple[torch.Tensor, ...]:
        return torch.randn(1, 1, H), torch.tanh(torch.randn(1, 1, H)), torch.randn(1, 1, H)

    calibration = [state() for _ in range(400)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = {"dense": tvm_dual.compile_dual(model, calibration[0], insensitive_ratio=0.0)}
        for rank in args.ranks:
            modules[f"{args.ratio:g}, rank {rank}"] = tvm_dual.compile_dual(
                model, calibration[0], calibration=calibration[:300], validation=calibration[300:],
                insensitive_ratio=args.ratio, little=LittleConfig(rank=rank),
            )
    inputs = [tuple(aligned_copy(t.numpy()) for t in state()) for _ in range(64)]
    flush = CacheFlusher(128 << 20, args.threads)
    plan = TimingPlan(warmup_s=0.5, budget_s=1.5, min_samples=40)
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for name in list(modules) if round_ % 2 else list(modules)[::-1]:
            for cache in ("hot", "cold"):
                stats = measure(lambda x, m=modules[name]: m(*x), inputs, plan, flush=flush if cache == "cold" else None)
                times.setdefault((name, cache), []).append(stats.median_us)
    # what each module read per call over all the timed calls: a lower rank may also shift the
    # fraction of rows its thresholds leave exact, which moves the time as much as the rank does
    read = {}
    for name, module in modules.items():
        stats = module.stats()
        read[name] = (sum(s.dual_bytes for s in stats) / 2**20, np.mean([s.observed_ratio for s in stats])) if stats else None
    for cache in ("hot", "cold"):
        dense = np.median(times[("dense", cache)])
        for name in modules:
            t = np.median(times[(name, cache)])
            extra = "" if read[name] is None else f"  {read[name][0]:.2f} MiB per call, observed ratio {read[name][1]:.3f}"
            print(f"{cache:4s} {name:16s} {t:8.1f} us  {dense / t:.2f}x vs dense{extra}")


if __name__ == "__main__":
    main()
