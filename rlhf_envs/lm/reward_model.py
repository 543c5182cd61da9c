"""Text reward models: anything that scores (prompt, completion) pairs.

They live in the lm layer, below the envs: a text reward model is a language model with a score
head, the TokenEnv's default reward is the embedded one (an lm asset beside the embedded LM), and
the env resolves its ``reward_model=`` argument here without reaching up to ``rlhf_envs.rewards``.

A text reward model is any callable ``(prompts: list[str], completions: list[str]) -> Tensor[B]``.
:class:`HFRewardModel` wraps a Hugging Face ``AutoModelForSequenceClassification`` with
``num_labels=1`` (TRL's reward-model convention: the score of ``prompt + completion`` is the single
logit at the last non-pad token), so reward models trained with TRL plug in unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    BatchEncoding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf_envs.device import resolve_device
from rlhf_envs.lm.assets import EMBEDDED_REWARD_MODEL_DIR
from rlhf_envs.lm.loading import align_weights, model_location, resolve_tokenizer
from rlhf_envs.lm.tokens import position_ids, prepared_mask, tokenizer_sides

TextRewardFn = Callable[[list[str], list[str]], torch.Tensor]
RewardModelSpec = str | Path | PreTrainedModel | TextRewardFn | None

__all__ = [
    "HFRewardModel",
    "RewardModelSpec",
    "TextRewardFn",
    "check_scores",
    "encode_texts",
    "resolve_reward_model",
]


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_length: int,
    device: torch.device,
) -> BatchEncoding:
    """Tokenize ``prompt + completion`` for a sequence-classification model, right-padded.

    As TRL's ``RewardTrainer`` does, each text ends with the EOS token, where the score is read,
    when the tokenizer pads with another token; a tokenizer that pads with EOS (GPT-2's way) would
    take an EOS for padding, so there the score is read at the text's last token as before.
    Texts longer than ``max_length`` tokens lose their beginning: the completion, which the score
    is about, is kept.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    own_pad = tokenizer.eos_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    end = tokenizer.eos_token if own_pad else ""
    texts = [prompt + completion + end for prompt, completion in zip(prompts, completions, strict=True)]
    # TRL's reward models read the whole text, right-padded; the cut removes the text's start.
    with tokenizer_sides(tokenizer, padding="right", truncation="left"):
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return encoded.to(device)


def check_scores(scores: object, batch_size: int) -> torch.Tensor:
    """Return ``scores`` as float32 of shape [batch_size]; raise ``ValueError`` (``TypeError`` for bool
    or complex scores) saying what is wrong."""
    if not isinstance(scores, torch.Tensor):
        raise ValueError(f"the reward model must return a torch.Tensor, got {type(scores).__name__}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise TypeError(f"the reward model must return real scores, got a tensor of {scores.dtype}")
    if scores.shape != (batch_size,):
        raise ValueError(
            f"the reward model returned shape {tuple(scores.shape)} for {batch_size} completions; "
            f"expected ({batch_size},)"
        )
    if not torch.isfinite(scores).all():
        raise ValueError(f"the reward model returned non-finite scores: {scores.tolist()}")
    return scores.float()


class HFRewardModel:
    """A Hugging Face sequence-classification model with one label, used as a text reward model.

    Args:
        model: a model id or local folder (``AutoModelForSequenceClassification``), or a loaded model.
        tokenizer: its tokenizer, or an id/path; ``None`` loads the model's own.
        device: where the model runs; scores are returned on that device.
        batch_size: texts per forward pass.
        max_length: longest text in tokens (its start is cut); defaults to the model's context length.
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(model, str | Path):
            tokenizer = model if tokenizer is None else tokenizer
            model = AutoModelForSequenceClassification.from_pretrained(model_location(model))
        elif not isinstance(model, PreTrainedModel):
            raise TypeError(f"model must be an id, a path or a PreTrainedModel, got {type(model).__name__}")
        if model.config.num_labels != 1:
            raise ValueError(
                f"a reward model has num_labels=1 (one score), this one has {model.config.num_labels}"
            )
        tokenizer = resolve_tokenizer(model, tokenizer)
        if model.config.pad_token_id is None:
            # The score is read at the last non-pad token, which the model finds by the pad id.
            model.config.pad_token_id = tokenizer.pad_token_id
        self.device = resolve_device(device)
        if self.device.type == "cpu" and model.dtype == torch.float16:
            model = model.float()  # weights may be shipped in float16; CPUs compute in float32
        self.model = align_weights(model.to(self.device)).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        positions = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", 1024
        )
        self.max_length = max_length or positions

    @torch.inference_mode()
    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """Scores of ``prompt + completion``, shape [B], float32 on ``self.device``."""
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            batch = encode_texts(
                self.tokenizer, prompts[start:end], completions[start:end], self.max_length, self.device
            )
            scores.append(self.model(**batch).logits[:, 0].float())
        if not scores:
            return torch.zeros(0, device=self.device)
        return torch.cat(scores)

    @property
    def scores_every_token(self) -> bool:
        """Whether :meth:`token_scores` works: the decoder-only ``ForSequenceClassification`` models
        (GPT-2's, Llama's, ...) apply their ``score`` layer at every position and pool after; the
        encoders' (BERT's, DeBERTa's) ``classifier`` reads one pooled state."""
        return isinstance(getattr(self.model, "score", None), torch.nn.Linear)

    @torch.inference_mode()
    def token_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The score of the text up to each token, for left-padded ids [B, L] in this model's
        vocabulary: float32 [B, L] on ``self.device`` (padding columns hold no meaning).

        One forward pass reads the score head at every position, where :meth:`__call__` reads it at
        the last. Column j is the score of ``prompt + completion`` ending with token j as
        :meth:`__call__` gives it when the tokenizer pads with EOS (no EOS is appended: GPT-2's and
        the embedded model's way); otherwise the score read without the EOS. What it is for: r_φ of
        every prefix of an episode, a critic for token-level credit (``TokenPPO(critic="reward_model")``).
        """
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        return self._scores_at_every_position(input_ids, attention_mask, position_ids(attention_mask))

    @torch.inference_mode()
    def next_token_scores(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: torch.Tensor,
        columns: torch.Tensor,
        candidates: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token_scores, candidate scores)``: :meth:`token_scores` of left-padded ids [B, L], and the
        score of each listed prefix followed by each of its candidate tokens, the text of row
        ``rows[n]`` up to column ``columns[n]`` then token ``candidates[n, j]`` (``rows``, ``columns`` [N],
        ``candidates`` [N, k] -> [N, k] float32), in one forward pass.

        Each candidate is a query of its own, appended to its row after the text, at the position the
        prefix's next token takes, attending to the prefix and to itself (a tree attention mask):
        what r_φ would say of every token the text could have continued with, for a critic that
        credits tokens not taken (``TokenPPO(extra_actions=k)``). Needs SDPA or eager attention.
        """
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        rows, columns, candidates = rows.to(self.device), columns.to(self.device), candidates.to(self.device)
        num_rows, width = input_ids.shape
        k = candidates.shape[1]
        # Each query's place among its row's queries, and so its k slots after the row's text.
        counts = torch.bincount(rows, minlength=num_rows)
        order = rows.argsort(stable=True)
        rank = torch.empty_like(rows)
        rank[order] = torch.arange(len(rows), device=self.device) - (counts.cumsum(0) - counts)[rows[order]]
        slots = width + rank[:, None] * k + torch.arange(k, device=self.device)  # [N, k]
        total = width + int(counts.max()) * k
        ids = input_ids.new_zeros(num_rows, total)
        ids[:, :width] = input_ids
        ids[rows[:, None], slots] = candidates
        positions = ids.new_zeros(num_rows, total)
        positions[:, :width] = position_ids(attention_mask)
        positions[rows[:, None], slots] = positions[rows, columns][:, None] + 1
        real = attention_mask.bool()
        visible = torch.zeros(num_rows, total, total, dtype=torch.bool, device=self.device)
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        visible[:, :width, :width] = causal & real[:, None, :]
        prefix = (torch.arange(width, device=self.device) <= columns[:, None]) & real[rows]  # [N, L]
        visible[rows[:, None], slots, :width] = prefix[:, None, :]
        # Every query sees itself: no row of the mask is empty (padding, unused slots).
        diagonal = torch.arange(total, device=self.device)
        visible[:, diagonal, diagonal] = True
        scores = self._scores_at_every_position(ids, prepared_mask(self.model, visible), positions)
        return scores[:, :width], scores[rows[:, None], slots]

    def _scores_at_every_position(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """The score head read at every position of one forward pass: float32 [B, L]."""
        if not self.scores_every_token:
            raise ValueError(
                f"{self!r} has no per-token score head: scoring every token needs a causal model whose "
                "`score` layer reads every position (e.g. GPT2ForSequenceClassification)"
            )
        hidden = self.model.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
        ).last_hidden_state
        return self.model.score(hidden)[..., 0].float()

    def __repr__(self) -> str:
        return f"HFRewardModel({self.model.config.name_or_path or type(self.model).__name__!r})"


def resolve_reward_model(
    reward_model: RewardModelSpec,
    device: str | torch.device = "auto",
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> TextRewardFn:
    """Turn a reward-model argument into a callable ``(prompts, completions) -> Tensor[B]``.

    ``None`` or ``"embedded"`` is the embedded reward model; a string or path is loaded with
    :class:`HFRewardModel`; a ``PreTrainedModel`` is wrapped (with ``tokenizer``); any other callable
    is used as it is. ``tokenizer`` serves a model that does not say where it was loaded from.
    """
    if reward_model is None or (isinstance(reward_model, str) and reward_model == "embedded"):
        if not (EMBEDDED_REWARD_MODEL_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"the embedded reward model is not in {EMBEDDED_REWARD_MODEL_DIR}; train it with "
                "`rlhf-envs reward-model` or pass `reward_model=`"
            )
        return HFRewardModel(EMBEDDED_REWARD_MODEL_DIR, device=device)
    if isinstance(reward_model, str | Path):
        return HFRewardModel(reward_model, device=device)
    if isinstance(reward_model, PreTrainedModel):
        own = bool(reward_model.config.name_or_path)
        return HFRewardModel(reward_model, None if own else tokenizer, device=device)
    if callable(reward_model):
        return reward_model
    raise TypeError(
        f"reward_model must be a callable, an id or path, or a model, got {type(reward_model).__name__}"
    )
