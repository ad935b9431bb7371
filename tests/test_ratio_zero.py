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
