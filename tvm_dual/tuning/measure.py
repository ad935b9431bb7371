"""Building and measuring dual-kernel candidates, in an isolated local process or over TVM RPC.

Both paths run the same function against an RPC session: a LocalSession inside a PopenPool worker
(a crash or hang kills the worker, not the tuner), or a session from TVM's RPC tracker (a fleet of
x86 machines measuring in parallel). Every candidate is run once and checked against the numpy
reference before it is timed; a wrong or crashing candidate gets an error record and never wins.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tvm

from ..kernels.dual_dense import DualKernelConfig
from ..target import vector_bits
from .workload import DualWorkload, check_outputs, workload_from_dict


@dataclass(frozen=True)
class MeasureOptions:
    """How a candidate is timed. cold (the default): every timed call starts with the kernel's
    arguments other than the input flushed from the caches (TVM's cache_flush_cpu_non_first_arg,
    as AutoTVM's enable_cpu_cache_flush), so the selected rows come from memory as in a stream of
    real inputs; one call per repeat. Otherwise repeats of back-to-back calls on one input, whose
    selected rows stay in the last-level cache: on the LSTM-750 gate kernel that ranked knobs
    differently from rotating inputs (scripts/bench_gate_kernel.py), which is why cold is the default."""

    repeat: int = 15  # timed repeats; the median is the result
    min_repeat_ms: int = 20  # warm mode: each repeat runs the kernel enough times to last this long
    warmup_ms: float = 100.0  # time-based warm-up (the second core needs ~0.1 s to wake)
    timeout_s: float = 60.0
    cold: bool = True

    @property
    def method(self) -> str:
        """What a record's time means; times of different methods are not compared."""
        return "cold" if self.cold else "warm"


@dataclass
class Measurement:
    config: DualKernelConfig
    time_s: float | None
    error: str | None = None


class Builder:
    """Compiles candidates to shared libraries in a private temporary directory."""

    def __init__(self, target: tvm.target.Target) -> None:
        self.target = target
        self.vector_bits = vector_bits(target)
        self._dir = tempfile.TemporaryDirectory(prefix="tvm_dual_tune_")
        self._built: dict = {}

    def build(self, workload: DualWorkload, config: DualKernelConfig) -> str:
        """The library of one candidate (built once: confirmation rounds measure it again)."""
        if (workload, config) in self._built:
            return self._built[(workload, config)]
        func = workload.primfunc(config, self.vector_bits).with_attr("global_symbol", "dual")
        lib = tvm.compile(tvm.IRModule({"dual": func}), target=self.target)
        path = os.path.join(self._dir.name, f"candidate{len(self._built)}.so")
        lib.export_library(path)
        self._built[(workload, config)] = path
        return path


def measure_in_session(
    session, library: str, kernel: str, workload: dict, config: dict, bits: int, options: MeasureOptions
) -> tuple[float | None, str | None]:
    """Upload, check against the reference, time. Runs in a worker process or against RPC."""
    from .space import config_from_dict  # imported here: this runs inside fresh worker processes

    w, c = workload_from_dict(workload, kernel), config_from_dict(config)
    session.upload(library)
    lib = session.load_module(os.path.basename(library))
    dev = session.cpu(0)
    arrays, expected = w.arguments(c, bits)
    args = [tvm.runtime.tensor(a, dev) for a in arrays]
    func = lib["dual"]
    func(*args)
    y, rows = w.result([a.numpy() for a in args[-w.outputs :]])
    problem = check_outputs(y, rows, expected, w.rows)
    if problem:
        return None, f"wrong result: {problem}"
    deadline = time.perf_counter() + options.warmup_ms / 1000
    while time.perf_counter() < deadline:
        func(*args)
    timing = {"f_preproc": "cache_flush_cpu_non_first_arg"} if options.cold else {"min_repeat_ms": int(options.min_repeat_ms)}
    evaluator = lib.time_evaluator("dual", dev, number=1, repeat=options.repeat, **timing)
    return float(np.median(evaluator(*args).results)), None


def _measure_locally(library, kernel, workload, config, bits, options):
    logging.getLogger("RPCServer").setLevel(logging.WARNING)  # one INFO line per candidate otherwise
    return measure_in_session(tvm.rpc.LocalSession(), library, kernel, workload, config, bits, options)


class LocalMeasurer:
    """Measures in a separate process (TVM's PopenPoolExecutor), restarted after a crash.

    threads: TVM_NUM_THREADS of the worker; default the caller's TVM_NUM_THREADS, else every core.
    It must be explicit: without TVM_NUM_THREADS, TVM runs one thread on this 2-core VM
    (runtime.NumThreads() == 1), and a tuning run once measured at one thread unawares. The
    measurer's name, which every record keeps, says the thread count."""

    def __init__(self, target: tvm.target.Target, options: MeasureOptions = MeasureOptions(), threads: int | None = None):
        from tvm.support.popen_pool import PopenPoolExecutor

        self.target = target
        self.options = options
        self.builder = Builder(target)
        saved = os.environ.get("TVM_NUM_THREADS")
        self.threads = threads or int(saved or os.cpu_count() or 1)
        self.name = f"local:{self.threads}t"
        os.environ["TVM_NUM_THREADS"] = str(self.threads)  # inherited by the worker
        try:
            self.pool = PopenPoolExecutor(max_workers=1, timeout=options.timeout_s)
        finally:
            if saved is None:
                os.environ.pop("TVM_NUM_THREADS", None)
            else:
                os.environ["TVM_NUM_THREADS"] = saved

    def measure(self, workload: DualWorkload, configs: list[DualKernelConfig]) -> list[Measurement]:
        out = []
        for config in configs:
            try:
                library = self.builder.build(workload, config)
            except Exception as err:  # a knob combination TVM or LLVM rejects
                out.append(Measurement(config, None, f"build failed: {str(err).splitlines()[-1][:200]}"))
                continue
            future = self.pool.submit(
                _measure_locally, library, workload.kernel, workload.to_dict(), config.to_dict(), self.builder.vector_bits,
                self.options,
            )
            try:
                time_s, error = future.result()
            except Exception as err:  # worker crashed or timed out
                time_s, error = None, f"run failed: {type(err).__name__}: {str(err).splitlines()[-1][:200] if str(err) else ''}"
            out.append(Measurement(config, time_s, error))
        return out


class RPCMeasurer:
    """Measures on machines registered with a TVM RPC tracker, `parallel` sessions at a time."""

    def __init__(
        self,
        target: tvm.target.Target,
        tracker_host: str,
        tracker_port: int,
        key: str,
        parallel: int = 1,
        options: MeasureOptions = MeasureOptions(),
    ) -> None:
        self.target = target
        self.options = options
        self.builder = Builder(target)
        self.tracker = (tracker_host, tracker_port)
        self.key = key
        self.parallel = max(1, parallel)
        self.name = f"rpc:{key}@{tracker_host}:{tracker_port}"

    def _one(self, workload: DualWorkload, config: DualKernelConfig, library: str) -> Measurement:
        try:
            tracker = tvm.rpc.connect_tracker(*self.tracker)
            session = tracker.request(self.key, session_timeout=int(self.options.timeout_s))
            time_s, error = measure_in_session(
                session, library, workload.kernel, workload.to_dict(), config.to_dict(), self.builder.vector_bits,
                self.options,
            )
        except Exception as err:
            time_s, error = None, f"rpc failed: {type(err).__name__}: {str(err).splitlines()[-1][:200] if str(err) else ''}"
        return Measurement(config, time_s, error)

    def measure(self, workload: DualWorkload, configs: list[DualKernelConfig]) -> list[Measurement]:
        built = []
        for config in configs:
            try:
                built.append((config, self.builder.build(workload, config), None))
            except Exception as err:
                built.append((config, None, f"build failed: {str(err).splitlines()[-1][:200]}"))
        with ThreadPoolExecutor(self.parallel) as pool:
            futures = [
                pool.submit(self._one, workload, config, library) if library else None for config, library, _ in built
            ]
            return [
                future.result() if future is not None else Measurement(config, None, error)
                for future, (config, _, error) in zip(futures, built)
            ]
