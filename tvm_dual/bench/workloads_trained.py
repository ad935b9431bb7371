"""Benchmark workloads of the trained models: a PTB language model's recurrent layer step and the
Fashion-MNIST ResNet-20. Both need their checkpoint (scripts/train_ptb.py, scripts/train_cnn.py);
without one the workload fails with the command that makes it."""

from __future__ import annotations

import math

import numpy as np

from .workloads import Workload, WorkloadError, register_workload


@register_workload("ptb_step")
def ptb_step(model: str = "lstm-750", timing_tokens: int = 64, quality_tokens: int = 2000,
             calibration_tokens: int = 20_000, validation_tokens: int = 5_000) -> Workload:
    """One token step of a trained PTB model's recurrent layer: (x (1, 1, H), state) -> (out, state).
    The embedding and the decoder are not part of the timed step (the paper times the layer); the
    quality metric runs them in numpy around the step to give validation perplexity."""

    from .. import ptb

    try:
        lm, _ = ptb.load_trained(model)
    except FileNotFoundError as err:
        raise WorkloadError(str(err)) from None
    corpus = ptb.load_corpus()
    step = ptb.step_workload(model, layer=True, calibration_tokens=calibration_tokens,
                             validation_tokens=validation_tokens, corpus=corpus)
    ids = corpus.valid[validation_tokens : validation_tokens + quality_tokens + 1]  # not used for thresholds
    timing = ptb.spread_step_inputs(lm, ids, timing_tokens)
    embed = lm.embed.weight.detach().numpy().astype(np.float32)
    decoder_w = lm.decoder.weight.detach().numpy().astype(np.float32)
    decoder_b = lm.decoder.bias.detach().numpy().astype(np.float64)
    config = lm.config

    def perplexity(predict) -> float:
        state = [np.zeros((1, 1, config.hidden), np.float32) for _ in range(2 if config.cell == "lstm" else 1)]
        nll = 0.0
        for t in range(len(ids) - 1):
            out, *state = predict(embed[ids[t]].reshape(1, 1, -1), *state)
            logits = decoder_w @ np.asarray(out, np.float32).reshape(-1) + decoder_b
            top = logits.max()
            nll += top + math.log(np.exp(logits - top).sum()) - logits[ids[t + 1]]
        return math.exp(nll / (len(ids) - 1))

    gates = 4 if config.cell == "lstm" else 3
    return Workload(
        name="ptb_step",
        params={"model": model, "timing_tokens": timing_tokens, "quality_tokens": quality_tokens,
                "calibration_tokens": calibration_tokens, "validation_tokens": validation_tokens},
        description=(f"one step of the trained PTB {config.cell.upper()}-{config.hidden} layer at batch 1 "
                     f"(W_ih and W_hh: {gates} x {config.hidden} rows each)"),
        model=step.model,
        example_inputs=step.example_inputs,
        calibration=step.calibration,
        validation=step.validation,
        timing_inputs=timing,
        torch_mkldnn=False,  # docs/PEERS.md: oneDNN's RNN is about 10x slower at one step
        quality=perplexity,
        quality_name=f"PTB validation perplexity ({quality_tokens} tokens, batch 1)",
        notes=[f"calibration: {calibration_tokens} training tokens; thresholds on {validation_tokens} validation "
               f"tokens; quality on the {quality_tokens} validation tokens after those; timing on {timing_tokens} steps "
               f"spread evenly over those {quality_tokens} tokens"],
    )


@register_workload("resnet20_fmnist")
def resnet20_fmnist(checkpoint: str = "", quality_images: int = 1000) -> Workload:
    """The Fashion-MNIST ResNet-20 at batch 1."""
    from .. import cnn

    try:
        w = cnn.workload(checkpoint or None)
    except FileNotFoundError as err:
        raise WorkloadError(str(err)) from None
    return Workload(
        name="resnet20_fmnist",
        params={"checkpoint": checkpoint, "quality_images": quality_images},
        description=w.description,
        model=w.model,
        example_inputs=w.example_inputs,
        calibration=[(batch,) for batch in w.calibration],
        timing_inputs=w.timing_inputs,
        quality=lambda predict: w.accuracy(lambda x: predict(x)[0], limit=quality_images),
        quality_name=f"Fashion-MNIST test accuracy ({quality_images} images)",
        quality_higher_is_better=True,
    )
