"""SnapshotConstants: give every Relax constant its own memory.

TVM's PyTorch frontend binds parameters with a zero-copy DLPack view of the torch tensors, and the
VM's constant pool keeps those views, so a compiled module read the model's live weights: an
in-place update of the model after compile_dual (more training, loading another state dict)
silently changed the compiled module's outputs while its little modules and thresholds stayed
fitted to the old weights. Copies are made once per distinct buffer, so a tied weight (one tensor
bound at two places) stays one constant.
"""

from __future__ import annotations

import tvm
from tvm import relax


@relax.expr_functor.mutator
class _ConstantCopier(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, copies: dict) -> None:
        super().__init__(mod)
        self.copies = copies

    def visit_generic_const_(self, op: tvm.ir.GenericConst) -> relax.Expr:  # relax.Constant in TVM 0.27
        data = op.value
        if not isinstance(data, tvm.runtime.Tensor):
            return op
        key = (data.data_ptr(), tuple(data.shape), str(data.dtype))
        if key not in self.copies:
            self.copies[key] = relax.const(data.numpy(), str(data.dtype))  # numpy() copies out of the view
        return self.copies[key]


@tvm.transform.module_pass(opt_level=0, name="SnapshotConstants")
class SnapshotConstants:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        copies: dict = {}
        updated = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                updated[gvar] = _ConstantCopier(mod, copies).visit_expr(func)
        return updated
