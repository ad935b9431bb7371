"""Numpy reference of the dual-module computation, the oracle for kernel tests.

It mirrors the kernel's contract (tvm_dual/kernels/dual_dense.py) in float64 where the kernel uses
float32, so tests compare values with a tolerance and masks away from threshold ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels.little_module import QMAX, padded_k


def activation(v: np.ndarray, act: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        if act == "tanh":
            return np.tanh(v)
        if act == "sigmoid":
            return 1.0 / (1.0 + np.exp(-v))
        if act == "relu":
            return np.where(np.isnan(v), v, np.maximum(v, 0))
        if act == "none":
            return v
    raise ValueError(f"unknown activation {act!r}")


def sensitive_mask(little: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """True where the exact value is needed: lo <= v <= hi, or v is not finite."""
    with np.errstate(invalid="ignore"):
        return ((lo <= little) & (little <= hi)) | ~np.isfinite(little)


@dataclass
class DualResult:
    y: np.ndarray  # (B, N) outputs
    little: np.ndarray  # (B, N) little-module pre-activations
    mask: np.ndarray  # (B, N) bool, sensitive
    rows_read: int  # rows of W read: sensitive for any sample


def _quantize_rows(a: np.ndarray, padded_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As kernels/little_module.quantize_rows: per-row scale, 14-bit-or-less integer levels."""
    qmax = min(QMAX, (2**31 - 1) // (127 * padded_length))
    with np.errstate(over="ignore", invalid="ignore"):
        a32 = a.astype(np.float32)
        bad = ~np.isfinite(a32).all(axis=1)
        amax = np.max(np.abs(np.where(np.isfinite(a32), a32, 0)), axis=1).astype(np.float32)
        scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1)).astype(np.float32)
        q = np.rint(np.where(np.isfinite(a32), a32, 0) / scale[:, None])
    return q, scale, bad


def little_values(x, P, Ps, WL, WLs, bL, little_compute: str = "f32", vector_bits: int = 256) -> np.ndarray:
    """The little module's pre-activations, mirroring the kernel's arithmetic mode."""
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if little_compute == "f32":
            z = (x64 @ P.astype(np.float64).T) * Ps
            return (z @ WL.astype(np.float64).T) * WLs + bL
        xq, xs, bad = _quantize_rows(x, padded_k(x.shape[1], vector_bits))
        z = (xq @ P.astype(np.float64).T) * (Ps[None, :].astype(np.float64) * xs[:, None])
        zq, zs, bad_z = _quantize_rows(z, 2 * (-(-WL.shape[1] // 2)))
        little = (zq @ WL.astype(np.float64).T) * (zs[:, None].astype(np.float64) * WLs) + bL
        little[bad | bad_z] = np.nan
        return little


def dual_reference(
    x: np.ndarray,
    W: np.ndarray,
    bias: np.ndarray,
    P: np.ndarray,
    Ps: np.ndarray,
    WL: np.ndarray,
    WLs: np.ndarray,
    bL: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    act: str,
    little_compute: str = "f32",
    vector_bits: int = 256,
) -> DualResult:
    x64 = x.astype(np.float64)
    little = little_values(x, P, Ps, WL, WLs, bL, little_compute, vector_bits)
    with np.errstate(over="ignore", invalid="ignore"):
        exact = x64 @ W.astype(np.float64).T + bias
    mask = sensitive_mask(little, lo, hi)
    merged = np.where(mask, exact, little)
    y = activation(merged, act)
    if act == "relu":
        y = np.where(mask, y, 0.0)
    return DualResult(y=y, little=little, mask=mask, rows_read=int(mask.any(axis=0).sum()))
