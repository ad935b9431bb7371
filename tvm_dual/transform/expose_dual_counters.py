"""ExposeDualCounters: return the dual kernels' rows-read counters from `main`.

After this pass `main` returns (original result, counters) where counters is an int32 vector with
one entry per dual kernel call, in the order of the function attribute COUNTER_LAYERS_ATTR. The
runtime sums them per layer for DualModule.stats(); nothing is estimated.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .dual_module_rewrite import LAYER_ATTR

COUNTER_LAYERS_ATTR = "tvm_dual.counter_layers"


def _dual_layer_of(mod: tvm.IRModule, value: relax.Expr) -> str | None:
    if not (isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_tir"))):
        return None
    callee = value.args[0]
    if not isinstance(callee, relax.GlobalVar) or callee not in mod:
        return None
    attrs = mod[callee].attrs
    return str(attrs[LAYER_ATTR]) if attrs is not None and LAYER_ATTR in attrs else None


@tvm.transform.module_pass(opt_level=0, name="ExposeDualCounters")
class ExposeDualCounters:
    """Append the concatenated dual-kernel counters to main's return value."""

    def __init__(self, func_name: str = "main") -> None:
        self.func_name = func_name

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if self.func_name not in [gv.name_hint for gv in mod.get_global_vars()]:
            return mod
        func = mod[self.func_name]
        counter_vars: list[relax.Var] = []
        layers: list[str] = []
        blocks = []
        for block in func.body.blocks:
            extra = []
            for binding in block.bindings:
                layer = _dual_layer_of(mod, binding.value) if isinstance(binding, relax.VarBinding) else None
                if layer is not None:
                    out = relax.Var(f"dual_count{len(counter_vars)}", relax.TensorType((1,), "int32"))
                    extra.append(relax.VarBinding(out, relax.TupleGetItem(binding.var, 1)))
                    counter_vars.append(out)
                    layers.append(layer)
            block_type = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) else relax.BindingBlock
            blocks.append(block_type(list(block.bindings) + extra))
        if not counter_vars:
            return mod
        counters = relax.Var("dual_counters", relax.TensorType((len(counter_vars),), "int32"))
        concat = relax.op.concat(counter_vars, axis=0) if len(counter_vars) > 1 else counter_vars[0]
        blocks.append(relax.BindingBlock([relax.VarBinding(counters, concat)]))
        ret = relax.Tuple([func.body.body, counters])
        ret_ty = relax.TupleType([func.body.body.ty, counters.ty])
        new_func = relax.Function(func.params, relax.SeqExpr(blocks, ret), ret_ty, is_pure=func.is_pure, attrs=func.attrs)
        new_func = new_func.with_attr(COUNTER_LAYERS_ATTR, layers)
        mod = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        mod[self.func_name] = relax.BlockBuilder(mod).normalize(new_func)
        return mod
