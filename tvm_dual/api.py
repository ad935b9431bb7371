"""compile_dual: PyTorch model -> dual-module compiled DualModule."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.relax.dpl import rewrite_call

from .calibrate import capture_layer_inputs
from .conv_plan import CONV_LITTLE, conv_layer_names, conv_ratios, plan_conv_layers, split_ratios
from .conv_sites import find_conv_sites
from .frontend import import_model, normalize_inputs
from .kernels.dual_dense import DualDenseShape, DualKernelConfig, little_bytes
from .little import LittleConfig, fit_little_module
from .plan import DualLayerPlan, DualPlan, thresholds_for_ratio
from .runtime import METADATA_FORMAT, DualModule, attach_metadata
from .sites import (
    DUAL_ACTIVATIONS,
    LinearSite,
    WeightKeys,
    activation_pattern,
    constant_array,
    find_linear_sites,
    linear_pattern,
    match_key,
)
from .target import TargetLike, missing_host_features, resolve_target, target_config, target_to_string
from .transform.expose_dual_counters import COUNTER_LAYERS_ATTR
from .transform.pipeline import compile_module, rewrite_passes

class DualCompileWarning(UserWarning):
    """Something in the model was compiled differently from what was asked."""


def _layer_names(sites: list[LinearSite], names_by_digest: dict[str, str]) -> dict[str, str]:
    """site key -> unique user-facing name (module path, with the activation if a weight is reused)."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for i, site in enumerate(sites):
        base = names_by_digest.get(site.digest, f"linear{i}")
        name = base if base not in used else f"{base}.{site.act}"
        suffix = 2
        while name in used:
            name, suffix = f"{base}.{suffix}", suffix + 1
        used.add(name)
        names[site.key] = name
    return names


def _ratios(insensitive_ratio, sites: list[LinearSite], names: dict[str, str]) -> dict[str, float]:
    """site key -> validated ratio (0 for layers left dense)."""

    def check(value, what):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
            raise ValueError(f"insensitive ratio for {what} must be a number in [0, 1), got {value!r}")
        return float(value)

    candidates = {names[s.key]: s for s in sites if s.dual_ok}
    if isinstance(insensitive_ratio, Mapping):
        by_name = {s.key: names[s.key] for s in sites}
        others = {names[s.key]: s.reason for s in sites if not s.dual_ok}
        for name, value in insensitive_ratio.items():
            if name in others and float(value) > 0:
                raise ValueError(f"layer {name!r} cannot be compiled as a dual module: {others[name]}")
            if name not in candidates and name not in others:
                raise ValueError(f"no dual-capable layer named {name!r}; candidates are {sorted(candidates)}")
            check(value, f"layer {name!r}")
        return {key: check(insensitive_ratio.get(by_name[key], 0.0), by_name[key]) for key in by_name if by_name[key] in candidates}
    ratio = check(insensitive_ratio, "the model")
    return {s.key: ratio for s in sites if s.dual_ok}


def default_kernel_config(target: tvm.target.Target) -> DualKernelConfig:
    """Untuned defaults: two vector registers of accumulators per row, four rows per group."""
    vector_bits = int(tvm.target.codegen.llvm_get_vector_width(target))
    return DualKernelConfig(rows_per_group=4, lanes=max(8, 2 * vector_bits // 32))


def _plan_layers(
    model: torch.nn.Module,
    imported,
    sites: list[LinearSite],
    names: dict[str, str],
    ratios: dict[str, float],
    calibration,
    little: LittleConfig,
    target: tvm.target.Target,
) -> DualPlan:
    plan = DualPlan()
    dual_sites = [s for s in sites if ratios.get(s.key, 0.0) > 0]
    if not dual_sites:
        return plan
    captured = capture_layer_inputs(model, calibration, [s.key for s in dual_sites], imported=imported)
    weights = _weights_by_key(imported.mod, {s.key for s in dual_sites})
    for site in dual_sites:
        x = captured[site.key]
        W, b = weights[site.key]
        if len(x) < 1000:
            warnings.warn(
                f"layer {names[site.key]!r} is calibrated on only {len(x)} input rows; pass more calibration "
                f"data for a useful little module",
                DualCompileWarning,
                stacklevel=3,
            )
        plan.add(
            DualLayerPlan(
                name=names[site.key],
                key=site.key,
                act=site.act,
                n=site.n,
                k=site.k,
                little=fit_little_module(W, b, x, little),
                lo=np.zeros(site.n, np.float32),
                hi=np.zeros(site.n, np.float32),
                target_ratio=ratios[site.key],
                calibration_ratio=float("nan"),
                kernel=default_kernel_config(target),
            )
        )
    # Thresholds: first on the exact model's layer inputs, then again on the inputs each layer gets
    # when the layers before it are dual (one refinement pass fixes the first two layers of a chain
    # exactly and moves the rest most of the way).
    for refine in range(2 if len(dual_sites) > 1 else 1):
        if refine:
            captured = capture_layer_inputs(model, calibration, [s.key for s in dual_sites], imported=imported, plan=plan)
        for site in dual_sites:
            layer = plan.get(site.key)
            lo, hi, observed = thresholds_for_ratio(layer.little.predict(captured[site.key]), site.act, layer.target_ratio)
            layer.lo[:], layer.hi[:], layer.calibration_ratio = lo, hi, observed
    return plan


def _weights_by_key(mod: tvm.IRModule, keys: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    pat = linear_pattern()
    weight_keys = WeightKeys()
    found: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def rewriter(expr, matches):
        key = match_key(matches, pat, weight_keys, DUAL_ACTIVATIONS[expr.op.name])
        if key in keys and key not in found:
            bias = constant_array(matches[pat.bias]).reshape(-1) if pat.bias in matches else None
            found[key] = (constant_array(matches[pat.weight]), bias)
        return expr

    rewrite_call(activation_pattern(DUAL_ACTIVATIONS, pat.linear), rewriter, mod["main"])
    return found


def compile_dual(
    model: torch.nn.Module,
    example_inputs,
    target: TargetLike = None,
    calibration: Iterable | None = None,
    insensitive_ratio: float | Mapping[str, float] = 0.5,
    little: LittleConfig | None = None,
    schedules: str | None = "default",
) -> DualModule:
    """Compile `model` with dual-module inference for its linear + tanh/sigmoid/ReLU layers.

    example_inputs fix the input shapes (batch 1 to 8 for dual layers). calibration is an iterable
    of input tuples (or tensors) run through the exact model to fit little modules and thresholds;
    it defaults to example_inputs alone, which is enough only for tests. insensitive_ratio is the
    fraction of outputs taken from the little module, for all layers or per layer name; 0 compiles
    a layer exactly, with no little-module overhead. target: "llvm -mcpu=...", a dict, a
    tvm.target.Target, or None for this machine.
    """
    tvm_target = resolve_target(target)
    conv_little = little or CONV_LITTLE
    little = little or LittleConfig()
    if schedules not in ("default", None):
        raise ValueError(f"schedules must be 'default' or None, got {schedules!r}")
    inputs = normalize_inputs(example_inputs)
    imported = import_model(model, inputs)
    order = {digest: i for i, digest in enumerate(imported.layer_names)}  # the model's parameter order
    sites = sorted(find_linear_sites(imported.mod["main"]), key=lambda s: order.get(s.digest, len(order)))
    names = _layer_names(sites, imported.layer_names)
    conv_sites = find_conv_sites(imported.mod["main"])
    conv_names = conv_layer_names(model, conv_sites)
    linear_ratio, conv_ratio = split_ratios(insensitive_ratio, conv_names.values())
    ratios = _ratios(linear_ratio, sites, names)
    for site in sites:
        if not site.dual_ok:
            warnings.warn(
                f"layer {names[site.key]!r} stays dense (exact): {site.reason}", DualCompileWarning, stacklevel=2
            )
    for site in conv_sites:
        if not site.dual_ok:
            warnings.warn(f"convolution {conv_names[site.key]!r} stays dense: {site.reason}", DualCompileWarning, stacklevel=2)
    calibration_batches = list(calibration) if calibration is not None else [inputs]
    plan = _plan_layers(model, imported, sites, names, ratios, calibration_batches, little, tvm_target)
    conv_plan = plan_conv_layers(
        model, imported, conv_sites, conv_names, conv_ratios(conv_ratio, conv_sites, conv_names), calibration_batches, conv_little
    )

    mod = tvm.transform.Sequential(rewrite_passes(plan, report_counters=True, conv_plan=conv_plan))(imported.mod)
    main_attrs = mod["main"].attrs
    counter_layers = [str(n) for n in main_attrs[COUNTER_LAYERS_ATTR]] if COUNTER_LAYERS_ATTR in main_attrs else []
    metadata = {
        "target": target_to_string(tvm_target),
        "target_config": target_config(tvm_target),
        "inputs": [spec.to_dict() for spec in imported.inputs],
        "out_spec": imported.out_spec,
        "counter_layers": counter_layers,
        "layers": [_layer_metadata(layer) for layer in plan.layers.values()]
        + [layer.metadata() for layer in conv_plan.layers.values()],
        "dense_layers": [{"name": names[s.key], "reason": s.reason or "ratio 0"} for s in sites if s.key not in plan.layers]
        + [{"name": conv_names[s.key], "reason": s.reason or "ratio 0"} for s in conv_sites if s.key not in conv_plan.layers],
    }
    mod = attach_metadata(mod, metadata)
    if missing_host_features(tvm_target):
        warnings.warn(
            f"compiling for {target_to_string(tvm_target)}, which this CPU cannot run "
            f"({', '.join(sorted(missing_host_features(tvm_target)))} missing); export the module and run it elsewhere",
            DualCompileWarning,
            stacklevel=2,
        )
    executable = compile_module(mod, tvm_target)
    return DualModule(executable, dict(metadata, format=METADATA_FORMAT))


def _layer_metadata(layer: DualLayerPlan) -> dict:
    shape = DualDenseShape(batch=1, n=layer.n, k=layer.k, rank=layer.little.rank, act=layer.act)
    return {
        "name": layer.name,
        "act": layer.act,
        "n": layer.n,
        "k": layer.k,
        "rank": layer.little.rank,
        "bits": layer.little.bits,
        "projection": layer.little.projection,
        "fit_r2": layer.little.fit_r2,
        "target_ratio": layer.target_ratio,
        "calibration_ratio": layer.calibration_ratio,
        "threshold": layer.threshold,
        "little_bytes": little_bytes(shape),
        "kernel": layer.kernel.to_dict(),
        "schedule_source": layer.schedule_source,
    }
