"""The inner loop that the dual and dense GEMV kernels share: dot products of a group of weight rows
with one input row, vectorized along K.

A group of G rows is read at once so that G independent streams are in flight (memory-level
parallelism is what a batch-1 GEMV lives on). Each row keeps L float32 accumulator lanes. The
accumulators live in one stack buffer of G*L floats: under 1 KiB, TVM emits a stack alloca that LLVM
promotes to registers once the group loop is unrolled, while a 1 KiB or larger buffer would become a
TVMBackendAllocWorkspace call in every parallel iteration.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from ..validation import is_integer

MAX_ACCUMULATOR_FLOATS = 255  # G*L floats must stay under TVM's kMaxStackAlloca (1024 bytes)
MAX_LANES = 128
CACHE_LINE_FLOATS = 16  # float32 per 64-byte cache line
# The rows a group of G reads together: G neighbours ("adjacent"), or, of n rows, one from each G-th
# ("far": group j is rows j + g * (n // G)), so that the n rows are read as G long streams rather
# than n / G bursts of G short ones
ROW_ORDERS = ("adjacent", "far")


def group_start(j, group: int, far: bool):
    """Position of group j's first row among the rows it is taken from (ROW_ORDERS)."""
    return j if far else j * group


def group_step(ngroups, far: bool):
    """Positions from one row of a group to the next, with ngroups whole groups (ROW_ORDERS)."""
    return ngroups if far else 1


def row_stride(k: int, aligned: bool = True) -> int:
    """Floats from one weight row to the next in the kernels' weight operands: k rounded up to
    whole cache lines, so that every row starts on a line (TVM allocates tensors 64-byte aligned)
    and no vector load of a row straddles two lines; `aligned=False` keeps PyTorch's k.

    Rows of 1500 floats start 16 bytes into a line in turn, and 3 in 4 of their 64-byte loads are
    split across two lines. Padded to 1504 floats (0.3% more bytes), the LSTM-750 gate kernel with
    half its rows exact took, unaligned -> aligned, 171 -> 143 us at one thread and 102 -> 93 us at
    two with the weights in cache, 373 -> 362 and 332 -> 330 us cold (Zen 5, 2026-12-02,
    `scripts/bench_gate_kernel.py --layouts aligned unaligned [--cold] --rounds 7`, side by side)."""
    return -(-k // CACHE_LINE_FLOATS) * CACHE_LINE_FLOATS if aligned else k


def pad_rows(w: np.ndarray, stride: int) -> np.ndarray:
    """A (rows, k) weight matrix as a contiguous float32 (rows, stride) one, zeros after column k."""
    w = np.asarray(w, dtype=np.float32)
    if w.shape[1] == stride:
        return np.ascontiguousarray(w)
    out = np.zeros((w.shape[0], stride), dtype=np.float32)
    out[:, : w.shape[1]] = w
    return out


def register_lanes(vector_bits: int) -> int:
    """float32 accumulator lanes of one vector register of the target (at least 8): the default
    of the GEMV and dual kernels, whose rows keep one register of accumulators each."""
    return max(8, vector_bits // 32)


def check_knob_types(config) -> None:
    """A schedule dataclass's fields have the types its annotations name (int, bool, str), bools
    not passing for ints: configs come from JSON tuning logs and schedule files, and a string
    where a bool belongs would otherwise reach TVMScript as a bad kernel."""
    checks = {  # annotation -> (accepted, the Python type it is stored as)
        "int": (is_integer, int),
        "bool": (lambda v: isinstance(v, (bool, np.bool_)), bool),
        "str": (lambda v: isinstance(v, str), str),
    }
    for field in dataclasses.fields(config):
        annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        if annotation not in checks:
            continue
        accepted, kind = checks[annotation]
        value = getattr(config, field.name)
        if not accepted(value):
            raise ValueError(f"{field.name} must be {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")
        object.__setattr__(config, field.name, kind(value))  # numpy scalars as Python ones (JSON, hashing)


def check_group(group: int, lanes: int) -> None:
    if lanes < 1 or lanes & (lanes - 1) or lanes > MAX_LANES:
        raise ValueError(f"lanes must be a power of two up to {MAX_LANES}, got {lanes}")
    if group < 1 or group * lanes > MAX_ACCUMULATOR_FLOATS:
        raise ValueError(
            f"rows per group x lanes = {group} x {lanes} must be at most {MAX_ACCUMULATOR_FLOATS} "
            f"floats (stack accumulator limit)"
        )


def make_lane_sum(group: int, lanes: int):
    """Return a T.macro `lane_sum(acc)` that adds each row's L lanes into acc[g * L]."""
    G, L = group, lanes

    @T.macro
    def lane_sum(acc):
        for g in T.unroll(G):
            # static ifs: a log2(L)-step tree reduction of the lanes into acc[g * L]
            if L >= 128:
                for v in T.vectorized(64):
                    acc[g * L + v] = acc[g * L + v] + acc[g * L + v + 64]
            if L >= 64:
                for v in T.vectorized(32):
                    acc[g * L + v] = acc[g * L + v] + acc[g * L + v + 32]
            if L >= 32:
                for v in T.vectorized(16):
                    acc[g * L + v] = acc[g * L + v] + acc[g * L + v + 16]
            if L >= 16:
                for v in T.vectorized(8):
                    acc[g * L + v] = acc[g * L + v] + acc[g * L + v + 8]
            if L >= 8:
                for v in T.vectorized(4):
                    acc[g * L + v] = acc[g * L + v] + acc[g * L + v + 4]
            if L >= 4:
                for v in T.vectorized(2):
                    acc[g * L + v] = acc[g * L + v] + acc[g * L + v + 2]
            if L >= 2:
                acc[g * L] = acc[g * L] + acc[g * L + 1]

    return lane_sum


def make_row_group_dot(group: int, lanes: int, gathered: bool, prefetch: bool):
    """Return a T.macro `dot(acc, A, idx, base, step, next_base, X, xb, K)`.

    After it runs, acc[g * L] holds sum_k float(A[row_g, k]) * X[xb, k] for g in 0..G-1 and k < K
    (A's rows may be longer than K: row_stride), where row_g = idx[base + g * step] if `gathered`
    else base + g * step (then `idx` is unused; pass 0). step 1 reads G neighbouring rows at a
    time; a step of n // G reads n rows as G long streams, the access pattern of the bandwidth
    probe (ROW_ORDERS). With `prefetch`, the rows of the group that starts at `next_base` are
    prefetched one cache line per chunk (the hardware streamer does the rest); `next_base` must be
    a valid group start. K may be symbolic: the template is specialized to shapes later.
    """
    check_group(group, lanes)
    G, L = group, lanes
    lane_sum = make_lane_sum(G, L)

    def row(idx, i: tirx.PrimExpr) -> tirx.PrimExpr:
        return idx[i] if gathered else i

    @T.macro
    def dot(acc, A, idx, base, step, next_base, X, xb, K):
        for g in T.unroll(G):
            for v in T.vectorized(L):
                acc[g * L + v] = T.float32(0)
        for kc in range(K // L):
            if prefetch:
                for g in T.unroll(G):
                    T.evaluate(
                        T.call_llvm_intrin(
                            "void",
                            "llvm.prefetch.p0",
                            T.address_of(A[row(idx, next_base + g * step), kc * L]),
                            T.int32(0),
                            T.int32(3),
                            T.int32(1),
                        )
                    )
            for g in T.unroll(G):
                for v in T.vectorized(L):
                    acc[g * L + v] = (
                        acc[g * L + v]
                        + T.Cast("float32", A[row(idx, base + g * step), kc * L + v]) * X[xb, kc * L + v]
                    )
        lane_sum(acc)
        for g in T.unroll(G):
            for kt in range(K % L):
                acc[g * L] = acc[g * L] + T.Cast("float32", A[row(idx, base + g * step), K // L * L + kt]) * X[xb, K // L * L + kt]

    return dot


def make_row_group_split_dot(group: int, lanes: int):
    """Return a T.macro `dot(acc, acc2, A, idx, base, step, X, xb, KA, K)` over the gathered rows
    row_g = idx[base + g * step]: acc[g * L] = sum_{k < KA} A[row_g, k] X[xb, k] and
    acc2[g * L] = sum_{KA <= k < K} A[row_g, k] X[xb, k].

    Two dot products of one row in one pass, for a row that holds two operands side by side (the
    GRU's [W_in | W_hn], whose halves the step needs apart): the row is one stream, as a joint gate
    row is. The chunk that straddles KA is done in scalars rather than by zero-masking X, so that
    a non-finite weight in one half never leaks into the other half's sum (Inf * 0 is NaN).
    """
    check_group(group, lanes)
    G, L = group, lanes
    lane_sum = make_lane_sum(G, L)
    first_half = make_row_group_dot(G, L, gathered=True, prefetch=False)

    @T.macro
    def dot(acc, acc2, A, idx, base, step, X, xb, KA, K):
        # one half after the other, each reduced before the next starts: G rows of accumulators
        # live at a time; the first half is make_row_group_dot's dot over k < KA
        first_half(acc, A, idx, base, step, base, X, xb, KA)
        c1: T.let = (KA + L - 1) // L  # first whole chunk of the second half
        for g in T.unroll(G):
            for v in T.vectorized(L):
                acc2[g * L + v] = T.float32(0)
        for kc in range(T.max(K // L - c1, 0)):
            for g in T.unroll(G):
                for v in T.vectorized(L):
                    acc2[g * L + v] = acc2[g * L + v] + A[idx[base + g * step], (c1 + kc) * L + v] * X[xb, (c1 + kc) * L + v]
        lane_sum(acc2)
        for g in T.unroll(G):
            for kt in range(T.min(c1 * L, K) - KA):  # [KA, c1 * L)
                acc2[g * L] = acc2[g * L] + A[idx[base + g * step], KA + kt] * X[xb, KA + kt]
            for kt in range(T.max(T.min(K - K // L * L, K - c1 * L), 0)):  # [max(K // L, c1) * L, K)
                acc2[g * L] = acc2[g * L] + A[idx[base + g * step], K - kt - 1] * X[xb, K - kt - 1]

    return dot


def specialize(template: tirx.PrimFunc, shapes: list[tuple[tuple[int, ...], str]], symbol: str) -> tirx.PrimFunc:
    """Bind a template's symbolic buffer shapes by giving every parameter a concrete buffer.

    Kernel templates are parsed once per set of static knobs (TVMScript parsing costs about a
    second per function); binding shapes costs under a millisecond.
    """
    if len(shapes) != len(template.params):
        raise ValueError(f"{symbol}: {len(template.params)} parameters, {len(shapes)} shapes given")
    binding = {
        param: tirx.decl_buffer(shape, dtype, name=param.name)
        for param, (shape, dtype) in zip(template.params, shapes)
    }
    return template.specialize(binding).with_attr("global_symbol", symbol)
