"""Numpy references for the convolution kernels (float64), the oracles for kernel tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .conv_sites import ConvGeometry
from .reference import activation, sensitive_mask


def im2col(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """x (B,H,W,CI) -> patches (B,OH,OW,KH,KW,CI), zero padding."""
    xp = np.pad(x, ((0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (g.kernel_h, g.kernel_w), axis=(1, 2))  # B,H',W',CI,KH,KW
    windows = windows[:, :: g.stride_h, :: g.stride_w][:, : g.out_h, : g.out_w]
    return np.ascontiguousarray(np.moveaxis(windows, 3, 5))


def conv2d_nhwc(x: np.ndarray, weight_ohwi: np.ndarray, g: ConvGeometry, bias: np.ndarray | None = None) -> np.ndarray:
    """Pre-activation of a convolution, float64: (B,OH,OW,CO)."""
    patches = im2col(x.astype(np.float64), g).reshape(g.batch, g.out_h, g.out_w, -1)
    out = patches @ weight_ohwi.astype(np.float64).reshape(g.c_out, -1).T
    return out if bias is None else out + bias


@dataclass
class DualConvResult:
    y: np.ndarray  # (B,OH,OW,CO) outputs
    little: np.ndarray  # little values, shortcut included
    mask: np.ndarray  # bool, sensitive
    count: int  # outputs computed exactly


def dual_conv_reference(
    x: np.ndarray,
    weight_ohwi: np.ndarray,
    bias: np.ndarray,
    residual: np.ndarray | None,
    P: np.ndarray,
    Ps: np.ndarray,
    WL: np.ndarray,
    WLs: np.ndarray,
    bL: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    g: ConvGeometry,
) -> DualConvResult:
    """The dual convolution's contract (kernels/dual_conv2d.py) in float64."""
    patches = im2col(x.astype(np.float64), g).reshape(g.batch, g.out_h, g.out_w, -1)
    with np.errstate(over="ignore", invalid="ignore"):
        u = (patches @ P.astype(np.float64).T) * Ps
        little = (u @ WL.astype(np.float64).T) * WLs + bL
        exact = conv2d_nhwc(x, weight_ohwi, g, bias)
        if residual is not None:
            little = little + residual
            exact = exact + residual
    mask = sensitive_mask(little, lo, hi)
    y = np.where(mask, activation(exact, "relu"), 0.0)
    return DualConvResult(y=y, little=little, mask=mask, count=int(mask.sum()))
