"""``rlhf-envs demo``: the lecture's RLHF pipeline end to end, on the embedded language model by default.

1. sample pairs of continuations of prompts from the pretrained LM π_pt (by default held-out Brown
   sentences cut right before an adjective, "The food was", so that a continuation says how something was);
2. label them: a synthetic, Boltzmann-rational labeler whose hidden score is VADER's sentiment (the
   "oracle"), answering "equal" when neither continuation leaves VADER's neutral band; or people:
   in the terminal (``--human``) or in the browser (``--human web``, the labelling app;
   ``--label-mode async`` fits the reward model once ``--min-labels`` are given while the page
   keeps taking labels for the next run);
3. fit a reward model r_φ to the decisive labels (Bradley–Terry) and report its held-out accuracy on
   decisive pairs, the share of ties and its accuracy with the ties counted half right;
4. fine-tune the LM with PPO on the TokenEnv, reward r_φ on the last token and a KL penalty
   against π_pt on every token, β fixed (``--kl-coef``) or steered by the adaptive controller
   (``--kl-target``); the critic is r_φ of the text so far, which also credits extra tokens drawn at
   each visited state (``--critic``, ``--extra-actions``);
5. report the oracle score, r_φ's score and KL(π ‖ π_pt) before and after on held-out prompts, a
   table of before/after samples for the same prompts, plots of reward and KL over training, and
   save the fine-tuned model (a Hugging Face folder) to ``--out``.

``--task tldr --prompts FILE`` runs the lecture's summarization task instead: FILE holds Reddit
TL;DR posts or comparisons of two summaries (OpenAI's ``summarize_from_feedback`` layout, or TRL's
``prompt``/``chosen``/``rejected``; see :mod:`rlhf_envs.preferences.tldr`); r_φ is fitted to the file's
comparisons (steps 1-2 are the file's labels) unless ``--reward-model`` gives one, and the policy writes
48-token summaries. Prompts longer than the model's context leaves are cut on the left (the post's end
and ``TL;DR:`` stay). There is no oracle for summaries: the report gives r_φ and KL.

The stages are the functions of :mod:`rlhf_envs.pipeline`; this module runs them in order
(:func:`run_demo`) and reports. The defaults fit in 5 minutes on a 2-core CPU; a GPU is used when present.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import transformers
from datasets import Dataset
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from agents.token_ppo import CRITICS, TokenPPO
from rlhf_envs.cli import nonnegative_int, positive_float, positive_int
from rlhf_envs.device import resolve_device
from rlhf_envs.label import LabelSession, WebLabeler
from rlhf_envs.lm.assets import EMBEDDED_REWARD_MODEL_DIR, EVALUATIVE_PROMPTS_FILE, load_prompts
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.lm.reward_model import HFRewardModel, TextRewardFn
from rlhf_envs.pipeline import (
    DemoConfig,
    SampleReport,
    collect_labels,
    cut_prompts,
    evaluate_samples,
    fit_reward_model,
    make_token_ppo,
    oracle_agreement,
    sample_missing_pairs,
    split_prompts,
)
from rlhf_envs.preferences.store import Provenance, ProvenanceMismatch
from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.preferences.text_labelers import TerminalTextLabeler, VaderSentiment
from rlhf_envs.preferences.tldr import load_tldr

__all__ = ["DemoConfig", "WebLabelling", "add_arguments", "run", "run_demo"]

#: The demo's tasks: continuations scored for sentiment, or the lecture's TL;DR summaries.
TASKS = ("sentiment", "tldr")
#: Tokens of a TL;DR summary (Stiennon et al. 2020).
TLDR_SUMMARY_TOKENS = 48
# A policy's figures on the held-out prompts as summary.json gives them (oracle_se: the oracle mean's
# standard error over the continuations).
SAMPLE_FIGURES = ("oracle", "oracle_se", "reward", "kl")

WEB_INSTRUCTIONS = (
    "Which continuation is better? The demo scores its result with a sentiment oracle: "
    "prefer the more positive, cheerful text."
)


@dataclass
class WebLabelling:
    """How ``--human web`` serves the pairs in the browser (see ``rlhf_envs.label``).

    Args:
        mode: ``"sync"``: the demo waits until every pair is labelled; ``"async"``: it goes on once
            ``min_labels`` are in the store, and the page keeps taking labels until the demo ends.
        min_labels: labels the reward model waits for in ``"async"`` mode (default: half the pairs).
        host, port, token: where the app listens; any host but 127.0.0.1 needs a token (generated
            and printed when not given).
        undo_seconds: how long a label can be undone.
    """

    mode: Literal["sync", "async"] = "sync"
    min_labels: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    undo_seconds: float = 10.0


class RecordingRewardModel:
    """The reward model the env calls, also scoring each finished episode with the oracle, when there
    is one (for the plots)."""

    def __init__(self, reward_model: TextRewardFn, oracle: Callable[[str, str], float] | None) -> None:
        self.reward_model, self.oracle = reward_model, oracle
        #: The index of the rollout in progress (set to read the agent's count once there is an agent).
        self.rollout_index: Callable[[], int] = lambda: 0
        self.records: list[tuple[int, float, float]] = []  # (rollout, r_φ, oracle) per episode

    def __getattr__(self, name: str) -> Any:
        # The rest of the reward model's surface (token_scores, tokenizer, ...) is the wrapped one's.
        if name == "reward_model":  # not set yet (unpickling, copying): no recursion
            raise AttributeError(name)
        return getattr(self.reward_model, name)

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        scores = self.reward_model(prompts, completions)
        for prompt, completion, score in zip(prompts, completions, scores.tolist(), strict=True):
            oracle = math.nan if self.oracle is None else self.oracle(prompt, completion)
            self.records.append((self.rollout_index(), score, oracle))
        return scores

    def per_rollout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        records = np.array(self.records).reshape(-1, 3)
        rollouts = np.unique(records[:, 0])
        means = np.array([records[records[:, 0] == r, 1:].mean(0) for r in rollouts]).reshape(-1, 2)
        return rollouts, means[:, 0], means[:, 1]


def _shorten(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _save_plots(out: Path, recorder: RecordingRewardModel, history: list, rollout_size: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rollouts, rewards, oracles = recorder.per_rollout()
    steps = (rollouts + 1) * rollout_size
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, rewards, label="reward model r_φ")
    if recorder.oracle is not None:
        ax.plot(steps, oracles, label="oracle (VADER)")
    ax.set(xlabel="env steps (tokens)", ylabel="mean score of finished episodes", title="Reward over PPO")
    ax.legend()
    fig.tight_layout()
    reward_path = out / "reward.png"
    fig.savefig(reward_path, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    kl_steps = (np.arange(len(history)) + 1) * rollout_size
    ax.plot(kl_steps, [stats.kl for stats in history], label="KL(π ‖ π_pt) per episode")
    ax.set(xlabel="env steps (tokens)", ylabel="nats", title="KL over PPO")
    beta_axis = ax.twinx()
    kl_coefs = [stats.kl_coef for stats in history]
    beta_axis.plot(kl_steps, kl_coefs, color="tab:red", label="β")
    beta_axis.set_ylabel("β", color="tab:red")
    # From 0, with headroom above: a fixed β is a flat line, not one magnified into noise or under the legend.
    highest = max(kl_coefs, default=0.0)
    beta_axis.set_ylim(0, 1.3 * highest if highest > 0 else 1.0)
    ax.legend(loc="upper left")
    fig.tight_layout()
    kl_path = out / "kl.png"
    fig.savefig(kl_path, dpi=100)
    plt.close(fig)
    return [reward_path, kl_path]


def run_demo(
    model: str = "embedded",
    reward_model: str | None = None,
    out: str | Path = "rlhf_demo",
    config: DemoConfig | None = None,
    human: Literal["terminal", "web"] | None = None,
    prompts: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    console: Console | None = None,
    web: WebLabelling | None = None,
    allow_provenance_mismatch: bool = False,
    task: Literal["sentiment", "tldr"] = "sentiment",
) -> dict[str, object]:
    """Run the demo (see the module docstring); returns its figures, also saved to ``summary.json``
    (strict JSON: an undefined figure is ``null``).

    ``human``: who labels: ``None`` the synthetic labeler, ``"terminal"``, or ``"web"`` (the
    labelling app, served as ``web`` says). The labels in ``out`` record the model that sampled
    their pairs; reusing them for another ``model`` needs ``allow_provenance_mismatch``. Arguments,
    output paths and the model's context are checked before any work.

    ``task``: ``"sentiment"`` or ``"tldr"`` (``prompts`` is then a TL;DR file; see the module docstring).
    """
    config = config or DemoConfig()
    console = console or Console()
    out = Path(out)
    # Everything that can be refused is checked before any work: a late failure would lose it.
    check_output_folder(out)
    device = resolve_device(device)
    store = comparisons = None
    if task == "tldr":
        all_prompts, comparisons = load_tldr_task(prompts, reward_model, human)
    elif task == "sentiment":
        all_prompts = load_prompts(EVALUATIVE_PROMPTS_FILE if prompts is None else prompts)
    else:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if reward_model is None and comparisons is None:
        synthetic = f"synthetic:vader:beta={config.labeler_beta}:tie_below={config.labeler_tie_below}"
        labeler = synthetic if human is None else f"human:{human}"
        provenance = Provenance(
            model=str(model), prompts=str(prompts or "embedded"), labeler=labeler, seed=seed
        )
        store = open_label_store(out / "preferences.jsonl", provenance, allow_provenance_mismatch)
    laps = Laps()
    reference, tokenizer = load_causal_lm(model, device=device)
    context = model_context(reference)
    if task == "tldr" and context is not None:
        budget = context - config.new_tokens
        if budget < 1:
            raise ValueError(
                f"--new-tokens {config.new_tokens} leaves no room for a prompt in the model's context of "
                f"{context} tokens"
            )
        all_prompts, cut = cut_prompts(tokenizer, all_prompts, budget)
        console.print(
            f"{cut} of {len(all_prompts)} TL;DR prompts cut on the left to {budget} tokens: the model's "
            f"context is {context} tokens, {config.new_tokens} of them for the summary"
        )
    check_context(reference, tokenizer, all_prompts, config)
    out.mkdir(parents=True, exist_ok=True)
    train_prompts, eval_prompts = split_prompts(all_prompts, config.eval_prompts, seed)
    console.rule(f"[bold]RLHF demo[/]: model {model!r} on {device}")
    console.print(
        f"{len(train_prompts)} training prompts, {len(eval_prompts)} held-out prompts; "
        f"outputs in {out.resolve()}"
    )
    oracle = VaderSentiment() if task == "sentiment" else None
    summary: dict[str, object] = {
        "task": task,
        "model": model,
        "device": str(device),
        "config": asdict(config),
    }

    web_labeler = None
    rm_start = reward_model_start(model, task, config)
    if store is not None:
        if human == "web":
            web_labeler = web_label_stage(
                store, reference, tokenizer, train_prompts, config, seed, web or WebLabelling(), console
            )
        else:
            label_stage(store, reference, tokenizer, train_prompts, oracle, config, human, seed, console)
        laps.lap("label")
        rm, summary["reward_model"] = reward_model_stage(
            rm_start, tokenizer, store, oracle, config, seed, device, out, console
        )
        laps.lap("reward model")
    elif comparisons is not None:
        console.print(f"[1-2] {len(comparisons)} labelled comparisons from {prompts}")
        rm, summary["reward_model"] = reward_model_stage(
            rm_start, tokenizer, comparisons, oracle, config, seed, device, out, console
        )
        laps.lap("reward model")
    else:
        rm = HFRewardModel(reward_model, device=device)
        console.print(f"[1-3] using the reward model {reward_model!r}")
        summary["reward_model"] = {"name": reward_model}

    def evaluate(policy_model, desc: str) -> SampleReport:
        return evaluate_samples(
            policy_model,
            reference,
            tokenizer,
            eval_prompts,
            oracle,
            rm,
            config.new_tokens,
            seed,
            samples=config.eval_samples,
            desc=desc,
        )

    before = evaluate(reference, "before")
    laps.lap("evaluate before")
    agent, recorder = ppo_stage(
        reference,
        tokenizer,
        train_prompts,
        rm,
        oracle,
        config,
        device,
        seed,
        console,
        truncation="left" if task == "tldr" else "error",
    )
    laps.lap("PPO")
    after = evaluate(agent.policy.model, "after")
    laps.lap("evaluate after")
    report_stage(before, after, eval_prompts, agent, recorder, config, out, console)
    if web_labeler is not None:
        web_labeler.close()
        console.print(
            f"the labelling app stopped: {len(web_labeler.store)} labels in {web_labeler.store.path}"
        )
    laps.lap("report")
    console.print("time: " + laps.summary())
    summary |= {
        "evaluation": {
            "prompts": len(eval_prompts),
            "samples_per_prompt": config.eval_samples,
            "continuations": len(eval_prompts) * config.eval_samples,
        },
        "before": {key: getattr(before, key) for key in SAMPLE_FIGURES},
        "after": {key: getattr(after, key) for key in SAMPLE_FIGURES},
        "oracle_change_se": oracle_change_se(before, after),
        "final_kl_coef": agent.kl_penalty.controller.value,
        "timings_s": laps.timings,
        "total_s": laps.total(),
    }
    summary = strict_json(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


#: What the demo writes into ``--out``: folders, and files.
OUTPUT_FOLDERS = ("model", "reward_model")
OUTPUT_FILES = ("preferences.jsonl", "summary.json", "reward.png", "kl.png")


def check_output_folder(out: Path) -> None:
    """A ValueError naming the path when ``out`` cannot take the demo's outputs (a file where a folder
    goes, or the other way round, or no write permission)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; the demo writes a folder there")
    for name in OUTPUT_FOLDERS:
        if (out / name).exists() and not (out / name).is_dir():
            raise ValueError(f"{out / name} is a file; the demo saves a model folder there: move it away")
    for name in OUTPUT_FILES:
        if (out / name).is_dir():
            raise ValueError(f"{out / name} is a folder; the demo writes a file there: move it away")
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable")


def open_label_store(
    path: Path, provenance: Provenance, allow_provenance_mismatch: bool
) -> TextPreferenceStore:
    """The demo's labels, repaired if a kill tore the last line; refused if sampled from another model."""
    try:
        return TextPreferenceStore(
            path, repair=True, provenance=provenance, allow_provenance_mismatch=allow_provenance_mismatch
        )
    except ProvenanceMismatch as mismatch:
        raise ValueError(
            f"{mismatch.path} holds labels of pairs sampled from model {mismatch.recorded!r}, not from "
            f"--model {mismatch.given!r}: choose another --out, or --allow-provenance-mismatch to reuse them"
        ) from None


def load_tldr_task(
    prompts: str | Path | None, reward_model: str | None, human: str | None
) -> tuple[list[str], Dataset | None]:
    """The TL;DR task's prompts (each post once, in the file's order) and the file's comparisons to fit
    r_φ to (None when ``reward_model`` is given); a ValueError when the task cannot run on them."""
    if prompts is None:
        raise ValueError("--task tldr needs --prompts FILE: TL;DR posts or comparisons (JSON or JSONL)")
    if human is not None:
        raise ValueError(
            "--human labels the sentiment task; --task tldr takes the labels of its --prompts file"
        )
    data = load_tldr(prompts)
    has_comparisons = "chosen" in data.column_names
    if reward_model is None and not has_comparisons:
        raise ValueError(
            f"{prompts} holds TL;DR posts without comparisons: give --reward-model (a sequence-"
            "classification reward model), or a file of comparisons to fit one to"
        )
    comparisons = data if has_comparisons and reward_model is None else None
    return list(dict.fromkeys(data["prompt"])), comparisons


def model_context(reference) -> int | None:
    """The model's context in tokens, when its config states one."""
    return getattr(reference.config, "n_positions", None) or getattr(
        reference.config, "max_position_embeddings", None
    )


def check_context(reference, tokenizer, prompts: list[str], config: DemoConfig) -> None:
    """A ValueError naming ``--new-tokens`` when the longest prompt and a continuation do not fit the
    model's context (sampling would fail after labelling and reward-model training)."""
    context = model_context(reference)
    if context is None:
        return
    longest = max(len(ids) for ids in tokenizer(prompts)["input_ids"])
    for flag, tokens in (("--new-tokens", config.new_tokens), ("pair_tokens", config.pair_tokens)):
        if longest + tokens > context:
            raise ValueError(
                f"{flag} {tokens}: the longest prompt has {longest} tokens, and with {tokens} new ones "
                f"the text exceeds the model's context of {context} tokens; use at most {context - longest}"
            )


def strict_json(value: object) -> object:
    """``value`` with every NaN or infinite float replaced by None: strict JSON has neither."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Laps:
    """Wall time per stage: each :meth:`lap` closes the stage that ran since the last one."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        self.timings[name] = self.total() - sum(self.timings.values())

    def total(self) -> float:
        return time.perf_counter() - self.start

    def summary(self) -> str:
        stages = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in self.timings.items())
        return f"{stages}; total {self.total():.0f}s"


def label_stage(
    store: TextPreferenceStore,
    reference,
    tokenizer,
    prompts: list[str],
    oracle: Callable[[str, str], float],
    config: DemoConfig,
    human: Literal["terminal"] | None,
    seed: int,
    console: Console,
) -> None:
    """Stages 1 and 2: sample the pairs the store lacks and label them, by you or by the VADER labeler."""
    if len(store):
        console.print(f"reusing {len(store)} labels from {store.path}")
    missing = config.pairs - len(store)
    if missing <= 0:
        return
    if human:
        labeler, who = TerminalTextLabeler(), "you"
    else:
        synthetic = config.synthetic_labeler(oracle, seed)
        bar = tqdm(total=missing, desc="labelling (synthetic, VADER)", leave=False)
        ties = "" if config.labeler_tie_below is None else f", ties below |{config.labeler_tie_below}|"
        who = f"the synthetic labeler (VADER, β={config.labeler_beta}{ties})"

        def labeler(prompt: str, a: str, b: str) -> float:
            bar.update()
            return synthetic(prompt, a, b)

    console.print(f"[1] sampling {missing} pairs of {config.pair_tokens}-token continuations")
    added = collect_labels(store, labeler, reference, tokenizer, prompts, config, seed)
    if not human:
        bar.close()
    console.print(f"[2] {added} pairs labelled by {who}, {store.ties} ties in all -> {store.path}")


def web_label_stage(
    store: TextPreferenceStore,
    reference,
    tokenizer,
    prompts: list[str],
    config: DemoConfig,
    seed: int,
    web: WebLabelling,
    console: Console,
) -> WebLabeler | None:
    """Stages 1 and 2 in the browser: the pairs go to the labelling app, the labels come back as people
    give them. Returns the app when it keeps serving (``"async"``), to be closed when the demo ends.

    Pairs still waiting from an interrupted run are served again and count towards ``config.pairs``.
    """
    session = LabelSession(store, undo_seconds=web.undo_seconds, target=config.pairs)
    if len(store) >= config.pairs and not session.pending:
        console.print(f"reusing {len(store)} labels from {store.path}")
        return None
    pair_prompts, first, second = sample_missing_pairs(
        store, reference, tokenizer, prompts, config, seed, queued=len(session.pending)
    )
    labeler = WebLabeler(
        session,
        web.mode,
        host=web.host,
        port=web.port,
        token=web.token,
        instructions=WEB_INSTRUCTIONS,
        default_labeler=getpass.getuser(),
        title="rlhf-envs demo: label continuations",
        print_fn=console.print,
    )
    labeler.submit_texts(pair_prompts, first, second)
    console.print(
        f"[1] sampled {len(pair_prompts)} pairs of {config.pair_tokens}-token continuations; "
        f"{labeler.pending} pairs wait in the browser, {len(store)} labels are in {store.path}"
    )
    min_labels = web.min_labels if web.min_labels is not None else max(2, config.pairs // 2)
    labels = labeler.collect(at_least=min_labels)
    console.print(f"[2] {len(labels)} pairs labelled in the browser -> {store.path}")
    if web.mode == "async":
        console.print(f"the page keeps taking labels while the demo goes on: {labeler.url}")
        return labeler
    labeler.close()
    return None


def reward_model_start(model: str, task: str, config: DemoConfig) -> str | Path:
    """Where r_φ starts: for the embedded LM's sentiment task, the embedded reward model (pretrained on
    synthetic VADER labels of other prompts; ``config.pretrained_reward_model``); otherwise ``model``'s
    backbone with a fresh score head."""
    if config.pretrained_reward_model and task == "sentiment" and model == "embedded":
        return EMBEDDED_REWARD_MODEL_DIR
    return model


def reward_model_stage(
    start: str | Path,
    tokenizer,
    comparisons: TextPreferenceStore | Dataset,
    oracle: Callable[[str, str], float] | None,
    config: DemoConfig,
    seed: int,
    device: torch.device,
    out: Path,
    console: Console,
) -> tuple[TextRewardFn, dict[str, float | None]]:
    """Stage 3: fit r_φ, starting from ``start`` (a reward model or an LM), to the comparisons, save it to
    ``out/reward_model`` and report its accuracy (and its start's, on the same held-out pairs) and, when
    there is an oracle, its agreement with it."""
    pretrained = start == EMBEDDED_REWARD_MODEL_DIR
    if pretrained:
        console.print(
            "[3] r_φ starts from the embedded reward model (pretrained on synthetic VADER labels of the "
            "training split's prompts, none of this run's) and is fine-tuned on this run's labels"
        )
    fit = fit_reward_model(
        start, tokenizer, comparisons, config, seed, device, out / "reward_model", finetune=pretrained
    )
    agreement = None if oracle is None else oracle_agreement(fit.reward_model, oracle, fit.eval_pairs)
    metrics = fit.metrics
    if oracle is None:
        agreement_text = "no oracle to compare with"
    elif agreement is None:
        agreement_text = "the oracle scores every pair alike"
    else:
        agreement_text = f"agrees with the oracle on {agreement:.1%} of those it tells apart"
    ties = ""
    if metrics["tie_fraction"]:
        ties = (
            f" (ties, {metrics['tie_fraction']:.1%} of the labels, left out; with them counted half right: "
            f"{metrics['accuracy_all_pairs']:.1%})"
        )
    start_text = f" (at the start: {metrics['start_accuracy']:.1%})" if pretrained else ""
    console.print(
        f"[3] reward model: held-out accuracy [bold]{metrics['eval_accuracy']:.1%}[/]{start_text} on "
        f"{len(fit.eval_pairs)} decisive labelled pairs{ties} (loss {metrics['eval_loss']:.3f}); "
        f"{agreement_text} -> {out / 'reward_model'}"
    )
    figures = {
        "start": "embedded reward model" if pretrained else str(start),
        "start_accuracy": metrics["start_accuracy"],
        "eval_accuracy": metrics["eval_accuracy"],
        "eval_pairs": len(fit.eval_pairs),
        "eval_loss": metrics["eval_loss"],
        "tie_fraction": metrics["tie_fraction"],
        "accuracy_all_pairs": metrics["accuracy_all_pairs"],
        "oracle_agreement": agreement,
    }
    return fit.reward_model, figures


def ppo_stage(
    reference,
    tokenizer,
    prompts: list[str],
    reward_model: TextRewardFn,
    oracle: Callable[[str, str], float] | None,
    config: DemoConfig,
    device: torch.device,
    seed: int,
    console: Console,
    truncation: str = "error",
) -> tuple[TokenPPO, RecordingRewardModel]:
    """Stage 4: PPO + KL on the TokenEnv (prompts too long for the context cut as ``truncation``
    says), the oracle recording every scored episode for the plots."""
    recorder = RecordingRewardModel(reward_model, oracle)
    agent = make_token_ppo(reference, tokenizer, prompts, recorder, config, device, seed, truncation)
    # The KL penalty's history grows by one per rollout: it numbers the rollouts for the plots.
    recorder.rollout_index = lambda: len(agent.kl_penalty.history)
    critic = ""
    if agent.config.critic == "reward_model":
        extra = agent.config.extra_actions
        tokens = f"; {extra} more tokens per state" if extra else ""
        critic = f" (critic: r_φ of the text so far{tokens})"
    console.print(
        f"[4] PPO + KL: {config.iterations} iterations of {config.batch} episodes "
        f"× {config.new_tokens} tokens{critic}"
    )
    agent.learn(config.iterations * config.batch * config.new_tokens)
    return agent, recorder


def oracle_change_se(before: SampleReport, after: SampleReport) -> float | None:
    """The standard error of the oracle's change, before and after taken as independent samples (the
    shared seed correlates them, if at all, positively: this errs large); None without an oracle."""
    if before.oracle_se is None or after.oracle_se is None:
        return None
    return math.hypot(before.oracle_se, after.oracle_se)


def report_stage(
    before: SampleReport,
    after: SampleReport,
    prompts: list[str],
    agent: TokenPPO,
    recorder: RecordingRewardModel,
    config: DemoConfig,
    out: Path,
    console: Console,
) -> None:
    """Stage 5: the before/after table of means and samples for the same held-out prompts, the plots
    of reward and KL over training, and the fine-tuned model, saved to ``out``."""
    per_prompt = f" × {config.eval_samples} continuations" if config.eval_samples > 1 else ""
    table = Table(title=f"Before / after PPO on {len(prompts)} held-out prompts{per_prompt} (means)")
    for column in ("", "before (π_pt)", "after (PPO)", "change"):
        table.add_column(column, justify="right" if column else "left")
    for name, key in (
        ("oracle score (VADER)", "oracle"),
        ("reward model r_φ", "reward"),
        ("KL(π ‖ π_pt), nats", "kl"),
    ):
        b, a = getattr(before, key), getattr(after, key)
        if b is None:  # no oracle
            continue
        table.add_row(name, f"{b:+.3f}", f"{a:+.3f}", f"{a - b:+.3f}")
    console.print(table)
    change_se = oracle_change_se(before, after)
    if change_se is not None:
        console.print(
            f"oracle change {after.oracle - before.oracle:+.3f} ± {change_se:.3f} (standard error, "
            f"{len(before.completions)} continuations each)"
        )
    samples = Table(title="Samples for the same prompts", show_lines=True)
    samples.add_column("prompt")
    samples.add_column("before")
    samples.add_column("after")
    for index in range(min(config.table_rows, len(prompts))):
        samples.add_row(
            _shorten(prompts[index], 40),
            _shorten(before.completions[index]),
            _shorten(after.completions[index]),
        )
    console.print(samples)
    plots = _save_plots(out, recorder, agent.kl_penalty.history, config.batch * config.new_tokens)
    agent.save_pretrained(out / "model")
    console.print(
        f"[5] saved to {out}: plots {', '.join(p.name for p in plots)}, summary.json, the fine-tuned "
        "model in model/ (AutoModelForCausalLM.from_pretrained loads it)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoConfig()
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="sentiment",
        help="sentiment: positive continuations (VADER labels); tldr: the lecture's TL;DR summaries "
        "(--prompts FILE of posts or comparisons)",
    )
    parser.add_argument(
        "--model", default="embedded", help="causal LM: 'embedded', a Hugging Face id or a path"
    )
    parser.add_argument(
        "--reward-model",
        default=None,
        help="a trained sequence-classification reward model (id or path): skips steps 1-3",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("rlhf_demo"), help="folder for labels, plots and models"
    )
    parser.add_argument(
        "--human",
        nargs="?",
        const="terminal",
        choices=("terminal", "web"),
        default=None,
        help="label the pairs yourself: in the terminal (--human) or in the browser (--human web)",
    )
    web = WebLabelling()
    parser.add_argument(
        "--label-mode",
        choices=("sync", "async"),
        default=web.mode,
        help="--human web: wait for every label (sync) or go on after --min-labels (async)",
    )
    parser.add_argument(
        "--min-labels", type=positive_int, default=None, help="async: labels to wait for (default: half)"
    )
    parser.add_argument(
        "--host", default=web.host, help="--human web: any address but 127.0.0.1 needs a token"
    )
    parser.add_argument("--port", type=int, default=web.port, help="--human web: the labelling app's port")
    parser.add_argument("--token", default=None, help="--human web: access token (generated off 127.0.0.1)")
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds), for tests")
    parser.add_argument(
        "--prompts",
        default=None,
        help="text or JSONL file of prompts (default: the embedded LM's); for --task tldr, TL;DR posts or "
        "comparisons (summarize_from_feedback layout or TRL's prompt/chosen/rejected)",
    )
    parser.add_argument(
        "--pairs",
        type=positive_int,
        default=None,
        help=f"pairs to label (default {defaults.pairs}, 20 with --human)",
    )
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=None,
        help=f"PPO iterations (default {defaults.iterations})",
    )
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=None,
        help=f"episodes per PPO iteration (default {defaults.batch})",
    )
    parser.add_argument(
        "--new-tokens",
        type=positive_int,
        default=None,
        help=f"tokens per episode (default {defaults.new_tokens}; {TLDR_SUMMARY_TOKENS} for --task tldr)",
    )
    parser.add_argument(
        "--kl-coef",
        type=positive_float,
        default=defaults.kl_coef,
        help=f"the KL weight β (default {defaults.kl_coef}; with --kl-target, where the controller starts)",
    )
    parser.add_argument(
        "--kl-target",
        type=positive_float,
        default=defaults.kl_target,
        help="KL per episode that an adaptive controller steers β to (default: none, β stays fixed)",
    )
    parser.add_argument(
        "--critic",
        choices=CRITICS,
        default=defaults.critic,
        help="PPO's V(s): a value head on the policy, or r_φ of the text so far with a per-token "
        "advantage (r_φ must score every token of the LM's ids, else the value head) "
        f"(default {defaults.critic})",
    )
    parser.add_argument(
        "--extra-actions",
        type=nonnegative_int,
        default=None,
        help="with --critic reward_model: tokens more per visited state, sampled from the policy and "
        "credited by r_φ, in the PPO loss beside the token taken "
        f"(default {defaults.extra_actions} with the {defaults.critic} critic, else 0)",
    )
    parser.add_argument(
        "--no-ties",
        action="store_true",
        help="the synthetic labeler always picks one continuation (a coin flip between two without "
        f"sentiment) instead of calling a pair equal when neither leaves VADER's neutral band "
        f"(|compound| < {defaults.labeler_tie_below})",
    )
    parser.add_argument(
        "--rm-from-lm",
        action="store_true",
        help="fit r_φ from the LM's backbone with a fresh score head, not from the embedded reward model "
        "(pretrained on synthetic labels of other prompts; used for the embedded LM's sentiment task)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=min(2, len(os.sched_getaffinity(0))),
        help="CPU threads for torch (default 2, or 1 on a one-core machine: on 2 cores the embedded models' "
        "batched passes run 1.5-1.8× faster with both; use 1 when other work shares the cores, where a "
        "thread pool spins)",
    )
    parser.add_argument(
        "--allow-provenance-mismatch",
        action="store_true",
        help="reuse --out's labels although another model sampled their pairs",
    )


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The budget the command line asks for: the defaults (or ``quick()``) with the flags' changes."""
    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.critic != config.critic:  # the default extra actions are the default critic's
        config.extra_actions = 0
    config.kl_coef, config.kl_target, config.critic = args.kl_coef, args.kl_target, args.critic
    if args.extra_actions is not None:
        config.extra_actions = args.extra_actions
    if args.no_ties:
        config.labeler_tie_below = None
    if args.rm_from_lm:
        config.pretrained_reward_model = False
    if args.pairs is not None or args.human:
        config.pairs = args.pairs if args.pairs is not None else 20
    if args.task == "tldr":
        config.new_tokens = TLDR_SUMMARY_TOKENS
    for name in ("iterations", "batch", "new_tokens"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    config.__post_init__()
    return config


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    # The demo draws its own bars: transformers' weight-loading bars and load reports are noise here.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    run_demo(
        model=args.model,
        reward_model=args.reward_model,
        out=args.out,
        config=config_from_args(args),
        human=args.human,
        prompts=args.prompts,
        web=WebLabelling(args.label_mode, args.min_labels, args.host, args.port, args.token),
        device=args.device,
        seed=args.seed,
        # Off a terminal (a log file, a pipe) rich would wrap at 80 columns: the sample table needs more.
        console=Console(width=None if sys.stdout.isatty() else 150),
        allow_provenance_mismatch=args.allow_provenance_mismatch,
        task=args.task,
    )
    return 0
