"""The fused dual-module kernel for y = act(W x + b) at small batch.

One low-level TIR function does, in order:
  1. little projection   z[b, r]  = Ps[r] * sum_k P[r, k] x[b, k]             (P int8, rank R)
  2. little weights      yl[b, n] = WLs[n] * sum_r WL[n, r] z[b, r] + bL[n]    (WL int8, see below)
  3. mask + compaction   sens[b, n] = sensitive(yl[b, n]); idx[] = rows sensitive for any sample
  4. exact rows          yl[b, n] = W[n, :] . x[b, :] + bias[n]  for n in idx and sens[b, n]
  5. activation          y = act(yl); ReLU outputs 0 where the sample is insensitive

The little weights are stored in column blocks, WLB[nb, r, v] = WL[nb * NB + v, r] (zero-padded),
so that each task of stage 2 streams one contiguous R x NB block and keeps NB accumulators in
registers; the row-major transpose made every task touch R lines 4 KiB apart (1.5x slower).

Only the rows in idx[] of W are read, which is where the time goes at batch 1. A row is read if any
sample in the batch needs it, but every sample keeps its own little-or-exact choice, so a sample's
output does not depend on what else is in the batch.

Sensitivity is decided per row by [lo[n], hi[n]]: a little value v is sensitive when
lo <= v <= hi, or when v is NaN or infinite (so non-finite inputs take the exact path, as in the
dense model). tanh and sigmoid use lo = -t, hi = t; ReLU uses lo = t, hi = +inf.

Every loop starts at 0: in TVM 0.27 a loop `range(a, b)` whose start depended on an enclosing
loop's variable was miscompiled here (LLVM saw the inner loop start at 0 while indices used the
real start), corrupting outputs.

The function is a template over the shapes (B, N, K, R are symbolic), parsed once per set of knobs
and specialized to each layer's shapes (see row_dot.specialize).

MetaSchedule cannot tune this function (data-dependent trip counts), so its schedule is the
explicit set of knobs in DualKernelConfig, searched by tvm_dual.tuning.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .activations import ACTIVATIONS, apply_activation
from .row_dot import check_group, make_row_group_dot, specialize

LITTLE_DTYPES = ("int8", "float32")
MAX_BATCH = 8  # rows of x a model layer may have to be compiled as a dual layer
MAX_KERNEL_BATCH = 4096  # the kernel itself is correct beyond MAX_BATCH; calibration runs it at large batch
ACTIVATION_LANES = 16


@dataclass(frozen=True)
class DualKernelConfig:
    """Schedule knobs of the dual kernel. Every combination that validates is a correct kernel."""

    rows_per_group: int = 4  # exact rows read together (independent memory streams)
    lanes: int = 16  # float32 accumulator lanes per row in the exact and projection dot products
    little_block: int = 64  # output columns per task in the little-weight axpy (register accumulators)
    prefetch: bool = False  # software-prefetch the next group of gathered rows
    parallel_activation_min: int = 4096  # run the activation stage in parallel from this many outputs

    def __post_init__(self) -> None:
        check_group(self.rows_per_group, self.lanes)
        if self.little_block not in (16, 32, 64, 128):
            raise ValueError(f"little_block must be 16, 32, 64 or 128, got {self.little_block}")

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
    def name(self) -> str:
        return f"dual_{self.act}_b{self.batch}_n{self.n}_k{self.k}_r{self.rank}_{self.little_dtype}"


def sensitive(v: tirx.PrimExpr, lo: tirx.PrimExpr, hi: tirx.PrimExpr) -> tirx.PrimExpr:
    # Written without negated comparisons: TVM's simplifier rewrites !(a < b) into b <= a, which is
    # wrong for NaN. T.isfinite is opaque to it.
    return T.Or(T.And(lo <= v, v <= hi), T.Not(T.isfinite(v)))


@functools.lru_cache(maxsize=None)
def dual_dense_template(act: str, little_dtype: str, config: DualKernelConfig, debug: bool) -> tirx.PrimFunc:
    """The kernel over symbolic shapes B, N, K, R; make_dual_dense specializes it."""
    ldt = little_dtype
    G, L, NB, AL = config.rows_per_group, config.lanes, config.little_block, ACTIVATION_LANES
    par_min = config.parallel_activation_min
    exact_dot = make_row_group_dot(G, L, gathered=True, prefetch=config.prefetch)
    exact_dot1 = make_row_group_dot(1, L, gathered=True, prefetch=False)
    proj_dot = make_row_group_dot(G, L, gathered=False, prefetch=False)
    proj_dot1 = make_row_group_dot(1, L, gathered=False, prefetch=False)

    def finish(v, s):
        if act == "relu":
            return T.if_then_else(s != T.int8(0), apply_activation(v, act), T.float32(0))
        return apply_activation(v, act)

    @T.macro
    def little_block(acc, WLB, z, nb, b, R):
        for v in T.vectorized(NB):
            acc[v] = T.float32(0)
        for r in range(R):
            for v in T.vectorized(NB):
                acc[v] = acc[v] + T.Cast("float32", WLB[nb, r, v]) * z[b, r]

    @T.macro
    def body(x, W, bias, P, Ps, WLB, WLs, bL, lo, hi, y, count, little_out, sens_out, B, N, K, R):
        z = T.alloc_buffer((B, R), "float32")
        yl = T.alloc_buffer((B, N), "float32")
        sens = T.alloc_buffer((B, N), "int8")
        idx = T.alloc_buffer((N,), "int32")
        # 1. projection, G rows of P at a time, then the last R % G rows
        for rg in T.parallel(R // G):
            acc = T.alloc_buffer((G * L,), "float32")
            for b in range(B):
                proj_dot(acc, P, 0, rg * G, rg * G, x, b, K)
                for g in T.unroll(G):
                    z[b, rg * G + g] = acc[g * L] * Ps[rg * G + g]
        for rt in range(R % G):
            acc1 = T.alloc_buffer((L,), "float32")
            for b in range(B):
                proj_dot1(acc1, P, 0, R // G * G + rt, R // G * G + rt, x, b, K)
                z[b, R // G * G + rt] = acc1[0] * Ps[R // G * G + rt]
        # 2. little weights: NB output columns per task, accumulated in registers over the rank;
        #    the last, zero-padded block stores only its valid columns
        for nb in T.parallel(N // NB):
            acc2 = T.alloc_buffer((NB,), "float32")
            for b in range(B):
                little_block(acc2, WLB, z, nb, b, R)
                for v in T.vectorized(NB):
                    yl[b, nb * NB + v] = acc2[v] * WLs[nb * NB + v] + bL[nb * NB + v]
        for nt in range(T.min(N % NB, 1)):
            acc2t = T.alloc_buffer((NB,), "float32")
            for b in range(B):
                little_block(acc2t, WLB, z, N // NB + nt, b, R)
                for v in range(N % NB):
                    yl[b, N // NB * NB + v] = acc2t[v] * WLs[N // NB * NB + v] + bL[N // NB * NB + v]
        if debug:
            for b, n in T.grid(B, N):
                little_out[b, n] = yl[b, n]
        # 3. mask and compaction (serial, branch-free: a data-dependent branch mispredicts on about
        #    half the rows at ratio 0.5; idx[cnt] = n is always in bounds because cnt <= n)
        cnt: T.int32 = 0
        for n in range(N):
            hit: T.int32 = 0
            for b in range(B):
                sens[b, n] = T.Cast("int8", sensitive(yl[b, n], lo[n], hi[n]))
                hit = T.max(hit, T.Cast("int32", sens[b, n]))
            idx[cnt] = n
            cnt = cnt + hit
        # 4. exact rows: G gathered rows per task, then the last cnt % G rows
        ngroups: T.int32 = cnt // G
        for j in T.parallel(ngroups):
            acc3 = T.alloc_buffer((G * L,), "float32")
            for b in range(B):
                exact_dot(acc3, W, idx, j * G, T.min(j * G + G, (ngroups - 1) * G), x, b, K)
                for g in T.unroll(G):
                    if sens[b, idx[j * G + g]] != T.int8(0):
                        yl[b, idx[j * G + g]] = acc3[g * L] + bias[idx[j * G + g]]
        for jt in range(cnt - ngroups * G):
            acc4 = T.alloc_buffer((L,), "float32")
            for b in range(B):
                exact_dot1(acc4, W, idx, ngroups * G + jt, ngroups * G + jt, x, b, K)
                if sens[b, idx[ngroups * G + jt]] != T.int8(0):
                    yl[b, idx[ngroups * G + jt]] = acc4[0] + bias[idx[ngroups * G + jt]]
        # 5. activation
        for b in range(B):
            if B * N >= par_min:
                for n0 in T.parallel(N // AL):
                    for v in T.vectorized(AL):
                        y[b, n0 * AL + v] = finish(yl[b, n0 * AL + v], sens[b, n0 * AL + v])
            else:
                for n0 in range(N // AL):
                    for v in T.vectorized(AL):
                        y[b, n0 * AL + v] = finish(yl[b, n0 * AL + v], sens[b, n0 * AL + v])
            for v in range(N % AL):
                y[b, N // AL * AL + v] = finish(yl[b, N // AL * AL + v], sens[b, N // AL * AL + v])
        if debug:
            for b, n in T.grid(B, N):
                sens_out[b, n] = sens[b, n]
        count[0] = cnt

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
            NBT = T.int32()  # ceil(N / NB), bound by specialization
            x = T.match_buffer(x_h, (B, K), "float32")
            W = T.match_buffer(W_h, (N, K), "float32")
            bias = T.match_buffer(bias_h, (N,), "float32")
            P = T.match_buffer(P_h, (R, K), ldt)
            Ps = T.match_buffer(Ps_h, (R,), "float32")
            WLB = T.match_buffer(WLB_h, (NBT, R, NB), ldt)
            WLs = T.match_buffer(WLs_h, (N,), "float32")
            bL = T.match_buffer(bL_h, (N,), "float32")
            lo = T.match_buffer(lo_h, (N,), "float32")
            hi = T.match_buffer(hi_h, (N,), "float32")
            y = T.match_buffer(y_h, (B, N), "float32")
            count = T.match_buffer(count_h, (1,), "int32")
            little_out = T.match_buffer(little_h, (B, N), "float32")
            sens_out = T.match_buffer(sens_h, (B, N), "int8")
            body(x, W, bias, P, Ps, WLB, WLs, bL, lo, hi, y, count, little_out, sens_out, B, N, K, R)

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
        NBT = T.int32()  # ceil(N / NB), bound by specialization
        x = T.match_buffer(x_h, (B, K), "float32")
        W = T.match_buffer(W_h, (N, K), "float32")
        bias = T.match_buffer(bias_h, (N,), "float32")
        P = T.match_buffer(P_h, (R, K), ldt)
        Ps = T.match_buffer(Ps_h, (R,), "float32")
        WLB = T.match_buffer(WLB_h, (NBT, R, NB), ldt)
        WLs = T.match_buffer(WLs_h, (N,), "float32")
        bL = T.match_buffer(bL_h, (N,), "float32")
        lo = T.match_buffer(lo_h, (N,), "float32")
        hi = T.match_buffer(hi_h, (N,), "float32")
        y = T.match_buffer(y_h, (B, N), "float32")
        count = T.match_buffer(count_h, (1,), "int32")
        body(x, W, bias, P, Ps, WLB, WLs, bL, lo, hi, y, count, y, y, B, N, K, R)

    return dual


def make_dual_dense(
    shape: DualDenseShape, config: DualKernelConfig = DualKernelConfig(), debug: bool = False
) -> tirx.PrimFunc:
    """The fused kernel for one shape.

    Arguments, in order: x (B,K) f32, W (N,K) f32, bias (N,) f32, P (R,K), Ps (R,) f32,
    WLB (ceil(N/NB),R,NB) from pack_little_weights, WLs (N,) f32, bL (N,) f32, lo (N,) f32,
    hi (N,) f32; outputs y (B,N) f32 and count (1,) int32, the number of rows of W read. With
    `debug`, two more outputs: the little values (B,N) f32 and the sensitivity mask (B,N) int8, for
    tests against a reference.
    """
    B, N, K, R, ldt = shape.batch, shape.n, shape.k, shape.rank, shape.little_dtype
    NB = config.little_block
    f32 = "float32"
    shapes = [
        ((B, K), f32), ((N, K), f32), ((N,), f32), ((R, K), ldt), ((R,), f32), ((ceil_div(N, NB), R, NB), ldt),
        ((N,), f32), ((N,), f32), ((N,), f32), ((N,), f32), ((B, N), f32), ((1,), "int32"),
    ]
    if debug:
        shapes += [((B, N), f32), ((B, N), "int8")]
    template = dual_dense_template(shape.act, ldt, config, debug)
    return specialize(template, shapes, shape.name + ("_debug" if debug else ""))


def pack_little_weights(WL: np.ndarray, little_block: int) -> np.ndarray:
    """(N, R) little weights -> the kernel's column-blocked layout (ceil(N/NB), R, NB), zero-padded."""
    n, r = WL.shape
    nbt = ceil_div(n, little_block)
    padded = np.zeros((nbt * little_block, r), dtype=WL.dtype)
    padded[:n] = WL
    return np.ascontiguousarray(padded.reshape(nbt, little_block, r).transpose(0, 2, 1))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def little_bytes(shape: DualDenseShape) -> int:
    """Bytes of little-module constants the kernel reads per call (weights, scales, biases, bounds)."""
    elem = 1 if shape.little_dtype == "int8" else 4
    return shape.rank * (shape.k + shape.n) * elem + 4 * (shape.rank + 4 * shape.n)
