"""Insensitive ratio 0 compiles the model exactly: it must match PyTorch to float tolerance."""

import numpy as np
import pytest
import torch

import tvm_dual
from models import FunctionalMLP, odd_mlp


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("batch", [1, 3])
def test_odd_mlp_matches_pytorch(act, batch):
    model = odd_mlp(act, (37, 333, 129, 10))
    x = torch.randn(batch, 37) * 2
    mod = tvm_dual.compile_dual(model, (x,), insensitive_ratio=0.0)
    assert mod.metadata["layers"] == []  # no little module at all
    for _ in range(3):
        x = torch.randn(batch, 37) * 2
        with torch.no_grad():
            expected = model(x)
        got = mod(x)
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-5


def test_functional_forms_and_output_structure():
    model = FunctionalMLP().eval()
    x = torch.randn(2, 37)
    mod = tvm_dual.compile_dual(model, (x,), insensitive_ratio=0.0)
    with torch.no_grad():
        expected = model(x)
    got = mod(x.numpy())
    assert set(got) == {"logits", "hidden"} and isinstance(got["hidden"], tuple)
    assert isinstance(got["logits"], np.ndarray)
    np.testing.assert_allclose(got["logits"], expected["logits"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["hidden"][0], expected["hidden"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["hidden"][1], expected["hidden"][1].numpy(), atol=1e-5)


def test_fast_activations_legalize_float32_only():
    from tvm import relax

    from tvm_dual.transform.legalize_fast_activations import LegalizeFastActivations

    bb = relax.BlockBuilder()
    x32 = relax.Var("x32", relax.TensorType((4,), "float32"))
    x64 = relax.Var("x64", relax.TensorType((4,), "float64"))
    with bb.function("main", [x32, x64]):
        out = (bb.emit(relax.op.tanh(x32)), bb.emit(relax.op.sigmoid(x32)), bb.emit(relax.op.tanh(x64)))
        bb.emit_func_output(relax.Tuple(out))
    mod = LegalizeFastActivations()(bb.get())
    names = {gv.name_hint for gv in mod.get_global_vars()}
    assert {"fast_tanh", "fast_sigmoid"} <= names
    assert "R.tanh(x64)" in str(mod["main"])  # float64 stays for TVM's own legalization


def test_fast_activations_match_pytorch_over_the_real_line():
    class Elementwise(torch.nn.Module):
        def forward(self, x):
            return torch.tanh(x) * torch.sigmoid(3 * x) + torch.sigmoid(x)

    x = torch.linspace(-30, 30, 999).reshape(1, 999)
    x[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    mod = tvm_dual.compile_dual(Elementwise(), (x,), insensitive_ratio=0.0)
    torch.testing.assert_close(mod(x), Elementwise()(x), atol=1e-6, rtol=0, equal_nan=True)


class _Clamps(torch.nn.Module):
    """Operators TVM legalizes itself (not inside a dual or GEMV kernel) on a model input and after
    a linear layer: the linear-free ones saw NaN become 0 or a bound."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 12)
        self.conv = torch.nn.Conv2d(3, 4, 3, dilation=2)  # dilated: a convolution left dense

    def forward(self, x, image):
        z = self.fc(x)
        outputs = (torch.relu(x), torch.nn.functional.relu6(z), torch.nn.functional.hardtanh(z), x.clamp(min=0),
                   torch.maximum(z, torch.zeros(())), torch.minimum(x, z), torch.relu(self.conv(image)))
        return outputs


def test_clamps_keep_nan_as_pytorch_does():
    x, image = torch.randn(3, 12), torch.randn(1, 3, 9, 9)
    x[:, ::4] = float("nan")
    x[0, 1], x[1, 2] = float("inf"), -float("inf")
    image[0, 0, ::3, ::2] = float("nan")
    model = _Clamps().eval()
    mod = tvm_dual.compile_dual(model, (x, image), insensitive_ratio=0.0)
    with torch.no_grad():
        expected = model(x, image)
    for got, want in zip(mod(x, image), expected):
        assert want.isnan().any()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, equal_nan=True)


def test_split_items_become_slices_unless_the_tuple_is_used_whole():
    import tvm
    from tvm import relax

    from tvm_dual.target import host_target
    from tvm_dual.transform.pipeline import compile_module
    from tvm_dual.transform.split_to_strided_slice import SplitToStridedSlice

    def build(return_tuple: bool) -> tvm.IRModule:
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((2, 12), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                parts = bb.emit(relax.op.split(x, indices_or_sections=[3, 7], axis=-1))
                a = bb.emit(relax.op.sigmoid(relax.TupleGetItem(parts, 0)))
                b = bb.emit(relax.op.tanh(relax.TupleGetItem(parts, 2)))
                out = bb.emit_output(relax.Tuple([a, b, parts] if return_tuple else [a, b, relax.TupleGetItem(parts, 1)]))
            bb.emit_func_output(out)
        return bb.get()

    x = np.random.default_rng(0).standard_normal((2, 12)).astype(np.float32)
    expected = [1 / (1 + np.exp(-x[:, :3])), np.tanh(x[:, 7:]), x[:, 3:7]]
    for return_tuple in (False, True):
        mod = SplitToStridedSlice()(build(return_tuple))
        script = mod["main"].script()
        assert ("R.split" in script) == return_tuple
        vm = relax.VirtualMachine(compile_module(mod, host_target()), tvm.cpu())
        out = vm["main"](tvm.runtime.tensor(x))
        got = [out[0].numpy(), out[1].numpy(), out[2][1].numpy() if return_tuple else out[2].numpy()]
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=1e-5)
