"""PyTorch -> Relax: torch.export, then from_exported_program with weights bound as constants."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils._pytree as pytree
import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

from .sites import weight_digest
from .transform.conv_prepare import prepare_convolutions
from .transform.snapshot_constants import SnapshotConstants


class ModelImportError(RuntimeError):
    """The model could not be imported into Relax."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    index_bound: int | None = None  # an integer input that selects rows of a table (an embedding): ids < this

    def describe(self) -> str:
        return f"{tuple(self.shape)} {self.dtype}"

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.index_bound is not None:
            d["index_bound"] = self.index_bound
        return d

    @staticmethod
    def from_dict(d: dict) -> "TensorSpec":
        return TensorSpec(name=d["name"], shape=tuple(d["shape"]), dtype=d["dtype"], index_bound=d.get("index_bound"))


@dataclass
class ImportedModel:
    mod: tvm.IRModule
    inputs: list[TensorSpec]
    out_spec: str  # torch pytree TreeSpec, serialized
    layer_names: dict[str, str]  # weight digest -> module path ("encoder.fc1")


def normalize_inputs(example_inputs, what: str = "example_inputs") -> tuple[torch.Tensor, ...]:
    """A tensor, an array, or a tuple/list of them -> a tuple of torch tensors."""
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError(f"{what} must be a tensor or a non-empty tuple of tensors, got {type(example_inputs).__name__}")
    tensors = []
    for i, value in enumerate(example_inputs):
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what}: input {i} must be a torch.Tensor or numpy array, got {type(value).__name__}")
        if value.numel() == 0:
            raise ValueError(f"{what}: input {i} has shape {tuple(value.shape)}, with no elements")
        tensors.append(value.detach())
    return tuple(tensors)


def input_batches(
    data: Iterable, what: str, example: tuple[torch.Tensor, ...], specs: list[TensorSpec] | None = None
) -> list[tuple[torch.Tensor, ...]]:
    """Calibration or validation data -> a list of input tuples shaped like `example` (any batch).

    A single tensor of a one-input model is taken as one batch of rows. Anything else must be an
    iterable of batches, each a tensor or a tuple of tensors with as many inputs, of the same ranks,
    as the example: iterating a tensor by mistake would feed the model single rows, which it
    imports at another rank, and calibration would fail far away from the cause. Floating-point
    data of another precision (numpy's float64) is cast to the example's dtype; other dtype
    mismatches, and ids out of range for an input that indexes a table (`specs`' index_bound,
    which the compiled model would read out of bounds), are errors naming the batch."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if len(example) == 1 and data.ndim == example[0].dim():
            data = [data]
        else:
            raise ValueError(
                f"{what} is one array of shape {tuple(data.shape)}; pass an iterable of input batches, each a tensor or a "
                f"tuple of tensors like example_inputs (shapes {[tuple(t.shape) for t in example]}, any batch size)"
            )
    batches = []
    for i, batch in enumerate(data):
        batch = normalize_inputs(batch, f"{what} batch {i}")
        if len(batch) != len(example) or any(t.dim() != e.dim() for t, e in zip(batch, example)):
            raise ValueError(
                f"{what} batch {i} has inputs of shapes {[tuple(t.shape) for t in batch]}; expected "
                f"{len(example)} input(s) of the example inputs' ranks {[tuple(t.shape) for t in example]} (any batch size)"
            )
        batch = tuple(_like_example(t, e, f"{what} batch {i} input {j}") for j, (t, e) in enumerate(zip(batch, example)))
        for j, (t, spec) in enumerate(zip(batch, specs or ())):
            bad = None if spec.index_bound is None else out_of_range_index(t.numpy(), spec.index_bound)
            if bad is not None:
                raise ValueError(
                    f"{what} batch {i} input {j} ({spec.name!r}): index {bad} is out of range for a table of {spec.index_bound} rows"
                )
        batches.append(batch)
    return batches


def _like_example(t: torch.Tensor, example: torch.Tensor, what: str) -> torch.Tensor:
    if t.dtype == example.dtype:
        return t
    if t.dtype.is_floating_point and example.dtype.is_floating_point:
        return t.to(example.dtype)
    got, expected = (str(d).replace("torch.", "") for d in (t.dtype, example.dtype))
    raise ValueError(f"{what} has dtype {got}; the example input has {expected}")


def _layer_names(model: torch.nn.Module) -> dict[str, str]:
    names: dict[str, str] = {}
    for fqn, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.dim() == 2 and tensor.dtype == torch.float32:
            layer = fqn.rsplit(".", 1)[0] if fqn.endswith(".weight") else fqn
            names.setdefault(weight_digest(tensor.detach().cpu().numpy()), layer or fqn)
    return names


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ops that pass index values through unchanged (the frontend casts token ids to int32 before a take)
_INDEX_PRESERVING_OPS = frozenset(
    {"relax.astype", "relax.reshape", "relax.permute_dims", "relax.expand_dims", "relax.squeeze", "relax.flatten"}
)


def out_of_range_index(ids: np.ndarray, bound: int) -> int | None:
    """The first id outside [0, bound) in an integer array, or None. Negative ids become huge as
    unsigned integers, so one comparison checks both ends (this runs on every call of a module
    whose input indexes a table)."""
    if not (ids.view(np.dtype(f"u{ids.dtype.itemsize}")) >= bound).any():
        return None
    return int(ids[(ids < 0) | (ids >= bound)].flat[0])


def take_index_bounds(func: relax.Function) -> dict[int, int]:
    """Parameter position -> rows of the smallest table it indexes, for integer parameters used as
    the indices of a take (an embedding lookup). TVM's take reads out of bounds for other ids (its
    "fast" mode; a segfault, or rows of whatever lies next to the table), where PyTorch raises
    IndexError, so the runtime checks these inputs."""
    origin: dict[relax.Var, int] = {
        param: i for i, param in enumerate(func.params)
        if isinstance(param.ty, relax.TensorType) and str(param.ty.dtype).startswith(("int", "uint"))
    }
    bounds: dict[int, int] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op) or not value.args:
                continue
            source = origin.get(value.args[-1] if value.op.name == "relax.take" else value.args[0])
            if source is None:
                continue
            if value.op.name in _INDEX_PRESERVING_OPS:
                origin[binding.var] = source
            elif value.op.name == "relax.take":
                table = value.args[0].ty
                axis = int(value.attrs.axis) if value.attrs.axis is not None else 0
                if isinstance(table, relax.TensorType) and table.shape is not None:
                    try:
                        rows = int(table.shape.values[axis])
                    except (TypeError, AttributeError, IndexError):
                        continue
                    bounds[source] = min(rows, bounds.get(source, rows))
    return bounds


_RNN_FLAT_WEIGHTS_WARNING = r"The tensor attributes (self(\.\w+)*\._flat_weights\[\d+\](, )?)+ were assigned during export"


def import_model(model: torch.nn.Module, example_inputs) -> ImportedModel:
    """Export `model` at the shapes of `example_inputs` and translate it to Relax."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = normalize_inputs(example_inputs)
    with eval_mode(model), torch.no_grad():
        try:
            with warnings.catch_warnings():
                # nn.LSTM/nn.GRU reassign their own _flat_weights while being traced; torch then warns that
                # the model should register them as buffers, which a user of those modules cannot do
                warnings.filterwarnings("ignore", message=_RNN_FLAT_WEIGHTS_WARNING, category=UserWarning)
                exported = torch.export.export(model, inputs)
        except Exception as err:
            raise ModelImportError(f"torch.export failed on {type(model).__name__}: {err}") from err
        try:
            with warnings.catch_warnings():
                # torch 2.13's own run_decompositions warns about its own pytree use; nothing a user can change
                warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
                mod = from_exported_program(exported, keep_params_as_input=False)
        except Exception as err:
            dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()} - {"float32"})
            hint = f" (its parameters are {', '.join(dtypes)}: tvm_dual compiles float32 models, see model.float())" if dtypes else ""
            raise ModelImportError(
                f"TVM's PyTorch frontend cannot translate {type(model).__name__}: {str(err).splitlines()[0]}{hint}"
            ) from err
    mod = SnapshotConstants()(mod)  # the frontend's constants are views of the model's parameters
    mod = prepare_convolutions(mod)  # NHWC, batch norm folded; a no-op without convolutions
    names = [spec.arg.name for spec in exported.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    try:
        out_spec = pytree.treespec_dumps(exported.call_spec.out_spec)
    except (NotImplementedError, TypeError) as err:  # e.g. an unregistered namedtuple
        raise ModelImportError(
            f"the outputs of {type(model).__name__} have a structure the library's metadata cannot record "
            f"({str(err).splitlines()[0]}); return tensors in tuples, lists and dicts"
        ) from None
    bounds = take_index_bounds(mod["main"])
    specs = [
        TensorSpec(name=names[i] if i < len(names) else f"input{i}", shape=tuple(t.shape),
                   dtype=str(t.dtype).replace("torch.", ""), index_bound=bounds.get(i))
        for i, t in enumerate(inputs)
    ]
    return ImportedModel(
        mod=mod,
        inputs=specs,
        out_spec=out_spec,
        layer_names=_layer_names(model),
    )
