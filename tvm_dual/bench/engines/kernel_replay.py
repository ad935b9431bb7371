"""Kernel replay: a compiled model's kernels called back to back, without the VM or DualModule.

What a batch-1 call costs splits into the kernels and the machinery around them (DualModule's input
checks and copies, output copies and counters, or the Relax VM's instructions where a model cannot
run as a kernel plan); when the caches are cold each of these costs microseconds to tens of them.
Timing the kernels alone separates the two, and is how the prototype
(../shared/reference/tvm027-prototype/q4_bench.py) measured its dual kernel against numpy and PyTorch,
whose calls are little more than their kernels.

The kernels are recorded as for DualModule's kernel plan (tvm_dual/kernel_plan.py), but each timed
input gets its own bound copy of the calls, with the probe's input buffer replaced by the input's
own buffer, so that no input is copied inside the timed region. Where the program reshapes an input
between kernels (vm.builtin.reshape, a view: a recurrent step's state), the kernels get the same
view of the new buffer; outputs may be views of kernel buffers likewise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...kernel_plan import NotReplayable, record_kernel_calls, result_leaves

__all__ = ["KernelReplay", "NotReplayable"]


def _extent(tensor) -> tuple[int, int]:
    """Address and size of a tensor's bytes: the same for a buffer and its reshaped views."""
    return (tensor.data_ptr(), int(np.prod(tensor.shape, dtype=np.int64)) * tensor.dtype.itemsize)


class KernelReplay:
    """The kernels of one exported model, recorded on a probe input and callable on new inputs."""

    def __init__(self, path: str | Path, probe_inputs: tuple[np.ndarray, ...], outputs_index: int | None = None) -> None:
        """outputs_index: where in main's result tuple the model's outputs are, if not the whole
        result (a tvm_dual library returns (outputs, row counters))."""
        import tvm

        from ...huge_pages import constants_on_huge_pages

        library = tvm.runtime.load_module(str(path))
        # the weights on 2 MiB pages, as DualModule puts them
        self.huge_page_bytes = constants_on_huge_pages(library, list(probe_inputs))
        self.probe = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in probe_inputs]
        self.kernels, result, self._vm = record_kernel_calls(library, self.probe, allow_views=True)
        if outputs_index is not None:
            result = result[outputs_index]
        # an output is a kernel's buffer or a view of one (same address, same size)
        written = {_extent(a) for _, _, args in self.kernels for a in args if isinstance(a, tvm.runtime.Tensor)}
        self.outputs = result_leaves(result)
        for leaf in self.outputs:
            if leaf is not None and _extent(leaf) not in written:
                raise NotReplayable(f"an output of shape {tuple(leaf.shape)} is not a kernel's buffer")
        self._probe_extents = [_extent(t) for t in self.probe]

    def bind(self, inputs: tuple[np.ndarray, ...]) -> list[tuple[Any, list]]:
        """The kernel calls with the probe's input buffers, and views of them, replaced by copies of
        `inputs` (viewed the same way)."""
        import tvm

        fresh = {extent: tvm.runtime.tensor(np.ascontiguousarray(x)) for extent, x in zip(self._probe_extents, inputs)}

        def swap(a):
            if not isinstance(a, tvm.runtime.Tensor) or _extent(a) not in fresh:
                return a
            new = fresh[_extent(a)]
            return new if tuple(a.shape) == tuple(new.shape) else new._create_view(tuple(a.shape), a.dtype)

        return [(func, [swap(a) for a in args]) for func, _, args in self.kernels]

    def run(self, bound: list[tuple[Any, list]]) -> list:
        for func, args in bound:
            func(*args)
        return self.outputs
