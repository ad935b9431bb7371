"""Per-gate insensitive ratios of a recurrent layer: where the layer's skipped rows cost least.

A layer's insensitive ratio is a byte budget over its gate rows, and gates differ in what an
approximated output costs: the candidate gates (g, n) write their value into the state directly,
where a sigmoid gate's error is scaled by what it multiplies. On the trained PTB models at 0.5
(scripts/eval_ptb.py, compiled, 10,000 test tokens, docs/RESULTS.md), the same ratio for every gate
cost +37.5% perplexity on the GRU-750 and +5.0% on the LSTM-750; this allocation costs +3.9% (r
0.90, z 0.58, n 0.02) and +2.1% (i 0.80, f 0.87, g 0.09, o 0.24).

So each gate's ratio is chosen from a one-step proxy: the error of the layer's output h' (what the
next layer, the decoder and the next step all read) when that gate, alone, takes its little value
on the outputs it would skip, in the order its threshold skips them (largest |little
pre-activation| first). The ratios minimize the summed squared error at the layer's overall ratio
(every gate has H rows of the same size, so the overall ratio is their mean), by greedy steps of
1/STEPS on per-gate error curves that are close to convex by construction. (Measuring the
LSTM's error in c instead of h' put the output gate at ratio 1.0 and did worse in a simulation
like scripts/simulate_gate_ratios.py: +4.7% against +2.2% on 2,000 test tokens.)

The LSTM's h' depends on the cell state c, which calibration does not capture; the proxy takes
tanh(c) = h / o, from h = o_prev tanh(c) with this step's o for o_prev (correlation 0.71 with the
true c on the PTB LSTM-750; the allocation came out within 0.01 per gate of the true c's).
"""

from __future__ import annotations

import numpy as np

from .reference import activation
from .reference_gates import GateWeights

ALLOCATION_ROWS = 4000  # threshold-data steps used for the allocation (the curves need few)
STEPS = 100  # ratio resolution of the allocation
TANH_C_LIMIT = 0.99  # |tanh(c)| bound of the LSTM's cell-state estimate
ALLOCATIONS = ("output_error", "equal")


def gate_output_errors(
    weights: GateWeights, fused: bool, decision: np.ndarray, x: np.ndarray, h: np.ndarray, c: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per gate: |decision value| (S, H), the kernel's order of skipping, and the one-step error of
    h' (S, H) from taking that gate's little value there, the other gates exact. c: the LSTM's
    cell state at the step, estimated from h when not given.

    decision: the little pre-activations the kernel thresholds, (S, NL*H) in little row-group order
    (the hoisted x term already added); the GRU's fused n gate comes as its x and h parts.
    """
    H = weights.hidden
    x64, h64 = x.astype(np.float64), h.astype(np.float64)
    d = decision.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        pre_x = x64 @ weights.W_ih.T.astype(np.float64) + weights.b_ih
        pre_h = h64 @ weights.W_hh.T.astype(np.float64) + weights.b_hh
        part = [slice(k * H, (k + 1) * H) for k in range(4)]
        if weights.cell == "lstm":
            pre = pre_x + pre_h
            i, f, g, o = (activation(pre[:, p], a) for p, a in zip(part, ("sigmoid", "sigmoid", "tanh", "sigmoid")))
            il, fl, gl, ol = (activation(d[:, p], a) for p, a in zip(part, ("sigmoid", "sigmoid", "tanh", "sigmoid")))
            if c is None:  # h = o_prev tanh(c), with this step's o for o_prev
                c = np.arctanh(np.clip(h64 / o, -TANH_C_LIMIT, TANH_C_LIMIT))
            c_next = f * c + i * g
            out = np.tanh(c_next)
            errors = [o * (np.tanh(c_next + dc) - out) for dc in ((il - i) * g, (fl - f) * c, i * (gl - g))]
            errors.append((ol - o) * out)
            magnitudes = [np.abs(d[:, p]) for p in part]
        else:
            r, z = activation(pre_x[:, part[0]] + pre_h[:, part[0]], "sigmoid"), activation(pre_x[:, part[1]] + pre_h[:, part[1]], "sigmoid")
            xn, hn = pre_x[:, part[2]], pre_h[:, part[2]]
            n = np.tanh(xn + r * hn)
            n_little = d[:, part[2]] + r * d[:, part[3]] if fused else xn + r * d[:, part[2]]
            errors = [
                (1.0 - z) * (np.tanh(xn + activation(d[:, part[0]], "sigmoid") * hn) - n),
                (activation(d[:, part[1]], "sigmoid") - z) * (h64 - n),
                (1.0 - z) * (np.tanh(n_little) - n),
            ]
            magnitudes = [np.abs(d[:, part[0]]), np.abs(d[:, part[1]]), np.abs(n_little)]
    # a non-finite decision value is always computed exactly: last in the order, no error
    for m, e in zip(magnitudes, errors):
        bad = ~np.isfinite(m) | ~np.isfinite(e)
        m[bad], e[bad] = -1.0, 0.0
    return magnitudes, errors


def error_curves(magnitudes: list[np.ndarray], errors: list[np.ndarray]) -> np.ndarray:
    """(gates, STEPS + 1): mean squared state error of each gate at ratio k / STEPS."""
    curves = []
    for m, e in zip(magnitudes, errors):
        order = np.argsort(-m, axis=None, kind="stable")
        cumulative = np.concatenate([[0.0], np.cumsum(e.ravel()[order] ** 2)])
        at = np.round(np.linspace(0, m.size, STEPS + 1)).astype(int)
        curves.append(cumulative[at] / m.size)
    return np.array(curves)


def allocate(curves: np.ndarray, ratio: float) -> np.ndarray:
    """Per-gate ratios with mean `ratio` (to 1/STEPS) that minimize the summed curve values."""
    gates = len(curves)
    steps = np.zeros(gates, int)
    for _ in range(int(round(ratio * STEPS * gates))):
        cost = np.where(steps < STEPS, curves[np.arange(gates), np.minimum(steps + 1, STEPS)] - curves[np.arange(gates), steps], np.inf)
        steps[int(np.argmin(cost))] += 1
    return steps / STEPS


def gate_ratios(
    weights: GateWeights, fused: bool, decision: np.ndarray, x: np.ndarray, h: np.ndarray, ratio: float, allocation: str
) -> np.ndarray:
    """Insensitive ratio per gate (GATES order) for the layer's overall `ratio`."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"gate allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    gates = 4 if weights.cell == "lstm" else 3
    if allocation == "equal" or ratio <= 0 or ratio >= 1:
        return np.full(gates, float(ratio))
    if len(x) > ALLOCATION_ROWS:
        keep = np.random.default_rng(2).choice(len(x), ALLOCATION_ROWS, replace=False)
        x, h, decision = x[keep], h[keep], decision[keep]
    return allocate(error_curves(*gate_output_errors(weights, fused, decision, x, h)), ratio)
