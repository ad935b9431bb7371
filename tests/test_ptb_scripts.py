"""scripts/train_ptb.py and scripts/eval_ptb.py refuse bad options before doing any work, and name
damaged checkpoints instead of failing inside torch."""

import dataclasses
import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tvm_dual import ptb

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_script():
    return _script("train_ptb")


@pytest.fixture(scope="module")
def eval_script():
    return _script("eval_ptb")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_DUAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ptb"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--minutes", "-1"], "--minutes must be a positive number"),
        (["--minutes", "0"], "--minutes must be a positive number"),
        (["--minutes", "nan"], "--minutes must be a positive number"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--hidden", "0"], "hidden must be a positive integer"),
        (["--dropout", "1"], r"dropout must be a probability in \[0, 1\)"),
        (["--dropout", "-0.1"], r"dropout must be a probability in \[0, 1\)"),
        (["--lr", "0"], "lr must be a positive finite number"),
    ],
)
def test_train_script_rejects_bad_options_before_writing_anything(train_script, cache, tmp_path, monkeypatch, capsys,
                                                                  argv, message):
    monkeypatch.setattr(train_script, "JOBS", tmp_path / "jobs")
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["--cell", "gru", "--hidden", "8", *argv])
    assert exit_info.value.code == 2
    assert _matches(message, capsys.readouterr().err)
    assert not cache.exists() and not (tmp_path / "jobs").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ratios", "0", "0.5", "1.0"], r"ratios must lie in \[0, 1\), got 1.0"),
        (["--ratios", "nan"], r"ratios must lie in \[0, 1\)"),
        (["--test-tokens", "0"], "test tokens must be a positive integer"),
        (["--test-tokens", "-5"], "test tokens must be a positive integer"),
        (["--calibration-tokens", "34"], "calibration tokens must be at least one sequence of 35"),
        (["--validation-tokens", "-1"], "validation tokens must be at least one sequence of 35"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--rank", "0"], "rank"),
        (["--out", "/nonexistent-folder/report.json"], "the folder /nonexistent-folder does not exist"),
    ],
)
def test_eval_script_rejects_bad_options_before_loading_a_model(eval_script, argv, message, capsys, monkeypatch):
    monkeypatch.setattr(ptb, "load_trained", _fail_if_called)
    with pytest.raises(SystemExit) as exit_info:
        eval_script.parse_args(argv)
    assert exit_info.value.code == 2
    assert _matches(message, capsys.readouterr().err)


def test_eval_script_out_may_not_be_a_folder(eval_script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        eval_script.parse_args(["--out", str(tmp_path)])
    assert "is a directory" in capsys.readouterr().err


def test_evaluate_compiled_checks_every_ratio_before_the_first_runs(monkeypatch):
    monkeypatch.setattr(ptb, "load_trained", _fail_if_called)
    with pytest.raises(ValueError, match=r"ratios must lie in \[0, 1\), got 1.5"):
        ptb.evaluate_compiled("gru-8", [0.0, 0.5, 1.5])


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_a_damaged_checkpoint_is_named(eval_script, tmp_path, capsys, content):
    path = tmp_path / "lstm-32.best.pt"
    path.write_bytes(content)
    with pytest.raises(ptb.CheckpointError, match=f"cannot read the checkpoint {path}"):
        ptb.load_trained(path)
    assert eval_script.main(["--model", str(path), "--ratios", "0"]) == 2
    assert f"error: cannot read the checkpoint {path}" in capsys.readouterr().err


def test_a_checkpoint_of_something_else_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ptb.CheckpointError, match=f"{path} is not a PTB checkpoint.*lacks model_cfg, model"):
        ptb.load_trained(path)
    torch.save({"model_cfg": {"cell": "lstm", "hidden": 0}, "model": {}}, path)
    with pytest.raises(ptb.CheckpointError, match="does not describe a PTB model: hidden must be a positive integer"):
        ptb.load_trained(path)


def test_a_missing_model_is_named(eval_script, cache, capsys):
    assert eval_script.main(["--model", "gru-8", "--ratios", "0"]) == 2
    assert f"no trained PTB model at {cache / 'gru-8.best.pt'}" in capsys.readouterr().err


def test_train_script_names_a_damaged_resume_checkpoint(train_script, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_script, "JOBS", tmp_path / "jobs")
    monkeypatch.setattr(ptb, "load_corpus", lambda max_vocab=None: _tiny_corpus())
    cache.mkdir(parents=True)
    (cache / "gru-8.pt").write_bytes(b"\x00" * 10)
    assert train_script.main(["--cell", "gru", "--hidden", "8", "--minutes", "1"]) == 2
    assert f"cannot read the checkpoint {cache / 'gru-8.pt'}" in capsys.readouterr().err
    assert not list((tmp_path / "jobs").iterdir())  # the pid file is gone


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"budget_s": 0.0}, "budget_s must be a positive finite number"),
        ({"budget_s": math.nan}, "budget_s must be a positive finite number"),
        ({"budget_s": -60.0}, "budget_s must be a positive finite number"),
        ({"batch": 0}, "batch must be a positive integer"),
        ({"max_steps": 0}, "max_steps must be None or a positive integer"),
    ],
)
def test_train_config_rejects_budgets_that_would_not_end_or_divide_by_zero(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ptb.TrainConfig(), **changes)


def test_a_stream_shorter_than_one_sequence_is_an_error():
    lm = ptb.WordLM(ptb.LMConfig(cell="gru", hidden=8, vocab=20))
    with pytest.raises(ValueError, match="a stream of 34 tokens is shorter than one chunk of 35 tokens"):
        ptb.stream_inputs(lm, np.zeros(34, np.int64))
    assert len(ptb.stream_inputs(lm, np.zeros(35, np.int64))) == 1


def test_training_saves_checkpoints_whole_and_resumes(tmp_path):
    corpus = _tiny_corpus()
    config = ptb.LMConfig(cell="gru", hidden=8, vocab=len(corpus.vocab), dropout=0.0)
    train = dataclasses.replace(ptb.TrainConfig(), max_steps=3, max_epochs=1, batch=4, bptt=5)
    checkpoint = tmp_path / "gru-8.pt"
    _, record = ptb.train_lm(config, corpus, train, checkpoint=checkpoint, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gru-8.best.pt", "gru-8.pt"]  # no .tmp left behind
    lm, saved = ptb.load_trained(tmp_path / "gru-8.best.pt")
    assert saved["valid_ppl"] == record["best_valid_ppl"] and lm.config == config
    with pytest.warns(UserWarning, match="gru-8.pt is a resume checkpoint: the last training state"):
        ptb.load_trained(checkpoint)
    with pytest.raises(ptb.CheckpointError, match="is for a model with hidden 8; give the same settings to resume"):
        ptb.train_lm(dataclasses.replace(config, hidden=9), corpus, train, checkpoint=checkpoint, log=lambda _: None)
    # resuming says what changed, and that a spent budget leaves nothing to do
    lines = []
    ptb.train_lm(config, corpus, dataclasses.replace(train, lr=1e-3), checkpoint=checkpoint, log=lines.append)
    assert any("resuming with changed training settings: lr 0.001 (was 0.002)" in line for line in lines), lines
    assert any(line.startswith("nothing to train:") for line in lines), lines


def test_sigterm_stops_training_and_removes_the_pid_file(tmp_path):
    env = dict(os.environ, TVM_DUAL_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    hidden = 8 + os.getpid() % 1000  # a name no other job uses
    pid_file = Path("/tmp/tvm_dual_jobs") / f"train_ptb_gru-{hidden}.pid"
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "train_ptb.py"), "--cell", "gru", "--hidden", str(hidden),
                             "--minutes", "10"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # the first line is logged after the pid file is written
            if line.startswith("training"):
                break
        assert pid_file.read_text().strip() == str(proc.pid)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.stdout.close()
    assert not pid_file.exists()


def _tiny_corpus() -> ptb.Corpus:
    rng = np.random.default_rng(0)
    vocab = ptb.Vocabulary([f"w{i}" for i in range(30)])
    return ptb.Corpus(vocab, *(rng.integers(0, 30, n).astype(np.int64) for n in (400, 120, 120)))


def _matches(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def _fail_if_called(*_args, **_kwargs):
    raise AssertionError("the model was loaded before the options were checked")
