"""Do the sensitive gate rows of a trained PTB LSTM cluster? If rows that are sensitive together
were stored together, the gate kernel would read runs of rows instead of scattered ones
(scripts/bench_gate_kernel.py --run-length shows what runs are worth).

Exact gate pre-activations over validation tokens, one |v| quantile per gate so that --sensitive of
all gate rows are sensitive (the compiled model's little values and thresholds differ in detail);
prints how often each row is sensitive and the mean run of consecutive sensitive rows per span of
--span-units units (4 gates each), in the kernel's order and with each span's rows ordered by
sensitivity frequency, next to independent random rows.

    .venv/bin/python scripts/gate_row_coactivation.py --model lstm-750 --tokens 3000

Needs the trained checkpoint (scripts/train_ptb.py).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tvm_dual import ptb


def mean_run(masks: np.ndarray) -> float:
    """Mean length of the runs of consecutive True in each row of masks, averaged over rows."""
    edges = np.diff(np.pad(masks.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    runs = [np.mean(np.flatnonzero(e == -1) - np.flatnonzero(e == 1)) for e in edges if (e == 1).any()]
    return float(np.mean(runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lstm-750", help="an LSTM checkpoint name")
    ap.add_argument("--tokens", type=int, default=3000)
    ap.add_argument("--sensitive", type=float, default=0.5)
    ap.add_argument("--span-units", type=int, default=128, help="units per span (4 blocks of 32 for 750 units)")
    args = ap.parse_args()

    lm, _ = ptb.load_trained(args.model)
    lm.eval()
    rnn = lm.rnn
    if not isinstance(rnn, torch.nn.LSTM):
        raise SystemExit(f"{args.model} is not an LSTM")
    H = rnn.hidden_size
    ids = torch.tensor(np.asarray(ptb.load_corpus().valid[: args.tokens]), dtype=torch.long).reshape(-1, 1)
    with torch.no_grad():
        x = lm.embed(ids)[:, 0]
        out, _ = rnn(x[:, None])
        h_prev = torch.cat([torch.zeros(1, H), out[:-1, 0]])
        pre = (x @ rnn.weight_ih_l0.T + h_prev @ rnn.weight_hh_l0.T + rnn.bias_ih_l0 + rnn.bias_hh_l0).numpy()
    sens = np.zeros(pre.shape, dtype=bool)
    for g in range(4):
        v = np.abs(pre[:, g * H : (g + 1) * H])
        sens[:, g * H : (g + 1) * H] = v <= np.quantile(v, args.sensitive)
    freq = sens.mean(0)
    print(f"{args.model}, {len(ids)} tokens: {sens.mean():.3f} of gate rows sensitive")
    print("row sensitivity frequency, 10/25/50/75/90% quantiles:", np.round(np.quantile(freq, [0.1, 0.25, 0.5, 0.75, 0.9]), 3))
    kernel_order, by_frequency = [], []
    for s0 in range(0, H, args.span_units):
        rows = np.concatenate([np.arange(g * H + s0, g * H + min(s0 + args.span_units, H)) for g in range(4)])
        kernel_order.append(mean_run(sens[:, rows]))
        by_frequency.append(mean_run(sens[:, rows[np.argsort(-freq[rows], kind="stable")]]))
    random_rows = np.random.default_rng(0).random(sens.shape) < sens.mean()
    print(f"mean run of consecutive sensitive rows per span: kernel order {np.mean(kernel_order):.2f}, "
          f"ordered by frequency {np.mean(by_frequency):.2f}, independent random rows {mean_run(random_rows[:, :4 * args.span_units]):.2f}")


if __name__ == "__main__":
    main()
