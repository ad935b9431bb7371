"""`tvm-dual eval`: run a compiled library next to the PyTorch model and compare the outputs."""

from __future__ import annotations

import argparse

import numpy as np
from tqdm.auto import tqdm

from .common import FACTORY_HELP, input_data, load_workload

DESCRIPTION = "Run a compiled library on data next to its PyTorch model: output errors, agreement, per-layer stats."

EPILOG = """examples:
  tvm-dual eval model.so --model mypkg.models:make_model                 on the factory's calibration data
  tvm-dual eval model.so --model mypkg.models:make_model --inputs test.npz --limit 1000

--inputs: an .npz with one array per model input (named as the input, or arr_0, arr_1, ...), each
of the compiled input shape or a stack of such along a new first axis. Agreement is the fraction of
calls whose first output has the same argmax over its last axis (a classifier's predicted class).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("library", help="a .so written by tvm-dual compile or DualModule.export_library")
    parser.add_argument("--model", metavar="MODULE:FUNCTION", required=True, help="the exact model to compare with; " + FACTORY_HELP)
    parser.add_argument("--inputs", metavar="NPZ", help="inputs (default: the factory's calibration data)")
    parser.add_argument("--limit", type=int, default=256, help="input tuples to run (default 256)")


def _leaves(value) -> list[np.ndarray]:
    import torch
    import torch.utils._pytree as pytree

    return [np.asarray(leaf.detach().numpy() if isinstance(leaf, torch.Tensor) else leaf, dtype=np.float64)
            for leaf in pytree.tree_leaves(value)]


def run(args: argparse.Namespace, _command: str) -> int:
    import torch

    import tvm_dual

    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    module = tvm_dual.load(args.library)
    workload = load_workload(args.model)
    data = input_data(args.inputs, workload, module, args.limit)
    max_abs = max_ref = sum_abs = 0.0
    count = agree = nan_mismatch = 0
    for inputs in tqdm(data, desc="evaluating", unit="call", disable=None, leave=False):
        dual = _leaves(module(*inputs))
        with torch.no_grad():
            exact = _leaves(workload.model(*[torch.from_numpy(a) for a in inputs]))
        if [a.shape for a in dual] != [a.shape for a in exact]:
            raise ValueError(f"the library's outputs {[a.shape for a in dual]} do not match the model's {[a.shape for a in exact]}; "
                             f"was it compiled from {args.model}?")
        for d, e in zip(dual, exact):
            d, e = np.asarray(d, dtype=np.float64), np.asarray(e, dtype=np.float64)
            same = (d == e) | (np.isnan(d) & np.isnan(e))  # equal infinities and NaN in both agree exactly
            diff = np.where(same, 0.0, np.abs(d - e))
            nan_mismatch += int(np.count_nonzero(np.isnan(diff)))  # NaN in one output and not the other
            diff = diff[~np.isnan(diff)]
            finite = np.abs(e[np.isfinite(e)])
            max_abs = max(max_abs, float(diff.max()) if diff.size else 0.0)
            max_ref = max(max_ref, float(finite.max()) if finite.size else 0.0)
            sum_abs += float(diff.sum())
            count += diff.size
        if dual[0].ndim and dual[0].shape[-1] > 1:
            agree += int(np.array_equal(dual[0].argmax(-1), exact[0].argmax(-1)))
    print(f"{args.library} vs {args.model} on {len(data)} input tuple(s) ({args.inputs or 'factory calibration data'})")
    print(f"max |error| {max_abs:.4g} (largest |output| {max_ref:.4g}, relative {max_abs / max(max_ref, 1e-30):.3g}), "
          f"mean |error| {sum_abs / max(count, 1):.4g}")
    if nan_mismatch:
        print(f"outputs NaN in one of the two and not in the other: {nan_mismatch} (not in the errors above)")
    if dual[0].ndim and dual[0].shape[-1] > 1:
        print(f"argmax agreement of the first output: {agree}/{len(data)} = {agree / len(data):.4f}")
    print(module.stats())
    return 0
