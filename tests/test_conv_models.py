"""Convolutional networks: ratio 0 is the PyTorch model; dual layers are planned, named and counted."""

import numpy as np
import pytest
import torch

import tvm_dual
from tvm_dual.cnn import ideal_reduction, model_macs
from models import OddConvNet


@pytest.mark.parametrize("shape", [(1, 3, 15, 13), (2, 3, 9, 11)])
def test_ratio_zero_matches_pytorch(shape):
    model = OddConvNet().eval()
    mod = tvm_dual.compile_dual(model, (torch.randn(shape),), insensitive_ratio=0.0)
    assert mod.metadata["layers"] == []
    dense = {d["name"] for d in mod.metadata["dense_layers"]}
    assert {"conv1", "conv2", "block1.conv1", "block1.conv2", "block2.conv1", "block2.conv2"} <= dense
    for _ in range(3):
        x = torch.randn(shape) * 2
        with torch.no_grad():
            expected = model(x)
        assert (mod(x) - expected).abs().max().item() <= 1e-4


def test_dual_layers_are_planned_and_counted():
    model = OddConvNet().eval()
    calibration = [torch.randn(32, 3, 15, 13) for _ in range(4)]
    ratios = {"conv1": 0.5, "block1.conv2": 0.7, "block2.conv1": 0.3}
    mod = tvm_dual.compile_dual(model, (torch.randn(1, 3, 15, 13),), calibration=calibration, insensitive_ratio=ratios)
    stats = mod.stats()
    assert {s.name for s in stats} == set(ratios)
    x = torch.randn(200, 1, 3, 15, 13)
    outputs = np.stack([mod(xi).numpy() for xi in x])
    assert np.isfinite(outputs).all()
    stats = mod.stats()
    for name, ratio in ratios.items():
        layer = stats[name]
        assert layer.calls == 200 and abs(layer.calibration_ratio - ratio) < 0.02
        assert abs(layer.observed_ratio - ratio) < 0.1, (name, layer.observed_ratio)  # same distribution as calibration
    assert mod.metadata["layers"][0]["kind"] == "conv2d"
    # the ideal predictor's bound: no skipped work without sparsity, at most 1 / (1 - s) with sparsity s
    macs = model_macs(model, torch.randn(1, 3, 15, 13))
    assert ideal_reduction(mod, macs, {}) == 1.0
    half = ideal_reduction(mod, macs, {name: 0.5 for name in ratios})
    assert 1.0 < half < 2.0
    assert ideal_reduction(mod, macs, {name: 1.0 for name in ratios}) > half


def test_unknown_layer_name_is_an_error():
    with pytest.raises(ValueError, match="no dual-capable layer"):
        tvm_dual.compile_dual(OddConvNet().eval(), (torch.randn(1, 3, 15, 13),), insensitive_ratio={"nope": 0.5})


class _OneConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


@pytest.mark.parametrize("batch", [1, 2])
@torch.no_grad()
def test_dual_conv_computes_on_each_input_when_calibrated_at_the_example_shape(batch):
    """Calibration batches of the example's shape ran the probe pass on the imported module itself,
    which changed it in place: the compiled module kept a calibration probe, the kernel plan replayed
    the probe's first result, and every output was relu(bias) whatever the input. Each output of a
    dual ReLU convolution must be its exact value or 0."""
    torch.manual_seed(1)
    model = _OneConv().eval()
    calibration = [torch.randn(batch, 3, 8, 8) for _ in range(32 // batch)]
    mod = tvm_dual.compile_dual(model, (torch.randn(batch, 3, 8, 8),), calibration=calibration, insensitive_ratio=0.5)
    assert mod.executor in ("not started", "kernel plan")
    for _ in range(3):
        x = torch.randn(batch, 3, 8, 8)
        got, want = mod(x), model(x)
        assert bool((((got - want).abs() <= 1e-5) | (got == 0)).all())
        assert not torch.equal(got, mod(torch.randn(batch, 3, 8, 8)))
    assert mod.executor == "kernel plan"


def test_little_calibration_warns_as_a_compile_warning():
    """The convolution's warning is a DualCompileWarning, as the linear layers' is: filters and the
    benchmark's warning report select that class."""
    calibration = [torch.randn(1, 3, 8, 8) for _ in range(2)]
    with pytest.warns(tvm_dual.DualCompileWarning, match="'conv' is calibrated on only 128 output pixels"):
        tvm_dual.compile_dual(_OneConv().eval(), (torch.randn(1, 3, 8, 8),), calibration=calibration, insensitive_ratio=0.5)


def test_passes_leave_the_module_they_are_given_unchanged():
    from tvm_dual.conv_sites import find_conv_sites
    from tvm_dual.frontend import import_model
    from tvm_dual.transform.dense_conv_rewrite import DenseConvRewrite
    from tvm_dual.transform.insert_conv_calibration_probes import InsertConvCalibrationProbes

    imported = import_model(_OneConv().eval(), (torch.randn(1, 3, 8, 8),))
    before = str(imported.mod)
    keys = [site.key for site in find_conv_sites(imported.mod["main"])]
    assert "calibration_probe" in str(InsertConvCalibrationProbes(keys)(imported.mod))
    DenseConvRewrite()(imported.mod)
    assert str(imported.mod) == before
