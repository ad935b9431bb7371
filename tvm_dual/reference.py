"""Numpy reference of the dual-module computation, the oracle for kernel tests.

It mirrors the kernel's contract (tvm_dual/kernels/dual_dense.py) in float64 where the kernel uses
float32, so tests compare values with a tolerance and masks away from threshold ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
) -> DualResult:
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        z = (x64 @ P.astype(np.float64).T) * Ps
        little = (z @ WL.astype(np.float64).T) * WLs + bL
        exact = x64 @ W.astype(np.float64).T + bias
    mask = sensitive_mask(little, lo, hi)
    merged = np.where(mask, exact, little)
    y = activation(merged, act)
    if act == "relu":
        y = np.where(mask, y, 0.0)
    return DualResult(y=y, little=little, mask=mask, rows_read=int(mask.any(axis=0).sum()))
