"""LearnedReward and VectorLearnedReward: any reward model into any env, the true reward kept in info."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

import rlhf_envs
from rlhf_envs.rewards import LearnedReward, VectorLearnedReward


class CountingModel:
    """Reward = next_obs[..., 0] - obs[..., 0] (cart displacement), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, obs: Any, action: Any, next_obs: Any) -> Any:
        self.calls += 1
        return next_obs[..., 0] - obs[..., 0]


def test_single_env_reward_replaced_and_true_reward_kept() -> None:
    model = CountingModel()
    env = LearnedReward(gym.make("CartPole-v1"), model)
    obs, _ = env.reset(seed=0)
    for step in range(1, 11):
        next_obs, reward, terminated, _, info = env.step(step % 2)
        assert isinstance(reward, float) and reward == pytest.approx(next_obs[0] - obs[0])
        assert info["true_reward"] == 1.0 and model.calls == step
        obs = next_obs
        if terminated:
            break
    assert rlhf_envs.LearnedReward is LearnedReward


def test_a_torch_module_plugs_in_and_is_called_without_gradients() -> None:
    class LinearReward(torch.nn.Module):
        """r(obs, action, next_obs) = w · next_obs + b; records whether autograd was on when called."""

        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.grad_enabled: list[bool] = []

        def forward(self, obs: Any, action: Any, next_obs: Any) -> torch.Tensor:
            self.grad_enabled.append(torch.is_grad_enabled())
            return self.layer(torch.as_tensor(next_obs, dtype=torch.float32)).squeeze(-1)

    model = LinearReward()
    env = LearnedReward(gym.make("CartPole-v1"), model)
    env.reset(seed=0)
    for action in (0, 1, 1):
        next_obs, reward, _, _, _ = env.step(action)
        with torch.no_grad():
            expected = model.layer(torch.as_tensor(next_obs, dtype=torch.float32))
        assert isinstance(reward, float) and reward == pytest.approx(float(expected))
    assert model.grad_enabled == [False, False, False]  # one call per step, never building a graph


@pytest.mark.parametrize(
    "output",
    [0.5, 2, np.float32(0.5), np.array([0.5]), torch.tensor(0.5), torch.tensor([0.5], requires_grad=True)],
    ids=["float", "int", "np-scalar", "np-(1,)", "torch-()", "torch-(1,)-grad"],
)
def test_accepted_scalar_outputs_become_floats(output: Any) -> None:
    env = LearnedReward(gym.make("CartPole-v1"), lambda obs, action, next_obs: output)
    env.reset(seed=0)
    reward = env.step(0)[1]
    assert isinstance(reward, float) and reward == (2.0 if isinstance(output, int) else 0.5)


@pytest.mark.parametrize(
    ("output", "error", "message"),
    [
        (float("nan"), ValueError, "NaN"),
        (torch.tensor([float("nan")]), ValueError, "NaN"),
        (np.inf, ValueError, "infinity"),
        (np.zeros(2), ValueError, "shape"),
        (torch.zeros(1, 1), ValueError, "shape"),
        ("high", TypeError, "not numeric"),
        (True, TypeError, "real number"),
    ],
)
def test_bad_outputs_raise_and_say_why(output: Any, error: type[Exception], message: str) -> None:
    env = LearnedReward(gym.make("CartPole-v1"), lambda obs, action, next_obs: output)
    env.reset(seed=0)
    with pytest.raises(error, match=message):
        env.step(0)


def test_misuse_is_refused() -> None:
    with pytest.raises(TypeError, match="callable"):
        LearnedReward(gym.make("CartPole-v1"), reward_model=1.0)
    with pytest.raises(TypeError, match="VectorLearnedReward"):
        LearnedReward(gym.make_vec("CartPole-v1", num_envs=2), CountingModel())
    with pytest.raises(TypeError, match="LearnedReward"):
        VectorLearnedReward(gym.make("CartPole-v1"), CountingModel())
    with pytest.raises(gym.error.ResetNeeded):
        LearnedReward(gym.make("CartPole-v1"), CountingModel()).step(0)


def test_same_step_autoreset_scores_the_real_last_observation() -> None:
    def next_position(obs: Any, action: Any, next_obs: Any) -> Any:
        return next_obs[:, 0]

    same_step = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1")] * 2, autoreset_mode=AutoresetMode.SAME_STEP
    )
    env = VectorLearnedReward(same_step, next_position)
    env.reset(seed=0)
    ended_once = False
    for _ in range(60):
        next_obs, reward, terminated, truncated, info = env.step(np.zeros(2, dtype=np.int64))
        for i in np.flatnonzero(terminated | truncated):
            ended_once = True
            assert reward[i] == pytest.approx(info["final_obs"][i][0])
            assert reward[i] != pytest.approx(next_obs[i, 0])
    assert ended_once


def test_same_step_autoreset_on_a_batched_core_keeps_tensors() -> None:
    from rlhf_envs.envs.tabular import TabularMDPVectorEnv

    env = TabularMDPVectorEnv(
        num_envs=4, horizon=2, device="cpu", as_tensors=True, autoreset_mode=AutoresetMode.SAME_STEP
    )
    env = VectorLearnedReward(env, lambda obs, action, next_obs: next_obs.float())
    env.reset(seed=0)
    env.step(torch.ones(4, dtype=torch.long))
    next_obs, reward, _, truncated, info = env.step(torch.ones(4, dtype=torch.long))
    assert truncated.all() and isinstance(reward, torch.Tensor)
    torch.testing.assert_close(reward, info["final_obs"].float())
    assert (next_obs == 0).all() and (reward > 0).all()


def test_vector_numpy_env_one_call_per_step_and_zero_on_autoreset() -> None:
    model = CountingModel()
    env = VectorLearnedReward(gym.make_vec("CartPole-v1", num_envs=3), model)
    obs, _ = env.reset(seed=0)
    ended = np.zeros(3, dtype=bool)
    saw_autoreset = False
    for step in range(1, 80):
        actions = np.full(3, step % 2)  # alternating pushes keep some poles up, others fall early
        next_obs, reward, terminated, truncated, info = env.step(actions)
        expected = np.where(ended, 0.0, next_obs[:, 0] - obs[:, 0])
        assert isinstance(reward, np.ndarray) and reward.shape == (3,) and model.calls == step
        np.testing.assert_allclose(reward, expected, rtol=1e-6)
        np.testing.assert_array_equal(info["true_reward"], np.where(ended, 0.0, 1.0))
        saw_autoreset |= bool(ended.any())
        ended = terminated | truncated
        obs = next_obs
    assert saw_autoreset


class TorchCounterEnv(VectorEnv):
    """A batched torch env: the state counts up by the action; episode i ends when its count reaches i + 2."""

    def __init__(self, num_envs: int = 3) -> None:
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0, np.inf, (1,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self.limit = torch.arange(num_envs) + 2.0
        self.state = torch.zeros(num_envs, 1)
        self.done = torch.zeros(num_envs, dtype=torch.bool)

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[torch.Tensor, dict]:
        self.state = torch.zeros(self.num_envs, 1)
        self.done = torch.zeros(self.num_envs, dtype=torch.bool)
        return self.state.clone(), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        moved = torch.where(self.done, 0.0, actions.float())
        self.state = torch.where(self.done[:, None], 0.0, self.state + moved[:, None])
        reward = torch.where(self.done, 0.0, -moved)
        terminated = ~self.done & (self.state[:, 0] >= self.limit)
        self.done = terminated
        return self.state.clone(), reward, terminated, torch.zeros_like(terminated), {}


def test_vector_torch_env_keeps_tensors_and_masks_autoreset() -> None:
    model = CountingModel()
    env = VectorLearnedReward(TorchCounterEnv(3), model)
    env.reset()
    ones = torch.ones(3, dtype=torch.long)
    rewards, true_rewards = [], []
    for _ in range(4):
        _, reward, _, _, info = env.step(ones)
        assert isinstance(reward, torch.Tensor) and reward.dtype == torch.float32
        rewards.append(reward)
        true_rewards.append(info["true_reward"])
    # env 0 ends at step 2 and is reset at step 3; env 1 ends at step 3 and is reset at step 4
    assert torch.stack(rewards).tolist() == [[1, 1, 1], [1, 1, 1], [0, 1, 1], [1, 0, 1]]
    assert torch.stack(true_rewards).tolist() == [[-1, -1, -1], [-1, -1, -1], [0, -1, -1], [-1, 0, -1]]
    assert model.calls == 4


def test_vector_wrong_shape_raises() -> None:
    env = VectorLearnedReward(TorchCounterEnv(3), lambda obs, action, next_obs: next_obs)  # [3, 1], not [3]
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(3, 1\).*expected \(3,\)"):
        env.step(torch.ones(3, dtype=torch.long))
