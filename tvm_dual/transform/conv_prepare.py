"""The passes that put a convolutional network in the form the convolution rewrites expect.

    ClipToMinRelu       ReLU6 (clip) -> minimum(relu, 6), layout-agnostic
    ConvertLayout       (TVM) conv2d, and the ops that follow it, to NHWC data / OHWI weights: channels innermost,
                        so the patch of an output pixel is KH contiguous runs of KW * C_in floats
    FoldConvBatchNorm   inference batch norms into the convolutions, weights as constants

They run right after import (frontend.import_model), before any dual-module rewrite, and leave a
model without convolutions untouched.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .clip_to_min_relu import ClipToMinRelu
from .fold_conv_batch_norm import FoldConvBatchNorm

# Pooling, elementwise ops and reductions follow their input's layout (ConvertLayout rejects a
# desired layout for pooling).
DESIRED_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"]}


def has_conv2d(mod: tvm.IRModule) -> bool:
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.nn.conv2d":
            found.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def prepare_convolutions(mod: tvm.IRModule) -> tvm.IRModule:
    if not has_conv2d(mod):
        return mod
    passes = [ClipToMinRelu(), relax.transform.ConvertLayout(DESIRED_LAYOUTS), FoldConvBatchNorm()]
    return tvm.transform.Sequential(passes)(mod)
