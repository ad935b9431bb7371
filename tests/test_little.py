"""Little modules: projection rank, least-squares fit, quantization, thresholds, determinism."""

import numpy as np
import pytest

from tvm_dual.little import LittleConfig, choose_rank, fit_little_module, jl_rank, quantize_rows
from tvm_dual.plan import thresholds_for_ratio


def test_jl_rank_matches_the_paper():
    assert jl_rank(6000, 0.5) == 417  # LSTM-1500, 4 gates (METHOD.md)


def test_rank_budget_caps_the_jl_rank():
    assert choose_rank(LittleConfig(), n=4096, k=1024) == 81  # 0.1 * N*K / (N+K)
    assert choose_rank(LittleConfig(max_cost_fraction=1.0), n=4096, k=1024) == jl_rank(4096, 0.5)
    assert choose_rank(LittleConfig(rank=5000), n=10, k=20) == 20


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_error_is_bounded_by_half_a_step(bits):
    m = np.random.default_rng(0).standard_normal((50, 33)) * np.arange(1, 51)[:, None]
    q, scale = quantize_rows(m, bits)
    qmax = 2 ** (bits - 1) - 1
    assert np.abs(q).max() <= qmax and q.dtype == np.int8
    assert np.all(np.abs(q * scale[:, None] - m) <= scale[:, None] / 2 + 1e-6 * np.abs(m).max())


def _low_rank_problem(seed=0, n=200, k=120, rank=8, samples=3000):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, k))
    x = rng.standard_normal((samples, rank)) @ basis + 0.01 * rng.standard_normal((samples, k))
    W = rng.standard_normal((n, k)) / np.sqrt(k)
    b = rng.standard_normal(n)
    return x.astype(np.float32), W.astype(np.float32), b.astype(np.float32)


def test_pca_little_module_recovers_low_rank_inputs():
    x, W, b = _low_rank_problem()
    module = fit_little_module(W, b, x, LittleConfig(projection="pca", rank=8))
    assert module.fit_r2 > 0.99
    held_out, _, _ = _low_rank_problem(seed=0, samples=500)
    exact = held_out @ W.T + b
    rel = np.linalg.norm(module.predict(held_out) - exact) / np.linalg.norm(exact - exact.mean(0))
    assert rel < 0.1


def test_pca_beats_random_projection_at_equal_rank():
    x, W, b = _low_rank_problem(rank=16)
    pca = fit_little_module(W, b, x, LittleConfig(projection="pca", rank=16))
    rnd = fit_little_module(W, b, x, LittleConfig(projection="random", rank=16))
    assert pca.fit_r2 > rnd.fit_r2


def test_random_projection_is_sparse_ternary_and_seeded():
    x, W, b = _low_rank_problem()
    a = fit_little_module(W, b, x, LittleConfig(projection="random", rank=20, seed=3))
    b2 = fit_little_module(W, b, x, LittleConfig(projection="random", rank=20, seed=3))
    c = fit_little_module(W, b, x, LittleConfig(projection="random", rank=20, seed=4))
    assert np.array_equal(a.P, b2.P) and np.array_equal(a.WL, b2.WL)
    assert not np.array_equal(a.P, c.P)
    assert set(np.unique(a.P)) <= {-127, 0, 127}
    assert 0.55 < np.mean(a.P == 0) < 0.78  # 2/3 zeros


def test_int4_is_close_to_int8():
    x, W, b = _low_rank_problem()
    r8 = fit_little_module(W, b, x, LittleConfig(rank=8, bits=8)).fit_r2
    r4 = fit_little_module(W, b, x, LittleConfig(rank=8, bits=4)).fit_r2
    assert r4 > 0.95 and r4 <= r8 + 1e-6


def test_calibration_inputs_with_nan_rows_are_ignored():
    x, W, b = _low_rank_problem()
    x[::7, 3] = np.nan
    module = fit_little_module(W, b, x, LittleConfig(rank=8))
    assert np.isfinite(module.WLs).all() and module.fit_r2 > 0.99


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.9])
def test_thresholds_hit_the_ratio(act, ratio):
    values = np.random.default_rng(1).standard_normal(100_000) * 2 + 0.3
    lo, hi, observed = thresholds_for_ratio(values, act, ratio)
    insensitive = ~((lo <= values) & (values <= hi))
    assert abs(insensitive.mean() - ratio) < 1e-3 and abs(observed - ratio) < 1e-3
    if act == "relu":
        assert hi == np.inf
    else:
        assert lo == -hi


@pytest.mark.parametrize("ratio", [-0.01, 1.0, 2.0])
def test_threshold_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match=r"insensitive ratio must be in \[0, 1\)"):
        thresholds_for_ratio(np.zeros(10), "tanh", ratio)


def test_config_validation():
    with pytest.raises(ValueError, match="projection"):
        LittleConfig(projection="svd")
    with pytest.raises(ValueError, match="bits"):
        LittleConfig(bits=2)
    with pytest.raises(ValueError, match="rank"):
        LittleConfig(rank=0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ridge": float("nan")}, "ridge must be a finite number >= 0"),
        ({"ridge": float("inf")}, "ridge must be a finite number >= 0"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": "abc"}, "seed must be an integer >= 0"),
        ({"eps": "0.5"}, r"eps must be a number in \(0, 1\)"),
        ({"bits": 8.0}, "bits must be 8 or 4"),
        ({"rank": True}, "rank must be a positive integer or None"),
    ],
)
def test_little_config_names_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        LittleConfig(**options)


def test_little_config_takes_numpy_numbers_as_python_ones():
    config = LittleConfig(rank=np.int64(4), seed=np.int32(3), ridge=np.float32(0.5))
    assert (config.rank, config.seed, config.ridge) == (4, 3, 0.5)
    assert all(type(v) in (int, float, str) for v in (config.rank, config.seed, config.ridge, config.bits))
