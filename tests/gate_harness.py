"""Builds, runs and checks the recurrent gate kernel against the numpy reference."""

from __future__ import annotations

import functools

import numpy as np
import tvm

from tvm_dual.kernels.dual_dense import DualKernelConfig, ceil_div
from tvm_dual.kernels.dual_gates import (
    GateShape,
    gate_kernel_bias,
    gate_kernel_weights,
    little_groups,
    make_dual_gates,
    pack_gate_constants,
)
from tvm_dual.reference import little_values
from tvm_dual.reference_gates import GateWeights, gates_reference
from tvm_dual.target import host_target, vector_bits

VECTOR_BITS = vector_bits(host_target())


@functools.lru_cache(maxsize=64)
def build_gates(shape: GateShape, config: DualKernelConfig):
    func = make_dual_gates(shape, config, debug=True, vector_bits=VECTOR_BITS)
    return tvm.compile(tvm.IRModule({"main": func}), target=host_target())["main"]


def random_layer(rng, shape: GateShape):
    H, I, R = shape.hidden, shape.input_size, shape.rank
    ng, nl = shape.gates, little_groups(shape.cell, shape.fused)
    f = np.float32
    weights = GateWeights(
        cell=shape.cell,
        W_ih=(rng.standard_normal((ng * H, I)) / np.sqrt(I)).astype(f),
        W_hh=(rng.standard_normal((ng * H, H)) / np.sqrt(H)).astype(f),
        b_ih=rng.standard_normal(ng * H).astype(f),
        b_hh=rng.standard_normal(ng * H).astype(f),
    )
    K = shape.projected
    little = dict(
        P=rng.integers(-127, 128, (R, K)).astype(np.int8),
        Ps=(rng.random(R) / 127 / np.sqrt(K)).astype(f),
        WL=rng.integers(-127, 128, (nl * H, R)).astype(np.int8),
        WLs=(rng.random(nl * H) / 127 / np.sqrt(R)).astype(f),
        bL=rng.standard_normal(nl * H).astype(f),
    )
    return weights, little


def run_gates(shape: GateShape, config: DualKernelConfig, weights, little, h, x, addend, lo, hi):
    """Run the debug kernel; returns (out_h, out_x or None, count, little (B, NL*H), mask (B, NG*H))."""
    B, H, NB = shape.batch, shape.hidden, config.little_block
    nl, ng = little_groups(shape.cell, shape.fused), shape.gates
    hp = ceil_div(H, NB) * NB
    consts = pack_gate_constants(gate_kernel_bias(shape, weights.b_ih, weights.b_hh), little["P"], little["Ps"], little["WL"], little["WLs"],
                                 little["bL"], lo, hi, H, config, VECTOR_BITS)
    outs = [np.zeros((B, ng * H), np.float32), np.zeros(1, np.int32)]
    if shape.fused:
        outs.append(np.zeros((B, ng * H), np.float32))
        inputs = [x, h]
    else:
        inputs = [h, addend]
    outs += [np.zeros((B, nl * hp), np.float32), np.zeros((B, nl * hp), np.int8)]
    arrays = [*inputs, *gate_kernel_weights(shape, weights.W_ih, weights.W_hh), *consts, *outs]
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]
    build_gates(shape, config)(*args)
    res = [a.numpy() for a in args[len(arrays) - len(outs):]]
    out_h, count = res[0], int(res[1][0])
    out_x = res[2] if shape.fused else None
    lit = res[-2].reshape(B, nl, hp)[:, :, :H].reshape(B, nl * H)
    mask = res[-1].reshape(B, nl, hp)[:, :ng, :H].reshape(B, ng * H).astype(bool)
    return out_h, out_x, count, lit, mask


def check_gates(shape, config, weights, little, h, x, addend, lo, hi, atol=1e-5):
    out_h, out_x, count, lit, mask = run_gates(shape, config, weights, little, h, x, addend, lo, hi)
    u = np.concatenate([x, h], axis=1) if shape.fused else h
    ref_little = little_values(u, little["P"], little["Ps"], little["WL"], little["WLs"], little["bL"],
                               config.little_compute, VECTOR_BITS)
    finite = np.isfinite(ref_little)
    # in "i16" mode a float32 rounding of an activation can move its integer level by one step
    step = 0 if config.little_compute == "f32" else 2e-4 * np.abs(ref_little[finite]).max(initial=0)
    np.testing.assert_allclose(lit[finite], ref_little[finite], rtol=1e-5, atol=atol + step)
    assert np.array_equal(np.isnan(lit), np.isnan(ref_little))
    # decisions and values, given the kernel's own little values (so threshold ties agree)
    ref = gates_reference(weights, shape.fused, h, x, addend, lo, hi, lit)
    # the GRU n decision goes through r, whose float32 sigmoid may flip a value within rounding of
    # a bound; everything else must agree exactly
    assert np.array_equal(mask, ref.mask) or shape.cell == "gru", np.argwhere(mask != ref.mask)[:5]
    differs = mask != ref.mask
    assert differs.mean() < 0.01, differs.mean()
    assert count == int(mask.any(axis=0).sum())
    keep = ~np.broadcast_to(differs.any(axis=0), mask.shape)
    np.testing.assert_allclose(out_h[keep], ref.out_h[keep], rtol=1e-5, atol=atol)
    if shape.fused:
        np.testing.assert_allclose(out_x[keep], ref.out_x[keep], rtol=1e-5, atol=atol)
    return out_h, out_x, count, mask
