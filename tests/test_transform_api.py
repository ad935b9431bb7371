"""tvm_dual.transform.DualModuleRewrite in a Relax pipeline of one's own, outside compile_dual."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.relax.frontend.torch import from_exported_program

import tvm_dual
from tvm_dual.transform.dual_module_rewrite import LAYER_ATTR


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(37, 96), torch.nn.Tanh(), torch.nn.Linear(96, 10)).eval()


def own_import(model: torch.nn.Module, x: torch.Tensor) -> tvm.IRModule:
    """What a user's script does: torch.export and TVM's importer, weights as constants."""
    with torch.no_grad():
        exported = torch.export.export(model, (x,))
    return from_exported_program(exported, keep_params_as_input=False)


def dual_layers(mod: tvm.IRModule) -> list[str]:
    return [
        str(func.attrs[LAYER_ATTR])
        for _, func in mod.functions_items()
        if isinstance(func, tirx.PrimFunc) and func.attrs is not None and LAYER_ATTR in func.attrs
    ]


@pytest.fixture(scope="module")
def planned():
    model = mlp(0)
    calibration = [torch.randn(2048, 37)]
    return model, tvm_dual.plan_dual(model, (torch.randn(1, 37),), target="llvm", calibration=calibration,
                                     insensitive_ratio=0.5)


def test_the_passes_are_public_names_of_tvm_dual_transform(planned):
    _, planned_model = planned
    assert isinstance(tvm_dual.transform.DualModuleRewrite(planned_model.plan), tvm.transform.Pass)
    for name in tvm_dual.transform.__all__:
        assert getattr(tvm_dual.transform, name) is not None


def test_dual_module_rewrite_in_a_users_own_pipeline_matches_compile_dual(planned):
    model, planned_model = planned
    x = torch.randn(1, 37)
    mod = tvm.transform.Sequential([tvm_dual.transform.DualModuleRewrite(planned_model.plan)])(own_import(model, x))
    assert dual_layers(mod) == ["0"]
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())  # TVM's own default pipeline
    ours = tvm_dual.build_dual(planned_model)
    largest_change = 0.0
    for _ in range(16):
        x = torch.randn(1, 37)
        got = vm["main"](tvm.runtime.tensor(x.numpy()))
        got = (got[0] if isinstance(got, tvm.ir.Array) else got).numpy()
        np.testing.assert_allclose(got, ours(x.numpy()), rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            largest_change = max(largest_change, float(np.abs(got - model(x).numpy()).max()))
    assert largest_change > 1e-3  # half the hidden units take the little module's value: not the exact model


def test_a_plan_for_other_weights_is_left_unused_with_a_warning_naming_its_layers(planned):
    _, planned_model = planned
    other = own_import(mlp(1), torch.randn(1, 37))
    with pytest.warns(tvm_dual.DualCompileWarning, match=r"1 planned layer\(s\) not found.*'0'"):
        mod = tvm_dual.transform.DualModuleRewrite(planned_model.plan)(other)
    assert dual_layers(mod) == []
    assert tvm_ffi.structural_equal(mod, other)
