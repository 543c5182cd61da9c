"""HalfCheetah with the lecture's reward: Gymnasium's MuJoCo ``HalfCheetah-v5`` with a selectable reward."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import EzPickle

from rlhf_envs.envs.arguments import positive_int, real
from rlhf_envs.envs.batched import truncates_itself

# Without a display MuJoCo's default GLFW backend cannot render; EGL renders headless (Mesa's software
# renderer on a CPU machine, the NVIDIA driver on a GPU one). An explicit MUJOCO_GL is left as it is.
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")


def _check_display(render_mode: str | None) -> None:
    """``render_mode="human"`` opens a window: without a display MuJoCo's viewer would abort the
    interpreter, so say so first."""
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    offscreen = os.environ.get("MUJOCO_GL") in ("egl", "osmesa")
    if render_mode == "human" and (headless or offscreen):
        why = (
            "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
            if headless
            else "MUJOCO_GL renders off-screen"
        )
        raise ValueError(
            f"render_mode='human' opens a window, but there is {why}; use render_mode='rgb_array' "
            "and save or show the frames"
        )


RewardName = Literal["lecture", "forward"]
REWARDS: tuple[str, ...] = ("lecture", "forward")


class HalfCheetah(HalfCheetahEnv):
    r"""Gymnasium's MuJoCo ``HalfCheetah-v5`` with the RLHF lecture's reward.

    ## Description
    The 2-D cheetah of Gymnasium's ``HalfCheetah-v5`` (same model, physics, observations and actions; the
    simulation is Gymnasium's, not re-implemented). Only the reward and the episode end change, to the
    lecture's: run out of the right side of the frame early, and stay upright meanwhile.

    ## Action Space
    ``Box(-1, 1, (6,), float32)``: torques on the back and front thigh, shin and foot joints.

    ## Observation Space
    ``Box(-inf, inf, (17,), float64)``: joint positions without the root's x (8), then joint velocities (9),
    as in ``HalfCheetah-v5`` (18 with ``exclude_current_positions_from_observation=False``).

    ## Rewards
    With ``reward="lecture"`` (default), at step :math:`n` (1-based: the first ``step()`` after ``reset()``
    is :math:`n = 1`, the last of a full episode is :math:`n = N`, ``N = horizon``):

    - :math:`+10 (N - n)` if the cheetah exits the right side of the frame at step :math:`n`, i.e. its root
      x position (``info["x_position"]``, about 0 at the start) exceeds ``frame_width / 2``;
      the episode then terminates;
    - otherwise :math:`+1` if it is upright: the torso's pitch (joint ``rooty``, wrapped to
      :math:`(-\pi, \pi]`) is within ``max_torso_angle`` of level, so a cheetah on its back gets nothing;
    - otherwise 0.

    The frame is the x interval ``[-frame_width / 2, frame_width / 2]`` centred on the start; only leaving
    it to the right counts (leaving to the left neither pays nor ends the episode). Rendering uses
    Gymnasium's cameras, so the frame is a distance, not the picture's edge: the default camera stays where
    the cheetah started (a running cheetah leaves the picture within a second or two), ``camera_name="track"``
    follows it from the side.

    With ``reward="forward"`` the reward is Gymnasium's own: forward velocity minus the control cost.

    A reward model (any :class:`~rlhf_envs.rewards.ControlRewardModel`) is given through ``gym.make``:
    ``gym.make("rlhf_envs/HalfCheetah-v0", reward=model)`` wraps this env (lecture reward) in
    :class:`~rlhf_envs.rewards.LearnedReward`, so the model's output is the reward and the lecture reward
    is ``info["true_reward"]``. Any other env or reward choice composes the same way:
    ``LearnedReward(gym.make("rlhf_envs/HalfCheetah-v0", reward="forward"), model)``.

    Whatever the reward, ``info`` holds its components so any reward can be scored against them:
    ``exited`` (bool), ``upright`` (bool), ``x_position`` (m), ``step`` (:math:`n`), ``lecture_reward``,
    ``forward_reward`` (Gymnasium's reward, ``reward_forward + reward_ctrl``), and Gymnasium's own
    ``x_velocity``, ``reward_forward`` and ``reward_ctrl``.

    ## Starting State
    As ``HalfCheetah-v5``: joint positions uniform in ``±reset_noise_scale`` around the rest pose, velocities
    normal with standard deviation ``reset_noise_scale``.

    ## Episode End
    - Termination: with ``reward="lecture"``, when the cheetah exits the right side of the frame. The other
      rewards never terminate (``info["exited"]`` still reports the exit).
    - Truncation: after ``horizon`` = :math:`N` steps, once. ``gym.make("rlhf_envs/HalfCheetah-v0")`` leaves
      it to its ``TimeLimit``, registered with ``max_episode_steps=1000``, the default :math:`N`; with
      ``horizon=`` given (to ``gym.make`` or the class) the env truncates at it by itself. Change :math:`N`
      with ``horizon=``: a ``max_episode_steps`` given to ``gym.make`` alone changes the ``TimeLimit``,
      not the :math:`N` of the exit bonus (the env cannot see it). The reward is defined for
      :math:`n \le N` only: a step past :math:`N` raises, like any step after the episode's end.
    - After the episode has terminated or been truncated, ``step()`` raises a ``RuntimeError`` until
      ``reset()``.

    ## Arguments
    ```python
    env = gym.make("rlhf_envs/HalfCheetah-v0", reward="lecture", horizon=1000, frame_width=10.0,
                   max_torso_angle=math.pi / 3, render_mode="rgb_array", width=480, height=480)
    ```
    - ``reward``: ``"lecture"``, ``"forward"``, or (through ``gym.make``) a reward model.
    - ``horizon``: :math:`N`, the number of steps before truncation (1000).
    - ``frame_width``: width in metres of the frame centred on the start (right edge at ``frame_width / 2``).
    - ``max_torso_angle``: largest torso pitch, in radians, still counted as upright, in ``(0, pi)``.
    - Every other keyword goes to ``HalfCheetah-v5`` unchanged (``render_mode``, ``width``, ``height``,
      ``ctrl_cost_weight``, ``reset_noise_scale``, ``frame_skip``, ...). ``render_mode="rgb_array"`` returns
      ``(height, width, 3)`` uint8 images (480 x 480 by default), headless via EGL when there is no display.

    ## Example
    >>> import gymnasium as gym
    >>> import rlhf_envs
    >>> env = gym.make("rlhf_envs/HalfCheetah-v0", horizon=100)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> reward == (1.0 if info["upright"] else 0.0)  # not out of the frame yet: the upright bonus
    True
    >>> env = gym.make("rlhf_envs/HalfCheetah-v0", reward=lambda obs, action, next_obs: next_obs[8])
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> bool(reward == obs[8]), "true_reward" in info  # the model's reward; the lecture's kept in info
    (True, True)

    ## Version History
    - v0: initial version, on ``HalfCheetah-v5``.
    """

    #: The lecture's return is an undiscounted sum over N steps: the env defines no discount of its own.
    gamma: float | None = None

    def __init__(
        self,
        reward: RewardName = "lecture",
        horizon: int = 1000,
        frame_width: float = 10.0,
        max_torso_angle: float = math.pi / 3,
        **kwargs: Any,
    ) -> None:
        if not isinstance(reward, str):
            raise TypeError(
                f"HalfCheetah(reward=...) takes one of {REWARDS}; pass a reward model through "
                "gym.make('rlhf_envs/HalfCheetah-v0', reward=model) or LearnedReward(env, model)"
            )
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS} or a reward model, got {reward!r}")
        horizon = positive_int("horizon", horizon)
        frame_width = real("frame_width", frame_width, low=0.0, low_open=True)
        max_torso_angle = real(
            "max_torso_angle", max_torso_angle, low=0.0, high=math.pi, low_open=True, high_open=True
        )
        _check_display(kwargs.get("render_mode"))
        super().__init__(**kwargs)
        # HalfCheetahEnv recorded its own positional arguments for pickling and copying; record ours instead.
        EzPickle.__init__(
            self,
            reward=reward,
            horizon=horizon,
            frame_width=frame_width,
            max_torso_angle=max_torso_angle,
            **kwargs,
        )
        self.reward_name = reward
        self.horizon = int(horizon)
        self.frame_width = float(frame_width)
        self.max_torso_angle = float(max_torso_angle)
        self._exit_x = self.frame_width / 2
        self._lecture = reward == "lecture"
        # Looked up by joint name so that a custom `xml_file` with another joint order still works.
        try:
            self._x_index = int(self.model.joint("rootx").qposadr[0])
            self._pitch_index = int(self.model.joint("rooty").qposadr[0])
        except KeyError as error:
            raise ValueError(f"the MuJoCo model needs the joints 'rootx' and 'rooty': {error}") from None
        self._elapsed_steps = 0
        self._ended = False  # the episode terminated or was truncated: step() waits for reset()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        self._elapsed_steps = 0
        self._ended = False
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._ended:
            if self._elapsed_steps >= self.horizon:
                raise RuntimeError(
                    f"the episode reached its horizon N={self.horizon}: call reset() before step() "
                    "(for longer episodes give horizon= to gym.make or HalfCheetah)"
                )
            raise RuntimeError("the episode has ended (terminated or truncated): call reset() before step()")
        obs, forward_reward, _, _, info = super().step(self._controls(action))
        self._elapsed_steps += 1
        n = self._elapsed_steps
        qpos = self.data.qpos
        x = float(qpos[self._x_index])
        exited = x > self._exit_x
        # The hinge angle is unbounded: wrap it so that a cheetah that rolled over fully counts as upright.
        pitch = (float(qpos[self._pitch_index]) + math.pi) % (2 * math.pi) - math.pi
        upright = abs(pitch) <= self.max_torso_angle
        lecture_reward = 10.0 * (self.horizon - n) if exited else (1.0 if upright else 0.0)
        forward_reward = float(forward_reward)
        info["exited"] = exited
        info["upright"] = upright
        info["x_position"] = x
        info["step"] = n
        info["lecture_reward"] = lecture_reward
        info["forward_reward"] = forward_reward
        terminated, truncated = self._lecture and exited, truncates_itself(self) and n >= self.horizon
        self._ended = terminated or n >= self.horizon  # past N the lecture reward is undefined
        return obs, lecture_reward if self._lecture else forward_reward, terminated, truncated, info

    def _controls(self, action: Any) -> np.ndarray:
        """``action`` as the space's float32 controls, whatever numbers it came as (NumPy, torch or Python).

        Bools, complex numbers, another shape, NaN and infinities are refused with a ValueError or TypeError
        naming the action; finite values outside [-1, 1] are clipped by MuJoCo, as in ``HalfCheetah-v5``.
        """
        if isinstance(action, torch.Tensor):
            if action.dtype == torch.bool or action.is_complex():
                raise TypeError(f"action must be real numbers, got a {action.dtype} tensor")
            action = action.detach().cpu().to(torch.float64).numpy()
        array = np.asarray(action)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"action must be real numbers, got dtype {array.dtype}: {action!r}")
        if array.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"action must be finite, got {action!r}")
        return array.astype(self.action_space.dtype)


@dataclass
class EpisodeReport:
    """One HalfCheetah episode scored by both rewards, whichever reward the env paid.

    ``exit_step`` is the step :math:`n` at which the cheetah first left the frame to the right (``None``
    if it never did); under the lecture's reward the episode ends there, under the forward reward it
    goes on. ``frames`` holds the first renderings asked for.
    """

    lecture_return: float
    forward_return: float
    steps: int
    exit_step: int | None
    final_x: float
    frames: list[np.ndarray]

    @property
    def exited(self) -> bool:
        return self.exit_step is not None


def run_episode(
    env: gym.Env, policy: Callable[[np.ndarray], Any], seed: int | None = None, frames: int = 0
) -> EpisodeReport:
    """Run ``policy`` (observation -> action) for one episode of a (wrapped) HalfCheetah and score it.

    Both returns are read from ``info`` (``lecture_reward``, ``forward_reward``), so the report is the
    same whether the env pays the lecture's, the forward or a learned reward. ``frames`` > 0 keeps that
    many ``env.render()`` images from the start (the env needs ``render_mode="rgb_array"``).
    """
    if frames and env.render_mode != "rgb_array":
        raise ValueError(f"frames > 0 needs render_mode='rgb_array', the env has {env.render_mode!r}")
    obs, _ = env.reset(seed=seed)
    images = [env.render()] if frames else []
    lecture = forward = 0.0
    exit_step, done, info = None, False, {}
    while not done:
        obs, _, terminated, truncated, info = env.step(policy(obs))
        lecture += float(info["lecture_reward"])
        forward += float(info["forward_reward"])
        if exit_step is None and info["exited"]:
            exit_step = int(info["step"])
        if len(images) < frames:
            images.append(env.render())
        done = terminated or truncated
    return EpisodeReport(lecture, forward, int(info["step"]), exit_step, float(info["x_position"]), images)
