"""LLM decoding as a Gymnasium environment: the state is prompt + continuation, the action is the next token.

One batched core (:class:`TokenCore`, a :class:`~rlhf_envs.envs.batched.BatchedCore`) runs B
decoding episodes with one forward pass of the frozen reference model π_pt per step, extending a
KV cache by one token; its state (:class:`TokenState`) is explicit. :class:`TokenVectorEnv` is its
vector face (B episodes, same-step autoreset, numpy or device tensors) and :class:`TokenEnv` its
single face (B = 1); both are configured by one :class:`TokenEnvConfig`. The reward of the last
step is a text reward model's score of (prompt, completion); every step also reports
log π_pt(action | state).
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer

from rlhf_envs.device import resolve_device
from rlhf_envs.envs.arguments import autoreset_mode_from, boolean, positive_int, real
from rlhf_envs.envs.batched import BatchedCore, check_face_state, numpy_rng_from_state, numpy_rng_state
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, load_prompts
from rlhf_envs.lm.cache import CACHE, WindowLayer, returned_cache
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.lm.reward_model import RewardModelSpec, TextRewardFn, check_scores, resolve_reward_model
from rlhf_envs.lm.tokens import decoding_mask, position_ids, token_logprobs

__all__ = ["TokenCore", "TokenEnv", "TokenEnvConfig", "TokenState", "TokenVectorEnv", "length_buckets"]

#: The values of ``TokenEnvConfig.truncation``.
TRUNCATION_SIDES = ("error", "left", "right")
#: The values of ``TokenEnvConfig.reference_scoring``.
REFERENCE_SCORING = ("auto", "per_step", "episode_end")

#: One NumPy generator per episode: where each episode draws its prompts.
PromptGenerators = Sequence[np.random.Generator]
#: A forward pass costs about rows × its longest sequence in tokens, plus a fixed cost (module calls,
#: kernel dispatch) worth about this many tokens: the embedded LM at 1 thread spends ~5 ms on a pass
#: forward, ~16 ms forward and backward, as much as ~60 more tokens cost. A bigger model's tokens
#: cost more, so there this errs toward fewer passes.
PASS_COST_TOKENS = 64


def length_buckets(lengths: np.ndarray, device: torch.device) -> list[np.ndarray]:
    """Row groups of a batch of left-padded sequences with these real ``lengths`` (ints on the host),
    each to run as one forward pass over its own longest length, on ``device``. On the CPU: the rows
    in order of length, cut into the groups that cost the least, each costing its rows × its longest
    length plus :data:`PASS_COST_TOKENS` (prompts vary in length: most of a padded batch can be
    padding). Elsewhere one group in the rows' order: on a GPU a pass costs its kernel launches
    more than its padded columns."""
    if torch.device(device).type != "cpu":
        return [np.arange(len(lengths))]
    order = np.argsort(lengths, kind="stable")
    # A pass holds every row of each length it holds: rows of equal length pad nothing.
    values, counts = np.unique(lengths[order], return_counts=True)
    rows_before = np.concatenate([[0], np.cumsum(counts)])
    # cost[j]: the cheapest passes over the rows of the j shortest lengths; start[j]: the first
    # length of the last of those passes.
    cost = np.zeros(len(values) + 1)
    start = np.zeros(len(values) + 1, dtype=np.int64)
    for end in range(1, len(values) + 1):
        # Each candidate last pass, from length s to end - 1, is padded to values[end - 1].
        rows = rows_before[end] - rows_before[:end]
        candidates = cost[:end] + rows * values[end - 1] + PASS_COST_TOKENS
        start[end] = candidates.argmin()
        cost[end] = candidates[start[end]]
    groups, end = [], len(values)
    while end > 0:
        groups.append(order[rows_before[start[end]] : rows_before[end]])
        end = start[end]
    return groups[::-1]


@dataclass
class TokenEnvConfig:
    """Everything a TokenEnv is made of, for both faces (``TokenEnv``, ``TokenVectorEnv``).

    Args:
        model: the frozen reference policy π_pt: ``"embedded"`` (the default LM shipped with the
            package), a Hugging Face causal-LM id or local folder (loaded in float32, whatever the
            checkpoint's dtype, so that a policy copied from it trains in float32), or a loaded
            ``PreTrainedModel``, used in its own dtype (e.g. bf16 on a GPU).
        tokenizer: its tokenizer (object, id or path); ``None`` loads the model's own. A tokenizer
            whose vocabulary does not fit the model raises ``ValueError``.
        prompts: a list of strings, a text file (one prompt a line), a JSONL file (a ``prompt``
            field a line) or a ``datasets.Dataset`` with a ``prompt`` column; ``None`` uses the
            embedded LM's held-out prompts. Each episode draws one with the env's RNG.
        reward_model: a callable ``(prompts, completions) -> Tensor[B]``, a sequence-classification
            model (id, path or object) with ``num_labels=1``, or ``None`` for the embedded reward model.
        max_new_tokens: N, the most tokens an episode generates before it is truncated.
        stop_at_eos: end the episode (terminated) when the action is the EOS token.
        kl_coef: β; each step's reward adds β · log π_pt(action | state) (see ``TokenEnv``'s Rewards).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        max_prompt_tokens: the longest prompt in tokens; ``None`` takes the longest given prompt.
            ``context_len = max_prompt_tokens + max_new_tokens`` must fit the model's context.
        truncation: what happens to a prompt longer than ``max_prompt_tokens`` (by default, than
            the model's context minus ``max_new_tokens``): ``"error"`` refuses it (``ValueError``),
            ``"left"`` keeps its last tokens (for TL;DR prompts, the post's end and ``TL;DR:``),
            ``"right"`` its first; a warning says how many prompts were cut and by how much, and
            ``prompts`` then holds the texts that remain.
        reference_scoring: when log π_pt of the generated tokens is computed (see ``TokenEnv``'s
            "Reference log-probs"): ``"per_step"``, one KV-cached forward per token, each step's
            ``info["ref_logprob"]``; ``"episode_end"``, one batched forward over each finished
            episode; ``"auto"``: per step when ``kl_coef > 0`` (each step's reward needs it), else at
            the episode's end (the default; the token agents read ``ref_logprobs`` then). Either way
            the last step's info holds ``ref_logprobs``.

    An env's own ``config`` holds every part resolved (the loaded model, tokenizer, prompt list and
    reward model), so another env made from it shares them instead of loading them again.
    """

    model: str | Path | PreTrainedModel = "embedded"
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None
    prompts: Any = None
    reward_model: RewardModelSpec = None
    max_new_tokens: int = 48
    stop_at_eos: bool = True
    kl_coef: float = 0.0
    device: str | torch.device = "auto"
    max_prompt_tokens: int | None = None
    truncation: str = "error"
    reference_scoring: str = "auto"

    def __post_init__(self) -> None:
        self.max_new_tokens = positive_int("max_new_tokens", self.max_new_tokens)
        self.stop_at_eos = boolean("stop_at_eos", self.stop_at_eos)
        self.kl_coef = real("kl_coef", self.kl_coef, low=0.0)
        if self.max_prompt_tokens is not None:
            self.max_prompt_tokens = positive_int("max_prompt_tokens", self.max_prompt_tokens)
        if self.truncation not in TRUNCATION_SIDES:
            raise ValueError(f"truncation must be one of {TRUNCATION_SIDES}, got {self.truncation!r}")
        if self.reference_scoring not in REFERENCE_SCORING:
            raise ValueError(
                f"reference_scoring must be one of {REFERENCE_SCORING}, got {self.reference_scoring!r}"
            )
        if self.reference_scoring == "episode_end" and self.kl_coef > 0:
            raise ValueError(
                "reference_scoring='episode_end' cannot pay kl_coef > 0: the reward β·log π_pt of each step "
                "needs the reference log-prob at that step (reference_scoring='per_step')"
            )

    @property
    def per_step_reference(self) -> bool:
        """Whether the reference log-probs come every step (``kl_coef > 0`` or asked for) or at the end."""
        return self.reference_scoring == "per_step" or (self.reference_scoring == "auto" and self.kl_coef > 0)


def _make_config(config: TokenEnvConfig | None, fields: dict[str, Any]) -> TokenEnvConfig:
    """``config`` (default ``TokenEnvConfig()``) with the keyword arguments ``fields`` replaced."""
    if config is None:
        return TokenEnvConfig(**fields)
    if not isinstance(config, TokenEnvConfig):
        raise TypeError(
            f"config must be a TokenEnvConfig, got {type(config).__name__}; pass a model as model=..."
        )
    return dataclasses.replace(config, **fields)


@dataclass
class TokenState:
    """The explicit state of B decoding episodes, what :class:`TokenCore` steps.

    The tensors live on the core's device. The cache is written in place (copying it every step
    would cost what the KV cache saves); the observation and log-prob tensors are replaced, never
    written, so what was handed out stays as it was. ``positions``, ``next_logits``, ``cache`` and
    ``ref_logprobs`` serve per-step reference scoring; they are ``None`` when it is deferred.
    """

    #: [B, context_len] left-padded window: prompt + continuation, the newest token last.
    input_ids: torch.Tensor
    #: [B, context_len] 1 on real tokens, 0 on padding (long).
    attention_mask: torch.Tensor
    #: [B] position id of the next token.
    positions: torch.Tensor | None
    #: [B, vocab] float32 logits of π_pt for the next token.
    next_logits: torch.Tensor | None
    #: π_pt's keys and values of exactly the window (one ``WindowLayer`` per layer).
    cache: DynamicCache | None
    #: [B, max_new_tokens] log π_pt of each token generated so far (0 after the last).
    ref_logprobs: torch.Tensor | None
    #: [B] tokens generated so far, on the device: the truncation flags need no upload.
    generated: torch.Tensor
    #: [B] the same on the host, so a step decides which episodes end without a sync.
    response_length: np.ndarray
    #: [B, max_new_tokens] the tokens generated so far, on the host: the texts for the reward model
    #: need no read from the device.
    response_tokens: np.ndarray
    #: [B] index into the prompts of each episode's prompt.
    prompt_index: np.ndarray
    #: [B] tokens of each episode's prompt.
    prompt_length: np.ndarray

    _TENSORS = ("input_ids", "attention_mask", "positions", "next_logits", "ref_logprobs", "generated")
    _ARRAYS = ("response_length", "response_tokens", "prompt_index", "prompt_length")

    def state_dict(self) -> dict[str, Any]:
        """A copy of the state, cache included."""
        state: dict[str, Any] = {name: _copy(getattr(self, name)) for name in self._TENSORS + self._ARRAYS}
        state["cache"] = None if self.cache is None else [layer.state_dict() for layer in self.cache.layers]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> TokenState:
        """Inverse of :meth:`state_dict`, on ``device``."""
        cache = None
        if state["cache"] is not None:
            cache = DynamicCache()
            cache.layers = [WindowLayer.from_state(layer, device) for layer in state["cache"]]
        tensors = {
            name: None if state[name] is None else state[name].to(device).clone() for name in cls._TENSORS
        }
        return cls(cache=cache, **tensors, **{name: state[name].copy() for name in cls._ARRAYS})


def _copy(value: torch.Tensor | np.ndarray | None) -> torch.Tensor | np.ndarray | None:
    if value is None:
        return None
    return value.clone() if isinstance(value, torch.Tensor) else value.copy()


class TokenCore(BatchedCore):
    """B decoding episodes of the reference model on one device; the dynamics behind both faces.

    State per episode (:class:`TokenState`): a left-padded window of the last ``context_len``
    tokens (the observation) and the tokens generated so far. A step appends one token to every
    episode; the window drops its oldest column (dead in every episode: prompt ≤
    ``max_prompt_tokens`` and at most ``max_new_tokens`` tokens fit). With per-step reference
    scoring the state also holds the reference model's KV cache for exactly that window and its
    logits for the next token: each step slides every cache layer with the window and appends the
    new token's keys and values by one forward pass; starting an episode prefills its prompt into
    the last columns of its rows. Deferred, the reference model runs once per finished episode, over
    its whole window. :meth:`restart` starts only the episodes that ended. The ``generator`` of this core is
    one NumPy generator per episode, from which each episode draws its prompts.
    """

    #: The return is undiscounted: the KL-regularised objective of the Rewards section is a sum.
    gamma = 1.0

    def __init__(self, config: TokenEnvConfig) -> None:
        self.model, self.tokenizer = load_causal_lm(config.model, config.tokenizer, config.device)
        super().__init__(self.model.device)
        self.reward_model: TextRewardFn = resolve_reward_model(
            config.reward_model, self.device, self.tokenizer
        )
        self.prompts = load_prompts(DEFAULT_PROMPTS_FILE if config.prompts is None else config.prompts)
        self.max_new_tokens = self.horizon = config.max_new_tokens
        self.stop_at_eos = config.stop_at_eos
        self.kl_coef = float(config.kl_coef)
        self.per_step_reference = config.per_step_reference
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        # Most HF models can skip the LM head where no logits are needed (a prefill needs the last).
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._encode_prompts(config.max_prompt_tokens, config.truncation)
        self.config = dataclasses.replace(
            config,
            model=self.model,
            tokenizer=self.tokenizer,
            prompts=self.prompts,
            reward_model=self.reward_model,
            device=self.device,
            max_prompt_tokens=self.max_prompt_tokens,
        )

        self.observation_space = gym.spaces.Dict(
            input_ids=gym.spaces.Box(0, self.vocab_size - 1, (self.context_len,), np.int64),
            attention_mask=gym.spaces.Box(0, 1, (self.context_len,), np.int8),
        )
        self.action_space = gym.spaces.Discrete(self.vocab_size)

    def _encode_prompts(self, max_prompt_tokens: int | None, truncation: str) -> None:
        encoded = self.tokenizer(self.prompts)["input_ids"]
        config = self.model.config
        model_context = getattr(config, "n_positions", None) or getattr(
            config, "max_position_embeddings", None
        )
        budget = max_prompt_tokens
        if budget is None and model_context is not None:
            budget = model_context - self.max_new_tokens
            if budget < 1:
                raise ValueError(
                    f"max_new_tokens={self.max_new_tokens} leaves no room for a prompt in the model's "
                    f"context of {model_context} tokens"
                )
        if truncation != "error" and budget is not None:
            encoded = self._truncate(encoded, budget, truncation)
        lengths = np.array([len(ids) for ids in encoded])
        if (lengths == 0).any():
            raise ValueError(f"prompt {int(np.argmin(lengths))} is empty: a prompt needs at least one token")
        longest, index = int(lengths.max()), int(np.argmax(lengths))
        self.max_prompt_tokens = longest if max_prompt_tokens is None else max_prompt_tokens
        if longest > self.max_prompt_tokens:
            raise ValueError(
                f"prompt {index} has {longest} tokens, more than max_prompt_tokens={self.max_prompt_tokens}; "
                "truncation='left' or 'right' cuts such prompts"
            )
        # The observation holds the longest prompt and the whole continuation.
        self.context_len = self.max_prompt_tokens + self.max_new_tokens
        if model_context is not None and self.context_len > model_context:
            raise ValueError(
                f"prompt {index} has {longest} tokens: with max_prompt_tokens={self.max_prompt_tokens} "
                f"and max_new_tokens={self.max_new_tokens} the context is {self.context_len} tokens, longer "
                f"than the model's {model_context}; truncation='left' or 'right' cuts the prompts to "
                f"{model_context - self.max_new_tokens} tokens"
            )
        width = self.max_prompt_tokens
        ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        for row, prompt_ids in enumerate(encoded):
            ids[row, width - len(prompt_ids) :] = torch.tensor(prompt_ids)
        self.prompt_ids = ids.to(self.device)
        self.prompt_lengths = torch.as_tensor(lengths, device=self.device)
        self._prompt_lengths_host = lengths

    def _truncate(self, encoded: list[list[int]], budget: int, side: str) -> list[list[int]]:
        """Cut the prompts longer than ``budget`` tokens on ``side``, warn how many and by how much, and
        make ``self.prompts`` the texts that remain (what the reward model then reads)."""
        cut = [index for index, ids in enumerate(encoded) if len(ids) > budget]
        if not cut:
            return encoded
        excess = np.array([len(encoded[index]) - budget for index in cut])
        warnings.warn(
            f"TokenEnv: truncation={side!r} cut {len(cut)} of {len(encoded)} prompts to {budget} tokens, "
            f"by {excess.min()} to {excess.max()} tokens (mean {excess.mean():.1f})",
            UserWarning,
            stacklevel=2,
        )
        encoded = list(encoded)
        for index in cut:
            encoded[index] = encoded[index][-budget:] if side == "left" else encoded[index][:budget]
            self.prompts[index] = self.tokenizer.decode(encoded[index])
        return encoded

    def to(self, device: str | torch.device) -> TokenCore:
        """This core, when ``device`` is its own; a reference model is never copied across devices."""
        if not _same_device(resolve_device(device), self.device):
            raise ValueError(
                f"the TokenEnv runs on {self.device}, not {device}: build the env with device={str(device)!r}"
            )
        return self

    # -- dynamics -----------------------------------------------------------------------------------
    def reset(self, num_envs: int, generator: PromptGenerators) -> TokenState:
        """``num_envs`` fresh episodes, episode i with a prompt drawn by ``generator[i]``."""
        shape = (num_envs, self.context_len)
        state = TokenState(
            input_ids=torch.full(shape, self.pad_token_id, dtype=torch.long, device=self.device),
            attention_mask=torch.zeros(shape, dtype=torch.long, device=self.device),
            positions=None,
            next_logits=None,
            cache=None,
            ref_logprobs=None,
            generated=torch.zeros(num_envs, dtype=torch.long, device=self.device),
            response_length=np.zeros(num_envs, dtype=np.int64),
            response_tokens=np.zeros((num_envs, self.max_new_tokens), dtype=np.int64),
            prompt_index=np.zeros(num_envs, dtype=np.int64),
            prompt_length=np.zeros(num_envs, dtype=np.int64),
        )
        if self.per_step_reference:
            state.positions = torch.zeros(num_envs, dtype=torch.long, device=self.device)
            state.next_logits = torch.zeros(num_envs, self.vocab_size, device=self.device)
            state.cache = DynamicCache()
            state.ref_logprobs = torch.zeros(num_envs, self.max_new_tokens, device=self.device)
        rows = np.arange(num_envs)
        self._start(state, rows, self._draw_prompts(generator, rows))
        return state

    def restart(self, state: TokenState, done: np.ndarray, generator: PromptGenerators) -> TokenState:
        """Start new episodes in the rows where ``done`` (bool [B] on the host, as ``step`` reports)."""
        rows = np.flatnonzero(done)
        if len(rows):
            self._start(state, rows, self._draw_prompts(generator, rows))
        return state

    def _draw_prompts(self, generator: PromptGenerators, rows: np.ndarray) -> np.ndarray:
        return np.array([generator[row].integers(len(self.prompts)) for row in rows], dtype=np.int64)

    @torch.inference_mode()
    def _start(self, state: TokenState, rows: np.ndarray, prompt_index: np.ndarray) -> None:
        """Start episodes in ``rows`` with the prompts ``prompt_index`` (per-step scoring: one prefill)."""
        rows_t, index_t = torch.as_tensor(np.stack([rows, prompt_index]), device=self.device)  # one upload
        # Only the columns that one of these prompts reaches.
        width = int(self._prompt_lengths_host[prompt_index].max())
        ids = self.prompt_ids[index_t, -width:]
        starts = ids.shape[1] - self.prompt_lengths[index_t, None]
        mask = (torch.arange(ids.shape[1], device=self.device) >= starts).long()
        pad = self.context_len - ids.shape[1]
        window_ids = torch.nn.functional.pad(ids, (pad, 0), value=self.pad_token_id)
        window_mask = torch.nn.functional.pad(mask, (pad, 0))
        # Out-of-place index_copy: observations already handed out are never written to.
        state.input_ids = state.input_ids.index_copy(0, rows_t, window_ids)
        state.attention_mask = state.attention_mask.index_copy(0, rows_t, window_mask)
        state.generated[rows_t] = 0
        state.response_length[rows] = 0
        state.prompt_index[rows] = prompt_index
        state.prompt_length[rows] = self._prompt_lengths_host[prompt_index]
        if not self.per_step_reference:
            return
        positions = position_ids(mask)
        output = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **({"logits_to_keep": 1} if self._keeps_logits else {}),
        )
        state.positions[rows_t] = positions[:, -1] + 1
        state.next_logits[rows_t] = output.logits[:, -1].float()
        state.ref_logprobs = state.ref_logprobs.index_fill(0, rows_t, 0.0)
        whole = len(rows) == len(state.response_length)
        self._write_cache(state, rows_t, returned_cache(output), whole=whole)

    def _write_cache(self, state: TokenState, rows: torch.Tensor, prefill: DynamicCache, whole: bool) -> None:
        for layer in prefill.layers:
            if type(layer) is not DynamicLayer:
                raise ValueError(
                    f"TokenEnv needs a plain DynamicCache; this model's cache has a {type(layer).__name__}"
                )
        if whole:
            # Every episode starts: the prefill's keys and values seed fresh window buffers.
            state.cache = DynamicCache()
            state.cache.layers = [
                WindowLayer(layer.keys, layer.values, self.context_len) for layer in prefill.layers
            ]
            return
        for layer, fresh in zip(state.cache.layers, prefill.layers, strict=True):
            # Columns before the prompt keep stale values; the attention mask hides them.
            layer.write(rows, fresh.keys, fresh.values)

    def check_actions(self, action: np.ndarray) -> None:
        """Raise ``ValueError`` unless every id in ``action`` (any integer dtype) is in the vocabulary."""
        invalid = (action < 0) | (action >= self.vocab_size)
        if invalid.any():
            raise ValueError(
                f"action {action[invalid][0]} is outside the vocabulary: Discrete({self.vocab_size})"
            )

    def actions_to_host(self, action: torch.Tensor) -> np.ndarray:
        """The one host sync of a step, when the actions come as a tensor: their ids, from which the
        host checks the range, finds EOS, decides which episodes end and decodes their texts."""
        return action.cpu().numpy()

    @torch.inference_mode()
    def step(
        self,
        state: TokenState,
        action: torch.Tensor,
        generator: PromptGenerators | None = None,
        action_host: np.ndarray | None = None,
        void: np.ndarray | None = None,
    ) -> tuple[TokenState, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Append ``action`` (LongTensor [B] on the device) to every episode.

        ``action_host`` is the same ids on the host when the caller has them (a numpy face);
        otherwise they are copied there, the step's one host sync. A step happens entirely or not
        at all: the finished episodes are scored before the state changes, so an action outside the
        vocabulary or a reward model that raises leaves ``state`` as it was. Rows where ``void``
        (bool [B] on the host) are stepped but count for nothing: they neither end nor earn, and the
        caller restarts them next (Gymnasium's next-step autoreset ignores their actions).

        Returns ``(state, reward, terminated, info)``: reward float32 [B] and terminated bool [B]
        on the device; ``info`` holds ``truncated`` (bool [B] on the device), with per-step scoring
        ``ref_logprob`` (float32 [B] on the device), the actions and flags on the host
        (``host_action``, ``host_terminated``, ``host_truncated``), ``done`` (bool [B] on the host,
        for :meth:`restart`), ``done_rows`` (its indices) and, when some episode ended, ``prompts``,
        ``completions`` (lists of str, for ``done_rows``), ``score`` (float32 [B]) and
        ``ref_logprobs`` (float32 [B, max_new_tokens]: log π_pt of each generated token, 0 after
        the last), both on the device and 0 in the rows that did not end. Decoding draws nothing:
        ``generator`` is not used.
        """
        if action_host is None:
            action_host = self.actions_to_host(action)
        self.check_actions(action_host)
        counted = np.ones(len(action_host), bool) if void is None else ~void
        eos = action_host == self.eos_token_id if self.stop_at_eos else np.zeros_like(counted)
        terminated_host = eos & counted
        response_length = state.response_length + 1
        truncated_host = (response_length >= self.max_new_tokens) & ~terminated_host & counted
        done = terminated_host | truncated_host
        done_rows = np.flatnonzero(done)
        response_tokens = state.response_tokens.copy()
        rows = np.flatnonzero(counted)  # a void row may have ended with a full response: no column left
        response_tokens[rows, response_length[rows] - 1] = action_host[rows]
        input_ids = torch.cat([state.input_ids[:, 1:], action[:, None]], dim=1)
        attention_mask = torch.nn.functional.pad(state.attention_mask[:, 1:], (0, 1), value=1)
        if len(done_rows):
            # Everything about the finished episodes is computed before the state changes.
            prompts, completions = self._texts(
                state.prompt_index, response_tokens, response_length, done_rows
            )
            scores = check_scores(self.reward_model(prompts, completions), len(done_rows)).to(self.device)
            done_rows_t = torch.as_tensor(done_rows, device=self.device)
            score = torch.zeros(len(done), device=self.device).index_put_((done_rows_t,), scores)
            if not self.per_step_reference:
                episode_logprobs = self._score_episodes(
                    input_ids[done_rows_t],
                    attention_mask[done_rows_t],
                    (state.generated + 1)[done_rows_t],
                    (state.prompt_length + response_length)[done_rows],
                )

        # Nothing can fail from here on: commit the step.
        reward = torch.zeros(len(done), device=self.device)
        info: dict[str, Any] = {}
        if self.per_step_reference:
            ref_logprob = token_logprobs(state.next_logits, action)
            column = state.generated.clamp(max=self.max_new_tokens - 1)[:, None]
            state.ref_logprobs = state.ref_logprobs.scatter(1, column, ref_logprob[:, None])
            episode_logprobs = state.ref_logprobs
            info["ref_logprob"] = ref_logprob
            if self.kl_coef:
                reward = self.kl_coef * ref_logprob
        state.response_length, state.response_tokens = response_length, response_tokens
        state.generated = state.generated + 1
        state.input_ids, state.attention_mask = input_ids, attention_mask
        if self.per_step_reference and len(done_rows) < len(done):
            # A step where every episode ends needs no next-token logits. Attention reads only the
            # last ``live`` columns: those left of them are padding in every row.
            live = min(int((state.prompt_length + state.response_length).max()), self.context_len)
            for layer in state.cache.layers:
                layer.slide(live - 1)
            output = self.model(
                input_ids=action[:, None],
                attention_mask=decoding_mask(self.model, state.attention_mask[:, -live:]),
                position_ids=state.positions[:, None],
                use_cache=True,
                **{CACHE: state.cache},
            )
            state.next_logits = output.logits[:, -1].float()
        if self.per_step_reference:
            state.positions += 1

        # Flags from device tensors: uploading the host's copies would cost two more syncs.
        terminated = (
            action == self.eos_token_id if self.stop_at_eos else torch.zeros_like(action, dtype=torch.bool)
        )
        truncated = (state.generated >= self.max_new_tokens) & ~terminated
        if not counted.all():
            kept = torch.as_tensor(counted, device=self.device)
            terminated, truncated = terminated & kept, truncated & kept
            reward = reward.masked_fill(~kept, 0.0)
        info |= {
            "truncated": truncated,
            "host_action": action_host,
            "host_terminated": terminated_host,
            "host_truncated": truncated_host,
            "done": done,
            "done_rows": done_rows,
        }
        if len(done_rows):
            finished = episode_logprobs[done_rows_t] if self.per_step_reference else episode_logprobs
            ref_logprobs = torch.zeros(len(done), self.max_new_tokens, device=self.device)
            ref_logprobs = ref_logprobs.index_copy(0, done_rows_t, finished)
            reward = reward + score
            info.update(prompts=prompts, completions=completions, score=score, ref_logprobs=ref_logprobs)
        return state, reward, terminated, info

    def _score_episodes(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lengths: torch.Tensor,
        window_lengths: np.ndarray,
    ) -> torch.Tensor:
        """log π_pt of the generated tokens of finished episodes, from forward passes over their
        windows ([k, W], each ending with its ``lengths`` (LongTensor [k]) generated tokens, its
        prompt and tokens ``window_lengths`` long (ints [k] on the host)), one pass per
        :func:`length_buckets` group over its longest window; returns float32 [k, max_new_tokens],
        token j of each episode in column j, 0 after its last."""
        groups = length_buckets(window_lengths, self.device)
        if len(groups) == 1:
            return self._score_group(input_ids, attention_mask, lengths, int(window_lengths.max()))
        scored = []
        for rows in groups:
            rows_t = torch.as_tensor(rows, device=self.device)
            width = int(window_lengths[rows].max())
            scored.append(
                self._score_group(input_ids[rows_t], attention_mask[rows_t], lengths[rows_t], width)
            )
        order = torch.as_tensor(np.concatenate(groups), device=self.device)
        return torch.cat(scored)[order.argsort()]

    def _score_group(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lengths: torch.Tensor, width: int
    ) -> torch.Tensor:
        """:meth:`_score_episodes` of one group, in one forward pass over the last ``width`` columns."""
        input_ids, attention_mask = input_ids[:, -width:], attention_mask[:, -width:]
        # Logits are needed only where they predict generated tokens: at most the last N + 1 columns.
        keep = min(width, self.max_new_tokens + 1)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            **({"logits_to_keep": keep} if self._keeps_logits else {}),
        ).logits[:, -keep:]
        # Column c's logits predict token c + 1: right-aligned log-probs of the last keep - 1 tokens.
        right = token_logprobs(logits[:, :-1].float(), input_ids[:, width - keep + 1 :])
        # Token j of an episode with r generated tokens sits at right-aligned column (keep - 1) - r + j.
        columns = torch.arange(self.max_new_tokens, device=self.device)
        index = (keep - 1 - lengths)[:, None] + columns
        left = right.gather(1, index.clamp(max=keep - 2))
        return left.masked_fill(columns >= lengths[:, None], 0.0)

    @torch.inference_mode()
    def reference_logprobs(self, state: TokenState, running: np.ndarray) -> torch.Tensor:
        """log π_pt of the tokens generated so far by the episodes where ``running`` (bool [B] on the
        host): float32 [B, max_new_tokens] on the device, token j in column j, 0 after the last and in
        the other rows. With per-step scoring the state holds them; deferred, one batched forward
        over the windows scores them, as the episodes' end would."""
        lengths = np.where(running, state.response_length, 0)
        if self.per_step_reference:
            if running.all():
                return state.ref_logprobs
            return state.ref_logprobs.masked_fill(torch.as_tensor(~running, device=self.device)[:, None], 0.0)
        logprobs = torch.zeros(len(lengths), self.max_new_tokens, device=self.device)
        rows = np.flatnonzero(lengths)
        if len(rows):  # only the episodes with tokens (a row restarted at the last step has none)
            rows_t = torch.as_tensor(rows, device=self.device)
            scored = self._score_episodes(
                state.input_ids[rows_t],
                state.attention_mask[rows_t],
                state.generated[rows_t],
                (state.prompt_length + state.response_length)[rows],
            )
            logprobs = logprobs.index_copy(0, rows_t, scored)
        return logprobs

    def texts(self, state: TokenState, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """The prompts and the continuations so far (special tokens dropped) of episodes ``rows``."""
        return self._texts(state.prompt_index, state.response_tokens, state.response_length, rows)

    def _texts(
        self, prompt_index: np.ndarray, tokens: np.ndarray, lengths: np.ndarray, rows: np.ndarray
    ) -> tuple[list[str], list[str]]:
        responses = [tokens[row, : lengths[row]] for row in rows]
        completions = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return [self.prompts[i] for i in prompt_index[rows]], completions

    def observe(self, state: TokenState) -> dict[str, torch.Tensor]:
        return {"input_ids": state.input_ids, "attention_mask": state.attention_mask.to(torch.int8)}


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device when one of them names no index."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class _TokenFace:
    """What both faces of a :class:`TokenCore` show the agents: its parts, ``gamma``, ``to_vector``."""

    core: TokenCore

    @property
    def config(self) -> TokenEnvConfig:
        """The env's configuration with every part resolved (loaded model, tokenizer, prompts...)."""
        return self.core.config

    @property
    def reference_model(self) -> PreTrainedModel:
        """π_pt, the frozen reference policy (in eval mode; do not train it: copy it)."""
        return self.core.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.core.tokenizer

    @property
    def reward_model(self) -> TextRewardFn:
        """The resolved text reward model, ``(prompts, completions) -> Tensor[B]``."""
        return self.core.reward_model

    @property
    def prompts(self) -> list[str]:
        return self.core.prompts

    @property
    def kl_coef(self) -> float:
        """β of the per-step reward β · log π_pt (0: the agent applies the KL itself)."""
        return self.core.kl_coef

    @property
    def gamma(self) -> float:
        """1.0: the env's return is an undiscounted sum (see ``TokenEnv``'s Rewards)."""
        return self.core.gamma

    def to_vector(
        self,
        num_envs: int | None = None,
        device: str | torch.device | None = None,
        as_tensors: bool = True,
        autoreset_mode: AutoresetMode | str | None = None,
    ) -> TokenVectorEnv:
        """A new :class:`TokenVectorEnv` of ``num_envs`` episodes (default: this env's count) that
        shares this env's reference model, tokenizer, prompts and reward model; this env is left as
        it is. ``device`` must be this env's own (``ValueError`` otherwise). ``autoreset_mode``
        ``None`` keeps a vector env's mode and gives a single env's the default."""
        if device is not None:
            self.core.to(device)
        count = getattr(self, "num_envs", 1) if num_envs is None else num_envs
        mode = getattr(self, "autoreset_mode", None) if autoreset_mode is None else autoreset_mode
        modes = {} if mode is None else {"autoreset_mode": mode}
        return TokenVectorEnv(count, self.core.config, as_tensors=as_tensors, **modes)


class TokenVectorEnv(_TokenFace, VectorEnv):
    """B decoding episodes stepped together, one batched forward pass of π_pt per step.

    ## Description
    The vector form of :class:`TokenEnv` (see its docstring for the MDP). With ``as_tensors=True``
    actions can be, and observations, rewards, flags and per-step infos are, torch tensors on the
    device; otherwise they are numpy.

    ## Host syncs
    A step of the tensor face makes one blocking host sync: the copy of the B action ids to the
    host (:meth:`TokenCore.actions_to_host`), which checks their range, finds EOS, decides which
    episodes end and keeps the texts for the reward model; flags, rewards and log-probs stay on the
    device, and the one-token forward gets a prepared 4-D attention mask (a 2-D one makes
    transformers check it for padding on the host). A step that ends episodes also pays the reward
    model's transfers (texts in, scores out) and the upload of the restarted rows' prompts. The
    numpy face uploads the actions and downloads its outputs; the single :class:`TokenEnv` uploads
    its action and downloads one stack of numbers, building its observation on the host.

    ## Autoreset
    ``autoreset_mode`` (declared in ``metadata["autoreset_mode"]``; ``NEXT_STEP`` by default, as in
    Gymnasium) follows Gymnasium's contract:

    * ``SAME_STEP``: an episode that ends restarts in the same step; the step returns the new
      episode's first observation, ``info["final_obs"]`` the ended one's last (Gymnasium's object
      array of per-episode dicts; the tensor face keeps a dict of [B, context_len] tensors) and
      ``info["final_info"]`` its last step's info: ``prompt``, ``completion``, ``score``,
      ``prompt_length``, ``response_length`` and ``ref_logprob``, with masks ``_prompt``...;
      ``info["prompt"]`` names the new episodes' prompts. The tensor face has ``final_obs``,
      ``final_info`` and their masks on every step (all ``False`` when no episode ended).
    * ``NEXT_STEP``: the ending step is an ordinary step whose info also holds the episode's
      ``prompt``, ``completion``, ``score``, ``prompt_length`` and ``response_length`` (masked to
      the ended rows); at the next step those rows restart instead: their actions are ignored, their
      reward is 0, their flags ``False``, and ``info["prompt"]`` names their new prompts.
    * ``DISABLED``: ended rows wait; ``step()`` raises ``RuntimeError`` until
      ``reset(options={"reset_mask": mask})`` restarts them.

    Masks are numpy bool arrays on the host on both faces (the env decides on the host which
    episodes end). The response's token ids are the last ``response_length`` tokens of the final
    observation's ``input_ids``, its prompt the ``prompt_length`` tokens before them: enough to
    recompute any model's log-probs of the whole sequence in one batch. The end-of-episode info
    also holds ``ref_logprobs`` ([B, max_new_tokens], see ``TokenEnv``'s "Reference log-probs");
    with per-step scoring ``info["ref_logprob"]`` holds every row's value on every step, its mask
    leaving out the rows whose step info is elsewhere.

    ## Arguments
        num_envs: B, the number of episodes.
        config: a :class:`TokenEnvConfig`; ``None`` takes the defaults.
        as_tensors: torch tensors on the device in and out instead of numpy arrays.
        autoreset_mode: a ``gymnasium.vector.AutoresetMode`` or its name (``"next_step"``, the
            default, ``"same_step"``, ``"disabled"``).
        **fields: any field of :class:`TokenEnvConfig` (``model=``, ``max_new_tokens=``...),
            replacing the one in ``config``.

    ## Example
    >>> import rlhf_envs
    >>> from rlhf_envs.envs.token import TokenVectorEnv
    >>> envs = TokenVectorEnv(4, max_new_tokens=8, device="cpu")
    >>> obs, info = envs.reset(seed=0)
    >>> obs["input_ids"].shape == (4, envs.config.max_prompt_tokens + 8)
    True
    >>> _ = envs.action_space.seed(0)
    >>> for _ in range(8):
    ...     obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    >>> bool((terminated | truncated).all())  # every episode ended by its 8th token
    True
    >>> obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    >>> rewards.tolist(), bool(info["_prompt"].all())  # next-step autoreset: new episodes, reward 0
    ([0.0, 0.0, 0.0, 0.0], True)

    ## Version History
    * v0: initial version.
    """

    metadata: dict[str, Any] = {
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": [],
        "render_fps": 10,
    }

    def __init__(
        self,
        num_envs: int = 1,
        config: TokenEnvConfig | None = None,
        as_tensors: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **fields: Any,
    ) -> None:
        num_envs = positive_int("num_envs", num_envs)
        self.autoreset_mode = autoreset_mode_from(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.core = TokenCore(_make_config(config, fields))
        self.num_envs = num_envs
        self.as_tensors = as_tensors
        self.device = self.core.device
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator] = []
        self._state: TokenState | None = None
        #: Episodes that ended at the last step: NEXT_STEP restarts them now, DISABLED waits for reset().
        self._ended = np.zeros(num_envs, bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Start every episode, or with ``options={"reset_mask": mask}`` (bool [B]) only the masked
        ones (Gymnasium's way to restart episodes under ``DISABLED`` autoreset). ``seed=s`` seeds
        episode i's RNG with s + i, as gymnasium's vector envs do."""
        super().reset(seed=seed)
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            if seed is not None or not self._rngs:
                seeds = [None] * self.num_envs if seed is None else [seed + i for i in range(self.num_envs)]
                self._rngs = [seeding.np_random(row_seed)[0] for row_seed in seeds]
            self._state = self.core.reset(self.num_envs, self._rngs)
            mask = np.ones(self.num_envs, bool)
        else:
            mask = self._check_reset_mask(mask)
            if seed is not None:
                for row in np.flatnonzero(mask):
                    self._rngs[row] = seeding.np_random(seed + int(row))[0]
            self._state = self.core.restart(self._state, mask, self._rngs)
        self._ended &= ~mask
        return self._output(self.core.observe(self._state)), self._prompt_info(self._state, mask)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        mode = self.autoreset_mode
        if mode == AutoresetMode.DISABLED and self._ended.any():
            raise RuntimeError(
                f"episodes {np.flatnonzero(self._ended).tolist()} have ended; with autoreset_mode=DISABLED "
                "call reset(options={'reset_mask': mask}) before step()"
            )
        restarting = self._ended.copy() if mode == AutoresetMode.NEXT_STEP else np.zeros(self.num_envs, bool)
        action, action_host = _token_ids(actions, (self.num_envs,), self.core)
        state, reward, terminated, result = self.core.step(
            self._state, action, action_host=action_host, void=restarting
        )
        done = result["done"]
        # Each step's own info: log π_pt of its token, with per-step reference scoring.
        step_info = {}
        if "ref_logprob" in result:
            step_info = {"ref_logprob": self._output(result["ref_logprob"]), "_ref_logprob": done}
        episode = self._episode_info(state, result)
        info: dict[str, Any] = {key: value for key, value in step_info.items() if not key.startswith("_")}
        if mode == AutoresetMode.SAME_STEP:
            # Gymnasium's same-step layout: an ended row's step info lives in final_info.
            info |= {f"_{key}": ~done for key in info}
            if done.any() or self.as_tensors:  # the tensor face has every key on every step
                final_obs = self._output(self.core.observe(state))
                info["final_obs"], info["_final_obs"] = self._final_obs(final_obs, done), done
                info["final_info"], info["_final_info"] = episode | step_info, done
            restarting = done
        else:
            info |= {f"_{key}": ~restarting for key in info}
            if done.any():
                info |= episode
            self._ended = done
        if restarting.any():
            state = self.core.restart(state, restarting, self._rngs)
            prompts = self._prompt_info(state, restarting)
            if (
                "prompt" in info
            ):  # NEXT_STEP: ended rows name their episode's prompt, restarted rows the new one
                prompts["prompt"] = np.where(restarting, prompts["prompt"], info["prompt"])
                prompts["_prompt"] = restarting | info["_prompt"]
            info |= prompts
        self._state = state
        return (
            self._output(self.core.observe(state)),
            self._output(reward),
            self._output(terminated),
            self._output(result["truncated"]),
            info,
        )

    def window_lengths(self) -> np.ndarray:
        """The tokens each window of the latest observation holds, prompt and generated (ints [B] on
        the host; right-aligned, the columns left of them are padding)."""
        if self._state is None:
            raise RuntimeError("call reset() before window_lengths(): there is no observation")
        return self._state.prompt_length + self._state.response_length

    def running_info(self) -> dict[str, Any]:
        """What the last step's info would say of the episodes in progress if they ended now:
        ``ref_logprobs`` ([B, max_new_tokens], log π_pt of their tokens so far, token j in column j)
        and ``response_length`` ([B] on the host); 0 in rows with no episode in progress (ended
        under ``NEXT_STEP`` or ``DISABLED`` autoreset, or not started a token).

        An agent whose rollout stops in mid-episode reads here the reference log-probs of the tokens
        it has taken: with deferred scoring, one batched reference forward over the windows so far;
        with per-step scoring, the ones the env holds."""
        if self._state is None:
            raise RuntimeError("call reset() before running_info(): no episode is in progress")
        running = ~self._ended
        ref_logprobs = self.core.reference_logprobs(self._state, running)
        response_length = np.where(running, self._state.response_length, 0)
        return {"ref_logprobs": self._output(ref_logprobs), "response_length": response_length}

    def state_dict(self) -> dict[str, Any]:
        """The episodes in progress (KV cache included) and every random state: loading it into a
        like env continues this one exactly."""
        if self._state is None:
            raise RuntimeError("call reset() before state_dict(): no episode is in progress")
        rngs = [numpy_rng_state(rng) for rng in self._rngs]
        return _face_state(self, self._state) | {"rngs": rngs, "ended": self._ended.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` of an env with the same model, prompts, ``num_envs`` and
        kind of device; raises ``ValueError`` otherwise."""
        self._state = _load_face_state(self, state, self.num_envs)
        self._rngs = [numpy_rng_from_state(rng) for rng in state["rngs"]]
        self._ended = state["ended"].copy()

    def _episode_info(self, state: TokenState, result: dict[str, Any]) -> dict[str, Any]:
        """What the single env's last step tells of an episode, for the rows that ended (masked)."""
        rows, done = result["done_rows"], result["done"]
        prompts = np.full(self.num_envs, None, dtype=object)
        completions = np.full(self.num_envs, None, dtype=object)
        if len(rows):
            prompts[rows], completions[rows] = result["prompts"], result["completions"]
        if len(rows):
            score, ref_logprobs = result["score"], result["ref_logprobs"]
        else:
            score = torch.zeros(self.num_envs, device=self.device)
            ref_logprobs = torch.zeros(self.num_envs, self.core.max_new_tokens, device=self.device)
        info = {"prompt": prompts, "completion": completions, "score": self._output(score)}
        info |= {
            "prompt_length": np.where(done, state.prompt_length, 0),
            "response_length": np.where(done, state.response_length, 0),
            "ref_logprobs": self._output(ref_logprobs),
        }
        return info | {f"_{key}": done for key in list(info)}

    def _final_obs(self, obs: dict[str, Any], done: np.ndarray) -> Any:
        """The tensor face's final observations stay batched tensors; the numpy face gives Gymnasium's
        object array, each ended row's observation dict (``None`` elsewhere)."""
        if self.as_tensors:
            return obs
        final = np.full(self.num_envs, None, dtype=object)
        for row in np.flatnonzero(done):
            final[row] = {key: value[row] for key, value in obs.items()}
        return final

    def _prompt_info(self, state: TokenState, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The reset info of the episodes that (re)started where ``rows`` (bool [B])."""
        prompts = np.full(self.num_envs, None, dtype=object)
        for row in np.flatnonzero(rows):
            prompts[row] = self.core.prompts[state.prompt_index[row]]
        return {"prompt": prompts, "_prompt": rows.copy()}

    def _check_reset_mask(self, mask: Any) -> np.ndarray:
        if self._state is None:
            raise RuntimeError("call reset() without a reset_mask first: no episode has started")
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise TypeError(f"options['reset_mask'] must be a numpy bool array, got {mask!r}")
        if mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must have shape ({self.num_envs},), got {mask.shape}")
        if not mask.any():
            raise ValueError("options['reset_mask'] must have at least one True value")
        return mask

    def _output(self, value: Any) -> Any:
        if self.as_tensors:
            return value
        if isinstance(value, dict):
            return {key: item.cpu().numpy() for key, item in value.items()}
        return value.cpu().numpy()


class TokenEnv(_TokenFace, gym.Env):
    """LLM decoding as an MDP: the state is prompt + continuation, the action is the next token.

    ## Description
    The lecture's "decoding as an RL problem": an episode starts from a prompt x drawn from a set,
    each action appends one token t to the continuation y, and the episode ends at the EOS token or
    after N = ``max_new_tokens`` tokens. The environment holds a frozen reference model π_pt (by
    default the embedded LM) and computes log π_pt(t | x, y) of every taken token from one forward
    pass over a KV cache (never re-running the sequence); it is the B = 1 case of
    :class:`TokenVectorEnv`'s batched core.

    ## Action Space
    ``Discrete(vocab_size)``: the id of the next token (``vocab_size`` = the model's output width), an
    integer of any numpy or torch integer dtype or a Python int. Bools, floats and ids outside the
    vocabulary raise ``ValueError`` and leave the episode as it was.

    ## Observation Space
    ``Dict(input_ids=Box(0, vocab_size - 1, (context_len,), int64), attention_mask=Box(0, 1,
    (context_len,), int8))``: prompt + continuation, left-padded with the pad token (mask 0) to
    ``context_len = max_prompt_tokens + max_new_tokens``, so the newest token is always last.

    ## Rewards
    The last step's reward is the reward model's score r_φ(x, y) of (prompt, completion). With
    ``kl_coef`` = β > 0 every step's reward also adds β · log π_pt(t_n | s_n). Why this is the KL
    regularizer of Stiennon et al. (the lecture writes r_φ + D_KL; the penalty enters with a minus):
    for a policy π and undiscounted returns (γ = 1),

        E_π[r_φ(x, y)] − β·KL(π ‖ π_pt)
          = E_π[r_φ(x, y) − β Σ_n (log π(t_n|s_n) − log π_pt(t_n|s_n))]
          = E_π[r_φ(x, y) + β Σ_n log π_pt(t_n|s_n)] + β E_π[Σ_n H(π(·|s_n))],

    since E_{t∼π(·|s)}[−log π(t|s)] = H(π(·|s)). The first term is this env's return; the second is
    an entropy bonus with the same β at every visited state (SB3's ``ent_coef = β``). The identity
    holds in expectation; an agent that wants the exact per-token KL (the PPO agent does) sets
    ``kl_coef=0`` and uses the reference log-probs itself.

    ## Reference log-probs
    log π_pt of every generated token is computed in one of two ways (``reference_scoring``):

    * per step (``"per_step"``; what ``kl_coef > 0`` needs, and ``"auto"`` then): the env keeps
      π_pt's KV cache of each episode; every step runs one forward pass of one token per episode
      and reports ``info["ref_logprob"]``. Cost: a forward pass per token, which reads all of π_pt's
      weights each time (the bigger the model, the more that costs next to the policy's own
      sampling), plus the prompt's prefill and the KV cache's memory (layers × 2 × B ×
      ``context_len`` × hidden floats).
    * at the episode's end (``"episode_end"``; the default ``"auto"`` whenever ``kl_coef == 0``, as
      for :class:`agents.TokenPPO`, which applies the KL itself): a step runs no model at all;
      when episodes end, one batched forward pass over their windows (prompt + response) scores
      every generated token, as the usual pipeline's reference pass after ``generate`` does. Cost:
      one forward over the finished sequences (their weights read once per batch of ends, not per
      token; over the columns their tokens fill, in passes by length where the padding that saves
      pays for a pass, see :func:`length_buckets`), no KV cache held. Each step's reward then
      cannot carry β · log π_pt (``kl_coef > 0`` is refused); an agent that needs the log-probs of
      episodes still in progress (PPO at the end of a rollout) asks
      :meth:`TokenVectorEnv.running_info`, one more batched forward.

    Either way the last step's info holds ``ref_logprobs``: float32 [max_new_tokens], token j's
    log-prob in entry j, 0 after ``response_length``. Both agree to float rounding (1e-5).

    ## Starting State
    A prompt drawn uniformly from ``prompts`` with the env's RNG.

    ## Episode End
    Terminated when the action is EOS (with ``stop_at_eos``); truncated after ``max_new_tokens``
    tokens. The last step's info holds ``prompt``, ``completion`` (decoded, special tokens dropped),
    ``score``, ``prompt_length``, ``response_length`` and ``ref_logprobs``; with per-step reference
    scoring every step's info holds ``ref_logprob``.
    Stepping an episode that has ended raises ``RuntimeError`` (call ``reset()``), as every single
    env of this suite does. A step happens entirely or not at all: if the reward model raises at
    the episode's end, the env is as it was before the step, and the step can be retried.

    ## Arguments
        config: a :class:`TokenEnvConfig` (model, tokenizer, prompts, reward model, N =
            ``max_new_tokens``, ``stop_at_eos``, β = ``kl_coef``, ``device``, ``max_prompt_tokens``,
            ``truncation`` of prompts too long for the context: ``"error"``, ``"left"``, ``"right"``);
            ``None`` takes the defaults.
        render_mode: ``"ansi"`` returns prompt + continuation as text.
        **fields: any field of :class:`TokenEnvConfig`, replacing the one in ``config``:
            ``gym.make("rlhf_envs/TokenEnv-v0", max_new_tokens=16, reward_model=my_model)``.

    ## Example
    >>> import gymnasium as gym
    >>> import rlhf_envs
    >>> env = gym.make("rlhf_envs/TokenEnv-v0", max_new_tokens=8, device="cpu")
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs)
    ['attention_mask', 'input_ids']
    >>> for n in range(8):
    ...     obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    ...     if terminated or truncated:
    ...         break
    >>> sorted(k for k in info if k != "ref_logprob")  # the last step tells what the episode was
    ['completion', 'prompt', 'prompt_length', 'ref_logprobs', 'response_length', 'score']
    >>> reward == info["score"]  # kl_coef=0: the reward model's score, on the last step only
    True

    ## Vectorizing
    :class:`TokenVectorEnv` runs B episodes in one process with one batched forward pass; prefer it.
    Gymnasium's ``AsyncVectorEnv`` over TokenEnvs works with ``context="spawn"``
    (``gym.make_vec(..., vectorization_mode="async", vector_kwargs={"context": "spawn"})``); with
    the default ``fork`` its ``reset()`` can deadlock once the parent process has used torch's thread
    pool, whose locks the forked children inherit. A pickled or deep-copied TokenEnv steps bit for bit
    as the original (weights are kept in aligned memory; see ``rlhf_envs.lm.loading.align_weights``).

    ## Version History
    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 10}

    def __init__(
        self, config: TokenEnvConfig | None = None, render_mode: str | None = None, **fields: Any
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.core = TokenCore(_make_config(config, fields))
        self.render_mode = render_mode
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self._state: TokenState | None = None
        self._obs: dict[str, np.ndarray] = {}
        self._running = False

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._state = self.core.reset(1, [self.np_random])
        self._running = True
        self._obs = self._download_observation()
        return self._observation(), {"prompt": self.core.prompts[int(self._state.prompt_index[0])]}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if not self._running:
            raise RuntimeError("call reset() before step(): the episode has ended or not started")
        action_tensor, action_host = _token_ids(action, (), self.core)
        self._state, reward, _, result = self.core.step(self._state, action_tensor, action_host=action_host)
        terminated, truncated = bool(result["host_terminated"][0]), bool(result["host_truncated"][0])
        ended = terminated or truncated
        per_step = "ref_logprob" in result
        # At most one download a step: the reward, log π_pt and, at the end, the score and the
        # episode's log-probs, together. Deferred scoring before the end has nothing to download.
        parts = [reward[:1], result["ref_logprob"][:1]] if per_step else [reward[:1]] if ended else []
        if ended:
            parts += [result["score"][:1], result["ref_logprobs"][0]]
        numbers = iter(torch.cat(parts).tolist() if parts else [])
        reward_value = next(numbers, 0.0)
        info: dict[str, Any] = {"ref_logprob": next(numbers)} if per_step else {}
        if ended:
            self._running = False
            info |= {
                "prompt": result["prompts"][0],
                "completion": result["completions"][0],
                "score": next(numbers),
                "prompt_length": int(self._state.prompt_length[0]),
                "response_length": int(self._state.response_length[0]),
                "ref_logprobs": np.array(list(numbers), dtype=np.float32),
            }
        # The window shifts in the new token: the host builds it from the action it has, no download.
        self._obs = {
            "input_ids": np.append(self._obs["input_ids"][1:], result["host_action"]),
            "attention_mask": np.append(self._obs["attention_mask"][1:], np.int8(1)),
        }
        return self._observation(), reward_value, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._state is None:
            return None
        prompts, completions = self.core.texts(self._state, np.zeros(1, dtype=np.int64))
        return prompts[0] + completions[0]

    def state_dict(self) -> dict[str, Any]:
        """The episode in progress (KV cache included) and the random state: loading it into a
        like env continues this one exactly."""
        if self._state is None:
            raise RuntimeError("call reset() before state_dict(): no episode is in progress")
        return _face_state(self, self._state) | {"running": self._running}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` of an env with the same model and prompts, on the same
        kind of device; raises ``ValueError`` otherwise."""
        self._state = _load_face_state(self, state, 1)
        self._running = state["running"]
        self._obs = self._download_observation()

    def _observation(self) -> dict[str, np.ndarray]:
        """A copy of the current observation: what the caller does with it cannot change the next one."""
        return {key: value.copy() for key, value in self._obs.items()}

    def _download_observation(self) -> dict[str, np.ndarray]:
        return {key: value[0].cpu().numpy() for key, value in self.core.observe(self._state).items()}


def _token_ids(
    actions: Any, shape: tuple[int, ...], core: TokenCore
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Token ids of any integer dtype (numpy, torch or Python) of ``shape``: a LongTensor [B] on the
    core's device, and int64 [B] on the host when they came from there (``None`` for a tensor).

    Bools, floats and complex numbers are refused (``ValueError`` naming the action), as are ids outside
    the vocabulary given on the host; the core checks those given as tensors.
    """
    name = "action" if shape == () else "actions"
    if isinstance(actions, torch.Tensor):
        if actions.dtype == torch.bool or actions.is_floating_point() or actions.is_complex():
            raise ValueError(f"{name} must be integer token ids, got a tensor of {actions.dtype}")
        if tuple(actions.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(actions.shape)}")
        # int64 before any comparison: an int8 id compared with the vocabulary size would overflow.
        return actions.to(core.device, torch.long).reshape(-1), None
    try:
        array = np.asarray(actions)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be integer token ids, got {actions!r}") from error
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer token ids, got {actions!r} (dtype {array.dtype})")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    core.check_actions(array)  # in the given dtype: a uint64 id above 2**63 must not wrap around
    host = array.astype(np.int64).reshape(-1)
    return torch.as_tensor(host, device=core.device), host


def _face_state(face: TokenEnv | TokenVectorEnv, state: TokenState) -> dict[str, Any]:
    return {
        "core": type(face.core).__name__,
        "num_envs": getattr(face, "num_envs", 1),
        "device_type": face.core.device.type,
        "context_len": face.core.context_len,
        "num_prompts": len(face.core.prompts),
        "state": state.state_dict(),
        "np_random": numpy_rng_state(face._np_random),
    }


def _load_face_state(face: TokenEnv | TokenVectorEnv, state: dict[str, Any], num_envs: int) -> TokenState:
    check_face_state(face, state, face.core, num_envs)
    for key, value in (("context_len", face.core.context_len), ("num_prompts", len(face.core.prompts))):
        if state[key] != value:
            raise ValueError(f"the state was saved with {key}={state[key]}, this env has {value}")
    face._np_random = numpy_rng_from_state(state["np_random"])
    return TokenState.from_state(state["state"], face.core.device)
