"""Time the dense GEMV kernel (the exact layers, and the dense baseline) under several knob settings
and weight layouts, side by side in one process.

    python scripts/bench_gemv.py --shape 3000x750 --shape 3000x1500 --cold \
        '{"rows_per_group": 8, "lanes": 16}' '{"rows_per_group": 4, "lanes": 16}' --layouts aligned unaligned

Variants are interleaved in a different order each round; the result is the median over rounds of
each round's median call. --cold reads 128 MiB before every timed call, as the benchmark suite's
cold tables do. Threads: TVM_NUM_THREADS.
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
from tvm_dual.kernels.gemv import GemvConfig, GemvShape, make_gemv
from tvm_dual.kernels.row_dot import pad_rows
from tvm_dual.target import host_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="+", help="GemvConfig knobs as JSON objects")
    ap.add_argument("--shape", action="append", default=None, help="NxK of W (repeatable; default 3000x750)")
    ap.add_argument("--layouts", nargs="+", choices=("aligned", "unaligned"), default=["aligned"],
                    help="W's rows padded to whole cache lines (the default layout) or PyTorch's")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=100, help="timed calls per variant and round")
    ap.add_argument("--cold", action="store_true", help="read 128 MiB before every timed call")
    ap.add_argument("--small-pages", action="store_true",
                    help="leave W on 4 KiB pages (compiled models put it on 2 MiB pages: huge_pages.py)")
    args = ap.parse_args()

    target = host_target()
    rng = np.random.default_rng(0)
    variants = []
    for text in args.shape or ["3000x750"]:
        n, k = (int(v) for v in text.lower().split("x"))
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        x = tvm.runtime.tensor(rng.standard_normal((1, k)).astype(np.float32))
        bias = tvm.runtime.tensor(np.zeros(n, np.float32))
        for layout in args.layouts:
            shape = GemvShape(1, n, k, "none", aligned_rows=layout == "aligned")
            W = tvm.runtime.tensor(pad_rows(w, shape.row_stride))
            if not args.small_pages:
                collapse(W.data_ptr(), tensor_nbytes(W))
            for knobs in args.configs:
                kernel = tvm.compile(tvm.IRModule({"main": make_gemv(shape, GemvConfig(**json.loads(knobs)))}), target=target)["main"]
                y = tvm.runtime.tensor(np.zeros((1, n), np.float32))
                variants.append((f"{n}x{k} {layout:9} {knobs}", kernel, (x, W, bias, y), n * k * 4))
    flush = CacheFlusher(128 << 20, int(os.environ.get("TVM_NUM_THREADS", "1"))) if args.cold else None
    times: list[list[float]] = [[] for _ in variants]
    for rnd in range(args.rounds):
        for i in np.random.default_rng(rnd).permutation(len(variants)):
            _, kernel, call_args, _ = variants[i]
            for _ in range(20):
                kernel(*call_args)
            calls = []
            for _ in range(args.calls):
                if flush is not None:
                    flush()
                start = time.perf_counter()
                kernel(*call_args)
                calls.append(time.perf_counter() - start)
            times[i].append(float(np.median(calls)) * 1e6)
    for (name, _, _, nbytes), t in zip(variants, times):
        us = float(np.median(t))
        print(f"{us:9.1f} us  {nbytes / us / 1e3:6.1f} GB/s  (rounds {min(t):.0f}-{max(t):.0f})  {name}")


if __name__ == "__main__":
    main()
