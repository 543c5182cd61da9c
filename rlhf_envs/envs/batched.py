"""One batched core per MDP, two faces over it.

A :class:`BatchedCore` holds an MDP's dynamics as functions of an explicit state that step B
episodes at once on one device: ``reset``, ``step`` and ``observe``. Every env of the suite is
such a core: the tabular and car MDPs, whose state is one tensor, and the TokenEnv's decoding core,
whose state also holds a KV cache and which restarts ended rows itself, as its start is expensive
(:mod:`rlhf_envs.envs.token`). Each has two faces, a single Gymnasium env (B = 1) and a vector
env; here are the faces of the tensor cores, :class:`CoreEnv` (numpy in and out) and
:class:`CoreVectorEnv` (numpy or device tensors in and out); no MDP writes its dynamics twice.

Every face has the same public surface, all an agent needs: ``gamma`` (the discount the MDP
defines, or ``None``), ``to_vector()`` (a new vector face on a device, the caller's env left as it
is) and ``state_dict()`` / ``load_state_dict()`` (episodes in progress and the random state, so a
run resumes exactly).
"""

from __future__ import annotations

import abc
import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlhf_envs.device import resolve_device
from rlhf_envs.envs.arguments import autoreset_mode_from, boolean, positive_int

TensorDict = dict[str, torch.Tensor]


class BatchedCore(abc.ABC):
    """The dynamics of one MDP for B episodes at once, on ``self.device``.

    Subclasses set ``observation_space`` and ``action_space`` (of one episode), ``horizon`` (the N
    decision epochs after which an episode is truncated), ``gamma`` when the MDP defines its
    discount, and implement :meth:`reset` and :meth:`step`. Randomness comes only from the
    ``generator`` the face passes in (a ``torch.Generator`` here; a core may take another source,
    as the TokenEnv's per-episode NumPy generators), so a seed fixes a run.
    """

    observation_space: gym.Space
    action_space: gym.Space
    horizon: int
    #: The discount the MDP is defined with (its Q* and optimal policy depend on it), or None.
    gamma: float | None = None

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)

    @abc.abstractmethod
    def reset(self, num_envs: int, generator: torch.Generator) -> torch.Tensor:
        """Start states of ``num_envs`` episodes, shape [B, ...]."""

    @abc.abstractmethod
    def step(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TensorDict]:
        """Advance every episode one step: ``(next_state, reward[B], terminated[B], info)``.

        ``info`` maps names to [B] tensors (e.g. what the reward was made of).
        """

    def to(self, device: str | torch.device) -> BatchedCore:
        """A copy of this core whose tensors live on ``device``."""
        moved = copy.copy(self)
        moved.device = resolve_device(device)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(moved.device))
        return moved

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        """The observation of each episode's state; the state itself unless overridden."""
        return state

    def render(self, state: torch.Tensor, mode: str) -> np.ndarray | str | None:
        """Draw one episode's state (shape [...], no batch axis) in ``mode``."""
        raise NotImplementedError(f"{type(self).__name__} has no render modes")


def default_vector_device(device: str | torch.device | None, as_tensors: bool) -> torch.device:
    """The device of a vector face: ``device`` when given, else CUDA when present for a face that
    speaks tensors, and the CPU for one that speaks NumPy (on a GPU it would copy the actions up and
    every output down each step, slower than stepping on the CPU)."""
    return resolve_device(("auto" if as_tensors else "cpu") if device is None else device)


def vector_horizon(horizon: Any, max_episode_steps: Any, default: int) -> Any:
    """The horizon of a vector face: ``horizon`` when given, else ``max_episode_steps`` (which
    ``gym.make_vec`` passes from the env's registration), else ``default``."""
    if horizon is not None:
        return horizon
    if max_episode_steps is not None:
        return positive_int("max_episode_steps", max_episode_steps)
    return default


def _check_render_mode(render_mode: str | None, metadata: dict[str, Any]) -> None:
    if render_mode is not None and render_mode not in metadata["render_modes"]:
        raise ValueError(
            f"render_mode must be one of {metadata['render_modes']} or None, got {render_mode!r}"
        )


class ActionCheck:
    """Reads the actions of a face as the tensor its core steps with, on ``device``: int64 for a
    ``Discrete`` space, the space's float dtype for a ``Box``; ``shape`` is the face's action shape.

    Any Python, NumPy or torch numbers are read by their values, whatever their dtype. Refused with a
    ``TypeError`` (not numbers; bools; complex numbers) or a ``ValueError`` (another shape; for a
    ``Discrete`` space a non-integer dtype, even 2.0, or a value outside it; for a ``Box`` NaN,
    infinities or values outside its bounds), each naming the action. A tensor on a GPU is checked
    there with tensor ops, not by a device-side assert (which would leave CUDA unusable until the
    process ends): reading the verdict is the one host sync such a step makes.
    """

    def __init__(self, space: gym.Space, shape: tuple[int, ...], device: torch.device) -> None:
        if not isinstance(space, gym.spaces.Discrete | gym.spaces.Box):
            raise TypeError(f"a batched core takes Discrete or Box actions, not {space}")
        self.space, self.shape, self.device = space, shape, device
        if isinstance(space, gym.spaces.Box):  # on the device once, not uploaded every step
            self._low = torch.as_tensor(space.low, device=device)
            self._high = torch.as_tensor(space.high, device=device)

    def __call__(self, actions: Any) -> torch.Tensor:
        space = self.space
        if isinstance(actions, torch.Tensor):
            values: np.ndarray | torch.Tensor = actions.detach()
            kind = "b" if actions.dtype == torch.bool else "c" if actions.is_complex() else None
            kind = kind or ("f" if actions.dtype.is_floating_point else "i")
            # torch compares unsigned integers wider than 8 bits only partly; NumPy does it on the CPU.
            if actions.device.type == "cpu" and actions.dtype in (torch.uint16, torch.uint32, torch.uint64):
                values = actions.numpy()
        else:
            values = np.asarray(actions)
            kind = values.dtype.kind
        if kind == "b" or kind not in "iuf":
            what = "bools" if kind == "b" else f"dtype {values.dtype}"
            raise TypeError(f"actions must be numbers for {space}, got {what}: {actions!r}")
        if tuple(values.shape) != self.shape:
            raise ValueError(f"actions must have shape {self.shape} for {space}, got {tuple(values.shape)}")
        if isinstance(space, gym.spaces.Discrete):
            if kind not in "iu":
                raise ValueError(
                    f"actions must be integers for {space}, got dtype {values.dtype}: {actions!r}"
                )
            low, high = int(space.start), int(space.start + space.n) - 1
            if isinstance(values, np.ndarray):
                # NumPy compares every integer dtype with Python ints exactly (no uint64 wrap-around).
                if not ((values >= low) & (values <= high)).all():
                    raise ValueError(f"action {actions!r} is outside the action space {space}")
                return torch.as_tensor(values.astype(np.int64), device=self.device)
            tensor = values.to(device=self.device, dtype=torch.int64)
            outside = (tensor < low) | (tensor > high)
        else:
            real = values.astype(np.float64) if isinstance(values, np.ndarray) else values
            real = torch.as_tensor(real, device=self.device)
            tensor = real.to(self._low.dtype)  # a finite float64 beyond float32's range becomes inf
            outside = ~torch.isfinite(real) | (tensor < self._low) | (tensor > self._high)
        self.verdict(outside, actions)
        return tensor

    def verdict(self, outside: torch.Tensor, actions: Any) -> None:
        """Raise the ``ValueError`` when any action is ``outside`` the space: on a GPU, reading this
        flag is the one host sync a tensor face's step makes."""
        if bool(outside.any()):
            raise ValueError(f"action {actions!r} is outside the action space {self.space} (or not finite)")


def truncates_itself(env: gym.Env) -> bool:
    """Whether a single env truncates its episodes at its own horizon: True unless ``gym.make`` made it
    without a ``horizon`` argument, for then the ``TimeLimit`` that ``gym.make`` adds (registered with
    ``max_episode_steps`` = the default horizon) truncates it, and an episode is truncated once."""
    return env.spec is None or "horizon" in env.spec.kwargs


class CoreEnv(gym.Env):
    """The single-episode Gymnasium face of a :class:`BatchedCore` (B = 1, numpy in and out).

    It runs on the CPU by default: a Gymnasium env hands numpy to the caller every step, so a GPU
    would only add a copy per step. Use :class:`CoreVectorEnv` to run many episodes on a GPU.
    Subclasses list their render modes in the class attribute ``metadata``.

    An episode terminates when the core says so and is truncated after the core's ``horizon`` steps
    (by ``gym.make``'s ``TimeLimit`` when :func:`truncates_itself` is false). After it ended, ``step()``
    raises a ``RuntimeError`` until ``reset()``.

    Random numbers are drawn as in a :class:`CoreVectorEnv` of one episode: every step also draws the
    start of a next episode, which ``reset()`` without a seed takes, as the vector env's autoreset does;
    under one seed the two run the same episodes.
    """

    metadata: dict[str, Any] = {"render_modes": [], "render_fps": 10}

    def __init__(self, core: BatchedCore, render_mode: str | None = None) -> None:
        _check_render_mode(render_mode, self.metadata)
        self.core = core
        self.observation_space = core.observation_space
        self.action_space = core.action_space
        self.render_mode = render_mode
        self._generator = torch.Generator(device=core.device)
        self._state: torch.Tensor | None = None
        self._next_start: torch.Tensor | None = None  # drawn by the last step for the next episode
        self._elapsed = 0
        self._ended = False  # the episode terminated or was truncated: step() waits for reset()
        self._check_action = ActionCheck(core.action_space, core.action_space.shape, core.device)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        if seed is not None or self._next_start is None:
            # The torch generator follows gymnasium's np_random, so reset(seed=s) fixes the episode.
            self._generator.manual_seed(int(self.np_random.integers(2**63 - 1)))
            self._state = self.core.reset(1, self._generator)
        else:
            self._state = self._next_start
        self._next_start = None
        self._elapsed = 0
        self._ended = False
        return self._observation(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if self._ended:
            raise RuntimeError("the episode has ended (terminated or truncated): call reset() before step()")
        action_tensor = self._check_action(action).unsqueeze(0)
        self._state, reward, terminated, info = self.core.step(self._state, action_tensor, self._generator)
        self._next_start = self.core.reset(1, self._generator)
        self._elapsed += 1
        terminated_flag = bool(terminated[0])
        truncated = truncates_itself(self) and self._elapsed >= self.core.horizon and not terminated_flag
        self._ended = terminated_flag or truncated
        step_info = {name: value[0].item() for name, value in info.items()}
        return self._observation(), float(reward[0]), terminated_flag, truncated, step_info

    def render(self) -> np.ndarray | str | None:
        if self.render_mode is None or self._state is None:
            return None
        return self.core.render(self._state[0], self.render_mode)

    @property
    def gamma(self) -> float | None:
        """The discount the MDP defines (the tabular MDP's γ), or None when it defines none."""
        return self.core.gamma

    @property
    def horizon(self) -> int:
        """N, the steps after which an episode is truncated (and a vector face of this env's core too)."""
        return self.core.horizon

    def to_vector(
        self,
        num_envs: int | None = None,
        device: str | torch.device | None = None,
        as_tensors: bool = True,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> CoreVectorEnv:
        """A new vector face with ``num_envs`` (default 1) episodes of this env's core on ``device``
        (default: the core's); this env is left as it is."""
        core = self.core if device is None else self.core.to(device)
        num_envs = 1 if num_envs is None else num_envs
        return CoreVectorEnv(core, num_envs, as_tensors=as_tensors, autoreset_mode=autoreset_mode)

    def state_dict(self) -> dict[str, Any]:
        """The episode in progress and every random state: loading it continues this env exactly."""
        state = _face_state(self, self._state, self._elapsed, self._generator)
        return state | {"ended": self._ended, "next_start": _clone(self._next_start)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` of an env with the same core, on the same kind of device."""
        self._state, self._elapsed = _load_face_state(self, state, self._generator)
        self._ended = bool(state["ended"])
        self._next_start = _moved(state["next_start"], self.core.device)

    def _observation(self) -> Any:
        observation = self.core.observe(self._state)[0].cpu().numpy()
        if isinstance(self.observation_space, gym.spaces.Discrete):
            return int(observation)
        return observation.astype(self.observation_space.dtype)


class CoreVectorEnv(VectorEnv):
    """B episodes of a :class:`BatchedCore` stepped together on the core's device.

    With ``as_tensors=True`` actions, observations, rewards and flags are torch tensors on the
    device and nothing is copied to the host; otherwise they are numpy arrays, as in gymnasium's
    own vector envs. An episode is truncated after the core's ``horizon`` steps.

    **Autoreset** (``autoreset_mode``, also in ``metadata["autoreset_mode"]``), as Gymnasium 1.x defines it:

    - ``NEXT_STEP`` (the default, as Gymnasium's): the step that ends an episode is an ordinary step;
      the next step of that row ignores its action and starts a new episode, returning its first
      observation with reward 0 and ``terminated = truncated = False``.
    - ``SAME_STEP``: the step that ends an episode starts the next one at once and returns its first
      observation; the ended episode's last observation is ``info["final_obs"]`` and the step's info
      ``info["final_info"]``, where ``info["_final_obs"]`` / ``info["_final_info"]`` are true.
    - ``DISABLED``: nothing restarts by itself; ``reset(options={"reset_mask": mask})`` starts new
      episodes in the rows where ``mask`` is true (and leaves the others as they are). A NumPy face
      raises ``RuntimeError`` when a row whose episode ended is stepped before that.

    ``reset(options={"reset_mask": mask})`` works in every mode (a row's pending autoreset is dropped).

    **Info** follows Gymnasium's vector layout: every key (``arrived``, ... of the core) comes with a
    bool mask ``_key`` of the rows it holds: in ``SAME_STEP`` the rows that did not end (the ending rows'
    step info is in ``final_info``), in ``NEXT_STEP`` the rows that took a step (not the ones that
    restarted). NumPy faces match Gymnasium exactly: a key is present only when some row holds it,
    ``final_obs`` is an object array (``None`` where no episode ended) and the ``final_*`` keys come
    only on steps where an episode ended; masked-out entries are zero. Tensor faces keep every key on
    every step (a key that comes and goes would cost a host sync per step): ``final_obs`` is a
    ``[B, ...]`` tensor, entries are valid where their mask is true.

    **Random numbers**: each step draws the dynamics, then a fresh start for every row (branch-free,
    no host sync); a row that starts a new episode takes the start drawn by the step that ended the
    last one. With one episode this is the single env's stream in ``SAME_STEP`` and ``DISABLED``;
    ``NEXT_STEP``'s extra step draws like any step, so its later episodes differ from the single env's.
    """

    metadata: dict[str, Any] = {
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": [],
        "render_fps": 10,
    }

    def __init__(
        self,
        core: BatchedCore,
        num_envs: int,
        as_tensors: bool = False,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        num_envs = positive_int("num_envs", num_envs)
        _check_render_mode(render_mode, self.metadata)
        self.autoreset_mode = autoreset_mode_from(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.core = core
        self.device = core.device
        self.num_envs = num_envs
        self.as_tensors = boolean("as_tensors", as_tensors)
        self.render_mode = render_mode
        self.single_observation_space = core.observation_space
        self.single_action_space = core.action_space
        self.observation_space = batch_space(core.observation_space, num_envs)
        self.action_space = batch_space(core.action_space, num_envs)
        self._generator = torch.Generator(device=self.device)
        self._state: torch.Tensor | None = None
        self._elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        # The starts the last step drew for every row, and the rows whose episode ended (NEXT_STEP:
        # they restart in the next step; DISABLED: they wait for a reset_mask).
        self._fresh: torch.Tensor | None = None
        self._ended = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._ended_host = np.zeros(num_envs, dtype=bool)  # NumPy faces: the flags they returned
        self._all_rows = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        self._check_actions = ActionCheck(core.action_space, self.action_space.shape, self.device)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        reset_mask = None if options is None else options.get("reset_mask")
        if reset_mask is not None:
            return self._reset_rows(self._reset_mask(reset_mask), seed)
        super().reset(seed=seed)
        self._generator.manual_seed(int(self.np_random.integers(2**63 - 1)))
        self._state = self.core.reset(self.num_envs, self._generator)
        self._elapsed.zero_()
        self._fresh = None
        self._ended = torch.zeros_like(self._ended)
        self._ended_host = np.zeros(self.num_envs, dtype=bool)
        return self._output(self.core.observe(self._state)), {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if self.autoreset_mode == AutoresetMode.DISABLED and self._ended_host.any():
            rows = np.flatnonzero(self._ended_host).tolist()
            raise RuntimeError(
                f"the episodes of rows {rows} have ended: call reset(options={{'reset_mask': mask}}) for "
                "them before step() (autoreset_mode is DISABLED)"
            )
        state, reward, terminated, info = self.core.step(
            self._state, self._check_actions(actions), self._generator
        )
        fresh = self.core.reset(self.num_envs, self._generator)
        self._elapsed += 1
        truncated = (self._elapsed >= self.core.horizon) & ~terminated
        stepped = self._all_rows  # the rows whose step info is this step's own
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._fresh is not None:
            restarting = self._ended
            stepped = ~restarting
            state = _rows_where(restarting, self._fresh, state)
            reward = reward.masked_fill(restarting, 0.0)
            terminated, truncated = terminated & stepped, truncated & stepped
            self._elapsed = torch.where(restarting, 0, self._elapsed)
        done = terminated | truncated
        final = {}
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            final = {"obs": self.core.observe(state), "info": info, "done": done}
            state = _rows_where(done, fresh, state)
            self._elapsed = torch.where(done, 0, self._elapsed)
            stepped = ~done
        self._state, self._fresh, self._ended = state, fresh, done
        outputs = (self.core.observe(state), reward, terminated, truncated)
        if self.as_tensors:
            return *outputs, self._tensor_info(info, stepped, final)
        obs, reward, terminated, truncated = (value.cpu().numpy() for value in outputs)
        self._ended_host = terminated | truncated
        return obs, reward, terminated, truncated, self._numpy_info(info, stepped, final)

    def render(self) -> tuple[Any, ...] | None:
        if self.render_mode is None or self._state is None:
            return None
        return tuple(self.core.render(row, self.render_mode) for row in self._state)

    @property
    def gamma(self) -> float | None:
        """The discount the MDP defines (the tabular MDP's γ), or None when it defines none."""
        return self.core.gamma

    def to_vector(
        self,
        num_envs: int | None = None,
        device: str | torch.device | None = None,
        as_tensors: bool = True,
        autoreset_mode: AutoresetMode | str | None = None,
    ) -> CoreVectorEnv:
        """A new vector face of this env's core with ``num_envs`` episodes (default: as many as this
        one) on ``device`` (default: this env's), autoresetting as ``autoreset_mode`` (default: as this
        one); this env is left as it is."""
        core = self.core if device is None else self.core.to(device)
        return CoreVectorEnv(
            core,
            self.num_envs if num_envs is None else num_envs,
            as_tensors=as_tensors,
            autoreset_mode=self.autoreset_mode if autoreset_mode is None else autoreset_mode,
        )

    def state_dict(self) -> dict[str, Any]:
        """The episodes in progress and every random state: loading it continues this env exactly."""
        state = _face_state(self, self._state, self._elapsed, self._generator)
        return state | {
            "autoreset_mode": self.autoreset_mode.value,
            "fresh": _clone(self._fresh),
            "ended": self._ended.clone(),
            "ended_host": self._ended_host.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` of an env with the same core, ``num_envs`` and autoreset
        mode, on the same kind of device; raises ``ValueError`` otherwise."""
        if state.get("autoreset_mode") != self.autoreset_mode.value:
            raise ValueError(
                f"the state was saved with autoreset_mode={state.get('autoreset_mode')!r}, this "
                f"{type(self).__name__} has {self.autoreset_mode.value!r}"
            )
        self._state, self._elapsed = _load_face_state(self, state, self._generator)
        self._fresh = _moved(state["fresh"], self.device)
        self._ended = state["ended"].to(self.device).clone()
        self._ended_host = np.array(state["ended_host"], dtype=bool)

    def _reset_mask(self, mask: Any) -> torch.Tensor:
        mask = mask if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if mask.dtype not in (torch.bool, np.dtype(bool)):
            raise TypeError(f"options['reset_mask'] must be bools (numpy or torch), got {mask!r}")
        if tuple(mask.shape) != (self.num_envs,):
            raise ValueError(
                f"options['reset_mask'] must have shape ({self.num_envs},), got {tuple(mask.shape)}"
            )
        return torch.as_tensor(mask, device=self.device)

    def _reset_rows(self, mask: torch.Tensor, seed: int | None) -> tuple[Any, dict]:
        """New episodes in the rows where ``mask`` is true: each takes the start the last step drew for
        it (a seed reseeds the generator and draws them anew)."""
        if self._state is None:
            raise RuntimeError("call reset() without a reset_mask first: no episode is in progress")
        if seed is not None:
            super().reset(seed=seed)
            self._generator.manual_seed(int(self.np_random.integers(2**63 - 1)))
            self._fresh = None
        if self._fresh is None:
            self._fresh = self.core.reset(self.num_envs, self._generator)
        self._state = _rows_where(mask, self._fresh, self._state)
        self._elapsed = torch.where(mask, 0, self._elapsed)
        self._ended = self._ended & ~mask
        if not self.as_tensors:  # a NumPy face's mask is on the host: no copy
            self._ended_host = self._ended_host & ~mask.cpu().numpy()
        return self._output(self.core.observe(self._state)), {}

    def _tensor_info(self, info: TensorDict, stepped: torch.Tensor, final: dict[str, Any]) -> dict[str, Any]:
        tensor_info: dict[str, Any] = _masked(info, stepped)
        if final:
            done = final["done"]
            tensor_info |= {"final_obs": final["obs"], "_final_obs": done}
            tensor_info |= {"final_info": _masked(final["info"], done), "_final_info": done}
        return tensor_info

    def _numpy_info(self, info: TensorDict, stepped: torch.Tensor, final: dict[str, Any]) -> dict[str, Any]:
        """Gymnasium's vector info: a key only where some row holds it, zeros where its mask is false."""
        host = {name: value.cpu().numpy() for name, value in info.items()}
        numpy_info = _numpy_masked(host, stepped.cpu().numpy())
        done = final["done"].cpu().numpy() if final else None
        if done is not None and done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            last = final["obs"].cpu().numpy()
            for row in np.flatnonzero(done):
                final_obs[row] = last[row]
            numpy_info |= {"final_obs": final_obs, "_final_obs": done}
            numpy_info |= {"final_info": _numpy_masked(host, done), "_final_info": done}
        return numpy_info

    def _output(self, value: torch.Tensor) -> Any:
        return value if self.as_tensors else value.cpu().numpy()


def _rows_where(rows: torch.Tensor, chosen: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``chosen`` in the rows (dim 0) where ``rows`` is true, ``other`` elsewhere."""
    return torch.where(rows.view(-1, *([1] * (other.dim() - 1))), chosen, other)


def _masked(info: TensorDict, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {key: item for name, value in info.items() for key, item in ((name, value), (f"_{name}", mask))}


def _numpy_masked(info: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    if not mask.any():
        return {}
    masked: dict[str, np.ndarray] = {}
    for name, value in info.items():
        masked[name] = np.where(mask.reshape(-1, *([1] * (value.ndim - 1))), value, np.zeros_like(value))
        masked[f"_{name}"] = mask.copy()
    return masked


def _clone(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.clone()


def _moved(value: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if value is None else value.to(device).clone()


def numpy_rng_state(rng: np.random.Generator | None) -> dict[str, Any] | None:
    """A copy of a NumPy generator's state (None for None), for a state dict."""
    return None if rng is None else copy.deepcopy(rng.bit_generator.state)


def numpy_rng_from_state(state: dict[str, Any] | None) -> np.random.Generator | None:
    """Inverse of :func:`numpy_rng_state`."""
    if state is None:
        return None
    rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    rng.bit_generator.state = state
    return rng


def check_face_state(env: gym.Env | VectorEnv, state: dict[str, Any], core: Any, num_envs: int) -> None:
    """Raise ``ValueError`` when ``state`` was saved from an env that is not like ``env``."""
    expected = {"core": type(core).__name__, "num_envs": num_envs, "device_type": core.device.type}
    for key, value in expected.items():
        if state.get(key) != value:
            raise ValueError(
                f"the state was saved with {key}={state.get(key)!r}, this {type(env).__name__} has {value!r}"
            )


def _face_state(
    env: CoreEnv | CoreVectorEnv, core_state: torch.Tensor | None, elapsed: Any, generator: torch.Generator
) -> dict[str, Any]:
    if core_state is None:
        raise RuntimeError("call reset() before state_dict(): no episode is in progress")
    num_envs = env.num_envs if isinstance(env, VectorEnv) else 1
    return {
        "core": type(env.core).__name__,
        "num_envs": num_envs,
        "device_type": env.core.device.type,
        "state": core_state.clone(),
        "elapsed": elapsed.clone() if isinstance(elapsed, torch.Tensor) else elapsed,
        "generator": generator.get_state(),
        # gymnasium's np_random draws the next seed of an unseeded reset().
        "np_random": numpy_rng_state(env._np_random),
    }


def _load_face_state(
    env: CoreEnv | CoreVectorEnv, state: dict[str, Any], generator: torch.Generator
) -> tuple[torch.Tensor, Any]:
    num_envs = env.num_envs if isinstance(env, VectorEnv) else 1
    check_face_state(env, state, env.core, num_envs)
    generator.set_state(state["generator"])
    env._np_random = numpy_rng_from_state(state["np_random"])
    elapsed = state["elapsed"]
    elapsed = elapsed.to(env.core.device).clone() if isinstance(elapsed, torch.Tensor) else elapsed
    return state["state"].to(env.core.device).clone(), elapsed
