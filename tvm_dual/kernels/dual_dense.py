"""The fused dual-module kernel for y = act(W x + b) at small batch.

One low-level TIR function, in two parallel stages:
  1. little projection    z[b, r] = Ps[r] * sum_k P[r, k] x[b, k]                (P int8, rank R)
  2. for each span of S blocks of NB output columns, in parallel:
       little weights     yl[b, n] = WLs[n] * sum_r WL[n, r] z[b, r] + bL[n]     (WL int8), block by block
       mask, compaction   sens[b, n] = sensitive(yl[b, n]); idx = the span's rows sensitive for any sample
       exact rows         yl[b, n] = W[n, :] . x[b, :] + bias[n]   for n in idx where sens[b, n]
       activation         y = act(yl); ReLU outputs 0 where the sample is insensitive

Only the rows in idx of W are read, which is where the time goes at batch 1. A row is read if any
sample in the batch needs it, but every sample keeps its own little-or-exact choice, so a sample's
output does not depend on what else is in the batch.

Why blocks: each parallel region costs a thread-pool wake-up and a barrier (several microseconds
here), and a global mask/compaction/gather pipeline needs four of them. Compacting per block keeps
the whole decision local to one task, so the kernel has two parallel regions (one when the
projection is small enough to run serially), like a dense GEMV has one.

Why spans (blocks_per_span): the gathered rows are one memory stream only between compactions. A
span decides all of its blocks first, then reads its rows back to back, so the stream (and the
memory-level parallelism of G rows in flight) does not drain at every block boundary while the
next block's little module runs. On 4096 x 1024 at half the rows, Zen 5, cold: 16 blocks per span
took 0.91x (1 thread) and 0.94x (2 threads) the time of 1 (see docs/ARCHITECTURE.md for the run).
A span is also the unit of parallel work, so spans that are too long leave threads idle;
default_blocks_per_span.

Layout: the little weights are stored in column blocks, WLB[nb, r, v] = WL[nb * NB + v, r], so
that a task streams one contiguous R x NB block and keeps NB accumulators in registers. Per-row
vectors (bias, WLs, bL, lo, hi) are padded to a whole number of blocks; pack_dual_constants
builds all of them. Padded columns have an empty sensitive range and are never read from W.

Sensitivity is decided per row by [lo[n], hi[n]]: a little value v is sensitive when
lo <= v <= hi, or when v is NaN or infinite (so non-finite inputs take the exact path, as in the
dense model). tanh and sigmoid use lo = -t, hi = t; ReLU uses lo = t, hi = +inf.

Every loop starts at 0: in TVM 0.27 a loop `range(a, b)` whose start depended on an enclosing
loop's variable was miscompiled here (LLVM saw the inner loop start at 0 while indices used the
real start), corrupting outputs.

The function is a template over the shapes (B, N, K, R symbolic), parsed once per set of knobs and
specialized to each layer's shapes (row_dot.specialize). MetaSchedule cannot tune it
(data-dependent trip counts), so its schedule is the explicit set of knobs in DualKernelConfig.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .activations import ACTIVATIONS, apply_activation
from .little_module import LITTLE_COMPUTE, little_value, make_i16_stages, padded_k
from .row_dot import ROW_ORDERS, check_group, check_knob_types, group_start, group_step, make_row_group_dot, row_stride, specialize

LITTLE_DTYPES = ("int8", "float32")
MAX_BATCH = 8  # rows of x a model layer may have to be compiled as a dual layer
BLOCKS_PER_SPAN = (1, 2, 4, 8, 16)
# Default spans stop growing at 4 parallel tasks (for up to 4 threads; this VM has 2). On 4096 x 1024
# (Zen 5, cold, half the rows) 16 blocks per span took 0.91x / 0.94x the time of one block per span
# at 1 / 2 threads. Fewer spans than that are not the default although the tuner's measurement
# (caches flushed by clflush) liked one span on the demo MLP's layers: with the caches flushed by
# reading 64 MiB, and with the weights in cache, one span took up to 2x longer on 512 x 784 at
# 2 threads (scratch runs, 2026-12-02 09:10-09:20; schedules/README.md).
MIN_SPANS = 4
# The projection runs serially below this many multiply-adds: a parallel region of its own cost
# more than it saved on 4096 x 1024 (plan.default_kernel_config says by how much).
PARALLEL_PROJECTION_MIN = 2**18
MAX_KERNEL_BATCH = 4096  # the kernel itself is correct beyond MAX_BATCH; calibration runs it at large batch


@dataclass(frozen=True)
class DualKernelConfig:
    """Schedule knobs of the dual kernel. Every combination that validates is a correct kernel."""

    rows_per_group: int = 4  # exact rows read together (independent memory streams)
    lanes: int = 16  # float32 accumulator lanes per row in the exact and projection dot products
    little_block: int = 64  # output columns per block: little accumulators, mask and compaction unit
    prefetch: bool = False  # software-prefetch the next group of gathered rows
    blocks_per_span: int = 1  # column blocks whose exact rows are read as one stream (see the module docstring)
    tasks: int = 0  # 0: one parallel task per span of blocks; T > 0: T tasks taking spans round-robin
    parallel_projection_min: int = PARALLEL_PROJECTION_MIN  # multiply-adds from which the projection runs in parallel
    little_compute: str = "f32"  # little-module arithmetic: "f32" or "i16" (kernels/little_module.py)
    row_order: str = "adjacent"  # rows of a group: "adjacent" selected rows, or "far" (ROW_ORDERS)

    def __post_init__(self) -> None:
        check_knob_types(self)
        check_group(self.rows_per_group, self.lanes)
        if self.little_compute not in LITTLE_COMPUTE:
            raise ValueError(f"little_compute must be one of {LITTLE_COMPUTE}, got {self.little_compute!r}")
        if self.little_block not in (16, 32, 64, 128):
            raise ValueError(f"little_block must be 16, 32, 64 or 128, got {self.little_block}")
        if self.blocks_per_span not in BLOCKS_PER_SPAN:
            raise ValueError(f"blocks_per_span must be one of {BLOCKS_PER_SPAN}, got {self.blocks_per_span}")
        if self.row_order not in ROW_ORDERS:
            raise ValueError(f"row_order must be one of {ROW_ORDERS}, got {self.row_order!r}")
        if self.tasks < 0:
            raise ValueError(f"tasks must be >= 0, got {self.tasks}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DualDenseShape:
    """Static problem of one dual kernel: x (batch, k) -> y (batch, n), little rank `rank`."""

    batch: int
    n: int
    k: int
    rank: int
    act: str
    little_dtype: str = "int8"
    aligned_rows: bool = True  # W's rows padded to whole cache lines (row_dot.row_stride)

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= MAX_KERNEL_BATCH:
            raise ValueError(f"dual kernel batch must be 1..{MAX_KERNEL_BATCH}, got {self.batch}")
        if min(self.n, self.k, self.rank) < 1:
            raise ValueError(f"dual kernel sizes must be positive, got n={self.n} k={self.k} rank={self.rank}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; expected one of {ACTIVATIONS}")
        if self.little_dtype not in LITTLE_DTYPES:
            raise ValueError(f"little_dtype must be one of {LITTLE_DTYPES}, got {self.little_dtype!r}")

    @property
    def row_stride(self) -> int:
        return row_stride(self.k, self.aligned_rows)

    @property
    def name(self) -> str:
        suffix = "" if self.aligned_rows else "_unaligned"
        return f"dual_{self.act}_b{self.batch}_n{self.n}_k{self.k}_r{self.rank}_{self.little_dtype}{suffix}"


def sensitive(v: tirx.PrimExpr, lo: tirx.PrimExpr, hi: tirx.PrimExpr) -> tirx.PrimExpr:
    # Written without negated comparisons: TVM's simplifier rewrites !(a < b) into b <= a, which is
    # wrong for NaN. T.isfinite is opaque to it.
    return T.Or(T.And(lo <= v, v <= hi), T.Not(T.isfinite(v)))


@functools.lru_cache(maxsize=None)
def dual_dense_template(
    act: str, little_dtype: str, config: DualKernelConfig, debug: bool, vector_bits: int = 256
) -> tirx.PrimFunc:
    """The kernel over symbolic shapes; make_dual_dense specializes it."""
    ldt = little_dtype
    G, L, NB, S = config.rows_per_group, config.lanes, config.little_block, config.blocks_per_span
    proj_min, tasks = config.parallel_projection_min, config.tasks
    i16 = config.little_compute == "i16"
    far = config.row_order == "far"
    if i16:
        if ldt != "int8":
            raise ValueError("little_compute='i16' needs int8 little weights")
        project_i16, little_i16 = make_i16_stages(G, NB, vector_bits, proj_min)
    exact_dot = make_row_group_dot(G, L, gathered=True, prefetch=config.prefetch)
    exact_dot1 = make_row_group_dot(1, L, gathered=True, prefetch=False)
    proj_dot = make_row_group_dot(G, L, gathered=False, prefetch=False)
    proj_dot1 = make_row_group_dot(1, L, gathered=False, prefetch=False)

    def finish(v, s):
        if act == "relu":
            return T.if_then_else(s != T.int8(0), apply_activation(v, act), T.float32(0))
        return apply_activation(v, act)

    @T.macro
    def projection_group(P, Ps, x, z, rg, B, K):
        acc = T.alloc_buffer((G * L,), "float32")
        for b in range(B):
            proj_dot(acc, P, 0, rg * G, 1, rg * G, x, b, K)
            for g in T.unroll(G):
                z[b, rg * G + g] = acc[g * L] * Ps[rg * G + g]

    @T.macro
    def little_block(WLB, WLs, bL, lo, hi, z, zq, zs, bad, yl, sens, little_out, nb, B, N, R, RH):
        c0: T.let = nb * NB
        # NB accumulators in registers, streamed over the rank
        acc2 = T.alloc_buffer((NB,), "float32")
        for b in range(B):
            if i16:
                acc_q = T.alloc_buffer((NB,), "int32")
                little_i16(WLB, zq, acc_q, nb, 0, b, RH)
                for v in T.vectorized(NB):
                    yl[b, c0 + v] = little_value(acc_q[v], zs[b], bad[b], WLs[c0 + v], bL[c0 + v])
            else:
                for v in T.vectorized(NB):
                    acc2[v] = T.float32(0)
                for r in range(R):
                    for v in T.vectorized(NB):
                        acc2[v] = acc2[v] + T.Cast("float32", WLB[nb, r, v]) * z[b, r]
                for v in T.vectorized(NB):
                    yl[b, c0 + v] = acc2[v] * WLs[c0 + v] + bL[c0 + v]
            if debug:
                for v in range(T.min(NB, N - c0)):
                    little_out[b, c0 + v] = yl[b, c0 + v]
            for v in T.vectorized(NB):
                sens[b, c0 + v] = T.Cast("int8", sensitive(yl[b, c0 + v], lo[c0 + v], hi[c0 + v]))

    @T.macro
    def finish_block(y, yl, sens, nb, B, N):
        c0: T.let = nb * NB
        for b in range(B):
            if c0 + NB <= N:
                for v in T.vectorized(NB):
                    y[b, c0 + v] = finish(yl[b, c0 + v], sens[b, c0 + v])
            else:
                for v in range(N - c0):
                    y[b, c0 + v] = finish(yl[b, c0 + v], sens[b, c0 + v])

    @T.macro
    def column_span(
        x, W, bias, WLB, WLs, bL, lo, hi, y, z, zq, zs, bad, yl, sens, idx, span_count, little_out, s, B, N, K, R,
        RH, NBT,
    ):
        b0: T.let = s * S
        nblk: T.let = T.min(S, NBT - b0)
        c0: T.let = b0 * NB
        for i in range(nblk):
            little_block(WLB, WLs, bL, lo, hi, z, zq, zs, bad, yl, sens, little_out, b0 + i, B, N, R, RH)
        # compaction, branch-free (idx[c0 + cnt] = n is in bounds since cnt <= v); padded columns
        # past N never count, even if a NaN input makes them "sensitive"
        cnt = T.alloc_buffer((1,), "int32")
        hit = T.alloc_buffer((1,), "int32")
        cnt[0] = 0
        for v in range(nblk * NB):
            hit[0] = 0
            for b in range(B):
                hit[0] = T.max(hit[0], T.Cast("int32", sens[b, c0 + v]))
            idx[c0 + cnt[0]] = c0 + v
            cnt[0] = cnt[0] + T.if_then_else(c0 + v < N, hit[0], 0)
        # the span's exact rows as one stream, G at a time (prefetch runs across its blocks), then the last cnt % G;
        # group j is selected rows j * G + g ("adjacent") or g * ngroups + j ("far")
        ngroups: T.let = cnt[0] // G
        step: T.let = group_step(ngroups, far)
        acc3 = T.alloc_buffer((G * L,), "float32")
        for j in range(ngroups):
            first: T.let = c0 + group_start(j, G, far)
            for b in range(B):
                exact_dot(acc3, W, idx, first, step, c0 + group_start(T.min(j + 1, ngroups - 1), G, far), x, b, K)
                for g in T.unroll(G):
                    if sens[b, idx[first + g * step]] != T.int8(0):
                        yl[b, idx[first + g * step]] = acc3[g * L] + bias[idx[first + g * step]]
        acc4 = T.alloc_buffer((L,), "float32")
        for jt in range(cnt[0] - ngroups * G):
            for b in range(B):
                exact_dot1(acc4, W, idx, c0 + ngroups * G + jt, 1, c0 + ngroups * G + jt, x, b, K)
                if sens[b, idx[c0 + ngroups * G + jt]] != T.int8(0):
                    yl[b, idx[c0 + ngroups * G + jt]] = acc4[0] + bias[idx[c0 + ngroups * G + jt]]
        for i in range(nblk):
            finish_block(y, yl, sens, b0 + i, B, N)
        span_count[s] = cnt[0]

    @T.macro
    def body(x, W, bias, P, Ps, WLB, WLs, bL, lo, hi, y, count, little_out, sens_out, B, N, K, R, NBT, KP, RH):
        z = T.alloc_buffer((B, R), "float32")
        yl = T.alloc_buffer((B, NBT * NB), "float32")
        sens = T.alloc_buffer((B, NBT * NB), "int8")
        idx = T.alloc_buffer((NBT * NB,), "int32")
        span_count = T.alloc_buffer((NBT,), "int32")  # one per span; spans <= blocks
        xq = T.alloc_buffer((B, KP), "int16")  # "i16" mode state (unused in "f32" mode)
        zq = T.alloc_buffer((B, 2 * RH) if i16 else (1, 1), "int16")
        xs = T.alloc_buffer((B,), "float32")
        zs = T.alloc_buffer((B,), "float32")
        bad = T.alloc_buffer((B,), "int32")
        # 1. projection: in parallel only when it is big enough to pay for a parallel region
        if i16:
            project_i16(x, xq, xs, z, zq, zs, bad, P, Ps, B, K, KP, R, RH)
        else:
            if B * R * K >= proj_min:
                for rg in T.parallel(R // G):
                    projection_group(P, Ps, x, z, rg, B, K)
            else:
                for rg in range(R // G):
                    projection_group(P, Ps, x, z, rg, B, K)
            acc1 = T.alloc_buffer((L,), "float32")
            for rt in range(R % G):
                for b in range(B):
                    proj_dot1(acc1, P, 0, R // G * G + rt, 1, R // G * G + rt, x, b, K)
                    z[b, R // G * G + rt] = acc1[0] * Ps[R // G * G + rt]
        # 2. spans of column blocks
        NST: T.let = (NBT + S - 1) // S
        if tasks == 0:
            for sp in T.parallel(NST):
                column_span(
                    x, W, bias, WLB, WLs, bL, lo, hi, y, z, zq, zs, bad, yl, sens, idx, span_count, little_out, sp,
                    B, N, K, R, RH, NBT,
                )
        else:
            for task in T.parallel(tasks):
                for i in range((NST + tasks - 1 - task) // tasks):
                    column_span(
                        x, W, bias, WLB, WLs, bL, lo, hi, y, z, zq, zs, bad, yl, sens, idx, span_count, little_out,
                        task + i * tasks, B, N, K, R, RH, NBT,
                    )
        count[0] = 0
        for sp in range(NST):
            count[0] = count[0] + span_count[sp]
        if debug:
            for b, n in T.grid(B, N):
                sens_out[b, n] = sens[b, n]

    if debug:

        @T.prim_func
        def dual_debug(
            x_h: T.handle, W_h: T.handle, bias_h: T.handle, P_h: T.handle, Ps_h: T.handle, WLB_h: T.handle,
            WLs_h: T.handle, bL_h: T.handle, lo_h: T.handle, hi_h: T.handle, y_h: T.handle, count_h: T.handle,
            little_h: T.handle, sens_h: T.handle,
        ):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B = T.int32()
            N = T.int32()
            K = T.int32()
            R = T.int32()
            NBT = T.int32()  # column blocks, ceil(N / NB)
            NP = T.int32()  # padded rows, NBT * NB
            KP = T.int32()  # P's row length: K, or K padded to whole int16 vectors in "i16" mode
            RH = T.int32()  # rank pairs in "i16" mode (WLB is (NBT, RH, NB, 2)); unused in "f32" mode
            KS = T.int32()  # W's row stride
            x = T.match_buffer(x_h, (B, K), "float32")
            W = T.match_buffer(W_h, (N, KS), "float32")
            bias = T.match_buffer(bias_h, (NP,), "float32")
            P = T.match_buffer(P_h, (R, KP), ldt)
            Ps = T.match_buffer(Ps_h, (R,), "float32")
            WLB = T.match_buffer(WLB_h, (NBT, RH, NB, 2) if i16 else (NBT, R, NB), ldt)
            WLs = T.match_buffer(WLs_h, (NP,), "float32")
            bL = T.match_buffer(bL_h, (NP,), "float32")
            lo = T.match_buffer(lo_h, (NP,), "float32")
            hi = T.match_buffer(hi_h, (NP,), "float32")
            y = T.match_buffer(y_h, (B, N), "float32")
            count = T.match_buffer(count_h, (1,), "int32")
            little_out = T.match_buffer(little_h, (B, N), "float32")
            sens_out = T.match_buffer(sens_h, (B, N), "int8")
            body(x, W, bias, P, Ps, WLB, WLs, bL, lo, hi, y, count, little_out, sens_out, B, N, K, R, NBT, KP, RH)

        return dual_debug

    @T.prim_func
    def dual(
        x_h: T.handle, W_h: T.handle, bias_h: T.handle, P_h: T.handle, Ps_h: T.handle, WLB_h: T.handle,
        WLs_h: T.handle, bL_h: T.handle, lo_h: T.handle, hi_h: T.handle, y_h: T.handle, count_h: T.handle,
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        B = T.int32()
        N = T.int32()
        K = T.int32()
        R = T.int32()
        NBT = T.int32()  # column blocks, ceil(N / NB)
        NP = T.int32()  # padded rows, NBT * NB
        KP = T.int32()  # P's row length: K, or K padded to whole int16 vectors in "i16" mode
        RH = T.int32()  # rank pairs in "i16" mode (WLB is (NBT, RH, NB, 2)); unused in "f32" mode
        KS = T.int32()  # W's row stride
        x = T.match_buffer(x_h, (B, K), "float32")
        W = T.match_buffer(W_h, (N, KS), "float32")
        bias = T.match_buffer(bias_h, (NP,), "float32")
        P = T.match_buffer(P_h, (R, KP), ldt)
        Ps = T.match_buffer(Ps_h, (R,), "float32")
        WLB = T.match_buffer(WLB_h, (NBT, RH, NB, 2) if i16 else (NBT, R, NB), ldt)
        WLs = T.match_buffer(WLs_h, (NP,), "float32")
        bL = T.match_buffer(bL_h, (NP,), "float32")
        lo = T.match_buffer(lo_h, (NP,), "float32")
        hi = T.match_buffer(hi_h, (NP,), "float32")
        y = T.match_buffer(y_h, (B, N), "float32")
        count = T.match_buffer(count_h, (1,), "int32")
        body(x, W, bias, P, Ps, WLB, WLs, bL, lo, hi, y, count, y, y, B, N, K, R, NBT, KP, RH)

    return dual


def make_dual_dense(
    shape: DualDenseShape, config: DualKernelConfig = DualKernelConfig(), debug: bool = False, vector_bits: int = 256
) -> tirx.PrimFunc:
    """The fused kernel for one shape.

    Arguments, in order: x (B,K) f32, W (N, shape.row_stride) f32 (row_dot.pad_rows), then the
    constants of pack_dual_constants (bias, P, Ps, WLB, WLs, bL, lo, hi); outputs y (B,N) f32 and count (1,) int32, the number of
    rows of W read. With `debug`, two more outputs: the little values (B,N) f32 and the
    sensitivity mask (B,N) int8, for tests against a reference. vector_bits is the target's SIMD
    width (target.vector_bits), used by the "i16" little module.
    """
    B, N, K, R, ldt = shape.batch, shape.n, shape.k, shape.rank, shape.little_dtype
    NB = config.little_block
    nbt = ceil_div(N, NB)
    NP = nbt * NB
    f32 = "float32"
    i16 = config.little_compute == "i16"
    kp = padded_k(K, vector_bits) if i16 else K
    wlb = (nbt, ceil_div(R, 2), NB, 2) if i16 else (nbt, R, NB)
    shapes = [
        ((B, K), f32), ((N, shape.row_stride), f32), ((NP,), f32), ((R, kp), ldt), ((R,), f32), (wlb, ldt),
        ((NP,), f32), ((NP,), f32), ((NP,), f32), ((NP,), f32), ((B, N), f32), ((1,), "int32"),
    ]
    if debug:
        shapes += [((B, N), f32), ((B, N), "int8")]
    template = dual_dense_template(shape.act, ldt, config, debug, vector_bits if i16 else 256)
    return specialize(template, shapes, shape.name + ("_debug" if debug else ""))


def default_blocks_per_span(n: int, little_block: int) -> int:
    """The most blocks per span that leave at least MIN_SPANS spans (parallel tasks) for n outputs."""
    blocks = ceil_div(n, little_block)
    return max(s for s in BLOCKS_PER_SPAN if s == 1 or ceil_div(blocks, s) >= MIN_SPANS)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pack_dual_constants(
    bias: np.ndarray,
    P: np.ndarray,
    Ps: np.ndarray,
    WL: np.ndarray,
    WLs: np.ndarray,
    bL: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    config: DualKernelConfig,
    vector_bits: int = 256,
) -> list[np.ndarray]:
    """The kernel's constant arguments in order, in its layout: per-row vectors padded to whole
    blocks (padded rows get an empty sensitive range); WL (N, R) as column blocks (NBT, R, NB), or
    in "i16" mode as blocks of rank pairs (NBT, ceil(R/2), NB, 2) with P's rows zero-padded to
    whole int16 vectors."""
    n, r = WL.shape
    nb = config.little_block
    nbt = ceil_div(n, nb)
    padded_rows = nbt * nb

    def pad(v: np.ndarray, fill: float) -> np.ndarray:
        out = np.full(padded_rows, fill, dtype=np.float32)
        out[:n] = v
        return out

    if config.little_compute == "i16":
        rh = ceil_div(r, 2)
        wl = np.zeros((padded_rows, 2 * rh), dtype=WL.dtype)
        wl[:n, :r] = WL
        blocks = wl.reshape(nbt, nb, rh, 2).transpose(0, 2, 1, 3)
        p = np.zeros((P.shape[0], padded_k(P.shape[1], vector_bits)), dtype=P.dtype)
        p[:, : P.shape[1]] = P
    else:
        wl = np.zeros((padded_rows, r), dtype=WL.dtype)
        wl[:n] = WL
        blocks = wl.reshape(nbt, nb, r).transpose(0, 2, 1)
        p = P
    arrays = [pad(bias, 0), p, Ps, blocks, pad(WLs, 0), pad(bL, 0), pad(lo, np.inf), pad(hi, -np.inf)]
    return [np.ascontiguousarray(a) for a in arrays]


def little_bytes(shape: DualDenseShape) -> int:
    """Bytes of little-module constants the kernel reads per call (weights, scales, biases, bounds)."""
    elem = 1 if shape.little_dtype == "int8" else 4
    return shape.rank * (shape.k + shape.n) * elem + 4 * (shape.rank + 4 * shape.n)
