"""Numpy reference of the recurrent gate kernel (tvm_dual/kernels/dual_gates.py), in float64.

Like reference.py it is the oracle for kernel tests; it also serves calibration, which needs the
kernel's decisions (the GRU's n decision depends on the final r) without running the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reference import activation, sensitive_mask


@dataclass
class GateWeights:
    """One recurrent layer's weights in PyTorch's layout (gate-major rows)."""

    cell: str
    W_ih: np.ndarray  # (NG*H, I)
    W_hh: np.ndarray  # (NG*H, H)
    b_ih: np.ndarray  # (NG*H,) zeros when the layer has no bias
    b_hh: np.ndarray

    @property
    def hidden(self) -> int:
        return self.W_hh.shape[1]

    @property
    def input_size(self) -> int:
        return self.W_ih.shape[1]

    def little_target(self, fused: bool) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) of what the little module approximates, on u = [x; h] (fused) or h (hoisted),
        in little row-group order (the GRU's fused n gate as separate x and h rows)."""
        H, I = self.hidden, self.input_size
        if not fused:
            return self.W_hh, self.b_hh
        joint = np.concatenate([self.W_ih, self.W_hh], axis=1)
        bias = self.b_ih + self.b_hh
        if self.cell == "lstm":
            return joint, bias
        n_x = np.concatenate([self.W_ih[2 * H :], np.zeros((H, H), self.W_ih.dtype)], axis=1)
        n_h = np.concatenate([np.zeros((H, I), self.W_hh.dtype), self.W_hh[2 * H :]], axis=1)
        W = np.concatenate([joint[: 2 * H], n_x, n_h], axis=0)
        b = np.concatenate([bias[: 2 * H], self.b_ih[2 * H :], self.b_hh[2 * H :]])
        return W, b


@dataclass
class GateResult:
    out_h: np.ndarray  # (B, NG*H)
    out_x: np.ndarray  # (B, NG*H), zeros in hoisted mode
    little: np.ndarray  # (B, NL*H) little values, row-group order
    mask: np.ndarray  # (B, NG*H) bool: sensitive, per gate
    rows_read: int


def gates_reference(
    weights: GateWeights,
    fused: bool,
    h: np.ndarray,
    x: np.ndarray | None,
    addend: np.ndarray | None,
    lo: np.ndarray,
    hi: np.ndarray,
    little: np.ndarray,
) -> GateResult:
    """The kernel's contract given the little values (B, NL*H): masks, merged outputs, rows read.

    fused needs x; hoisted needs addend (the exact x term, (B, NG*H)). Taking the little values as
    an argument lets a test use the kernel's own float32 values, so masks compare exactly.
    """
    H = weights.hidden
    B = h.shape[0]
    h64 = h.astype(np.float64)
    little = little.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if fused:
            x64 = x.astype(np.float64)
            exact_x = x64 @ weights.W_ih.T.astype(np.float64) + weights.b_ih
            exact_h = h64 @ weights.W_hh.T.astype(np.float64) + weights.b_hh
            add = np.zeros((B, weights.W_hh.shape[0]))
        else:
            exact_x = None
            exact_h = h64 @ weights.W_hh.T.astype(np.float64) + weights.b_hh
            add = addend.astype(np.float64)
        mask = np.zeros((B, weights.W_hh.shape[0]), dtype=bool)
        out_x = np.zeros_like(add)
        if weights.cell == "lstm":
            exact = exact_x + exact_h if fused else exact_h
            mask[:] = sensitive_mask(little + add, lo, hi)
            out_h = np.where(mask, exact, little)
        else:
            rz = slice(0, 2 * H)
            exact_rz = (exact_x[:, rz] + exact_h[:, rz]) if fused else exact_h[:, rz]
            mask[:, rz] = sensitive_mask(little[:, rz] + add[:, rz], lo[rz], hi[rz])
            merged_rz = np.where(mask[:, rz], exact_rz, little[:, rz])
            r = activation(merged_rz[:, :H] + add[:, :H], "sigmoid")
            n = slice(2 * H, 3 * H)
            if fused:
                lx, lh = little[:, 2 * H : 3 * H], little[:, 3 * H : 4 * H]
                mask[:, n] = sensitive_mask(lx + r * lh, lo[n], hi[n])
                out_x[:, n] = np.where(mask[:, n], exact_x[:, n], lx)
            else:
                lh = little[:, n]
                mask[:, n] = sensitive_mask(add[:, n] + r * lh, lo[n], hi[n])
            out_h = np.concatenate([merged_rz, np.where(mask[:, n], exact_h[:, n], lh)], axis=1)
    return GateResult(out_h=out_h, out_x=out_x, little=little, mask=mask, rows_read=int(mask.any(axis=0).sum()))


def cell_update(cell: str, pre_x: np.ndarray, pre_h: np.ndarray, h: np.ndarray, c: np.ndarray | None):
    """The cell's new (h, c) from its gate terms, c None for the GRU: pre_x = the x term and pre_h
    the h term of every gate (a GRU's n gate is tanh(x_n + r * h_n), so the two stay apart), as
    gates_reference returns them (out_x, out_h)."""
    if cell == "gru":
        H = h.shape[1]
        r = activation(pre_x[:, :H] + pre_h[:, :H], "sigmoid")
        z = activation(pre_x[:, H : 2 * H] + pre_h[:, H : 2 * H], "sigmoid")
        n = np.tanh(pre_x[:, 2 * H :] + r * pre_h[:, 2 * H :])
        return (1.0 - z) * n + z * h, None
    i, f, g, o = np.split(pre_x + pre_h, 4, axis=1)
    c_new = activation(f, "sigmoid") * c + activation(i, "sigmoid") * np.tanh(g)
    return activation(o, "sigmoid") * np.tanh(c_new), c_new
