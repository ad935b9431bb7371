"""Every kernel keeps its scalars in registers: no per-iteration heap allocations.

TVMScript in TVM 0.27 turns `x = expr` and `x: T.int32 = ...` into a one-element buffer in the
"local" scope, and on CPU LowerTVMBuiltin gives such buffers TVMBackendAllocWorkspace/Free calls
instead of a stack slot. Inside a parallel loop body that is an allocation and a free per scalar
per iteration: in the dual kernel it was most of the fixed cost of a call (about 10 us of 30 at two
threads on Linear 1024->4096). Kernels use `T.let` for immutable scalars and one-element global
buffers (stack slots LLVM promotes to registers) for mutable ones; this test keeps it that way.
"""

import pytest
import tvm_ffi
from tvm import tirx

from tvm_dual.conv_sites import ConvGeometry
from tvm_dual.kernels.conv2d import ConvKernelShape, make_conv2d
from tvm_dual.kernels.dual_conv2d import DualConvShape, make_dual_conv2d
from tvm_dual.kernels.dual_dense import (
    DualDenseShape,
    DualKernelConfig,
    make_dual_dense,
)
from tvm_dual.kernels.dual_gates import GateShape, make_dual_gates
from tvm_dual.kernels.gemv import GemvShape, make_gemv


def _statements(node):
    """Every statement under `node`, found through TVM's field reflection (TVM 0.27 has no Python
    TIR visitor)."""
    if isinstance(node, tirx.Stmt):
        yield node
    if isinstance(node, (list, tuple, tvm_ffi.Array)):
        for item in node:
            yield from _statements(item)
        return
    info = getattr(type(node), "__tvm_ffi_type_info__", None)
    while info is not None:
        for field in info.fields:
            if field.name != "span":
                value = getattr(node, field.name)
                if isinstance(value, (tirx.Stmt, tvm_ffi.Array)):
                    yield from _statements(value)
        info = info.parent_type_info


def local_allocations(func: tirx.PrimFunc) -> list[str]:
    return [
        f"{stmt.buffer.name} ({stmt.buffer.scope()})"
        for stmt in _statements(func.body)
        if isinstance(stmt, tirx.AllocBuffer) and stmt.buffer.scope() != "global"
    ]


GEOMETRY = ConvGeometry(
    batch=1, height=9, width=7, c_in=5, c_out=11, kernel_h=3, kernel_w=3, stride_h=2, stride_w=2,
    pad_top=1, pad_left=1, pad_bottom=1, pad_right=1,
)

KERNELS = {
    "dual_dense f32": lambda: make_dual_dense(DualDenseShape(2, 70, 33, 5, "tanh"), DualKernelConfig(tasks=2)),
    "dual_dense i16": lambda: make_dual_dense(DualDenseShape(2, 70, 33, 5, "relu"), DualKernelConfig(little_compute="i16")),
    "dual_dense debug": lambda: make_dual_dense(DualDenseShape(1, 70, 33, 5, "sigmoid"), DualKernelConfig(), debug=True),
    "dual_dense far rows": lambda: make_dual_dense(DualDenseShape(2, 300, 33, 5, "tanh"), DualKernelConfig(row_order="far")),
    "gemv": lambda: make_gemv(GemvShape(2, 70, 33, "tanh")),
    "dual_gates lstm fused": lambda: make_dual_gates(GateShape("lstm", 1, 37, 20, 6, fused=True), DualKernelConfig(little_block=16)),
    "dual_gates gru hoisted": lambda: make_dual_gates(GateShape("gru", 2, 37, 20, 6, fused=False), DualKernelConfig(little_block=32)),
    "dual_gates gru fused i16": lambda: make_dual_gates(
        GateShape("gru", 1, 37, 20, 7, fused=True), DualKernelConfig(little_block=16, little_compute="i16")
    ),
    "conv2d": lambda: make_conv2d(ConvKernelShape(GEOMETRY, "relu", True, True)),
    "dual_conv2d": lambda: make_dual_conv2d(DualConvShape(GEOMETRY, 4, has_residual=True)),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_no_local_scalar_allocations(name):
    assert local_allocations(KERNELS[name]()) == []
