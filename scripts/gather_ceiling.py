"""How close the dense dual kernel comes to a hand-written gather of the same rows, cold, at one
thread, side by side in one process.

The dual kernel at a ratio reads the rows of W its little module marks sensitive. A C function
(compiled here with the system's cc, -O3 -mavx2 -mfma) computes the dot products of exactly those
rows and nothing else (no little module, no masks, no call through TVM), with a given number of
rows in flight (--c-groups; one C engine per value), in AVX2 with two 256-bit accumulators per row
and, on a host with 512-bit vectors, in AVX-512 with one (--c-isa). It runs on the rows
in two orders (row_dot.ROW_ORDERS): groups of neighbouring selected rows, and "far" groups (the
selected rows read as that many long streams, as the kernels' default). Also timed: the dual
kernel with no row exact (its fixed part), the C function over all rows (a plain GEMV, both
orders), our dense GEMV kernel, and the benchmark's streaming-read kernel over a buffer the size of
W (bench/bandwidth.py, the bound of the issue-5 check). Every call follows a 128 MiB read (cold),
the engines in a different order each round; prints medians, the median of the per-round ratios,
and the ceiling: the fastest whole-matrix read over the fastest gather of the kernel's rows.

    TVM_NUM_THREADS=1 python scripts/gather_ceiling.py --n 4096 --k 1024 --rank 100 --ratio 0.5 --c-groups 6 12 16
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import tempfile
import time
from typing import Callable

import numpy as np
import tvm

from tvm_dual.bench.bandwidth import LANES, stream_sum_kernel
from tvm_dual.bench.timing import CacheFlusher
from tvm_dual.huge_pages import collapse
from tvm_dual.kernels.gemv import GemvShape, default_gemv_config, make_gemv
from tvm_dual.target import host_target, vector_bits
from tvm_dual.tuning.workload import DualWorkload

C_HEADER = r"""
#include <immintrin.h>
#include <stddef.h>
static inline float hsum(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_hadd_ps(a, a); a = _mm_hadd_ps(a, a); return _mm_cvtss_f32(a);
}
"""
C_GATHER = r"""
/* y[idx[j]] = W[idx[j], :K] . x for j < cnt; rows `stride` floats apart, K a multiple of 16 */
void GATHER_DOT(const float* W, int stride, int K, const float* x, float* y, const int* idx, int cnt) {
  enum { G = C_GROUP };
  int ng = cnt / G;
  for (int j = 0; j < ng; j++) {
    __m256 a[G], b[G]; const float* r[G];
    for (int g = 0; g < G; g++) { a[g] = b[g] = _mm256_setzero_ps(); r[g] = W + (size_t)idx[j * G + g] * stride; }
    for (int k = 0; k < K; k += 16) {
      __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
      for (int g = 0; g < G; g++) {
        a[g] = _mm256_fmadd_ps(_mm256_loadu_ps(r[g] + k), x0, a[g]);
        b[g] = _mm256_fmadd_ps(_mm256_loadu_ps(r[g] + k + 8), x1, b[g]);
      }
    }
    for (int g = 0; g < G; g++) y[idx[j * G + g]] = hsum(_mm256_add_ps(a[g], b[g]));
  }
  for (int j = ng * G; j < cnt; j++) {
    __m256 a = _mm256_setzero_ps(); const float* r = W + (size_t)idx[j] * stride;
    for (int k = 0; k < K; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(r + k), _mm256_loadu_ps(x + k), a);
    y[idx[j]] = hsum(a);
  }
}
"""
# The same with 512-bit vectors and one accumulator per row, as the kernels' 16-lane default holds
# them. On Zen 4 (2026-12-04) a stand-alone C program read the rows ~10% faster with it and 12 rows
# in flight than with the AVX2 gather, but in this script's runs it was no faster (docs/RESULTS.md);
# software prefetch of the next group's rows (every line, a quarter of them, or the first kilobyte)
# and 2 KiB ahead in the current rows only slowed that program (200 rounds).
C_GATHER_512 = r"""
__attribute__((target("avx512f,avx2,fma")))
void GATHER_DOT(const float* W, int stride, int K, const float* x, float* y, const int* idx, int cnt) {
  enum { G = C_GROUP };
  int ng = cnt / G;
  for (int j = 0; j < ng; j++) {
    __m512 a[G]; const float* r[G];
    for (int g = 0; g < G; g++) { a[g] = _mm512_setzero_ps(); r[g] = W + (size_t)idx[j * G + g] * stride; }
    for (int k = 0; k < K; k += 16) {
      __m512 x0 = _mm512_loadu_ps(x + k);
      for (int g = 0; g < G; g++) a[g] = _mm512_fmadd_ps(_mm512_loadu_ps(r[g] + k), x0, a[g]);
    }
    for (int g = 0; g < G; g++) y[idx[j * G + g]] = _mm512_reduce_add_ps(a[g]);
  }
  for (int j = ng * G; j < cnt; j++) {
    __m512 a = _mm512_setzero_ps(); const float* r = W + (size_t)idx[j] * stride;
    for (int k = 0; k < K; k += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(r + k), _mm512_loadu_ps(x + k), a);
    y[idx[j]] = _mm512_reduce_add_ps(a);
  }
}
"""
ISAS = {"avx2": C_GATHER, "avx512": C_GATHER_512}


def compile_c_gathers(directory: str, groups: list[int], isas: list[str]) -> dict[tuple[str, int], Callable[..., None]]:
    """One C gather per instruction set and number of rows in flight, named gather_dot_<isa>_<rows>."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise SystemExit("no C compiler (cc, or $CC) on PATH: the C gather cannot be built")
    source, library = os.path.join(directory, "gather.c"), os.path.join(directory, "gather.so")
    with open(source, "w") as f:
        f.write(C_HEADER)
        for isa in isas:
            for group in groups:
                f.write(f"#define C_GROUP {group}\n#define GATHER_DOT gather_dot_{isa}_{group}\n{ISAS[isa]}\n"
                        "#undef C_GROUP\n#undef GATHER_DOT\n")
    subprocess.run([cc, "-O3", "-mavx2", "-mfma", "-shared", "-fPIC", "-o", library, source], check=True)
    lib = ctypes.CDLL(library)
    functions = {}
    for isa in isas:
        for group in groups:
            function = getattr(lib, f"gather_dot_{isa}_{group}")
            function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_int]
            functions[(isa, group)] = function
    return functions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--k", type=int, default=1024, help="a multiple of 16")
    ap.add_argument("--rank", type=int, default=100)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--c-groups", type=int, nargs="+", default=[6], metavar="ROWS",
                    help="rows in flight in the C gather; one C engine per value (default 6)")
    ap.add_argument("--c-isa", nargs="+", choices=list(ISAS), default=None,
                    help="instruction sets of the C gathers (default: avx2, and avx512 on a host with 512-bit vectors)")
    args = ap.parse_args()
    if any(group < 1 for group in args.c_groups):
        raise SystemExit(f"--c-groups must be positive, got {args.c_groups}")
    if args.k % 16:
        raise SystemExit("--k must be a multiple of 16 (the C gather has no tail loop for the rows' last floats)")
    if os.environ.get("TVM_NUM_THREADS") != "1":
        raise SystemExit("run with TVM_NUM_THREADS=1: the C gather is single-threaded")

    target, dev = host_target(), tvm.cpu()
    bits = vector_bits(target)

    def dual_kernel(ratio: float):
        workload = DualWorkload(1, args.n, args.k, args.rank, "tanh", ratio)
        config = workload.default_config(target)
        kernel = tvm.compile(tvm.IRModule({"main": workload.primfunc(config, bits)}), target=target)["main"]
        arrays, expected = workload.arguments(config, bits)
        tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
        collapse(tensors[1].data_ptr(), arrays[1].nbytes)  # W on 2 MiB pages, as compiled modules have it
        kernel(*tensors)
        return kernel, tensors, arrays, expected

    dual, dual_args, arrays, expected = dual_kernel(args.ratio)
    dual_none, dual_none_args, _, _ = dual_kernel(0.999)
    rows = expected["read"].astype(np.int32)
    W = arrays[1]  # the kernel's weight operand: rows padded to whole cache lines
    collapse(W.ctypes.data, W.nbytes)
    x = np.ascontiguousarray(arrays[0][0])
    y = np.zeros(args.n, np.float32)
    all_rows = np.arange(args.n, dtype=np.int32)

    def far(ids: np.ndarray, group: int) -> np.ndarray:
        """The rows in the C function's group order for "far" groups: group j is ids[g * ngroups + j]."""
        ngroups = len(ids) // group
        head = ids[: ngroups * group].reshape(group, ngroups).T.reshape(-1)
        return np.ascontiguousarray(np.concatenate([head, ids[ngroups * group :]]))

    gemv = tvm.compile(
        tvm.IRModule({"main": make_gemv(GemvShape(1, args.n, args.k, "tanh"), default_gemv_config(bits))}), target=target
    )["main"]
    gemv_args = [dual_args[0], dual_args[1], tvm.runtime.tensor(np.zeros(args.n, np.float32), dev),
                 tvm.runtime.tensor(np.zeros((1, args.n), np.float32), dev)]
    stream = tvm.runtime.tensor(np.ones(W.size, np.float32), dev)
    collapse(stream.data_ptr(), W.nbytes)
    stream_out = tvm.runtime.tensor(np.zeros((1, LANES), np.float32), dev)
    stream_sum = stream_sum_kernel()

    with tempfile.TemporaryDirectory() as tmp:
        isas = args.c_isa or ["avx2", *(["avx512"] if bits >= 512 else [])]
        gathers = compile_c_gathers(tmp, args.c_groups, isas)

        def c_gather(isa: str, group: int, ids: np.ndarray):
            return lambda: gathers[(isa, group)](W.ctypes.data, W.shape[1], args.k, x.ctypes.data, y.ctypes.data,
                                          ids.ctypes.data, len(ids))

        # Whole-matrix readers and gatherers of the kernel's rows, for the ceiling printed last.
        whole, gathered = ["dense GEMV kernel", "streaming read of W's size"], ["dual kernel"]
        engines = {
            "dual kernel": (lambda: dual(*dual_args), 4 * args.k * len(rows)),
            "dual kernel, no row exact": (lambda: dual_none(*dual_none_args), 0),
        }
        for isa, group in gathers:
            for label, ids, nbytes, kind in (("the same rows", rows, 4 * args.k * len(rows), gathered),
                                             ("all rows", all_rows, W.nbytes, whole)):
                for order, ordered in (("", ids), (", far", far(ids, group))):
                    name = f"C gather x{group}{'' if isa == 'avx2' else ' ' + isa}, {label}{order}"
                    engines[name] = (c_gather(isa, group, ordered), nbytes)
                    kind.append(name)
        engines["dense GEMV kernel"] = (lambda: gemv(*gemv_args), W.nbytes)
        engines["streaming read of W's size"] = (lambda: stream_sum(stream, stream_out), W.nbytes)
        flush = CacheFlusher(128 << 20, 1)
        times: dict[str, list[float]] = {name: [] for name in engines}
        for rnd in range(args.rounds):
            for i in np.random.default_rng(rnd).permutation(len(engines)):
                name = list(engines)[i]
                flush()
                start = time.perf_counter()
                engines[name][0]()
                times[name].append(time.perf_counter() - start)

    print(f"W {args.n} x {args.k}, rank {args.rank}, ratio {args.ratio}: {len(rows)} rows exact; cold, 1 thread, "
          f"{args.rounds} rounds")
    for name, (_, nbytes) in engines.items():
        us = 1e6 * float(np.median(times[name]))
        rate = f"{nbytes / us / 1e3:6.1f} GB/s of W rows" if nbytes else ""
        print(f"  {name:36s} {us:8.1f} us  {rate}")
    median = {name: float(np.median(t)) for name, t in times.items()}
    fastest_whole, fastest_gather = min(whole, key=median.get), min(gathered, key=median.get)
    first = f"{args.c_groups[0]}{'' if isas[0] == 'avx2' else ' ' + isas[0]}"
    fastest_c = min((name for name in gathered if name.startswith("C ")), key=median.get)
    comparisons = [
        ("dual kernel", fastest_c), ("dual kernel", f"C gather x{first}, the same rows"),
        ("dual kernel", f"C gather x{first}, the same rows, far"),
        (f"C gather x{first}, all rows, far", f"C gather x{first}, the same rows, far"),
        ("dense GEMV kernel", "dual kernel"), ("dense GEMV kernel", f"C gather x{first}, all rows, far"),
        (fastest_whole, fastest_gather),
    ]
    for a, b in dict.fromkeys(comparisons):
        ratio = np.array(times[a]) / np.array(times[b])
        print(f"  {a} / {b}: {np.median(ratio):.3f} (p10-p90 {np.percentile(ratio, 10):.2f}-{np.percentile(ratio, 90):.2f})")
    # The most a gather of these rows can gain over reading all of W, by what this machine did here.
    print(f"  ceiling: fastest whole read ({fastest_whole}, {1e6 * median[fastest_whole]:.1f} us) / fastest gather "
          f"of the rows ({fastest_gather}, {1e6 * median[fastest_gather]:.1f} us) = "
          f"{median[fastest_whole] / median[fastest_gather]:.3f}")


if __name__ == "__main__":
    main()
