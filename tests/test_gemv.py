"""The dense GEMV kernel against numpy, for both row orders, on odd shapes (rows not a multiple of
the group, K not a multiple of the lanes, several samples, with and without bias)."""

import numpy as np
import pytest
import tvm

from tvm_dual.kernels.gemv import GemvConfig, GemvShape, make_gemv
from tvm_dual.kernels.row_dot import pad_rows
from tvm_dual.reference import activation

CASES = [
    (GemvShape(1, 333, 37, "tanh"), GemvConfig(rows_per_group=8, lanes=8, row_order="far")),
    (GemvShape(3, 70, 129, "sigmoid"), GemvConfig(rows_per_group=6, lanes=16, row_order="far", prefetch=True)),
    (GemvShape(2, 5, 33, "relu", has_bias=False), GemvConfig(rows_per_group=8, lanes=8, row_order="far")),  # N < G
    (GemvShape(4, 101, 64, "none", aligned_rows=False), GemvConfig(rows_per_group=4, lanes=8, row_order="far")),
    (GemvShape(3, 70, 129, "sigmoid"), GemvConfig(rows_per_group=6, lanes=16, row_order="adjacent")),
]


@pytest.mark.parametrize("shape,config", CASES, ids=lambda v: getattr(v, "name", None) or getattr(v, "row_order", ""))
def test_gemv_matches_numpy(shape: GemvShape, config: GemvConfig):
    rng = np.random.default_rng(shape.n)
    x = rng.standard_normal((shape.batch, shape.k)).astype(np.float32)
    W = rng.standard_normal((shape.n, shape.k)).astype(np.float32) / np.sqrt(shape.k)
    bias = rng.standard_normal(shape.n).astype(np.float32)
    expected = activation(x.astype(np.float64) @ W.T + (bias if shape.has_bias else 0), shape.act)
    kernel = tvm.compile(tvm.IRModule({"main": make_gemv(shape, config)}), target="llvm")["main"]
    y = tvm.runtime.tensor(np.full((shape.batch, shape.n), np.nan, np.float32))
    args = [tvm.runtime.tensor(x), tvm.runtime.tensor(pad_rows(W, shape.row_stride))]
    kernel(*args, *([tvm.runtime.tensor(bias)] if shape.has_bias else []), y)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_gemv_rejects_an_unknown_row_order():
    with pytest.raises(ValueError, match="row_order must be one of"):
        GemvConfig(row_order="sideways")
