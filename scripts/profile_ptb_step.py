"""Where the time of one token step of a trained PTB recurrent layer goes: compile the layer step at
each ratio and print the median time of every compiled kernel inside the Relax VM
(DualModule.profile), next to the whole call through DualModule on rotating validation inputs.

    TVM_NUM_THREADS=1 .venv/bin/python scripts/profile_ptb_step.py --model lstm-750 --ratios 0.5 0.9

Kernel times include an instrument callback around each call (about a microsecond); compare them
with each other. Needs the trained checkpoint (scripts/train_ptb.py).
"""

from __future__ import annotations

import argparse
import time

import tvm_dual
from tvm_dual import ptb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lstm-750")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    parser.add_argument("--calls", type=int, default=1000, help="timed whole-step calls per ratio")
    args = parser.parse_args()

    lm, _ = ptb.load_trained(args.model)
    corpus = ptb.load_corpus()
    step = ptb.step_workload(args.model, layer=True, corpus=corpus)
    inputs = ptb.spread_step_inputs(lm, corpus.valid[5000:7001], 64)  # as the benchmark's ptb_step workload
    for ratio in args.ratios:
        module = tvm_dual.compile_dual(step.model, step.example_inputs, calibration=step.calibration,
                                       validation=step.validation, insensitive_ratio=ratio)
        for i in range(200):
            module(*inputs[i % len(inputs)])
        start = time.perf_counter()
        for i in range(args.calls):
            module(*inputs[i % len(inputs)])
        per_call = (time.perf_counter() - start) / args.calls
        print(f"\n{args.model} ratio {ratio}: {1e6 * per_call:.1f} us per step through DualModule (rotating inputs)")
        print(module.stats())
        for symbol, seconds in sorted(module.profile(*inputs[1]).items(), key=lambda kv: -kv[1]):
            print(f"  {1e6 * seconds:9.1f} us  {symbol}")


if __name__ == "__main__":
    main()
