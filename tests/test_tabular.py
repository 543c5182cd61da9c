"""The tabular MDP, its batched core and value iteration."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import rlhf_envs  # noqa: F401
from rlhf_envs.envs.tabular import DEFAULT_P, DEFAULT_R, TabularMDP, TabularMDPVectorEnv, value_iteration


def test_check_env_gymnasium_and_sb3():
    check_env(TabularMDP(), skip_render_check=False)
    sb3_check_env(TabularMDP())


def test_registration_paths():
    assert isinstance(gym.make("rlhf_envs/TabularMDP-v0").unwrapped, TabularMDP)
    assert isinstance(gym.make("rlhf_envs:rlhf_envs/TabularMDP-v0").unwrapped, TabularMDP)


def test_import_free_registration_in_fresh_interpreter():
    import subprocess
    import sys

    code = (
        "import gymnasium as gym; "
        "print(type(gym.make('rlhf_envs:rlhf_envs/TabularMDP-v0').unwrapped).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "TabularMDP"


def test_default_optimal_policy_is_not_myopic():
    _, policy = value_iteration(DEFAULT_P, DEFAULT_R, 0.9)
    myopic = DEFAULT_R.argmax(axis=1)
    assert (policy != myopic).any()


def test_value_iteration_satisfies_bellman_equation():
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(5), size=(5, 2))
    R = rng.normal(size=(5, 2))
    q, policy = value_iteration(P, R, 0.8)
    np.testing.assert_allclose(q, R + 0.8 * P @ q.max(axis=1), atol=1e-8)
    np.testing.assert_array_equal(policy, q.argmax(axis=1))


def test_transitions_follow_P():
    env = TabularMDPVectorEnv(num_envs=20_000, device="cpu", initial_state_distribution=[0, 1, 0, 0])
    env.reset(seed=0)
    next_obs, reward, *_ = env.step(np.full(20_000, 1))
    frequencies = np.bincount(next_obs, minlength=4) / 20_000
    np.testing.assert_allclose(frequencies, DEFAULT_P[1, 1], atol=0.01)
    np.testing.assert_allclose(reward, DEFAULT_R[1, 1])


def test_truncation_at_horizon_and_same_step_autoreset():
    env = TabularMDPVectorEnv(num_envs=3, horizon=2, device="cpu", autoreset_mode=AutoresetMode.SAME_STEP)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.array([1, 1, 1]))
    assert not truncated.any() and "_final_obs" not in info  # only when an episode ended, as gymnasium's
    obs, _, terminated, truncated, info = env.step(np.array([1, 1, 1]))
    assert truncated.all() and not terminated.any() and info["_final_obs"].all()
    np.testing.assert_array_equal(obs, [0, 0, 0])  # restarted in the same step


def test_vector_env_tensor_mode_stays_on_device():
    env = TabularMDPVectorEnv(
        num_envs=4, device="cpu", as_tensors=True, autoreset_mode=AutoresetMode.SAME_STEP
    )
    obs, _ = env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step(torch.ones(4, dtype=torch.long))
    assert all(isinstance(x, torch.Tensor) for x in (obs, reward, terminated, truncated, info["final_obs"]))


def test_make_vec_uses_the_batched_core():
    env = gym.make_vec(
        "rlhf_envs/TabularMDP-v0", num_envs=8, vectorization_mode="vector_entry_point", device="cpu"
    )
    assert isinstance(env, TabularMDPVectorEnv)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8,)


def test_same_seed_same_episode():
    def rollout(seed):
        env = TabularMDP()
        obs, _ = env.reset(seed=seed)
        trajectory = [obs]
        for action in [1, 1, 0, 2, 1, 1, 1, 1]:
            obs, reward, *_ = env.step(action)
            trajectory += [obs, reward]
        return trajectory

    assert rollout(7) == rollout(7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(P=DEFAULT_P * 0.5), "must sum to 1"),
        (
            dict(P=np.where(DEFAULT_P == 1.0, 1.5, np.where(DEFAULT_P == 0.0, -0.5 / 3, DEFAULT_P))),
            "negative",
        ),
        (dict(R=DEFAULT_R[:, :2]), "R must have shape"),
        (dict(P=DEFAULT_P[:, :, :3]), "P must have shape"),
        (dict(gamma=1.0), "gamma"),
        (dict(gamma=-0.1), "gamma"),
        (dict(initial_state_distribution=[0.5, 0.5, 0.5, 0.0]), "initial_state_distribution"),
    ],
)
def test_bad_tables_raise_value_error_naming_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TabularMDP(**kwargs)


@pytest.mark.parametrize("action", [3, -1, 1.5, np.array([0, 1])])
def test_action_outside_the_space_is_rejected(action):
    env = TabularMDP()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_vector_action_outside_the_space_is_rejected():
    env = TabularMDPVectorEnv(num_envs=2, device="cpu")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(np.array([0, 5]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.array([0, 1, 2]))


def test_ansi_render():
    env = TabularMDP(render_mode="ansi")
    env.reset(seed=0)
    assert env.render() == "[*] [ ] [ ] [ ]"


# The faces' public surface (CoreEnv / CoreVectorEnv), the same for every tensor core.
CONTROL_IDS = ["rlhf_envs/TabularMDP-v0", "rlhf_envs/CarDriving-v0"]


def _run(env, actions):
    """Every output of stepping ``env`` through ``actions``, then of one unseeded reset."""
    outputs = [env.step(action) for action in actions]
    return outputs, env.reset()


def _assert_same(left, right):
    if isinstance(left, dict):
        assert left.keys() == right.keys()
        for key in left:
            _assert_same(left[key], right[key])
    elif isinstance(left, tuple | list):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            _assert_same(a, b)
    else:
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("env_id", CONTROL_IDS)
def test_vector_state_dict_resumes_exactly(env_id):
    def make():
        return gym.make_vec(env_id, num_envs=5, vectorization_mode="vector_entry_point", device="cpu")

    env = make()
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(130)]  # crosses every horizon: autoresets too
    env.reset(seed=1)
    for action in actions[:40]:
        env.step(action)
    saved = pickle.loads(pickle.dumps(env.state_dict()))
    straight = _run(env, actions[40:])
    resumed_env = make()
    resumed_env.reset(seed=2)  # other episodes, overwritten by the load
    resumed_env.load_state_dict(saved)
    _assert_same(straight, _run(resumed_env, actions[40:]))


@pytest.mark.parametrize("env_id", CONTROL_IDS)
def test_single_env_state_dict_resumes_exactly(env_id):
    env = gym.make(env_id).unwrapped
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(20)]
    env.reset(seed=3)
    for action in actions[:7]:
        env.step(action)
    saved = env.state_dict()
    straight = _run(env, actions[7:])
    other = gym.make(env_id).unwrapped
    other.reset(seed=4)
    other.load_state_dict(saved)
    _assert_same(straight, _run(other, actions[7:]))


def test_state_dict_refuses_another_env():
    tabular = TabularMDPVectorEnv(num_envs=3, device="cpu")
    with pytest.raises(RuntimeError, match="reset"):
        tabular.state_dict()
    tabular.reset(seed=0)
    with pytest.raises(ValueError, match="num_envs"):
        TabularMDPVectorEnv(num_envs=4, device="cpu").load_state_dict(tabular.state_dict())
    car = gym.make_vec(
        "rlhf_envs/CarDriving-v0", num_envs=3, vectorization_mode="vector_entry_point", device="cpu"
    )
    with pytest.raises(ValueError, match="core"):
        car.load_state_dict(tabular.state_dict())


def test_gamma_is_the_mdps_own_through_wrappers_and_faces():
    env = gym.wrappers.RecordEpisodeStatistics(gym.make("rlhf_envs/TabularMDP-v0", gamma=0.8))
    assert env.get_wrapper_attr("gamma") == 0.8
    assert env.unwrapped.to_vector(2).gamma == 0.8
    assert TabularMDPVectorEnv(num_envs=2, gamma=0.7, device="cpu").gamma == 0.7
    assert gym.make("rlhf_envs/CarDriving-v0").get_wrapper_attr("gamma") is None  # no discount of its own


def test_to_vector_makes_a_new_tensor_env_and_leaves_the_callers():
    single = TabularMDP()
    single.reset(seed=0)
    twin = TabularMDP()
    twin.reset(seed=0)
    vector = single.to_vector(4, device="cpu")
    obs, _ = vector.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.shape == (4,)
    for action in [1, 1, 2, 0, 1]:  # the caller's episode goes on as if nothing happened
        _assert_same(single.step(action), twin.step(action))

    numpy_vector = TabularMDPVectorEnv(num_envs=3, device="cpu")
    tensors = numpy_vector.to_vector()
    assert tensors is not numpy_vector and tensors.num_envs == 3
    assert tensors.as_tensors and not numpy_vector.as_tensors
