"""Engines that run the workload exported to ONNX: ONNX Runtime (CPU) and OpenVINO."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Engine, LoadContext, PrepareContext, Runner, Variant


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    label = "ONNX Runtime (CPU)"
    modules = ("onnxruntime", "onnx")

    def prepare(self, context: PrepareContext) -> list[Variant]:
        context.onnx_model()
        return [Variant()]

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(context.workdir / "model.onnx"), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        n_inputs = len(context.prepared["io"]["inputs"])
        if len(names) != n_inputs:
            raise RuntimeError(f"the exported ONNX graph has {len(names)} inputs, the model {n_inputs}")
        return Runner(
            call=lambda feed: session.run(None, feed),
            native=lambda inputs: dict(zip(names, inputs)),
            report=lambda: {"version": ort.__version__},
        )


class OpenVinoEngine(Engine):
    """OpenVINO CPU plugin in its default precision (bf16 where the CPU has AMX/AVX-512 BF16; reported)."""

    name = "openvino"
    label = "OpenVINO (default precision)"
    modules = ("openvino", "onnx")
    precision_hint: str | None = None

    def prepare(self, context: PrepareContext) -> list[Variant]:
        context.onnx_model()
        # The default precision is bf16 on CPUs with AVX-512 BF16 or AMX: then this engine is not
        # exact and must not be the fp32 baseline the speedups are taken against.
        precision = self._compile(context.workdir, threads=1)[1].get_property("INFERENCE_PRECISION_HINT").to_string()
        return [Variant(info={"inference_precision": precision, "approximate": precision != "f32"})]

    def _compile(self, workdir, threads: int):
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if self.precision_hint:
            config["INFERENCE_PRECISION_HINT"] = self.precision_hint
        return core, core.compile_model(str(workdir / "model.onnx"), "CPU", config)

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        core, compiled = self._compile(context.workdir, threads)
        request = compiled.create_infer_request()
        facts = precision_facts(core, compiled)

        def outputs(result) -> list[np.ndarray]:
            return [np.array(v, copy=True) for v in result.to_tuple()]

        return Runner(
            call=lambda inputs: request.infer(list(inputs), share_inputs=True, share_outputs=True),
            outputs=outputs,
            report=lambda: dict(facts),
        )


class OpenVinoF32Engine(OpenVinoEngine):
    name = "openvino-f32"
    label = "OpenVINO fp32"
    precision_hint = "f32"


def precision_facts(core, compiled) -> dict[str, Any]:
    """The precision OpenVINO chose, and what its compute layers actually run in."""
    import openvino as ov

    layers: dict[str, set[str]] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if kind in ("Input", "Output", "Const", "Parameter", "Result", "Reorder"):
            continue
        if "runtimePrecision" in info:
            layers.setdefault(kind, set()).add(info["runtimePrecision"].astype(str))
    return {
        "version": ov.__version__,
        "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        "layer_precisions": {k: sorted(v) for k, v in sorted(layers.items())},
        "cpu_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
    }
