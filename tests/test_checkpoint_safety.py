"""Issue 14, deliverables 3 and 4: checkpoints that cannot run code, and preference files that say where
their pairs came from.

A crafted file below creates a marker file when unpickled; every way an agent reads a checkpoint
(``PPO/DQN/QLearning.load`` and ``rlhf-envs train --resume``) must refuse it without creating the
marker, and still load the checkpoints the agents write themselves.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

import rlhf_envs  # noqa: F401  (registers the env ids)
from agents import DQN, PPO, QLearning
from rlhf_envs.cli import main
from rlhf_envs.preferences.text import TextPreferenceStore


class CreatesFileWhenUnpickled:
    """Unpickling this calls ``open(path, "w")``: the marker file proves that the checkpoint ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def real_checkpoint(agent_class: type, path: Path) -> None:
    if agent_class is QLearning:
        QLearning("rlhf_envs/TabularMDP-v0", num_envs=4, device="cpu").learn(8, progress_bar=False).save(path)
        return
    options = {"num_envs": 4, "device": "cpu"}
    if agent_class is PPO:
        options |= {"n_steps": 4, "batch_size": 8, "n_epochs": 1, "normalize_rewards": True}
    else:
        options |= {"learning_starts": 4, "batch_size": 8}
    agent_class("rlhf_envs/CarDriving-v0", **options).learn(16, progress_bar=False).save(path)


def poison(path: Path, marker: Path) -> None:
    """Rewrite a real checkpoint with one extra entry that runs code when unpickled."""
    state = torch.load(path, weights_only=False)  # our own file, written just before: safe to unpickle
    state["config" if "config" in state else "gamma"] = CreatesFileWhenUnpickled(marker)
    torch.save(state, path)


def assert_refused_without_running_it(load: Callable[[], object], marker: Path) -> None:
    """``load()`` raises ``ValueError`` (or ``pickle.UnpicklingError``, what ``torch.load(weights_only=True)``
    raises) and the marker file was not created."""
    try:
        load()
    except (pickle.UnpicklingError, ValueError):
        pass
    except Exception as error:  # noqa: BLE001 - report whether the code ran, whatever came after
        ran = "ran the code in the checkpoint, then " if marker.exists() else ""
        pytest.fail(f"{ran}raised {type(error).__name__}: {error}")
    else:
        pytest.fail("loaded the checkpoint")
    assert not marker.exists(), "loading the checkpoint ran the code in it"


@pytest.mark.parametrize("agent_class", [PPO, DQN, QLearning], ids=lambda cls: cls.__name__)
def test_load_refuses_a_checkpoint_that_would_run_code(agent_class, tmp_path):
    checkpoint, marker = tmp_path / "checkpoint.pt", tmp_path / "pwned"
    real_checkpoint(agent_class, checkpoint)
    poison(checkpoint, marker)
    assert_refused_without_running_it(lambda: agent_class.load(checkpoint, device="cpu"), marker)


def test_a_bare_pickle_is_refused_too(tmp_path):
    """A plain pickle where a checkpoint should be (torch.load's legacy format unpickles it first)."""
    checkpoint, marker = tmp_path / "checkpoint.pt", tmp_path / "pwned"
    checkpoint.write_bytes(pickle.dumps(CreatesFileWhenUnpickled(marker)))
    assert_refused_without_running_it(lambda: PPO.load(checkpoint, device="cpu"), marker)


def test_train_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, capsys):
    logdir, marker = tmp_path / "run", tmp_path / "pwned"
    logdir.mkdir()
    real_checkpoint(PPO, logdir / "checkpoint.pt")
    poison(logdir / "checkpoint.pt", marker)
    argv = ["train", "--agent", "ppo", "--env", "rlhf_envs/CarDriving-v0", "--device", "cpu"]
    argv += ["--logdir", str(logdir), "--resume", "--steps", "64"]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except Exception as error:  # noqa: BLE001 - a refused checkpoint is a user error: one line, no traceback
        ran = "ran the code in the checkpoint, then " if marker.exists() else ""
        pytest.fail(f"rlhf-envs train --resume {ran}raised {type(error).__name__}: {error}")
    assert not marker.exists(), "resuming ran the code in the checkpoint"
    err = capsys.readouterr().err
    assert code not in (0, None) and "Traceback" not in err
    assert "checkpoint.pt" in err.splitlines()[-1]


@pytest.mark.parametrize("agent_class", [PPO, DQN, QLearning], ids=lambda cls: cls.__name__)
def test_checkpoints_the_agents_write_still_load(agent_class, tmp_path):
    """The safe loader must still read everything a checkpoint holds: configs with schedules, gym
    spaces, numpy arrays, RNG states, normalizers, replay buffers."""
    checkpoint = tmp_path / "checkpoint.pt"
    real_checkpoint(agent_class, checkpoint)
    agent = agent_class.load(checkpoint, device="cpu")
    obs = np.int64(0) if agent_class is QLearning else np.zeros(4, np.float32)
    assert np.asarray(agent.predict(obs)[0]).shape == ()


# -- provenance of preference files (deliverable 4) ------------------------------------------------
def test_text_preference_file_records_its_provenance_and_refuses_another_model(tmp_path):
    """``rlhf_envs.preferences.Provenance(model: str, prompts: str, labeler: str, seed: int)`` — a frozen
    dataclass saying what produced a file's pairs: the model id or path that sampled the continuations,
    the prompt source (a file path, or ``"embedded"``), the labeler (e.g. ``"synthetic:vader:beta=10"``
    or ``"human"``) and the sampling seed.

    ``TextPreferenceStore(path, provenance=None, allow_provenance_mismatch=False)``:
    - with ``provenance`` given, a new file records it in a sidecar ``<path>.provenance.json`` (the JSONL
      stays pure TRL format: ``prompt``, ``chosen``, ``rejected``, optional ``meta``);
    - ``store.provenance`` reads it back (None for a file without one: public preference sets);
    - opening a file whose recorded ``model`` differs from the given one raises ``ValueError`` naming
      ``model`` and both values; with ``allow_provenance_mismatch=True`` it warns (``UserWarning``, same
      message) and opens it; other fields are not compared (a resumed run may use another seed).
    """
    from rlhf_envs.preferences import Provenance

    path = tmp_path / "preferences.jsonl"
    recorded = Provenance(model="models/a", prompts="embedded", labeler="synthetic:vader:beta=10", seed=3)
    store = TextPreferenceStore(path, provenance=recorded)
    store.add("the cat", " sat on the mat", " ran")
    assert TextPreferenceStore(path).provenance == recorded
    assert TextPreferenceStore(path, provenance=recorded).provenance == recorded
    assert set(Dataset.from_json(str(path)).column_names) <= {"prompt", "chosen", "rejected", "meta"}

    other = Provenance(model="models/b", prompts="embedded", labeler="synthetic:vader:beta=10", seed=3)
    with pytest.raises(ValueError, match="model") as error:
        TextPreferenceStore(path, provenance=other)
    assert "models/a" in str(error.value) and "models/b" in str(error.value)
    with pytest.warns(UserWarning, match="model"):
        reused = TextPreferenceStore(path, provenance=other, allow_provenance_mismatch=True)
    assert len(reused) == 1 and reused.provenance == recorded  # the file's own record is kept

    reseeded = Provenance(model="models/a", prompts="embedded", labeler="synthetic:vader:beta=10", seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextPreferenceStore(path, provenance=reseeded)


def test_demo_refuses_labels_sampled_from_another_model(tmp_path, capsys):
    """The demo records its provenance and refuses to reuse ``--out``'s labels with another ``--model``
    (before any work) unless ``--allow-provenance-mismatch`` is given."""
    from tiny_lm import tiny_lm, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    for seed, name in ((0, "a"), (1, "b")):
        tiny_lm(tokenizer, seed=seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat\na good day\nlove and joy\nin the beginning\nthe dog\na bad day\n")
    out = tmp_path / "out"

    def demo(model: str, *extra: str) -> tuple[int, str]:
        argv = ["demo", "--quick", "--model", str(tmp_path / model), "--prompts", str(prompts)]
        try:
            code = main([*argv, "--out", str(out), "--threads", "1", *extra])
        except SystemExit as exit_:
            code = exit_.code
        return code, capsys.readouterr().err

    assert demo("a")[0] == 0
    labels = TextPreferenceStore(out / "preferences.jsonl")
    assert labels.provenance.model == str(tmp_path / "a") and labels.provenance.seed == 0
    code, err = demo("b")
    assert code not in (0, None) and "Traceback" not in err
    assert "model" in err.splitlines()[-1] and str(tmp_path / "b") in err.splitlines()[-1]
    assert len(TextPreferenceStore(out / "preferences.jsonl")) == len(labels)  # nothing added


def test_pretraining_resume_refuses_a_poisoned_checkpoint(tmp_path):
    from rlhf_envs.lm.pretrain import CHECKPOINT_FILE, PretrainConfig, load_checkpoint

    config = PretrainConfig(out=tmp_path / "model", checkpoint_dir=tmp_path / "checkpoint")
    marker = tmp_path / "ran"
    config.checkpoint_dir.mkdir()
    torch.save({"config": CreatesFileWhenUnpickled(marker)}, config.checkpoint_dir / CHECKPOINT_FILE)
    assert_refused_without_running_it(lambda: load_checkpoint(config), marker)
