"""Text preferences: the TRL-format store, labelers, the TL;DR loader and the reward-model trainer."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from tiny_lm import tiny_lm, tiny_tokenizer

from rlhf_envs.lm.reward_model import HFRewardModel
from rlhf_envs.preferences.reward_trainer import (
    RewardModelTrainer,
    RewardTrainerConfig,
    label_synthetic_pairs,
)
from rlhf_envs.preferences.store import PreferenceFileError
from rlhf_envs.preferences.text import TextPreferenceStore, is_tie, load_text_preferences
from rlhf_envs.preferences.text_labelers import (
    TIE,
    SyntheticTextLabeler,
    TerminalTextLabeler,
    VaderSentiment,
    collect_text_preferences,
)
from rlhf_envs.preferences.tldr import format_tldr_prompt, load_tldr
from rlhf_envs.rewards.bradley_terry import preference_probability

DATA = Path(__file__).parent / "data"


def test_store_appends_reads_back_and_converts_to_a_dataset(tmp_path):
    path = tmp_path / "labels.jsonl"
    store = TextPreferenceStore(path)
    store.add("p1", "good", "bad")
    store.add("p2", "yes", "no", meta={"labeler": "test"})
    reopened = TextPreferenceStore(path)
    assert len(reopened) == 2 and reopened[1]["meta"] == {"labeler": "test"}
    assert [row["chosen"] for row in reopened] == ["good", "yes"]
    dataset = reopened.to_dataset()
    assert dataset.column_names == ["prompt", "chosen", "rejected"] and dataset[0]["rejected"] == "bad"
    assert load_text_preferences(path)["prompt"] == ["p1", "p2"]


def test_store_keeps_ties_but_leaves_them_out_of_the_dataset(tmp_path):
    path = tmp_path / "labels.jsonl"
    store = TextPreferenceStore(path)
    store.add("p1", "good", "bad")
    store.add("p2", "a table", "a chair", tie=True)
    store.add("p3", "yes", "no", meta={"labeler": "test"}, tie=True)
    reopened = TextPreferenceStore(path)
    assert len(reopened) == 3 and reopened.ties == 2
    assert [is_tie(row) for row in reopened] == [False, True, True]
    assert reopened[2]["meta"] == {"labeler": "test", "tie": True}
    assert reopened.to_dataset()["prompt"] == load_text_preferences(path)["prompt"] == ["p1"]
    with pytest.raises(ValueError, match="'meta.tie' must be true or false"):
        store.add("p", "a", "b", meta={"tie": "yes"})


def test_store_names_the_bad_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    TextPreferenceStore(path).add("p", "a", "b")
    with open(path, "a") as handle:
        handle.write('{"prompt": "p", "chosen": "a"}\n{"prompt": "p", "chos')
    with pytest.raises(PreferenceFileError, match=r"line 2: missing field\(s\) \['rejected'\]"):
        TextPreferenceStore(path)
    with pytest.warns(UserWarning, match="2, 3"):
        assert len(TextPreferenceStore(path, skip_invalid=True)) == 1
    with pytest.raises(ValueError, match="'chosen' must be a string"):
        TextPreferenceStore(tmp_path / "other.jsonl").add("p", 1, "b")


def test_datasets_in_trl_format_load_and_others_are_refused():
    rows = {"prompt": ["p"], "chosen": ["a"], "rejected": ["b"], "score": [1.0]}
    assert load_text_preferences(Dataset.from_dict(rows)).column_names == ["prompt", "chosen", "rejected"]
    with pytest.raises(ValueError, match="rejected"):
        load_text_preferences(Dataset.from_dict({"prompt": ["p"], "chosen": ["a"]}))


def test_synthetic_labeler_is_boltzmann_rational_in_vader_sentiment():
    labeler = SyntheticTextLabeler(beta=2.0, seed=0)
    happy, sad = "what a wonderful, happy day", "a terrible, sad loss"
    vader = VaderSentiment()
    expected = preference_probability(
        torch.tensor(vader("", happy)), torch.tensor(vader("", sad)), beta=2.0
    ).item()
    assert 0.5 < expected < 1 and labeler.probability("p", happy, sad) == pytest.approx(expected)
    draws = np.array([labeler("p", happy, sad) for _ in range(4000)])
    assert abs(draws.mean() - expected) < 4 * math.sqrt(expected * (1 - expected) / 4000)
    assert SyntheticTextLabeler(beta=1e6, seed=0)("p", sad, happy) == 0.0


def test_synthetic_labeler_calls_a_pair_without_sentiment_or_with_equal_scores_a_tie():
    labeler = SyntheticTextLabeler(beta=1e6, seed=0, tie_below=VaderSentiment.NEUTRAL)
    neutral, happy = "a table and a chair", "what a wonderful, happy day"
    assert VaderSentiment()("", neutral) == 0.0
    assert labeler.is_tie("p", neutral, "the door") and labeler("p", neutral, "the door") == TIE
    assert labeler("p", happy, happy) == TIE
    assert labeler("p", neutral, happy) == 0.0 and labeler("p", happy, neutral) == 1.0
    # Without tie_below the labeler flips a coin between two neutral texts, as before.
    answers = {SyntheticTextLabeler(seed=seed)("p", neutral, "the door") for seed in range(16)}
    assert answers == {0.0, 1.0}
    with pytest.raises(ValueError, match="tie_below"):
        SyntheticTextLabeler(tie_below=-0.1)


def test_terminal_labeler_reads_the_choice_and_asks_again_on_bad_input():
    output = io.StringIO()
    labeler = TerminalTextLabeler(io.StringIO("x\n2\ns\n1\n=\n"), output)
    assert labeler("PROMPT", "first", "second") == 0.0
    assert "PROMPT" in output.getvalue() and "first" in output.getvalue() and "not 'x'" in output.getvalue()
    assert labeler("p", "a", "b") is None  # skipped
    assert labeler("p", "a", "b") == 1.0
    assert labeler("p", "a", "b") == TIE  # "=": equal
    assert labeler("p", "a", "b") is None  # end of input


def test_collect_orders_chosen_and_rejected_and_drops_skips(tmp_path):
    store = TextPreferenceStore(tmp_path / "labels.jsonl")
    answers = iter([1.0, None, 0.0, TIE])
    added = collect_text_preferences(
        store,
        lambda prompt, a, b: next(answers),
        ["p1", "p2", "p3", "p4"],
        ["a1", "a2", "a3", "a4"],
        ["b1", "b2", "b3", "b4"],
    )
    assert added == 3
    assert [(row["prompt"], row["chosen"], row["rejected"], is_tie(row)) for row in store] == [
        ("p1", "a1", "b1", False),
        ("p3", "b3", "a3", False),
        ("p4", "a4", "b4", True),
    ]
    with pytest.raises(ValueError, match=r"0.5 \(a tie\), got 0.3"):
        collect_text_preferences(store, lambda prompt, a, b: 0.3, ["p"], ["a"], ["b"])


def test_tldr_posts_and_comparisons_load_from_local_files(tmp_path):
    posts = load_tldr(DATA / "tldr_posts.jsonl")
    assert len(posts) == 3 and posts.column_names == ["prompt", "summary"]
    assert posts[1]["prompt"] == (
        "SUBREDDIT: r/cooking\nTITLE: My bread never rises\nPOST: I follow the recipe exactly but the dough "
        "stays flat after two hours. The yeast is new and the kitchen is cold.\nTL;DR:"
    )
    assert posts[1]["summary"] == " Dough does not rise in a cold kitchen, why?"
    comparisons = load_tldr(DATA / "tldr_comparisons.jsonl", limit=1)
    assert len(comparisons) == 1
    assert comparisons[0]["prompt"] == format_tldr_prompt(
        "cooking", "My bread never rises", "The dough stays flat after two hours in a cold kitchen."
    )
    assert comparisons[0]["chosen"] == " Dough does not rise in a cold kitchen, why?"
    assert load_text_preferences(comparisons)[0]["rejected"] == " Bread is flat."
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"subreddit": "a", "title": "t"}\n')
    with pytest.raises(ValueError, match=r"row 0: .*\['post'\]"):
        load_tldr(bad)


def synthetic_comparisons(count: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    words = ["the cat", "the dog", "the word", "a day"]
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for _ in range(count):
        subject = words[rng.integers(len(words))]
        rows["prompt"].append(f"{subject} was")
        rows["chosen"].append(" good and happy" if rng.random() < 0.5 else " love and joy")
        rows["rejected"].append(" bad and sad" if rng.random() < 0.5 else " anger and fear")
    return Dataset.from_dict(rows)


def test_trainer_starts_from_the_lm_backbone_learns_and_saves(tmp_path):
    tokenizer = tiny_tokenizer()
    lm = tiny_lm(tokenizer)
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    config = RewardTrainerConfig(learning_rate=3e-3, num_epochs=4, batch_size=16, device="cpu")
    trainer = RewardModelTrainer(
        tmp_path / "lm",
        train_dataset=synthetic_comparisons(96, 0),
        eval_dataset=synthetic_comparisons(32, 1),
        config=config,
    )
    torch.testing.assert_close(trainer.model.transformer.wte.weight, lm.transformer.wte.weight)
    assert trainer.evaluate()["accuracy"] < 0.9
    metrics = trainer.train()
    assert metrics["eval_accuracy"] >= 0.95 and metrics["train_loss"] < math.log(2)
    trainer.save(tmp_path / "rm")
    reloaded = HFRewardModel(tmp_path / "rm", device="cpu")
    rows = synthetic_comparisons(8, 2)
    chosen = reloaded(rows["prompt"], rows["chosen"])
    assert (chosen > reloaded(rows["prompt"], rows["rejected"])).all()


def test_synthetic_labels_resume_as_the_straight_run_makes_them(tmp_path):
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    prompts = ["the cat sat", "a good day", "love and joy", "in the beginning"]
    options = dict(
        model=tmp_path / "lm", prompts=prompts, max_new_tokens=4, tie_below=0.05, device="cpu", chunk=2
    )
    straight = TextPreferenceStore(tmp_path / "straight.jsonl")
    assert label_synthetic_pairs(straight, num_pairs=6, **options) == 6
    # A run stopped after its second chunk (4 labels), resumed to the same 6.
    resumed = TextPreferenceStore(tmp_path / "resumed.jsonl")
    assert label_synthetic_pairs(resumed, num_pairs=4, **options) == 4
    assert label_synthetic_pairs(resumed, num_pairs=6, **options) == 2
    assert label_synthetic_pairs(resumed, num_pairs=6, **options) == 0
    assert (tmp_path / "resumed.jsonl").read_text() == (tmp_path / "straight.jsonl").read_text()
    # The tiny model's word pieces carry no sentiment: with tie_below, the labeler calls them ties.
    assert straight.ties == 6
