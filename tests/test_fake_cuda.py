"""Issue 18: the CUDA paths, checked on a CPU-only build with fake CUDA tensors (see ``fake_cuda.py``)."""

from __future__ import annotations

import io
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from fake_cuda import is_fake_cuda
from rich.console import Console
from tiny_lm import tiny_lm, tiny_tokenizer

import agents
import rlhf_envs  # noqa: F401  (registers the env ids)
from agents import DQN, PPO, QLearning
from rlhf_envs.demo import DemoConfig, run_demo
from rlhf_envs.device import resolve_device
from rlhf_envs.envs.car import CarDrivingVectorEnv
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.rewards import TrajectoryRewardConfig, TrajectoryRewardModel

CUDA0 = torch.device("cuda", 0)


def on_cuda(module: torch.nn.Module) -> bool:
    return all(is_fake_cuda(tensor) for tensor in [*module.parameters(), *module.buffers()])


# -- the harness itself ----------------------------------------------------------------------------
def test_the_harness_fails_where_cuda_fails(fake_cuda):
    x = torch.ones(3, device="cuda")
    assert x.device == CUDA0 and x.is_cuda and torch.cuda.is_available()
    with pytest.raises(RuntimeError, match="same device"):
        x + torch.ones(3)
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
        np.asarray(x * 2)
    with pytest.raises(RuntimeError, match="generator"):
        torch.rand(3, device="cuda", generator=torch.Generator())
    assert (x + torch.tensor(1.0)).device == CUDA0  # a CPU scalar tensor is fine, as on a GPU
    assert x[torch.tensor([0, 2])].device == CUDA0  # so are CPU indices
    np.testing.assert_array_equal(x.cpu().numpy(), [1.0, 1.0, 1.0])
    assert x.sum().item() == 3.0
    assert [sync.split(" at ")[0] for sync in fake_cuda.syncs] == ["cpu (device-to-host copy)", "item"]
    assert " at test_fake_cuda.py:" in fake_cuda.syncs[-1]  # each sync names the line that made it

    layer = torch.nn.Linear(3, 2).to("cuda")
    assert on_cuda(layer) and layer.weight.device == CUDA0
    layer(x[None]).sum().backward()
    assert layer.weight.grad.device == CUDA0
    generator = torch.Generator(device="cuda").manual_seed(0)
    assert generator.device == CUDA0 and torch.rand(2, device="cuda", generator=generator).device == CUDA0
    host = torch.ones(2)
    assert torch.as_tensor(host, device="cuda").device == CUDA0 and host.device.type == "cpu"  # a copy


# -- one rollout + update of every control agent ---------------------------------------------------
SMALL_PPO = {"num_envs": 4, "n_steps": 4, "batch_size": 8, "n_epochs": 1}


@pytest.mark.parametrize(
    "env_id", ["rlhf_envs/TabularMDP-v0", "rlhf_envs/CarDriving-v0", "rlhf_envs/HalfCheetah-v0"]
)
def test_ppo_runs_on_cuda(env_id, fake_cuda):
    options = {"normalize_observations": True} if env_id != "rlhf_envs/TabularMDP-v0" else {}
    agent = PPO(env_id, device="auto", normalize_rewards=True, **options, **SMALL_PPO)
    agent.learn(16, progress_bar=False)
    assert agent.num_timesteps == 16 and on_cuda(agent.policy)


@pytest.mark.parametrize("continuous", [False, True])
def test_dqn_runs_on_cuda(continuous, fake_cuda):
    env = gym.make("rlhf_envs/CarDriving-v0", continuous=continuous)
    agent = DQN(env, device="auto", num_envs=4, learning_starts=4, batch_size=8).learn(16, progress_bar=False)
    assert agent.num_timesteps == 16 and on_cuda(agent.q_net)


def test_q_learning_runs_on_cuda(fake_cuda):
    agent = QLearning("rlhf_envs/TabularMDP-v0", device="auto", num_envs=4).learn(16, progress_bar=False)
    assert agent.q_table.shape == (4, 3)
    actions, _ = agent.predict(torch.arange(4, device="cuda"))  # observations from a tensor env
    assert actions.shape == (4,) and agent.predict(torch.tensor(2, device="cuda"))[0].shape == ()


# -- finding 1: "auto" is the indexed device a model lands on ---------------------------------------
def test_resolve_device_auto_is_the_device_a_model_lands_on(fake_cuda):
    tokenizer = tiny_tokenizer()
    model, _ = load_causal_lm(tiny_lm(tokenizer), tokenizer, device="auto")
    assert resolve_device("auto") == model.device == CUDA0
    assert resolve_device("cuda") == resolve_device(torch.device("cuda")) == CUDA0


def test_resolve_device_names_the_cuda_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == CUDA0
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_names_a_device_that_does_not_exist():
    with pytest.raises(ValueError, match="'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# -- findings 3 and 4: inputs from the host, observations from the device ---------------------------
def test_trajectory_reward_model_takes_inputs_from_the_host(fake_cuda):
    env = gym.make("rlhf_envs/CarDriving-v0")
    model = TrajectoryRewardModel(
        env.observation_space, env.action_space, TrajectoryRewardConfig(device="auto")
    )
    obs, actions = torch.rand(5, 4), torch.randint(3, (5,))
    features = model.encode(obs, actions)
    assert features.device == CUDA0
    assert model.member_rewards(features.cpu()).shape == (3, 5)
    assert model.normalized_rewards(features.cpu()).device == CUDA0
    assert model.encode(obs.numpy(), actions.numpy()).device == CUDA0


@pytest.mark.parametrize("agent_class", [PPO, DQN])
def test_predict_takes_cuda_observations(agent_class, fake_cuda):
    options = SMALL_PPO if agent_class is PPO else {"num_envs": 4}
    agent = agent_class("rlhf_envs/CarDriving-v0", device="auto", **options)
    env = CarDrivingVectorEnv(4, device="auto", as_tensors=True)
    obs, _ = env.reset(seed=0)
    actions, _ = agent.predict(obs)
    assert actions.shape == (4,)
    single, _ = agent.predict(obs[0])
    assert single.shape == ()


# -- finding 10: no float64 on the device, nothing uploaded per step --------------------------------
def test_per_step_statistics_stay_in_float32(fake_cuda):
    agent = PPO(
        "rlhf_envs/CarDriving-v0",
        device="auto",
        normalize_observations=True,
        normalize_rewards=True,
        **SMALL_PPO,
    ).learn(16, progress_bar=False)
    states = [agent.tracker.state_dict(), agent.obs_normalizer.state_dict()]
    states.append(agent.reward_normalizer.state_dict())
    tensors = [value for state in states for value in state.values() if torch.is_tensor(value)]
    assert all(is_fake_cuda(tensor) for tensor in tensors)
    assert {tensor.dtype for tensor in tensors} <= {torch.float32, torch.long}


# -- the demo: every stage (label, reward model, PPO + KL, evaluate, report) ------------------------
def test_the_demo_runs_on_cuda(fake_cuda, tmp_path):
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat\na good day\nlove and joy\nin the beginning\nthe dog\na bad day\n")
    summary = run_demo(
        model=str(tmp_path / "lm"),
        out=tmp_path / "out",
        config=DemoConfig.quick(),
        prompts=prompts,
        device="auto",
        console=Console(file=io.StringIO()),
    )
    assert summary["device"] == "cuda:0" and (tmp_path / "out" / "model" / "config.json").is_file()


# -- deliverable 3 for the agents: no host sync per env step ----------------------------------------
AGENT_FILES = {path.name for path in Path(agents.__file__).parent.glob("*.py")}


def agent_syncs(syncs: list[str]) -> list[str]:
    """The syncs made by the agents' own code (not by the env they step)."""
    return [sync for sync in syncs if sync.rsplit(" at ", 1)[-1].split(":")[0] in AGENT_FILES]


@pytest.mark.parametrize("agent_name", ["PPO", "DQN", "QLearning"])
def test_agents_make_no_host_sync_per_env_step(agent_name, fake_cuda):
    """One rollout of 4 steps and one of 16 make the same syncs (the per-iteration log): none per step."""
    counts = []
    for n_steps in (4, 16):
        if agent_name == "PPO":
            agent = PPO(
                "rlhf_envs/CarDriving-v0",
                device="auto",
                num_envs=4,
                n_steps=n_steps,
                batch_size=4 * n_steps,  # one minibatch: the update's syncs do not change either
                n_epochs=1,
                normalize_observations=True,
                normalize_rewards=True,
            )
        elif agent_name == "DQN":  # Box actions (binned); collection only: a gradient step is not an env step
            env = gym.make("rlhf_envs/CarDriving-v0", continuous=True)
            agent = DQN(env, device="auto", num_envs=4, learning_starts=10**6)
        else:
            agent = QLearning("rlhf_envs/TabularMDP-v0", device="auto", num_envs=4)
        before = len(fake_cuda.syncs)
        agent.learn(4 * n_steps, progress_bar=False)
        counts.append(len(agent_syncs(fake_cuda.syncs[before:])))
    assert counts[0] == counts[1], fake_cuda.syncs
