"""A tiny LSTM language model trained on a slice of PTB keeps its perplexity with dual gates."""

import dataclasses
import warnings

import pytest
import torch

import tvm_dual
from tvm_dual import ptb


@pytest.fixture(scope="module")
def tiny_lm():
    corpus = ptb.load_corpus(max_vocab=2000)
    config = ptb.LMConfig(cell="lstm", hidden=64, vocab=len(corpus.vocab), dropout=0.0)
    train = dataclasses.replace(ptb.TrainConfig(), budget_s=600, max_steps=300, lr=5e-3, batch=16)
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    # one thread without mkldnn is the fastest here for so small a model (and the machine is shared)
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    try:
        lm, _ = ptb.train_lm(config, corpus, train, train_ids=corpus.train[:60000], valid_ids=corpus.valid[:3000],
                             log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
    return corpus, config, lm


def test_tiny_lstm_lm_keeps_perplexity_at_ratio_0_3(tiny_lm):
    corpus, config, lm = tiny_lm
    step = ptb.StepLM(lm)
    test = corpus.test[:1200]
    calibration = ptb.stream_inputs(lm, corpus.train[:8000], chunk=10)
    validation = ptb.stream_inputs(lm, corpus.valid[:3000], chunk=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tvm_dual.DualCompileWarning)
        dense = tvm_dual.compile_dual(step, ptb.step_inputs(config), insensitive_ratio=0.0)
        dual = tvm_dual.compile_dual(step, ptb.step_inputs(config), calibration=calibration, validation=validation,
                                     insensitive_ratio=0.3)
    with torch.no_grad():
        torch_ppl = ptb.stepwise_perplexity(lambda *a: [t.numpy() for t in step(*map(torch.from_numpy, a))], config, test)
    dense_ppl = ptb.stepwise_perplexity(dense, config, test)
    dual_ppl = ptb.stepwise_perplexity(dual, config, test)
    assert abs(dense_ppl - torch_ppl) <= 1e-3 * torch_ppl
    assert dense_ppl < 600  # it learned something (a uniform guess over 2000 words is 2000)
    assert dual_ppl <= 1.05 * dense_ppl, (dual_ppl, dense_ppl)
    (layer,) = dual.stats()
    assert layer.name == "lm.rnn.l0" and abs(layer.observed_ratio - 0.3) < 0.08
    assert layer.dual_bytes < layer.dense_bytes
