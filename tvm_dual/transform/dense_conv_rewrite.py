"""DenseConvRewrite: remaining convolution layers -> call_tir(our fused dense convolution kernel).

The default Relax CPU pipeline leaves conv2d unscheduled (tens of times slower than a tuned
convolution), and dlight has no CPU rule for it. Every `[relu](conv2d(x, W) [+ b] [+ r])` with an
NHWC/OHWI constant weight becomes one call of kernels/conv2d.py with the bias, the residual add and
the ReLU fused. Run it after the dual rewrites (it takes whatever they left) and after
conv preparation (transform/conv_prepare.py).

Which bindings become kernels: every binding whose value is such a chain, except those that are
only used inside a larger chain (the conv inside `relu(conv + b)` is computed by the relu's
kernel). A chain whose intermediate value is also used elsewhere is computed twice rather than
not fused.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..conv_sites import CONV_ACTIVATIONS, ConvMatch, binding_values, is_op, match_conv
from ..kernels.conv2d import ConvConfig, ConvKernelShape, default_conv_config, hwio, make_conv2d


def use_counts(func: relax.Function) -> dict:
    counts: dict = {}
    for value in [*binding_values(func), func.body.body]:
        for var in relax.analysis.used_vars(value):
            counts[var] = counts.get(var, 0) + 1
    return counts


def chain_matches(func: relax.Function) -> dict:
    """binding var -> ConvMatch for every binding that is a (possibly activated) conv chain."""
    var2val = relax.analysis.get_var2val(func)
    matches = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if is_op(value, "relax.nn.relu"):
                match = match_conv(value.args[0], var2val, CONV_ACTIVATIONS[value.op.name])
            else:
                match = match_conv(binding.var, var2val, "none")
            if match is not None and not match.reason:
                matches[binding.var] = match
    return matches


def covered_vars(func: relax.Function, matches: dict) -> set:
    """Variables computed inside some larger matched chain and used nowhere else."""
    counts = use_counts(func)
    covered = set()
    for root, match in matches.items():
        for var in match.inner:
            if not var.same_as(root) and counts.get(var, 0) == 1:
                covered.add(var)
    return covered


@relax.expr_functor.mutator
class _ConvEmitter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, roots: dict, kernels: dict, config: ConvConfig | None) -> None:
        super().__init__(mod)
        self.roots, self.kernels, self.config = roots, kernels, config

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        match = self.roots.get(binding.var)
        if match is None:
            super().visit_var_binding_(binding)
            return
        # same variable, new value: the types agree, and a dataflow output stays an output
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(self._emit(match))))

    def _emit(self, match: ConvMatch) -> relax.Expr:
        shape = ConvKernelShape(match.geometry, match.act, match.bias is not None, match.residual is not None)
        if shape.name not in self.kernels:
            config = self.config or default_conv_config(match.geometry)
            self.kernels[shape.name] = self.builder_.add_func(make_conv2d(shape, config), shape.name)
        args = [self.visit_expr(match.x), relax.const(hwio(match.weight))]
        if match.bias is not None:
            args.append(relax.const(match.bias))
        if match.residual is not None:
            args.append(self.visit_expr(match.residual))
        return relax.call_tir(self.kernels[shape.name], args, out_ty=relax.TensorType(match.geometry.output_shape, "float32"))


@tvm.transform.module_pass(opt_level=0, name="DenseConvRewrite")
class DenseConvRewrite:
    """Replace convolution chains with constant weights by the fused dense convolution kernel."""

    def __init__(self, config: ConvConfig | None = None) -> None:
        self.config = config  # None: default_conv_config per layer

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        kernels: dict = {}
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            matches = chain_matches(func)
            if not matches:
                continue
            covered = covered_vars(func, matches)
            roots = {var: m for var, m in matches.items() if var not in covered}
            emitter = _ConvEmitter(mod, roots, kernels, self.config)
            new_func = relax.analysis.remove_all_unused(emitter.visit_expr(func))
            # update_func copies the module on write; `mod[gvar] = ...` would change the caller's
            emitter.builder_.update_func(gvar, new_func)
            mod = emitter.builder_.get()
        return mod
