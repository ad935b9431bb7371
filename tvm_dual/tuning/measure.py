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
from dataclasses import dataclass, replace

import numpy as np
import tvm

from ..kernels.dual_dense import DualKernelConfig
from ..target import vector_bits
from .workload import DualWorkload, check_outputs, workload_from_dict


@dataclass(frozen=True)
class MeasureOptions:
    """How a candidate is timed, one call per repeat. cold (the default): the caches are evicted
    before every timed call, so the selected rows come from memory as in a stream of real inputs;
    warm: they stay in the last-level cache. rotate (the default; method "read-cold" or
    "rotate-warm"): each call gets the next of ROTATED_INPUTS inputs, and cold means a read of
    FLUSH_BYTES first. Without rotate, the older methods on one input: "cold", TVM's
    cache_flush_cpu_non_first_arg (as AutoTVM's enable_cpu_cache_flush), and "warm", repeats of
    back-to-back calls, which on the LSTM-750 gate kernel ranked knobs differently from rotating
    inputs (scripts/bench_gate_kernel.py)."""

    repeat: int = 15  # timed repeats; the median is the result
    min_repeat_ms: int = 20  # warm mode without rotate: each repeat runs the kernel enough times to last this long
    warmup_ms: float = 100.0  # time-based warm-up (the second core needs ~0.1 s to wake)
    timeout_s: float = 60.0
    cold: bool = True
    # Every timed call gets the next of ROTATED_INPUTS inputs, so another selection of rows, and a
    # cold call follows a read of FLUSH_BYTES, as the benchmarks time a stream of real inputs
    # (rotate_inputs, TVM's f_preproc hook). With one input and TVM's clflush of the arguments,
    # which leaves the TLB and the page-table caches warm, tuned configurations that passed
    # every paired check lost to the defaults in the benchmarks: on Zen 4 the LSTM-750 gate
    # kernel's 0.94x cold / 0.99x warm winner took 1.34x / 1.17x the defaults' time with rotating
    # inputs and a 128 MiB read (scripts/bench_gate_kernel.py, 1 thread; schedules/README.md).
    # Only a local measurer rotates: an RPC server lacks the hook.
    rotate: bool = True

    @property
    def method(self) -> str:
        """What a record's time means (records.METHODS); times of different methods are not compared."""
        if self.rotate:
            return "read-cold" if self.cold else "rotate-warm"
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
        """The library of one candidate, built once (confirmation and verification measure it again;
        a failed build is remembered and raises again)."""
        key = (workload, config)
        if key not in self._built:
            try:
                func = workload.primfunc(config, self.vector_bits).with_attr("global_symbol", "dual")
                lib = tvm.compile(tvm.IRModule({"dual": func}), target=self.target)
                path = os.path.join(self._dir.name, f"candidate{len(self._built)}.so")
                lib.export_library(path)
                self._built[key] = path
            except Exception as err:
                self._built[key] = err
        built = self._built[key]
        if isinstance(built, Exception):
            raise built
        return built


PAIR_CALLS = 5  # timed calls per side of a verification pair; a side's time is their median


@dataclass
class PairedMeasurement:
    """Two configurations timed alternately in one process: per pair, (time of configs[0], time of
    configs[1]), the two taken milliseconds apart, so the machine's drift cancels in their ratio."""

    configs: tuple[DualKernelConfig, DualKernelConfig]
    times_s: list[tuple[float, float]]
    error: str | None = None

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in self.times_s]


def _load_checked(session, library: str, w, c: DualKernelConfig, bits: int):
    """(module, kernel arguments, None), or (None, None, what is wrong) if the kernel disagrees with the reference."""
    session.upload(library)
    lib = session.load_module(os.path.basename(library))
    arrays, expected = w.arguments(c, bits)
    args = _tensors(arrays, session.cpu(0))
    lib["dual"](*args)
    y, rows = w.result([a.numpy() for a in args[-w.outputs :]])
    problem = check_outputs(y, rows, expected, w.rows)
    return (None, None, f"wrong result: {problem}") if problem else (lib, args, None)


def _tensors(arrays: list[np.ndarray], dev) -> list:
    return [tvm.runtime.tensor(a, dev) for a in arrays]


ROTATED_INPUTS = 16
FLUSH_BYTES = 128 << 20  # four times the largest L3 of the CPUs measured here (32 MiB)
ROTATE_HOOK = "tvm_dual.tuning.rotate_inputs"
_rotation: dict = {}  # this worker's inputs to rotate, the next one's index, and the flush (if cold)


def _rotate_inputs(*args) -> None:
    """time_evaluator's f_preproc, before every timed call and outside the timed region: the
    caches evicted by reading FLUSH_BYTES (cold), then the next input copied into the kernel's
    input arguments (written last: a real call's input was just produced, so it is in cache)."""
    if _rotation["flush"] is not None:
        _rotation["flush"]()
    variant = _rotation["inputs"][_rotation["next"] % len(_rotation["inputs"])]
    _rotation["next"] += 1
    for tensor, array in zip(args, variant):
        tensor.copyfrom(array)


def _parallel_flush():
    """A read of FLUSH_BYTES by the bandwidth probe's parallel sum, one task per TVM thread. Read
    so rather than by numpy, it leaves TVM's worker threads awake, as a kernel inside a model
    finds them right after the previous parallel kernel: after a numpy read's milliseconds they
    sleep, and a parallel kernel timed alone pays their wake-up. At two threads the demo MLP's
    512 -> 256 layer's defaults took 58-65 us timed after a numpy read (26 us at one thread), and a
    serial configuration that took 1.3-1.7x their time at one thread looked 0.55x theirs; it was
    no faster in the compiled model (Zen 4, scratch, 2026-12-04)."""
    from ..bench.bandwidth import LANES, stream_sum_kernel
    from ..huge_pages import collapse

    tasks = max(1, int(os.environ.get("TVM_NUM_THREADS") or os.cpu_count() or 1))
    args = (tvm.runtime.tensor(np.ones(FLUSH_BYTES // 4, np.float32)), tvm.runtime.tensor(np.zeros((tasks, LANES), np.float32)))
    # on 2 MiB pages, as numpy's buffer of the benchmarks' flush is: read over 4 KiB pages it also
    # evicted the page-table entries of the kernel's small buffers, which then cost it a page walk
    # each (a 200 x 96 layer's defaults: 17 us cold at one thread, 6 us under clflush)
    collapse(args[0].data_ptr(), FLUSH_BYTES)
    kernel = stream_sum_kernel()
    return lambda: kernel(*args)


def _prepare_rotation(w, config: DualKernelConfig, bits: int, options: MeasureOptions) -> None:
    if not options.rotate:
        return
    if "flusher" not in _rotation:
        tvm.register_global_func(ROTATE_HOOK, _rotate_inputs, override=True)
        _rotation["flusher"] = _parallel_flush()
    _rotation.update(inputs=w.input_variants(config, bits, ROTATED_INPUTS), next=0,
                     flush=_rotation["flusher"] if options.cold else None)


def _evaluator(lib, dev, options: MeasureOptions, repeat: int):
    if options.rotate:
        timing = {"f_preproc": ROTATE_HOOK}
    elif options.cold:
        timing = {"f_preproc": "cache_flush_cpu_non_first_arg"}
    else:
        timing = {"min_repeat_ms": int(options.min_repeat_ms)}
    return lib.time_evaluator("dual", dev, number=1, repeat=repeat, **timing)


def _warm_up(calls, options: MeasureOptions) -> None:
    deadline = time.perf_counter() + options.warmup_ms / 1000
    while time.perf_counter() < deadline:
        for call in calls:
            call()


def measure_in_session(
    session, library: str, kernel: str, workload: dict, config: dict, bits: int, options: MeasureOptions
) -> tuple[float | None, str | None]:
    """Upload, check against the reference, time. Runs in a worker process or against RPC."""
    from .space import config_from_dict  # imported here: this runs inside fresh worker processes

    w = workload_from_dict(workload, kernel)
    config = config_from_dict(config)
    lib, args, problem = _load_checked(session, library, w, config, bits)
    if problem:
        return None, problem
    _prepare_rotation(w, config, bits, options)
    _warm_up([lambda: lib["dual"](*args)], options)
    return float(np.median(_evaluator(lib, session.cpu(0), options, options.repeat)(*args).results)), None


def measure_pair_in_session(
    session, libraries: tuple[str, str], kernel: str, workload: dict, configs: tuple[dict, dict], bits: int,
    options: MeasureOptions, pairs: int,
) -> tuple[list[tuple[float, float]], str | None]:
    """Both candidates loaded into one process and checked, then `pairs` alternations, each side
    PAIR_CALLS timed calls (cold: each after a cache flush). Which side goes first swaps every
    pair, and every other two pairs use a second set of arguments allocated in the other order:
    where a side's weights land in memory moved one comparison by 9% between processes (the
    4096 x 1024 dense kernel's projection, serial / parallel, Zen 3)."""
    from .space import config_from_dict

    w = workload_from_dict(workload, kernel)
    dev = session.cpu(0)
    sides = [config_from_dict(c) for c in configs]
    libs, first = [], []
    for library, config in zip(libraries, sides):
        lib, args, problem = _load_checked(session, library, w, config, bits)
        if problem:
            return [], f"{config}: {problem}"
        libs.append(lib)
        first.append(args)
    second = [None, None]
    for j in (1, 0):  # the same arguments, allocated the other way round
        second[j] = _tensors(w.arguments(sides[j], bits)[0], dev)
    argument_sets = (first, second)
    _prepare_rotation(w, sides[0], bits, options)  # inputs do not depend on the knobs
    evaluators = [_evaluator(lib, dev, options, PAIR_CALLS) for lib in libs]
    _warm_up([lambda j=j, a=a: libs[j]["dual"](*a[j]) for a in argument_sets for j in (0, 1)], options)
    times = []
    for i in range(pairs):
        arguments = argument_sets[(i // 2) % 2]
        pair = [0.0, 0.0]
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):
            pair[j] = float(np.median(evaluators[j](*arguments[j]).results))
        times.append((pair[0], pair[1]))
    return times, None


def _in_local_session(function, *args):
    """Runs `function(session, *args)` against a LocalSession, inside a PopenPool worker."""
    logging.getLogger("RPCServer").setLevel(logging.WARNING)  # one INFO line per candidate otherwise
    return function(tvm.rpc.LocalSession(), *args)


def _failure(kind: str, err: Exception) -> str:
    return f"{kind} failed: {type(err).__name__}: {str(err).splitlines()[-1][:200] if str(err) else ''}"


class _Measurer:
    """What both measurers share: building, and running a function against a session of theirs
    (`_in_session`, which raises if the worker or the connection fails)."""

    target: tvm.target.Target
    options: MeasureOptions
    builder: Builder

    def _in_session(self, function, *args):
        raise NotImplementedError

    def _build(self, workload: DualWorkload, config: DualKernelConfig) -> tuple[str | None, str | None]:
        try:
            return self.builder.build(workload, config), None
        except Exception as err:  # a knob combination TVM or LLVM rejects
            return None, f"build failed: {str(err).splitlines()[-1][:200]}"

    def _measure_one(self, workload: DualWorkload, config: DualKernelConfig) -> Measurement:
        library, error = self._build(workload, config)
        if library is None:
            return Measurement(config, None, error)
        try:
            time_s, error = self._in_session(
                measure_in_session, library, workload.kernel, workload.to_dict(), config.to_dict(), self.builder.vector_bits,
                self.options,
            )
        except Exception as err:  # worker crashed or timed out, or the connection failed
            time_s, error = None, _failure(self.failure_kind, err)
        return Measurement(config, time_s, error)

    def measure_pair(
        self, workload: DualWorkload, a: DualKernelConfig, b: DualKernelConfig, pairs: int,
        options: MeasureOptions | None = None,
    ) -> PairedMeasurement:
        """a and b timed alternately in one process (measure_pair_in_session); `options` replaces
        the measurer's own for this measurement (the tuner's warm guard)."""
        if a == b:  # one library loaded twice into a worker crashed it (dlsym, segfault)
            return PairedMeasurement((a, b), [], f"{a} paired with itself: nothing to compare")
        built = [self._build(workload, c) for c in (a, b)]
        errors = [error for _, error in built if error]
        if errors:
            return PairedMeasurement((a, b), [], errors[0])
        try:
            times, error = self._in_session(
                measure_pair_in_session, tuple(library for library, _ in built), workload.kernel, workload.to_dict(),
                (a.to_dict(), b.to_dict()), self.builder.vector_bits, options or self.options, pairs,
            )
        except Exception as err:
            times, error = [], _failure(self.failure_kind, err)
        return PairedMeasurement((a, b), [tuple(t) for t in times], error)


class LocalMeasurer(_Measurer):
    """Measures in a separate process (TVM's PopenPoolExecutor), restarted after a crash.

    threads: TVM_NUM_THREADS of the worker; default the caller's TVM_NUM_THREADS, else every core.
    It must be explicit: without TVM_NUM_THREADS, TVM runs one thread on this 2-core VM
    (runtime.NumThreads() == 1), and a tuning run once measured at one thread unawares. The
    measurer's name, which every record keeps, says the thread count."""

    failure_kind = "run"

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

    def _in_session(self, function, *args):
        return self.pool.submit(_in_local_session, function, *args).result()

    def measure(self, workload: DualWorkload, configs: list[DualKernelConfig]) -> list[Measurement]:
        return [self._measure_one(workload, config) for config in configs]


class RPCMeasurer(_Measurer):
    """Measures on machines registered with a TVM RPC tracker, `parallel` sessions at a time."""

    failure_kind = "rpc"

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
        self.options = replace(options, rotate=False)  # the server has no rotate_inputs hook
        self.builder = Builder(target)
        self.tracker = (tracker_host, tracker_port)
        self.key = key
        self.parallel = max(1, parallel)
        self.name = f"rpc:{key}@{tracker_host}:{tracker_port}"

    def _in_session(self, function, *args):
        tracker = tvm.rpc.connect_tracker(*self.tracker)
        return function(tracker.request(self.key, session_timeout=int(self.options.timeout_s)), *args)

    def measure(self, workload: DualWorkload, configs: list[DualKernelConfig]) -> list[Measurement]:
        for config in configs:  # built here, one after another: the builder is not thread-safe
            self._build(workload, config)
        with ThreadPoolExecutor(self.parallel) as pool:
            return list(pool.map(lambda config: self._measure_one(workload, config), configs))
