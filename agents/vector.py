"""Turn whatever env an agent is given into a vector env that speaks torch tensors on one device.

Our batched cores do this natively (``CoreVectorEnv(as_tensors=True)``: nothing leaves the
device). Any other Gymnasium env is stepped on the host by gymnasium's ``SyncVectorEnv`` and its
numpy outputs are copied to the device once per step by :class:`TorchVectorEnv`. Every env an
agent sees autoresets in the same step (gymnasium's ``SAME_STEP``): ``info["final_obs"]`` holds
the last observation of the episodes that just ended, where ``info["_final_obs"]`` is true. Envs
in another autoreset mode are built in ``SAME_STEP`` where we build them, and otherwise adapted by
:class:`SameStepAutoreset`, so no agent learns from ``NEXT_STEP``'s reset step as a transition.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv, VectorWrapper

from rlhf_envs.device import resolve_device
from rlhf_envs.envs.batched import CoreEnv, CoreVectorEnv, truncates_itself


@runtime_checkable
class ResumableEnv(Protocol):
    """A vector env whose episodes in progress and random states can be saved and continued exactly
    (our batched cores, the TokenEnv)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TorchVectorEnv(VectorWrapper):
    """Give a numpy ``SAME_STEP`` vector env a tensor interface on ``device``."""

    def __init__(self, env: VectorEnv, device: torch.device) -> None:
        super().__init__(env)
        self.device = device

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._tensor(obs), info

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs, reward, terminated, truncated, info = self.env.step(actions.cpu().numpy())
        obs = self._tensor(obs)
        done = np.logical_or(terminated, truncated)
        # gymnasium stores final observations in an object array; stack them into one tensor,
        # with the current observation standing in for episodes that did not end.
        final_obs = obs.clone()
        if done.any():
            final_rows = np.stack([info["final_obs"][i] for i in np.flatnonzero(done)])
            final_obs[torch.as_tensor(np.flatnonzero(done), device=self.device)] = self._tensor(final_rows)
        info = dict(info, final_obs=final_obs, _final_obs=torch.as_tensor(done, device=self.device))
        return (
            obs,
            torch.as_tensor(reward, dtype=torch.float32, device=self.device),
            torch.as_tensor(terminated, device=self.device),
            torch.as_tensor(truncated, device=self.device),
            info,
        )

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), device=self.device)


class SameStepAutoreset(VectorWrapper):
    """A ``NEXT_STEP`` or ``DISABLED`` vector env seen as ``SAME_STEP``: right after a step that ended
    episodes, those rows are started afresh with ``reset(options={"reset_mask": ended})``, so the step
    returns the new episodes' first observations and the ended ones' last in ``info["final_obs"]``.

    ``NEXT_STEP``'s reset step (the step after an end, whose action is ignored and which returns a
    reward of 0) therefore never happens: an agent sees only real transitions. For an env that speaks
    tensors (ours) the reset is made every step with the device mask (a no-op where nothing ended; no
    host sync); for a NumPy env only on steps where an episode ended (gymnasium's envs refuse an empty
    mask). ``info["final_obs"]`` is a batched tensor or array (the step's observation in every row),
    valid where ``info["_final_obs"]`` is true.
    """

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        final_obs, reward, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        obs = final_obs
        # A reset returns every row's observation: the new episodes' where done, the others' current.
        if isinstance(done, torch.Tensor) or done.any():
            obs, _ = self.env.reset(options={"reset_mask": done})
        return obs, reward, terminated, truncated, dict(info, final_obs=final_obs, _final_obs=done)


_MAKE_WRAPPERS = (gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker, gym.wrappers.TimeLimit)


def _has_user_wrappers(env: gym.Env) -> bool:
    """True when ``env`` carries wrappers beyond those ``gym.make`` adds by itself."""
    while isinstance(env, gym.Wrapper):
        if not isinstance(env, _MAKE_WRAPPERS):
            return True
        env = env.env
    return False


def _episodes_last_the_horizon(env: gym.Env) -> bool:
    """Whether a made env of one of our cores ends its episodes at its horizon, as a vector face of the
    core does: by itself or by a ``TimeLimit`` at the horizon, with no shorter ``max_episode_steps``."""
    horizon, limit = env.unwrapped.horizon, env.spec.max_episode_steps
    if truncates_itself(env.unwrapped):
        return limit is None or limit >= horizon
    return limit == horizon


def make_tensor_vector_env(env: Any, num_envs: int, device: torch.device) -> VectorEnv:
    """A ``SAME_STEP`` vector env on ``device`` with tensor in- and outputs.

    ``env`` may be an env id, a Gymnasium env, or a vector env (ours or gymnasium's) in any autoreset
    mode.
    """
    same_step = AutoresetMode.SAME_STEP
    if isinstance(env, str):
        spec = gym.spec(env)
        # Our own vector entry points take a device and speak tensors; gymnasium's take neither.
        if spec.namespace == "rlhf_envs" and spec.vector_entry_point is not None:
            return gym.make_vec(
                env,
                num_envs=num_envs,
                vectorization_mode="vector_entry_point",
                device=device,
                as_tensors=True,
                autoreset_mode=same_step,
            )
        env_fns = [lambda: gym.make(spec)] * num_envs
        return TorchVectorEnv(SyncVectorEnv(env_fns, autoreset_mode=same_step), device)
    if isinstance(env, CoreVectorEnv):
        return env.to_vector(device=device, autoreset_mode=same_step)
    if isinstance(env, VectorEnv):
        if getattr(env.unwrapped, "as_tensors", False) and not same_device(env.unwrapped.device, device):
            raise ValueError(
                f"the env's tensors are on {env.unwrapped.device} and the agent's on {device}: "
                "make both on one device"
            )
        if env.metadata.get("autoreset_mode") != same_step:
            env = SameStepAutoreset(env)
        # Ours (the TokenEnv as token agents prepare it, or a tensor env in vector wrappers such as a
        # learned reward) are stepped as they are; gymnasium's get a tensor interface.
        return env if getattr(env.unwrapped, "as_tensors", False) else TorchVectorEnv(env, device)
    if isinstance(env, gym.Env):
        # Shortcuts that rebuild the env (from its core or spec) would drop the user's wrappers,
        # such as a learned reward; a wrapped env is stepped as it is.
        if _has_user_wrappers(env) or env.spec is None:
            env_fns = [lambda: env]
        elif isinstance(env.unwrapped, CoreEnv) and _episodes_last_the_horizon(env):
            return env.unwrapped.to_vector(num_envs, device=device, autoreset_mode=same_step)
        else:
            env_fns = [lambda: gym.make(env.spec)] * num_envs
        return TorchVectorEnv(SyncVectorEnv(env_fns, autoreset_mode=same_step), device)
    raise TypeError(f"expected an env id, a gymnasium Env or a VectorEnv, got {type(env).__name__}")


def same_device(a: str | torch.device, b: str | torch.device) -> bool:
    """Whether ``a`` and ``b`` name one device: ``"cuda"`` is the current CUDA device, so it equals
    ``"cuda:0"`` there (``torch.device("cuda") != torch.device("cuda:0")``)."""
    return resolve_device(a) == resolve_device(b)


def env_gamma(env: VectorEnv) -> float | None:
    """The discount the MDP itself defines (the tabular MDP's γ), None if it defines none.

    Read from the env's public ``gamma``; for gymnasium vector envs from the envs they step,
    through any wrappers around them.
    """
    inner = env.unwrapped
    if isinstance(inner, SyncVectorEnv):
        try:
            return inner.get_attr("gamma")[0]
        except AttributeError:
            return None
    return getattr(inner, "gamma", None)
