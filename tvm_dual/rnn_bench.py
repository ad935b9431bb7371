"""Per-layer timing of a trained PTB recurrent layer: dual (tvm_dual) vs dense TVM vs PyTorch vs
ONNX Runtime, measured side by side, each engine in its own process.

prepare() compiles every variant once (dual layers calibrated on PTB training text, thresholds on
validation text) and writes it to a folder: tvm_dual libraries, an ONNX file, the PyTorch weights and
a sequence of real inputs (the layer's inputs along the test text). measure() then runs rounds of
fresh processes (`python -m tvm_dual.rnn_bench worker ...`) that cycle through the same real
inputs. At one thread one process per round times all engines interleaved in short blocks, so that
they share the machine's load of the moment (this machine is shared and noisy); with more threads
each engine gets its own process. The result of an engine is the median over rounds of its median
time per call. Speed is judged by ratios within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ENGINES_DENSE = ("torch", "onnxruntime", "tvm-dense")


def _variant_name(ratio: float, mode: str, steps: int) -> str:
    return f"tvm-dual-{mode}-{ratio:g}" + (f"-T{steps}" if steps > 1 else "")


def prepare(model: str, ratios: list[float], folder: Path, steps: int = 1, modes: tuple[str, ...] = ("auto",),
            calibration_tokens: int = 20_000, validation_tokens: int = 5_000, input_steps: int = 256) -> dict:
    import torch

    import tvm_dual
    from tvm_dual import ptb

    folder.mkdir(parents=True, exist_ok=True)
    lm, _ = ptb.load_trained(model)
    corpus = ptb.load_corpus()
    layer = ptb.LayerStep(lm)
    example = ptb.step_inputs(lm.config, layer=True)
    if steps > 1:
        example = (torch.zeros(steps, 1, lm.config.hidden), *example[1:])
    chunk = steps if steps > 1 else ptb.SEQUENCE
    calibration = ptb.stream_inputs(lm, corpus.train[:calibration_tokens], chunk=chunk, layer=True)
    validation = ptb.stream_inputs(lm, corpus.valid[:validation_tokens], chunk=chunk, layer=True)
    # timing inputs: the layer's real inputs along the test text
    real = ptb.stream_inputs(lm, corpus.test[: input_steps * steps + steps], chunk=steps, layer=True)[:input_steps]
    np.savez(folder / f"inputs-T{steps}.npz", *[np.concatenate([t.numpy().ravel() for t in item]) for item in real])
    torch.save(layer.state_dict(), folder / "layer.pt")
    manifest = {"model": model, "config": dataclasses.asdict(lm.config), "steps": steps,
                "variants": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = tvm_dual.compile_dual(layer, example, insensitive_ratio=0.0)
        dense.export_library(folder / f"tvm-dense-T{steps}.so")
        manifest["variants"]["tvm-dense" + (f"-T{steps}" if steps > 1 else "")] = {"ratio": 0.0, "path": f"tvm-dense-T{steps}.so"}
        for mode in modes:
            for ratio in ratios:
                mod = tvm_dual.compile_dual(layer, example, calibration=calibration, validation=validation,
                                            insensitive_ratio=ratio, recurrent=tvm_dual.RecurrentConfig(mode=mode))
                for item in real:  # observed ratio and bytes on the timing inputs
                    mod(*item)
                (stats,) = mod.stats()
                name = _variant_name(ratio, mode, steps)
                mod.export_library(folder / f"{name}.so")
                manifest["variants"][name] = {
                    "ratio": ratio, "path": f"{name}.so", "observed_ratio": stats.observed_ratio,
                    "dense_bytes": stats.dense_bytes, "dual_bytes": stats.dual_bytes, "rank": stats.rank,
                    "mode": mod.metadata["layers"][0]["mode"],
                }
    try:
        import onnx  # noqa: F401

        torch.onnx.export(layer, tuple(example), folder / f"layer-T{steps}.onnx", dynamo=False,
                          input_names=[f"in{i}" for i in range(len(example))])
        manifest["onnx"] = f"layer-T{steps}.onnx"
    except Exception as err:  # ONNX export or the package missing: the table says so
        manifest["onnx_error"] = f"{type(err).__name__}: {err}"
    (folder / f"manifest-T{steps}.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _load_inputs(folder: Path, steps: int, hidden: int, cell: str) -> list[list[np.ndarray]]:
    data = np.load(folder / f"inputs-T{steps}.npz")
    shapes = [(steps, 1, hidden)] + [(1, 1, hidden)] * (2 if cell == "lstm" else 1)
    out = []
    for key in data.files:
        flat, parts, offset = data[key], [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            parts.append(np.ascontiguousarray(flat[offset : offset + size].reshape(shape), dtype=np.float32))
            offset += size
        out.append(parts)
    return out


def _time_calls(call, inputs: list, seconds: float, warmup_s: float = 1.0, block: int = 32) -> float:
    """Median seconds per call over blocks of `block` calls, cycling through `inputs`."""
    deadline = time.perf_counter() + warmup_s
    i = 0
    while time.perf_counter() < deadline:
        call(inputs[i % len(inputs)])
        i += 1
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        t0 = time.perf_counter()
        for _ in range(block):
            call(inputs[i % len(inputs)])
            i += 1
        samples.append((time.perf_counter() - t0) / block)
    return float(np.median(samples))


def _engine(folder: Path, manifest: dict, engine: str, threads: int, inputs: list):
    """(call, inputs in that engine's form) for one engine."""
    config = manifest["config"]
    if engine == "torch":
        import torch

        from tvm_dual import ptb

        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = False  # mkldnn_rnn_layer is ~10x slower at one step
        layer = ptb.LayerStep(ptb.WordLM(ptb.LMConfig(**config)))
        layer.load_state_dict(torch.load(folder / "layer.pt"))
        torch_inputs = [[torch.from_numpy(a) for a in item] for item in inputs]

        def call(item):
            with torch.no_grad():
                return layer(*item)

        return call, torch_inputs
    if engine == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(folder / manifest["onnx"]), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return (lambda item: session.run(None, dict(zip(names, item)))), inputs
    import tvm_dual

    mod = tvm_dual.load(folder / manifest["variants"][engine]["path"])
    return (lambda item: mod(*item)), inputs


def worker(folder: Path, engines: list[str], steps: int, threads: int, seconds: float, blocks: int) -> dict[str, float]:
    """Time engines in this (fresh) process. One engine: warm-up, then `seconds` of blocks. Several
    (1 thread only, where no thread pools can fight): `blocks` rounds in which every engine, in a
    shuffled order, is warmed briefly and timed for one block, so that all engines see the same
    machine load; returns median seconds per layer call of each engine."""
    manifest = json.loads((folder / f"manifest-T{steps}.json").read_text())
    config = manifest["config"]
    inputs = _load_inputs(folder, steps, config["hidden"], config["cell"])
    loaded = {e: _engine(folder, manifest, e, threads, inputs) for e in engines}
    if len(engines) == 1:
        call, data = loaded[engines[0]]
        return {engines[0]: _time_calls(call, data, seconds)}
    if threads != 1:
        raise ValueError("interleaved timing of several engines in one process needs threads=1")
    rng = np.random.default_rng(0)
    samples: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(blocks):
        for e in rng.permutation(engines):
            call, data = loaded[e]
            samples[e].append(_time_calls(call, data, seconds / blocks, warmup_s=0.05, block=16))
    return {e: float(np.median(v)) for e, v in samples.items()}


def measure(folder: Path, steps: int, rounds: int, threads: int, seconds: float, interleave: bool = True,
            blocks: int = 40, log=print) -> dict:
    """Rounds of fresh worker processes: one per engine, or (interleave, 1 thread) one per round
    timing all engines interleaved; median over rounds of each engine's median."""
    manifest = json.loads((folder / f"manifest-T{steps}.json").read_text())
    engines = ["torch"] + (["onnxruntime"] if "onnx" in manifest else []) + list(manifest["variants"])
    times: dict[str, list[float]] = {e: [] for e in engines}
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    groups = [engines] if interleave and threads == 1 else [[e] for e in engines]
    for r in range(rounds):
        for group in groups:
            cmd = [sys.executable, "-m", "tvm_dual.rnn_bench", "worker", "--folder", str(folder), "--engines", *group,
                   "--steps", str(steps), "--threads", str(threads), "--seconds", str(seconds * len(group)),
                   "--blocks", str(blocks)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"{group} worker failed: {done.stderr[-2000:]}")
            for engine, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
                times[engine].append(value)
                log(f"round {r + 1}/{rounds} {engine}: {1e6 * value:.1f} us")
    medians = {e: float(np.median(t)) for e, t in times.items()}
    dense = {e: medians[e] for e in medians if not e.startswith("tvm-dual")}
    fastest = min(dense, key=dense.get)
    return {"manifest": manifest, "threads": threads, "rounds": rounds, "seconds_per_engine": seconds,
            "interleaved": len(groups) == 1, "times": times,
            "median_s": medians, "fastest_dense": fastest,
            "speedup_vs_fastest_dense": {e: dense[fastest] / medians[e] for e in medians}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tvm_dual.rnn_bench")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--folder", type=Path, required=True)
    w.add_argument("--engines", nargs="+", required=True)
    w.add_argument("--steps", type=int, default=1)
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--seconds", type=float, default=3.0)
    w.add_argument("--blocks", type=int, default=40)
    args = parser.parse_args(argv)
    print(json.dumps(worker(args.folder, args.engines, args.steps, args.threads, args.seconds, args.blocks)))


if __name__ == "__main__":
    main()
