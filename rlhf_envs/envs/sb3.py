"""Stable-Baselines3's ``VecEnv`` over a batched core: SB3 algorithms step every episode in one call.

SB3 trains on its own ``VecEnv`` API, not on Gymnasium's ``VectorEnv``; through ``make_vec_env`` it
would run our envs one Python ``step`` per episode (``DummyVecEnv``). :class:`SB3VecEnv` gives it the
tabular or car core's vector face instead, all episodes stepped in one batched call::

    from stable_baselines3 import PPO
    from rlhf_envs.envs.sb3 import SB3VecEnv

    PPO("MlpPolicy", SB3VecEnv("rlhf_envs/CarDriving-v0", num_envs=1024)).learn(1_000_000)

SB3's conventions, mapped from Gymnasium's same-step autoreset: an episode that ends restarts in the
same step, ``dones[i]`` is true, ``infos[i]["terminal_observation"]`` is its last observation and
``infos[i]["TimeLimit.truncated"]`` says it was cut by the horizon rather than terminated (SB3
bootstraps from the terminal observation then). Every other info key of the step (``arrived``,
``collided``, ``lecture_reward``...) is in ``infos[i]`` as the single env gives it.

The episodes share one core, so ``get_attr``/``set_attr``/``env_method`` act on that core's vector env
(its ``gamma``, ``core``, ``state_dict()``...), once for every index asked; ``set_attr`` sets the
attribute for all the episodes and refuses a subset of them. ``seed(s)`` seeds the next reset: the
whole batch's episodes follow from ``s``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from rlhf_envs.envs.batched import CoreEnv, CoreVectorEnv

__all__ = ["SB3VecEnv"]

# Keys of a same-step vector info that are not the step's own (gymnasium's end-of-episode layout).
_FINAL_KEYS = ("final_obs", "final_info")


class SB3VecEnv(VecEnv):
    """SB3's ``VecEnv`` over the batched core of a tabular or car env (see the module docstring).

    Args:
        env: an env id (``"rlhf_envs/CarDriving-v0"``), or one of our batched-core envs (a single or
            vector face, wrapped or not); it is left as it is and a new vector face is made from it.
        num_envs: episodes stepped together (default: the vector env's own count, else 1).
        device: where the core steps. The CPU by default: SB3 takes numpy every step, so a core on a
            GPU would copy each step's outputs to the host.
        **env_kwargs: the env's arguments, when ``env`` is an id.
    """

    def __init__(
        self,
        env: str | gym.Env | gym.vector.VectorEnv,
        num_envs: int | None = None,
        device: str | torch.device = "cpu",
        **env_kwargs: Any,
    ) -> None:
        if isinstance(env, str):
            env = gym.make(env, device=device, **env_kwargs)
        elif env_kwargs:
            raise TypeError(f"env arguments {sorted(env_kwargs)} are taken only with an env id")
        base = env.unwrapped
        if not isinstance(base, CoreEnv | CoreVectorEnv):
            raise TypeError(
                "SB3VecEnv needs one of our batched-core envs (tabular, car), got "
                f"{type(base).__name__}; wrap other envs with SB3's make_vec_env"
            )
        # Same-step autoreset is SB3's convention; tensors out save a copy before the one to numpy.
        self.vector_env = base.to_vector(
            num_envs, device=device, as_tensors=True, autoreset_mode=AutoresetMode.SAME_STEP
        )
        vector = self.vector_env
        super().__init__(vector.num_envs, vector.single_observation_space, vector.single_action_space)
        self._actions: np.ndarray | None = None

    # -- stepping -------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        # One seed drives the whole batch; SB3 gives env i the seed s + i, so s is env 0's.
        observations, info = self.vector_env.reset(seed=self._seeds[0], options=self._options[0] or None)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = self._info_rows(info)
        return observations.cpu().numpy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        observations, rewards, terminated, truncated, info = self.vector_env.step(self._actions)
        self._actions = None
        terminated, truncated = terminated.cpu().numpy(), truncated.cpu().numpy()
        dones = terminated | truncated
        infos = self._info_rows(info)
        if dones.any():
            final_obs = info["final_obs"].cpu().numpy()
            for index in np.flatnonzero(dones):
                infos[index]["terminal_observation"] = final_obs[index]
                infos[index]["TimeLimit.truncated"] = bool(truncated[index])
        return observations.cpu().numpy(), rewards.cpu().numpy().astype(np.float32, copy=False), dones, infos

    def _info_rows(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """One info dict per episode, as a single env gives it: the step's own keys, an ended
        episode's from ``final_info`` where the vector env put them there.

        Each key is merged over the batch in one tensor op and read to the host once; only the
        dicts themselves are built per episode (SB3 takes a list of them)."""
        final_info = info.get("final_info", {})
        names = [name for name, value in info.items() if _is_key(name, value) and name not in _FINAL_KEYS]
        names += [name for name, value in final_info.items() if _is_key(name, value) and name not in info]
        if not names:
            return [{} for _ in range(self.num_envs)]
        columns, held = [], []
        for name in names:
            value, mask = _column(info if name in info else final_info, name, self.num_envs)
            if name in info and name in final_info:  # an ended episode's keys are its last step's
                final_value, final_mask = _column(final_info, name, self.num_envs)
                value = torch.where(final_mask.view(-1, *([1] * (value.dim() - 1))), final_value, value)
                mask = mask | final_mask
            columns.append(value.tolist())
            held.append(mask)
        # Equal lengths by construction; zip's strict check would triple the cost of this line.
        rows = [dict(zip(names, values, strict=False)) for values in zip(*columns, strict=False)]
        held = torch.stack(held, dim=1).cpu().numpy()
        if not held.all():  # a key masked out for an episode (gymnasium's "_key") is not its
            for index, name in zip(*np.nonzero(~held), strict=True):
                del rows[index][names[name]]
        return rows

    def close(self) -> None:
        self.vector_env.close()

    # -- the shared core's attributes and methods -----------------------------------------------
    def _count(self, indices: VecEnvIndices) -> int:
        return len(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per index (the episodes share it)."""
        value = getattr(self.vector_env, attr_name)
        return [value] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the vector env's attribute: for every episode, so ``indices`` must name them all."""
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(
                f"the {self.num_envs} episodes share one core: set {attr_name!r} for all (indices=None)"
            )
        setattr(self.vector_env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call the vector env's method once; its result is given for every index asked."""
        result = getattr(self.vector_env, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the episodes are rows of a core, no Gymnasium wrapper is around them."""
        return [False] * self._count(indices)

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        indices = [indices] if isinstance(indices, int | np.integer) else list(indices)
        if any(not 0 <= int(index) < self.num_envs for index in indices):
            raise IndexError(f"indices {indices} outside 0..{self.num_envs - 1}")
        return indices


def _is_key(name: str, value: Any) -> bool:
    """Whether ``name`` is one of a vector info's own keys (not a ``_key`` mask)."""
    return not name.startswith("_") and isinstance(value, torch.Tensor)


def _column(info: dict[str, Any], name: str, num_envs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A vector info's key over the batch and where it holds (its ``_key`` mask; all rows without one)."""
    value, mask = info[name], info.get(f"_{name}")
    return value, torch.ones(num_envs, dtype=torch.bool, device=value.device) if mask is None else mask
