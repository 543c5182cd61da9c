"""Fit a text reward model to (prompt, chosen, rejected) comparisons with the Bradley–Terry loss.

The reward model is a sequence-classification model with one label (TRL's convention); by default
a scalar head on the embedded LM's backbone (``GPT2ForSequenceClassification`` initialised from the
LM's weights). :func:`train_embedded_reward_model` (``rlhf-envs reward-model``) builds the embedded
reward model shipped in ``rlhf_envs/lm/reward_model``: pairs of continuations sampled from the embedded
LM for its held-out prompts, labelled by :class:`SyntheticTextLabeler` (VADER sentiment), then fitted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_envs.device import resolve_device
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, EMBEDDED_REWARD_MODEL_DIR, load_prompts
from rlhf_envs.lm.loading import load_causal_lm, resolve_model_path, resolve_tokenizer
from rlhf_envs.lm.reward_model import encode_texts
from rlhf_envs.lm.tokens import tokenizer_sides
from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.preferences.text_labelers import SyntheticTextLabeler, collect_text_preferences
from rlhf_envs.preferences.trl_formats import MARGIN, load_trl_preferences
from rlhf_envs.rewards.bradley_terry import bradley_terry_loss

__all__ = [
    "RewardModelTrainer",
    "RewardTrainerConfig",
    "label_synthetic_pairs",
    "sample_continuation_pairs",
    "train_embedded_reward_model",
]


@dataclass
class RewardTrainerConfig:
    """Hyper-parameters of :class:`RewardModelTrainer` (TRL-style)."""

    learning_rate: float = 1e-4
    num_epochs: int = 2
    batch_size: int = 16
    max_length: int = 128  # tokens of prompt + completion; the start of longer texts is cut
    weight_decay: float = 0.0
    eval_fraction: float = 0.1  # held out when no eval_dataset is given
    seed: int = 0
    device: str = "auto"
    # TRL's reward centring: adds c · mean((r_chosen + r_rejected)²), pulling the rewards to zero mean
    # (Eisenstein et al. 2023); TRL recommends 0.01. None: off.
    center_rewards_coefficient: float | None = None
    # Fit −log σ(r_chosen − r_rejected − margin) with the margin column when the data has one (TRL's
    # convention: a clearer preference asks a larger gap). False: ignore the column.
    use_margin: bool = True

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.num_epochs < 1 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError(f"learning_rate, num_epochs, batch_size and max_length must be positive: {self}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.center_rewards_coefficient is not None and not self.center_rewards_coefficient >= 0:
            raise ValueError(
                f"center_rewards_coefficient must be >= 0, got {self.center_rewards_coefficient}"
            )


class RewardModelTrainer:
    """Trains r_φ by minimising −log σ(r_φ(x, chosen) − r_φ(x, rejected)) and reports held-out accuracy.

    Args:
        model: ``"embedded"``, a causal-LM or sequence-classification id or path (a fresh scalar head
            is put on its backbone), or a sequence-classification ``PreTrainedModel`` with ``num_labels=1``.
        tokenizer: its tokenizer (object, id or path); ``None`` loads the model's own.
        train_dataset: comparisons in any of TRL's forms (explicit or implicit prompt, standard or
            conversational; see :func:`~rlhf_envs.preferences.trl_formats.load_trl_preferences`): a
            ``datasets.Dataset``, a file or a dataset name; a ``margin`` column is used as TRL does.
        eval_dataset: held-out comparisons; ``None`` holds out ``config.eval_fraction`` of the training set.
        config: hyper-parameters.
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel = "embedded",
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        train_dataset: Dataset | str | Path | None = None,
        eval_dataset: Dataset | str | Path | None = None,
        config: RewardTrainerConfig | None = None,
    ) -> None:
        if train_dataset is None:
            raise ValueError("train_dataset is required: comparisons with prompt, chosen and rejected")
        self.config = config or RewardTrainerConfig()
        self.device = resolve_device(self.config.device)
        torch.manual_seed(self.config.seed)  # the fresh score head's initialisation
        if isinstance(model, PreTrainedModel):
            if model.config.num_labels != 1:
                raise ValueError(f"a reward model has num_labels=1, this one has {model.config.num_labels}")
        else:
            tokenizer = model if tokenizer is None else tokenizer
            model = AutoModelForSequenceClassification.from_pretrained(
                resolve_model_path(model), num_labels=1
            )
        self.tokenizer = resolve_tokenizer(model, tokenizer)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = model.to(self.device)
        dataset = load_trl_preferences(train_dataset, self.tokenizer)
        if eval_dataset is None:
            split = dataset.train_test_split(test_size=self.config.eval_fraction, seed=self.config.seed)
            self.train_dataset, self.eval_dataset = split["train"], split["test"]
        else:
            self.train_dataset, self.eval_dataset = (
                dataset,
                load_trl_preferences(eval_dataset, self.tokenizer),
            )
        if len(self.train_dataset) == 0 or len(self.eval_dataset) == 0:
            raise ValueError("both the training and the held-out set need at least one comparison")

    def _scores(self, batch: dict[str, list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = batch["prompt"] * 2
        completions = batch["chosen"] + batch["rejected"]
        encoded = encode_texts(self.tokenizer, prompts, completions, self.config.max_length, self.device)
        scores = self.model(**encoded).logits[:, 0].float()
        return scores.chunk(2)

    def _loss(self, batch: dict[str, list], chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        """Bradley–Terry loss, less each pair's margin when used, plus the centring term when on."""
        gap_target = chosen
        if self.config.use_margin and MARGIN in batch:
            gap_target = chosen - torch.tensor(batch[MARGIN], dtype=chosen.dtype, device=chosen.device)
        loss = bradley_terry_loss(gap_target, rejected, torch.ones_like(chosen))
        if self.config.center_rewards_coefficient is not None:
            loss = loss + self.config.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
        return loss

    def train(self) -> dict[str, float]:
        """Fit the model; returns the last epoch's training loss and the held-out loss and accuracy."""
        config = self.config
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        generator = torch.Generator().manual_seed(config.seed)
        steps = math.ceil(len(self.train_dataset) / config.batch_size)
        metrics: dict[str, float] = {}
        for epoch in range(config.num_epochs):
            self.model.train()
            order = torch.randperm(len(self.train_dataset), generator=generator).tolist()
            total = 0.0
            for step in tqdm(range(steps), desc=f"reward model epoch {epoch + 1}", leave=False):
                batch = self.train_dataset[order[step * config.batch_size : (step + 1) * config.batch_size]]
                loss = self._loss(batch, *self._scores(batch))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            metrics = {"epoch": epoch + 1, "train_loss": total / steps}
            metrics |= {f"eval_{name}": value for name, value in self.evaluate().items()}
        return metrics

    @torch.no_grad()
    def evaluate(self, dataset: Dataset | str | Path | None = None) -> dict[str, float]:
        """The training loss (with margin and centring as configured), accuracy (share of pairs where
        chosen outscores rejected) and mean reward."""
        dataset = self.eval_dataset if dataset is None else load_trl_preferences(dataset, self.tokenizer)
        self.model.eval()
        losses, rewards, correct = [], [], 0
        for start in range(0, len(dataset), self.config.batch_size):
            batch = dataset[start : start + self.config.batch_size]
            chosen, rejected = self._scores(batch)
            losses.append(self._loss(batch, chosen, rejected).item() * len(chosen))
            rewards += [chosen, rejected]
            correct += int((chosen > rejected).sum())
        mean_reward = torch.cat(rewards).mean().item()
        return {
            "loss": sum(losses) / len(dataset),
            "accuracy": correct / len(dataset),
            "mean_reward": mean_reward,
        }

    def save(self, path: str | Path, half: bool = True) -> None:
        """``save_pretrained`` the model (in float16 when ``half``) and its tokenizer to ``path``."""
        state = self.model.state_dict()
        if half:
            state = {
                name: tensor.half() if tensor.is_floating_point() else tensor
                for name, tensor in state.items()
            }
        self.model.save_pretrained(path, state_dict=state)
        self.tokenizer.save_pretrained(path)


@torch.no_grad()
def sample_continuation_pairs(
    model: str | Path | PreTrainedModel = "embedded",
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    prompts: list[str] | None = None,
    num_pairs: int = 1000,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> tuple[list[str], list[str], list[str]]:
    """Two sampled continuations (temperature 1) of each of ``num_pairs`` prompts drawn from ``prompts``."""
    model, tokenizer = load_causal_lm(model, tokenizer, device)
    prompts = load_prompts(DEFAULT_PROMPTS_FILE if prompts is None else prompts)
    generator = torch.Generator().manual_seed(seed)
    chosen_prompts = [
        prompts[i] for i in torch.randint(len(prompts), (num_pairs,), generator=generator).tolist()
    ]
    torch.manual_seed(seed)
    completions: list[str] = []
    with tokenizer_sides(tokenizer, padding="left"):
        for start in tqdm(range(0, num_pairs, batch_size), desc="sampling pairs", leave=False):
            batch = chosen_prompts[start : start + batch_size]
            encoded = tokenizer(batch, return_tensors="pt", padding=True).to(model.device)
            output = model.generate(
                **encoded,
                do_sample=True,
                top_k=0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=2,
                pad_token_id=tokenizer.pad_token_id,
            )
            completions += tokenizer.batch_decode(
                output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
            )
    return chosen_prompts, completions[0::2], completions[1::2]


def label_synthetic_pairs(
    store: TextPreferenceStore,
    model: str | Path | PreTrainedModel = "embedded",
    prompts: str | Path | list[str] | None = None,
    num_pairs: int = 4000,
    max_new_tokens: int = 32,
    beta: float = 10.0,
    tie_below: float | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    chunk: int = 1000,
) -> int:
    """Fill ``store`` up to ``num_pairs`` labels: pairs of ``model``'s continuations, labelled by the VADER
    :class:`SyntheticTextLabeler` (``beta``, ``tie_below``), ``chunk`` pairs at a time.

    Each chunk's sampling and labels are seeded by ``seed`` and the store's length, so a run killed
    mid-way resumes with the same chunks it would have made. Returns the number of labels added."""
    model, tokenizer = load_causal_lm(model, device=device)
    prompts = load_prompts(DEFAULT_PROMPTS_FILE if prompts is None else prompts)
    added = 0
    with tqdm(total=max(num_pairs - len(store), 0), desc="labelling pairs") as bar:
        while len(store) < num_pairs:
            start = len(store)
            pair_prompts, first, second = sample_continuation_pairs(
                model,
                tokenizer,
                prompts=prompts,
                num_pairs=min(chunk, num_pairs - start),
                max_new_tokens=max_new_tokens,
                seed=seed + start,
                device=model.device,
            )
            labeler = SyntheticTextLabeler(beta=beta, seed=seed + start, tie_below=tie_below)
            added += collect_text_preferences(store, labeler, pair_prompts, first, second)
            bar.update(len(store) - start)
    return added


def train_embedded_reward_model(
    out: str | Path = EMBEDDED_REWARD_MODEL_DIR,
    model: str | Path = "embedded",
    prompts: str | Path | None = None,
    labels_file: str | Path | None = None,
    num_pairs: int = 4000,
    max_new_tokens: int = 32,
    beta: float = 10.0,
    config: RewardTrainerConfig | None = None,
    tie_below: float | None = None,
) -> dict[str, float]:
    """Build the embedded reward model: sample pairs from ``model``, label them (VADER), fit, save in float16.

    The labels are appended to ``labels_file`` (default ``<out>/preferences.jsonl``) one by one
    (:func:`label_synthetic_pairs`), so an interrupted run resumes its labels; ties (with ``tie_below``)
    are kept in the file and left out of the fit. Returns the metrics, also written to
    ``<out>/training_summary.json``.
    """
    config = config or RewardTrainerConfig()
    out = Path(out)
    # repair: a torn last line (a kill mid-write) is cut off with a warning, not a refusal to resume.
    store = TextPreferenceStore(Path(labels_file) if labels_file else out / "preferences.jsonl", repair=True)
    label_synthetic_pairs(
        store, model, prompts, num_pairs, max_new_tokens, beta, tie_below, config.seed, config.device
    )
    trainer = RewardModelTrainer(model, train_dataset=store.to_dataset(), config=config)
    metrics = trainer.train()
    trainer.save(out)
    summary = {
        "model": str(model),
        "prompts": str(prompts or DEFAULT_PROMPTS_FILE.name),
        "num_pairs": len(store),
        "ties": store.ties,
        "max_new_tokens": max_new_tokens,
        "beta": beta,
        "tie_below": tie_below,
    }
    summary |= {"config": {k: str(v) for k, v in dataclasses.asdict(config).items()}, "metrics": metrics}
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RewardTrainerConfig()
    parser.add_argument(
        "--out", type=Path, default=EMBEDDED_REWARD_MODEL_DIR, help="where the model is saved"
    )
    parser.add_argument("--model", default="embedded", help="LM whose samples are labelled and backbone used")
    parser.add_argument(
        "--prompts", type=Path, default=None, help="prompts file (default: the embedded ones)"
    )
    parser.add_argument("--labels-file", type=Path, default=None, help="JSONL of labels (default: <out>/...)")
    parser.add_argument("--num-pairs", type=int, default=4000)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--beta", type=float, default=10.0, help="rationality of the synthetic labeler")
    parser.add_argument(
        "--tie-below",
        type=float,
        default=None,
        help="the labeler answers 'equal' when neither continuation's VADER score leaves ±this (the demo: "
        "0.05); default: never",
    )
    for field in dataclasses.fields(RewardTrainerConfig):
        default = getattr(defaults, field.name)
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:  # a None default is an optional float (center_rewards_coefficient)
            parser.add_argument(flag, type=float if default is None else type(default), default=default)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = RewardTrainerConfig(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(RewardTrainerConfig)}
    )
    metrics = train_embedded_reward_model(
        args.out,
        args.model,
        args.prompts,
        args.labels_file,
        args.num_pairs,
        args.max_new_tokens,
        args.beta,
        config,
        args.tie_below,
    )
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
