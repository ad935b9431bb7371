"""What the compile, eval and report subcommands share: model factories, ratios, input data."""

from __future__ import annotations

import os
import sys
import numpy as np

FACTORY_HELP = ("MODULE:FUNCTION; the function returns (model, example_inputs[, calibration]): a torch.nn.Module, "
                "the inputs that fix the compiled shapes, and an iterable of input tuples (as for tvm-dual bench --model)")


def load_workload(factory: str):
    """The factory's model, example inputs, calibration batches and example-shaped data tuples
    (tvm_dual.bench.workloads does the importing and the checking, as for `tvm-dual bench --model`).
    The current directory is importable, as it is for `python -m`."""
    from ..bench.workloads import user_model

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return user_model(factory=factory, timing_inputs=10**9)


def parse_ratio(values: list[str] | None, default: float = 0.5) -> float | dict[str, float]:
    """--ratio 0.5 (every layer) or --ratio fc1=0.5 --ratio fc2=0.3 (per layer, the others exact)."""
    if not values:
        return default
    per_layer: dict[str, float] = {}
    uniform = []
    for value in values:
        name, sep, number = value.rpartition("=")
        try:
            ratio = float(number)
        except ValueError:
            raise ValueError(f"--ratio takes a number or NAME=NUMBER, got {value!r}") from None
        if sep and not name:
            raise ValueError(f"--ratio takes a number or NAME=NUMBER, got {value!r}")
        if sep:
            per_layer[name] = ratio
        else:
            uniform.append(ratio)
    if uniform and (per_layer or len(uniform) > 1):
        raise ValueError("give --ratio once as a number, or as NAME=NUMBER for each layer, not both")
    return uniform[0] if uniform else per_layer


def npz_inputs(path: str, specs) -> list[tuple[np.ndarray, ...]]:
    """Input tuples from an .npz: one array per model input (named as the input, or arr_0, arr_1, ...
    in order), each either of the input's shape or a stack of them along a new first axis."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no input file at {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"{path!r} is not a readable .npz file: {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # np.load also reads a single .npy array
        raise ValueError(f"{path!r} is a single array, not an .npz archive (write it with np.savez)")
    arrays = []
    for i, spec in enumerate(specs):
        key = spec.name if spec.name in archive.files else f"arr_{i}"
        if key not in archive.files:
            raise ValueError(f"{path!r} has no array {spec.name!r} or 'arr_{i}' for input {i}; it has {archive.files}")
        array = archive[key]
        if tuple(array.shape) == tuple(spec.shape):
            array = array[None]
        if tuple(array.shape[1:]) != tuple(spec.shape):
            raise ValueError(f"{path!r}: array {key!r} has shape {array.shape}; input {i} needs {tuple(spec.shape)} or (S, *that)")
        arrays.append(np.ascontiguousarray(array.astype(spec.dtype, copy=False)))
    counts = {len(a) for a in arrays}
    if len(counts) != 1:
        raise ValueError(f"{path!r}: the input arrays hold different numbers of samples ({sorted(counts)})")
    if counts == {0}:
        raise ValueError(f"{path!r} holds no samples")
    return [tuple(np.ascontiguousarray(a[s]) for a in arrays) for s in range(counts.pop())]


def check_specs(data: list[tuple[np.ndarray, ...]], specs, where: str) -> None:
    """The module's compiled input shapes must be the data's."""
    want = [tuple(s.shape) for s in specs]
    got = [tuple(a.shape) for a in data[0]]
    if got != want:
        raise ValueError(f"the library was compiled for input shapes {want}; {where} gives {got}")


def input_data(inputs: str | None, workload, module, limit: int) -> list[tuple[np.ndarray, ...]] | None:
    """Up to `limit` input tuples from an .npz (`inputs`) or else the workload's calibration data."""
    if inputs:
        data = npz_inputs(inputs, module.input_specs)
        where = inputs
    elif workload is not None:
        data = workload.timing_inputs
        where = f"the calibration data of {workload.params['factory']}"
    else:
        return None
    check_specs(data, module.input_specs, where)
    return data[:limit]
