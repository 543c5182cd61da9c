"""The lecture's car-driving MDP: follow a randomly braking car down a 1-D road to a destination."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlhf_envs.envs.arguments import boolean, positive_int, real
from rlhf_envs.envs.batched import (
    BatchedCore,
    CoreEnv,
    CoreVectorEnv,
    TensorDict,
    default_vector_device,
    vector_horizon,
)

REWARDS = ("lecture", "speed")

# Indices into the core's state, shape [B, 4]; positions are bumpers: the ego's front, the lead's rear.
EGO_POSITION, EGO_SPEED, LEAD_POSITION, LEAD_SPEED = range(4)

# Height × width × RGB of an rgb_array frame: the whole road, start to destination, in one picture.
RGB_SHAPE = (64, 512, 3)
# Colours (RGB) of the rgb_array frames.
_GRASS, _ROAD, _MARK = (70, 140, 60), (90, 90, 90), (230, 230, 230)
_EGO, _LEAD, _FLAG = (40, 110, 230), (220, 50, 40), (250, 250, 250)


@dataclass
class CarDrivingConfig:
    """Every constant of the car-driving MDP. Units: metres, seconds, m/s, m/s².

    Args:
        destination: distance from the ego car's start to the destination (m).
        horizon: N, the decision epochs after which an episode is truncated.
        dt: the fixed time step between decision epochs (s).
        max_speed: the ego car's top speed (m/s); above ``lead_cruise_speed`` so flat out catches up.
        acceleration: what *accelerate* adds to the ego's speed per second (m/s²).
        deceleration: what *decelerate* takes off the ego's speed per second (m/s², positive).
        lead_cruise_speed: the lead car's top speed, which it returns to after braking (m/s).
        lead_acceleration: how fast the lead car regains speed when not braking (m/s²).
        lead_deceleration: how hard the lead car brakes (m/s², positive).
        lead_brake_probability: chance that the lead car brakes in a step, independently each step.
        initial_gap: range (low, high) of the uniformly drawn starting gap between the cars (m).
        initial_speed: range of the ego's uniformly drawn starting speed (m/s).
        initial_lead_speed: range of the lead's uniformly drawn starting speed (m/s).
        sensor_range: gaps beyond this are observed as this (m); the true gap stays in the state.
        continuous: Box(1) acceleration in [-deceleration, acceleration] instead of Discrete(3).
        discrete_observation: observe the index of the state's bin (see ``*_bins``) instead of a Box.
        reward: ``"lecture"`` (+arrival_reward / collision_reward / 0) or ``"speed"`` (the
            misspecified proxy: speed above ``lead_cruise_speed``, scaled to [0, 1], every step).
        arrival_reward: reward on reaching the destination (the lecture's +50).
        collision_reward: reward on hitting the lead car (the lecture's −1000).
        gap_bins: inner bin edges of the observed gap for ``discrete_observation`` (m, increasing).
        speed_bins: inner bin edges of the ego's speed (m/s, increasing).
        lead_speed_bins: inner bin edges of the lead's speed (m/s, increasing).
    """

    destination: float = 200.0
    horizon: int = 50
    dt: float = 1.0
    max_speed: float = 15.0
    acceleration: float = 2.0
    deceleration: float = 3.0
    lead_cruise_speed: float = 10.0
    lead_acceleration: float = 1.0
    lead_deceleration: float = 2.0
    lead_brake_probability: float = 0.15
    initial_gap: tuple[float, float] = (15.0, 30.0)
    initial_speed: tuple[float, float] = (0.0, 3.0)
    initial_lead_speed: tuple[float, float] = (6.0, 10.0)
    sensor_range: float = 60.0
    continuous: bool = False
    discrete_observation: bool = False
    reward: str = "lecture"
    arrival_reward: float = 50.0
    collision_reward: float = -1000.0
    gap_bins: tuple[float, ...] = (3.0, 6.0, 9.0, 12.0, 16.0, 20.0, 25.0, 30.0, 40.0)
    speed_bins: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0)
    lead_speed_bins: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 9.5)

    def __post_init__(self) -> None:
        positive = ("destination", "dt", "max_speed", "acceleration", "deceleration", "lead_cruise_speed")
        positive += ("lead_acceleration", "lead_deceleration", "sensor_range")
        for name in positive:
            setattr(self, name, real(name, getattr(self, name), low=0.0, low_open=True))
        for name in ("arrival_reward", "collision_reward"):
            setattr(self, name, real(name, getattr(self, name)))
        self.lead_brake_probability = real(
            "lead_brake_probability", self.lead_brake_probability, low=0.0, high=1.0
        )
        self.horizon = positive_int("horizon", self.horizon)
        self.continuous = boolean("continuous", self.continuous)
        self.discrete_observation = boolean("discrete_observation", self.discrete_observation)
        if self.max_speed <= self.lead_cruise_speed:
            raise ValueError(
                f"max_speed ({self.max_speed}) must exceed lead_cruise_speed ({self.lead_cruise_speed}): "
                "otherwise the ego can never catch up with the lead car"
            )
        for name, low, high in (
            ("initial_gap", 0.0, None),
            ("initial_speed", 0.0, self.max_speed),
            ("initial_lead_speed", 0.0, self.lead_cruise_speed),
        ):
            value = _reals(name, getattr(self, name))
            if (
                len(value) != 2
                or not value[0] <= value[1]
                or value[0] < low
                or (high is not None and value[1] > high)
            ):
                bound = f"[{low}, {high}]" if high is not None else f"[{low}, inf)"
                raise ValueError(
                    f"{name} must be a range (low, high) with low <= high inside {bound}, got {value}"
                )
            setattr(self, name, value)
        if self.initial_gap[0] == 0.0:
            raise ValueError("initial_gap must start above 0: a gap of 0 is a collision")
        if not isinstance(self.reward, str) or self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        for name in ("gap_bins", "speed_bins", "lead_speed_bins"):
            edges = _reals(name, getattr(self, name))
            if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"{name} must be a non-empty, strictly increasing sequence, got {edges}")
            setattr(self, name, edges)

    @property
    def num_bins(self) -> tuple[int, int, int]:
        """Bins of (ego speed, lead speed, gap) in the discrete observation."""
        return len(self.speed_bins) + 1, len(self.lead_speed_bins) + 1, len(self.gap_bins) + 1


def _reals(name: str, values: Any) -> tuple[float, ...]:
    """A sequence of finite real numbers as a tuple of floats; a TypeError or ValueError names ``name``."""
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}")
    return tuple(real(f"{name}[{i}]", value) for i, value in enumerate(values))


class CarDrivingCore(BatchedCore):
    """B cars on one road each, stepped together; the state is [B, 4] (see ``EGO_POSITION`` etc.)."""

    def __init__(self, config: CarDrivingConfig, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.config = config
        self.horizon = config.horizon
        if config.continuous:
            self.action_space = gym.spaces.Box(-config.deceleration, config.acceleration, (1,), np.float32)
        else:
            self.action_space = gym.spaces.Discrete(3)
        if config.discrete_observation:
            self.observation_space = gym.spaces.Discrete(int(np.prod(config.num_bins)))
        else:
            # Before termination the ego is short of the destination, so one step takes it at most
            # max_speed * dt beyond.
            high = [config.destination + config.max_speed * config.dt, config.max_speed]
            high += [config.sensor_range, config.lead_cruise_speed]
            self.observation_space = gym.spaces.Box(np.zeros(4, np.float32), np.array(high, np.float32))
        self._accelerations = torch.tensor(
            [-config.deceleration, 0.0, config.acceleration], device=self.device
        )
        # Starting states are uniform in these corners; the ego starts at 0, so the lead's
        # position is the drawn gap. Kept as tensors: autoreset draws starts every step.
        low, high = zip(config.initial_speed, config.initial_gap, config.initial_lead_speed, strict=True)
        self._start_low = torch.tensor([0.0, *low], device=self.device)
        self._start_high = torch.tensor([0.0, *high], device=self.device)
        self._gap_bins = torch.tensor(config.gap_bins, device=self.device)
        self._speed_bins = torch.tensor(config.speed_bins, device=self.device)
        self._lead_speed_bins = torch.tensor(config.lead_speed_bins, device=self.device)

    def reset(self, num_envs: int, generator: torch.Generator) -> torch.Tensor:
        unit = torch.rand(num_envs, 4, generator=generator, device=self.device)
        return self._start_low + (self._start_high - self._start_low) * unit

    def step(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TensorDict]:
        c = self.config
        if c.continuous:
            acceleration = action.reshape(-1).to(state.dtype).clamp(-c.deceleration, c.acceleration)
        else:
            acceleration = self._accelerations[action.reshape(-1)]
        brakes = (
            torch.rand(state.shape[0], generator=generator, device=self.device) < c.lead_brake_probability
        )
        lead_acceleration = torch.where(brakes, -c.lead_deceleration, c.lead_acceleration)

        # Semi-implicit Euler: speeds change first and each car covers the step at its new speed,
        # so within a step the gap changes linearly and hits zero exactly when it ends <= 0.
        speed = (state[:, EGO_SPEED] + acceleration * c.dt).clamp(0.0, c.max_speed)
        lead_speed = (state[:, LEAD_SPEED] + lead_acceleration * c.dt).clamp(0.0, c.lead_cruise_speed)
        position = state[:, EGO_POSITION] + speed * c.dt
        lead_position = state[:, LEAD_POSITION] + lead_speed * c.dt
        next_state = torch.stack([position, speed, lead_position, lead_speed], dim=1)

        collided = lead_position - position <= 0.0
        arrived = (position >= c.destination) & ~collided
        zero = torch.zeros_like(position)
        lecture_reward = torch.where(
            arrived, c.arrival_reward, torch.where(collided, c.collision_reward, zero)
        )
        if c.reward == "speed":
            reward = (speed - c.lead_cruise_speed).clamp(min=0.0) / (c.max_speed - c.lead_cruise_speed)
        else:
            reward = lecture_reward
        info = {"arrived": arrived, "collided": collided, "lecture_reward": lecture_reward}
        return next_state, reward, arrived | collided, info

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        c = self.config
        gap = (state[:, LEAD_POSITION] - state[:, EGO_POSITION]).clamp(0.0, c.sensor_range)
        if not c.discrete_observation:
            return torch.stack(
                [state[:, EGO_POSITION], state[:, EGO_SPEED], gap, state[:, LEAD_SPEED]], dim=1
            )
        # Bin i holds [edge[i-1], edge[i]); the flat index orders (ego speed, lead speed, gap).
        speed_bin = torch.searchsorted(self._speed_bins, state[:, EGO_SPEED].contiguous(), right=True)
        lead_bin = torch.searchsorted(self._lead_speed_bins, state[:, LEAD_SPEED].contiguous(), right=True)
        gap_bin = torch.searchsorted(self._gap_bins, gap.contiguous(), right=True)
        _, num_lead, num_gap = c.num_bins
        return (speed_bin * num_lead + lead_bin) * num_gap + gap_bin

    def render(self, state: torch.Tensor, mode: str) -> np.ndarray | str:
        position, speed, lead_position, lead_speed = (float(value) for value in state)
        if mode == "ansi":
            return self._render_ansi(position, speed, lead_position, lead_speed)
        if mode == "rgb_array":
            return self._render_rgb(position, lead_position)
        raise ValueError(f"render mode must be 'ansi' or 'rgb_array', got {mode!r}")

    def _render_ansi(self, position: float, speed: float, lead_position: float, lead_speed: float) -> str:
        width = 60
        cells = ["="] * width + ["|"]
        scale = width / self.config.destination

        def cell(x: float) -> int:
            return int(np.clip(x * scale, 0, width))

        cells[cell(lead_position)] = "L"
        cells[cell(position)] = "X" if lead_position - position <= 0 else "E"
        gap = lead_position - position
        status = f"ego {position:6.1f} m {speed:4.1f} m/s | gap {gap:6.1f} m | lead {lead_speed:4.1f} m/s"
        return f"{''.join(cells)} {status}"

    def _render_rgb(self, position: float, lead_position: float) -> np.ndarray:
        height, width, car_length = RGB_SHAPE[0], RGB_SHAPE[1], 4.5
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = _GRASS
        road_top, road_bottom = height // 4, 3 * height // 4
        frame[road_top:road_bottom] = _ROAD
        frame[height // 2 - 1 : height // 2 + 1, (np.arange(width) // 8) % 3 == 0] = _MARK  # lane dashes
        # The view spans a margin behind the start to a margin past the destination.
        left, right = -10.0, self.config.destination + 20.0

        def column(x: float) -> int:
            return int(round((x - left) / (right - left) * (width - 1)))

        flag = column(self.config.destination)
        for row in range(road_top, road_bottom, 4):
            # A chequered finish line two columns wide.
            shift = 2 * ((row - road_top) // 4 % 2)
            frame[row : row + 4, flag - 2 + shift : flag + shift] = _FLAG
        lane_top, lane_bottom = height // 2 + 3, road_bottom - 3
        for front, back, colour in (
            (position, position - car_length, _EGO),
            (lead_position + car_length, lead_position, _LEAD),
        ):
            start, stop = max(column(back), 0), min(column(front) + 1, width)
            if start < stop:
                frame[lane_top:lane_bottom, start:stop] = colour
        return frame


class CarDriving(CoreEnv):
    """The lecture's running example: drive a car to a destination without hitting the car ahead.

    ## Description
    An ego car and a lead car drive in one lane of a 1-D road. The ego starts at position 0 and
    must reach `destination` (200 m) within N = `horizon` (50) decision epochs of `dt` (1 s). The
    lead car starts 15–30 m ahead, cruises at up to `lead_cruise_speed` (10 m/s) and, in each step
    with probability `lead_brake_probability` (0.15), brakes at `lead_deceleration` (2 m/s²);
    otherwise it regains speed at `lead_acceleration` (1 m/s²). Every epoch the ego accelerates or
    decelerates. Speeds change first and both cars then cover the step at their new speed
    (semi-implicit Euler), so a collision within a step is exactly a gap <= 0 at its end.

    The task is non-trivial both ways: flat out (15 m/s) runs into the lead car, and crawling
    never reaches the destination in time. Following at a safe distance arrives in 20–30 epochs.

    ## Action space
    `Discrete(3)`: 0 decelerate (−`deceleration`, 3 m/s²), 1 keep speed, 2 accelerate
    (+`acceleration`, 2 m/s²). With `continuous=True`, `Box(-deceleration, acceleration, (1,))`:
    the acceleration in m/s². The ego's speed is kept within [0, `max_speed`].

    ## Observation space
    `Box(4)` float32:

    | index | observation | unit | bounds |
    | --- | --- | --- | --- |
    | 0 | ego position (front bumper), from the start | m | [0, destination + max_speed·dt] |
    | 1 | ego speed | m/s | [0, max_speed] |
    | 2 | gap, lead's rear bumper − ego's front bumper, clipped | m | [0, sensor_range] |
    | 3 | lead speed | m/s | [0, lead_cruise_speed] |

    With `discrete_observation=True`, `Discrete(S)`: the index of the bin of (ego speed, lead
    speed, gap) for tabular agents such as `agents.QLearning`; the bins are `speed_bins`,
    `lead_speed_bins` and `gap_bins` (inner edges; bin i is [edge[i−1], edge[i])), by default
    8 × 6 × 10 = 480 states, index `(speed_bin · 6 + lead_bin) · 10 + gap_bin`. The position is
    left out: the safe way to drive does not depend on it. The continuous state stays in the core.

    ## Rewards
    The lecture's r(x_{n+1}) by default: +50 (`arrival_reward`) on arriving at the destination,
    −1000 (`collision_reward`) on hitting the lead car, 0 otherwise; the return is the sum over
    the N epochs. With `reward="speed"` the reward is a misspecified proxy, the lecture's
    reward-alignment slide: every step pays (speed − lead_cruise_speed)⁺ / (max_speed −
    lead_cruise_speed) ∈ [0, 1]. Only a car faster than the traffic earns it, and that speed can
    only be kept up by closing in on the lead car, so maximising it teaches the car to crash.
    `info` always holds `arrived`, `collided` and `lecture_reward` (the lecture's reward).

    ## Starting state
    Ego at 0 m with speed uniform in `initial_speed` (0–3 m/s); gap uniform in `initial_gap`
    (15–30 m); lead speed uniform in `initial_lead_speed` (6–10 m/s).

    ## Episode end
    Terminates on arriving (ego position >= destination) or colliding (gap <= 0; a collision
    wins if both happen in one step). Truncates after `horizon` epochs (by the `TimeLimit` of
    `gym.make`, registered with `max_episode_steps=50`, unless `horizon` is given).
    After the episode has terminated or been truncated, `step()` raises a RuntimeError until `reset()`.

    ## Arguments
    Every field of :class:`CarDrivingConfig` is a keyword argument (dynamics, starting ranges,
    `continuous`, `discrete_observation`, `reward`, bins), plus:
    - `render_mode`: `"rgb_array"` (a `RGB_SHAPE` = 64 × 512 × 3 uint8 image of the road, both
      cars and the chequered destination; no display needed) or `"ansi"` (a one-line road: E the ego,
      L the lead car, X a crash, | the destination, then positions and speeds), or None.
    - `device`: where the batched core runs (CPU by default for the single env).

    ## Example
    >>> import gymnasium as gym
    >>> import rlhf_envs
    >>> env = gym.make("rlhf_envs/CarDriving-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape  # ego position, ego speed, gap, lead speed
    (4,)
    >>> obs, reward, terminated, truncated, info = env.step(2)  # accelerate
    >>> sorted(info)
    ['arrived', 'collided', 'lecture_reward']
    >>> env = gym.make("rlhf_envs/CarDriving-v0", continuous=True, reward="speed")
    >>> env.action_space
    Box(-3.0, 2.0, (1,), float32)

    ## Version history
    - v0: first version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self, render_mode: str | None = None, device: str | torch.device = "cpu", **config: Any
    ) -> None:
        self.config = CarDrivingConfig(**config)
        super().__init__(CarDrivingCore(self.config, device), render_mode=render_mode)


class CarDrivingVectorEnv(CoreVectorEnv):
    """``num_envs`` cars of :class:`CarDriving` on one device; see :class:`CoreVectorEnv`.

    Takes the same keyword arguments as :class:`CarDriving` (the fields of
    :class:`CarDrivingConfig`), ``as_tensors``, ``device`` (by default CUDA when present for tensors,
    the CPU for NumPy in and out: see :func:`~rlhf_envs.envs.batched.default_vector_device`),
    ``autoreset_mode`` (NEXT_STEP by default) and ``max_episode_steps`` (what ``gym.make_vec`` passes:
    the horizon unless ``horizon`` is given).

    >>> import gymnasium as gym
    >>> import torch
    >>> import rlhf_envs
    >>> envs = gym.make_vec(
    ...     "rlhf_envs/CarDriving-v0", num_envs=256, vectorization_mode="vector_entry_point", as_tensors=True
    ... )
    >>> obs, info = envs.reset(seed=0)
    >>> obs.shape, obs.device == envs.device  # tensors stay on the device (CUDA when present)
    (torch.Size([256, 4]), True)
    >>> obs, rewards, terminated, truncated, info = envs.step(torch.full((256,), 1, device=envs.device))
    >>> rewards.dtype
    torch.float32
    """

    metadata = {**CoreVectorEnv.metadata, "render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        num_envs: int = 1,
        render_mode: str | None = None,
        device: str | torch.device | None = None,
        as_tensors: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        max_episode_steps: int | None = None,
        **config: Any,
    ) -> None:
        horizon = vector_horizon(config.pop("horizon", None), max_episode_steps, CarDrivingConfig.horizon)
        self.config = CarDrivingConfig(horizon=horizon, **config)
        core = CarDrivingCore(self.config, default_vector_device(device, as_tensors))
        super().__init__(core, num_envs, as_tensors, render_mode, autoreset_mode)


__all__ = ["CarDriving", "CarDrivingConfig", "CarDrivingCore", "CarDrivingVectorEnv", "RGB_SHAPE"]
