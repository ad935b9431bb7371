"""Time whole DualModule calls with the kernel plan and through the Relax VM, side by side.

Compiles the benchmark suite's Linear 1024 -> 4096 + tanh workload (or another registered workload)
dense and at the given insensitive ratios, exports each, and loads every library twice: once as
users get it (kernel plan) and once with TVM_DUAL_KERNEL_PLAN=0 (the VM). All variants share one
process and are interleaved in every round; the result is the median over rounds of each round's
median. --cold reads 128 MiB before every timed call, as the benchmark suite's cold tables do.

    TVM_NUM_THREADS=1 python scripts/bench_executor.py --cold --ratios 0 0.5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import tvm_dual
from tvm_dual.bench.engines.tvm import aligned_copy
from tvm_dual.bench.timing import CacheFlusher
from tvm_dual.bench.workloads import build_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="linear")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=150, help="timed calls per variant and round")
    ap.add_argument("--cold", action="store_true", help="read 128 MiB before every timed call")
    args = ap.parse_args()

    workload = build_workload(args.workload)
    inputs = [tuple(aligned_copy(a) for a in x) for x in workload.timing_inputs]
    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    flush = CacheFlusher(128 << 20, threads) if args.cold else (lambda: None)
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in args.ratios:
            module = tvm_dual.compile_dual(
                workload.model, workload.example_inputs, calibration=workload.calibration, insensitive_ratio=ratio
            )
            path = os.path.join(tmp, f"r{ratio}.so")
            module.export_library(path)
            for switch in ("1", "0"):
                os.environ["TVM_DUAL_KERNEL_PLAN"] = switch
                loaded = tvm_dual.load(path)
                loaded(*inputs[0])
                variants[f"ratio {ratio:.2f}, {loaded.executor}"] = loaded
        os.environ.pop("TVM_DUAL_KERNEL_PLAN")
        rounds: dict[str, list[float]] = {name: [] for name in variants}
        order = list(variants)
        for r in range(args.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                module = variants[name]
                for i in range(16):  # warm-up
                    flush()
                    module(*inputs[i % len(inputs)])
                times = []
                for i in range(args.calls):
                    flush()
                    start = time.perf_counter()
                    module(*inputs[i % len(inputs)])
                    times.append(time.perf_counter() - start)
                rounds[name].append(float(np.median(times)) * 1e6)
    print(f"{args.workload}, {'cold' if args.cold else 'hot'}, {threads} thread(s): median over {args.rounds} rounds (us)")
    for name, values in rounds.items():
        print(f"  {name:60s} {np.median(values):8.1f}   rounds: {' '.join(f'{v:.0f}' for v in values)}")


if __name__ == "__main__":
    main()
