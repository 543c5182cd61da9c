"""Issue 18 for the control vector envs and agents/vector.py: their CUDA paths, run on the CPU under the
fake-CUDA harness (tests/fake_cuda.py: ``device="auto"`` is ``cuda:0``, CUDA's device errors are raised
and the host syncs a GPU would make are recorded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import PPO
from agents.vector import same_device
from rlhf_envs import VectorLearnedReward
from rlhf_envs.envs.batched import ActionCheck
from rlhf_envs.envs.car import CarDrivingVectorEnv
from rlhf_envs.envs.tabular import TabularMDPVectorEnv

VECTOR_ENVS = [TabularMDPVectorEnv, CarDrivingVectorEnv]


def test_cuda_without_an_index_is_the_current_cuda_device(fake_cuda):
    """Finding 1: ``torch.device("cuda") != torch.device("cuda:0")``: agents/vector.py compares resolved
    devices."""
    assert same_device("cuda", torch.device("cuda", 0)) and same_device(torch.device("cuda"), "cuda:0")
    assert not same_device("cuda", "cpu")


def test_ppo_trains_on_a_wrapped_tensor_env_on_cuda(fake_cuda):
    """Finding 2: a learned reward around a tensor env used to fall through to the numpy adapter
    (TypeError "can't convert cuda:0 device type tensor to numpy")."""
    env = VectorLearnedReward(
        CarDrivingVectorEnv(4, device="auto", as_tensors=True),
        lambda obs, action, next_obs: obs[:, 1],
    )
    agent = PPO(env, device="auto", num_envs=4, n_steps=4, batch_size=8, n_epochs=1).learn(
        16, progress_bar=False
    )
    assert agent.num_timesteps == 16


def test_a_tensor_env_on_another_device_is_refused_by_name(fake_cuda):
    env = VectorLearnedReward(CarDrivingVectorEnv(4, device="cpu", as_tensors=True), lambda o, a, n: o[:, 1])
    with pytest.raises(ValueError, match="cpu.*cuda:0"):
        PPO(env, device="auto", num_envs=4)


@pytest.mark.parametrize("vector_env", VECTOR_ENVS)
def test_out_of_range_cuda_actions_are_refused(vector_env, fake_cuda):
    """Finding 5: a CUDA action tensor skipped the range check (on a GPU a device-side assert that leaves
    CUDA unusable; the harness shows the CPU kernel's IndexError). Now a ValueError, and the env goes on."""
    env = vector_env(3, device="auto", as_tensors=True)
    env.reset(seed=0)
    for bad in ([0, 7, 1], [0, -1, 1]):
        with pytest.raises(ValueError, match="action"):
            env.step(torch.tensor(bad, device="cuda"))
    for wrong_kind in (
        torch.tensor([0.0, 1.0, 2.0], device="cuda"),
        torch.ones(3, dtype=torch.bool, device="cuda"),
    ):
        with pytest.raises((ValueError, TypeError), match="action"):
            env.step(wrong_kind)
    env.step(torch.tensor([0, 1, 2], dtype=torch.int8, device="cuda"))  # any integer dtype; still usable


def test_out_of_bounds_continuous_cuda_actions_are_refused(fake_cuda):
    env = CarDrivingVectorEnv(2, device="auto", as_tensors=True, continuous=True)
    env.reset(seed=0)
    for bad in ([0.0, 5.0], [0.0, float("nan")]):
        with pytest.raises(ValueError, match="action"):
            env.step(torch.tensor(bad, device="cuda").view(2, 1))
    env.step(torch.zeros(2, 1, device="cuda"))


@pytest.mark.parametrize("vector_env", VECTOR_ENVS)
def test_numpy_vector_envs_run_on_the_cpu_by_default(vector_env, fake_cuda):
    """Finding 8: with ``as_tensors=False`` the core used to land on the GPU, and every step uploaded the
    actions and downloaded ~9 outputs one by one. The NumPy face now runs on the CPU: no transfer at all."""
    env = vector_env(4)
    assert env.device == torch.device("cpu")
    env.reset(seed=0)
    before = len(fake_cuda.syncs)
    for _ in range(3):
        env.step(np.ones(4, np.int64))
    assert fake_cuda.syncs[before:] == []
    assert vector_env(4, as_tensors=True).device == torch.device("cuda", 0)  # tensors: CUDA when present


@pytest.mark.parametrize("vector_env", VECTOR_ENVS)
def test_tensor_core_step_sync_budget(vector_env, fake_cuda):
    """A tensor core's step makes one host sync: reading the verdict of the action check (finding 5);
    nothing else leaves the device."""
    env = vector_env(4, device="auto", as_tensors=True)
    env.reset(seed=0)
    actions = torch.ones(4, dtype=torch.long, device="cuda")
    for _ in range(3):
        before = len(fake_cuda.syncs)
        env.step(actions)
        syncs = fake_cuda.syncs[before:]
        assert len(syncs) == 1 and " at batched.py:" in syncs[0], syncs


def test_tabular_core_keeps_no_float64_tensor_on_a_gpu(fake_cuda):
    """Finding 10: the tabular core's distributions were float64 on the device (slow on most GPUs)."""
    for env in (
        TabularMDPVectorEnv(4, device="auto"),
        TabularMDPVectorEnv(4, device="cpu").to_vector(device="cuda"),
    ):
        tensors = [value for value in vars(env.core).values() if isinstance(value, torch.Tensor)]
        assert tensors and all(tensor.dtype != torch.float64 for tensor in tensors)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
@pytest.mark.parametrize("vector_env", VECTOR_ENVS)
def test_on_a_gpu_a_tensor_core_step_syncs_only_where_documented(vector_env, mode, monkeypatch):
    """``torch.cuda.set_sync_debug_mode("error")`` around tensor-core steps; the one documented sync, the
    action check's verdict, is allowed."""
    allowed = ActionCheck.verdict

    def documented_sync(self, outside, actions):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return allowed(self, outside, actions)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(ActionCheck, "verdict", documented_sync)
    env = vector_env(64, device="cuda", as_tensors=True, horizon=3, autoreset_mode=mode)
    env.reset(seed=0)
    actions = torch.ones(64, dtype=torch.long, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):  # crosses the horizon: episodes end and restart
            env.step(actions)
    finally:
        torch.cuda.set_sync_debug_mode(0)
