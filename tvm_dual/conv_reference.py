"""Numpy references for the convolution kernels (float64), the oracles for kernel tests."""

from __future__ import annotations

import numpy as np

from .conv_sites import ConvGeometry


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
