"""Quality budget on a trained PTB model (LSTM-750 or GRU-750): the insensitive ratio
tvm_dual.QualityBudget chooses for "at most +1% perplexity", with test perplexity, bytes of W read
and kernel time next to dense.

    .venv/bin/python scripts/quality_budget_ptb.py [--model lstm-750|gru-750] [--max-increase 0.01]

Little modules are fitted on 20,000 training tokens. The search's metric is validation perplexity
(PyTorch, batch 20, teacher forcing) on validation tokens [5000, 5000 + --search-tokens), which
thresholds never see; the compiled step model is then evaluated token by token on the first
--test-tokens test tokens. The step model has one dual layer (the decoder has no activation), so
the per-layer and the uniform answers coincide; the search still reports both.
"""

from __future__ import annotations

import argparse

import torch

import tvm_dual
from tvm_dual import ptb
from tvm_dual.commands.report import kernel_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lstm-750")
    parser.add_argument("--max-increase", type=float, default=0.01, help="relative perplexity budget (0.01 = +1%%)")
    parser.add_argument("--search-tokens", type=int, default=4000)
    parser.add_argument("--test-tokens", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = ptb.load_corpus()
    work = ptb.step_workload(args.model, corpus=corpus)
    lm = work.model.lm
    search_ids = corpus.valid[5000 : 5000 + args.search_tokens]

    def validation_ppl(_model) -> float:  # the hooks sit on lm.rnn, which the StepLM shares
        with torch.no_grad():
            return ptb.perplexity_torch(lm, search_ids, batch=20)

    dense_ppl = validation_ppl(None)
    budget = tvm_dual.QualityBudget(validation_ppl, args.max_increase * dense_ppl, higher_is_better=False)
    chosen = tvm_dual.compile_dual(work.model, work.example_inputs, calibration=work.calibration, quality_budget=budget)
    report = chosen.metadata["quality_budget"]
    print(f"search: validation perplexity {dense_ppl:.2f} exact, budget +{args.max_increase:.1%}; {report['evaluations']} evaluations")
    for choice in ("per_layer", "uniform"):
        c = report[choice]
        print(f"  {choice}: ratios {c.get('ratios', c.get('ratio'))}, perplexity {c['metric']:.2f}, "
              f"bytes saved per call {c['bytes_saved'] / 1e6:.2f} MB")
    dense = tvm_dual.compile_dual(work.model, work.example_inputs, insensitive_ratio=0.0)
    test = corpus.test[: args.test_tokens + 1]
    # kernel times over 64 steps spread over the test tokens: a step's time depends on the rows it selects
    timing_steps = ptb.spread_step_inputs(lm, test, 64, layer=False)
    dense_w = 4 * sum(p.numel() for n, p in lm.rnn.named_parameters() if n.startswith("weight_"))
    for name, module in (("dense", dense), ("budget", chosen)):
        ppl = ptb.stepwise_perplexity(module, lm.config, test)
        stats = module.stats()
        read = f"{stats[0].dual_bytes / 1e6:.2f} MB of {stats[0].dense_bytes / 1e6:.2f} MB" if len(stats) else f"{dense_w / 1e6:.2f} MB (dense)"
        profile = module.profile(rotate=timing_steps, repeat=2048)
        layer_us = {k: round(1e6 * v, 1) for k, v in kernel_times(profile, [s.name for s in stats]).items()}
        print(f"{name}: test perplexity ({args.test_tokens} tokens) {ppl:.2f}; W_ih + W_hh read per step {read}; "
              f"all kernels {1e6 * sum(profile.values()):.0f} us per step; dual layer {layer_us}")


if __name__ == "__main__":
    main()
