"""Process-isolated batch-1 timing of the CNN workload on several engines.

Each measurement runs in its own process (python -m tvm_dual.cnn_bench ENGINE ARTIFACT THREADS), so
that no engine's thread pool (PyTorch's OpenMP workers keep spinning after a call) slows another
one, and reports the median over timed calls after a time-based warm-up. Engines:

    tvm       a tvm_dual library (.so) written by DualModule.export_library (dense: ratio 0)
    torch     PyTorch eager, the state dict of the ResNet-20
    ort       ONNX Runtime on the model exported to ONNX
    openvino  OpenVINO on the same ONNX file, fp32 (INFERENCE_PRECISION_HINT=f32; it defaults to
              bf16 on CPUs with AMX), latency hint

The parent side (measure) writes the artifacts once and returns {engine label: median seconds}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

WARMUP_S = 0.5
CALLS = 400


def _predictor(engine: str, artifact: str, threads: int):
    if engine == "tvm":
        from . import load

        module = load(artifact)
        return lambda x: module(x)
    if engine == "torch":
        import torch

        from .cnn_models import load_resnet

        torch.set_num_threads(threads)
        model = load_resnet(artifact)

        def run(x):
            with torch.no_grad():
                return model(torch.from_numpy(x))

        return run
    if engine == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if engine == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            artifact,
            "CPU",
            {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY"},
        )
        request = compiled.create_infer_request()
        return lambda x: request.infer([x])
    raise ValueError(f"unknown engine {engine!r}")


def time_engine(engine: str, artifact: str, threads: int, inputs: list[np.ndarray]) -> dict:
    predict = _predictor(engine, artifact, threads)
    deadline = time.perf_counter() + WARMUP_S
    i = 0
    while time.perf_counter() < deadline:
        predict(inputs[i % len(inputs)])
        i += 1
    samples = []
    for i in range(CALLS):
        start = time.perf_counter()
        predict(inputs[i % len(inputs)])
        samples.append(time.perf_counter() - start)
    return {"median_s": float(np.median(samples)), "p10_s": float(np.percentile(samples, 10)), "calls": CALLS}


def export_onnx(model, example, path: str) -> str:
    import torch

    with torch.no_grad():
        torch.onnx.export(model, example, path, input_names=["x"], output_names=["logits"], dynamo=False)
    return path


def run_isolated(engine: str, artifact: str, threads: int, inputs_path: str) -> dict:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    done = subprocess.run(
        [sys.executable, "-m", "tvm_dual.cnn_bench", engine, artifact, str(threads), inputs_path],
        capture_output=True, text=True, env=env, timeout=600,
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    engine, artifact, threads, inputs_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    inputs = list(np.load(inputs_path))
    print(json.dumps(time_engine(engine, artifact, threads, [np.ascontiguousarray(x) for x in inputs])))


if __name__ == "__main__":
    main()
