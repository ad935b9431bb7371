"""compile_dual: PyTorch model -> dual-module compiled DualModule."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import tvm
from tqdm.auto import tqdm
from tvm.relax.dpl import rewrite_call

from .calibrate import capture_layer_inputs
from .compile_warning import DualCompileWarning
from .conv_plan import CONV_LITTLE, ConvPlan, conv_layer_names, conv_ratios, plan_conv_layers, split_ratios
from .conv_sites import ConvSite, find_conv_sites
from .frontend import ImportedModel, import_model, input_batches, normalize_inputs
from .kernels.dual_dense import DualDenseShape, little_bytes
from .tuning.dense_metaschedule import database_dir, has_database
from .tuning.schedules import lookup
from .little import LittleConfig, fit_little_module
from .plan import DualLayerPlan, DualPlan, check_ratio, default_kernel_config, thresholds_for_ratio
from .quality_budget import QualityBudget, planning_ratios, search_quality_budget
from .reference import little_values
from .recurrent import RecurrentConfig, RecurrentPlan, RecurrentSite, find_recurrent_sites, split_recurrent_ratios
from .recurrent_calibrate import plan_recurrent
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
from .target import (
    TargetLike,
    missing_host_features,
    resolve_target,
    target_config,
    target_to_string,
    vector_bits,
)
from .transform.expose_dual_counters import COUNTER_LAYERS_ATTR
from .transform.pipeline import compile_module, rewrite_passes
from .transform.recurrent_gate_rewrite import RecurrentGateRewrite


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


def _ratios(
    insensitive_ratio, sites: list[LinearSite], names: dict[str, str], other_candidates: Iterable[str] = ()
) -> dict[str, float]:
    """site key -> validated ratio (0 for layers left dense). other_candidates: the names of the
    model's other dual-capable layers (recurrent, convolutional), for the error message."""

    candidates = {names[s.key]: s for s in sites if s.dual_ok}
    if isinstance(insensitive_ratio, Mapping):
        by_name = {s.key: names[s.key] for s in sites}
        others = {names[s.key]: s.reason for s in sites if not s.dual_ok}
        for name, value in insensitive_ratio.items():
            if name in others and float(value) > 0:
                raise ValueError(f"layer {name!r} cannot be compiled as a dual module: {others[name]}")
            if name not in candidates and name not in others:
                raise ValueError(f"no dual-capable layer named {name!r}; candidates are {sorted([*candidates, *other_candidates])}")
            check_ratio(value, f"layer {name!r}")
        return {key: check_ratio(insensitive_ratio.get(by_name[key], 0.0), by_name[key]) for key in by_name if by_name[key] in candidates}
    ratio = check_ratio(insensitive_ratio, "the model")
    return {s.key: ratio for s in sites if s.dual_ok}


def _plan_layers(
    model: torch.nn.Module,
    imported,
    sites: list[LinearSite],
    names: dict[str, str],
    ratios: dict[str, float],
    calibration,
    little: LittleConfig,
    target: tvm.target.Target,
    schedules,
    validation=None,
    refine: bool = True,
) -> DualPlan:
    plan = DualPlan(vector_bits=vector_bits(target))
    dual_sites = [s for s in sites if ratios.get(s.key, 0.0) > 0]
    if not dual_sites:
        return plan
    captured = capture_layer_inputs(model, calibration, [s.key for s in dual_sites], imported=imported)
    weights = _weights_by_key(imported.mod, {s.key for s in dual_sites})
    for site in tqdm(dual_sites, desc="fitting little modules", unit="layer", disable=None, leave=False):
        x = fitting_rows(captured[site.key])
        W, b = weights[site.key]
        if len(captured[site.key]) < 1000:
            warnings.warn(
                f"layer {names[site.key]!r} is calibrated on only {len(captured[site.key])} input rows; pass more calibration "
                f"data for a useful little module",
                DualCompileWarning,
                stacklevel=3,
            )
        module = fit_little_module(W, b, x, little)
        shape = DualDenseShape(batch=site.batch, n=site.n, k=site.k, rank=module.rank, act=site.act)
        tuned, source = lookup(shape, target, schedules)
        plan.add(
            DualLayerPlan(
                name=names[site.key],
                key=site.key,
                act=site.act,
                n=site.n,
                k=site.k,
                little=module,
                lo=np.zeros(site.n, np.float32),
                hi=np.zeros(site.n, np.float32),
                target_ratio=ratios[site.key],
                calibration_ratio=float("nan"),
                kernel=tuned or default_kernel_config(target, site.n),
                schedule_source=source,
            )
        )
    # Thresholds: first on the exact model's layer inputs, then again on the inputs each layer gets
    # when the layers before it are dual (one refinement pass fixes the first two layers of a chain
    # exactly and moves the rest most of the way). With validation data, on that data. Without
    # `refine` (a quality-budget search sets every layer's thresholds itself) the first pass only.
    for refining in range(2 if refine and len(dual_sites) > 1 else 1):
        if refining or validation is not None:
            threshold_data = calibration if validation is None else validation
            captured = capture_layer_inputs(
                model, threshold_data, [s.key for s in dual_sites], imported=imported, plan=plan if refining else None
            )
        for site in dual_sites:
            layer = plan.get(site.key)
            m = layer.little
            rows = captured[site.key] if validation is not None else threshold_rows(captured[site.key])
            little = little_values(rows, m.P, m.Ps, m.WL, m.WLs, m.bL, layer.kernel.little_compute, plan.vector_bits)
            lo, hi, observed = thresholds_for_ratio(little, site.act, layer.target_ratio)
            layer.lo[:], layer.hi[:], layer.calibration_ratio = lo, hi, observed
    return plan


# Thresholds are chosen on rows the little module was not fitted on: a fit (PCA directions most of
# all) explains its own sample better than new data, which made held-out ratios drift low.
_THRESHOLD_EVERY = 2


def fitting_rows(x: np.ndarray) -> np.ndarray:
    return x if len(x) < 2 * _THRESHOLD_EVERY else x[np.arange(len(x)) % _THRESHOLD_EVERY != 0]


def threshold_rows(x: np.ndarray) -> np.ndarray:
    return x if len(x) < 2 * _THRESHOLD_EVERY else x[::_THRESHOLD_EVERY]


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


@dataclass
class PlannedModel:
    """Everything compile_dual decided before building: the imported graph, the sites and the plans."""

    imported: ImportedModel
    sites: list[LinearSite]
    names: dict[str, str]  # site key -> layer name
    plan: DualPlan
    target: tvm.target.Target
    dense_database: str | None = None  # MetaSchedule database applied to the dense parts
    recurrent_sites: list[RecurrentSite] = field(default_factory=list)
    recurrent_plan: RecurrentPlan = field(default_factory=RecurrentPlan)
    vanilla_rnns: list[str] = field(default_factory=list)  # nn.RNN layers, which stay dense
    conv_sites: list[ConvSite] = field(default_factory=list)
    conv_names: dict[str, str] = field(default_factory=dict)  # conv site key -> Conv2d module path
    conv_plan: ConvPlan = field(default_factory=ConvPlan)
    quality_budget: dict | None = None  # the search's report (quality_budget.search_quality_budget)


def _dense_database(schedules, target: tvm.target.Target) -> str | None:
    """The MetaSchedule database that goes with a `schedules` choice, if one exists."""
    if schedules is None:
        return None
    directory = database_dir(target) if schedules == "default" else database_dir(target, os.path.join(schedules, "metaschedule"))
    return str(directory) if has_database(directory) else None


def plan_dual(
    model: torch.nn.Module,
    example_inputs,
    target: TargetLike = None,
    calibration: Iterable | None = None,
    insensitive_ratio: float | Mapping[str, float] = 0.5,
    little: LittleConfig | None = None,
    schedules: str | os.PathLike | None = "default",
    validation: Iterable | None = None,
    recurrent: RecurrentConfig | None = None,
    quality_budget: QualityBudget | None = None,
) -> PlannedModel:
    """Import, calibrate and fit little modules, without building (see compile_dual)."""
    for argument, value, expected in (
        ("little", little, LittleConfig), ("recurrent", recurrent, RecurrentConfig), ("quality_budget", quality_budget, QualityBudget),
    ):
        if value is not None and not isinstance(value, expected):
            raise TypeError(f"{argument} must be a tvm_dual.{expected.__name__} or None, got {type(value).__name__}")
    if schedules is not None and not isinstance(schedules, (str, os.PathLike)):
        raise TypeError(f"schedules must be 'default', a directory or None, got {type(schedules).__name__}")
    tvm_target = resolve_target(target)
    conv_little = little or CONV_LITTLE
    little = little or LittleConfig()
    inputs = normalize_inputs(example_inputs)
    imported = import_model(model, inputs)
    order = {digest: i for i, digest in enumerate(imported.layer_names)}  # the model's parameter order
    sites = sorted(find_linear_sites(imported.mod["main"]), key=lambda s: order.get(s.digest, len(order)))
    names = _layer_names(sites, imported.layer_names)
    conv_sites = find_conv_sites(imported.mod["main"])
    conv_names = conv_layer_names(model, conv_sites)
    rec_sites, vanilla = find_recurrent_sites(imported.mod["main"], imported.layer_names)
    if quality_budget is not None:  # fit every searchable layer; the search chooses ratios after
        dual_convs = [conv_names[s.key] for s in conv_sites if s.dual_ok]
        insensitive_ratio = planning_ratios(quality_budget, model, sites, names, rec_sites, dual_convs)
    insensitive_ratio, rec_ratios = split_recurrent_ratios(insensitive_ratio, rec_sites, vanilla)
    linear_ratio, conv_ratio = split_ratios(insensitive_ratio, conv_names.values())
    other_candidates = [s.name for s in rec_sites if s.dual_ok] + [conv_names[s.key] for s in conv_sites if s.dual_ok]
    ratios = _ratios(linear_ratio, sites, names, other_candidates)
    unsupported = (
        [f"{names[s.key]!r} ({s.reason})" for s in sites if not s.dual_ok]
        + [f"{conv_names[s.key]!r} ({s.reason})" for s in conv_sites if not s.dual_ok]
        + [f"{s.name!r} ({s.reason})" for s in rec_sites if not s.dual_ok]
        + [f"{name!r} (a vanilla RNN cell has no gate kernel)" for name in vanilla]
    )
    if unsupported:  # one warning for the model, listing every layer
        warnings.warn(
            f"{len(unsupported)} layer(s) stay dense (exact): {'; '.join(unsupported)}", DualCompileWarning, stacklevel=3
        )
    specs = imported.inputs
    calibration_batches = input_batches(calibration, "calibration", inputs, specs) if calibration is not None else [inputs]
    validation_batches = input_batches(validation, "validation", inputs, specs) if validation is not None else None
    plan = _plan_layers(
        model, imported, sites, names, ratios, calibration_batches, little, tvm_target, schedules, validation_batches,
        refine=quality_budget is None,
    )
    rec_plan = plan_recurrent(
        model, imported, rec_sites, rec_ratios, calibration_batches, validation_batches, little,
        recurrent or RecurrentConfig(), tvm_target, schedules,
    )
    budget_report = (
        search_quality_budget(quality_budget, model, plan, rec_plan, calibration_batches, validation_batches)
        if quality_budget is not None
        else None
    )
    conv_plan = plan_conv_layers(
        model, imported, conv_sites, conv_names, conv_ratios(conv_ratio, conv_sites, conv_names), calibration_batches,
        conv_little,
    )
    return PlannedModel(
        imported, sites, names, plan, tvm_target, _dense_database(schedules, tvm_target),
        rec_sites, rec_plan, vanilla, conv_sites, conv_names, conv_plan, budget_report,
    )


def build_dual(planned: PlannedModel) -> DualModule:
    """Rewrite and compile a planned model."""
    imported, plan, rec_plan, tvm_target = planned.imported, planned.plan, planned.recurrent_plan, planned.target
    conv_plan = planned.conv_plan
    passes = [RecurrentGateRewrite(rec_plan), *rewrite_passes(plan, report_counters=True, conv_plan=conv_plan)]
    mod = tvm.transform.Sequential(passes)(imported.mod)
    main_attrs = mod["main"].attrs
    counter_layers = [str(n) for n in main_attrs[COUNTER_LAYERS_ATTR]] if COUNTER_LAYERS_ATTR in main_attrs else []
    metadata = {
        "target": target_to_string(tvm_target),
        "target_config": target_config(tvm_target),
        "inputs": [spec.to_dict() for spec in imported.inputs],
        "out_spec": imported.out_spec,
        "counter_layers": counter_layers,
        "dense_schedules": planned.dense_database or "dlight rules (no MetaSchedule database)",
        "layers": [_layer_metadata(layer) for layer in plan.layers.values()]
        + [layer.metadata() for layer in rec_plan.layers.values()]
        + [layer.metadata() for layer in conv_plan.layers.values()],
        "dense_layers": [
            {"name": planned.names[s.key], "reason": s.reason or "ratio 0"} for s in planned.sites if s.key not in plan.layers
        ]
        + [{"name": s.name, "reason": s.reason or "ratio 0"} for s in planned.recurrent_sites if s.key not in rec_plan.layers]
        + [{"name": name, "reason": "vanilla RNN cell"} for name in planned.vanilla_rnns]
        + [
            {"name": planned.conv_names[s.key], "reason": s.reason or "ratio 0"}
            for s in planned.conv_sites
            if s.key not in conv_plan.layers
        ],
    }
    if planned.quality_budget is not None:
        metadata["quality_budget"] = planned.quality_budget
    mod = attach_metadata(mod, metadata)
    if missing_host_features(tvm_target):
        warnings.warn(
            f"compiling for {target_to_string(tvm_target)}, which this CPU cannot run "
            f"({', '.join(sorted(missing_host_features(tvm_target)))} missing); export the module and run it elsewhere",
            DualCompileWarning,
            stacklevel=3,
        )
    executable = compile_module(mod, tvm_target, planned.dense_database)
    return DualModule(executable, dict(metadata, format=METADATA_FORMAT))


def compile_dual(
    model: torch.nn.Module,
    example_inputs,
    target: TargetLike = None,
    calibration: Iterable | None = None,
    insensitive_ratio: float | Mapping[str, float] = 0.5,
    little: LittleConfig | None = None,
    schedules: str | os.PathLike | None = "default",
    validation: Iterable | None = None,
    recurrent: RecurrentConfig | None = None,
    quality_budget: QualityBudget | None = None,
) -> DualModule:
    """Compile `model` with dual-module inference for its linear + tanh/sigmoid/ReLU layers and
    the gates of its LSTM/GRU layers.

    example_inputs fix the input shapes (batch 1 to 8 for dual layers). calibration is an iterable
    of input batches (tensors, or tuples shaped like example_inputs, any batch size; for a one-input
    model a single tensor of rows is one batch) run through the exact model to fit little modules
    and thresholds; it defaults to example_inputs alone, which is enough only for tests. insensitive_ratio is the
    fraction of outputs taken from the little module, for all layers or per layer name; 0 compiles
    a layer exactly, with no little-module overhead. little: a tvm_dual.LittleConfig for every dual
    layer (default: LittleConfig() for linear and recurrent layers, conv_plan.CONV_LITTLE for
    convolutions). target: "llvm -mcpu=...", a dict, a
    tvm.target.Target, or None for this machine. schedules: "default" applies the shipped tuned
    kernel knobs (schedules/<cpu>.json) where a layer's shape was tuned, a path uses that file or
    directory, None uses untuned defaults; each layer's metadata says which it got. validation:
    input tuples on which thresholds are chosen (default: held-out calibration rows). LSTM/GRU
    layers (nn.LSTM, nn.GRU, LSTMCell, GRUCell) are dual per gate, named like "rnn.l0" or "cell";
    recurrent: how (tvm_dual.RecurrentConfig). quality_budget: a tvm_dual.QualityBudget; the
    per-layer ratios of nn.Linear, nn.LSTM and nn.LSTMCell layers are then searched to save the
    most bytes within it (insensitive_ratio is ignored, other layers stay exact), and
    metadata["quality_budget"] reports the choice next to the best uniform ratio
    (tvm_dual/quality_budget.py).
    """
    planned = plan_dual(
        model, example_inputs, target, calibration, insensitive_ratio, little, schedules, validation, recurrent,
        quality_budget,
    )
    return build_dual(planned)


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
