"""DualModule: a compiled model with the PyTorch model's calling convention, stats and export."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.utils._pytree as pytree
import tvm
import tvm_ffi
from tvm import relax

from .frontend import TensorSpec
from .target import missing_host_features, resolve_target

METADATA_FUNC = "tvm_dual_metadata"
METADATA_FORMAT = 1


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


def _aligned_copy(array: np.ndarray) -> np.ndarray:
    raw = np.empty(array.nbytes + _ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % _ALIGNMENT
    out = raw[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
    np.copyto(out, array)
    return out


def _to_tvm(value, spec: TensorSpec, index: int):
    """A zero-copy TVM view of an input (copied only when misaligned), after checking it."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.device.type != "cpu":
            raise ValueError(f"input {index} ({spec.name!r}) is on {value.device}; tvm_dual runs on the CPU")
        shape, dtype = tuple(value.shape), str(value.dtype).replace("torch.", "")
    elif isinstance(value, np.ndarray):
        shape, dtype = tuple(value.shape), str(value.dtype)
    elif isinstance(value, tvm.runtime.Tensor):
        return _to_tvm(np.from_dlpack(value), spec, index)
    else:
        raise TypeError(f"input {index} ({spec.name!r}) must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if shape != tuple(spec.shape) or dtype != spec.dtype:
        raise ValueError(
            f"input {index} ({spec.name!r}): expected shape {tuple(spec.shape)} dtype {spec.dtype}, "
            f"got shape {shape} dtype {dtype}"
        )
    array = value.contiguous() if isinstance(value, torch.Tensor) else np.ascontiguousarray(value)
    address = array.data_ptr() if isinstance(array, torch.Tensor) else array.ctypes.data
    if address % _ALIGNMENT:
        array = _aligned_copy(array.numpy() if isinstance(array, torch.Tensor) else array)
    return tvm_ffi.from_dlpack(array), array  # keep the source alive while the view is in use


def _leaves(result) -> list:
    if isinstance(result, tvm.runtime.Tensor):
        return [result]
    return [leaf for item in result for leaf in _leaves(item)]


class DualModule:
    """Call it like the PyTorch model: torch tensors in give torch tensors out, numpy gives numpy.

    Calls are serialized by a lock: a Relax VirtualMachine is not safe to enter from two threads.
    """

    def __init__(self, executable, metadata: dict, library_bytes: bytes | None = None) -> None:
        self._executable = executable
        self.metadata = metadata
        self._library_bytes = library_bytes
        self._inputs = [TensorSpec.from_dict(d) for d in metadata["inputs"]]
        self._out_spec = pytree.treespec_loads(metadata["out_spec"])
        self._layers = {layer["name"]: layer for layer in metadata["layers"]}
        self._counter_layers: list[str] = metadata.get("counter_layers", [])
        self._lock = threading.Lock()
        self._vm = None
        self._main = None
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
                    f"this module was compiled for {self.target!r}, which uses {', '.join(sorted(missing))}; "
                    f"this CPU lacks them, so running it would crash with an illegal instruction. Export it "
                    f"and run it on such a machine, or compile with target=None for this host."
                )
            self._vm = relax.VirtualMachine(self._executable, tvm.cpu())
        return self._vm

    def __call__(self, *inputs):
        if len(inputs) != len(self._inputs):
            raise ValueError(f"expected {len(self._inputs)} inputs ({', '.join(s.name for s in self._inputs)}), got {len(inputs)}")
        views = [_to_tvm(value, spec, i) for i, (value, spec) in enumerate(zip(inputs, self._inputs))]
        as_torch = any(isinstance(v, torch.Tensor) for v in inputs)
        with self._lock:
            if self._main is None:
                self._main = self._virtual_machine()["main"]
            result = self._main(*[view for view, _ in views])
            if self._counter_layers:
                self._record(np.from_dlpack(result[1]))
                result = result[0]
        # Outputs are fresh VM allocations: zero-copy views keep them alive, nothing reuses them.
        convert = torch.from_dlpack if as_torch else np.from_dlpack
        return pytree.tree_unflatten([convert(t) for t in _leaves(result)], self._out_spec)

    # ---- stats -------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self._calls = {name: 0 for name in self._layers}
        self._rows = {name: 0 for name in self._layers}

    def _record(self, counters: np.ndarray) -> None:
        for name, rows in zip(self._counter_layers, counters):
            self._rows[name] += int(rows)
            self._calls[name] += 1

    def stats(self) -> DualStats:
        """Per dual layer: target vs observed insensitive ratio, and bytes read vs dense."""
        out = DualStats()
        for name, layer in self._layers.items():
            n, k = layer["n"], layer["k"]
            calls, rows = self._calls[name], self._rows[name]
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
        """Write a shared library that tvm_dual.load turns back into this module (metadata included)."""
        path = os.fspath(path)
        if self._library_bytes is not None:  # loaded from a file: write the same library back
            with open(path, "wb") as f:
                f.write(self._library_bytes)
        else:
            self._executable.export_library(path)


def attach_metadata(mod: tvm.IRModule, metadata: dict) -> tvm.IRModule:
    """Add a Relax function returning the metadata as JSON, so that it travels inside the library."""
    builder = relax.BlockBuilder(mod)
    with builder.function(METADATA_FUNC, []):
        builder.emit_func_output(tvm.ir.StringImm(json.dumps(dict(metadata, format=METADATA_FORMAT), sort_keys=True)))
    return builder.get()


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
