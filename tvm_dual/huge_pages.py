"""A compiled model's large constants (the weights) moved onto 2 MiB transparent huge pages.

Why: at batch 1 a layer streams its weights from memory on every call. On 4 KiB pages a 16 MiB
weight matrix spans 4,096 pages; once other work has evicted the TLB and the cached page tables
(the cold-cache case, and the normal case between the layers of a model larger than the caches),
every page costs a page walk, and the hardware prefetchers stop at each page boundary. A dual kernel
suffers more than a dense one: its gathered rows of 1,024 floats are each a page of their own. numpy
already asks for huge pages for large arrays (its madvise_hugepage default); TVM's allocator does
not, and many kernels default to transparent huge pages only on request (THP "madvise" mode).

How: Linux's MADV_COLLAPSE (kernel 6.1+) turns existing memory into huge pages in place,
synchronously: the 2 MiB pages around each constant, or where that is refused the 2 MiB-aligned
part inside it (collapse). The constants are found by running the model once on zeros in two throwaway virtual
machines with an instrument hook: the VM shares one executable's constants among all its instances
without copying them on the CPU, so buffers that both runs (both VMs alive) pass to kernels at the
same address are constants, and everything else is a per-VM intermediate.

Best effort: where the kernel, the platform or the memory state refuses, nothing changes but the
speed. TVM_DUAL_HUGE_PAGES=0 turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import numpy as np

HUGE_PAGE = 2 << 20
MADV_COLLAPSE = 25  # linux/mman.h, since Linux 6.1
ENV_SWITCH = "TVM_DUAL_HUGE_PAGES"

_log = logging.getLogger(__name__)
_madvise = None


def enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get(ENV_SWITCH, "1") != "0"


def _libc_madvise():
    global _madvise
    if _madvise is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        _madvise = libc.madvise
    return _madvise


def huge_range(address: int, nbytes: int) -> tuple[int, int]:
    """The 2 MiB-aligned part [start, end) of a buffer; empty (start == end) when there is none."""
    start = -(-address // HUGE_PAGE) * HUGE_PAGE
    end = max(start, (address + nbytes) // HUGE_PAGE * HUGE_PAGE)
    return start, end


def tensor_nbytes(tensor) -> int:
    """Bytes of a tvm.runtime.Tensor's data, from its shape (no copy)."""
    return int(np.prod(tensor.shape, dtype=np.int64)) * np.dtype(str(tensor.dtype)).itemsize


def enclosing_range(address: int, nbytes: int) -> tuple[int, int]:
    """The 2 MiB pages [start, end) that hold any byte of a buffer."""
    return address // HUGE_PAGE * HUGE_PAGE, -(-(address + nbytes) // HUGE_PAGE) * HUGE_PAGE


def _madvise_collapse(start: int, end: int) -> bool:
    if _libc_madvise()(start, end - start, MADV_COLLAPSE) != 0:
        _log.debug("MADV_COLLAPSE refused at %#x (+%d bytes): %s", start, end - start, os.strerror(ctypes.get_errno()))
        return False
    return True


def collapse(address: int, nbytes: int) -> int:
    """Put one buffer on huge pages; returns its bytes now on them (0 if refused).

    First the whole 2 MiB pages around it, neighbours' bytes included (collapsing copies the
    contents, so that is harmless to them): the buffer's first and last partial pages are often most
    of it (a 9 MB matrix at a 64-byte-aligned address has 6 or 8 MiB of whole aligned pages inside).
    That needs the surrounding pages to be one anonymous mapping; where they are not, only the
    aligned interior (huge_range). Measured on the PTB LSTM-750 step (2026-12-02, 18:20, a scratch
    switch between the two, cold, one thread, 7 rounds in one process): the dense build went from
    6.0 to 17.2 MiB of its 17.2 MiB of weights on huge pages, the dual build at 0.5 from 16.0 to
    17.2; step times did not change beyond the noise (dense 659 vs 705 us, dual 461 vs 456, rounds
    spread over +-20%). What it removes is an unfairness: which build got more huge pages depended
    on where its buffers happened to start."""
    if _madvise_collapse(*enclosing_range(address, nbytes)):
        return nbytes
    start, end = huge_range(address, nbytes)
    if end == start or not _madvise_collapse(start, end):
        return 0
    return end - start


def _kernel_buffers(vm, probe) -> dict[int, int]:
    """address -> bytes of every buffer of at least HUGE_PAGE bytes that main passes to a kernel."""
    import tvm

    seen: dict[int, int] = {}

    def record(_func, symbol, before, _ret, *args):
        if before and not symbol.startswith("vm.builtin"):
            for arg in args:
                if isinstance(arg, tvm.runtime.Tensor):
                    nbytes = tensor_nbytes(arg)
                    if nbytes >= HUGE_PAGE:
                        seen[arg.data_ptr()] = nbytes
        return 0

    vm.set_instrument(record)
    vm["main"](*probe)
    return seen


def constants_on_huge_pages(executable, probe_inputs: list[np.ndarray]) -> int:
    """Collapse the large constants of a Relax VM executable; returns the bytes now on huge pages.

    probe_inputs: inputs of main's shapes and dtypes (their values do not matter)."""
    if not enabled():
        return 0
    import tvm
    from tvm import relax

    try:
        probe = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in probe_inputs]
        # both alive at once, so that no intermediate of one can reuse the address of the other's
        vms = [relax.VirtualMachine(executable, tvm.cpu()) for _ in range(2)]
        first, second = (_kernel_buffers(vm, probe) for vm in vms)
        return sum(collapse(address, nbytes) for address, nbytes in first.items() if second.get(address) == nbytes)
    except Exception as err:  # never fatal: the model runs the same on small pages
        _log.debug("huge pages skipped: %s", err)
        return 0
