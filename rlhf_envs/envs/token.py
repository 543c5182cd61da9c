"""LLM decoding as a Gymnasium environment: the state is prompt + continuation, the action is the next token.

One batched core (:class:`TokenCore`) runs B decoding episodes with one forward pass of the frozen
reference model π_pt per step, extending a KV cache by one token; :class:`TokenVectorEnv` is its
vector face (B episodes, same-step autoreset, numpy or device tensors) and :class:`TokenEnv` its
single face (B = 1). The reward of the last step is a text reward model's score of
(prompt, completion); every step also reports log π_pt(action | state).
"""

from __future__ import annotations

import inspect
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

from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, load_prompts
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.lm.reward_model import RewardModelSpec, check_scores, resolve_reward_model
from rlhf_envs.lm.tokens import position_ids, token_logprobs

__all__ = ["TokenCore", "TokenEnv", "TokenVectorEnv"]


class _WindowLayer(DynamicLayer):
    """A KV-cache layer over a sliding window of ``width`` columns in a preallocated buffer.

    HF's ``DynamicLayer`` concatenates (a copy of the whole cache) on every step; this one writes
    the new column in place and hands attention a view. The buffer holds two windows, so the window
    slides with a copy of one window every ``width`` steps. The view covers only the window's last
    columns that some episode still attends to, so attention skips the columns dead in every row.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, width: int) -> None:
        super().__init__()
        shape = (*keys.shape[:2], 2 * width, keys.shape[3])
        self.key_buffer = keys.new_zeros(shape)
        self.value_buffer = values.new_zeros(shape)
        self.width = width
        self.start = 0
        self.is_initialized = True
        self.write(slice(None), keys, values)

    def write(self, rows: slice | torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put a prefill's keys and values (right-aligned) into the window of ``rows``."""
        columns = slice(self.start + self.width - keys.shape[2], self.start + self.width)
        self.key_buffer[rows, :, columns] = keys
        self.value_buffer[rows, :, columns] = values
        self._view(self.start + self.width, self.width)

    def slide(self, live: int) -> None:
        """Drop the oldest column, leaving ``width - 1`` columns for the next token, of which the
        last ``live`` are viewed."""
        self.start += 1
        if self.start + self.width > self.key_buffer.shape[2]:
            kept = slice(self.start, self.start + self.width - 1)
            # start > width: the kept columns and their destination do not overlap.
            self.key_buffer[:, :, : self.width - 1] = self.key_buffer[:, :, kept]
            self.value_buffer[:, :, : self.width - 1] = self.value_buffer[:, :, kept]
            self.start = 0
        self._view(self.start + self.width - 1, live)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[2]
        self.key_buffer[:, :, self.end : self.end + new] = key_states
        self.value_buffer[:, :, self.end : self.end + new] = value_states
        self._view(self.end + new, self.keys.shape[2] + new)
        return self.keys, self.values

    def _view(self, end: int, length: int) -> None:
        self.end = end
        self.keys = self.key_buffer[:, :, end - length : end]
        self.values = self.value_buffer[:, :, end - length : end]


class TokenCore:
    """B decoding episodes of the reference model on one device; the dynamics behind both faces.

    State per episode: a left-padded window of the last ``context_len`` tokens (the observation),
    the reference model's KV cache for exactly that window, and its logits for the next token.
    A step appends one token to every episode: the window and every cache layer drop their oldest
    column (dead in every episode: prompt ≤ ``max_prompt_tokens`` and at most ``max_new_tokens``
    tokens fit) and the new token's keys and values are appended by one forward pass. Starting an
    episode writes its prefilled prompt into the last columns of its rows.
    """

    def __init__(
        self,
        num_envs: int,
        model: str | Path | PreTrainedModel = "embedded",
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        prompts: Any = None,
        reward_model: RewardModelSpec = None,
        max_new_tokens: int = 48,
        stop_at_eos: bool = True,
        kl_coef: float = 0.0,
        device: str | torch.device = "auto",
        max_prompt_tokens: int | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.model, self.tokenizer = load_causal_lm(model, tokenizer, device)
        self.device = self.model.device
        self.reward_model = resolve_reward_model(reward_model, self.device, self.tokenizer)
        self.prompts = load_prompts(DEFAULT_PROMPTS_FILE if prompts is None else prompts)
        self.num_envs = num_envs
        self.max_new_tokens = max_new_tokens
        self.stop_at_eos = stop_at_eos
        self.kl_coef = float(kl_coef)
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        # A prefill needs only the last position's logits; most HF models can skip the others' LM head.
        supports_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if supports_keep else {}
        self._encode_prompts(max_prompt_tokens)

        self.observation_space = gym.spaces.Dict(
            input_ids=gym.spaces.Box(0, self.vocab_size - 1, (self.context_len,), np.int64),
            attention_mask=gym.spaces.Box(0, 1, (self.context_len,), np.int8),
        )
        self.action_space = gym.spaces.Discrete(self.vocab_size)

        shape = (num_envs, self.context_len)
        self.input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long, device=self.device)
        self.attention_mask = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.next_logits = torch.zeros(num_envs, self.vocab_size, device=self.device)
        self.response_length = np.zeros(num_envs, dtype=np.int64)
        self._row_prompt_length = np.zeros(num_envs, dtype=np.int64)
        self.prompt_index = np.zeros(num_envs, dtype=np.int64)
        self.cache: DynamicCache | None = None

    def _encode_prompts(self, max_prompt_tokens: int | None) -> None:
        encoded = self.tokenizer(self.prompts)["input_ids"]
        lengths = np.array([len(ids) for ids in encoded])
        if (lengths == 0).any():
            raise ValueError(f"prompt {int(np.argmin(lengths))} is empty: a prompt needs at least one token")
        longest = int(lengths.max())
        self.max_prompt_tokens = longest if max_prompt_tokens is None else max_prompt_tokens
        if longest > self.max_prompt_tokens:
            index = int(np.argmax(lengths))
            raise ValueError(
                f"prompt {index} has {longest} tokens, more than max_prompt_tokens={self.max_prompt_tokens}"
            )
        # The observation holds the longest prompt and the whole continuation.
        self.context_len = self.max_prompt_tokens + self.max_new_tokens
        config = self.model.config
        model_context = getattr(config, "n_positions", None) or getattr(
            config, "max_position_embeddings", None
        )
        if model_context is not None and self.context_len > model_context:
            raise ValueError(
                f"prompt {int(np.argmax(lengths))} has {longest} tokens: with max_prompt_tokens="
                f"{self.max_prompt_tokens} and max_new_tokens={self.max_new_tokens} the context is "
                f"{self.context_len} tokens, longer than the model's {model_context}"
            )
        width = self.max_prompt_tokens
        ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        for row, prompt_ids in enumerate(encoded):
            ids[row, width - len(prompt_ids) :] = torch.tensor(prompt_ids)
        self.prompt_ids = ids.to(self.device)
        self.prompt_lengths = torch.as_tensor(lengths, device=self.device)
        self._prompt_lengths_host = lengths

    # -- dynamics -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, rows: np.ndarray, prompt_index: np.ndarray) -> None:
        """Start episodes in ``rows`` with the prompts ``prompt_index``: one prefill forward pass."""
        rows_t = torch.as_tensor(rows, device=self.device)
        index_t = torch.as_tensor(prompt_index, device=self.device)
        # Prefill only the columns that one of these prompts reaches.
        width = int(self._prompt_lengths_host[prompt_index].max())
        ids = self.prompt_ids[index_t, -width:]
        starts = ids.shape[1] - self.prompt_lengths[index_t, None]
        mask = (torch.arange(ids.shape[1], device=self.device) >= starts).long()
        positions = position_ids(mask)
        output = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **self._last_logits_only,
        )
        pad = self.context_len - ids.shape[1]
        window_ids = torch.nn.functional.pad(ids, (pad, 0), value=self.pad_token_id)
        window_mask = torch.nn.functional.pad(mask, (pad, 0))
        # Out-of-place index_copy: observations already handed out are never written to.
        self.input_ids = self.input_ids.index_copy(0, rows_t, window_ids)
        self.attention_mask = self.attention_mask.index_copy(0, rows_t, window_mask)
        self.positions[rows_t] = positions[:, -1] + 1
        self.next_logits[rows_t] = output.logits[:, -1].float()
        self.response_length[rows] = 0
        self.prompt_index[rows] = prompt_index
        self._row_prompt_length[rows] = self._prompt_lengths_host[prompt_index]
        self._write_cache(rows_t, output.cache, whole=len(rows) == self.num_envs)

    def _write_cache(self, rows: torch.Tensor, prefill: DynamicCache, whole: bool) -> None:
        for layer in prefill.layers:
            if type(layer) is not DynamicLayer:
                raise ValueError(
                    f"TokenEnv needs a plain DynamicCache; this model's cache has a {type(layer).__name__}"
                )
        if whole:
            # Every episode starts: the prefill's keys and values seed fresh window buffers.
            layers = [_WindowLayer(layer.keys, layer.values, self.context_len) for layer in prefill.layers]
            self.cache = DynamicCache()
            self.cache.layers = layers
            return
        for layer, fresh in zip(self.cache.layers, prefill.layers, strict=True):
            # Columns before the prompt keep stale values; the attention mask hides them.
            layer.write(rows, fresh.keys, fresh.values)

    @torch.inference_mode()
    def step(self, actions: torch.Tensor) -> dict[str, Any]:
        """Append ``actions`` (LongTensor [B] on the device) to every episode.

        Returns a dict with ``reward``, ``ref_logprob`` (float32 [B]), ``terminated``, ``truncated``
        (bool [B]) on the device, ``done_rows`` (numpy indices of the episodes that ended) and, for
        those, ``prompts``, ``completions`` (lists of str) and ``scores`` (float32 on the device).
        """
        invalid = (actions < 0) | (actions >= self.vocab_size)
        terminated = actions == self.eos_token_id if self.stop_at_eos else torch.zeros_like(invalid)
        # The only host sync of a step: which actions are invalid and which episodes met EOS.
        flags = torch.cat([invalid.any().view(1), terminated]).cpu().numpy()
        if flags[0]:
            bad = actions[invalid][0].item()
            raise ValueError(f"action {bad} is outside the vocabulary: Discrete({self.vocab_size})")
        terminated_host = flags[1:]
        self.response_length += 1
        truncated_host = (self.response_length >= self.max_new_tokens) & ~terminated_host
        done_rows = np.flatnonzero(terminated_host | truncated_host)

        logits = self.next_logits
        ref_logprob = token_logprobs(logits, actions)
        self.input_ids = torch.cat([self.input_ids[:, 1:], actions[:, None]], dim=1)
        self.attention_mask = torch.nn.functional.pad(self.attention_mask[:, 1:], (0, 1), value=1)
        if len(done_rows) < self.num_envs:  # a step where every episode ends needs no next-token logits
            # Attention reads only the last ``live`` columns: those left of them are padding in every row.
            live = int((self._row_prompt_length + self.response_length).max())
            for layer in self.cache.layers:
                layer.slide(live - 1)
            output = self.model(
                input_ids=actions[:, None],
                attention_mask=self.attention_mask[:, -live:],
                position_ids=self.positions[:, None],
                cache=self.cache,
                use_cache=True,
            )
            self.next_logits = output.logits[:, -1].float()
        self.positions += 1

        reward = self.kl_coef * ref_logprob if self.kl_coef else torch.zeros_like(ref_logprob)
        result: dict[str, Any] = {
            "ref_logprob": ref_logprob,
            "terminated": torch.as_tensor(terminated_host, device=self.device),
            "truncated": torch.as_tensor(truncated_host, device=self.device),
            "done_rows": done_rows,
        }
        if len(done_rows):
            prompts, completions = self.texts(done_rows)
            scores = check_scores(self.reward_model(prompts, completions), len(done_rows)).to(self.device)
            reward[torch.as_tensor(done_rows, device=self.device)] += scores
            result.update(prompts=prompts, completions=completions, scores=scores)
        result["reward"] = reward
        return result

    def texts(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """The prompts and the continuations so far (special tokens dropped) of episodes ``rows``."""
        lengths = self.response_length[rows]
        width = int(lengths.max()) if len(rows) else 0
        tail = (
            self.input_ids[torch.as_tensor(rows, device=self.device), self.context_len - width :]
            .cpu()
            .numpy()
        )
        responses = [row[width - length :] for row, length in zip(tail, lengths, strict=True)]
        completions = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return [self.prompts[i] for i in self.prompt_index[rows]], completions

    def observation(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask.to(torch.int8)}


class TokenVectorEnv(VectorEnv):
    """B decoding episodes stepped together, one batched forward pass of π_pt per step.

    ## Description
    The vector form of :class:`TokenEnv` (see its docstring for the MDP). With ``as_tensors=True``
    actions can be, and observations, rewards, flags and per-step infos are, torch tensors on the
    device, so a policy that samples on the GPU never copies to the host (only each step's EOS flags
    and, when an episode ends, its tokens for the reward model go there); otherwise they are numpy.

    ## Autoreset
    Gymnasium's ``SAME_STEP`` mode: a finished episode restarts in the same step. Then
    ``info["final_obs"]`` is a dict of [B, context_len] arrays (the last observation of every
    episode, valid where ``info["_final_obs"]``), and ``info["final_info"]`` holds ``prompt``,
    ``completion``, ``score``, ``prompt_length`` and ``response_length`` of the finished episodes
    (masks ``_prompt``...). The response's token ids are the last ``response_length`` tokens of
    ``final_obs["input_ids"]``, its prompt the ``prompt_length`` tokens before them: enough to
    recompute any model's log-probs of the whole sequence in one batch. ``info["ref_logprob"]``
    is given every step for every episode; ``info["prompt"]`` names the prompts of episodes that
    (re)started.

    ## Arguments
        num_envs: B, the number of episodes.
        as_tensors: torch tensors on the device in and out instead of numpy arrays.
        model: the frozen reference policy π_pt: ``"embedded"`` (the default LM shipped with the
            package), a Hugging Face causal-LM id or local folder, or a loaded ``PreTrainedModel``.
        tokenizer: its tokenizer (object, id or path); ``None`` loads the model's own. A tokenizer
            whose vocabulary does not fit the model raises ``ValueError``.
        prompts: a list of strings, a text file (one prompt a line), a JSONL file (a ``prompt``
            field a line) or a ``datasets.Dataset`` with a ``prompt`` column; ``None`` uses the
            embedded LM's held-out prompts. Each episode draws one with the env's RNG.
        reward_model: a callable ``(prompts, completions) -> Tensor[B]``, a sequence-classification
            model (id, path or object) with ``num_labels=1``, or ``None`` for the embedded reward model.
        max_new_tokens: N, the most tokens an episode generates before it is truncated.
        stop_at_eos: end the episode (terminated) when the action is the EOS token.
        kl_coef: β; each step's reward adds β · log π_pt(action | state) (see Rewards).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        max_prompt_tokens: the longest prompt in tokens; ``None`` takes the longest given prompt.
            ``context_len = max_prompt_tokens + max_new_tokens`` must fit the model's context.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        model: str | Path | PreTrainedModel = "embedded",
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        prompts: Any = None,
        reward_model: RewardModelSpec = None,
        max_new_tokens: int = 48,
        stop_at_eos: bool = True,
        kl_coef: float = 0.0,
        device: str | torch.device = "auto",
        max_prompt_tokens: int | None = None,
        as_tensors: bool = False,
    ) -> None:
        self.core = TokenCore(
            num_envs,
            model=model,
            tokenizer=tokenizer,
            prompts=prompts,
            reward_model=reward_model,
            max_new_tokens=max_new_tokens,
            stop_at_eos=stop_at_eos,
            kl_coef=kl_coef,
            device=device,
            max_prompt_tokens=max_prompt_tokens,
        )
        self.num_envs = num_envs
        self.as_tensors = as_tensors
        self.device = self.core.device
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Start every episode; ``seed=s`` seeds episode i's RNG with s + i, as gymnasium's vector envs do."""
        super().reset(seed=seed)
        if seed is not None or not self._rngs:
            seeds = [None] * self.num_envs if seed is None else [seed + i for i in range(self.num_envs)]
            self._rngs = [seeding.np_random(row_seed)[0] for row_seed in seeds]
        rows = np.arange(self.num_envs)
        self.core.start(rows, self._draw_prompts(rows))
        prompts = np.array([self.core.prompts[i] for i in self.core.prompt_index], dtype=object)
        return self._output(self.core.observation()), {
            "prompt": prompts,
            "_prompt": np.ones(self.num_envs, bool),
        }

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        if not self._rngs:
            raise RuntimeError("call reset() before step()")
        result = self.core.step(self._action_tensor(actions))
        info: dict[str, Any] = {
            "ref_logprob": self._output(result["ref_logprob"]),
            "_ref_logprob": np.ones(self.num_envs, bool),
        }
        done_rows = result["done_rows"]
        if len(done_rows):
            done = np.zeros(self.num_envs, bool)
            done[done_rows] = True
            info["final_obs"] = self._output(self.core.observation())
            info["_final_obs"] = done
            info["final_info"] = self._final_info(result, done)
            info["_final_info"] = done
            self.core.start(done_rows, self._draw_prompts(done_rows))
            prompts = np.full(self.num_envs, None, dtype=object)
            prompts[done_rows] = [self.core.prompts[i] for i in self.core.prompt_index[done_rows]]
            info["prompt"], info["_prompt"] = prompts, done
        return (
            self._output(self.core.observation()),
            self._output(result["reward"]),
            self._output(result["terminated"]),
            self._output(result["truncated"]),
            info,
        )

    def _final_info(self, result: dict[str, Any], done: np.ndarray) -> dict[str, Any]:
        rows = result["done_rows"]
        prompts = np.full(self.num_envs, None, dtype=object)
        completions = np.full(self.num_envs, None, dtype=object)
        prompts[rows], completions[rows] = result["prompts"], result["completions"]
        scores = torch.zeros(self.num_envs, device=self.device)
        scores[torch.as_tensor(rows, device=self.device)] = result["scores"]
        prompt_length = np.zeros(self.num_envs, dtype=np.int64)
        prompt_length[rows] = self.core.prompt_lengths.cpu().numpy()[self.core.prompt_index[rows]]
        response_length = np.where(done, self.core.response_length, 0)
        info = {"prompt": prompts, "completion": completions, "score": self._output(scores)}
        info |= {"prompt_length": prompt_length, "response_length": response_length}
        return info | {f"_{key}": done for key in list(info)}

    def _draw_prompts(self, rows: np.ndarray) -> np.ndarray:
        return np.array([self._rngs[row].integers(len(self.core.prompts)) for row in rows], dtype=np.int64)

    def _action_tensor(self, actions: Any) -> torch.Tensor:
        if isinstance(actions, torch.Tensor):
            tensor = actions.to(self.device)
        else:
            array = np.asarray(actions)
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"actions must be integer token ids, got dtype {array.dtype}")
            tensor = torch.as_tensor(array, device=self.device)
        if tensor.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {tuple(tensor.shape)}")
        if tensor.is_floating_point() or tensor.is_complex():
            raise ValueError(f"actions must be integer token ids, got {tensor.dtype}")
        return tensor.long()

    def _output(self, value: Any) -> Any:
        if self.as_tensors:
            return value
        if isinstance(value, dict):
            return {key: item.cpu().numpy() for key, item in value.items()}
        return value.cpu().numpy()


class TokenEnv(gym.Env):
    """LLM decoding as an MDP: the state is prompt + continuation, the action is the next token.

    ## Description
    The lecture's "decoding as an RL problem": an episode starts from a prompt x drawn from a set,
    each action appends one token t to the continuation y, and the episode ends at the EOS token or
    after N = ``max_new_tokens`` tokens. The environment holds a frozen reference model π_pt (by
    default the embedded LM) and computes log π_pt(t | x, y) of every taken token from one forward
    pass over a KV cache (never re-running the sequence); it is the B = 1 case of
    :class:`TokenVectorEnv`'s batched core.

    ## Action Space
    ``Discrete(vocab_size)``: the id of the next token (``vocab_size`` = the model's output width).

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
    ``kl_coef=0`` and uses ``info["ref_logprob"]`` itself.

    ## Starting State
    A prompt drawn uniformly from ``prompts`` with the env's RNG.

    ## Episode End
    Terminated when the action is EOS (with ``stop_at_eos``); truncated after ``max_new_tokens``
    tokens. The last step's info holds ``prompt``, ``completion`` (decoded, special tokens dropped),
    ``score``, ``prompt_length`` and ``response_length``; every step's info holds ``ref_logprob``.

    ## Arguments
        model: the frozen reference policy π_pt: ``"embedded"`` (the default LM shipped with the
            package), a Hugging Face causal-LM id or local folder, or a loaded ``PreTrainedModel``.
        tokenizer: its tokenizer (object, id or path); ``None`` loads the model's own. A tokenizer
            whose vocabulary does not fit the model raises ``ValueError``.
        prompts: a list of strings, a text file (one prompt a line), a JSONL file (a ``prompt``
            field a line) or a ``datasets.Dataset`` with a ``prompt`` column; ``None`` uses the
            embedded LM's held-out prompts. Each episode draws one with the env's RNG.
        reward_model: a callable ``(prompts, completions) -> Tensor[B]``, a sequence-classification
            model (id, path or object) with ``num_labels=1``, or ``None`` for the embedded reward model.
        max_new_tokens: N, the most tokens an episode generates before it is truncated.
        stop_at_eos: end the episode (terminated) when the action is the EOS token.
        kl_coef: β; each step's reward adds β · log π_pt(action | state) (see Rewards).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        max_prompt_tokens: the longest prompt in tokens; ``None`` takes the longest given prompt.
            ``context_len = max_prompt_tokens + max_new_tokens`` must fit the model's context.
        render_mode: ``"ansi"`` returns prompt + continuation as text.

    ## Version History
    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"]}

    def __init__(
        self,
        model: str | Path | PreTrainedModel = "embedded",
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        prompts: Any = None,
        reward_model: RewardModelSpec = None,
        max_new_tokens: int = 48,
        stop_at_eos: bool = True,
        kl_coef: float = 0.0,
        device: str | torch.device = "auto",
        max_prompt_tokens: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.core = TokenCore(
            1,
            model=model,
            tokenizer=tokenizer,
            prompts=prompts,
            reward_model=reward_model,
            max_new_tokens=max_new_tokens,
            stop_at_eos=stop_at_eos,
            kl_coef=kl_coef,
            device=device,
            max_prompt_tokens=max_prompt_tokens,
        )
        self.render_mode = render_mode
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self._running = False

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        index = np.array([self.np_random.integers(len(self.core.prompts))], dtype=np.int64)
        self.core.start(np.zeros(1, dtype=np.int64), index)
        self._running = True
        return self._observation(), {"prompt": self.core.prompts[int(index[0])]}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if not self._running:
            raise RuntimeError("call reset() before step(): the episode has ended or not started")
        array = np.asarray(action)
        if array.shape != () or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"action must be one integer token id, got {action!r}")
        result = self.core.step(torch.as_tensor(array.reshape(1), device=self.core.device))
        terminated, truncated = bool(result["terminated"][0]), bool(result["truncated"][0])
        info: dict[str, Any] = {"ref_logprob": float(result["ref_logprob"][0])}
        if terminated or truncated:
            self._running = False
            info |= {
                "prompt": result["prompts"][0],
                "completion": result["completions"][0],
                "score": float(result["scores"][0]),
                "prompt_length": int(self.core.prompt_lengths[self.core.prompt_index[0]]),
                "response_length": int(self.core.response_length[0]),
            }
        return self._observation(), float(result["reward"][0]), terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        prompts, completions = self.core.texts(np.zeros(1, dtype=np.int64))
        return prompts[0] + completions[0]

    def _observation(self) -> dict[str, np.ndarray]:
        return {key: value[0].cpu().numpy() for key, value in self.core.observation().items()}
