"""The KL controllers (Ziegler et al. 2019) and the per-token KL penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.kl_control import KL_ESTIMATORS, AdaptiveKLController, FixedKLController, KLPenalty
from agents.token_ppo import TokenPPOConfig


def test_adaptive_controller_raises_beta_above_the_target_and_lowers_it_below():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    assert controller.update(9.0, 100) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped to +0.2
    controller = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    assert controller.update(5.4, 100) == pytest.approx(0.1 * (1 - 0.1 * 0.1))  # error −0.1
    controller = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    assert controller.update(6.0, 100) == pytest.approx(0.1)
    for _ in range(50):
        controller.update(20.0, 1000)
    assert controller.value == pytest.approx(0.1 * 1.2**50)


def test_fixed_controller_and_bad_arguments():
    assert FixedKLController(0.2).update(100.0, 10) == 0.2
    with pytest.raises(ValueError, match="kl_coef"):
        FixedKLController(-1.0)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.1, target=1.0, horizon=0)


def test_penalty_shapes_rewards_and_measures_the_kl_per_episode():
    penalty = KLPenalty(FixedKLController(0.5), num_steps=2, num_envs=2, whiten_rewards=False, device="cpu")
    penalty.record(0, torch.tensor([-1.0, -2.0]), {"ref_logprob": torch.tensor([-1.5, -2.0])})
    penalty.record(1, torch.tensor([-1.0, -1.0]), {"ref_logprob": torch.tensor([-2.0, -0.5])})
    rewards = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    dones = torch.tensor([[False, False], [True, True]])
    shaped = penalty.penalize(rewards, dones)
    torch.testing.assert_close(shaped, torch.tensor([[-0.25, 0.0], [2.5, 1.25]]))
    stats = penalty.history[-1]
    assert stats.kl == pytest.approx((0.5 + 1.0 + 0.0 - 0.5) / 2)  # two episodes ended
    assert stats.score == pytest.approx(2.0) and stats.kl_coef == 0.5


def test_deferred_reference_log_probs_are_read_from_each_episodes_end():
    """Deferred scoring: step t's log π_pt comes from the ref_logprobs of the episode it belongs to, at
    that episode's end in the rollout (final_info) or, for the episode still running, from the env's
    running_info(); an episode begun in an earlier rollout has its earlier tokens before these."""
    penalty = KLPenalty(FixedKLController(1.0), num_steps=4, num_envs=1, whiten_rewards=False, device="cpu")
    no_end = {"ref_logprobs": torch.zeros(1, 5), "response_length": np.array([0])}
    # Steps 0-1 end an episode of 4 tokens (tokens 2 and 3); steps 2-3 are tokens 0 and 1 of the next.
    ended = {"ref_logprobs": torch.tensor([[-9.0, -9.0, -0.2, -0.3, 0.0]]), "response_length": np.array([4])}
    for step, final_info in enumerate([no_end, ended, no_end, no_end]):
        penalty.record(step, torch.full((1,), -1.0), {"final_info": final_info})
    assert penalty.deferred
    running = {"ref_logprobs": torch.tensor([[-0.5, -0.7, 0.0, 0.0, 0.0]]), "response_length": np.array([2])}
    dones = torch.tensor([[False], [True], [False], [False]])
    with pytest.raises(ValueError, match="running_info"):
        penalty.penalize(torch.zeros(4, 1), dones)
    shaped = penalty.penalize(torch.zeros(4, 1), dones, running)
    torch.testing.assert_close(penalty.ref_logprobs[:, 0], torch.tensor([-0.2, -0.3, -0.5, -0.7]))
    # −β (log π − log π_pt) with log π = −1
    torch.testing.assert_close(shaped[:, 0], torch.tensor([0.8, 0.7, 0.5, 0.3]))
    assert not penalty.deferred  # the next rollout starts afresh
    with pytest.raises(ValueError, match="no reference log-probs"):
        penalty.record(0, torch.zeros(1), {})


def test_whitening_standardizes_the_final_rewards_only():
    penalty = KLPenalty(FixedKLController(0.0), num_steps=2, num_envs=3, whiten_rewards=True, device="cpu")
    rewards = torch.tensor([[0.0, 0.0, 0.0], [10.0, 20.0, 30.0]])
    dones = torch.tensor([[False, False, False], [True, True, True]])
    shaped = penalty.penalize(rewards, dones)
    torch.testing.assert_close(shaped[0], torch.zeros(3))
    torch.testing.assert_close(shaped[1], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    assert penalty.history[-1].score == pytest.approx(20.0)  # the raw score is reported


def test_k1_and_k3_estimate_the_same_kl_and_k3_is_never_negative():
    """Both estimators have expectation KL(π ‖ π_pt) under samples of π; k3 = exp(−d) − 1 + d ≥ 0 has
    the lower variance for nearby distributions (Schulman 2020)."""
    generator = torch.Generator().manual_seed(0)
    ref_logits = torch.randn(50, generator=generator)
    logits = ref_logits + 0.3 * torch.randn(50, generator=generator)
    log_pi, log_ref = logits.log_softmax(-1), ref_logits.log_softmax(-1)
    exact = (log_pi.exp() * (log_pi - log_ref)).sum()
    tokens = torch.multinomial(log_pi.exp(), 200_000, replacement=True, generator=generator)
    estimates = {}
    for name in KL_ESTIMATORS:
        penalty = KLPenalty(FixedKLController(0.0), 1, len(tokens), False, "cpu", estimator=name)
        penalty.record(0, log_pi[tokens], {"ref_logprob": log_ref[tokens]})
        penalty.penalize(torch.zeros(1, len(tokens)), torch.zeros(1, len(tokens)))
        estimates[name] = penalty.kl[0]
    for name, values in estimates.items():
        assert values.mean().item() == pytest.approx(exact.item(), rel=0.03), name
    assert (estimates["k3"] >= 0).all() and (estimates["k1"] < 0).any()
    assert estimates["k3"].var() < 0.5 * estimates["k1"].var()
    torch.testing.assert_close(estimates["k3"], torch.expm1(-estimates["k1"]) + estimates["k1"])


def test_the_estimator_is_a_token_ppo_option():
    with pytest.raises(ValueError, match="kl_estimator"):
        KLPenalty(FixedKLController(0.1), 1, 1, False, "cpu", estimator="k2")
    with pytest.raises(ValueError, match="kl_estimator"):
        TokenPPOConfig(kl_estimator="k2")
    config = TokenPPOConfig(kl_coef=0.1, kl_estimator="k3")
    assert KLPenalty.from_config(config, num_envs=2, device="cpu").estimator == "k3"
    assert KLPenalty.from_config(TokenPPOConfig(kl_coef=0.1), 2, "cpu").estimator == "k1"
