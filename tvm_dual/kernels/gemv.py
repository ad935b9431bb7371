"""Dense y = act(x W^T + b) for small batch: the exact layers of a model, and the dense baseline.

The default Relax CPU pipeline leaves matmuls unscheduled (about 100x slower than numpy at batch 1)
and dlight's CPU GEMV rule still calls scalar libm tanh. This kernel uses the same row-group inner
loop as the dual kernel, so that dense and dual differ only in the rows they read.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from tvm import tirx
from tvm.script import tirx as T

from .activations import ACTIVATIONS, apply_activation
from .row_dot import ROW_ORDERS, check_group, check_knob_types, group_start, group_step, make_row_group_dot, register_lanes, row_stride, specialize


@dataclass(frozen=True)
class GemvConfig:
    """Schedule knobs of the dense GEMV kernel. Eight rows with one AVX2 register of accumulators
    each were faster than four rows with two, as in the gate kernel (Zen 3, cold cache, median of
    5 rounds of 40 calls, 1 / 2 threads: 3000 x 750 722 / 666 -> 625 / 520 us, 4096 x 1024
    1,086 / 907 -> 1,026 / 770 us; warm, one thread: 193 -> 172 and 381 -> 295 us)."""

    rows_per_group: int = 8
    lanes: int = 8
    prefetch: bool = False
    row_order: str = "far"  # rows of a group: one from each G-th of W, or "adjacent": G neighbours (ROW_ORDERS)

    def __post_init__(self) -> None:
        check_knob_types(self)
        check_group(self.rows_per_group, self.lanes)
        if self.row_order not in ROW_ORDERS:
            raise ValueError(f"row_order must be one of {ROW_ORDERS}, got {self.row_order!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def default_gemv_config(vector_bits: int) -> GemvConfig:
    """The GEMV knobs for a target of this SIMD width (target.vector_bits): eight rows with one
    vector register of accumulators each, in "far" order: W read as eight long streams, where
    groups of eight neighbouring rows restart eight 4 KiB streams every 32 KiB. On 4096 x 1024,
    far / adjacent time paired in one process (400 pairs, Zen 3, 2026-12-03): 0.81 / 0.85 cold,
    0.76 / 0.72 hot at 1 / 2 threads (cold, one thread: 1,111 -> 908 us); a hand-written C GEMV
    read 17.4 GB/s as groups of six neighbouring rows and 21.6 GB/s as six streams, the bandwidth
    probe's rate.

    With 512-bit vectors, four rows (four streams, 64 accumulator floats as AVX2's eight rows): on
    Zen 4 (znver4, 2026-12-04) four / eight rows' time, paired in one process (300 cold and 200 hot
    pairs, which goes first swapping; scratch script) on 4096x1024, 10000x750, 3000x750, 512x784
    and 6000x1500 was 0.79-0.91 cold and 0.80-0.97 hot at one thread, 0.92-0.95 cold and 0.89-0.96
    hot at two but 1.13 for 10000x750 hot; `scripts/bench_gemv.py` (interleaved medians) gave the
    same at one thread and 0.95-1.07 cold at two (docs/RESULTS.md, "Zen 4 spot checks"). The dual
    kernel's gathers keep eight rows: four were 1.02-1.08x slower cold there."""
    lanes = register_lanes(vector_bits)
    return GemvConfig(rows_per_group=4 if lanes >= 16 else 8, lanes=lanes)


@dataclass(frozen=True)
class GemvShape:
    batch: int
    n: int
    k: int
    act: str
    has_bias: bool = True
    aligned_rows: bool = True  # W's rows padded to whole cache lines (row_dot.row_stride)

    def __post_init__(self) -> None:
        if min(self.batch, self.n, self.k) < 1:
            raise ValueError(f"GEMV sizes must be positive, got {self}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; expected one of {ACTIVATIONS}")

    @property
    def row_stride(self) -> int:
        return row_stride(self.k, self.aligned_rows)

    @property
    def name(self) -> str:
        suffix = ("" if self.has_bias else "_nobias") + ("" if self.aligned_rows else "_unaligned")
        return f"gemv_{self.act}_b{self.batch}_n{self.n}_k{self.k}{suffix}"


@functools.lru_cache(maxsize=None)
def gemv_template(act: str, has_bias: bool, config: GemvConfig) -> tirx.PrimFunc:
    """The kernel over symbolic B, N, K; make_gemv specializes it."""
    G, L = config.rows_per_group, config.lanes
    far = config.row_order == "far"
    group_dot = make_row_group_dot(G, L, gathered=False, prefetch=config.prefetch)
    row_dot = make_row_group_dot(1, L, gathered=False, prefetch=False)

    def out(acc_value, bias, n):
        return apply_activation(acc_value + bias[n] if has_bias else acc_value, act)

    @T.macro
    def body(x, W, bias, y, B, N, K):
        # group j: rows j * G + g ("adjacent"), or j + g * (N // G) ("far"), so that each thread's
        # contiguous range of groups reads G long streams
        step: T.let = group_step(N // G, far)
        for j in T.parallel(N // G):
            acc = T.alloc_buffer((G * L,), "float32")
            first: T.let = group_start(j, G, far)
            for b in range(B):
                group_dot(acc, W, 0, first, step, group_start(T.min(j + 1, T.max(N // G - 1, 0)), G, far), x, b, K)
                for g in T.unroll(G):
                    y[b, first + g * step] = out(acc[g * L], bias, first + g * step)
        for t in range(N % G):
            acc1 = T.alloc_buffer((L,), "float32")
            for b in range(B):
                row_dot(acc1, W, 0, N // G * G + t, 1, N // G * G + t, x, b, K)
                y[b, N // G * G + t] = out(acc1[0], bias, N // G * G + t)

    if not has_bias:

        @T.prim_func
        def gemv_nobias(x_h: T.handle, W_h: T.handle, y_h: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B = T.int32()
            N = T.int32()
            K = T.int32()
            KS = T.int32()  # W's row stride
            x = T.match_buffer(x_h, (B, K), "float32")
            W = T.match_buffer(W_h, (N, KS), "float32")
            y = T.match_buffer(y_h, (B, N), "float32")
            body(x, W, W, y, B, N, K)

        return gemv_nobias

    @T.prim_func
    def gemv(x_h: T.handle, W_h: T.handle, bias_h: T.handle, y_h: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        B = T.int32()
        N = T.int32()
        K = T.int32()
        KS = T.int32()  # W's row stride
        x = T.match_buffer(x_h, (B, K), "float32")
        W = T.match_buffer(W_h, (N, KS), "float32")
        bias = T.match_buffer(bias_h, (N,), "float32")
        y = T.match_buffer(y_h, (B, N), "float32")
        body(x, W, bias, y, B, N, K)

    return gemv


def make_gemv(shape: GemvShape, config: GemvConfig = GemvConfig()) -> tirx.PrimFunc:
    """Arguments: x (B,K) f32, W (N, shape.row_stride) f32 (row_dot.pad_rows), bias (N,) f32 (omitted
    without bias); output y (B,N)."""
    B, N, K = shape.batch, shape.n, shape.k
    shapes = [((B, K), "float32"), ((N, shape.row_stride), "float32")] + ([((N,), "float32")] if shape.has_bias else [])
    shapes.append(((B, N), "float32"))
    return specialize(gemv_template(shape.act, shape.has_bias, config), shapes, shape.name)
