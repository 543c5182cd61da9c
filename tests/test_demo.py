"""``rlhf-envs demo --quick``: the whole pipeline on a tiny model, its before/after report, and its stages.

The tests that train run on the ``device`` fixture: the CPU, and CUDA when present.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_lm import tiny_lm, tiny_reward_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

from agents.token_ppo import CRITICS
from rlhf_envs.cli import main
from rlhf_envs.demo import (
    RecordingRewardModel,
    add_arguments,
    config_from_args,
    load_tldr_task,
    reward_model_start,
)
from rlhf_envs.device import resolve_device
from rlhf_envs.lm.assets import EMBEDDED_REWARD_MODEL_DIR
from rlhf_envs.lm.reward_model import HFRewardModel
from rlhf_envs.pipeline import (
    DemoConfig,
    collect_labels,
    evaluate_samples,
    fit_reward_model,
    make_token_ppo,
    oracle_agreement,
    split_prompts,
)
from rlhf_envs.preferences.text import TextPreferenceStore

PROMPTS = ["the cat sat", "a good day", "love and joy", "in the beginning", "the dog", "a bad day"]


def test_demo_quick_runs_and_prints_its_report(tmp_path, capsys, device):
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    argv = ["demo", "--quick", "--model", str(tmp_path / "lm"), "--prompts", str(tmp_path / "prompts.txt")]
    assert main([*argv, "--out", str(out), "--threads", "1", "--device", device]) == 0
    printed = capsys.readouterr().out
    for expected in (
        "held-out accuracy",
        "Before / after",
        "oracle score (VADER)",
        "KL(π ‖ π_pt)",
        "Samples",
    ):
        assert expected in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["before"]) == set(summary["after"]) == {"oracle", "oracle_se", "reward", "kl"}
    assert summary["evaluation"] == {"prompts": 3, "samples_per_prompt": 1, "continuations": 3}
    figures = summary["reward_model"]
    labels = TextPreferenceStore(out / "preferences.jsonl")
    assert figures["tie_fraction"] == labels.ties / len(labels)
    assert figures["accuracy_all_pairs"] == pytest.approx(
        figures["eval_accuracy"] * (1 - figures["tie_fraction"]) + 0.5 * figures["tie_fraction"]
    )
    # Before fine-tuning the sampled policy is π_pt itself: the KL is zero.
    assert summary["before"]["kl"] == 0.0
    assert summary["after"]["kl"] != summary["before"]["kl"]
    assert len((out / "preferences.jsonl").read_text().splitlines()) == 16
    for plot in ("reward.png", "kl.png"):
        assert (out / plot).stat().st_size > 0
    AutoModelForCausalLM.from_pretrained(out / "model")


GOOD = ["love and joy", "a good day", "peace and love", "joy and peace"]
BAD = ["anger and fear", "a bad day", "fear and war", "war and anger"]


def test_stages_fit_a_learnable_preference(tmp_path, device):
    """The pipeline's stages on their own: labels that always prefer the kind words are learned."""
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer).save_pretrained(tmp_path / "lm")
    store = TextPreferenceStore(tmp_path / "preferences.jsonl")
    for i in range(48):
        store.add(PROMPTS[i % 4], GOOD[i % 4], BAD[(i // 4) % 4])
    config = DemoConfig(rm_epochs=3, rm_learning_rate=1e-3, rm_batch_size=8)
    fit = fit_reward_model(str(tmp_path / "lm"), tokenizer, store, config, 0, resolve_device(device))
    assert fit.metrics["eval_accuracy"] == 1.0
    oracle = lambda prompt, completion: float(completion in GOOD)  # noqa: E731
    assert oracle_agreement(fit.reward_model, oracle, fit.eval_pairs) == 1.0

    # Fine-tuning a fitted reward model: it starts where the first fit ended, on the same held-out pairs.
    fit.reward_model.model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    again = fit_reward_model(str(tmp_path / "rm"), tokenizer, store, config, 0, resolve_device(device))
    assert again.metrics["start_accuracy"] == 1.0 and again.eval_pairs.to_dict() == fit.eval_pairs.to_dict()


def test_ties_are_left_out_of_the_fit_and_counted_half_right_in_the_accuracy_on_all_pairs(tmp_path):
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer).save_pretrained(tmp_path / "lm")
    store = TextPreferenceStore(tmp_path / "preferences.jsonl")
    for i in range(48):
        store.add(PROMPTS[i % 4], GOOD[i % 4], BAD[(i // 4) % 4])
    for i in range(16):  # ties in the learned order's reverse: fitted, they would pull it apart
        store.add(PROMPTS[i % 4], BAD[i % 4], GOOD[i % 4], tie=True)
    config = DemoConfig(rm_epochs=3, rm_learning_rate=1e-3, rm_batch_size=8)
    fit = fit_reward_model(str(tmp_path / "lm"), tokenizer, store, config, 0, resolve_device("cpu"))
    assert fit.metrics["eval_accuracy"] == 1.0 and fit.metrics["tie_fraction"] == 0.25
    assert fit.metrics["accuracy_all_pairs"] == 1.0 * 0.75 + 0.5 * 0.25
    assert set(fit.eval_pairs["chosen"]) <= set(GOOD)  # the held-out pairs are decisive ones

    ties_only = TextPreferenceStore(tmp_path / "ties.jsonl")
    for i in range(8):
        ties_only.add(PROMPTS[i % 4], GOOD[i % 4], BAD[i % 4], tie=i > 0)
    with pytest.raises(ValueError, match="1 of 8 labels prefer one completion"):
        fit_reward_model(str(tmp_path / "lm"), tokenizer, ties_only, config, 0, resolve_device("cpu"))


def test_synthetic_labeler_of_the_budget_ties_as_configured():
    oracle = lambda prompt, completion: 0.0  # noqa: E731
    assert DemoConfig().synthetic_labeler(oracle, seed=0)("p", "a", "b") == 0.5
    # --quick's 16 pairs of a tiny model's word pieces would be all ties: it labels without them.
    assert DemoConfig.quick().synthetic_labeler(oracle, seed=0)("p", "a", "b") in (0.0, 1.0)


def test_command_line_budget_ties_unless_told_not_to():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])) == DemoConfig()
    assert config_from_args(parser.parse_args(["--no-ties"])).labeler_tie_below is None
    quick = config_from_args(parser.parse_args(["--quick", "--pairs", "30"]))
    assert quick.labeler_tie_below is None and quick.pairs == 30 and quick.new_tokens == 8
    assert not config_from_args(parser.parse_args(["--rm-from-lm"])).pretrained_reward_model
    steered = config_from_args(parser.parse_args(["--kl-coef", "0.1", "--kl-target", "5"]))
    assert (steered.kl_coef, steered.kl_target) == (0.1, 5.0) and DemoConfig().kl_target is None
    # Extra actions go with the r_φ critic: the other critic drops the default's, unless told.
    other = next(critic for critic in CRITICS if critic != DemoConfig().critic)
    switched = config_from_args(parser.parse_args(["--critic", other]))
    assert switched.critic == other and switched.extra_actions == 0
    branched = config_from_args(parser.parse_args(["--critic", "reward_model", "--extra-actions", "4"]))
    assert (branched.critic, branched.extra_actions) == ("reward_model", 4)
    with pytest.raises(ValueError, match="0 unless the critic is the reward model"):
        config_from_args(parser.parse_args(["--critic", "value_head", "--extra-actions", "4"]))


def test_r_phi_starts_from_the_embedded_reward_model_only_for_the_embedded_sentiment_task():
    config = DemoConfig()
    assert reward_model_start("embedded", "sentiment", config) == EMBEDDED_REWARD_MODEL_DIR
    assert reward_model_start("embedded", "tldr", config) == "embedded"
    assert reward_model_start("gpt2", "sentiment", config) == "gpt2"
    config.pretrained_reward_model = False
    assert reward_model_start("embedded", "sentiment", config) == "embedded"


def test_evaluation_samples_each_prompt_again_after_the_first_continuations(device):
    tokenizer = tiny_tokenizer()
    model = tiny_lm(tokenizer).to(device)
    oracle = lambda prompt, completion: float(len(completion) % 3)  # noqa: E731
    reward = lambda prompts, completions: torch.zeros(len(prompts))  # noqa: E731
    once = evaluate_samples(model, model, tokenizer, PROMPTS, oracle, reward, 4, seed=0, batch_size=2)
    thrice = evaluate_samples(
        model, model, tokenizer, PROMPTS, oracle, reward, 4, seed=0, samples=3, batch_size=2
    )
    assert len(thrice.completions) == 3 * len(PROMPTS)
    assert thrice.completions[: len(PROMPTS)] == once.completions
    scores = np.array([oracle(p, c) for p, c in zip(PROMPTS * 3, thrice.completions, strict=True)])
    assert thrice.oracle == pytest.approx(scores.mean())
    assert thrice.oracle_se == pytest.approx(scores.std(ddof=1) / np.sqrt(len(scores)))
    with pytest.raises(ValueError, match="samples must be >= 1"):
        evaluate_samples(model, model, tokenizer, PROMPTS, oracle, reward, 4, seed=0, samples=0)


def test_make_token_ppo_takes_the_budgets_ppo_settings():
    tokenizer = tiny_tokenizer()
    reward = lambda prompts, completions: torch.zeros(len(prompts))  # noqa: E731
    config = DemoConfig.quick()
    config.entropy_coef, config.kl_coef, config.ppo_epochs = 0.03, 0.2, 3
    agent = make_token_ppo(tiny_lm(tokenizer), tokenizer, PROMPTS, reward, config, torch.device("cpu"), 0)
    assert (agent.config.ent_coef, agent.config.kl_coef, agent.config.n_epochs) == (0.03, 0.2, 3)
    assert (agent.config.n_steps, agent.env.num_envs) == (config.new_tokens, config.batch)


def test_make_token_ppo_takes_r_phi_as_the_critic_where_it_reads_the_lms_tokens():
    """Asked for r_φ as the critic, the demo takes r_φ of the text so far when r_φ scores every token
    of the LM's ids (through the demo's recording wrapper too), else a value head (for a plain
    callable, say)."""
    tokenizer = tiny_tokenizer()
    config, cpu = DemoConfig.quick(), torch.device("cpu")
    config.critic = "reward_model"
    r_phi = RecordingRewardModel(HFRewardModel(tiny_reward_model(tokenizer), tokenizer, device="cpu"), None)
    agent = make_token_ppo(tiny_lm(tokenizer), tokenizer, PROMPTS, r_phi, config, cpu, 0)
    assert (agent.config.critic, agent.config.gae_lambda, agent.config.vf_coef) == ("reward_model", 0.0, 0.0)
    config.extra_actions = 3
    agent = make_token_ppo(tiny_lm(tokenizer), tokenizer, PROMPTS, r_phi, config, cpu, 0)
    assert (agent.config.critic, agent.config.extra_actions) == ("reward_model", 3)
    plain = lambda prompts, completions: torch.zeros(len(prompts))  # noqa: E731
    agent = make_token_ppo(tiny_lm(tokenizer), tokenizer, PROMPTS, plain, config, cpu, 0)
    assert (agent.config.critic, agent.config.gae_lambda, agent.config.extra_actions) == (
        "value_head",
        0.95,
        0,
    )
    with pytest.raises(ValueError, match="critic must be one of"):
        DemoConfig(critic="value")


def test_collect_labels_adds_only_the_missing_pairs(tmp_path, device):
    tokenizer = tiny_tokenizer()
    store = TextPreferenceStore(tmp_path / "preferences.jsonl")
    store.add("the cat sat", "on the mat", "on the log")
    asked = []

    def labeler(prompt: str, a: str, b: str) -> float:
        asked.append(prompt)
        return 1.0

    config = DemoConfig(pairs=5, pair_tokens=4)
    train, held_out = split_prompts(PROMPTS, eval_prompts=2, seed=0)
    assert sorted(train + held_out) == sorted(PROMPTS) and len(held_out) == 2
    model = tiny_lm(tokenizer).to(device)
    assert collect_labels(store, labeler, model, tokenizer, train, config, seed=0) == 4
    assert len(store) == 5 and len(asked) == 4 and set(asked) <= set(train)
    assert collect_labels(store, labeler, model, tokenizer, train, config, seed=0) == 0


DATA = Path(__file__).resolve().parent / "data"
TLDR_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "tldr_example.jsonl"


def test_demo_tldr_quick_runs_on_the_shipped_example(tmp_path, capsys):
    """Issue 12: the TL;DR task on the embedded model; r_φ is fitted to the file's comparisons and the
    posts, longer than the context leaves beside a 48-token summary, are cut on the left."""
    out = tmp_path / "out"
    argv = ["demo", "--task", "tldr", "--prompts", str(TLDR_EXAMPLE), "--quick", "--out", str(out)]
    assert main([*argv, "--threads", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "TL;DR prompts cut on the left" in printed and "36 labelled comparisons" in printed
    assert "held-out accuracy" in printed and "oracle score" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "tldr" and summary["config"]["new_tokens"] == 48
    assert 0.0 <= summary["reward_model"]["eval_accuracy"] <= 1.0
    assert summary["before"]["oracle"] is None and summary["after"]["oracle"] is None
    assert summary["before"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert summary["after"]["kl"] != summary["before"]["kl"]
    assert not (out / "preferences.jsonl").exists()  # the labels are the file's
    AutoModelForCausalLM.from_pretrained(out / "model")


def test_tldr_task_reads_raw_and_trl_layouts_alike(tmp_path):
    rows = [json.loads(line) for line in TLDR_EXAMPLE.read_text().splitlines()]
    prompts, comparisons = load_tldr_task(TLDR_EXAMPLE, reward_model=None, human=None)
    assert len(prompts) == len(rows) and all(prompt.endswith("TL;DR:") for prompt in prompts)
    assert comparisons is not None and len(comparisons) == len(rows)
    trl = tmp_path / "trl.jsonl"
    trl.write_text("".join(json.dumps(row) + "\n" for row in comparisons))
    trl_prompts, trl_comparisons = load_tldr_task(trl, reward_model=None, human=None)
    assert trl_prompts == prompts and trl_comparisons.to_list() == comparisons.to_list()
    posts = tmp_path / "posts.jsonl"  # summarize_from_feedback's posts: the fields under "info"
    posts.write_text("".join(json.dumps({"info": row["info"]}) + "\n" for row in rows))
    assert load_tldr_task(posts, reward_model="some/reward-model", human=None) == (prompts, None)
    # A given reward model replaces fitting one to the file's comparisons.
    assert load_tldr_task(TLDR_EXAMPLE, reward_model="some/reward-model", human=None) == (prompts, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "tldr"], "--task tldr needs --prompts"),
        (["--task", "tldr", "--prompts", str(DATA / "tldr_posts.jsonl")], "without comparisons"),
        (["--task", "tldr", "--prompts", str(TLDR_EXAMPLE), "--human"], "--human labels the sentiment"),
    ],
)
def test_demo_tldr_refuses_what_it_cannot_run(tmp_path, capsys, argv, message):
    assert main(["demo", *argv, "--quick", "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
