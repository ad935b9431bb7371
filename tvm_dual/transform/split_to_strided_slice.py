"""SplitToStridedSlice: items of split(x) -> strided_slice(x), so the ops after them can fuse.

torch.export writes an LSTM or GRU cell's `chunk` of the gate pre-activations as a Relax split,
whose result is a tuple. FuseOps makes an op with a tuple result a kernel of its own (with the ops
before it), so in a dual LSTM step, whose gate kernel already returns the summed pre-activations,
the split alone cost a kernel call: tens of microseconds at batch 1 with the caches cold,
whatever it computes. A strided_slice per item is an ordinary injective op that fuses into the
activations after it. (In a dense step the add of the two linear terms before the split stays a
kernel either way: FuseOps does not fuse an op whose result feeds several fused groups.)

Only splits whose every use is a tuple item are rewritten (a split whose tuple is used whole is
left alone); the split itself then has no uses and is removed.
"""

from __future__ import annotations

import tvm
from tvm import relax

SplitInfo = tuple[relax.Expr, int, list[tuple[int, int]]]  # source, axis, (begin, end) of each item


def _section_bounds(call: relax.Call) -> list[tuple[int, int]] | None:
    """(begin, end) along the split axis of each output, or None if a shape is not static."""
    bounds = []
    axis = int(call.attrs.axis)
    for field in call.ty.fields:
        shape = getattr(field, "shape", None)
        if not isinstance(shape, relax.ShapeExpr):
            return None
        dims = list(shape.values)
        length = dims[axis % len(dims)]
        if not isinstance(length, tvm.tirx.IntImm):
            return None
        begin = bounds[-1][1] if bounds else 0
        bounds.append((begin, begin + int(length.value)))
    return bounds


@relax.expr_functor.visitor
class _VarUses(relax.PyExprVisitor):
    """Per var: how often it is used at all, and how often as the tuple of a TupleGetItem."""

    def __init__(self) -> None:
        super().__init__()
        self.uses: dict[relax.Var, int] = {}
        self.item_uses: dict[relax.Var, int] = {}

    def visit_var_(self, op: relax.Var) -> None:
        self.uses[op] = self.uses.get(op, 0) + 1

    def visit_dataflow_var_(self, op: relax.DataflowVar) -> None:
        self.visit_var_(op)

    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> None:
        if isinstance(op.tuple_value, relax.Var):
            self.item_uses[op.tuple_value] = self.item_uses.get(op.tuple_value, 0) + 1
        super().visit_tuple_getitem_(op)


def _rewritable_splits(func: relax.Function) -> dict[relax.Var, SplitInfo]:
    """Vars bound to a split with static sections whose only uses are tuple items."""
    split_op = tvm.ir.Op.get("relax.split")
    found: dict[relax.Var, SplitInfo] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = getattr(binding, "value", None)
            if isinstance(value, relax.Call) and value.op.same_as(split_op):
                bounds = _section_bounds(value)
                if bounds is not None:
                    ndim = len(value.ty.fields[0].shape.values)
                    found[binding.var] = (value.args[0], int(value.attrs.axis) % ndim, bounds)
    if not found:
        return found
    counter = _VarUses()
    counter.visit_expr(func)
    return {var: info for var, info in found.items() if counter.uses.get(var, 0) == counter.item_uses.get(var, 0)}


@relax.expr_functor.mutator
class _SplitItemsToSlices(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, splits: dict[relax.Var, SplitInfo]) -> None:
        super().__init__(mod)
        self.splits = splits

    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> relax.Expr:
        tup = op.tuple_value
        if isinstance(tup, relax.Var) and tup in self.splits:
            source, axis, bounds = self.splits[tup]
            begin, end = bounds[op.index]
            return relax.op.strided_slice(self.visit_expr(source), axes=[axis], begin=[begin], end=[end])
        return super().visit_tuple_getitem_(op)


@tvm.transform.module_pass(opt_level=0, name="SplitToStridedSlice")
class SplitToStridedSlice:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updated = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        changed = False
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            splits = _rewritable_splits(func)
            if splits:
                updated[gvar] = relax.analysis.remove_all_unused(_SplitItemsToSlices(mod, splits).visit_expr(func))
                changed = True
        return updated if changed else mod
