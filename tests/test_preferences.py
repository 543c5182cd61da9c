"""Segments, pairs, labelers and the crash-safe preference stores."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

from rlhf_envs.preferences import (
    JsonlStore,
    PreferenceFileError,
    PreferenceStore,
    Segment,
    collect_segments,
    cut_segments,
    disagreement_pairs,
    uniform_pairs,
)
from rlhf_envs.preferences.labelers import HumanLabeler, SyntheticLabeler
from rlhf_envs.preferences.trainer import PreferenceConfig, PreferenceTrainer, label_schedule
from rlhf_envs.rewards import LearnedReward, TrajectoryRewardConfig, TrajectoryRewardModel


def make_segment(
    seed: int, length: int = 4, frames: np.ndarray | None = None, terminated: bool = False
) -> Segment:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(length + 1, 3)).astype(np.float32)
    return Segment(
        obs[:-1], rng.integers(3, size=length), obs[1:], rng.normal(size=length), frames, terminated
    )


# -- segments and pairs ---------------------------------------------------------------------------
def test_cut_segments_never_cross_episode_ends_and_keep_short_tails() -> None:
    steps = np.arange(10)
    ends = np.zeros(10, dtype=bool)
    ends[4] = True  # episode 1 is steps 0..4, episode 2 is 5..9
    pieces = cut_segments(steps, steps, steps + 1, steps * 1.0, 3, episode_ends=ends, min_length=1)
    assert [p.obs.tolist() for p in pieces] == [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]
    assert [p.next_obs.tolist() for p in pieces][1] == [4, 5]
    full = cut_segments(steps, steps, steps, steps * 1.0, 3, episode_ends=ends)
    assert [p.obs.tolist() for p in full] == [[0, 1, 2], [5, 6, 7]]
    # A piece that ends in a termination is kept however short, and says so.
    terminated = np.zeros(10, dtype=bool)
    terminated[[4, 5]] = True
    crashed = cut_segments(steps, steps, steps, steps * 1.0, 3, terminated=terminated)
    assert [(p.obs.tolist(), p.terminated) for p in crashed] == [
        ([0, 1, 2], False),
        ([3, 4], True),
        ([5], True),
        ([6, 7, 8], False),
    ]
    with pytest.raises(ValueError, match="min_length"):
        cut_segments(steps, steps, steps, steps * 1.0, 3, min_length=4)


def test_segment_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="actions must have 3 rows"):
        Segment(np.zeros((3, 2)), np.zeros(2), np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        Segment(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)), np.zeros(0))


def test_collect_segments_splits_episodes_and_reads_true_reward_from_info() -> None:
    class Halved(gym.Wrapper):
        """Reports half the reward, the full one as the true reward."""

        def step(self, action):  # noqa: ANN001, ANN201
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, reward / 2, terminated, truncated, info | {"true_reward": reward}

    env = Halved(gym.make("CartPole-v1"))
    segments = collect_segments(env, None, num_steps=200, k=25, seed=0, min_length=1)
    assert sum(len(s) for s in segments) == 200
    assert all(len(s) <= 25 for s in segments)
    assert all(np.all(s.rewards == 1.0) for s in segments)  # CartPole pays 1 per step, not 0.5
    # Random CartPole episodes last ~20 steps, so episode ends must have cut some segments short.
    assert any(len(s) < 25 for s in segments[:-1])
    assert all(s.terminated for s in segments[:-1] if len(s) < 25)  # CartPole's pole fell
    for segment in segments:  # within a segment, each step starts where the last one ended
        np.testing.assert_array_equal(segment.obs[1:], segment.next_obs[:-1])


def test_uniform_pairs_are_distinct_and_cover_all_segments() -> None:
    pairs = uniform_pairs(5, 5000, np.random.default_rng(0))
    assert pairs.shape == (5000, 2) and np.all(pairs[:, 0] != pairs[:, 1])
    counts = np.bincount(pairs.ravel(), minlength=5)
    assert counts.min() > 0.9 * counts.mean()


def test_disagreement_pairs_pick_the_most_contested_pairs() -> None:
    returns = np.random.default_rng(1).normal(scale=2.0, size=(4, 6))
    # Brute force over all 15 pairs: the variance across members of P(a ≻ b).
    probability = 1 / (1 + np.exp(-(returns[:, :, None] - returns[:, None, :])))
    variance = probability.var(axis=0)
    ranked = sorted(((variance[i, j], (i, j)) for i in range(6) for j in range(i + 1, 6)), reverse=True)
    # 400 candidates cover all 15 pairs, so the top 3 must come back.
    pairs = disagreement_pairs(returns, 3, np.random.default_rng(0), oversample=400 // 3)
    assert [tuple(sorted(p)) for p in pairs.tolist()] == [pair for _, pair in ranked[:3]]
    with pytest.raises(ValueError, match="members >= 2"):
        disagreement_pairs(returns[:1], 1, np.random.default_rng(0))


# -- labelers -------------------------------------------------------------------------------------
def test_synthetic_labeler_frequencies_match_the_boltzmann_model() -> None:
    beta, error_rate, draws = 1.3, 0.1, 4000
    labeler = SyntheticLabeler(beta=beta, error_rate=error_rate, seed=123)
    for gap in (-2.0, -0.7, 0.3, 1.0, 2.5):
        labels = labeler.label_returns(np.full(draws, gap), np.zeros(draws))
        expected = (1 - error_rate) / (1 + math.exp(-beta * gap)) + error_rate / 2
        standard_error = math.sqrt(expected * (1 - expected) / draws)
        assert set(np.unique(labels)) <= {0.0, 1.0}
        assert abs(labels.mean() - expected) < 4 * standard_error, (gap, labels.mean(), expected)


def test_synthetic_labeler_ties_rationality_and_arguments() -> None:
    labeler = SyntheticLabeler(beta=math.inf, tie_margin=0.5, seed=0)
    labels = labeler.label_returns(np.array([1.0, 1.4, 3.0, -3.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert labels.tolist() == [0.5, 0.5, 1.0, 0.0]
    a, b = make_segment(0), make_segment(1)
    assert labeler(a, b) == (1.0 if a.true_return > b.true_return + 0.5 else 0.0)
    random_chooser = SyntheticLabeler(beta=0.0, seed=0)
    assert abs(random_chooser.label_returns(np.full(2000, 100.0), np.zeros(2000)).mean() - 0.5) < 0.05
    for kwargs, message in [
        ({"beta": -1}, "beta"),
        ({"error_rate": 2}, "error_rate"),
        ({"tie_margin": -1}, "tie"),
    ]:
        with pytest.raises(ValueError, match=message):
            SyntheticLabeler(**kwargs)


def test_human_labeler_writes_a_side_by_side_gif_and_reads_answers(tmp_path) -> None:
    frames_a = np.zeros((3, 10, 12, 3), dtype=np.uint8)
    frames_b = np.full((2, 10, 12, 3), 200, dtype=np.uint8)
    answers = iter(["maybe", "L", "r", "equal", "s"])
    shown = []
    labeler = HumanLabeler(tmp_path, input_fn=lambda prompt: next(answers), print_fn=shown.append)
    a, b = make_segment(0, 3, frames_a), make_segment(1, 2, frames_b)
    assert [labeler(a, b) for _ in range(4)] == [1.0, 0.0, 0.5, None]
    assert "got 'maybe'" in shown[1]
    gif = iio.imread(tmp_path / "pair_00000.gif", index=None)
    assert gif.shape[1:3] == (10, 12 + 8 + 12)
    assert gif[-1, 0, -1, 0] > 150  # the right half holds its last (bright) frame
    with pytest.raises(ValueError, match="render=True"):
        labeler.show(make_segment(0), make_segment(1))


def test_human_labeler_shows_text_frames_in_the_terminal() -> None:
    shown = []
    labeler = HumanLabeler(input_fn=lambda prompt: "l", print_fn=shown.append)
    a = make_segment(0, 2, np.array(["car.....X", ".car....X"]))
    b = make_segment(1, 2, np.array(["car...X..", "..car.X.."]))
    assert labeler(a, b) == 1.0
    assert "step 1\n.car....X | ..car.X.." in shown[0]


# -- stores ---------------------------------------------------------------------------------------
class Scores(JsonlStore):
    def validate_record(self, record: dict) -> None:
        if not isinstance(record.get("score"), (int, float)):
            raise ValueError(f"score must be a number, got {record.get('score')!r}")


def test_jsonl_store_validates_before_writing_and_reloads(tmp_path) -> None:
    store = Scores(tmp_path / "sub" / "scores.jsonl")
    store.append({"score": 1, "text": "é"})
    with pytest.raises(ValueError, match="score must be a number"):
        store.append({"score": "high"})
    with pytest.raises(ValueError):
        store.append({"score": math.nan})  # NaN is not JSON
    assert Scores(store.path).records == [{"score": 1, "text": "é"}]
    assert len(store) == 1 and store[0]["text"] == "é"


def test_jsonl_store_names_the_corrupt_line_and_can_skip_it(tmp_path) -> None:
    path = tmp_path / "scores.jsonl"
    store = Scores(path)
    for score in range(3):
        store.append({"score": score})
    lines = path.read_bytes().split(b"\n")
    lines[1] = b'{"score": "bad"}'
    path.write_bytes(b"\n".join(lines) + b'{"score": 3')  # and a truncated last line
    with pytest.raises(PreferenceFileError) as error:
        Scores(path)
    assert error.value.line == 2 and str(path) in str(error.value) and "line 2" in str(error.value)
    with pytest.warns(UserWarning, match="2 corrupt line"):
        readable = Scores(path, skip_invalid=True)
    assert [r["score"] for r in readable] == [0, 2]
    assert [e.line for e in readable.errors] == [2, 4]
    readable.append({"score": 5})  # starts a new line instead of gluing onto the truncated one
    with pytest.warns(UserWarning):
        assert [r["score"] for r in Scores(path, skip_invalid=True)] == [0, 2, 5]


def test_preference_store_round_trips_exactly(tmp_path) -> None:
    store = PreferenceStore(tmp_path / "prefs.jsonl")
    frames = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    pairs = [
        (make_segment(0, frames=frames), make_segment(1), 1),
        (make_segment(2, 2), make_segment(3, 3, terminated=True), 0.5),
    ]
    for a, b, label in pairs:
        store.add(a, b, label, meta={"round": 1})
    reloaded = PreferenceStore(store.path)
    assert len(reloaded) == 2
    for (a, b, label), comparison in zip(pairs, reloaded, strict=True):
        assert comparison.label == label and comparison.meta == {"round": 1}
        for original, loaded in ((a, comparison.segment_a), (b, comparison.segment_b)):
            loaded_arrays = loaded.to_arrays()
            assert loaded_arrays.keys() == original.to_arrays().keys()
            for name, array in original.to_arrays().items():
                np.testing.assert_array_equal(loaded_arrays[name], array)
                assert loaded_arrays[name].dtype == array.dtype
    assert reloaded[-1].segment_b.frames is None and reloaded[-1].segment_b.terminated
    with pytest.raises(ValueError, match="label must be one of"):
        store.add(make_segment(0), make_segment(1), 0.7)


def test_preference_store_rejects_a_corrupt_line_by_number(tmp_path) -> None:
    path = tmp_path / "prefs.jsonl"
    store = PreferenceStore(path)
    for i in range(3):
        store.add(make_segment(i), make_segment(i + 10), 1.0)
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    (store.segment_dir / record["segments"]).unlink()  # line 3 references a lost file
    lines[1] = lines[1][: len(lines[1]) // 2]  # line 2 is cut in half
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PreferenceFileError, match=r"line 2: not valid JSON"):
        PreferenceStore(path)
    with pytest.warns(UserWarning):
        rest = PreferenceStore(path, skip_invalid=True)
    assert len(rest) == 1 and [e.line for e in rest.errors] == [2, 3]
    assert "does not exist" in str(rest.errors[1])
    np.testing.assert_array_equal(rest[0].segment_a.obs, make_segment(0).obs)


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from rlhf_envs.preferences import PreferenceStore, Segment

    store = PreferenceStore(sys.argv[1])
    for i in range(10_000):
        obs = np.full((3, 2), i)
        segment = Segment(obs, np.zeros(3, dtype=int), obs, np.full(3, float(i)))
        store.add(segment, segment, float(i % 2), meta={"i": i})
        print(i + 1, flush=True)
    time.sleep(60)
    """
)


def test_preference_store_survives_a_process_killed_between_labels(tmp_path) -> None:
    path = tmp_path / "prefs.jsonl"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    process = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        reported = 0
        while reported < 20:
            reported = int(process.stdout.readline())
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    store = PreferenceStore(path)  # no error: no line is torn, every referenced file is complete
    assert len(store) >= reported
    for i, comparison in enumerate(store):
        assert comparison.meta == {"i": i} and comparison.label == float(i % 2)
        assert comparison.segment_a.true_return == 3.0 * i


# -- the preference-learning loop -----------------------------------------------------------------
def test_label_schedule_front_loads_and_spends_the_budget_exactly() -> None:
    schedule = label_schedule(500, 10, 0.25)
    assert sum(schedule) == 500 and schedule[0] == 125
    assert all(a >= b for a, b in itertools.pairwise(schedule[1:]))
    assert label_schedule(37, 1, 0.25) == [37]


def make_agent(kind: str, reward_model: TrajectoryRewardModel):
    """A PPO training on CartPole with the learned reward: SB3's, or ours on a 2-env vector env."""
    if kind == "sb3":
        from stable_baselines3 import PPO

        train_env = LearnedReward(gym.make("CartPole-v1"), reward_model)
        return PPO("MlpPolicy", train_env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    from agents import PPO

    train_env = gym.vector.SyncVectorEnv(
        [lambda: LearnedReward(gym.make("CartPole-v1"), reward_model)] * 2,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    return PPO(train_env, device="cpu", num_envs=2, n_steps=32, batch_size=64, n_epochs=1)


@pytest.mark.parametrize("kind", ["sb3", "agents"])
def test_preference_trainer_runs_the_loop_with_ppo(tmp_path, kind: str) -> None:
    reward_model = TrajectoryRewardModel(
        gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Discrete(2), TrajectoryRewardConfig(epochs=2)
    )
    agent = make_agent(kind, reward_model)
    store = PreferenceStore(tmp_path / "prefs.jsonl")
    reports = []
    config = PreferenceConfig(
        total_timesteps=128, num_rounds=2, label_budget=12, segment_length=5, rollout_steps=60, seed=0
    )
    trainer = PreferenceTrainer(
        agent, gym.make("CartPole-v1"), reward_model, SyntheticLabeler(seed=0), store, config, reports.append
    )
    trainer.train()
    assert [r.labels for r in reports] == [3, 12] and len(PreferenceStore(store.path)) == 12
    assert agent.num_timesteps == 128 and trainer.timesteps == 128
    assert reports[1].fit.num_train + reports[1].fit.num_val == 12
    # A second trainer on the same store counts its labels against the budget instead of asking again.
    again = PreferenceTrainer(
        agent, gym.make("CartPole-v1"), reward_model, SyntheticLabeler(seed=1), store, config
    )
    again.train()
    assert len(again.comparisons) == 12 and len(store) == 12


def test_rounds_end_on_their_share_of_the_steps_when_the_agent_overshoots() -> None:
    """An agent that trains in whole rollouts overshoots a round's share; the rounds still add up to
    what one learn(total_timesteps) takes, and rollouts use the given rollout policy."""
    from agents import PPO

    reward_model = TrajectoryRewardModel(
        gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Discrete(2), TrajectoryRewardConfig(epochs=1)
    )
    agent = make_agent("agents", reward_model)  # rollouts of 64 steps
    calls = []

    def rollout_policy(obs: np.ndarray) -> int:
        calls.append(obs)
        return 0

    config = PreferenceConfig(
        total_timesteps=160, num_rounds=4, label_budget=8, segment_length=5, rollout_steps=30, seed=0
    )
    trainer = PreferenceTrainer(
        agent,
        gym.make("CartPole-v1"),
        reward_model,
        SyntheticLabeler(seed=0),
        config=config,
        rollout_policy=rollout_policy,
    )
    trainer.train()
    single = PPO(gym.make("CartPole-v1"), device="cpu", num_envs=2, n_steps=32, batch_size=64, n_epochs=1)
    single.learn(160, progress_bar=False)
    assert agent.num_timesteps == trainer.timesteps == single.num_timesteps == 192
    assert len(calls) == 4 * 30


def test_disagreement_queries_follow_the_fitted_ensemble() -> None:
    """Before the first fit pairs are uniform; once the ensemble is fitted, the trainer asks the pairs
    its members disagree on most (600 candidates cover all 66 pairs of 12 segments)."""
    reward_model = TrajectoryRewardModel(
        gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Discrete(2), TrajectoryRewardConfig(epochs=3)
    )
    segments = collect_segments(gym.make("CartPole-v1"), None, 60, 5, seed=1)[:12]
    trainer = PreferenceTrainer(
        make_agent("agents", reward_model),
        gym.make("CartPole-v1"),
        reward_model,
        SyntheticLabeler(seed=0),
        config=PreferenceConfig(
            label_budget=6, num_rounds=1, segment_length=5, oversample=200, rollout_steps=60, seed=0
        ),
    )
    trainer.start()
    trainer.run_round(0)  # uniform pairs, then the first fit
    returns = reward_model.member_returns(segments)
    probability = 1 / (1 + np.exp(-(returns[:, :, None] - returns[:, None, :])))
    variance = probability.var(axis=0)
    top = sorted((variance[i, j] for i, j in itertools.combinations(range(12), 2)), reverse=True)
    asked = trainer._choose_pairs(segments, 3)
    assert [variance[i, j] for i, j in asked.tolist()] == pytest.approx(top[:3])
