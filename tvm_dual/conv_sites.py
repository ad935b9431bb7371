"""Convolution layers in a Relax function: geometry, constant folding helpers, matching, keys.

After the conv preparation passes (transform/conv_prepare.py) a convolution layer reads

    act( conv2d(x, W)  [+ b]  [+ r] )        NHWC data, OHWI constant W, b a (1, 1, 1, C) constant

where r is any other tensor of the output's shape (the shortcut of a residual block) and act is
ReLU (ReLU6 arrives as minimum(relu(z), 6)) or absent. Matching is done by hand over the
function's bindings rather than with dataflow patterns: a residual block's `add` has a
convolution on both sides (the block's 3x3 conv and the 1x1 downsampling shortcut), and the
layer is the larger one, a choice a pattern alternation cannot make.

Layers are identified, as linear layers are, by a key of the activation and weight/bias digests
(sites.layer_key), which survives every pass that renames variables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .sites import layer_key, static_shape, use_counts, used_elsewhere, weight_digest

CONV_OP = "relax.nn.conv2d"
# A convolution with fewer multiply-adds per output than this (a stem on a 1-channel image) stays
# dense: its little module and mask would cost as much as the exact outputs.
MIN_DUAL_PATCH = 16
# The activations a dual convolution supports; the value is the kernel's name for it.
CONV_ACTIVATIONS = {"relax.nn.relu": "relu"}


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution, NHWC input (batch, height, width, c_in) and OHWI weight."""

    batch: int
    height: int
    width: int
    c_in: int
    c_out: int
    kernel_h: int
    kernel_w: int
    stride_h: int = 1
    stride_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0

    def __post_init__(self) -> None:
        if min(self.batch, self.height, self.width, self.c_in, self.c_out, self.kernel_h, self.kernel_w) < 1:
            raise ValueError(f"convolution sizes must be positive: {self}")
        if min(self.stride_h, self.stride_w) < 1 or min(self.pad_top, self.pad_left, self.pad_bottom, self.pad_right) < 0:
            raise ValueError(f"convolution strides must be positive and paddings non-negative: {self}")
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(f"convolution has an empty output: {self}")

    @property
    def out_h(self) -> int:
        return (self.height + self.pad_top + self.pad_bottom - self.kernel_h) // self.stride_h + 1

    @property
    def out_w(self) -> int:
        return (self.width + self.pad_left + self.pad_right - self.kernel_w) // self.stride_w + 1

    @property
    def padded_h(self) -> int:
        return self.height + self.pad_top + self.pad_bottom

    @property
    def padded_w(self) -> int:
        return self.width + self.pad_left + self.pad_right

    @property
    def patch(self) -> int:
        """Multiply-adds per output element (the length of an im2col row)."""
        return self.kernel_h * self.kernel_w * self.c_in

    @property
    def outputs(self) -> int:
        return self.batch * self.out_h * self.out_w * self.c_out

    @property
    def macs(self) -> int:
        return self.outputs * self.patch

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.height, self.width, self.c_in)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_h, self.out_w, self.c_out)

    @property
    def tag(self) -> str:
        return (
            f"b{self.batch}_h{self.height}_w{self.width}_ci{self.c_in}_co{self.c_out}_k{self.kernel_h}x{self.kernel_w}"
            f"_s{self.stride_h}x{self.stride_w}_p{self.pad_top}{self.pad_left}{self.pad_bottom}{self.pad_right}"
        )


def resolve(expr: relax.Expr, var2val: dict, trail: list | None = None) -> relax.Expr:
    """Follow variable bindings to the bound value (appending the variables passed to `trail`)."""
    while isinstance(expr, relax.Var) and expr in var2val:
        if trail is not None:
            trail.append(expr)
        expr = var2val[expr]
    return expr


def is_op(expr: relax.Expr, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def const_value(expr: relax.Expr, var2val: dict) -> np.ndarray | None:
    """The value of a constant, or of reshape/permute_dims chains over one (what the frontend and
    ConvertLayout wrap around weights and biases); None for anything else."""
    expr = resolve(expr, var2val)
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    if is_op(expr, "relax.permute_dims") or is_op(expr, "relax.reshape"):
        inner = const_value(expr.args[0], var2val)
        shape = static_shape(expr)
        if inner is None or shape is None:
            return None
        if is_op(expr, "relax.reshape"):
            return inner.reshape(shape)
        axes = expr.attrs.axes
        return np.transpose(inner, None if axes is None else [int(a) for a in axes])
    return None


def conv_geometry(call: relax.Call) -> tuple[ConvGeometry | None, str]:
    """(geometry, "") for an NHWC/OHWI conv2d with static shapes; (None, reason) otherwise."""
    attrs = call.attrs
    x_shape, w_shape = static_shape(call.args[0]), static_shape(call.args[1])
    if x_shape is None or w_shape is None:
        return None, "shapes are not static"
    if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) != ("NHWC", "OHWI", "NHWC"):
        return None, f"layout {attrs.data_layout}/{attrs.kernel_layout} (conv preparation did not run)"
    if int(attrs.groups) != 1:
        return None, f"groups={int(attrs.groups)} (only groups=1 is supported)"
    if any(int(d) != 1 for d in attrs.dilation):
        return None, "dilated convolution"
    if call.args[0].ty.dtype != "float32" or str(attrs.out_dtype) not in ("float32", ""):
        return None, f"dtype {call.args[0].ty.dtype} is not float32"
    top, left, bottom, right = (int(p) for p in attrs.padding)
    return (
        ConvGeometry(
            batch=x_shape[0], height=x_shape[1], width=x_shape[2], c_in=x_shape[3], c_out=w_shape[0],
            kernel_h=w_shape[1], kernel_w=w_shape[2], stride_h=int(attrs.strides[0]), stride_w=int(attrs.strides[1]),
            pad_top=top, pad_left=left, pad_bottom=bottom, pad_right=right,
        ),
        "",
    )


@dataclass
class ConvMatch:
    """One `act(conv2d(x, W) [+ b] [+ r])` found in a function (expressions of the original function)."""

    call: relax.Call  # the conv2d
    x: relax.Expr
    weight: np.ndarray  # (C_out, KH, KW, C_in) float32
    bias: np.ndarray | None  # (C_out,)
    residual: relax.Expr | None
    act: str  # "relu" | "none"
    geometry: ConvGeometry | None
    reason: str  # why it cannot be compiled by our kernels ("" if it can)
    inner: list  # the variables bound to intermediate values of the layer (conv, bias add, ...)

    @property
    def key(self) -> str:
        return conv_key(self.act, self.weight, self.bias)


def conv_key(act: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
    return layer_key(f"conv2d-{act}", weight_digest(weight), None if bias is None else weight_digest(bias))


def _conv_chain(expr: relax.Expr, var2val: dict, trail: list):
    """conv2d(x, const W) [+ const b] -> (conv call, W, b) or None."""
    expr = resolve(expr, var2val, trail)
    bias = None
    if is_op(expr, "relax.add"):
        for conv_side, bias_side in ((0, 1), (1, 0)):
            inner = resolve(expr.args[conv_side], var2val, trail)
            value = const_value(expr.args[bias_side], var2val) if is_op(inner, CONV_OP) else None
            if value is not None:
                expr, bias = inner, value
                break
        else:
            return None
    if not is_op(expr, CONV_OP):
        return None
    weight = const_value(expr.args[1], var2val)
    if weight is None or weight.ndim != 4:
        return None
    if bias is not None:
        if bias.size != weight.shape[0] or bias.shape[-1] != weight.shape[0] or bias.ndim != 4:
            return None  # not a per-output-channel bias in NHWC
        bias = bias.reshape(-1)
    return expr, weight, bias


def match_conv(expr: relax.Expr, var2val: dict, act: str) -> ConvMatch | None:
    """Match the argument of an activation (or any expression with act="none") as a conv layer."""
    trail: list = []
    chain = _conv_chain(expr, var2val, trail)
    residual = None
    if chain is None:
        trail = []
        expr = resolve(expr, var2val, trail)
        if not is_op(expr, "relax.add"):
            return None
        # residual add: the convolution with more multiply-adds is the layer, the other side the shortcut
        options = []
        for conv_side, other_side in ((0, 1), (1, 0)):
            side_trail: list = []
            found = _conv_chain(expr.args[conv_side], var2val, side_trail)
            if found is not None and const_value(expr.args[other_side], var2val) is None:
                macs = int(np.prod(found[1].shape)) * int(np.prod(static_shape(found[0]) or (0,)))
                options.append((macs, found, expr.args[other_side], side_trail))
        if not options:
            return None
        _, chain, residual, side_trail = max(options, key=lambda o: o[0])
        trail += side_trail
        if static_shape(residual) != static_shape(chain[0]) or residual.ty.dtype != "float32":
            return None
    call, weight, bias = chain
    geometry, reason = conv_geometry(call)
    if weight.dtype != np.float32:
        reason = reason or f"weight dtype {weight.dtype} is not float32"
    return ConvMatch(call=call, x=call.args[0], weight=weight, bias=None if bias is None else bias.astype(np.float32),
                     residual=residual, act=act, geometry=geometry, reason=reason, inner=trail)


def binding_values(func: relax.Function) -> list[relax.Expr]:
    """The bound values of a function's top-level bindings, in order."""
    return [b.value for block in func.body.blocks for b in block.bindings if isinstance(b, relax.VarBinding)]


@dataclass
class ConvSite:
    """A convolution layer followed by an activation, as found in the graph."""

    key: str
    act: str
    geometry: ConvGeometry | None
    weight: np.ndarray  # OHWI
    bias: np.ndarray | None
    has_residual: bool
    dual_ok: bool
    reason: str = ""


def find_conv_sites(func: relax.Function) -> list[ConvSite]:
    """All `relu(conv2d ...)` layers of `func`, in binding order (a layer used twice is one site)."""
    var2val = relax.analysis.get_var2val(func)
    uses = use_counts(func)
    sites: dict[str, ConvSite] = {}
    for value in binding_values(func):
        if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in CONV_ACTIVATIONS):
            continue
        match = match_conv(value.args[0], var2val, CONV_ACTIVATIONS[value.op.name])
        if match is None:
            continue
        reason = match.reason
        if not reason and used_elsewhere(match.inner, uses):
            reason = f"its output before {match.act} is also used elsewhere, so it is computed densely anyway"
        if not reason and match.geometry.patch < MIN_DUAL_PATCH:
            reason = f"{match.geometry.patch} multiply-adds per output: too few for a little module to save work"
        site = ConvSite(
            key=match.key, act=match.act, geometry=match.geometry, weight=match.weight, bias=match.bias,
            has_residual=match.residual is not None, dual_ok=not reason, reason=reason,
        )
        seen = sites.get(match.key)
        if seen is None or (seen.dual_ok and not site.dual_ok):  # dual only if every use can be
            sites[match.key] = site
    return list(sites.values())
