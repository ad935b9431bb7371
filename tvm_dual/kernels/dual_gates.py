"""The dual-module kernel for the gates of one LSTM or GRU step at small batch.

A recurrent step computes its gate pre-activations from two linear terms, one on the layer input x
and one on the hidden state h. This kernel replaces both (or only the h term, see "modes") and
returns them so that the step's own elementwise graph (split, sigmoid/tanh, cell update) stays as
PyTorch exported it:

    out_h + out_x = the gate pre-activations, gate by gate, except the GRU candidate gate n, whose
    graph is tanh(x_n + r * h_n): there out_x holds x_n and out_h holds h_n.

Work is split in blocks of NB hidden units, and blocks in spans of S (DualKernelConfig.blocks_per_span,
as in dual_dense: a span's rows are read as one stream); a span owns every gate row of its units,
so the GRU's n gate can use its own units' final r without a second parallel region. Per span:
  1. little values of all gate rows of the span, block by block (int8 weights, one shared projection z = P u;
     float32 or integer arithmetic, DualKernelConfig.little_compute, kernels/little_module.py),
  2. per gate g, sensitive rows: lo[g] <= v <= hi[g] (or v not finite), where v is the little
     value (+ the exact x term in hoisted mode); a row is read if any sample needs it,
  3. exact rows, gathered, as in dual_dense,
  4. GRU only: r = sigmoid(final r pre-activation); the n decision is on x_n + r * h_n with little
     values (x_n exact in hoisted mode); a sensitive n unit reads its row [W_in | W_hn] once, as
     two dot products (x_n and h_n, which the step needs apart), so skipping n saves both.

Modes (a static knob):
  fused    inputs x (B, I) and h (B, H): both W_ih and W_hh rows are skipped, the little module sees
           u = [x; h]. A row is [W_ih | W_hh], one stream of I + H floats: one dot over u for the
           LSTM and the GRU r, z gates, two (x and h halves) for n. out_x is 0 except x_n.
  hoisted  input h and the exact x term of the step (the "addend", e.g. a slice of a projection
           hoisted over all time steps): only W_hh rows are skipped and the little module
           approximates W_hh h + b_hh. Decisions use little + addend; out_h excludes the addend.

Constants are laid out by pack_gate_constants: per-row vectors gate-major and padded to whole
blocks (l * HP + j), little weights as blocks WLB[nb, r, l * NB + v] = WL[l * H + nb * NB + v, r].
Little row groups l: LSTM i, f, g, o; GRU fused r, z, n_x, n_h; GRU hoisted r, z, n_h.
The kernel returns (out_h, count[, out_x]) where count is the number of gate rows read (a GRU n
unit counts once, as one row of width I + H or H), so ExposeDualCounters finds it at output 1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .activations import fast_sigmoid
from .dual_dense import MAX_KERNEL_BATCH, DualKernelConfig, ceil_div, sensitive
from .little_module import little_value, make_i16_stages, padded_k
from .row_dot import group_start, group_step, make_row_group_dot, make_row_group_split_dot, pad_rows, row_stride, specialize

CELLS = {"lstm": 4, "gru": 3}  # gates per cell
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
GATE_ACTS = {"lstm": ("sigmoid", "sigmoid", "tanh", "sigmoid"), "gru": ("sigmoid", "sigmoid", "tanh")}


def little_groups(cell: str, fused: bool) -> int:
    """Row groups of the little module: the GRU's fused n gate has separate x and h parts."""
    return 4 if cell == "lstm" or fused else 3


def joint_gates(cell: str) -> int:
    """Gates whose pre-activation is one sum (computed in the first pass of a block)."""
    return 4 if cell == "lstm" else 2


@dataclass(frozen=True)
class GateShape:
    """Static problem of one gate kernel."""

    cell: str
    batch: int
    hidden: int
    input_size: int  # I; unused in hoisted mode
    rank: int
    fused: bool
    aligned_rows: bool = True  # weight rows padded to whole cache lines (row_dot.row_stride)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {self.cell!r}")
        if not 1 <= self.batch <= MAX_KERNEL_BATCH:
            raise ValueError(f"gate kernel batch must be 1..{MAX_KERNEL_BATCH}, got {self.batch}")
        if min(self.hidden, self.rank) < 1 or (self.fused and self.input_size < 1):
            raise ValueError(f"gate kernel sizes must be positive, got {self}")

    @property
    def gates(self) -> int:
        return CELLS[self.cell]

    @property
    def little_rows(self) -> int:
        return little_groups(self.cell, self.fused) * self.hidden

    @property
    def projected(self) -> int:
        """Width of the little module's input u ([x; h] fused, h hoisted)."""
        return self.input_size + self.hidden if self.fused else self.hidden

    def stride(self, k: int) -> int:
        """Row stride of a weight operand whose rows hold k floats."""
        return row_stride(k, self.aligned_rows)

    @property
    def name(self) -> str:
        mode = "fused" if self.fused else "hoisted"
        suffix = "" if self.aligned_rows else "_unaligned"
        return f"dual_{self.cell}_{mode}_b{self.batch}_h{self.hidden}_i{self.input_size}_r{self.rank}{suffix}"


@functools.lru_cache(maxsize=None)
def dual_gates_template(cell: str, fused: bool, config: DualKernelConfig, debug: bool, vector_bits: int = 256) -> tirx.PrimFunc:
    """The kernel over symbolic shapes; make_dual_gates specializes it."""
    G, L, NB, S = config.rows_per_group, config.lanes, config.little_block, config.blocks_per_span
    proj_min, tasks = config.parallel_projection_min, config.tasks
    NG = CELLS[cell]
    NL = little_groups(cell, fused)
    NJ = joint_gates(cell)
    gru = cell == "gru"
    i16 = config.little_compute == "i16"
    far = config.row_order == "far"
    CH = 1
    if i16:
        # a block's NL * NB little columns are accumulated CH at a time: with more than 64 int32
        # accumulators (8 AVX2 registers) LLVM spilled and shuffled them on every rank pair
        CH = NB * max(k for k in range(1, NL + 1) if NL % k == 0 and NB * k <= 64)
        project_i16, little_i16 = make_i16_stages(G, CH, vector_bits, proj_min)
    exact_dot = make_row_group_dot(G, L, gathered=True, prefetch=config.prefetch)
    exact_dot1 = make_row_group_dot(1, L, gathered=True, prefetch=False)
    proj_dot = make_row_group_dot(G, L, gathered=False, prefetch=False)
    proj_dot1 = make_row_group_dot(1, L, gathered=False, prefetch=False)
    split_dot = make_row_group_split_dot(G, L)
    split_dot1 = make_row_group_split_dot(1, L)

    @T.macro
    def gather_rows(acc, accs, Wm, idx, slot, base, cnt, X, K, yl, sens, bias, B):
        # exact rows idx[base:base+cnt] of Wm over X, into yl at slot[], for the samples that need them
        # group j: selected rows j * G + g ("adjacent") or g * ngroups + j ("far"), as in dual_dense
        ngroups: T.let = cnt // G
        step: T.let = group_step(ngroups, far)
        for j in range(ngroups):
            first: T.let = base + group_start(j, G, far)
            for b in range(B):
                exact_dot(acc, Wm, idx, first, step, base + group_start(T.min(j + 1, ngroups - 1), G, far), X, b, K)
                for g in T.unroll(G):
                    if sens[b, slot[first + g * step]] != T.int8(0):
                        yl[b, slot[first + g * step]] = acc[g * L] + bias[slot[first + g * step]]
        for jt in range(cnt - ngroups * G):
            for b in range(B):
                exact_dot1(accs, Wm, idx, base + ngroups * G + jt, 1, base + ngroups * G + jt, X, b, K)
                if sens[b, slot[base + ngroups * G + jt]] != T.int8(0):
                    yl[b, slot[base + ngroups * G + jt]] = accs[0] + bias[slot[base + ngroups * G + jt]]

    @T.macro
    def gather_split_rows(acc, acc2, accs, accs2, Wm, idx, slot, base, cnt, X, KA, K, yl, sens, bias, B, HP):
        # the GRU's n rows [W_in | W_hn]: x_n (k < KA) into yl at slot[], h_n into slot[] + HP
        ngroups: T.let = cnt // G
        step: T.let = group_step(ngroups, far)
        for j in range(ngroups):
            first: T.let = base + group_start(j, G, far)
            for b in range(B):
                split_dot(acc, acc2, Wm, idx, first, step, X, b, KA, K)
                for g in T.unroll(G):
                    if sens[b, slot[first + g * step]] != T.int8(0):
                        yl[b, slot[first + g * step]] = acc[g * L] + bias[slot[first + g * step]]
                        yl[b, slot[first + g * step] + HP] = acc2[g * L] + bias[slot[first + g * step] + HP]
        for jt in range(cnt - ngroups * G):
            for b in range(B):
                split_dot1(accs, accs2, Wm, idx, base + ngroups * G + jt, 1, X, b, KA, K)
                if sens[b, slot[base + ngroups * G + jt]] != T.int8(0):
                    yl[b, slot[base + ngroups * G + jt]] = accs[0] + bias[slot[base + ngroups * G + jt]]
                    yl[b, slot[base + ngroups * G + jt] + HP] = accs2[0] + bias[slot[base + ngroups * G + jt] + HP]

    def addend_value(addend, b, g, j, H):
        return T.if_then_else(j < H, addend[b, g * H + T.min(j, H - 1)], T.float32(0))

    def decision_value(yl, addend, b, g, j, HP, H):
        """What gate g's mask tests: the little value, plus the exact x term in hoisted mode."""
        if fused:
            return yl[b, g * HP + j]
        return yl[b, g * HP + j] + addend_value(addend, b, g, j, H)

    def n_decision(yl, addend, b, j, HP, H):
        """The GRU n gate's pre-activation x_n + r * h_n, with this span's final r."""
        r_gate = fast_sigmoid(decision_value(yl, addend, b, 0, j, HP, H))
        if fused:
            return yl[b, 2 * HP + j] + r_gate * yl[b, 3 * HP + j]
        return addend_value(addend, b, 2, j, H) + r_gate * yl[b, 2 * HP + j]

    @T.macro
    def write_outputs(out_h, out_x, yl, b, g, j, H, HP):
        if gru and fused and g == 2:
            out_h[b, g * H + j] = yl[b, 3 * HP + j]
            out_x[b, g * H + j] = yl[b, 2 * HP + j]
        else:
            out_h[b, g * H + j] = yl[b, g * HP + j]
            if fused:
                out_x[b, g * H + j] = T.float32(0)

    @T.macro
    def little_block(WLB, WLs, bL, z, zq, zs, bad, yl, little_out, nb, B, R, HP, RH):
        c0: T.let = nb * NB
        # 1. little values of every row group of the block, NL * NB accumulators
        acc2 = T.alloc_buffer((NL * NB,), "float32")
        acc2q = T.alloc_buffer((NL * NB,), "int32")
        chunk_q = T.alloc_buffer((CH if i16 else 1,), "int32")
        for b in range(B):
            if i16:
                for part in range(NL * NB // CH):
                    little_i16(WLB, zq, chunk_q, nb, part * CH, b, RH)
                    for v in T.vectorized(CH):
                        acc2q[part * CH + v] = chunk_q[v]
                for l in T.unroll(NL):
                    for v in T.vectorized(NB):
                        yl[b, l * HP + c0 + v] = little_value(
                            acc2q[l * NB + v], zs[b], bad[b], WLs[l * HP + c0 + v], bL[l * HP + c0 + v]
                        )
            else:
                for v in T.vectorized(NL * NB):
                    acc2[v] = T.float32(0)
                for r in range(R):
                    for v in T.vectorized(NL * NB):
                        acc2[v] = acc2[v] + T.Cast("float32", WLB[nb, r, v]) * z[b, r]
                for l in T.unroll(NL):
                    for v in T.vectorized(NB):
                        yl[b, l * HP + c0 + v] = acc2[l * NB + v] * WLs[l * HP + c0 + v] + bL[l * HP + c0 + v]
            if debug:
                for l in range(NL):
                    for v in range(NB):
                        little_out[b, l * HP + c0 + v] = yl[b, l * HP + c0 + v]

    @T.macro
    def joint_mask_block(yl, addend, lo, hi, sens, nb, B, H, HP):
        c0: T.let = nb * NB
        for b in range(B):
            for g in range(NJ):
                for v in T.vectorized(NB):
                    sens[b, g * HP + c0 + v] = T.Cast(
                        "int8", sensitive(decision_value(yl, addend, b, g, c0 + v, HP, H), lo[g * HP + c0 + v], hi[g * HP + c0 + v])
                    )

    @T.macro
    def n_mask_block(yl, addend, lo, hi, sens, nb, B, H, HP):
        c0: T.let = nb * NB
        for b in range(B):
            for v in T.vectorized(NB):
                sens[b, 2 * HP + c0 + v] = T.Cast("int8", sensitive(n_decision(yl, addend, b, c0 + v, HP, H), lo[2 * HP + c0 + v], hi[2 * HP + c0 + v]))
            if fused:
                for v in T.vectorized(NB):
                    sens[b, 3 * HP + c0 + v] = sens[b, 2 * HP + c0 + v]

    @T.macro
    def outputs_block(out_h, out_x, yl, nb, B, H, HP):
        # out_h + out_x = pre-activations; GRU n: out_x = x_n, out_h = h_n
        c0: T.let = nb * NB
        for b in range(B):
            for g in T.unroll(NG):
                if c0 + NB <= H:
                    for v in T.vectorized(NB):
                        write_outputs(out_h, out_x, yl, b, g, c0 + v, H, HP)
                else:
                    for v in range(H - c0):
                        write_outputs(out_h, out_x, yl, b, g, c0 + v, H, HP)

    @T.macro
    def span(xin, addend, Wj, bias, WLB, WLs, bL, lo, hi, out_h, out_x, z, zq, zs, bad, yl, sens, idx,
             slot, span_count, little_out, s, B, H, I, KJS, R, HP, RH, NBT):
        b0: T.let = s * S
        nblk: T.let = T.min(S, NBT - b0)
        c0: T.let = b0 * NB
        width: T.let = nblk * NB
        base: T.let = b0 * (NG * NB)
        # 1. little values of every row group of the span's blocks
        for i in range(nblk):
            little_block(WLB, WLs, bL, z, zq, zs, bad, yl, little_out, b0 + i, B, R, HP, RH)
        # 2. joint gates: masks, one compaction over the span (branch-free; padded units never count), its rows
        for i in range(nblk):
            joint_mask_block(yl, addend, lo, hi, sens, b0 + i, B, H, HP)
        cnt = T.alloc_buffer((1,), "int32")
        hit = T.alloc_buffer((1,), "int32")
        cnt[0] = 0
        for g in range(NJ):
            for v in range(width):
                hit[0] = 0
                for b in range(B):
                    hit[0] = T.max(hit[0], T.Cast("int32", sens[b, g * HP + c0 + v]))
                idx[base + cnt[0]] = g * H + T.min(c0 + v, H - 1)
                slot[base + cnt[0]] = g * HP + c0 + v
                cnt[0] = cnt[0] + T.if_then_else(c0 + v < H, hit[0], 0)
        acc3 = T.alloc_buffer((G * L,), "float32")
        acc4 = T.alloc_buffer((L,), "float32")
        gather_rows(acc3, acc4, Wj, idx, slot, base, cnt[0], xin, KJS, yl, sens, bias, B)
        cnt2 = T.alloc_buffer((1,), "int32")
        hit2 = T.alloc_buffer((1,), "int32")
        cnt2[0] = 0
        if gru:
            # 3. GRU n gate: decided on x_n + r * h_n with the span's final r
            base2: T.let = base + NJ * width
            for i in range(nblk):
                n_mask_block(yl, addend, lo, hi, sens, b0 + i, B, H, HP)
            for v in range(width):
                hit2[0] = 0
                for b in range(B):
                    hit2[0] = T.max(hit2[0], T.Cast("int32", sens[b, 2 * HP + c0 + v]))
                idx[base2 + cnt2[0]] = 2 * H + T.min(c0 + v, H - 1)
                slot[base2 + cnt2[0]] = 2 * HP + c0 + v
                cnt2[0] = cnt2[0] + T.if_then_else(c0 + v < H, hit2[0], 0)
            if fused:
                acc5 = T.alloc_buffer((G * L,), "float32")
                acc6 = T.alloc_buffer((L,), "float32")
                gather_split_rows(acc3, acc5, acc4, acc6, Wj, idx, slot, base2, cnt2[0], xin, I, KJS, yl, sens, bias, B, HP)
            else:
                gather_rows(acc3, acc4, Wj, idx, slot, base2, cnt2[0], xin, KJS, yl, sens, bias, B)
        # 4. outputs
        for i in range(nblk):
            outputs_block(out_h, out_x, yl, b0 + i, B, H, HP)
        span_count[s] = cnt[0] + cnt2[0]

    @T.macro
    def body(x, h, addend, Wj, bias, P, Ps, WLB, WLs, bL, lo, hi, out_h, out_x, count, little_out, sens_out,
             B, H, I, KJ, KJS, R, NBT, HP, KP, RH):
        # u = [x; h] (fused) or h, zero-padded to Wj's row stride: exact dots over Wj run over whole vectors
        xin = T.alloc_buffer((B, KJS), "float32")
        z = T.alloc_buffer((B, R), "float32")
        yl = T.alloc_buffer((B, NL * HP), "float32")
        sens = T.alloc_buffer((B, NL * HP), "int8")
        idx = T.alloc_buffer((NBT * NG * NB,), "int32")
        slot = T.alloc_buffer((NBT * NG * NB,), "int32")
        span_count = T.alloc_buffer((NBT,), "int32")  # one per span; spans <= blocks
        xq = T.alloc_buffer((B, KP) if i16 else (1, 1), "int16")  # "i16" mode state
        zq = T.alloc_buffer((B, 2 * RH) if i16 else (1, 1), "int16")
        xs = T.alloc_buffer((B,), "float32")
        zs = T.alloc_buffer((B,), "float32")
        bad = T.alloc_buffer((B,), "int32")
        if fused:
            for b in range(B):
                for k in range(I):
                    xin[b, k] = x[b, k]
                for k in range(H):
                    xin[b, I + k] = h[b, k]
        else:
            for b in range(B):
                for k in range(H):
                    xin[b, k] = h[b, k]
        for b in range(B):
            for k in range(KJS - KJ):
                xin[b, KJ + k] = T.float32(0)
        # projection z = Ps * (P u), in parallel only when it pays for a parallel region
        if i16:
            project_i16(xin, xq, xs, z, zq, zs, bad, P, Ps, B, KJ, KP, R, RH)
        else:
            if B * R * KJ >= proj_min:
                for rg in T.parallel(R // G):
                    acc = T.alloc_buffer((G * L,), "float32")
                    for b in range(B):
                        proj_dot(acc, P, 0, rg * G, 1, rg * G, xin, b, KJ)
                        for g in T.unroll(G):
                            z[b, rg * G + g] = acc[g * L] * Ps[rg * G + g]
            else:
                for rg in range(R // G):
                    acc_s = T.alloc_buffer((G * L,), "float32")
                    for b in range(B):
                        proj_dot(acc_s, P, 0, rg * G, 1, rg * G, xin, b, KJ)
                        for g in T.unroll(G):
                            z[b, rg * G + g] = acc_s[g * L] * Ps[rg * G + g]
            acc1 = T.alloc_buffer((L,), "float32")
            for rt in range(R % G):
                for b in range(B):
                    proj_dot1(acc1, P, 0, R // G * G + rt, 1, R // G * G + rt, xin, b, KJ)
                    z[b, R // G * G + rt] = acc1[0] * Ps[R // G * G + rt]
        NST: T.let = (NBT + S - 1) // S
        if tasks == 0:
            for sp in T.parallel(NST):
                span(xin, addend, Wj, bias, WLB, WLs, bL, lo, hi, out_h, out_x, z, zq, zs, bad, yl, sens,
                     idx, slot, span_count, little_out, sp, B, H, I, KJS, R, HP, RH, NBT)
        else:
            for task in T.parallel(tasks):
                for i in range((NST + tasks - 1 - task) // tasks):
                    span(xin, addend, Wj, bias, WLB, WLs, bL, lo, hi, out_h, out_x, z, zq, zs, bad, yl,
                         sens, idx, slot, span_count, little_out, task + i * tasks, B, H, I, KJS, R, HP, RH, NBT)
        count[0] = 0
        for sp in range(NST):
            count[0] = count[0] + span_count[sp]
        if debug:
            for b, n in T.grid(B, NL * HP):
                sens_out[b, n] = sens[b, n]

    # One signature per (mode, debug): TVMScript needs the parameters spelled out.
    if fused:

        @T.prim_func
        def kernel(x_h: T.handle, h_h: T.handle, Wj_h: T.handle, bias_h: T.handle, P_h: T.handle, Ps_h: T.handle,
                   WLB_h: T.handle, WLs_h: T.handle, bL_h: T.handle, lo_h: T.handle, hi_h: T.handle, oh_h: T.handle,
                   cnt_h: T.handle, ox_h: T.handle, lit_h: T.handle, sens_h: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B = T.int32()
            H = T.int32()
            I = T.int32()
            KJS = T.int32()  # Wj's row stride (KJ = I + H fused, H hoisted, padded: row_dot.row_stride)
            R = T.int32()
            NBT = T.int32()
            KP = T.int32()  # P's row length: KJ, or KJ padded to whole int16 vectors in "i16" mode
            RH = T.int32()  # rank pairs in "i16" mode (WLB is (NBT, RH, NL*NB, 2)); unused in "f32" mode
            NW = T.int32()
            NLP = T.int32()
            NDB = T.int32()
            NDN = T.int32()
            x = T.match_buffer(x_h, (B, I), "float32")
            h = T.match_buffer(h_h, (B, H), "float32")
            Wj = T.match_buffer(Wj_h, (NW, KJS), "float32")
            bias = T.match_buffer(bias_h, (NLP,), "float32")
            P = T.match_buffer(P_h, (R, KP), "int8")
            Ps = T.match_buffer(Ps_h, (R,), "float32")
            WLB = T.match_buffer(WLB_h, (NBT, RH, NL * NB, 2) if i16 else (NBT, R, NL * NB), "int8")
            WLs = T.match_buffer(WLs_h, (NLP,), "float32")
            bL = T.match_buffer(bL_h, (NLP,), "float32")
            lo = T.match_buffer(lo_h, (NLP,), "float32")
            hi = T.match_buffer(hi_h, (NLP,), "float32")
            out_h = T.match_buffer(oh_h, (B, NW), "float32")
            count = T.match_buffer(cnt_h, (1,), "int32")
            out_x = T.match_buffer(ox_h, (B, NW), "float32")
            little_out = T.match_buffer(lit_h, (NDB, NDN), "float32")
            sens_out = T.match_buffer(sens_h, (NDB, NDN), "int8")
            body(x, h, x, Wj, bias, P, Ps, WLB, WLs, bL, lo, hi, out_h, out_x, count, little_out, sens_out,
                 B, H, I, I + H, KJS, R, NBT, NBT * NB, KP, RH)

    else:

        @T.prim_func
        def kernel(h_h: T.handle, add_h: T.handle, Wj_h: T.handle, bias_h: T.handle, P_h: T.handle, Ps_h: T.handle,
                   WLB_h: T.handle, WLs_h: T.handle, bL_h: T.handle, lo_h: T.handle, hi_h: T.handle, oh_h: T.handle,
                   cnt_h: T.handle, lit_h: T.handle, sens_h: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            B = T.int32()
            H = T.int32()
            KJS = T.int32()  # Wj's row stride (KJ = I + H fused, H hoisted, padded: row_dot.row_stride)
            R = T.int32()
            NBT = T.int32()
            KP = T.int32()  # P's row length: KJ, or KJ padded to whole int16 vectors in "i16" mode
            RH = T.int32()  # rank pairs in "i16" mode (WLB is (NBT, RH, NL*NB, 2)); unused in "f32" mode
            NW = T.int32()
            NLP = T.int32()
            NDB = T.int32()
            NDN = T.int32()
            h = T.match_buffer(h_h, (B, H), "float32")
            addend = T.match_buffer(add_h, (B, NW), "float32")
            Wj = T.match_buffer(Wj_h, (NW, KJS), "float32")
            bias = T.match_buffer(bias_h, (NLP,), "float32")
            P = T.match_buffer(P_h, (R, KP), "int8")
            Ps = T.match_buffer(Ps_h, (R,), "float32")
            WLB = T.match_buffer(WLB_h, (NBT, RH, NL * NB, 2) if i16 else (NBT, R, NL * NB), "int8")
            WLs = T.match_buffer(WLs_h, (NLP,), "float32")
            bL = T.match_buffer(bL_h, (NLP,), "float32")
            lo = T.match_buffer(lo_h, (NLP,), "float32")
            hi = T.match_buffer(hi_h, (NLP,), "float32")
            out_h = T.match_buffer(oh_h, (B, NW), "float32")
            count = T.match_buffer(cnt_h, (1,), "int32")
            little_out = T.match_buffer(lit_h, (NDB, NDN), "float32")
            sens_out = T.match_buffer(sens_h, (NDB, NDN), "int8")
            body(h, h, addend, Wj, bias, P, Ps, WLB, WLs, bL, lo, hi, out_h, out_h, count, little_out, sens_out,
                 B, H, H, H, KJS, R, NBT, NBT * NB, KP, RH)

    if debug:
        return kernel
    # Without debug the body never touches the last two buffers: drop them from the signature.
    return tirx.PrimFunc(list(kernel.params[:-2]), kernel.body, kernel.ret_type, kernel.attrs)


def make_dual_gates(
    shape: GateShape, config: DualKernelConfig = DualKernelConfig(), debug: bool = False, vector_bits: int = 256
) -> tirx.PrimFunc:
    """The gate kernel for one shape. Arguments in order:

    fused:   x (B, I), h (B, H), Wj, then pack_gate_constants' vectors;
             outputs out_h (B, NG*H), count (1,) int32, out_x (B, NG*H)
    hoisted: h (B, H), addend (B, NG*H), Wj, then the constants; outputs out_h, count.
    Wj is (NG*H, I+H) = [W_ih | W_hh] (fused) or W_hh (NG*H, H) (hoisted), its rows padded to
    shape.stride (gate_kernel_weights lays it out).
    With `debug` two more outputs: little values and masks, (B, NL*HP) in the padded layout.
    vector_bits is the target's SIMD width (target.vector_bits), used by the "i16" little module.
    """
    if config.little_block > 32:
        raise ValueError("the gate kernel keeps little_groups x little_block accumulators; use little_block <= 32")
    B, H, I, R = shape.batch, shape.hidden, shape.input_size, shape.rank
    NB = config.little_block
    NL, NG = little_groups(shape.cell, shape.fused), shape.gates
    nbt = ceil_div(H, NB)
    HP = nbt * NB
    f32 = "float32"
    KJ = shape.projected
    i16 = config.little_compute == "i16"
    kp = padded_k(KJ, vector_bits) if i16 else KJ
    wlb = (nbt, ceil_div(R, 2), NL * NB, 2) if i16 else (nbt, R, NL * NB)
    consts = [((NL * HP,), f32), ((R, kp), "int8"), ((R,), f32), (wlb, "int8"),
              ((NL * HP,), f32), ((NL * HP,), f32), ((NL * HP,), f32), ((NL * HP,), f32)]
    # lo/hi are per gate (NG * HP) but share the NL * HP layout (the GRU's n_h slot is unused)
    if shape.fused:
        shapes = [((B, I), f32), ((B, H), f32), ((NG * H, shape.stride(KJ)), f32), *consts, ((B, NG * H), f32), ((1,), "int32"), ((B, NG * H), f32)]
    else:
        shapes = [((B, H), f32), ((B, NG * H), f32), ((NG * H, shape.stride(KJ)), f32), *consts, ((B, NG * H), f32), ((1,), "int32")]
    if debug:
        shapes += [((B, NL * HP), f32), ((B, NL * HP), "int8")]
    template = dual_gates_template(shape.cell, shape.fused, config, debug, vector_bits if i16 else 256)
    func = specialize(template, shapes, shape.name + ("_debug" if debug else ""))
    return func


def gate_kernel_weights(shape: GateShape, W_ih: np.ndarray, W_hh: np.ndarray) -> list[np.ndarray]:
    """The kernel's weight operand from PyTorch's gate-major W_ih, W_hh: [W_ih | W_hh] fused, W_hh
    hoisted; rows padded to shape.stride."""
    if not shape.fused:
        return [pad_rows(W_hh, shape.stride(shape.hidden))]
    return [pad_rows(np.concatenate([W_ih, W_hh], axis=1), shape.stride(shape.projected))]


def gate_kernel_bias(shape: GateShape, b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """Bias of the exact rows, in little row-group order (pack_gate_constants' `bias`)."""
    H = shape.hidden
    if not shape.fused:
        return b_hh
    joint = b_ih + b_hh
    if shape.cell == "lstm":
        return joint
    return np.concatenate([joint[: 2 * H], b_ih[2 * H :], b_hh[2 * H :]])


def pack_gate_constants(
    bias: np.ndarray,
    P: np.ndarray,
    Ps: np.ndarray,
    WL: np.ndarray,
    WLs: np.ndarray,
    bL: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    hidden: int,
    config: DualKernelConfig,
    vector_bits: int = 256,
) -> list[np.ndarray]:
    """Constants in kernel order and layout. bias, WL (rows), WLs, bL: (NL*H,) in little row-group
    order; lo, hi: (NG*H,) per gate. Padded units get an empty sensitive range. In "i16" mode the
    little weights are blocks of rank pairs (NBT, ceil(R/2), NL*NB, 2) and P's rows are
    zero-padded to whole int16 vectors."""
    H, NB = hidden, config.little_block
    nl = WL.shape[0] // H
    ng = lo.shape[0] // H
    nbt = ceil_div(H, NB)
    hp = nbt * NB
    r = WL.shape[1]

    def pad(v: np.ndarray, groups: int, fill: float) -> np.ndarray:
        out = np.full((nl, hp), fill, dtype=np.float32)
        out[:groups, :H] = np.asarray(v, dtype=np.float32).reshape(groups, H)
        return out.reshape(-1)

    if config.little_compute == "i16":
        rh = ceil_div(r, 2)
        wl = np.zeros((nl, hp, 2 * rh), dtype=WL.dtype)
        wl[:, :H, :r] = WL.reshape(nl, H, r)
        blocks = wl.reshape(nl, nbt, NB, rh, 2).transpose(1, 3, 0, 2, 4).reshape(nbt, rh, nl * NB, 2)
        P = np.pad(P, ((0, 0), (0, padded_k(P.shape[1], vector_bits) - P.shape[1])))
    else:
        wl = np.zeros((nl, hp, r), dtype=WL.dtype)
        wl[:, :H] = WL.reshape(nl, H, r)
        blocks = wl.reshape(nl, nbt, NB, r).transpose(1, 3, 0, 2).reshape(nbt, r, nl * NB)
    arrays = [pad(bias, nl, 0), P, Ps, blocks, pad(WLs, nl, 0), pad(bL, nl, 0), pad(lo, ng, np.inf), pad(hi, ng, -np.inf)]
    return [np.ascontiguousarray(a) for a in arrays]


def gate_little_bytes(shape: GateShape) -> int:
    """Bytes of little-module constants read per call (int8 weights, scales, biases, bounds)."""
    nl = little_groups(shape.cell, shape.fused)
    return shape.rank * (shape.projected + nl * shape.hidden) + 4 * (shape.rank + 5 * nl * shape.hidden)
