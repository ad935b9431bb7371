"""Calibration: run the exact model on calibration data and capture the inputs of candidate layers."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import tvm
import tvm_ffi
from tqdm.auto import tqdm
from tvm import relax

from .frontend import ImportedModel, ModelImportError, import_model, normalize_inputs
from .target import host_target
from .plan import DualPlan
from .transform.dense_conv_rewrite import DenseConvRewrite
from .transform.dense_gemv_rewrite import DenseGemvRewrite
from .transform.dual_module_rewrite import DualModuleRewrite
from .transform.insert_calibration_probes import PROBE_FUNC, InsertCalibrationProbes
from .transform.pipeline import compile_module

# Rows kept per layer; beyond this the least-squares fit and the quantiles do not change visibly.
MAX_ROWS_PER_LAYER = 50_000

_active = threading.local()


def probe(tensor, slot):
    array = tensor.numpy()  # a copy
    sink = getattr(_active, "sink", None)
    if sink is not None:
        sink[int(slot)].append(array.reshape(-1, array.shape[-1]))
    # A fresh tensor, not `tensor`: the probe is a pure call, so the VM's memory planner treats
    # its argument's buffer as free once the probe has run and may hand it to the consuming
    # matmul's output while that matmul still reads the returned value (it did, in the PTB step).
    return tvm.runtime.tensor(array, tensor.device)


tvm_ffi.register_global_func(PROBE_FUNC, probe, override=True)


def _signature(batch: Sequence[torch.Tensor]) -> tuple:
    return tuple((tuple(t.shape), t.dtype) for t in batch)


def run_probed(
    model: torch.nn.Module,
    batches: Iterable,
    imported: ImportedModel | None,
    passes: list[tvm.transform.Pass],
    slots: int,
    desc: str = "calibrating",
    compiled: dict | None = None,
) -> list[list[np.ndarray]]:
    """Run the model, rewritten by `passes` (which insert probes calling PROBE_FUNC), over the
    batches on the host; returns what each probe slot recorded. A batch of a shape other than
    `imported`'s is handled by importing the model again at that shape (once per shape). Pass the
    same `compiled` dict to calls with the same passes to reuse their compiled models."""
    sink: list[list[np.ndarray]] = [[] for _ in range(slots)]
    vms: dict[tuple, relax.VirtualMachine] = {} if compiled is None else compiled
    own = _signature_of(imported) if imported is not None else None
    _active.sink = sink
    try:
        for batch in tqdm(batches, desc=desc, unit="batch", disable=None, leave=False):
            batch = normalize_inputs(batch)
            sig = _signature(batch)
            if sig not in vms:
                try:
                    source = imported if sig == own else import_model(model, batch)
                except ModelImportError as err:
                    raise ModelImportError(
                        f"the model cannot run on calibration or validation data of shapes {[tuple(t.shape) for t in batch]}: {err}"
                    ) from None
                mod = tvm.transform.Sequential(passes)(source.mod)
                vms[sig] = relax.VirtualMachine(compile_module(mod, host_target()), tvm.cpu())
            vms[sig]["main"](*[tvm.runtime.tensor(np.ascontiguousarray(t.numpy())) for t in batch])
    finally:
        _active.sink = None
    return sink


def capture_layer_inputs(
    model: torch.nn.Module,
    calibration: Iterable,
    keys: list[str],
    imported: ImportedModel | None = None,
    plan: DualPlan | None = None,
    max_rows: int = MAX_ROWS_PER_LAYER,
) -> dict[str, np.ndarray]:
    """Inputs x (rows, K) of each layer in `keys`, over all calibration batches.

    With a plan, the layers in it run as dual modules, so that each layer sees the inputs it will
    see in the compiled model (a dual layer's approximation shifts what the next layer receives).
    Batches of a new shape are handled by importing the model again at that shape. The probed
    model runs on the host, whatever the final target.
    """
    batches = [normalize_inputs(b) for b in calibration]
    if not batches:
        raise ValueError("calibration data is empty")
    passes = [InsertCalibrationProbes(keys)] + ([DualModuleRewrite(plan)] if plan is not None else [])
    sink = run_probed(model, batches, imported, [*passes, DenseGemvRewrite(), DenseConvRewrite()], len(keys))
    captured = {}
    for key, parts in zip(keys, sink):
        if not parts:
            raise RuntimeError(f"calibration never reached layer {key}; is it used by the model's forward?")
        rows = np.concatenate(parts, axis=0)
        if len(rows) > max_rows:
            rows = rows[np.random.default_rng(0).choice(len(rows), max_rows, replace=False)]
        captured[key] = rows
    return captured


def _signature_of(imported: ImportedModel) -> tuple:
    return tuple((tuple(s.shape), getattr(torch, s.dtype)) for s in imported.inputs)
