"""Test perplexity of a trained PTB model whose recurrent layer runs as the numpy reference of the
gate kernel (tvm_dual/reference_gates.py), for each way of splitting the layer's insensitive ratio
over its gates (RecurrentConfig.allocation). The plans are compile_dual's own (plan_dual); only
the execution is simulated, so a comparison takes minutes instead of a compile and a compiled run
per setting (scripts/eval_ptb.py gives the compiled numbers).

    .venv/bin/python scripts/simulate_gate_ratios.py --model gru-750 --ratio 0.5 --test-tokens 2000
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import torch

from tvm_dual import ptb
from tvm_dual.api import plan_dual
from tvm_dual.gate_allocation import ALLOCATIONS
from tvm_dual.kernels.dual_gates import little_groups
from tvm_dual.little import PROJECTIONS, LittleConfig
from tvm_dual.recurrent import RecurrentConfig, RecurrentLayerPlan
from tvm_dual.reference_gates import GateWeights, cell_update, gates_reference


SATURATED = 3.0  # |pre-activation| beyond which sigmoid' < 0.05 and tanh' < 0.01: the flat parts


def simulated_perplexity(lm: ptb.WordLM, layer: RecurrentLayerPlan | None, ids: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(perplexity, insensitive fraction per gate, fraction of |pre-activation| > SATURATED per
    gate) stepping token by token from a zero state; layer None runs the exact layer."""
    H, cell = lm.config.hidden, lm.config.cell
    param = {n: p.detach().numpy().astype(np.float64) for n, p in lm.rnn.named_parameters()}
    weights = GateWeights(cell, param["weight_ih_l0"], param["weight_hh_l0"], param["bias_ih_l0"], param["bias_hh_l0"])
    embed = lm.embed.weight.detach().numpy()
    decoder, decoder_bias = lm.decoder.weight.detach().numpy().astype(np.float64), lm.decoder.bias.detach().numpy()
    gates = 4 if cell == "lstm" else 3
    lo, hi = (np.full(gates * H, -np.inf), np.full(gates * H, np.inf)) if layer is None else (layer.lo, layer.hi)
    h, c = np.zeros((1, H)), np.zeros((1, H))
    nll, masks, saturated = 0.0, [], []
    for t in range(len(ids) - 1):
        x = embed[ids[t]][None].astype(np.float64)
        u = np.concatenate([x, h], axis=1)
        little = layer.little_values(u) if layer is not None else np.zeros((1, little_groups(cell, True) * H))
        res = gates_reference(weights, True, h, x, None, lo, hi, little)
        masks.append(res.mask.reshape(gates, H).mean(axis=1))
        pre = res.out_h + res.out_x
        saturated.append((np.abs(pre.reshape(gates, H)) > SATURATED).mean(axis=1))
        h, c = cell_update(cell, res.out_x, res.out_h, h, c)
        logits = h[0] @ decoder.T + decoder_bias
        top = logits.max()
        nll += top + math.log(np.exp(logits - top).sum()) - logits[ids[t + 1]]
    return math.exp(nll / (len(ids) - 1)), 1.0 - np.mean(masks, axis=0), np.mean(saturated, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gru-750", help="trained model name (scripts/train_ptb.py) or .best.pt path")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--allocations", nargs="+", choices=ALLOCATIONS, default=list(ALLOCATIONS))
    parser.add_argument("--test-tokens", type=int, default=2000)
    parser.add_argument("--rank", type=int, default=None, help="little module rank (default: compile_dual's, capped by cost)")
    parser.add_argument("--projection", choices=PROJECTIONS, default=LittleConfig.projection,
                        help="little module projection (default: compile_dual's)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    lm, _ = ptb.load_trained(args.model)
    corpus = ptb.load_corpus()
    test = corpus.test[: args.test_tokens + 1]
    work = ptb.step_workload(args.model, corpus=corpus)
    exact, _, saturated = simulated_perplexity(lm, None, test)
    print(f"{args.model}, {args.test_tokens} test tokens: exact layer {exact:.2f}; gate pre-activations with "
          f"|x| > {SATURATED:g}: {np.round(saturated, 3).tolist()} (mean {saturated.mean():.3f})")
    for allocation in args.allocations:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            planned = plan_dual(work.model, work.example_inputs, calibration=work.calibration, validation=work.validation,
                                insensitive_ratio=args.ratio, recurrent=RecurrentConfig(allocation=allocation),
                                little=LittleConfig(rank=args.rank, projection=args.projection))
        (layer,) = planned.recurrent_plan.layers.values()
        ppl, observed, _ = simulated_perplexity(lm, layer, test)
        planned_ratios = ", ".join(f"{g} {r:.2f}" for g, r in layer.gate_ratios.items())
        print(f"ratio {args.ratio} {allocation:>12}: PPL {ppl:.2f} ({100 * (ppl / exact - 1):+.1f}%), "
              f"gate ratios planned {planned_ratios}; observed {np.round(observed, 3).tolist()} (mean {observed.mean():.3f}); "
              f"little module {layer.little.projection} rank {layer.little.P.shape[0]}, fit R² {layer.little.fit_r2:.3f}")


if __name__ == "__main__":
    main()
