"""The Elementwise dlight rule: injective PrimFuncs get vectorized loops and still compute the same."""

import numpy as np
import tvm
from tvm import te
from tvm.s_tir import dlight

from tvm_dual.schedule_rules import Elementwise
from tvm_dual.target import host_target


def _cell_update():
    a, b = te.placeholder((3, 37), name="a"), te.placeholder((3, 37), name="b")
    mid = te.compute((3, 37), lambda i, j: 1.0 / (1.0 + te.exp(-a[i, j])), name="sig")
    out = te.compute((3, 37), lambda i, j: mid[i, j] * b[i, j], name="mul")
    return te.create_prim_func([a, b, out])


def _row_sum():
    a = te.placeholder((4, 8), name="a")
    k = te.reduce_axis((0, 8), name="k")
    return te.create_prim_func([a, te.compute((4,), lambda i: te.sum(a[i, k], axis=k), name="sum")])


def _has_vectorized_loop(func) -> bool:
    return " T.vectorized(" in func.script()


def test_elementwise_rule_vectorizes_and_keeps_values():
    target = host_target()
    mod = tvm.IRModule({"main": _cell_update()})
    with target:
        scheduled = dlight.ApplyDefaultSchedule(Elementwise())(mod)
    assert _has_vectorized_loop(scheduled["main"])
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((3, 37)).astype(np.float32) for _ in range(2))
    out = tvm.runtime.tensor(np.zeros((3, 37), np.float32))
    tvm.compile(scheduled, target=target)["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    np.testing.assert_allclose(out.numpy(), b / (1 + np.exp(-a)), rtol=1e-5, atol=1e-6)


def test_elementwise_rule_leaves_reductions_alone():
    with host_target():
        assert Elementwise().apply(_row_sum(), host_target(), False) is None
