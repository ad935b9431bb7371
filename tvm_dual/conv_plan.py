"""Planning of dual convolution layers: calibration capture, little modules, thresholds.

A convolution is a matmul over im2col patches, y[pixel] = W (CO, KH*KW*CI) patch[pixel] + b, so a
layer's little module is fitted with little.fit_little_module on patches sampled from the
calibration inputs (OHWI order, as the kernel reads them). The threshold of a layer is the
quantile of its little values (shortcut added) that makes `ratio` of the outputs insensitive,
chosen first on the exact model's activations, then once more on the activations the layer sees
when the layers before it are dual (as for linear layers in api._plan_layers).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from . import calibrate
from .compile_warning import DualCompileWarning
from .conv_sites import ConvGeometry, ConvSite, find_conv_sites
from .frontend import ImportedModel, import_model, normalize_inputs
from .kernels.dual_conv2d import DualConvConfig, default_dual_conv_config
from .little import LittleConfig, LittleModule, choose_rank, fit_little_module
from .plan import DualPlan, check_ratio, thresholds_for_ratio
from .transform.dense_conv_rewrite import DenseConvRewrite
from .transform.dense_gemv_rewrite import DenseGemvRewrite
from .transform.dual_module_rewrite import DualModuleRewrite
from .transform.insert_conv_calibration_probes import InsertConvCalibrationProbes

MAX_PATCHES = 50_000  # patches sampled per layer for the fit and the threshold
# Little modules of convolutions when compile_dual gets no LittleConfig: the output-aware projection
# (PCA keeps the input directions of largest variance, which need not be the few directions a
# convolution's small number of output channels depends on).
CONV_LITTLE = LittleConfig(projection="rrr", max_cost_fraction=0.15)


@dataclass
class ConvLayerPlan:
    name: str
    key: str
    geometry: ConvGeometry
    has_residual: bool
    little: LittleModule  # over patches: P (R, KH*KW*CI), WL (CO, R)
    lo: np.ndarray  # (CO,) float32: sensitive iff lo <= little value <= hi (or not finite)
    hi: np.ndarray
    target_ratio: float
    calibration_ratio: float = float("nan")
    kernel: DualConvConfig = field(default_factory=DualConvConfig)
    schedule_source: str = "default"

    @property
    def threshold(self) -> float:
        return float(self.lo[0])

    @property
    def little_macs(self) -> int:
        """Multiply-adds of the little module per call: projection and little weights, per output pixel."""
        g = self.geometry
        return g.batch * g.out_h * g.out_w * self.little.rank * (g.patch + g.c_out)

    def metadata(self) -> dict:
        """The entry DualModule.stats() reads. For a convolution, n is the number of outputs per
        call and k the multiply-adds per output, so the kernel's counter (outputs computed exactly)
        gives the observed ratio as for linear layers; "little_bytes" is 4 bytes per little
        multiply-add, so that the stats' bytes fraction reads as the fraction of multiply-adds."""
        g = self.geometry
        return {
            "name": self.name,
            "kind": "conv2d",
            "act": "relu",
            "n": g.outputs,
            "k": g.patch,
            "geometry": {k: getattr(g, k) for k in g.__dataclass_fields__},
            "has_residual": self.has_residual,
            "rank": self.little.rank,
            "bits": self.little.bits,
            "projection": self.little.projection,
            "fit_r2": self.little.fit_r2,
            "target_ratio": self.target_ratio,
            "calibration_ratio": self.calibration_ratio,
            "threshold": self.threshold,
            "dense_macs": g.macs,
            "little_macs": self.little_macs,
            "little_bytes": 4 * self.little_macs,
            "kernel": self.kernel.to_dict(),
            "schedule_source": self.schedule_source,
        }


@dataclass
class ConvPlan:
    layers: dict[str, ConvLayerPlan] = field(default_factory=dict)  # by key

    def add(self, layer: ConvLayerPlan) -> None:
        self.layers[layer.key] = layer

    def get(self, key: str) -> ConvLayerPlan | None:
        return self.layers.get(key)

    def __len__(self) -> int:
        return len(self.layers)


# ---- names -------------------------------------------------------------------------------------
def conv_layer_names(model: torch.nn.Module, sites: list[ConvSite]) -> dict[str, str]:
    """site key -> the PyTorch module path of its Conv2d. Batch-norm folding scales each output
    channel of the weight, so a site matches the Conv2d whose weight is proportional to it per
    output channel. Unmatched sites are named conv<i>."""
    convs = [(path, m.weight.detach().numpy().transpose(0, 2, 3, 1)) for path, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    names: dict[str, str] = {}
    used: set[str] = set()
    for i, site in enumerate(sites):
        name = f"conv{i}"
        folded = site.weight.reshape(site.weight.shape[0], -1).astype(np.float64)
        for path, w in convs:
            if path in used or w.shape != site.weight.shape:
                continue
            orig = w.reshape(w.shape[0], -1).astype(np.float64)
            scale = (folded * orig).sum(1) / np.maximum((orig * orig).sum(1), 1e-30)
            if np.allclose(folded, scale[:, None] * orig, rtol=1e-4, atol=1e-6 * np.abs(folded).max()):
                name = path
                break
        used.add(name)
        names[site.key] = name
    return names


def split_ratios(insensitive_ratio, conv_names: Iterable[str]):
    """(ratio spec for linear layers, ratio spec for conv layers): a mapping is split by name."""
    if not isinstance(insensitive_ratio, Mapping):
        return insensitive_ratio, insensitive_ratio
    conv_names = set(conv_names)
    linear = {k: v for k, v in insensitive_ratio.items() if k not in conv_names}
    conv = {k: v for k, v in insensitive_ratio.items() if k in conv_names}
    return linear, conv


def conv_ratios(spec, sites: list[ConvSite], names: dict[str, str]) -> dict[str, float]:
    """site key -> validated ratio for dual-capable conv sites."""

    if isinstance(spec, Mapping):
        for site in sites:
            if names[site.key] in spec and not site.dual_ok and float(spec[names[site.key]]) > 0:
                raise ValueError(f"layer {names[site.key]!r} cannot be compiled as a dual module: {site.reason}")
        return {s.key: check_ratio(spec.get(names[s.key], 0.0), names[s.key]) for s in sites if s.dual_ok}
    ratio = check_ratio(spec, "the model")
    return {s.key: ratio for s in sites if s.dual_ok}


# ---- calibration -------------------------------------------------------------------------------
@dataclass
class CapturedMaps:
    x: np.ndarray  # (N, H, W, CI) layer inputs
    residual: np.ndarray | None  # (N, OH, OW, CO) shortcut added before the ReLU


def capture_conv_inputs(
    model: torch.nn.Module,
    calibration: list,
    layers: list[tuple[str, ConvGeometry, bool]],
    imported: ImportedModel | None = None,
    plan: DualPlan | None = None,
    conv_plan: ConvPlan | None = None,
) -> dict[str, CapturedMaps]:
    """Input maps (and shortcuts) of the (key, geometry, has_residual) layers over the calibration
    batches, running the compiled model with the dual layers of the plans, if given."""
    from .transform.dual_conv_rewrite import DualConvRewrite  # it imports this module

    keys = [key for key, _, _ in layers]
    passes = [InsertConvCalibrationProbes(keys)]
    if conv_plan is not None:
        passes.append(DualConvRewrite(conv_plan))
    if plan is not None:
        passes.append(DualModuleRewrite(plan))
    sink = calibrate.run_probed(model, calibration, imported, [*passes, DenseGemvRewrite(), DenseConvRewrite()], 2 * len(keys))
    captured = {}
    for i, (key, g, has_residual) in enumerate(layers):
        if not sink[2 * i]:
            raise RuntimeError(f"calibration never reached convolution layer {key}; is it used by the model's forward?")
        x = np.concatenate(sink[2 * i]).reshape(-1, g.height, g.width, g.c_in)
        residual = np.concatenate(sink[2 * i + 1]).reshape(-1, g.out_h, g.out_w, g.c_out) if has_residual else None
        captured[key] = CapturedMaps(x=x, residual=residual)
    return captured


def sample_patches(maps: CapturedMaps, g: ConvGeometry, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to `rows` random output positions: their patches (rows, KH*KW*CI) in OHWI order and the
    shortcut values there (rows, CO) or None."""
    n = maps.x.shape[0]
    total = n * g.out_h * g.out_w
    rng = np.random.default_rng(seed)
    pick = rng.choice(total, rows, replace=False) if total > rows else np.arange(total)
    img, rest = np.divmod(pick, g.out_h * g.out_w)
    oh, ow = np.divmod(rest, g.out_w)
    xp = np.pad(maps.x, ((0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right), (0, 0)))
    hh = oh[:, None, None] * g.stride_h + np.arange(g.kernel_h)[None, :, None]
    ww = ow[:, None, None] * g.stride_w + np.arange(g.kernel_w)[None, None, :]
    patches = xp[img[:, None, None], hh, ww].reshape(len(pick), -1)
    residual = None if maps.residual is None else maps.residual[img, oh, ow]
    return patches, residual


def _little_values(layer: ConvLayerPlan, patches: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
    values = layer.little.predict(patches)
    return values if residual is None else values + residual


def plan_conv_layers(
    model: torch.nn.Module,
    imported: ImportedModel,
    sites: list[ConvSite],
    names: dict[str, str],
    ratios: dict[str, float],
    calibration: list,
    little: LittleConfig,
    kernel: DualConvConfig | None = None,
) -> ConvPlan:
    plan = ConvPlan()
    dual_sites = [s for s in sites if ratios.get(s.key, 0.0) > 0]
    if not dual_sites:
        return plan
    layers = [(s.key, s.geometry, s.has_residual) for s in dual_sites]
    captured = capture_conv_inputs(model, calibration, layers, imported=imported)
    samples = {}
    for site in tqdm(dual_sites, desc="fitting little modules", unit="layer", disable=None, leave=False):
        g = site.geometry
        patches, residual = sample_patches(captured[site.key], g, MAX_PATCHES)
        samples[site.key] = (patches, residual)
        if len(patches) < 1000:
            warnings.warn(
                f"convolution {names[site.key]!r} is calibrated on only {len(patches)} output pixels; pass more "
                f"calibration data for a useful little module",
                DualCompileWarning,
                stacklevel=3,
            )
        W = site.weight.reshape(g.c_out, -1)
        rank = choose_rank(little, g.c_out, g.patch)
        plan.add(
            ConvLayerPlan(
                name=names[site.key],
                key=site.key,
                geometry=g,
                has_residual=site.has_residual,
                little=fit_little_module(W, site.bias, patches, little, rank=rank),
                lo=np.zeros(g.c_out, np.float32),
                hi=np.full(g.c_out, np.inf, np.float32),
                target_ratio=ratios[site.key],
                kernel=kernel or default_dual_conv_config(g),
            )
        )
    for refine in range(2 if len(dual_sites) > 1 else 1):
        if refine:
            captured = capture_conv_inputs(model, calibration, layers, imported=imported, conv_plan=plan)
            samples = {s.key: sample_patches(captured[s.key], s.geometry, MAX_PATCHES) for s in dual_sites}
        for site in dual_sites:
            layer = plan.get(site.key)
            lo, _, observed = thresholds_for_ratio(_little_values(layer, *samples[site.key]), "relu", layer.target_ratio)
            layer.lo[:], layer.calibration_ratio = lo, observed
    return plan


def natural_sparsity(model: torch.nn.Module, example_inputs, calibration: list) -> dict[str, float]:
    """Per dual-capable convolution layer (by name): the fraction of its exact pre-activations
    (shortcut included) that are negative on the calibration data, i.e. the outputs its ReLU zeroes
    anyway. A ratio above it zeroes positive outputs too; per-layer ratios of `sparsity + margin`
    spend the insensitive budget where it is cheap in accuracy."""
    imported = import_model(model, normalize_inputs(example_inputs))
    sites = [s for s in find_conv_sites(imported.mod["main"]) if s.dual_ok]
    names = conv_layer_names(model, sites)
    captured = capture_conv_inputs(model, calibration, [(s.key, s.geometry, s.has_residual) for s in sites], imported=imported)
    out = {}
    for site in sites:
        patches, residual = sample_patches(captured[site.key], site.geometry, MAX_PATCHES)
        z = patches @ site.weight.reshape(site.geometry.c_out, -1).T + (0 if site.bias is None else site.bias)
        if residual is not None:
            z = z + residual
        out[names[site.key]] = float(np.mean(z < 0))
    return out
