"""Benchmark workloads: a PyTorch model, its inputs, and what "good output" means for it.

A workload is built by a factory registered under a name; `build_workload(name, params)` calls it
with keyword parameters (strings from the command line are converted to the type of each
parameter's default). Factories must be deterministic: every engine's worker process may build the
workload again and checks that it got the same weights. Cache anything expensive (trained weights)
under ~/.cache/tvm_dual, never in git. Adding one (e.g. in tvm_dual/bench/workloads_rnn.py, imported
from tvm_dual/bench/__init__.py):

    @register_workload("lstm_step")
    def lstm_step(hidden: int = 750, seed: int = 0) -> Workload:
        model = ...                                   # torch.nn.Module, eval mode, float32
        return Workload(
            name="lstm_step", params={"hidden": hidden, "seed": seed},
            description="one step of a 1-layer LSTM-750 (x, h, c) -> (h, c)",
            model=model,
            example_inputs=(x, h, c),                 # batch 1: fixes the compiled shapes
            calibration=[(x1, h1, c1), ...],          # input tuples for tvm_dual.compile_dual
            timing_inputs=[(x1, h1, c1), ...],        # numpy tuples, rotated through in timed calls
            torch_mkldnn=False,                       # docs/PEERS.md: oneDNN RNN is 10x slower at one step
            quality=perplexity, quality_name="PTB valid perplexity",
        )

`quality(predict)` receives `predict(*inputs) -> outputs` (numpy in, a list of numpy arrays out, in
the model's output order) and returns one number; it is run for the PyTorch reference and each
tvm-dual variant, so it should take seconds, not minutes. Every engine is also checked against
PyTorch on the timing inputs (relative L2 error of the outputs), whatever the workload.
`numpy_forward` is an optional plain-numpy implementation (numpy in, list of numpy out) for the
`numpy` engine; give one when the workload is a single plain layer.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Inputs = tuple  # a tuple of numpy arrays (or torch tensors, for calibration), in forward() order


@dataclass
class Workload:
    name: str
    params: dict[str, Any]
    description: str
    model: Any  # torch.nn.Module (torch is imported lazily: the bench package must import without it)
    example_inputs: tuple
    calibration: list[tuple]
    timing_inputs: list[tuple[np.ndarray, ...]]
    torch_mkldnn: bool = True
    numpy_forward: Callable[..., list[np.ndarray]] | None = None
    quality: Callable[[Callable[..., list[np.ndarray]]], float] | None = None
    quality_name: str = ""
    quality_higher_is_better: bool = False
    notes: list[str] = field(default_factory=list)
    validation: list[tuple] | None = None  # input tuples thresholds are chosen on (compile_dual's validation=)


class WorkloadError(ValueError):
    """A workload that cannot be built from what was given."""


WORKLOADS: dict[str, Callable[..., Workload]] = {}


def register_workload(name: str):
    def register(factory: Callable[..., Workload]) -> Callable[..., Workload]:
        WORKLOADS[name] = factory
        return factory

    return register


def _convert(name: str, value: Any, default: Any, workload: str) -> Any:
    if not isinstance(value, str) or default is inspect.Parameter.empty or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        return type(default)(value)
    except ValueError:
        raise WorkloadError(
            f"workload {workload!r}: parameter {name}={value!r} is not a valid {type(default).__name__}"
        ) from None


def workload_parameters(name: str) -> dict[str, Any]:
    """The parameters of a registered workload and their defaults."""
    if name not in WORKLOADS:
        raise WorkloadError(f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}")
    return {p.name: p.default for p in inspect.signature(WORKLOADS[name]).parameters.values()}


def build_workload(name: str, params: dict[str, Any] | None = None) -> Workload:
    """Call the factory registered as `name` with `params` (strings converted to the defaults' types)."""
    defaults = workload_parameters(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise WorkloadError(
            f"workload {name!r} has no parameter {', '.join(unknown)}; its parameters are "
            f"{', '.join(f'{k}={v!r}' for k, v in defaults.items()) or 'none'}"
        )
    converted = {k: _convert(k, v, defaults[k], name) for k, v in params.items()}
    workload = WORKLOADS[name](**converted)
    if not workload.timing_inputs:
        raise WorkloadError(f"workload {name!r} has no timing inputs")
    return workload


def model_fingerprint(model) -> str:
    """A digest of the model's parameters and buffers, to check that factories are deterministic."""
    import hashlib

    digest = hashlib.sha1()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---- linear: one Linear + activation layer -----------------------------------------------------

ACTIVATIONS = ("tanh", "sigmoid", "relu")


def _activation_numpy(act: str) -> Callable[[np.ndarray], np.ndarray]:
    if act == "tanh":
        return lambda v: np.tanh(v, out=v)
    if act == "sigmoid":
        return lambda v: np.divide(1.0, np.add(1.0, np.exp(np.negative(v, out=v), out=v), out=v), out=v)
    return lambda v: np.maximum(v, 0.0, out=v)


@register_workload("linear")
def linear(
    k: int = 1024,
    n: int = 4096,
    act: str = "tanh",
    batch: int = 1,
    latent: int = 64,
    preact_std: float = 2.0,
    calibration_rows: int = 4096,
    timing_inputs: int = 64,
    seed: int = 0,
) -> Workload:
    """Linear k -> n + act at `batch`, with inputs that look like a previous layer's activations.

    Inputs are x = tanh(A u + c) for a `latent`-dimensional Gaussian u: bounded, correlated and of
    low effective rank, as hidden activations are (i.i.d. Gaussian inputs would leave a little
    module nothing to learn). W is Gaussian, scaled so that pre-activations have std `preact_std`
    over the inputs (tanh then saturates on a useful part of them, as in trained layers). With
    random weights, timing depends on the fraction of rows computed, which every record reports.
    """
    import torch

    if act not in ACTIVATIONS:
        raise WorkloadError(f"linear: act must be one of {ACTIVATIONS}, got {act!r}")
    if min(k, n, batch, latent, calibration_rows, timing_inputs) < 1:
        raise WorkloadError("linear: k, n, batch, latent, calibration_rows and timing_inputs must be positive")
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, latent)) * (1.5 / np.sqrt(latent))
    offset = 0.3 * rng.standard_normal(k)

    def inputs(rows: int) -> np.ndarray:
        return np.tanh(rng.standard_normal((rows, latent)) @ mix.T + offset).astype(np.float32)

    calib = inputs(calibration_rows)
    W = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32)
    scale = np.float32(preact_std / float((calib[:256] @ W.T + b).std()))
    W, b = W * scale, b * scale

    layer = torch.nn.Linear(k, n)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W))
        layer.bias.copy_(torch.from_numpy(b))
    model = torch.nn.Sequential(layer, {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[act]())
    model.eval()

    # Calibration in batches of at most 64 rows: larger batches leave tvm_dual's GEMV rewrite and
    # run the calibration probe through TVM's unscheduled matmul (seconds per batch).
    calibration = [(torch.from_numpy(calib[i : i + 64]),) for i in range(0, calibration_rows, 64)]
    timing = [(inputs(batch),) for _ in range(timing_inputs)]
    activation = _activation_numpy(act)

    def numpy_forward(x: np.ndarray) -> list[np.ndarray]:
        if x.shape[0] == 1:  # matrix-vector: BLAS gemv over the rows of W
            return [activation(W @ x[0] + b)[None, :]]
        return [activation(x @ W.T + b)]

    return Workload(
        name="linear",
        params=dict(k=k, n=n, act=act, batch=batch, latent=latent, preact_std=preact_std,
                    calibration_rows=calibration_rows, timing_inputs=timing_inputs, seed=seed),
        description=f"Linear {k}->{n} + {act}, batch {batch}",
        model=model,
        example_inputs=(torch.from_numpy(timing[0][0]),),
        calibration=calibration,
        timing_inputs=timing,
        numpy_forward=numpy_forward,
    )


# ---- model: any user model from an import path -------------------------------------------------


def load_factory(path: str) -> Callable:
    """'package.module:function' -> the function."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise WorkloadError(f"model factory must be given as 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise WorkloadError(f"cannot import {module_name!r} for model factory {path!r}: {err}") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise WorkloadError(f"module {module_name!r} has no attribute {attr!r} (model factory {path!r})")
        factory = getattr(factory, part)
    if not callable(factory):
        raise WorkloadError(f"model factory {path!r} is not callable")
    return factory


def _as_numpy_tuple(inputs) -> tuple[np.ndarray, ...]:
    import torch

    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        inputs = (inputs,)
    return tuple(np.ascontiguousarray(t.detach().numpy() if isinstance(t, torch.Tensor) else t) for t in inputs)


def timing_inputs_from(example: tuple[np.ndarray, ...], calibration: list, limit: int) -> list[tuple[np.ndarray, ...]]:
    """Inputs of the example's shapes taken from calibration tuples: used as they are when their
    shapes match, split along dimension 0 when they differ only there; else the example alone."""
    shapes = [a.shape for a in example]
    out: list[tuple[np.ndarray, ...]] = []
    for batch in calibration:
        arrays = _as_numpy_tuple(batch)
        if len(arrays) != len(example):
            continue
        if [a.shape for a in arrays] == shapes:
            out.append(arrays)
        elif all(a.shape[1:] == s[1:] and s and a.shape[0] % s[0] == 0 for a, s in zip(arrays, shapes)):
            parts = {a.shape[0] // s[0] for a, s in zip(arrays, shapes)}
            if len(parts) == 1:
                step = [s[0] for s in shapes]
                for i in range(parts.pop()):
                    out.append(tuple(np.ascontiguousarray(a[i * st : (i + 1) * st]) for a, st in zip(arrays, step)))
        if len(out) >= limit:
            break
    return out[:limit] or [example]


@register_workload("model")
def user_model(factory: str = "", timing_inputs: int = 64) -> Workload:
    """Any model: `factory` is 'package.module:function' returning (model, example_inputs[,
    calibration]) or a Workload. Timing inputs come from the calibration data (see timing_inputs_from)."""
    import torch

    if not factory:
        raise WorkloadError("workload 'model' needs factory=package.module:function (or --model on the command line)")
    made = load_factory(factory)()
    if isinstance(made, Workload):
        return made
    if not isinstance(made, tuple) or len(made) not in (2, 3):
        raise WorkloadError(
            f"model factory {factory!r} must return (model, example_inputs[, calibration]) or a Workload, "
            f"got {type(made).__name__}"
        )
    model, example = made[0], made[1]
    if not isinstance(model, torch.nn.Module):
        raise WorkloadError(f"model factory {factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
    example_np = _as_numpy_tuple(example)
    calibration = list(made[2]) if len(made) == 3 and made[2] is not None else [tuple(torch.from_numpy(a) for a in example_np)]
    model.eval()
    return Workload(
        name="model",
        params={"factory": factory, "timing_inputs": timing_inputs},
        description=f"{type(model).__name__} from {factory}",
        model=model,
        example_inputs=tuple(torch.from_numpy(a) for a in example_np),
        calibration=calibration,
        timing_inputs=timing_inputs_from(example_np, calibration, timing_inputs),
    )
