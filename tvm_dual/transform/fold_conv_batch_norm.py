"""FoldConvBatchNorm: inference batch norm folded into the preceding convolution, weights as constants.

    batch_norm(conv2d(x, W) [+ b], gamma, beta, mean, var)[0]  ->  conv2d(x, W * s) + (b - mean) * s + beta
    with s = gamma / sqrt(var + eps) per output channel

TVM 0.27 has relax.transform.FoldBatchnormToConv2D, but it emits the scale computation as graph
operators that only FoldConstant turns into constants, and FoldConstant also folds the
permute_dims(W) of every linear layer, which the dual-module rewrites match on. This pass computes
the folded weights with numpy instead, and also materializes every convolution weight that is a
layout permutation of a constant (what ConvertLayout leaves), so that later passes see plain
OHWI constants. The bias it emits has shape (1, 1, 1, C) (NHWC) or (1, C, 1, 1) (NCHW).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..conv_sites import CONV_OP, const_value, is_op, resolve


def _channel_shape(layout: str, axis: str, channels: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector along `axis` of a 4-D `layout`."""
    return tuple(channels if a == axis else 1 for a in layout)


@relax.expr_functor.mutator
class _Folder(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, var2val: dict) -> None:
        super().__init__(mod)
        self.var2val = var2val

    def _conv(self, call: relax.Call, weight: np.ndarray) -> relax.Expr:
        return relax.Call(call.op, [self.visit_expr(call.args[0]), relax.const(weight.astype(np.float32))], call.attrs)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if is_op(call, CONV_OP) and not isinstance(call.args[1], tvm.ir.GenericConst):
            weight = const_value(call.args[1], self.var2val)
            if weight is not None:
                return self._conv(call, weight)
        return super().visit_call_(call)

    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> relax.Expr:
        folded = self._fold(op) if op.index == 0 else None
        return folded if folded is not None else super().visit_tuple_getitem_(op)

    def _fold(self, op: relax.TupleGetItem) -> relax.Expr | None:
        bn = resolve(op.tuple_value, self.var2val)
        if not is_op(bn, "relax.nn.batch_norm") or bool(bn.attrs.training):
            return None
        params = [const_value(a, self.var2val) for a in bn.args[1:]]
        if any(p is None for p in params):
            return None
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
        if not bool(bn.attrs.scale):
            gamma = np.ones_like(gamma)
        if not bool(bn.attrs.center):
            beta = np.zeros_like(beta)
        z = resolve(bn.args[0], self.var2val)
        conv_bias = None
        if is_op(z, "relax.add"):
            for conv_side in (0, 1):
                inner = resolve(z.args[conv_side], self.var2val)
                value = const_value(z.args[1 - conv_side], self.var2val) if is_op(inner, CONV_OP) else None
                if value is not None:
                    z, conv_bias = inner, value
                    break
            else:
                return None
        if not is_op(z, CONV_OP) or int(z.attrs.groups) != 1:
            return None
        weight = const_value(z.args[1], self.var2val)
        layout, kernel_layout = str(z.attrs.out_layout or z.attrs.data_layout), str(z.attrs.kernel_layout)
        if weight is None or len(layout) != 4 or bn.attrs.axis % 4 != layout.index("C"):
            return None
        channels = weight.shape[kernel_layout.index("O")]
        if gamma.size != channels or (conv_bias is not None and conv_bias.size != channels):
            return None
        scale = gamma / np.sqrt(var + float(bn.attrs.epsilon))
        shift = beta - mean * scale + (0.0 if conv_bias is None else conv_bias.reshape(-1).astype(np.float64) * scale)
        weight = weight.astype(np.float64) * scale.reshape(_channel_shape(kernel_layout, "O", channels))
        bias = relax.const(shift.reshape(_channel_shape(layout, "C", channels)).astype(np.float32))
        return relax.op.add(self._conv(z, weight), bias)


@tvm.transform.module_pass(opt_level=0, name="FoldConvBatchNorm")
class FoldConvBatchNorm:
    """Fold inference batch norms into convolutions and make convolution weights constants."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updated = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                folder = _Folder(mod, relax.analysis.get_var2val(func))
                updated[gvar] = relax.analysis.remove_all_unused(folder.visit_expr(func))
        return updated
