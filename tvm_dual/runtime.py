"""DualModule: a compiled model with the PyTorch model's calling convention, stats and export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.utils._pytree as pytree
import tvm
import tvm_ffi
from tvm import relax
from tvm.support.cc import create_shared

from .frontend import TensorSpec, out_of_range_index
from .huge_pages import constants_on_huge_pages
from .kernel_plan import KernelPlan, NotReplayable, record_kernel_calls
from .target import missing_host_features, resolve_target

METADATA_FUNC = "tvm_dual_metadata"
METADATA_FORMAT = 1
KERNEL_PLAN_SWITCH = "TVM_DUAL_KERNEL_PLAN"  # "0": every call through the Relax VM (kernel_plan.py)


class LibraryError(RuntimeError):
    """A file that is not a loadable tvm_dual library."""


@dataclass
class LayerStats:
    name: str
    act: str
    shape: tuple[int, int]  # (N, K) of W
    rank: int
    bits: int
    target_ratio: float
    calibration_ratio: float
    calls: int
    rows_read: int  # summed over calls
    observed_ratio: float  # insensitive rows / rows over all calls (nan before the first call)
    dense_bytes: int  # bytes of W a dense layer reads per call
    dual_bytes: float  # bytes of W rows plus little module read per call, averaged

    @property
    def bytes_fraction(self) -> float:
        return self.dual_bytes / self.dense_bytes if self.calls else float("nan")


class DualStats(list):
    """Per-layer statistics, a list of LayerStats that prints as a table."""

    def __getitem__(self, key):
        if isinstance(key, str):
            for layer in self:
                if layer.name == key:
                    return layer
            raise KeyError(key)
        return super().__getitem__(key)

    def to_dicts(self) -> list[dict]:
        return [dict(asdict(layer), bytes_fraction=layer.bytes_fraction) for layer in self]

    def __str__(self) -> str:
        header = f"{'layer':<20} {'act':<8} {'N x K':>12} {'rank':>5} {'target':>7} {'calib':>7} {'observed':>9} {'calls':>7} {'W bytes read':>13}"
        lines = [header, "-" * len(header)]
        for s in self:
            observed = "n/a" if s.calls == 0 else f"{s.observed_ratio:.3f}"
            read = "n/a" if s.calls == 0 else f"{100 * s.bytes_fraction:.1f}% of dense"
            lines.append(
                f"{s.name:<20} {s.act:<8} {f'{s.shape[0]}x{s.shape[1]}':>12} {s.rank:>5} {s.target_ratio:>7.3f} "
                f"{s.calibration_ratio:>7.3f} {observed:>9} {s.calls:>7} {read:>13}"
            )
        return "\n".join(lines)


_ALIGNMENT = 64  # TVM's kernels assume 64-byte aligned buffers
_PENDING_COUNTERS = 256  # calls whose counter tensors are kept before they are summed


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % _ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _fast_input(value):
    """A zero-copy view of a contiguous, aligned numpy array or CPU tensor, or None; may raise for
    inputs DLPack cannot export (a tensor that requires grad).

    Alignment and contiguity are checked here rather than by from_dlpack's require_* options: a
    failed requirement raises an FFI error, whose traceback cost 45 us, and an unaligned input
    (a row of an array loaded from a file with a 16-byte header) took 95 us (numpy) to 175 us
    (torch) longer per call than an aligned one, against about 50 us for the whole call of a
    784-512-256-10 MLP."""
    if isinstance(value, np.ndarray):
        if not value.flags.c_contiguous:
            return None
        view = tvm_ffi.from_dlpack(value)
    elif isinstance(value, torch.Tensor) and value.is_cpu and value.is_contiguous():
        view = tvm_ffi.from_dlpack(value)
    else:
        return None
    # the view's address rather than the array's: ndarray.ctypes alone costs about 1.5 us a call
    return view if view.data_ptr() % _ALIGNMENT == 0 else None


class _InputStage:
    """Checks one input and copies it into a staging buffer owned by the module (used under the call
    lock), which is the kernel plan's input buffer; for the VM, an input that is contiguous and
    aligned is handed over without a copy."""

    def __init__(self, spec: TensorSpec, index: int) -> None:
        self.spec, self.index = spec, index
        self.shape = tuple(spec.shape)
        self.np_dtype = np.dtype(spec.dtype)
        self.torch_dtype = getattr(torch, spec.dtype)
        self.staging = _aligned_empty(self.shape, self.np_dtype)
        self.staging[...] = 0  # the kernel plan is recorded on it: garbage token ids would index out of bounds
        self.staging_view = tvm_ffi.from_dlpack(self.staging)
        self.index_bound = spec.index_bound

    def _mismatch(self, shape, dtype) -> ValueError:
        return ValueError(
            f"input {self.index} ({self.spec.name!r}): expected shape {self.shape} dtype {self.spec.dtype}, "
            f"got shape {tuple(shape)} dtype {str(dtype).replace('torch.', '')}"
        )

    def _checked(self, value):
        """The value as a numpy array or a detached CPU tensor of the expected shape and dtype."""
        if isinstance(value, np.ndarray):
            if value.shape != self.shape or value.dtype != self.np_dtype:
                raise self._mismatch(value.shape, value.dtype)
            return value
        if isinstance(value, torch.Tensor):
            if tuple(value.shape) != self.shape or value.dtype != self.torch_dtype:
                raise self._mismatch(value.shape, value.dtype)
            if value.device.type != "cpu":
                raise ValueError(f"input {self.index} ({self.spec.name!r}) is on {value.device}; tvm_dual runs on the CPU")
            return value.detach()
        if isinstance(value, tvm.runtime.Tensor):
            return self._checked(np.from_dlpack(value))
        raise TypeError(
            f"input {self.index} ({self.spec.name!r}) must be a torch.Tensor or numpy array, got {type(value).__name__}"
        )

    def check_indices(self, array: np.ndarray) -> None:
        """For an input that indexes a table (an embedding; frontend.take_index_bounds): IndexError,
        as PyTorch raises, for ids outside [0, rows), which TVM's take would read out of bounds."""
        bad = None if self.index_bound is None else out_of_range_index(array, self.index_bound)
        if bad is not None:
            raise IndexError(
                f"input {self.index} ({self.spec.name!r}): index {bad} is out of range for a table of "
                f"{self.index_bound} rows"
            )

    def _copy_in(self, value) -> None:
        # item assignment rather than np.copyto, which takes a longer path through numpy (see
        # _call_plan for what these changes measured); the shape was checked, so nothing broadcasts
        self.staging[...] = value if isinstance(value, np.ndarray) else value.numpy()

    def load(self, value) -> None:
        """Check the value and copy it into the staging buffer (the kernel plan's input)."""
        self._copy_in(self._checked(value))
        self.check_indices(self.staging)

    def __call__(self, value):
        """The checked value as a VM argument: a view of it where possible, else the staging buffer."""
        value = self._checked(value)
        if self.index_bound is not None:
            self.check_indices(value if isinstance(value, np.ndarray) else value.numpy())
        view = _fast_input(value)
        if view is not None:
            return view
        self._copy_in(value)
        return self.staging_view


# The FFI functions behind tvm_ffi.Array's Python __getitem__/__len__, called directly: the Python
# wrappers cost about 2 us per access, a large share of a batch-1 call.
_array_get = tvm_ffi.get_global_func("ffi.ArrayGetItem")
_array_size = tvm_ffi.get_global_func("ffi.ArraySize")


def _leaf_paths(result, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Index path of every tensor (or None the model returns) in a VM result (nested arrays), in pytree leaf order."""
    if result is None or isinstance(result, tvm.runtime.Tensor):
        return [prefix]
    return [path for i in range(_array_size(result)) for path in _leaf_paths(_array_get(result, i), (*prefix, i))]


def _tree_builder(spec: pytree.TreeSpec):
    """leaves -> the output structure. Nested plain tuples and lists become one generated expression,
    e.g. `lambda leaves: (leaves[0], (leaves[1], leaves[2]))`: pytree's generic unflatten, and even
    nested closures over the children, walk Python objects that are cold in a streaming loop (about
    15 us for (output, (h, c)) of an LSTM step with the caches flushed, Zen 5). Other containers
    (dicts, named tuples) go through pytree."""
    if _plain_tree(spec):
        source, _ = _tree_source(spec, 0)
        return eval(f"lambda leaves: {source}", {"list": list})  # noqa: S307 - generated from the spec's shape only
    return lambda leaves: pytree.tree_unflatten(leaves, spec)


def _plain_tree(spec: pytree.TreeSpec) -> bool:
    return spec.is_leaf() or (spec.type in (tuple, list) and all(_plain_tree(c) for c in spec.children()))


def _tree_source(spec: pytree.TreeSpec, start: int) -> tuple[str, int]:
    """Python source of the expression building `spec` from leaves[start:], and the next leaf index."""
    if spec.is_leaf():
        return f"leaves[{start}]", start + 1
    parts = []
    for child in spec.children():
        part, start = _tree_source(child, start)
        parts.append(part)
    if spec.type is list:
        return f"[{', '.join(parts)}]", start
    return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})", start


def _direct_kernel_run(kernels: list, samples: dict[str, list[float]]) -> Callable[[bool], None]:
    """run(timed): the recorded kernel calls back to back, each timed alone into `samples` when timed."""

    def run(timed: bool) -> None:
        for func, symbol, kernel_args in kernels:
            start = time.perf_counter()
            func(*kernel_args)
            if timed:
                samples.setdefault(symbol, []).append(time.perf_counter() - start)

    return run


def _instrumented_vm_run(vm, args: list, samples: dict[str, list[float]]) -> Callable[[bool], None]:
    """run(timed): main in `vm`, its kernels timed into `samples` by the VM's instrument callback
    when timed (each time then includes the callback's overhead, its arguments' conversion too)."""
    timing, started = [False], {}

    def instrument(_func, symbol, before, _ret, *_args):
        now = time.perf_counter()
        if before:
            started[symbol] = now
        elif timing[0] and not symbol.startswith("vm.builtin"):
            samples.setdefault(symbol, []).append(now - started[symbol])
        return 0

    vm.set_instrument(instrument)
    main = vm["main"]

    def run(timed: bool) -> None:
        timing[0] = timed
        main(*args)

    return run


class DualModule:
    """Call it like the PyTorch model: torch tensors in give torch tensors out, numpy gives numpy.

    A call runs the model's kernel plan (kernel_plan.py: the kernels back to back on buffers
    recorded from one VM call) where the program allows it, else the Relax VirtualMachine;
    `executor` says which. Calls are serialized by a lock: the plan's buffers are shared, and a
    VirtualMachine is not safe to enter from two threads.
    """

    def __init__(self, executable, metadata: dict, library_bytes: bytes | None = None) -> None:
        self._executable = executable
        self.metadata = metadata
        self._library_bytes = library_bytes
        self._inputs = [TensorSpec.from_dict(d) for d in metadata["inputs"]]
        self._out_spec = pytree.treespec_loads(metadata["out_spec"])
        self._layers = {layer["name"]: layer for layer in metadata["layers"]}
        self._counter_layers: list[str] = metadata.get("counter_layers", [])
        self._stages = [_InputStage(spec, i) for i, spec in enumerate(self._inputs)]
        self._index_inputs = any(spec.index_bound is not None for spec in self._inputs)
        self._build_outputs = _tree_builder(self._out_spec)
        self._output_paths: list[tuple[int, ...]] | None = None  # the VM result's layout, from the first call
        self._counter_slots = np.array([list(self._layers).index(n) for n in self._counter_layers], dtype=np.int64)
        self._lock = threading.Lock()
        self._vm = None
        self._main = None
        self._plan: KernelPlan | None = None
        self._plan_outputs: list[np.ndarray] = []  # views of the plan's output buffers, model outputs only
        self._plan_counters: np.ndarray | None = None
        self._counter_ring: np.ndarray | None = None  # (_PENDING_COUNTERS, sites): one call's counters per row
        self.executor = "not started"  # "kernel plan", or "vm (why not a plan)", after the first call
        self.huge_page_bytes = 0  # bytes of constants on 2 MiB pages, once the VM exists (huge_pages.py)
        self.reset_stats()

    # ---- calling -----------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self.metadata["target"]

    @property
    def input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def _virtual_machine(self) -> relax.VirtualMachine:
        if self._vm is None:
            missing = missing_host_features(resolve_target(self.metadata["target_config"]))
            if missing:
                raise RuntimeError(
                    f"this module was compiled for {self.target!r}, which needs {', '.join(sorted(missing))}, "
                    f"and this CPU lacks it: running it here would crash (an illegal instruction). Export it "
                    f"and run it on such a machine, or compile with target=None for this host."
                )
            self._vm = relax.VirtualMachine(self._executable, tvm.cpu())
            probe = [np.zeros(spec.shape, dtype=spec.dtype) for spec in self._inputs]
            self.huge_page_bytes = constants_on_huge_pages(self._executable, probe)
            self._record_plan()
        return self._vm

    def _record_plan(self) -> None:
        if os.environ.get(KERNEL_PLAN_SWITCH, "1") == "0":
            self.executor = f"vm ({KERNEL_PLAN_SWITCH}=0)"
            return
        try:
            plan = KernelPlan(self._executable, [stage.staging_view for stage in self._stages])
        except NotReplayable as err:
            self.executor = f"vm ({err})"
            return
        views = [None if t is None else np.from_dlpack(t) for t in plan.outputs]
        if self._counter_layers:  # main returns (outputs, counters)
            self._plan_counters = views.pop()
            self._counter_ring = np.zeros((_PENDING_COUNTERS, *self._plan_counters.shape), self._plan_counters.dtype)
        self._plan, self._plan_outputs = plan, views
        self.executor = "kernel plan"

    def __call__(self, *inputs):
        if len(inputs) != len(self._stages):
            raise ValueError(f"expected {len(self._stages)} inputs ({', '.join(s.name for s in self._inputs)}), got {len(inputs)}")
        # type() rather than isinstance(): torch.Tensor's isinstance check runs Python code
        as_torch = False
        for value in inputs:
            if type(value) is not np.ndarray and isinstance(value, torch.Tensor):
                as_torch = True
                break
        with self._lock:
            if self._main is None:
                self._main = self._virtual_machine()["main"]
            if self._plan is not None:
                leaves = self._call_plan(inputs)
                convert = torch.from_numpy if as_torch else None
            else:
                leaves = self._call_vm(inputs)
                convert = torch.from_dlpack if as_torch else np.from_dlpack
        if convert is not None:
            leaves = [None if leaf is None else convert(leaf) for leaf in leaves]
        return self._build_outputs(leaves)

    def _call_vm(self, inputs) -> list:
        result = self._run(inputs)
        outputs = result
        if self._counter_layers:  # the VM returns (outputs, counters)
            outputs = _array_get(result, 0)
            self._add_counters(_array_get(result, 1))
        if self._output_paths is None:
            self._output_paths = _leaf_paths(outputs)
        # Outputs are fresh VM allocations: zero-copy views keep them alive, nothing reuses them.
        leaves = []
        for path in self._output_paths:
            node = outputs
            for i in path:
                node = _array_get(node, i)
            leaves.append(node)
        return leaves

    def _call_plan(self, inputs) -> list[np.ndarray]:
        for stage, value in zip(self._stages, inputs):
            # numpy dtypes of native byte order are singletons: `is` is the cold-cache-cheap check
            if type(value) is np.ndarray and value.dtype is stage.np_dtype and value.shape == stage.shape:
                stage.staging[...] = value
                if stage.index_bound is not None:
                    stage.check_indices(stage.staging)
            else:
                stage.load(value)
        self._plan.run()
        if self._plan_counters is not None:
            # one row of a preallocated ring rather than a copy appended to a list. With the input
            # fast path above and the generated output builder (_tree_builder): the PTB LSTM-750
            # step's whole call, caches flushed before each, 1 thread, paired with the previous
            # version in one process, took 0.965x its time at half the rows and 0.964x dense (~35 us;
            # Zen 5, 2026-12-03 07:50)
            used = self._ring_used
            self._counter_ring[used] = self._plan_counters
            self._ring_used = used + 1
            if used + 1 == _PENDING_COUNTERS:
                self._fold_counters()
        # copies: the next call rewrites the plan's buffers
        return [None if view is None else view.copy() for view in self._plan_outputs]

    def _run(self, inputs):
        """The VM on the inputs, without a Python-level check where possible.

        Every Python operation per call costs microseconds hot and tens of microseconds when a
        streaming loop has evicted the interpreter's data from the caches, so contiguous, aligned
        numpy arrays and CPU tensors go straight to the VM, which checks shapes and dtypes itself.
        Anything else, or a call the VM rejects, goes through the input stages: they copy what
        must be copied and turn a mismatch into a ValueError that names expected and actual.
        """
        if self._index_inputs:  # checked through their stages
            return self._main(*[stage(value) for stage, value in zip(self._stages, inputs)])
        try:
            args = [_fast_input(value) for value in inputs]
        except (ValueError, TypeError, RuntimeError, BufferError):
            args = None
        if args is not None and None not in args:
            try:
                return self._main(*args)
            except Exception:
                for stage, value in zip(self._stages, inputs):
                    stage(value)  # raises the ValueError naming the mismatch, if that was the cause
                raise
        return self._main(*[stage(value) for stage, value in zip(self._stages, inputs)])

    def profile(
        self,
        *inputs,
        rotate: Sequence[Sequence] = (),
        repeat: int = 200,
        warmup_s: float = 0.3,
        flush: Callable[[], object] | None = None,
    ) -> dict[str, float]:
        """Median seconds per call of each compiled kernel, by kernel symbol.

        The kernels of one call are recorded once (kernel_plan.record_kernel_calls) and then called
        directly, back to back, each timed alone. (Timing them inside the VM through its instrument
        callback, as this did before, charged each kernel the conversion of all its arguments to
        Python objects for the callback: the more arguments, the more, so a dual kernel with its
        twelve arguments was charged more than the four-argument GEMV it was compared with; the
        demo's head GEMV read 2.7 us that way, 1.1 us called directly.) A program the kernels cannot be replayed for (data
        work between them: kernel_plan.NotReplayable) is timed inside the VM as before.

        `rotate`: input tuples (each like `inputs`) that successive runs take in turn, instead of
        the one tuple `inputs`. A dual kernel takes as long as the rows its input selects, and one
        input's selection can be far from the average that stats() reports: at ratio 0.5, in one run, the
        demo's first test image read 79% of fc1's rows, the test set 53% on average. Each tuple is
        copied into the recorded input buffers before its run, outside the timed region.
        `flush` (e.g. reading a buffer larger than the caches) runs before every call of the
        model, for cold-cache kernel times. Stats are not updated.
        """
        if bool(inputs) == bool(rotate):
            raise TypeError("profile takes the model's inputs or rotate=[input tuples], not both or neither")
        tuples = [tuple(t) for t in rotate] if rotate else [inputs]
        for t in tuples:
            if len(t) != len(self._inputs):
                raise ValueError(f"expected {len(self._inputs)} inputs ({', '.join(s.name for s in self._inputs)}), "
                                 f"got a tuple of {len(t)}")
        stages = [_InputStage(spec, i) for i, spec in enumerate(self._inputs)]
        for t in tuples:  # every tuple checked before anything is timed
            for stage, value in zip(stages, t):
                stage._checked(value)
        turn = [0]

        def load_next() -> None:
            for stage, value in zip(stages, tuples[turn[0] % len(tuples)]):
                stage.load(value)
            turn[0] += 1

        load_next()
        args = [stage.staging_view for stage in stages]
        self._virtual_machine()  # the host check
        samples: dict[str, list[float]] = {}
        try:
            kernels, _, vm = record_kernel_calls(self._executable, args, allow_views=True)  # vm owns their buffers
            run = _direct_kernel_run(kernels, samples)
        except NotReplayable:
            vm = relax.VirtualMachine(self._executable, tvm.cpu())
            run = _instrumented_vm_run(vm, args, samples)
        deadline = time.perf_counter() + warmup_s
        while time.perf_counter() < deadline:
            load_next()
            run(False)
        turn[0] = 0  # timed runs start at the first tuple: `repeat` a multiple of len(rotate) times each equally
        for _ in range(repeat):
            load_next()
            if flush is not None:
                flush()
            run(True)
        return {symbol: float(np.median(times)) for symbol, times in samples.items()}

    # ---- stats -------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self._calls_total = 0  # model calls since the last reset, counters folded in
        self._rows_total = np.zeros(len(self._counter_layers), dtype=np.int64)  # per kernel call site
        self._pending_counters: list = []  # VM: counter tensors of calls not yet folded into the totals
        self._ring_used = 0  # kernel plan: rows of _counter_ring not yet folded into the totals

    def _add_counters(self, counters) -> None:
        """One call's row counters (a tensor or array nothing will overwrite)."""
        self._pending_counters.append(counters)
        if len(self._pending_counters) >= _PENDING_COUNTERS:
            self._fold_counters()

    def _fold_counters(self) -> None:
        # Summed in batches: a numpy update per call costs tens of microseconds in a streaming loop
        # whose other work evicts numpy's code and data from the caches.
        if self._pending_counters:
            self._rows_total += np.sum([np.from_dlpack(t) for t in self._pending_counters], axis=0, dtype=np.int64)
            self._calls_total += len(self._pending_counters)
            self._pending_counters.clear()
        if self._ring_used:
            self._rows_total += self._counter_ring[: self._ring_used].sum(axis=0, dtype=np.int64)
            self._calls_total += self._ring_used
            self._ring_used = 0

    def stats(self) -> DualStats:
        """Per dual layer: target vs observed insensitive ratio, and bytes read vs dense."""
        with self._lock:
            self._fold_counters()
            rows_total, calls_total = self._rows_total.copy(), self._calls_total
        out = DualStats()
        names = list(self._layers)
        sites = np.bincount(self._counter_slots, minlength=len(names))  # kernel calls per model call
        rows_by_layer = np.bincount(self._counter_slots, weights=rows_total, minlength=len(names))
        for i, (name, layer) in enumerate(self._layers.items()):
            n, k = layer["n"], layer["k"]
            calls, rows = int(sites[i]) * calls_total, int(rows_by_layer[i])
            observed = 1.0 - rows / (calls * n) if calls else float("nan")
            dual_bytes = (rows * k * 4 / calls + layer["little_bytes"]) if calls else float("nan")
            out.append(
                LayerStats(
                    name=name,
                    act=layer["act"],
                    shape=(n, k),
                    rank=layer["rank"],
                    bits=layer["bits"],
                    target_ratio=layer["target_ratio"],
                    calibration_ratio=layer["calibration_ratio"],
                    calls=calls,
                    rows_read=rows,
                    observed_ratio=observed,
                    dense_bytes=n * k * 4,
                    dual_bytes=dual_bytes,
                )
            )
        return out

    # ---- export ------------------------------------------------------------------------------
    def export_library(self, path: str | os.PathLike) -> None:
        """Write a shared library that tvm_dual.load turns back into this module (metadata included).

        Always a shared library, whatever the file's suffix (TVM would write a tar archive for
        ".tar", which nothing loads as a module); written next to `path` and renamed onto it, so
        a failed export leaves an existing file as it was."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path!r} is a directory; export to a file in it, e.g. {os.path.join(path, 'model.so')!r}")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"cannot write {path!r}: the directory {directory!r} does not exist")
        partial = f"{path}.{os.getpid()}.partial"
        try:
            if self._library_bytes is not None:  # loaded from a file: write the same library back
                with open(partial, "wb") as f:
                    f.write(self._library_bytes)
            else:
                try:
                    self._executable.export_library(partial, fcompile=create_shared)
                except RuntimeError as err:  # the linker's message, whose first line is only "Compilation error:"
                    detail = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
                    raise OSError(f"cannot write {path!r}: {detail[:500]}") from None
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)


def attach_metadata(mod: tvm.IRModule, metadata: dict) -> tvm.IRModule:
    """Add a Relax function returning the metadata as JSON, so that it travels inside the library."""
    builder = relax.BlockBuilder(mod)
    with builder.function(METADATA_FUNC, []):
        builder.emit_func_output(tvm.ir.StringImm(json.dumps(dict(metadata, format=METADATA_FORMAT), sort_keys=True)))
    return builder.get()


def _check_loadable(path: str, private: str) -> None:
    """dlopen the file in a child process first: a truncated or damaged library can kill the loading
    process (SIGBUS, SIGSEGV) instead of raising, and that must not be the caller's process."""
    probe = "import ctypes, os, sys; ctypes.CDLL(sys.argv[1], mode=os.RTLD_LAZY)"
    try:
        done = subprocess.run([sys.executable, "-c", probe, private], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise LibraryError(f"{path!r}: loading it did not finish in 120 s") from None
    if done.returncode < 0:
        raise LibraryError(
            f"{path!r} is not a loadable shared library: loading it crashed the dynamic loader "
            f"({signal.Signals(-done.returncode).name}); the file is truncated or damaged"
        )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["unknown error"]
        raise LibraryError(f"{path!r} is not a loadable shared library: {lines[-1][:300]}")


def load(path: str | os.PathLike) -> DualModule:
    """Load a library written by DualModule.export_library."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tvm_dual library at {path!r}")
    with open(path, "rb") as f:
        data = f.read()
    # dlopen returns the already-loaded library for a path it has seen, even if the file was
    # rewritten since; loading a private copy makes load() see what is on disk now.
    with tempfile.TemporaryDirectory(prefix="tvm_dual_") as tmp:
        private = os.path.join(tmp, "lib.so")
        with open(private, "wb") as f:
            f.write(data)
        _check_loadable(path, private)
        try:
            module = tvm.runtime.load_module(private)
        except Exception as err:
            raise LibraryError(f"{path!r} is not a loadable shared library: {str(err).splitlines()[-1][:300]}") from None
    try:
        vm = relax.VirtualMachine(module, tvm.cpu())
        metadata = json.loads(str(vm[METADATA_FUNC]()))
    except Exception as err:
        raise LibraryError(f"{path!r} is not a tvm_dual library (no readable metadata: {str(err).splitlines()[-1][:200]})") from None
    if metadata.get("format") != METADATA_FORMAT:
        raise LibraryError(f"{path!r} has metadata format {metadata.get('format')!r}; this tvm_dual reads {METADATA_FORMAT}")
    return DualModule(module, metadata, library_bytes=data)
