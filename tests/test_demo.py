"""``rlhf-envs demo --quick``: the whole pipeline on a tiny model, and its before/after report."""

from __future__ import annotations

import json

from tiny_lm import tiny_lm, tiny_tokenizer
from transformers import AutoModelForCausalLM

from rlhf_envs.cli import main

PROMPTS = ["the cat sat", "a good day", "love and joy", "in the beginning", "the dog", "a bad day"]


def test_demo_quick_runs_and_prints_its_report(tmp_path, capsys):
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    argv = ["demo", "--quick", "--model", str(tmp_path / "lm"), "--prompts", str(tmp_path / "prompts.txt")]
    assert main([*argv, "--out", str(out), "--threads", "1"]) == 0
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
    assert set(summary["before"]) == set(summary["after"]) == {"oracle", "reward", "kl"}
    assert 0.0 <= summary["reward_model"]["eval_accuracy"] <= 1.0
    assert len((out / "preferences.jsonl").read_text().splitlines()) == 16
    for plot in ("reward.png", "kl.png"):
        assert (out / plot).stat().st_size > 0
    AutoModelForCausalLM.from_pretrained(out / "model")
