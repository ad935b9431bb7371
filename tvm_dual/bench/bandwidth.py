"""Streaming read bandwidth: the physical limit of a memory-bound kernel, measured in the same run.

A vectorized TVM kernel sums a float32 buffer with 64 independent accumulator lanes (eight AVX2
registers), so that the loads, not the adds, set the pace. Each task reads its part as STREAMS
interleaved sequential streams, as a GEMV reads a group of rows: one stream alone leaves memory-level
parallelism unused (measured here: 12 GB/s instead of 21 GB/s on a 16 MiB buffer). Reading the same buffer again and again measures the bandwidth of the level it fits in: a
buffer the size of a model's weights gives the hot-cache limit of that model, one much larger than
the last-level cache gives the DRAM limit. Reading the model-sized buffer once after each cache flush, as cold calls
are timed, gives the rate a cold call of that size reaches, which can differ from the steady DRAM
rate either way (start-up of each read; lines a victim L3 kept through the flush).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

LANES = 64
COLD_READ = "working set, read cold"  # label of the cold-call limit's buffer
STREAMS = 4


@functools.lru_cache(maxsize=None)
def stream_sum_kernel():
    """The compiled kernel: stream_sum(a (N,) f32, out (tasks, LANES) f32); tasks = out.shape[0]."""
    import tvm
    from tvm.script import tirx as T

    from ..target import host_target

    L, S = LANES, STREAMS

    @T.prim_func
    def stream_sum(a_h: T.handle, out_h: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        N = T.int32()
        NT = T.int32()
        a = T.match_buffer(a_h, (N,), "float32")
        out = T.match_buffer(out_h, (NT, L), "float32")
        for t in T.parallel(NT):
            acc = T.alloc_buffer((L,), "float32")
            for v in T.vectorized(L):
                acc[v] = T.float32(0)
            for i in range(N // (NT * S * L)):
                for s in T.unroll(S):
                    for v in T.vectorized(L):
                        acc[v] = acc[v] + a[t * (N // NT) + s * (N // (NT * S)) + i * L + v]
            for v in T.vectorized(L):
                out[t, v] = acc[v]

    return tvm.compile(tvm.IRModule({"stream_sum": stream_sum}), target=host_target())["stream_sum"]


def read_bandwidth(
    nbytes: int, threads: int, seconds: float = 0.3, min_passes: int = 5, flush: Callable[[], None] | None = None
) -> dict:
    """Median GB/s of repeatedly summing an `nbytes` buffer with `threads` parallel tasks; with
    `flush`, caches are flushed before every pass, outside the timed region."""
    import time

    import tvm

    kernel = stream_sum_kernel()
    floats = max(nbytes // 4 // (threads * STREAMS * LANES), 1) * threads * STREAMS * LANES
    a = tvm.runtime.tensor(np.ones(floats, dtype=np.float32))
    out = tvm.runtime.tensor(np.zeros((threads, LANES), dtype=np.float32))
    deadline = time.perf_counter() + max(0.1, seconds / 3)  # warm-up: wake the second core, fill the cache
    while time.perf_counter() < deadline:
        if flush is not None:
            flush()
        kernel(a, out)
    if abs(float(out.numpy().sum()) - floats) > 1e-3 * floats:
        raise RuntimeError("stream_sum kernel computed a wrong sum; bandwidth numbers would be meaningless")
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_passes or time.perf_counter() < deadline:
        if flush is not None:
            flush()
        start = time.perf_counter()
        kernel(a, out)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"bytes": floats * 4, "threads": threads, "gbps": floats * 4 / median / 1e9, "passes": len(times)}
