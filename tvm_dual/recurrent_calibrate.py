"""Calibration of recurrent layers: per-step inputs over whole sequences, little modules, per-gate
thresholds.

The inputs of every time step of every calibration sequence are captured from the exact model as
compiled (InsertRecurrentProbes). Little modules are fitted on the calibration data; thresholds
are chosen on the threshold data (validation data when given), gate by gate, so that each gate
takes its share of the layer's `ratio` (gate_allocation.py) of its outputs from the little
module. The GRU's n gate is thresholded last, on x_n + r * h_n with r as the kernel will compute
it (exact where the r row is sensitive).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from tqdm.auto import tqdm
import tvm
import tvm_ffi

from . import calibrate
from .frontend import ImportedModel
from .gate_allocation import gate_ratios
from .kernels.dual_dense import DualKernelConfig, default_blocks_per_span
from .kernels.dual_gates import GATES
from .target import vector_bits
from .tuning.gate_workload import GateWorkload
from .tuning.schedules import lookup
from .little import LittleConfig, fit_little_module
from .plan import default_kernel_config
from .recurrent import RecurrentConfig, RecurrentLayerPlan, RecurrentPlan, RecurrentSite
from .reference import activation
from .reference_gates import GateWeights
from .transform.dense_gemv_rewrite import DenseGemvRewrite
from .transform.insert_recurrent_probes import PROBE_FUNC, InsertRecurrentProbes

MAX_FIT_ROWS = 50_000  # steps kept per layer for the little-module fit
MAX_THRESHOLD_ROWS = 20_000  # steps kept per layer for thresholds (values of all gates are held at once)

# the recurrent probes record into the same slots as the linear ones
tvm_ffi.register_global_func(PROBE_FUNC, calibrate.probe, override=True)


# Captures of the last few compile_dual calls: compiling one model at several ratios with the same
# data (eval_ptb, the benchmarks) captures once. Entries hold the data, so ids stay valid.
_CAPTURE_CACHE: list[tuple[tuple, list, list]] = []
_CAPTURE_CACHE_SIZE = 2


def capture_step_inputs(
    model: torch.nn.Module, datasets: list[list], sites: list[RecurrentSite], imported: ImportedModel, max_rows: list[int]
) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """For each dataset (a list of input tuples): site key -> (x rows (S, I), h rows (S, H)), row
    j of both from the same step and sample. Batches of a new shape (e.g. sequences for a one-step
    model) import the model again at that shape; compiled probed models are shared by datasets."""
    key = (id(model), tuple(s.key for s in sites), tuple(max_rows),
           tuple(tuple(id(t) for b in batches for t in (b if isinstance(b, (tuple, list)) else (b,))) for batches in datasets))
    for cached_key, _data, result in _CAPTURE_CACHE:
        if cached_key == key:
            return result
    result = _capture(model, datasets, sites, imported, max_rows)
    _CAPTURE_CACHE.append((key, [model, datasets], result))
    del _CAPTURE_CACHE[:-_CAPTURE_CACHE_SIZE]
    return result


def _capture(model, datasets, sites, imported, max_rows):
    keys = [s.key for s in sites]
    passes = [InsertRecurrentProbes(keys), DenseGemvRewrite()]
    compiled: dict = {}  # probed models, shared by the datasets
    results = []
    for batches, limit in zip(datasets, max_rows):
        sink = calibrate.run_probed(model, batches, imported, passes, 2 * len(keys), "calibrating recurrent layers", compiled)
        results.append(_pair_rows(sink, sites, limit))
    return results


def _pair_rows(sink, sites: list[RecurrentSite], max_rows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    captured = {}
    rng = np.random.default_rng(0)
    for i, site in enumerate(sites):
        if not sink[2 * i] or not sink[2 * i + 1]:
            raise RuntimeError(f"calibration never reached recurrent layer {site.name!r}")
        x, h = np.concatenate(sink[2 * i]), np.concatenate(sink[2 * i + 1])
        if len(x) != len(h):
            raise RuntimeError(f"recurrent layer {site.name!r}: {len(x)} input rows but {len(h)} state rows captured")
        if len(x) > max_rows:
            keep = np.sort(rng.choice(len(x), max_rows, replace=False))
            x, h = x[keep], h[keep]
        captured[site.key] = (x, h)
    return captured


def site_weights(site: RecurrentSite) -> GateWeights:
    W_ih, W_hh, b_ih, b_hh = site.weights
    zeros = np.zeros(W_hh.shape[0], np.float32)
    return GateWeights(site.cell, W_ih, W_hh, zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh)


def gate_thresholds(
    weights: GateWeights,
    fused: bool,
    little,
    x: np.ndarray,
    h: np.ndarray,
    ratio: float,
    allocation: str = "output_error",
    little_compute: str = "f32",
    vector_bits: int = 256,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(lo, hi) per gate row and the insensitive fraction per gate on rows (x, h); the layer's
    `ratio` is split over the gates by `allocation` (gate_allocation.py). Little values are
    computed in the kernel's arithmetic mode (little_compute, vector_bits)."""
    H = weights.hidden
    u = np.concatenate([x, h], axis=1) if fused else h
    values = little.predict(u, little_compute, vector_bits)  # (S, NL*H) float32
    gates = GATES[weights.cell]
    joint = len(gates) if weights.cell == "lstm" else 2
    x_term = None if fused else x @ weights.W_ih.T + weights.b_ih  # hoisted: the exact x term of every gate
    if x_term is not None:  # it joins the little h term in every decision but the GRU's n
        values[:, : joint * H] += x_term[:, : joint * H]
    ratios = gate_ratios(weights, fused, values, x, h, ratio, allocation)
    t = np.zeros(len(gates), np.float64)

    def threshold(v: np.ndarray, gate_ratio: float) -> float:
        v = np.abs(v[np.isfinite(v)])
        return float(np.quantile(v, 1.0 - gate_ratio)) if gate_ratio > 0 and v.size else np.inf

    for g in range(joint):
        t[g] = threshold(values[:, g * H : (g + 1) * H], ratios[g])
    fractions = {gates[g]: float(np.mean(np.abs(values[:, g * H : (g + 1) * H]) > t[g])) for g in range(joint)}
    if weights.cell == "gru":
        # r as the kernel computes it: exact where the r row is sensitive, little elsewhere
        little_r = values[:, :H]
        exact_r = h @ weights.W_hh[:H].T + weights.b_hh[:H] + (x @ weights.W_ih[:H].T + weights.b_ih[:H])
        r = activation(np.where(np.abs(little_r) <= t[0], exact_r, little_r), "sigmoid")
        if fused:
            n_val = values[:, 2 * H : 3 * H] + r * values[:, 3 * H : 4 * H]
        else:
            n_val = x_term[:, 2 * H :] + r * values[:, 2 * H : 3 * H]
        t[2] = threshold(n_val, ratios[2])
        fractions["n"] = float(np.mean(np.abs(n_val) > t[2]))
    bound = np.repeat(t, H).astype(np.float32)
    return -bound, bound, fractions


GATHERED_ROWS_AVX512 = 15  # rows per group of the gate kernel where the target has 32 vector registers


def default_gate_kernel_config(target: tvm.target.Target, hidden: int) -> DualKernelConfig:
    """Untuned gate-kernel knobs: the dense dual kernel's (plan.default_kernel_config: eight gathered
    rows with one vector register of accumulators each, the integer little module on x86) with 32
    units per block and, for a layer of `hidden` units, its rule for spans (the longest that leave
    MIN_SPANS parallel tasks: 4 blocks per span for 750 units).

    Spans, Zen 5, half the gate rows exact, caches flushed before every call (scripts/
    bench_gate_kernel.py --cold, 2026-12-02): LSTM-750 377 -> 352 us at one thread, 238 -> 238 at
    two; GRU-750 320 -> 300 and 208 -> 198 (one block per span -> four). Longer spans were faster
    still at one thread (LSTM 332 us with 8) but slower at two (274 us: 3 spans for 2 threads).
    With the weights in the L3 cache (the same script without --cold, 2026-12-02 on Zen 5) four
    blocks per span took 1.06x / 0.95x the time (LSTM, 1 / 2 threads) and 0.92x / 0.97x (GRU).

    Earlier choices, Zen 3 (AVX2), same half-the-rows procedure without --cold, 1 / 2 threads:
    LSTM-750 751 / 307 us with the previous lanes=32 (LLVM reports a 512-bit vector width for
    znver3, which has no AVX-512, so the accumulators spilled), 622 / 270 us with 16 lanes x 4 rows,
    467 / 210 us with these; GRU-750 544 / 201, 440 / 173, 362 / 151 us (docs/RESULTS.md). Since the
    masks are vectorized, float32 vs integer little module: LSTM 336 / 217 vs 326 / 158 us, GRU
    248 / 121 vs 229 / 122 us. With no row exact (GRU, one thread, TVM's time_evaluator): 51 us
    before, 43 us with vectorized masks, 22 us with the integer little module as well.

    Rows per group on AVX-512 (GATHERED_ROWS_AVX512): gathered rows cost more than their bytes
    (half the LSTM-750 gate rows, cold, one thread: 432 us against 66 us with none and 628 with all;
    in runs of 64 consecutive rows instead of one by one, 380 us), so more rows in flight help.
    8 -> 15 rows, same script --cold, 7 rounds, Zen 5, 2026-12-02 15:45: LSTM-750 394 -> 371 us at
    one thread, 296 -> 270 at two; GRU-750 343 -> 297 and 244 -> 226 (12 rows: 328 and 227); with
    the weights in cache no change (168 vs 171 and 95 vs 96 us). AVX2 has 16 registers, so its
    kernels keep 8 rows."""
    little_block = 32
    spans = default_blocks_per_span(hidden, little_block)
    config = dataclasses.replace(default_kernel_config(target), little_block=little_block, blocks_per_span=spans)
    if vector_bits(target) >= 512:
        # 32 vector registers: room for 15 rows' accumulators, 15 gathered rows in flight
        config = dataclasses.replace(config, rows_per_group=GATHERED_ROWS_AVX512)
    return config


def plan_recurrent(
    model: torch.nn.Module,
    imported: ImportedModel,
    sites: list[RecurrentSite],
    ratios: dict[str, float],
    calibration: list,
    validation: list | None,
    little: LittleConfig,
    config: RecurrentConfig,
    target: tvm.target.Target,
    schedules: str | os.PathLike | None = "default",
) -> RecurrentPlan:
    """Fit little modules and choose per-gate thresholds for the sites with a ratio above 0; gate
    kernel knobs from config.kernel, else the tuned schedules (as compile_dual's `schedules`), else
    the defaults."""
    plan = RecurrentPlan()
    dual = [s for s in sites if s.dual_ok and ratios.get(s.key, 0.0) > 0]
    if not dual:
        return plan
    if validation is None:
        (fit_data,) = capture_step_inputs(model, [calibration], dual, imported, [MAX_FIT_ROWS])
        thr_data = fit_data
    else:
        fit_data, thr_data = capture_step_inputs(model, [calibration, validation], dual, imported, [MAX_FIT_ROWS, MAX_THRESHOLD_ROWS])
    for site in tqdm(dual, desc="fitting little modules", unit="layer", disable=None, leave=False):
        fused = config.fused_for(site)
        weights = site_weights(site)
        x, h = fit_data[site.key]
        W, b = weights.little_target(fused)
        module = fit_little_module(W, b, np.concatenate([x, h], axis=1) if fused else h, little)
        if config.kernel is not None:
            kernel, source = config.kernel, "given (RecurrentConfig.kernel)"
        else:
            workload = GateWorkload(site.cell, site.batch, site.hidden, site.input_size, module.rank, fused)
            tuned, source = lookup(workload.shape_key, target, schedules)
            kernel = tuned or default_gate_kernel_config(target, site.hidden)
        tx, th = thr_data[site.key]
        if len(tx) > MAX_THRESHOLD_ROWS:
            keep = np.random.default_rng(1).choice(len(tx), MAX_THRESHOLD_ROWS, replace=False)
            tx, th = tx[keep], th[keep]
        bits = vector_bits(target)
        lo, hi, fractions = gate_thresholds(weights, fused, module, tx, th, ratios[site.key], config.allocation,
                                            kernel.little_compute, bits)
        plan.layers[site.key] = RecurrentLayerPlan(
            name=site.name, key=site.key, cell=site.cell, fused=fused, hidden=site.hidden, input_size=site.input_size,
            batch=site.batch, little=module, lo=lo, hi=hi, target_ratio=ratios[site.key],
            calibration_ratio=float(np.mean(list(fractions.values()))), gate_ratios=fractions, kernel=kernel,
            schedule_source=source, allocation=config.allocation, vector_bits=bits,
        )
    return plan
