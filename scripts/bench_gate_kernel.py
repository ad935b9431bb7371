"""Time the recurrent gate kernel alone under several knob settings, side by side.

Random weights, and per-row thresholds that make a given fraction of gate rows sensitive; the
selection changes every call (32 selections in rotation), as a real token stream's does, so rows
come from memory rather than from the cache lines the previous call left behind (the weights of a
750-unit layer still fit a 32 MiB L3; --cold flushes the caches before every timed call, as the
benchmark suite's cold tables do). Configurations
are interleaved in a different order each round; the result is the median over rounds.

    python scripts/bench_gate_kernel.py --cell lstm --hidden 750 --sensitive 0.5 \
        '{"lanes": 16, "rows_per_group": 4, "little_block": 16}' '{"lanes": 8, "rows_per_group": 8, "little_block": 32}'

Threads: TVM_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import tvm

from tvm_dual.bench.timing import CacheFlusher
from tvm_dual.huge_pages import collapse, tensor_nbytes
from tvm_dual.kernels.dual_dense import DualKernelConfig
from tvm_dual.kernels.dual_gates import CELLS, GateShape, gate_kernel_weights, little_groups, make_dual_gates, pack_gate_constants
from tvm_dual.target import host_target, vector_bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="+", help="DualKernelConfig knobs as JSON objects")
    ap.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    ap.add_argument("--hidden", type=int, default=750)
    ap.add_argument("--input-size", type=int, default=None, help="default: the hidden size")
    ap.add_argument("--rank", type=int, default=100)
    ap.add_argument("--sensitive", type=float, default=0.5, help="fraction of gate rows computed exactly")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=300, help="timed calls per configuration and round")
    ap.add_argument("--run-length", type=int, default=1, help="exact rows come in runs of this many consecutive rows")
    ap.add_argument("--cold", action="store_true", help="read 128 MiB before every timed call (median of the calls)")
    ap.add_argument("--layouts", nargs="+", choices=("aligned", "unaligned"), default=["aligned"],
                    help="weight rows padded to whole cache lines (the default layout) or PyTorch's; each config runs in each")
    ap.add_argument("--small-pages", action="store_true",
                    help="leave the weights on 4 KiB pages (compiled models put them on 2 MiB pages: huge_pages.py)")
    args = ap.parse_args()

    H, R = args.hidden, args.rank
    I = args.input_size or H
    shapes = {layout: GateShape(args.cell, 1, H, I, R, fused=True, aligned_rows=layout == "aligned") for layout in args.layouts}
    ng, nl = CELLS[args.cell], little_groups(args.cell, True)
    variants = [(text, layout) for text in args.configs for layout in args.layouts]
    configs = [DualKernelConfig(**json.loads(text)) for text, _ in variants]
    target = host_target()
    bits = vector_bits(target)
    kernels = [tvm.compile(tvm.IRModule({"main": make_dual_gates(shapes[layout], c, vector_bits=bits)}), target=target)["main"]
               for c, (_, layout) in zip(configs, variants)]

    rng = np.random.default_rng(0)
    f32 = np.float32

    def tensor(a: np.ndarray) -> tvm.runtime.Tensor:
        return tvm.runtime.tensor(np.ascontiguousarray(a))

    W_ih = (rng.standard_normal((ng * H, I)) / np.sqrt(I + H)).astype(f32)
    W_hh = (rng.standard_normal((ng * H, H)) / np.sqrt(I + H)).astype(f32)
    weights = {layout: [tensor(w) for w in gate_kernel_weights(shape, W_ih, W_hh)] for layout, shape in shapes.items()}
    if not args.small_pages:
        on_huge = sum(collapse(w.data_ptr(), tensor_nbytes(w)) for ws in weights.values() for w in ws)
        print(f"weights on 2 MiB pages: {on_huge / 2**20:.0f} MiB")
    P = rng.integers(-127, 128, (R, I + H)).astype(np.int8)
    WL = rng.integers(-127, 128, (nl * H, R)).astype(np.int8)
    xs = [tensor(rng.standard_normal((1, I)).astype(f32)) for _ in range(8)]
    hs = [tensor(rng.standard_normal((1, H)).astype(f32)) for _ in range(8)]
    outputs = [tensor(np.zeros((1, ng * H), f32)), tensor(np.zeros(1, np.int32)), tensor(np.zeros((1, ng * H), f32))]
    # rows chosen in runs of --run-length consecutive gate rows (1: row by row, as real selections are)
    run = args.run_length
    selections = [np.repeat(rng.random(-(-ng * H // run)) < args.sensitive, run)[: ng * H] for _ in range(32)]

    def constants(config: DualKernelConfig) -> list[list[tvm.runtime.Tensor]]:
        out, shared = [], None
        for chosen in selections:
            lo = np.where(chosen, -np.inf, np.inf).astype(f32)
            packed = pack_gate_constants(np.zeros(nl * H, f32), P, np.full(R, 1e-3, f32), WL, np.full(nl * H, 1e-3, f32),
                                         np.zeros(nl * H, f32), lo, -lo, H, config, bits)
            shared = shared or [tensor(a) for a in packed[:6]]  # only the thresholds rotate
            out.append(shared + [tensor(a) for a in packed[6:]])
        return out

    per_config = [constants(c) for c in configs]
    weights_of = [weights[layout] for _, layout in variants]
    times: list[list[float]] = [[] for _ in configs]
    flush = CacheFlusher(128 << 20, int(os.environ.get("TVM_NUM_THREADS", "1"))) if args.cold else None
    for rnd in range(args.rounds):
        for ci in np.random.default_rng(rnd).permutation(len(configs)):
            kernel, consts, weights = kernels[ci], per_config[ci], weights_of[ci]
            for i in range(50):
                kernel(xs[0], hs[0], *weights, *consts[i % 32], *outputs)
            if flush is None:
                start = time.perf_counter()
                for i in range(args.calls):
                    kernel(xs[i % 8], hs[i % 8], *weights, *consts[i % 32], *outputs)
                times[ci].append((time.perf_counter() - start) / args.calls * 1e6)
                continue
            calls = []
            for i in range(args.calls):
                flush()
                start = time.perf_counter()
                kernel(xs[i % 8], hs[i % 8], *weights, *consts[i % 32], *outputs)
                calls.append(time.perf_counter() - start)
            times[ci].append(float(np.median(calls)) * 1e6)
    rows = int(outputs[1].numpy()[0])
    print(f"{args.cell.upper()} hidden {H} input {I} rank {R}: {rows} of {ng * H} gate rows exact in the last call")
    for (text, layout), t in zip(variants, times):
        print(f"{np.median(t):9.1f} us  (rounds {min(t):.0f}-{max(t):.0f})  {text}" + (f"  {layout} rows" if len(shapes) > 1 else ""))


if __name__ == "__main__":
    main()
