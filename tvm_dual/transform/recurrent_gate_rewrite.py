"""RecurrentGateRewrite: the gate terms of every planned LSTM/GRU step -> call_tir(dual gate kernel).

Per step (tvm_dual/recurrent.py finds them), the cell's own ops consume an input term x_use and a
recurrent term h_use. The kernel is called just before the first of those ops and its outputs
take their places there (out_h for h_use; out_x for x_use in fused mode; in hoisted mode x_use
stays and is also the kernel's addend). The dense terms become unused and are removed, including
a hoisted input projection that no step needs any more. Everything downstream (split,
activations, cell update) is left as exported, so the step computes exactly what PyTorch does
from the merged pre-activations. One exception: a fused LSTM step's add of the two terms is
replaced by out_h, which already holds their sum (out_x is zero there); with SplitToStridedSlice
the step then runs one kernel fewer.
"""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax

from ..kernels.dual_gates import GateShape, gate_kernel_bias, gate_kernel_weights, make_dual_gates, pack_gate_constants
from ..recurrent import BindingGraph, RecurrentLayerPlan, RecurrentPlan, StepSite, find_recurrent_sites
from ..sites import static_shape
from .dual_module_rewrite import LAYER_ATTR


def gate_kernel_symbol(layer_name: str, shape: GateShape) -> str:
    safe = re.sub(r"[^0-9a-zA-Z_]", "_", layer_name)
    return f"tvm_dual_{safe}_{shape.cell}_b{shape.batch}"


@tvm.transform.module_pass(opt_level=0, name="RecurrentGateRewrite")
class RecurrentGateRewrite:
    """Replace the gate terms of planned recurrent layers by the dual gate kernel.

    Weights must be Relax constants. A step whose kernel inputs are not yet computed where its
    cell first needs the gates is left dense (never seen with torch.export's decomposition).
    """

    def __init__(self, plan: RecurrentPlan) -> None:
        self.plan = plan

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not len(self.plan):
            return mod
        builder = relax.BlockBuilder(mod)
        kernels: dict[str, relax.GlobalVar] = {}
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            sites, _ = find_recurrent_sites(func, {})
            editor = BlockEditor(func)
            for site in sites:
                layer = self.plan.get(site.key)
                if layer is None:
                    continue
                shape = layer.shape()
                symbol = gate_kernel_symbol(layer.name, shape)
                if symbol not in kernels:
                    prim = make_dual_gates(shape, layer.kernel, vector_bits=layer.vector_bits).with_attr("global_symbol", symbol)
                    kernels[symbol] = builder.add_func(prim.with_attr(LAYER_ATTR, layer.name), symbol)
                constants = _layer_constants(layer, site.weights)
                for step in site.steps:
                    _rewrite_step(editor, layer, step, kernels[symbol], constants)
            builder.update_func(gvar, relax.analysis.remove_all_unused(editor.build()))
        return builder.get()


def _layer_constants(layer: RecurrentLayerPlan, weights) -> list[relax.Expr]:
    W_ih, W_hh, b_ih, b_hh = weights
    zeros = np.zeros(W_hh.shape[0], np.float32)
    b_ih = zeros if b_ih is None else b_ih
    b_hh = zeros if b_hh is None else b_hh
    little = layer.little
    vectors = pack_gate_constants(
        gate_kernel_bias(layer.shape(), b_ih, b_hh), little.P, little.Ps, little.WL, little.WLs, little.bL, layer.lo, layer.hi,
        layer.hidden, layer.kernel, layer.vector_bits,
    )
    return [relax.const(a) for a in gate_kernel_weights(layer.shape(), W_ih, W_hh) + vectors]


def _rewrite_step(editor: "BlockEditor", layer: RecurrentLayerPlan, step: StepSite, kernel, constants) -> bool:
    B, H, I = layer.batch, layer.hidden, layer.input_size
    N = layer.shape().gates * H
    graph = editor.graph
    h_src = graph.strip(step.h.u)
    x_src = graph.strip(step.x.u) if layer.fused else step.x_use
    at = min(editor.position(c) for c in step.consumers)
    if max(editor.position(h_src), editor.position(x_src)) >= at:
        return False
    h_in = editor.emit_before(at, relax.op.reshape(h_src, (B, H)))
    f32 = "float32"
    if layer.fused:
        x_rows = x_src
        if step.x.hoisted_step is not None:
            t = step.x.hoisted_step
            rows = editor.emit_before(at, relax.op.reshape(x_src, (step.x.steps * B, I)))
            x_rows = rows
            if step.x.steps > 1:
                x_rows = editor.emit_before(at, relax.op.strided_slice(rows, axes=[0], begin=[t * B], end=[(t + 1) * B]))
        x_in = editor.emit_before(at, relax.op.reshape(x_rows, (B, I)))
        out_ty = [relax.TensorType((B, N), f32), relax.TensorType((1,), "int32"), relax.TensorType((B, N), f32)]
        call = editor.emit_before(at, relax.call_tir(kernel, [x_in, h_in, *constants], out_ty=out_ty))
    else:
        addend = editor.emit_before(at, relax.op.reshape(x_src, (B, N)))
        out_ty = [relax.TensorType((B, N), f32), relax.TensorType((1,), "int32")]
        call = editor.emit_before(at, relax.call_tir(kernel, [h_in, addend, *constants], out_ty=out_ty))
    def output(index: int, like: relax.Var) -> relax.Var:
        value = editor.emit_before(at, relax.TupleGetItem(call, index))
        return editor.emit_before(at, relax.op.reshape(value, static_shape(like)))

    if layer.fused and layer.cell == "lstm" and _sums(graph, step.consumers, step.x_use, step.h_use):
        # the LSTM step's only consumer adds the two terms; out_h already holds the sum (out_x is 0
        # outside a GRU's n gate), so the add goes: one kernel call less per step
        (consumer,) = step.consumers
        total = editor.emit_before(at, relax.TupleGetItem(call, 0))
        editor.replace_value(consumer, relax.op.reshape(total, static_shape(consumer)))
        return True
    replace = {step.h_use: output(0, step.h_use)}
    if layer.fused:
        replace[step.x_use] = output(2, step.x_use)
    for consumer in step.consumers:
        editor.substitute(consumer, replace)
    return True


def _sums(graph: BindingGraph, consumers: list[relax.Var], a: relax.Var, b: relax.Var) -> bool:
    """Whether the step's terms have one consumer, and it is add(a, b) or add(b, a)."""
    if len(consumers) != 1:
        return False
    value = graph.value[consumers[0]]
    if not (isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.add"))):
        return False
    x, y = value.args
    return (x.same_as(a) and y.same_as(b)) or (x.same_as(b) and y.same_as(a))


class BlockEditor:
    """Insert bindings before given positions and substitute arguments of given bindings, then
    rebuild the function (the dataflow structure and every other binding unchanged)."""

    def __init__(self, func: relax.Function) -> None:
        self.func = func
        self.graph = BindingGraph(func)
        self._inserted: dict[tuple[int, int], list[relax.VarBinding]] = {}
        self._values: dict[relax.Var, relax.Expr] = {}
        self._normalizer = relax.BlockBuilder()
        self._count = 0

    def position(self, var) -> tuple[int, int]:
        """Where var is defined; parameters and constants come before everything."""
        return self.graph.pos.get(var, (-1, -1)) if isinstance(var, relax.Var) else (-1, -1)

    def emit_before(self, at: tuple[int, int], expr: relax.Expr) -> relax.Var:
        expr = self._normalizer.normalize(expr)
        block = self.graph.blocks[at[0]]
        var_type = relax.DataflowVar if isinstance(block, relax.DataflowBlock) else relax.Var
        var = var_type(f"dual_gate{self._count}", expr.ty)
        self._count += 1
        self._inserted.setdefault(at, []).append(relax.VarBinding(var, expr))
        return var

    def replace_value(self, binding_var: relax.Var, expr: relax.Expr) -> None:
        """Bind binding_var to expr instead (of the same type; it may use vars emitted before it)."""
        self._values[binding_var] = self._normalizer.normalize(expr)

    def substitute(self, binding_var: relax.Var, replace: dict[relax.Var, relax.Var]) -> None:
        value = self._values.get(binding_var, self.graph.value[binding_var])
        args = [replace.get(a, a) if isinstance(a, relax.Var) else a for a in value.args]
        self._values[binding_var] = relax.Call(value.op, args, value.attrs, value.ty_args, ret_ty=value.ty)

    def build(self) -> relax.Function:
        blocks = []
        for bi, block in enumerate(self.graph.blocks):
            bindings = []
            for i, binding in enumerate(block.bindings):
                bindings.extend(self._inserted.get((bi, i), []))
                if isinstance(binding, relax.VarBinding) and binding.var in self._values:
                    binding = relax.VarBinding(binding.var, self._values[binding.var])
                bindings.append(binding)
            blocks.append(type(block)(bindings))
        func = self.func
        body = relax.SeqExpr(blocks, func.body.body)
        return relax.Function(func.params, body, func.ret_ty, is_pure=func.is_pure, attrs=func.attrs)
