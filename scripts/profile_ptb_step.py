"""Where the time of one token step of a trained PTB recurrent layer goes: compile the layer step at
each ratio and print the median time of every compiled kernel (DualModule.profile), next to the
whole call through DualModule, both on the same rotating validation inputs.

    TVM_NUM_THREADS=1 .venv/bin/python scripts/profile_ptb_step.py --model lstm-750 --ratios 0 0.5 0.9 [--cold]

--cold reads 128 MiB before every call (whole steps and kernels alike), as the
benchmark suite's cold tables do. Needs the trained checkpoint (scripts/train_ptb.py).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import tvm_dual
from tvm_dual import ptb
from tvm_dual.bench.timing import CacheFlusher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lstm-750")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    parser.add_argument("--calls", type=int, default=1000, help="timed whole-step calls per ratio")
    parser.add_argument("--cold", action="store_true", help="read 128 MiB before every call")
    args = parser.parse_args()
    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    flush = CacheFlusher(128 << 20, threads) if args.cold else None

    lm, _ = ptb.load_trained(args.model)
    corpus = ptb.load_corpus()
    step = ptb.step_workload(args.model, layer=True, corpus=corpus)
    inputs = ptb.spread_step_inputs(lm, corpus.valid[5000:7001], 64)  # as the benchmark's ptb_step workload
    for ratio in args.ratios:
        module = tvm_dual.compile_dual(step.model, step.example_inputs, calibration=step.calibration,
                                       validation=step.validation, insensitive_ratio=ratio)
        times = []
        for i in range(200 + args.calls):
            if flush is not None:
                flush()
            start = time.perf_counter()
            module(*inputs[i % len(inputs)])
            times.append(time.perf_counter() - start)
        per_call = float(np.median(times[200:]))
        print(f"\n{args.model} ratio {ratio}, {'cold' if flush else 'hot'}: {1e6 * per_call:.1f} us per step through "
              f"DualModule (median, rotating inputs; {module.executor})")
        print(module.stats())
        kernels = module.profile(rotate=inputs, repeat=args.calls if flush else 256, flush=flush)
        for symbol, seconds in sorted(kernels.items(), key=lambda kv: -kv[1]):
            print(f"  {1e6 * seconds:9.1f} us  {symbol}")


if __name__ == "__main__":
    main()
