"""Kernel replay: a compiled model's kernels called back to back, without the VM or DualModule.

What a batch-1 call costs splits into the kernels and the machinery around them (the Relax VM's
instructions, DualModule's input and output handling); when the caches are cold each of the latter
costs tens of microseconds. Timing the kernels alone separates the two, and is how the prototype
(../shared/reference/tvm027-prototype/q4_bench.py) measured its dual kernel against numpy and PyTorch,
whose calls are little more than their kernels.

One call of `main` on a probe input is recorded with the VM's instrument hook: every compiled kernel
with its arguments (weights from the constant pool, intermediate and output buffers of the VM's
memory plan). Replaying the kernels on those same buffers computes what `main` computes when the VM
does no data work of its own between kernels, which is checked: a program with any other builtin is
not replayed. The probe's input buffer is replaced by each timed input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# VM builtins that move no data: shape checks, the memory plan's allocations, tuples
DATA_FREE_BUILTINS = frozenset(
    {
        "vm.builtin.check_tensor_info",
        "vm.builtin.check_tuple_info",
        "vm.builtin.match_shape",
        "vm.builtin.alloc_storage",
        "vm.builtin.alloc_tensor",
        "vm.builtin.null_value",
        "vm.builtin.make_tuple",
    }
)


class NotReplayable(RuntimeError):
    """The program does data work outside its kernels, or hands back a buffer no kernel wrote."""


def _leaves(result: Any) -> list:
    import tvm

    if isinstance(result, tvm.runtime.Tensor):
        return [result]
    return [leaf for item in result for leaf in _leaves(item)]


def _key(tensor) -> tuple:
    return (tensor.data_ptr(), tuple(tensor.shape), str(tensor.dtype))


class KernelReplay:
    """The kernels of one exported model, recorded on a probe input and callable on new inputs."""

    def __init__(self, path: str | Path, probe_inputs: tuple[np.ndarray, ...], outputs_index: int | None = None) -> None:
        """outputs_index: where in main's result tuple the model's outputs are, if not the whole
        result (a tvm_dual library returns (outputs, row counters))."""
        import tvm
        from tvm import relax

        from ...huge_pages import constants_on_huge_pages

        library = tvm.runtime.load_module(str(path))
        # the weights on 2 MiB pages, as DualModule puts them
        self.huge_page_bytes = constants_on_huge_pages(library, list(probe_inputs))
        vm = relax.VirtualMachine(library, tvm.cpu())
        calls: list[tuple[str, tuple]] = []

        def record(_func, symbol, before, _ret, *args):
            if before:
                calls.append((symbol, args))
            return 0

        vm.set_instrument(record)
        self.probe = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in probe_inputs]
        result = vm["main"](*self.probe)
        if outputs_index is not None:
            result = result[outputs_index]
        other = sorted({s for s, _ in calls if s.startswith("vm.builtin") and s not in DATA_FREE_BUILTINS})
        if other:
            raise NotReplayable(f"the VM runs {', '.join(other)} between kernels")
        self.kernels = [(library.get_function(s, query_imports=True), args) for s, args in calls if not s.startswith("vm.builtin")]
        if not self.kernels:
            raise NotReplayable("the program calls no compiled kernel")
        written = {_key(a): a for _, args in self.kernels for a in args if isinstance(a, tvm.runtime.Tensor)}
        self.outputs: list = []
        for leaf in _leaves(result):
            if _key(leaf) not in written:
                raise NotReplayable(f"an output of shape {tuple(leaf.shape)} is not a kernel argument")
            self.outputs.append(written[_key(leaf)])
        self._probe_keys = [_key(t) for t in self.probe]

    def bind(self, inputs: tuple[np.ndarray, ...]) -> list[tuple[Any, list]]:
        """The kernel calls with the probe's input buffers replaced by copies of `inputs`."""
        import tvm

        fresh = {key: tvm.runtime.tensor(np.ascontiguousarray(x)) for key, x in zip(self._probe_keys, inputs)}
        return [
            (func, [fresh.get(_key(a), a) if isinstance(a, tvm.runtime.Tensor) else a for a in args])
            for func, args in self.kernels
        ]

    def run(self, bound: list[tuple[Any, list]]) -> list:
        for func, args in bound:
            func(*args)
        return self.outputs
