"""Engine registry, in table order. Add an engine: subclass engines.base.Engine, register it here."""

from __future__ import annotations

from .base import Engine, EngineSkipped, LoadContext, PrepareContext, Runner, Variant
from .onnx import OnnxRuntimeEngine, OpenVinoEngine, OpenVinoF32Engine
from .reference import NumpyEngine, TorchEngine
from .tvm import (
    TvmDenseEngine,
    TvmDenseKernelEngine,
    TvmDualDefaultKnobsEngine,
    TvmDualEngine,
    TvmDualKernelEngine,
    TvmMetaScheduleEngine,
    TvmUntunedEngine,
)

ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        NumpyEngine(),
        TorchEngine(),
        OnnxRuntimeEngine(),
        OpenVinoF32Engine(),
        OpenVinoEngine(),
        TvmUntunedEngine(),
        TvmMetaScheduleEngine(),
        TvmDenseEngine(),
        TvmDualEngine(),
        TvmDualDefaultKnobsEngine(),
        TvmDenseKernelEngine(),
        TvmDualKernelEngine(),
    )
}


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    return ENGINES[name]


__all__ = ["ENGINES", "Engine", "EngineSkipped", "LoadContext", "PrepareContext", "Runner", "Variant", "get_engine"]
