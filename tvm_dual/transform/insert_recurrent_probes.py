"""InsertRecurrentProbes: record the inputs of chosen recurrent layers' gate terms at every step.

Layer i (keys[i]) gets slots 2i (its input x) and 2i + 1 (its hidden state h). The h term's
matmul input is routed through the packed function PROBE_FUNC at every step; the x term's input
likewise, or once per call when it is hoisted over all time steps (its rows are then time-major,
step by step, exactly as the h probes arrive), so row j of slot 2i pairs with row j of slot 2i + 1.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..recurrent import BindingGraph, find_recurrent_sites
from .recurrent_gate_rewrite import BlockEditor

PROBE_FUNC = "tvm_dual.recurrent_probe"


@tvm.transform.module_pass(opt_level=0, name="InsertRecurrentProbes")
class InsertRecurrentProbes:
    def __init__(self, keys: list[str]) -> None:
        self.slots = {key: i for i, key in enumerate(keys)}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updated = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            editor = BlockEditor(func)
            probed: set = set()
            for site in find_recurrent_sites(func, {})[0]:
                slot = self.slots.get(site.key)
                if slot is None:
                    continue
                for step in site.steps:
                    for term, index in ((step.x, 2 * slot), (step.h, 2 * slot + 1)):
                        if term.matmul_var not in probed:
                            probed.add(term.matmul_var)
                            _probe_matmul_input(editor, term.matmul_var, index)
            updated[gvar] = editor.build()
        return updated


def _probe_matmul_input(editor: BlockEditor, matmul_var: relax.Var, slot: int) -> None:
    graph: BindingGraph = editor.graph
    u = graph.value[matmul_var].args[0]
    at = graph.pos[matmul_var]
    probed = editor.emit_before(at, relax.call_pure_packed(PROBE_FUNC, u, relax.prim_value(slot), ty_args=u.ty))
    editor.substitute(matmul_var, {u: probed})
