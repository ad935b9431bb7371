"""Little modules: a rank-k projection P, a least-squares fit of W_L and b_L, and quantization.

    z_L = W_L (P x) + b_L  ~  W x + b

The paper fits W_L by SGD with the big module frozen; the objective is a linear least-squares
problem, so it is solved here in closed form (ridge normal equations) on calibration inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from .validation import is_integer, is_real

PROJECTIONS = ("random", "pca", "rrr")


@dataclass(frozen=True)
class LittleConfig:
    """How little modules are built.

    projection: "rrr" (reduced-rank regression, the default) projects on the input directions that
    carry the top principal directions of the layer's outputs: the best rank-k linear predictor of
    W x on the calibration data. "pca" projects on the top principal directions of the calibration
    inputs, which need not be the directions W cares about; at equal rank it fit trained layers
    worse and lost more quality (docs/RESULTS.md: PTB LSTM/GRU gates, scripts/simulate_gate_ratios.py;
    a Fashion-MNIST MLP, scripts/compare_projections.py). "random" is the paper's sparse random
    projection (Achlioptas: sqrt(3) * {+1, 0, -1} with probabilities 1/6, 2/3, 1/6), which fits
    worst (tests/test_little.py). rank: explicit k, or None
    for the Johnson-Lindenstrauss rank 4 ln(n) / (eps^2/2 - eps^3/3), n the rows of W, capped by
    max_cost_fraction: k * (K + N) multiply-adds of the little module may be at most that fraction of
    the N * K of the layer. The little module's int8 weights must be widened to float32 before use,
    which costs about as much per weight as a float32 weight does when W is in cache, so the budget
    is counted in operations, not bytes. bits: 8 or 4
    (symmetric, per row; INT4 values are stored one per int8). ridge: regularization relative to the
    mean eigenvalue of the projected Gram matrix.
    """

    projection: str = "rrr"
    rank: int | None = None
    eps: float = 0.5
    max_cost_fraction: float = 0.1
    bits: int = 8
    ridge: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.rank is not None and (not is_integer(self.rank) or self.rank < 1):
            raise ValueError(f"rank must be a positive integer or None, got {self.rank!r}")
        if not is_real(self.eps) or not 0 < self.eps < 1:
            raise ValueError(f"eps must be a number in (0, 1), got {self.eps!r}")
        if not is_real(self.max_cost_fraction) or not 0 < self.max_cost_fraction <= 1:
            raise ValueError(f"max_cost_fraction must be a number in (0, 1], got {self.max_cost_fraction!r}")
        if not is_integer(self.bits) or self.bits not in (4, 8):
            raise ValueError(f"bits must be 8 or 4, got {self.bits!r}")
        if not is_real(self.ridge) or not 0 <= self.ridge < math.inf:
            raise ValueError(f"ridge must be a finite number >= 0, got {self.ridge!r}")
        if not is_integer(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        # numpy scalars become Python numbers: they travel into the library's JSON metadata
        for name, kind in (("rank", int), ("eps", float), ("max_cost_fraction", float), ("bits", int), ("ridge", float), ("seed", int)):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, kind(value))



def jl_rank(n: int, eps: float) -> int:
    """Johnson-Lindenstrauss rank for n points at distortion eps (the paper's formula)."""
    return int(4 * math.log(n) / (eps**2 / 2 - eps**3 / 3))  # truncated, as the paper (417 for n=6000)


def choose_rank(config: LittleConfig, n: int, k: int) -> int:
    """An explicit rank is used as given (up to K); the JL rank is capped by the cost budget."""
    if config.rank is not None:
        return min(config.rank, k)
    budget = int(config.max_cost_fraction * n * k / (n + k))
    return max(1, min(jl_rank(max(n, 2), config.eps), budget, k))


def sparse_random_projection(rank: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Achlioptas' projection, scaled by 1/sqrt(rank) so that it preserves norms in expectation."""
    draw = rng.choice(np.array([1.0, 0.0, -1.0]), size=(rank, k), p=[1 / 6, 2 / 3, 1 / 6])
    return draw * math.sqrt(3.0 / rank)


def pca_projection(rank: int, x: np.ndarray) -> np.ndarray:
    """Top `rank` principal directions of the calibration inputs (rows of x)."""
    centered = x - x.mean(axis=0, keepdims=True)
    cov = centered.T @ centered / max(len(x) - 1, 1)
    k = cov.shape[0]
    _, vecs = scipy.linalg.eigh(cov, subset_by_index=[k - rank, k - 1])
    return vecs[:, ::-1].T.copy()


def rrr_projection(rank: int, x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """P = U^T W with U the top `rank` principal directions of the outputs W x: the input directions
    of the best rank-`rank` approximation of x -> W x on the calibration inputs.

    The output covariance W G W^T (G the inputs' K x K Gram matrix) is N x N. When N > K the same U
    comes from K x K problems: with G = L L^T, U = W L V S^-1 for V, S^2 the top eigenpairs of
    L^T W^T W L, so P = S^-1 V^T L^T W^T W (seconds less per compile for a 4096 x 1024 layer)."""
    centered = x - x.mean(axis=0, keepdims=True)
    n, k = W.shape
    if n <= k:
        outputs = centered @ W.T
        _, vecs = scipy.linalg.eigh(outputs.T @ outputs, subset_by_index=[n - rank, n - 1])
        return vecs[:, ::-1].T @ W
    gram_vals, gram_vecs = scipy.linalg.eigh(centered.T @ centered)
    L = gram_vecs * np.sqrt(np.clip(gram_vals, 0.0, None))
    wtw = W.T @ W
    vals, vecs = scipy.linalg.eigh(L.T @ wtw @ L, subset_by_index=[k - rank, k - 1])
    vals, vecs = vals[::-1], vecs[:, ::-1]
    # directions beyond the outputs' numerical rank get near-zero rows (W L v is ~0 there), not
    # rows blown up by 1/S
    top = max(float(vals[0]), np.finfo(np.float64).tiny)
    scale = np.sqrt(np.where(vals > top * 1e-12, vals, top))
    return (vecs / scale).T @ L.T @ wtw


def quantize_rows(m: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row quantization: m ~= q * scale[:, None], q in [-(2^(bits-1)-1), 2^(bits-1)-1]."""
    qmax = 2 ** (bits - 1) - 1
    amax = np.abs(m).max(axis=1)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    q = np.clip(np.rint(m / scale[:, None]), -qmax, qmax).astype(np.int8)
    return q, scale.astype(np.float32)


@dataclass
class LittleModule:
    """A fitted, quantized little module in the kernel's terms: z_L = (WL * WLs) ((P * Ps) x) + bL."""

    P: np.ndarray  # (R, K) int8
    Ps: np.ndarray  # (R,) float32
    WL: np.ndarray  # (N, R) int8
    WLs: np.ndarray  # (N,) float32
    bL: np.ndarray  # (N,) float32
    bits: int
    projection: str
    fit_r2: float = field(default=float("nan"))  # R^2 of the quantized little module on calibration data

    @property
    def rank(self) -> int:
        return int(self.P.shape[0])

    def predict(self, x: np.ndarray, little_compute: str = "f32", vector_bits: int = 256) -> np.ndarray:
        """Little pre-activations for inputs x (S, K), computed as the kernel does (in the kernel's
        arithmetic mode, DualKernelConfig.little_compute), in float32."""
        if little_compute != "f32":
            from .reference import little_values

            return little_values(x, self.P, self.Ps, self.WL, self.WLs, self.bL, little_compute, vector_bits).astype(np.float32)
        x = np.asarray(x, dtype=np.float32)
        z = (x @ self.P.astype(np.float32).T) * self.Ps
        return (z @ self.WL.astype(np.float32).T) * self.WLs + self.bL

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.P, self.Ps, self.WL, self.WLs, self.bL))


def _ridge_fit(u: np.ndarray, target: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """min ||[u 1] beta - target||^2 + lam ||W||^2 (bias unpenalized) -> (W (N,R), b (N,))."""
    u_mean = u.mean(axis=0)
    t_mean = target.mean(axis=0)
    uc = u - u_mean
    gram = uc.T @ uc
    lam = ridge * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
    gram[np.diag_indices_from(gram)] += lam
    coef = scipy.linalg.solve(gram, uc.T @ (target - t_mean), assume_a="pos")  # (R, N)
    bias = t_mean - u_mean @ coef
    return coef.T, bias


def fit_little_module(
    W: np.ndarray, b: np.ndarray | None, x: np.ndarray, config: LittleConfig, rank: int | None = None
) -> LittleModule:
    """Fit a little module for y = W x + b on calibration inputs x (S, K)."""
    W64 = np.asarray(W, dtype=np.float64)
    n, k = W64.shape
    x64 = np.asarray(x, dtype=np.float64).reshape(-1, k)
    if not np.isfinite(x64).all():
        x64 = x64[np.isfinite(x64).all(axis=1)]
    if len(x64) == 0:
        raise ValueError("no finite calibration inputs to fit the little module on")
    target = x64 @ W64.T + (0.0 if b is None else np.asarray(b, dtype=np.float64))
    rank = rank if rank is not None else choose_rank(config, n, k)
    rng = np.random.default_rng(config.seed)
    if config.projection == "pca":
        proj = pca_projection(min(rank, k), x64)
    elif config.projection == "rrr":
        proj = rrr_projection(min(rank, n), x64, W64)
    else:
        proj = sparse_random_projection(rank, k, rng)
    P, Ps = quantize_rows(proj, 8)
    u = x64 @ (P.astype(np.float64) * Ps[:, None].astype(np.float64)).T  # what the kernel projects to
    WL, bL = _ridge_fit(u, target, config.ridge)
    WLq, WLs = quantize_rows(WL, config.bits)
    module = LittleModule(P=P, Ps=Ps, WL=WLq, WLs=WLs, bL=bL.astype(np.float32), bits=config.bits, projection=config.projection)
    resid = module.predict(x64) - target
    denom = float(((target - target.mean(axis=0)) ** 2).sum())
    module.fit_r2 = 1.0 - float((resid**2).sum()) / denom if denom > 0 else float("nan")
    return module
