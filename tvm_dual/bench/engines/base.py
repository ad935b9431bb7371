"""The engine interface: prepare artifacts once, then load and run them in a fresh process per thread count."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..settings import BenchSettings
from ..workloads import Workload, build_workload, model_fingerprint


class EngineSkipped(Exception):
    """The engine cannot run this workload here (not installed, no tuning database, ...): a note, not a failure."""


@dataclass
class Variant:
    """One configuration of an engine that gets its own timings (a tvm-dual ratio, say)."""

    name: str = ""  # "" when the engine has one configuration
    params: dict[str, Any] = field(default_factory=dict)
    artifact: str | None = None  # file under the engine's artifact folder
    info: dict[str, Any] = field(default_factory=dict)  # facts from preparing it (calibration ratio, ...)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Runner:
    """A loaded engine variant. Only `call` is timed; inputs are converted beforehand by `native`."""

    call: Callable[[Any], Any]
    native: Callable[[tuple[np.ndarray, ...]], Any] = lambda inputs: inputs
    outputs: Callable[[Any], list[np.ndarray]] = lambda result: list(result)
    reset: Callable[[], None] = lambda: None  # before each timed series
    report: Callable[[], dict[str, Any]] = dict  # after each timed series: observed ratio, bytes read, ...

    def predict(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.outputs(self.call(self.native(tuple(inputs))))


@dataclass
class PrepareContext:
    workload: Workload
    settings: BenchSettings
    workdir: Path

    def artifact(self, engine: str, filename: str) -> Path:
        folder = self.workdir / engine
        folder.mkdir(parents=True, exist_ok=True)
        return folder / filename

    def onnx_model(self) -> Path:
        """The workload exported to ONNX once, shared by the ONNX-based engines."""
        path = self.workdir / "model.onnx"
        if not path.exists():
            export_onnx(self.workload, path)
        return path


@dataclass
class LoadContext:
    settings: BenchSettings
    workdir: Path
    prepared: dict[str, Any]
    _workload: Workload | None = None

    def workload(self) -> Workload:
        """The workload built again in this process, checked to have the prepared weights."""
        if self._workload is None:
            import torch

            torch.manual_seed(0)
            workload = build_workload(self.settings.workload, self.settings.workload_params)
            expected = self.prepared["workload"]["fingerprint"]
            if model_fingerprint(workload.model) != expected:
                raise RuntimeError(
                    f"workload {self.settings.workload!r} built different weights in this process than in the "
                    f"preparing one; its factory must be deterministic (seed its random generators)"
                )
            self._workload = workload
        return self._workload

    def artifact(self, engine: str, filename: str) -> Path:
        return self.workdir / engine / filename


class Engine:
    """Subclasses set the class attributes and implement prepare and load."""

    name: ClassVar[str]
    label: ClassVar[str]  # for tables
    modules: ClassVar[tuple[str, ...]] = ()  # Python modules it needs; a missing one skips the engine
    approximate: ClassVar[bool] = False  # its outputs are not meant to equal the exact model's
    install_hint: ClassVar[str] = "pip install -e '.[bench]'"

    def unavailable(self) -> str | None:
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not installed ({self.install_hint})"
        return None

    def prepare(self, context: PrepareContext) -> list[Variant]:
        """Build what load needs (compiled libraries, exported graphs) under context.workdir; runs once."""
        return [Variant()]

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        raise NotImplementedError


def tree_leaves(result: Any) -> list:
    """Leaves of a nested output in PyTorch's pytree order (tuples, lists, dicts)."""
    import torch.utils._pytree as pytree

    return pytree.tree_leaves(result)


def to_numpy_leaves(result: Any) -> list[np.ndarray]:
    out = []
    for leaf in tree_leaves(result):
        if hasattr(leaf, "detach"):
            leaf = leaf.detach().numpy()
        out.append(np.array(leaf, copy=True))
    return out


def export_onnx(workload: Workload, path: Path) -> None:
    """torch.onnx.export with the TorchScript exporter (fast, no onnxscript), falling back to dynamo."""
    import contextlib
    import io
    import warnings

    import torch

    names = [f"input{i}" for i in range(len(workload.example_inputs))]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(workload.model, workload.example_inputs, str(path), dynamo=False, input_names=names)
        except Exception as legacy:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    torch.onnx.export(workload.model, workload.example_inputs, str(path), dynamo=True, input_names=names)
            except Exception as dynamo:
                raise RuntimeError(
                    f"ONNX export failed: TorchScript exporter: {str(legacy).splitlines()[0]}; "
                    f"dynamo exporter: {str(dynamo).splitlines()[0]}"
                ) from dynamo
