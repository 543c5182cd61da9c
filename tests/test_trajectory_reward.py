"""TrajectoryRewardModel: Bradley–Terry fitting on segment comparisons, and the reward-model protocol.

Each test runs on the ``device`` fixture: the CPU, and CUDA when present.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlhf_envs.device import resolve_device
from rlhf_envs.preferences import Comparison, PreferenceStore, Segment, uniform_pairs
from rlhf_envs.preferences.labelers import SyntheticLabeler
from rlhf_envs.rewards import LearnedReward
from rlhf_envs.rewards.trajectory import TrajectoryRewardConfig, TrajectoryRewardModel

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (4,))
ACTION_SPACE = gym.spaces.Discrete(3)
OBS_WEIGHTS = np.array([1.5, -1.0, 0.5, 0.0])
ACTION_WEIGHTS = np.array([0.5, -0.5, 0.0])


def linear_reward(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    return obs @ OBS_WEIGHTS + ACTION_WEIGHTS[actions]


def random_segments(count: int, rng: np.random.Generator, length: int = 10) -> list[Segment]:
    segments = []
    for _ in range(count):
        obs = rng.uniform(-1, 1, size=(length, 4)).astype(np.float32)
        actions = rng.integers(3, size=length)
        segments.append(Segment(obs, actions, obs, linear_reward(obs, actions)))
    return segments


def labelled(segments: list[Segment], count: int, rng: np.random.Generator, seed: int) -> list[Comparison]:
    labeler = SyntheticLabeler(beta=5.0, seed=seed)
    return [
        Comparison(segments[i], segments[j], labeler(segments[i], segments[j]))
        for i, j in uniform_pairs(len(segments), count, rng)
    ]


def agreement(model: TrajectoryRewardModel, comparisons: list[Comparison]) -> float:
    """Share of pairs on which the model ranks the segments as their true returns do."""
    a = [c.segment_a for c in comparisons]
    b = [c.segment_b for c in comparisons]
    predicted = model.preference_probability(a, b) > 0.5
    truth = np.array([x.true_return > y.true_return for x, y in zip(a, b, strict=True)])
    return float(np.mean(predicted == truth))


def test_fit_on_synthetic_labels_recovers_a_linear_reward(device) -> None:
    rng = np.random.default_rng(0)
    model = TrajectoryRewardModel(
        OBS_SPACE, ACTION_SPACE, TrajectoryRewardConfig(epochs=30, seed=0, device=device)
    )
    result = model.fit(labelled(random_segments(300, rng), 500, rng, seed=1))
    assert result.num_train == 400 and result.num_val == 100
    assert result.val_accuracy >= 0.9  # the labels themselves are noisy (beta = 5)
    fresh = random_segments(200, rng)
    assert agreement(model, labelled(fresh, 1000, rng, seed=2)) >= 0.95
    # The learned per-step reward is, up to normalization, the true one.
    obs = rng.uniform(-1, 1, size=(2000, 4)).astype(np.float32)
    actions = rng.integers(3, size=2000)
    assert np.corrcoef(model(obs, actions, obs), linear_reward(obs, actions))[0, 1] > 0.95


def test_untrained_model_is_not_already_in_agreement(device) -> None:
    rng = np.random.default_rng(0)
    model = TrajectoryRewardModel(OBS_SPACE, ACTION_SPACE, TrajectoryRewardConfig(device=device))
    assert agreement(model, labelled(random_segments(100, rng), 300, rng, seed=2)) < 0.8


def test_output_is_normalized_per_member(device) -> None:
    rng = np.random.default_rng(3)
    segments = random_segments(60, rng)
    config = TrajectoryRewardConfig(epochs=3, reward_std=2.0, holdout_fraction=0.0, device=device)
    model = TrajectoryRewardModel(OBS_SPACE, ACTION_SPACE, config)
    comparisons = labelled(segments, 80, rng, seed=4)
    result = model.fit(comparisons)
    assert result.val_accuracy is None and result.num_val == 0
    obs = np.concatenate([s.obs for c in comparisons for s in (c.segment_a, c.segment_b)])
    actions = np.concatenate([s.actions for c in comparisons for s in (c.segment_a, c.segment_b)])
    with torch.no_grad():
        members = model.normalized_rewards(model.encode(torch.as_tensor(obs), torch.as_tensor(actions)))
    np.testing.assert_allclose(members.mean(dim=1).cpu().numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(members.std(dim=1).cpu().numpy(), 2.0, rtol=1e-3)


def test_reward_model_protocol_numpy_torch_single_and_learned_reward(device) -> None:
    config = TrajectoryRewardConfig(device=device)
    model = TrajectoryRewardModel(gym.spaces.Box(-1.0, 1.0, (2, 3)), gym.spaces.Box(-1.0, 1.0, (2,)), config)
    obs, actions = np.zeros((5, 2, 3), np.float32), np.zeros((5, 2), np.float32)
    out = model(obs, actions, obs)
    assert isinstance(out, np.ndarray) and out.shape == (5,)
    out_t = model(torch.as_tensor(obs, device=device), torch.as_tensor(actions), None)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (5,) and out_t.device == resolve_device(device)
    assert model(obs[0], actions[0], obs[0]).shape == ()
    env = LearnedReward(
        gym.make("CartPole-v1"),
        TrajectoryRewardModel(gym.make("CartPole-v1").observation_space, gym.spaces.Discrete(2), config),
    )
    env.reset(seed=0)
    _, reward, _, _, info = env.step(1)
    assert info["true_reward"] == 1.0 and reward != 1.0


def test_discrete_observations_ties_and_training_from_a_store(tmp_path, device) -> None:
    model = TrajectoryRewardModel(
        gym.spaces.Discrete(4), ACTION_SPACE, TrajectoryRewardConfig(epochs=40, device=device)
    )
    good = Segment(np.array([3, 3]), np.array([0, 0]), np.array([3, 3]), np.array([1.0, 1.0]))
    bad = Segment(np.array([0, 1]), np.array([1, 1]), np.array([1, 2]), np.array([0.0, 0.0]))
    store = PreferenceStore(tmp_path / "prefs.jsonl")
    for _ in range(5):
        store.add(good, bad, 1)
        store.add(bad, good, 0)
        store.add(bad, bad, 0.5)
    result = model.fit(PreferenceStore(store.path))
    assert model.preference_probability([good], [bad])[0] > 0.9
    assert result.val_loss is not None and np.isfinite(result.train_loss)
    assert model.member_returns([good, bad, good]).shape == (3, 3)


def test_bad_arguments_are_rejected(device) -> None:
    with pytest.raises(TypeError, match="action_space must be a Box or Discrete"):
        TrajectoryRewardModel(OBS_SPACE, gym.spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="holdout_fraction"):
        TrajectoryRewardConfig(holdout_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2 comparisons"):
        TrajectoryRewardModel(OBS_SPACE, ACTION_SPACE, TrajectoryRewardConfig(device=device)).fit([])


def test_terminated_segments_keep_the_zero_level(device) -> None:
    # Cruising pays 0 per step; a crash (obs[1] = 1) pays -10 and ends the episode, after which the
    # env pays nothing. A mean-zero shift would move that level: the output keeps the raw zero.
    rng = np.random.default_rng(0)

    def cruise() -> Segment:
        obs = np.stack([rng.uniform(-1, 1, 5), np.zeros(5)], axis=1)
        return Segment(obs, rng.integers(2, size=5), obs, np.zeros(5))

    def crash() -> Segment:
        obs = np.array([[rng.uniform(-1, 1), 0.0], [rng.uniform(-1, 1), 1.0]])
        return Segment(obs, rng.integers(2, size=2), obs, np.array([0.0, -10.0]), terminated=True)

    segments = [cruise() for _ in range(40)] + [crash() for _ in range(40)]
    model = TrajectoryRewardModel(
        gym.spaces.Box(-1.0, 1.0, (2,)), gym.spaces.Discrete(2), TrajectoryRewardConfig(device=device)
    )
    model.fit(labelled(segments, 300, rng, seed=0))
    assert torch.all(model.offset == 0) and torch.all(model.scale != 1)
    assert (
        model.preference_probability([cruise() for _ in range(20)], [crash() for _ in range(20)]).min() > 0.9
    )
    crashing = model(np.array([[0.0, 1.0]] * 2), np.array([0, 1]), None)
    cruising = model(
        np.stack([rng.uniform(-1, 1, 200), np.zeros(200)], axis=1), rng.integers(2, size=200), None
    )
    assert crashing.max() < cruising.min()
