"""Benchmark suite: tvm-dual against the engines users would pick, side by side, with the physical limit.

    tvm-dual bench                                   # Linear 1024->4096 + tanh, every engine, 1 and 2 threads
    tvm-dual bench --smoke                           # a tiny layer, every output, under a minute
    tvm-dual bench --workload linear --param n=6000 --param k=1500
    tvm-dual bench --model mypkg.models:make_model   # any PyTorch model from an import path
    tvm-dual bench --docs                            # the runs behind docs/BENCHMARKS.md (make benchmarks)
    tvm-dual bench --render docs/benchmarks/linear.json --doc docs/BENCHMARKS.md

A run (runner.py) prepares once in a worker process (the workload, PyTorch reference outputs, every
engine's compiled artifacts), then runs rounds of fresh worker processes, one per engine and thread
count, with the thread variables set before anything is imported (worker.py). Each measures hot and
cold cache (timing.py) and checks its outputs against PyTorch. Streaming read bandwidth is measured
in the same rounds (bandwidth.py) and gives each kernel's limit: bytes it must touch / bandwidth.
Results: one JSON per run (a record per measurement, plus the machine, versions and git revision;
machine.py), a markdown report and PNG plots (report.py).

Workloads (workloads.py): a factory registered with @register_workload(name) returns a Workload:
model, example inputs (batch 1), calibration input tuples, timing inputs (numpy), and optionally a
numpy implementation and a quality metric. The workloads module docstring shows how to add one (an
LSTM or GRU step, a PTB language-model step, a CNN); put it in its own module here and import it below.

Engines (engines/): an Engine subclass has `prepare(context) -> [Variant]` (runs once, builds
artifacts under the run's work folder) and `load(context, variant, threads) -> Runner` (runs in the
measuring process; only Runner.call is timed). An engine whose Python modules are missing is skipped
with a note; one that raises EngineSkipped in prepare (no tuning database, say) too. Registered in
engines/__init__.py: numpy, torch, onnxruntime, openvino-f32, openvino, tvm-untuned, tvm-ms,
tvm-dense, tvm-dual.
"""

from . import workloads, workloads_trained  # noqa: F401  (register the built-in workloads)
from .report import render_document, render_run, summarize, write_outputs
from .runner import BenchError, run_benchmark
from .settings import BenchSettings, smoke_settings
from .timing import TimingPlan
from .workloads import WORKLOADS, Workload, WorkloadError, register_workload

# The runs behind docs/BENCHMARKS.md, in document order: (name, workload, parameters, setting
# overrides); each writes docs/benchmarks/<name>.json.
DOCS_RUNS: list[tuple[str, str, dict, dict]] = [
    ("linear", "linear", {}, {"ratios": [0.25, 0.5, 0.75, 0.9]}),
    ("ptb_lstm-750", "ptb_step", {"model": "lstm-750"}, {"ratios": [0.1, 0.3, 0.5, 0.7, 0.9]}),
    ("ptb_gru-750", "ptb_step", {"model": "gru-750"}, {"ratios": [0.1, 0.3, 0.5, 0.7, 0.9]}),
    ("ptb_lstm-1500", "ptb_step", {"model": "lstm-1500"}, {"ratios": [0.5]}),
    ("ptb_gru-1500", "ptb_step", {"model": "gru-1500"}, {"ratios": [0.5]}),
    ("resnet20_fmnist", "resnet20_fmnist", {}, {"ratios": [0.3, 0.5, 0.7]}),
]

__all__ = [
    "DOCS_RUNS",
    "BenchError",
    "BenchSettings",
    "TimingPlan",
    "WORKLOADS",
    "Workload",
    "WorkloadError",
    "register_workload",
    "render_document",
    "render_run",
    "run_benchmark",
    "smoke_settings",
    "summarize",
    "write_outputs",
]
