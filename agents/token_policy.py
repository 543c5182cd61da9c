"""The TokenEnv as agents see it, and the policy that acts on it: the language model itself.

:class:`PackedTokenObservations` adapts a :class:`~rlhf_envs.envs.token.TokenVectorEnv` to the
agents' tensor interface: each ``Dict(input_ids, attention_mask)`` observation becomes one packed
LongTensor (see :func:`pack_observation`), so that rollout and replay buffers store it like any other.

:class:`TokenActorCritic` speaks the interface of :class:`agents.policies.ActorCriticPolicy`, so
:class:`agents.PPO` trains it like any other policy. Two things differ inside:

* ``act`` keeps its own KV cache, aligned with the env's observation window and written in place
  (:class:`~rlhf_envs.lm.cache.WindowLayer`): each step costs one decoding step of one token per
  episode, and episodes the env restarted are re-prefilled. Which ones restarted it reads from the
  env's host-side flags (:meth:`TokenActorCritic.follow`), so sampling adds no host sync to a step.
* ``evaluate`` receives whole env columns ([T, m] steps with their ``dones``, from a
  :class:`~agents.buffers.ColumnRolloutBuffer`): all steps of one episode share one forward pass
  over its last observation plus its last token, instead of one pass over the whole context per step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from safetensors.torch import load_file, save_file
from torch import nn

# transformers and the TokenEnv load only when a language model is used: `import agents` stays light
# for the control envs.
if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from transformers.cache_utils import DynamicCache

VALUE_HEAD_FILE = "value_head.safetensors"
#: Where :meth:`TokenActorCritic.save_pretrained` puts a LoRA policy's adapters, beside the merged model.
ADAPTER_DIR = "adapter"
TOKEN_ENV_ENTRY_POINT = "rlhf_envs.envs.token:TokenEnv"

__all__ = [
    "PackedTokenObservations",
    "column_segments",
    "packed_model_inputs",
    "per_length_bucket",
    "TokenActorCritic",
    "is_token_env",
    "pack_observation",
    "token_vector_env",
]


def is_token_env(env: Any) -> bool:
    """True for a TokenEnv id, a (wrapped) :class:`TokenEnv` or :class:`TokenVectorEnv`."""
    if isinstance(env, str):  # without loading the TokenEnv's module (and transformers)
        return gym.spec(env).entry_point == TOKEN_ENV_ENTRY_POINT
    from rlhf_envs.envs.token import TokenEnv, TokenVectorEnv

    return isinstance(getattr(env, "unwrapped", env), TokenEnv | TokenVectorEnv)


class PackedTokenObservations(VectorWrapper):
    """A tensor :class:`TokenVectorEnv` whose observations (``info["final_obs"]`` too) are packed.

    The observation space becomes ``MultiDiscrete`` over token ids with −1 for padding, one entry
    per window column. :attr:`restarted_rows` says, on the host, which episodes of the latest
    observation :attr:`observation` started anew (None after a reset: all of them), and
    :attr:`window_lengths` how many tokens each of its windows holds (prompt and tokens so far,
    right-aligned; the rest is padding).
    """

    def __init__(
        self, env: VectorEnv, seed_offset: int = 0, autocast_dtype: torch.dtype | None = None
    ) -> None:
        # Restarted episodes are read from the step that ended them (info["_final_obs"]).
        if env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError(
                "the token agents step a TokenVectorEnv with autoreset_mode=AutoresetMode.SAME_STEP, "
                f"got {env.metadata.get('autoreset_mode')}"
            )
        super().__init__(env)
        #: Added to reset seeds: episode i of this env is seeded like episode seed_offset + i of a
        #: bigger env (this process's share of the rows of a data-parallel run).
        self.seed_offset = seed_offset
        #: Run the env's reference forwards under autocast to this dtype (None: as the model is).
        self.autocast_dtype = autocast_dtype
        ids = env.single_observation_space["input_ids"]
        width, vocab_size = ids.shape[0], int(ids.high.max()) + 1
        self.single_observation_space = gym.spaces.MultiDiscrete(
            np.full(width, vocab_size + 1), start=np.full(width, -1)
        )
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self.device = env.device
        self.observation: torch.Tensor | None = None
        self.restarted_rows: np.ndarray | None = None
        self.window_lengths: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        seed = None if seed is None else seed + self.seed_offset
        with autocast(self.device, self.autocast_dtype):
            obs, info = self.env.reset(seed=seed, options=options)
        self.observation, self.restarted_rows = pack_observation(obs), None
        self.window_lengths = self.env.unwrapped.window_lengths()
        return self.observation, info

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        with autocast(self.device, self.autocast_dtype):
            obs, reward, terminated, truncated, info = self.env.step(actions)
        restarted = np.empty(0, dtype=np.int64)
        if "final_obs" in info:
            info = dict(info, final_obs=pack_observation(info["final_obs"]))
            restarted = np.flatnonzero(info["_final_obs"])  # a host array: same-step autoreset
        self.observation, self.restarted_rows = pack_observation(obs), restarted
        self.window_lengths = self.env.unwrapped.window_lengths()
        return self.observation, reward, terminated, truncated, info

    def running_info(self) -> dict[str, Any]:
        """The env's :meth:`~rlhf_envs.envs.token.TokenVectorEnv.running_info`: log π_pt of the tokens
        of the episodes in progress (deferred scoring: one batched reference forward, now)."""
        with autocast(self.device, self.autocast_dtype):
            return self.env.unwrapped.running_info()


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s kind; no autocast for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def token_vector_env(
    env: Any, num_envs: int, device: torch.device, **env_kwargs: Any
) -> PackedTokenObservations:
    """The TokenEnv ``env`` as agents step it: tensors on ``device``, packed observations.

    An id is made with ``num_envs`` episodes and ``env_kwargs``; a given :class:`TokenVectorEnv` keeps
    its own episode count and settings; a single :class:`TokenEnv` lends its reference model,
    tokenizer, prompts and reward model to ``num_envs`` batched episodes. The episodes restart in the
    step that ends them (``SAME_STEP`` autoreset): the agents' rollouts have no reset steps.
    """
    from rlhf_envs.envs.token import TokenEnv, TokenVectorEnv

    same_step = AutoresetMode.SAME_STEP
    if isinstance(env, str):
        vector_env = gym.make_vec(
            env,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            device=device,
            as_tensors=True,
            autoreset_mode=same_step,
            **env_kwargs,
        )
        return PackedTokenObservations(vector_env)
    env = getattr(env, "unwrapped", env)
    if not isinstance(env, TokenEnv | TokenVectorEnv):
        raise TypeError(f"expected a TokenEnv id, a TokenEnv or a TokenVectorEnv, got {type(env).__name__}")
    # A new vector face over the same model and prompts: the caller's env is left as it is.
    count = num_envs if isinstance(env, TokenEnv) else None
    return PackedTokenObservations(
        env.to_vector(count, device=device, as_tensors=True, autoreset_mode=same_step)
    )


def pack_observation(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A TokenEnv observation as one LongTensor [..., L]: the token ids, −1 where the mask is 0.

    One tensor fits PPO's rollout buffer; the mask is recovered as ``packed >= 0``.
    """
    return obs["input_ids"].long().masked_fill(obs["attention_mask"] == 0, -1)


def packed_model_inputs(packed: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ids, mask and position ids (0 at the first real token) of left-padded packed windows [B, L]."""
    from rlhf_envs.lm.tokens import position_ids  # with transformers, once an LM policy exists

    mask = (packed >= 0).long()
    return {"input_ids": packed.clamp(min=0), "attention_mask": mask, "position_ids": position_ids(mask)}


def column_segments(
    obs: torch.Tensor, action: torch.Tensor, dones: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whole env columns as one packed sequence per episode segment: ``(sequences, segment, position)``.

    The steps of a column ([T, m] packed windows ``obs`` [T, m, L], tokens ``action`` and ``dones``)
    split into segments, each ending at a done or at step T − 1. A segment's last window with its
    last token appended (``sequences`` [S, L], packed, in (step, env) order of the segments' ends)
    holds every earlier window of the segment as a prefix: step t's window ends at
    ``sequences[segment[t], position[t]]`` (``segment`` and ``position`` [T, m]), so one forward pass
    over the sequences reads every step, and position + 1 holds the step's token.
    """
    num_steps, num_envs, width = obs.shape
    ends = dones.bool().clone()
    ends[-1] = True
    end_step, end_env = ends.nonzero(as_tuple=True)  # segments in (step, env) order
    # The window's oldest column is padding in every observation the TokenEnv makes (its window
    # holds the longest prompt and N tokens, the observation at most N − 1 of them).
    sequences = torch.cat([obs[end_step, end_env, 1:], action[end_step, end_env, None]], dim=1)
    # Segment of each step: the next end at or after it in its column.
    segment = torch.full((num_steps, num_envs), -1, dtype=torch.long, device=obs.device)
    segment[end_step, end_env] = torch.arange(len(end_step), device=obs.device)
    for step in range(num_steps - 2, -1, -1):
        segment[step] = torch.where(ends[step], segment[step], segment[step + 1])
    steps = torch.arange(num_steps, device=obs.device)[:, None]
    # Step t of a segment ending at e reads position width − 2 − (e − t) of its sequence.
    position = width - 2 - (end_step[segment] - steps)
    return sequences, segment, position


def per_length_bucket(
    forward: Callable[[torch.Tensor], torch.Tensor], sequences: torch.Tensor
) -> torch.Tensor:
    """``forward`` (packed [n, w] -> [n, w, ...]) of packed left-padded ``sequences`` [S, W]: on the CPU
    one call per :func:`~rlhf_envs.envs.token.length_buckets` group over its longest sequence (the
    lengths come to the host), its output zero over the columns left of it; elsewhere one call over
    the whole windows (no host sync)."""
    from rlhf_envs.envs.token import length_buckets  # with transformers, once an LM is used

    if sequences.device.type != "cpu":
        return forward(sequences)
    lengths = (sequences >= 0).sum(-1).numpy()
    groups = length_buckets(lengths, sequences.device)
    parts = []
    for rows in groups:
        width = int(lengths[rows].max())
        group = sequences if len(groups) == 1 else sequences[torch.as_tensor(rows, device=sequences.device)]
        output = forward(group[:, -width:])
        # Left-pad the sequence dimension (1) back to W, whatever the trailing dimensions.
        parts.append(nn.functional.pad(output, (0, 0) * (output.dim() - 2) + (sequences.shape[1] - width, 0)))
    if len(groups) == 1:
        return parts[0]
    order = torch.as_tensor(np.concatenate(groups), device=sequences.device)
    return torch.cat(parts)[order.argsort()]


class TokenActorCritic(nn.Module):
    """π_θ, a trainable copy of a causal LM, and V(s) = w·h(s) + b on its last hidden state h(s).

    Tokens are sampled at temperature 1 from the full vocabulary, so that log π is the exact
    log-probability the KL penalty and the PPO ratio need. Dropout is off (the model stays in eval
    mode): the ratio π_θ / π_old must compare one deterministic function with itself. The trained
    weights are float32 whatever the reference's dtype (a bf16 hub model's included): Adam's steps
    of 1e-5 would round away in half precision.

    Two ways to hold the weights:

    * full copy (``lora=None``): π_θ is a float32 copy of the reference, every weight trained; memory
      holds the reference and the copy (and Adam's two moments of every weight).
    * LoRA (``lora=`` a ``peft.LoraConfig``): π_θ is the reference's own weights plus low-rank
      adapters (Hu et al. 2021), the only weights trained. The policy's module tree shares every
      weight tensor of the reference's (no copy); only the policy's tree carries the adapters, so
      the reference the env runs is exactly the policy with its adapters disabled. The value head
      reads the shared backbone. Memory holds one copy of the LM.

    Args:
        model: the reference LM (the env's ``reference_model``); it is left untouched.
        tokenizer: saved beside the model by :meth:`save_pretrained`.
        copy_model: copy ``model`` (True) or train it in place (False, for an already private copy).
        lora: train LoRA adapters on ``model``'s weights instead of a copy (``copy_model`` is unused).
        autocast_dtype: run the forward passes under ``torch.autocast`` to this dtype (bfloat16 on
            a GPU: the weights, their gradients and Adam stay float32; no loss scaling is needed).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        copy_model: bool = True,
        lora: LoraConfig | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        from transformers import PreTrainedModel

        super().__init__()
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
        self.lora = lora
        if lora is None:
            self.model = (copy.deepcopy(model) if copy_model else model).float()
            self.model.requires_grad_(True)
        else:
            from peft import get_peft_model
            from transformers.pytorch_utils import Conv1D

            # GPT-2's Conv1D stores its weight transposed; peft needs to be told (else it warns).
            if any(isinstance(module, Conv1D) for module in model.modules()):
                lora = dataclasses.replace(lora, fan_in_fan_out=True)
            # A new module tree over the same tensors (deepcopy finds each of them in its memo):
            # peft puts the adapters into this tree, the reference's stays as it is.
            shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
            self.model = get_peft_model(copy.deepcopy(model, memo=shared), lora)
            self.lora = lora
        self.model.eval()
        self.autocast_dtype = autocast_dtype
        self.tokenizer = tokenizer
        hidden_size = self.model.config.hidden_size
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden_size))
        nn.init.zeros_(self.value_head.bias)
        # Sampling state, aligned with the env's window: KV cache, last window and action, positions.
        self._cache: DynamicCache | None = None
        self._last_obs: torch.Tensor | None = None
        self._last_action: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        # The window's last columns that some episode has tokens in: attention skips the others.
        self._live_columns = 0
        self._env: PackedTokenObservations | None = None
        self._shard: tuple[int, int, torch.Generator] | None = None

    def train(self, mode: bool = True) -> TokenActorCritic:
        super().train(mode)
        self.model.eval()  # dropout stays off, see the class docstring
        return self

    def follow(self, env: PackedTokenObservations) -> None:
        """Take which episodes restarted from ``env``'s host-side flags when acting on its latest
        observation, instead of comparing windows on the device (a host sync every step)."""
        self._env = env

    @property
    def language_model(self) -> PreTrainedModel:
        """π_θ as a causal LM (``generate``, logits); with LoRA the reference's tree with the adapters."""
        return self.model if self.lora is None else self.model.get_base_model()

    def sample_as_shard(self, rows: slice, total_rows: int, seed: int) -> None:
        """Sample as rows ``rows`` of a batch of ``total_rows`` episodes, from a generator of its own.

        Each step draws the uniform numbers of the whole batch and keeps its own rows, so that the
        processes of a data-parallel run, each stepping its share of the episodes, sample the tokens
        that one process stepping them all would: same seed, same run.
        """
        device = next(self.parameters()).device
        self._shard = (rows, total_rows, torch.Generator(device).manual_seed(seed))

    def _sample(self, logprobs: torch.Tensor) -> torch.Tensor:
        """One token per row of ``logprobs`` [B, V]: :meth:`sample_tokens` with n = 1."""
        return self.sample_tokens(logprobs, 1)[:, 0]

    def sample_tokens(self, logprobs: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` tokens [..., n] drawn independently from each distribution of ``logprobs`` [..., B, V]
        (B the env rows), by inverse transform sampling: the first token whose cumulative probability
        exceeds a uniform number. One uniform number a token instead of V exponential ones
        (``torch.multinomial``'s way, ten times slower on a CPU). As a data-parallel shard the numbers
        are drawn for all rows and this shard's kept (see :meth:`sample_as_shard`)."""
        batch_shape = logprobs.shape[:-1]
        if self._shard is None:
            uniform = torch.rand(*batch_shape, n, device=logprobs.device)
        else:
            rows, total_rows, generator = self._shard
            shape = (*batch_shape[:-1], total_rows, n)
            uniform = torch.rand(shape, device=logprobs.device, generator=generator)[..., rows, :]
        cumulative = logprobs.exp().cumsum(-1)
        # Scaled to the last cumulative sum, which rounding leaves a little off 1.
        token = torch.searchsorted(cumulative, uniform * cumulative[..., -1:], right=True)
        return token.clamp(max=logprobs.shape[-1] - 1)

    # -- forward pieces -------------------------------------------------------------------------------
    def _backbone(self, **inputs: Any) -> Any:
        with autocast(self.value_head.weight.device, self.autocast_dtype):
            return self.language_model.base_model(**inputs)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        with autocast(self.value_head.weight.device, self.autocast_dtype):
            return self.language_model.get_output_embeddings()(hidden).float()

    def _last_hidden(self, packed: torch.Tensor) -> torch.Tensor:
        return self._backbone(**packed_model_inputs(packed)).last_hidden_state[:, -1]

    # -- the PPO policy interface ---------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample the next token of every episode: ``(action, log π(action | obs), V(obs))``."""
        hidden = self._advance(obs)
        logprobs = self._logits(hidden).log_softmax(-1)
        action = self._sample(logprobs)
        self._last_obs, self._last_action = obs, action
        logprob = logprobs.gather(-1, action[:, None])[:, 0]
        return action, logprob, self.value_head(hidden.float()).squeeze(-1)

    def _advance(self, obs: torch.Tensor, prefill_restarted: bool = True) -> torch.Tensor:
        """Bring the KV cache to ``obs`` and return the newest token's hidden state [B, H].

        Continuing episodes decode last step's action (one token each); episodes whose window is not
        last window + last action (the env restarted them) are prefilled from their window (not at
        all without ``prefill_restarted``: their rows of the cache and of the hidden state are then
        stale). Following the env, prefills read only the columns the windows' tokens fill (their
        lengths come from the env's host-side counts).
        """
        followed = self._env is not None and obs is self._env.observation
        lengths = self._env.window_lengths if followed else None
        restarted = self._env.restarted_rows if followed else None
        if followed and (restarted is None or len(restarted) == len(obs)):  # every episode is new
            return self._prefill(obs, lengths)
        if self._cache is None or self._last_obs is None or self._last_obs.shape != obs.shape:
            return self._prefill(obs, lengths)  # a cold cache (after an update): every window anew
        if followed:
            rows = restarted if len(restarted) else None
        else:  # any other observation: compare it with the window the cache holds (a host sync)
            expected = torch.cat([self._last_obs[:, 1:], self._last_action[:, None]], dim=1)
            rows = (obs != expected).any(-1).nonzero()[:, 0].numpy(force=True)
            rows = rows if len(rows) else None
        # Every episode has one token more, in one more column at most (the window's width at most).
        self._live_columns = min(self._live_columns + 1, obs.shape[1])
        for layer in self._cache.layers:  # the window slides by one: its oldest column is always padding
            layer.slide(self._live_columns - 1)
        from rlhf_envs.lm.cache import CACHE  # with transformers, once an LM policy exists
        from rlhf_envs.lm.tokens import decoding_mask

        output = self._backbone(
            input_ids=self._last_action[:, None],
            # A prepared mask: given a 2-D one, transformers would check it for padding on the host.
            attention_mask=decoding_mask(self.language_model, (obs[:, -self._live_columns :] >= 0).long()),
            position_ids=self._positions[:, None],
            use_cache=True,
            **{CACHE: self._cache},
        )
        self._positions = self._positions + 1
        hidden = output.last_hidden_state[:, -1]
        if rows is not None and prefill_restarted:
            hidden = self._prefill_rows(obs, rows, lengths, hidden)
        return hidden

    def _prefill(self, obs: torch.Tensor, lengths: np.ndarray | None = None) -> torch.Tensor:
        """A new cache of the windows ``obs``; see :meth:`_prefill_rows`."""
        self._cache = None
        return self._prefill_rows(obs, np.arange(len(obs)), lengths)

    def _prefill_rows(
        self,
        obs: torch.Tensor,
        rows: np.ndarray,
        lengths: np.ndarray | None,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Write the windows ``obs[rows]`` into the cache (a new one for all of ``obs``'s rows when there
        is none) and their newest tokens' hidden states into ``hidden`` [B, H] (a new tensor if None),
        which is returned.

        ``lengths``: the tokens in each window of ``obs`` (ints on the host; None: counted on the
        device and copied to the host, a sync, for windows the followed env did not describe).
        One forward pass per :func:`~rlhf_envs.envs.token.length_buckets` group of the rows, over
        its longest window: the columns left of it are padding, which the attention mask hides.
        The rows go to the device in one upload.
        """
        # with transformers, once an LM policy exists
        from rlhf_envs.envs.token import length_buckets
        from rlhf_envs.lm.cache import WindowLayer, returned_cache

        if lengths is None:
            lengths = (obs >= 0).sum(-1).numpy(force=True)
        row_lengths = lengths[rows]
        groups = length_buckets(row_lengths, obs.device)
        index = torch.as_tensor(rows[np.concatenate(groups)], device=obs.device)
        states, start = [], 0
        for group in groups:
            group_index, start = index[start : start + len(group)], start + len(group)
            width = int(row_lengths[group].max())
            inputs = packed_model_inputs(obs[group_index, -width:])
            output = self._backbone(**inputs, use_cache=True)
            fresh = returned_cache(output)
            prefilled = fresh.layers
            if self._cache is None:  # a new cache: empty windows of every row, written below
                self._cache = fresh
                self._cache.layers = [
                    WindowLayer(empty, empty, obs.shape[1])
                    for layer in prefilled
                    for empty in [
                        layer.keys.new_zeros((len(obs), *layer.keys.shape[1:2], 0, layer.keys.shape[3]))
                    ]
                ]
                self._positions = torch.zeros(len(obs), dtype=torch.long, device=obs.device)
                self._live_columns = 0
            for layer, new in zip(self._cache.layers, prefilled, strict=True):
                layer.write(group_index, new.keys, new.values)
            self._positions = self._positions.index_copy(0, group_index, inputs["position_ids"][:, -1] + 1)
            self._live_columns = max(self._live_columns, width)
            states.append(output.last_hidden_state[:, -1])
        states = torch.cat(states)
        if hidden is None:
            hidden = states.new_empty((len(obs), states.shape[1]))
        return hidden.index_copy(0, index, states)

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs) [B] for packed windows [B, L]: one full forward pass, or, for the followed env's
        latest observation while the sampling cache holds the one before (PPO's value after a
        rollout's last step), one decoding step on that cache. The cache is dropped then: it holds
        ``obs`` already, which :meth:`act` does not expect (and an update would drop it anyway)."""
        if self._cache is not None and self._env is not None and obs is self._env.observation:
            hidden = self._advance(obs)
            self._cache = None
        else:
            hidden = self._last_hidden(obs)
        return self.value_head(hidden.float()).squeeze(-1)

    @torch.no_grad()
    def bootstrap_value(self, obs: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """V(obs) [B] where the episode goes on, 0 where it ended at the step that made ``obs``
        (``done``, bool [B]): what GAE bootstraps from after a rollout's last step. For the followed
        env's latest observation on a warm sampling cache, the episodes that ended are not prefilled
        anew (the rollout's last step ended them all when the episodes are as long as the rollout:
        then nothing runs); the cache is dropped, as :meth:`value` drops it."""
        if self._cache is None or self._env is None or obs is not self._env.observation:
            return self.value(obs).masked_fill(done, 0.0)
        restarted = self._env.restarted_rows
        if restarted is not None and len(restarted) == len(obs):
            self._cache = None
            return torch.zeros(len(obs), device=obs.device)
        hidden = self._advance(obs, prefill_restarted=False)
        self._cache = None
        return self.value_head(hidden.float()).squeeze(-1).masked_fill(done, 0.0)

    @torch.no_grad()
    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely next token of each packed window [B, L]."""
        return self._logits(self._last_hidden(obs)).argmax(-1)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        return action

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, dones: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`evaluate`: the pass that gradients flow through (what a DDP wrapper calls)."""
        return self.evaluate(obs, action, dones)

    def evaluate(
        self, obs: torch.Tensor, action: torch.Tensor, dones: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log π(action | obs), entropy, V(obs))``, each [T, m], for whole env columns.

        Args:
            obs: packed windows [T, m, L] of T consecutive steps of m envs.
            action: the tokens taken, [T, m]; or [T, m, n], the token taken first and n − 1 others
                whose log π is wanted too (log π is then [T, m, n]).
            dones: [T, m], true where an episode ended at that step (the next step starts another).

        One forward pass over each segment of a column (:func:`column_segments`) scores all its steps.
        """
        hidden = self._step_hidden(obs, action, dones)
        # One log-softmax serves both (a Categorical would normalize the logits again for the entropy).
        logprobs = self._logits(hidden).log_softmax(-1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        values = self.value_head(hidden.float()).squeeze(-1)
        if action.dim() == dones.dim():
            return logprobs.gather(-1, action[..., None])[..., 0], entropy, values
        return logprobs.gather(-1, action), entropy, values

    @torch.no_grad()
    def next_token_logprobs(
        self, obs: torch.Tensor, action: torch.Tensor, dones: torch.Tensor
    ) -> torch.Tensor:
        """log π(· | obs) [T, m, V] over the vocabulary at every step of whole env columns (arguments as
        :meth:`evaluate`'s, ``action`` [T, m])."""
        return self._logits(self._step_hidden(obs, action, dones)).log_softmax(-1)

    def _step_hidden(self, obs: torch.Tensor, action: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """The last hidden state [T, m, H] of every step's window, one pass per column segment."""
        # Parameters are about to change: keys and values cached for sampling would go stale.
        self._cache = None
        taken = action if action.dim() == dones.dim() else action[..., 0]
        sequences, segment, position = column_segments(obs, taken, dones)
        return self._segment_hidden(sequences)[segment, position]

    def _segment_hidden(self, sequences: torch.Tensor) -> torch.Tensor:
        """The last hidden states [S, W, H] of packed left-padded ``sequences`` [S, W] (see
        :func:`per_length_bucket`), padding columns zero."""
        return per_length_bucket(
            lambda packed: self._backbone(**packed_model_inputs(packed)).last_hidden_state, sequences
        )

    # -- saving ---------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """A Hugging Face model folder (``from_pretrained`` loads it) with the tokenizer and value head.

        A LoRA policy writes the adapters merged into the weights there, and the adapters alone in
        ``path / "adapter"`` (``peft.PeftModel.from_pretrained(reference, path / "adapter")``).
        """
        path = Path(path)
        if self.lora is None:
            self.model.save_pretrained(path)
        else:
            self.model.save_pretrained(path / ADAPTER_DIR)
            # Merge in a copy: merging in place would change the reference's shared weights.
            copy.deepcopy(self.model).merge_and_unload().save_pretrained(path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        save_file(
            {name: tensor.detach().cpu() for name, tensor in self.value_head.state_dict().items()},
            path / VALUE_HEAD_FILE,
        )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None
    ) -> TokenActorCritic:
        """Load a folder written by :meth:`save_pretrained` (a value head is fresh if none was saved)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(path))
        policy = cls(model, tokenizer, copy_model=False)
        head_file = Path(path) / VALUE_HEAD_FILE
        if head_file.is_file():
            policy.value_head.load_state_dict(load_file(str(head_file)))
        return policy
