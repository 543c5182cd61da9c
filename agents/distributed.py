"""Token PPO on several processes, with Hugging Face ``accelerate`` and PyTorch's DDP.

Launched as N processes (``accelerate launch --multi_gpu --num_processes N script.py``: one per GPU,
or, on a machine without CUDA, N gloo processes on the CPU), :class:`AcceleratedTokenPPO` is
:class:`agents.TokenPPO` with the data split over the processes:

* each process steps ``num_envs`` episodes of its own env on its own device (``num_envs`` and
  ``batch_size`` are per process, as TRL's ``per_device_train_batch_size``: the global batch is
  N × ``num_envs`` episodes); process r's episodes are seeded like rows r·num_envs... of one big env,
  and it samples their tokens from the noise of the whole batch, so N processes sample what one
  process stepping all N × ``num_envs`` episodes would;
* the policy is wrapped in ``DistributedDataParallel``: the PPO loss's gradients are averaged over
  the processes in the backward pass, and every process takes the same optimizer step;
* the KL penalty's statistics (whitening, the measured KL) are summed over the processes, so the
  adaptive controller sets the same β on each;
* only the main process writes TensorBoard logs, checkpoints and the Hugging Face folder.

Counts (``learn(total_timesteps)``, ``num_timesteps``) are env steps of each process. Where the
results differ from one process's: PPO normalizes advantages per minibatch of each process.
Resuming a multi-process checkpoint restarts the episodes from a seeded reset in each process (the
checkpoint holds the main process's episodes only); policy, optimizer and β continue exactly.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from agents.token_policy import PackedTokenObservations
from agents.token_ppo import TokenPPO
from rlhf_envs.device import resolve_device

__all__ = ["AcceleratedTokenPPO", "DistributedTokenPolicy"]


class DistributedTokenPolicy(DistributedDataParallel):
    """A :class:`TokenActorCritic` under DDP: :meth:`evaluate` (the pass gradients flow through) runs
    DDP's forward, so that backward averages the gradients over the processes; sampling, values and
    saving are the wrapped policy's. Its ``state_dict`` is the policy's (no ``module.`` prefix)."""

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor, dones: torch.Tensor):
        return self(obs, action, dones)

    def act(self, obs: torch.Tensor):
        return self.module.act(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.module.value(obs)

    def bootstrap_value(self, obs: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        return self.module.bootstrap_value(obs, done)

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.module.deterministic_action(obs)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        return action

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.module.save_pretrained(path)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


class AcceleratedTokenPPO(TokenPPO):
    """:class:`agents.TokenPPO` data-parallel over the processes of an ``accelerate`` launch.

    Args:
        env: as for :class:`agents.TokenPPO`; each process makes its own (``num_envs`` episodes).
        accelerator: an ``accelerate.Accelerator`` (default: a new one, on the CPU when CUDA is
            absent; it finds the launch's processes and this process's device).
        seed: the same in every process (the processes' episodes and tokens differ by design).
        policy: default: a :class:`TokenActorCritic` of the env's reference model.
        **config: fields of :class:`agents.token_ppo.TokenPPOConfig`, ``num_envs`` and ``batch_size``
            per process.

    Example (``train.py``, run with ``accelerate launch --multi_gpu --num_processes 2 train.py``)::

        agent = AcceleratedTokenPPO("rlhf_envs/TokenEnv-v0", num_envs=32, logdir="runs/ppo")
        agent.learn(8192)
        agent.save_pretrained("fine-tuned")  # the main process writes it
    """

    def __init__(
        self,
        env: Any,
        accelerator: Any = None,
        seed: int = 0,
        policy: nn.Module | None = None,
        spaces: Any = None,
        device: Any = None,
        **config: Any,
    ) -> None:
        from accelerate import Accelerator

        # accelerate's processes are CPU (gloo) processes only when asked: ask when there is no GPU.
        self.accelerator = (
            Accelerator(cpu=not torch.cuda.is_available()) if accelerator is None else accelerator
        )
        if device not in (None, "auto") and resolve_device(device) != self.accelerator.device:
            raise ValueError(f"the accelerator runs this process on {self.accelerator.device}, not {device}")
        if config.get("target_kl") is not None and self.accelerator.num_processes > 1:
            # Each process would stop its epochs on its own KL: the processes' backward passes (and
            # DDP's all-reduces) would no longer pair up.
            raise ValueError("target_kl is not supported with more than one process")
        if not self.accelerator.is_main_process:  # logs and checkpoints come from the main process
            config = {**config, "logdir": None, "checkpoint_every": 0}
        super().__init__(env, self.accelerator.device, seed, policy, spaces, **config)
        rank, processes = self.accelerator.process_index, self.accelerator.num_processes
        num_envs = self.env.num_envs
        self.policy.sample_as_shard(slice(rank * num_envs, (rank + 1) * num_envs), processes * num_envs, seed)
        if self.kl_penalty is not None:
            self.kl_penalty.all_reduce = lambda sums: self.accelerator.reduce(sums, reduction="sum")
        if processes > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.policy = DistributedTokenPolicy(self.policy, device_ids=device_ids)

    def _make_env(self, env: Any) -> PackedTokenObservations:
        env = super()._make_env(env)
        env.seed_offset = self.accelerator.process_index * env.num_envs
        return env

    def learn(
        self, total_timesteps: int, progress_bar: bool = True, reset_num_timesteps: bool = True
    ) -> AcceleratedTokenPPO:
        """Train for ``total_timesteps`` env steps of each process (see :meth:`agents.PPO.learn`)."""
        progress_bar = progress_bar and self.accelerator.is_main_process
        super().learn(total_timesteps, progress_bar, reset_num_timesteps)
        return self

    def save(self, path: str | os.PathLike) -> None:
        """The checkpoint, written by the main process (the others' parameters and β are the same)."""
        if self.accelerator.is_main_process:
            super().save(path)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        if self.accelerator.is_main_process:
            super().save_pretrained(path)

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, device: Any = None, **overrides: Any):
        """Load a checkpoint in every process; each restarts its own episodes (see the module docstring)."""
        agent = super().load(path, env, device, **overrides)
        if agent.accelerator.num_processes > 1:
            agent._last_obs = None  # the main process's episodes: every process resets its own
        return agent
