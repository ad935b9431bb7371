"""A compiled model's kernels, recorded once and then called back to back without the Relax VM.

Why: at batch 1 a model call is a handful of kernels, and what the VM does around them (dispatching
its instructions, allocating the memory plan's storage and tensors, building the result tuple)
touches data of its own. With the caches cold, as between the layers of a model larger than them or
in the benchmarks' cold tables, that work cost about 60 us per call at one thread on Zen 5
(Linear 1024->4096, whole DualModule calls with 128 MiB read before each: 555 us through the VM,
496 us with the plan at half the rows; dense build 833 vs 777 us; `TVM_NUM_THREADS=1 python
scripts/bench_executor.py --cold`, 2026-12-02; no difference beyond noise at two threads). TVM's
old graph executor ran static graphs this way; a Relax program with static shapes and no control
flow is one.

How: one call of `main` on the caller's input buffers is recorded with the VM's instrument hook,
every compiled kernel with its arguments (constants from the executable's pool, which all of its
VMs share; intermediates and outputs from the memory plan of the recording VM, kept alive by the
plan). Replaying those calls on the same buffers computes what `main` computes, provided the VM
moves no data of its own between kernels: a program that runs any other builtin is refused.
The caller writes each new input into the recorded input buffers and copies the outputs out.
"""

from __future__ import annotations

from typing import Any

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
# builtins whose result is a view of their argument's data (same bytes, new shape)
VIEW_BUILTINS = frozenset({"vm.builtin.reshape"})


class NotReplayable(RuntimeError):
    """The program does data work outside its kernels, or hands back a buffer no kernel wrote."""


def result_leaves(result: Any) -> list:
    """Every tensor of a VM result (nested tuples), in pytree leaf order; a None the model returns
    (R.null_value) is a leaf too, as pytree has it."""
    import tvm

    if result is None or isinstance(result, tvm.runtime.Tensor):
        return [result]
    return [leaf for item in result for leaf in result_leaves(item)]


def record_kernel_calls(executable, inputs: list, allow_views: bool) -> tuple[list[tuple[Any, str, tuple]], Any, Any]:
    """Run `main` once on `inputs` (TVM tensors) in a fresh VM and record its kernel calls.

    Returns (kernel calls as (function, symbol, arguments), main's result, the VM). The VM must
    outlive the calls: it owns the storage of their intermediate buffers."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    calls: list[tuple[Any, str, tuple]] = []
    returning: set[str] = set()

    def record(func, symbol, before, ret, *args):
        if before:
            calls.append((func, symbol, args))
        elif ret is not None and not symbol.startswith("vm.builtin"):
            returning.add(symbol)
        return 0

    vm.set_instrument(record)
    result = vm["main"](*inputs)
    allowed = DATA_FREE_BUILTINS | (VIEW_BUILTINS if allow_views else frozenset())
    other = sorted({s for _, s, _ in calls if s.startswith("vm.builtin") and s not in allowed})
    if other:
        raise NotReplayable(f"the VM runs {', '.join(other)} between kernels")
    if returning:  # a replay would drop what they return: only kernels that write their arguments replay
        raise NotReplayable(f"{', '.join(sorted(returning))} return their results instead of writing an output buffer")
    kernels = [call for call in calls if not call[1].startswith("vm.builtin")]
    if not kernels:
        raise NotReplayable("the program calls no compiled kernel")
    return kernels, result, vm


class KernelPlan:
    """The kernels of one call of `main`, bound to fixed input, intermediate and output buffers.

    `inputs` are the buffers the caller refills before each run; `outputs` are main's result
    tensors in pytree leaf order, rewritten by every run (views of kernel buffers where main
    reshapes, so they stay valid)."""

    def __init__(self, executable, inputs: list) -> None:
        import tvm

        self.inputs = list(inputs)
        self.kernels, result, self._vm = record_kernel_calls(executable, self.inputs, allow_views=True)
        # A leaf must share its bytes with a kernel's argument or an input: with only data-free
        # builtins and views in the program, that is where every output's data comes from.
        addresses = {t.data_ptr() for _, _, args in self.kernels for t in args if isinstance(t, tvm.runtime.Tensor)}
        addresses |= {t.data_ptr() for t in self.inputs}
        self.outputs = result_leaves(result)
        for leaf in self.outputs:
            if leaf is not None and leaf.data_ptr() not in addresses:
                raise NotReplayable(f"an output of shape {tuple(leaf.shape)} shares no buffer with a kernel")

    def run(self) -> None:
        for func, _, args in self.kernels:
            func(*args)
