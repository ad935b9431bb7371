"""Linear layers in a Relax function: patterns, keys and classification.

A linear layer is `matmul(x, permute_dims(W))`, optionally `+ b`, with W and b constants, which is
what torch.export produces for nn.Linear, F.linear and `x @ W.T + b`. A linear layer followed by
tanh, sigmoid or ReLU is a dual-module candidate. Layers are identified by a key derived from the
weight's contents and the activation, so that every pass, the calibration and the plan agree on
"which layer" without relying on variable names, which passes rename.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, rewrite_call, wildcard

from .kernels.dual_dense import MAX_BATCH
from .kernels.row_dot import pad_rows

DUAL_ACTIVATIONS = {"relax.tanh": "tanh", "relax.sigmoid": "sigmoid", "relax.nn.relu": "relu"}
# Elementwise nonlinearities that follow linear layers in practice but have no insensitive region
# the dual kernel supports: such layers are compiled dense, with a warning.
OTHER_ACTIVATIONS = (
    "relax.nn.gelu",
    "relax.nn.gelu_tanh",
    "relax.nn.silu",
    "relax.nn.leakyrelu",
    "relax.nn.softplus",
    "relax.nn.selu",
    "relax.nn.prelu",
    "relax.clip",
    "relax.nn.softmax",
    "relax.nn.log_softmax",
    "relax.exp",
)


@dataclass
class LinearPattern:
    """Pattern pieces of one linear layer; `linear` matches with or without the bias add."""

    x: DFPattern
    weight: DFPattern
    bias: DFPattern
    biased: DFPattern
    linear: DFPattern


def linear_pattern() -> LinearPattern:
    x, weight, bias = wildcard(), is_const(), is_const()
    matmul = is_op("relax.matmul")(x, is_op("relax.permute_dims")(weight))
    biased = is_op("relax.add")(matmul, bias) | is_op("relax.add")(bias, matmul)
    return LinearPattern(x=x, weight=weight, bias=bias, biased=biased, linear=biased | matmul)


def activation_pattern(ops, inner: DFPattern) -> DFPattern:
    pattern = None
    for op in ops:
        call = is_op(op)(inner)
        pattern = call if pattern is None else pattern | call
    return pattern


def constant_array(expr: relax.Expr) -> np.ndarray:
    return expr.value.numpy()


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(v) for v in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def weight_digest(weight: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(str((weight.shape, weight.dtype.str)).encode())
    h.update(np.ascontiguousarray(weight).tobytes())
    return h.hexdigest()[:16]


def layer_key(act: str, weight_digest: str, bias_digest: str | None) -> str:
    return f"{act}:{weight_digest}:{bias_digest or 'nobias'}"


class WeightKeys:
    """Memoized weight digests: an unrolled LSTM matches the same constant at every step."""

    def __init__(self) -> None:
        self._seen: list[tuple[relax.Expr, np.ndarray, str]] = []

    def lookup(self, const: relax.Expr) -> tuple[np.ndarray, str]:
        for seen, array, digest in self._seen:
            if seen.same_as(const):
                return array, digest
        array = constant_array(const)
        digest = weight_digest(array)
        self._seen.append((const, array, digest))
        return array, digest


class RowPaddedWeights:
    """Weight constants as the GEMV and dual kernels read them, rows padded to the kernel's row
    stride (kernels/row_dot.row_stride); one padded constant per original, because an unrolled
    recurrence uses the same weight at every step. The arrays come from the pass's WeightKeys,
    which has already read them."""

    def __init__(self, keys: WeightKeys) -> None:
        self._keys = keys
        self._seen: list[tuple[relax.Expr, relax.Constant]] = []

    def get(self, const: relax.Constant, stride: int) -> relax.Expr:
        if static_shape(const)[-1] == stride:
            return const
        for seen, padded in self._seen:
            if seen.same_as(const) and static_shape(padded)[-1] == stride:
                return padded
        padded = relax.const(pad_rows(self._keys.lookup(const)[0], stride))
        self._seen.append((const, padded))
        return padded


@dataclass
class LinearSite:
    """One linear layer as found in the graph (a layer used twice is one site)."""

    key: str
    digest: str  # of the weight, which names the layer (sites.WeightKeys)
    act: str | None  # "tanh" | "sigmoid" | "relu" for candidates, the op name for others, None
    n: int
    k: int
    batch_shape: tuple[int, ...]  # leading dims of x
    has_bias: bool
    dual_ok: bool
    reason: str = ""  # why a layer with an activation cannot be dual

    @property
    def batch(self) -> int:
        return int(np.prod(self.batch_shape)) if self.batch_shape else 1


def match_key(matches, pat: LinearPattern, keys: WeightKeys, act: str) -> str:
    bias_digest = keys.lookup(matches[pat.bias])[1] if pat.bias in matches else None
    return layer_key(act, keys.lookup(matches[pat.weight])[1], bias_digest)


def use_counts(func: relax.Function) -> dict[relax.Var, int]:
    """How many bindings (and the function's result) read each variable of `func`."""
    counts: dict[relax.Var, int] = {}
    values = [binding.value for block in func.body.blocks for binding in block.bindings] + [func.body.body]
    for value in values:
        for var in relax.analysis.free_vars(value):
            counts[var] = counts.get(var, 0) + 1
    return counts


def used_elsewhere(layer_vars: list, uses: dict[relax.Var, int]) -> bool:
    """Whether a value inside a layer (its output before the activation, its matmul before the bias
    add, ...) is also read by something other than the layer's next step: the layer's dense result
    is then needed anyway, and a dual kernel could only approximate its activation."""
    return any(uses.get(var, 0) > 1 for var in layer_vars if isinstance(var, relax.Var))


def linear_vars(pre_activation: relax.Expr, var2val) -> list:
    """The variables of a linear layer ahead of its activation: the output, and the matmul's result
    when a bias add sits between them."""
    found = [pre_activation]
    value = var2val.get(pre_activation) if isinstance(pre_activation, relax.Var) else None
    if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.add":
        found += [arg for arg in value.args if isinstance(arg, relax.Var)
                  and getattr(getattr(var2val.get(arg), "op", None), "name", "") == "relax.matmul"]
    return found


def _site_from_match(
    matches, pat: LinearPattern, keys: WeightKeys, act: str, dual_act: bool, other_uses: bool
) -> LinearSite | None:
    x_shape = static_shape(matches[pat.x])
    weight, digest = keys.lookup(matches[pat.weight])
    if weight.ndim != 2:
        return None
    n, k = weight.shape
    has_bias = pat.bias in matches
    reason = ""
    if not dual_act:
        reason = f"activation {act} has no insensitive region the dual kernel supports"
    elif other_uses:
        # e.g. SiLU, z * sigmoid(z): the kernel would only approximate the activation, while the
        # other use still needs every row of z computed densely
        reason = f"its output before {act} is also used elsewhere (e.g. SiLU's z * sigmoid(z)), so it is computed densely anyway"
    elif x_shape is None or len(x_shape) < 1:
        reason = "input shape is not static"
    elif weight.dtype != np.float32 or matches[pat.x].ty.dtype != "float32":
        reason = f"dtype {weight.dtype} is not float32"
    elif has_bias and constant_array(matches[pat.bias]).shape not in ((n,), (1, n)):
        reason = "bias is not a vector over the outputs"
    elif int(np.prod(x_shape[:-1])) > MAX_BATCH:
        reason = f"batch {int(np.prod(x_shape[:-1]))} exceeds the dual kernel's maximum of {MAX_BATCH}"
    return LinearSite(
        key=match_key(matches, pat, keys, act),
        digest=digest,
        act=act,
        n=n,
        k=k,
        batch_shape=tuple(x_shape[:-1]) if x_shape else (),
        has_bias=has_bias,
        dual_ok=dual_act and not reason,
        reason=reason,
    )


def find_linear_sites(func: relax.Function) -> list[LinearSite]:
    """All linear layers of `func` followed by an activation (dual candidates and unsupported)."""
    pat = linear_pattern()
    keys = WeightKeys()
    uses = use_counts(func)
    var2val = relax.analysis.get_var2val(func)
    sites: dict[str, LinearSite] = {}

    def record(ops, dual_act):
        def rewriter(expr, matches):
            op_name = expr.op.name
            act = DUAL_ACTIVATIONS.get(op_name, op_name)
            other_uses = used_elsewhere(linear_vars(expr.args[0], var2val), uses)
            site = _site_from_match(matches, pat, keys, act, dual_act, other_uses)
            if site is None:
                return expr
            seen = sites.get(site.key)
            # a layer used twice is one site: dual only if every use can be
            if seen is None or (seen.dual_ok and not site.dual_ok):
                sites[site.key] = site
            return expr

        rewrite_call(activation_pattern(ops, pat.linear), rewriter, func)

    record(DUAL_ACTIVATIONS, True)
    record(OTHER_ACTIVATIONS, False)
    return list(sites.values())
