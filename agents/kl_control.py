"""The KL penalty of RLHF and the controllers that set its weight β.

Fine-tuning a language model π against a reward model r_φ maximizes, per episode (Stiennon et al. 2020),

    E_π[r_φ(x, y)] − β · KL(π ‖ π_pt),   KL(π ‖ π_pt) = E_π[Σ_n log π(t_n | s_n) − log π_pt(t_n | s_n)],

so every token's reward is −β (log π − log π_pt) and the last token adds r_φ(x, y).
:class:`KLPenalty` turns a rollout's env rewards and log-probabilities into those per-token rewards;
β comes from a :class:`FixedKLController` or an :class:`AdaptiveKLController` (Ziegler et al. 2019),
which steers the measured KL towards a target.

The per-token KL is estimated from d = log π(t) − log π_pt(t) of the sampled token t, in one of
Schulman's (2020) ways (:data:`KL_ESTIMATORS`): ``"k1"`` = d, or ``"k3"`` = exp(−d) − 1 + d (what GRPO
puts in its loss, TRL's ``per_token_kl``). Both have expectation KL(π ‖ π_pt) under π; k3 is never
negative and has a lower variance, k1 sums over an episode to the exact log-ratio of the sequence.
The demo uses k1 (the default): as a *reward*, k1's policy gradient is the gradient of the KL term of
the objective above, whereas k3 estimates the KL's value but its score-function gradient
E[∇log π · k3] is not ∇KL (Stiennon et al. and Ziegler et al. penalize the log-ratio). Choose k3 for
a steadier KL reading (the adaptive controller's input) when that bias is acceptable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from agents.ppo import PPOConfig

__all__ = ["KL_ESTIMATORS", "AdaptiveKLController", "FixedKLController", "KLPenalty", "KLStats"]

#: Per-token estimators of KL(π ‖ π_pt) from d = log π − log π_pt of the sampled token (see above).
KL_ESTIMATORS = {
    "k1": lambda d: d,
    "k3": lambda d: torch.expm1(-d) + d,
}


class FixedKLController:
    """A constant β."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, num_steps: int) -> float:
        """β stays as it is; returns it."""
        return self.value


class AdaptiveKLController:
    """β ← β (1 + K_β e), e = clip(KL / KL_target − 1, −0.2, 0.2), K_β = ``num_steps`` / ``horizon``.

    The proportional controller of Ziegler et al. (2019, eq. 2): β grows while the measured KL per
    episode exceeds the target and shrinks while it is below, by at most 20 % of K_β per update.

    Args:
        init_kl_coef: β at the start.
        target: KL_target, the wanted KL(π ‖ π_pt) per episode, in nats.
        horizon: env steps over which an error of 20 % changes β by a factor e^0.2.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if init_kl_coef <= 0:
            raise ValueError(f"the adaptive controller needs init_kl_coef > 0, got {init_kl_coef}")
        if target <= 0:
            raise ValueError(f"target KL must be > 0, got {target}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, num_steps: int) -> float:
        """Adjust β after a rollout of ``num_steps`` env steps that measured ``current_kl``; returns β."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * num_steps / self.horizon
        return self.value


@dataclass
class KLStats:
    """What one rollout measured: the KL per episode, the mean raw reward of the episodes' last
    steps (the reward model's score on the TokenEnv; None if no episode ended), and the β used."""

    kl: float
    score: float | None
    kl_coef: float


class KLPenalty:
    """Per-token rewards: the env's reward (its last step's optionally whitened) minus β (log π − log π_pt).

    On the TokenEnv (``kl_coef=0``) the env's reward is the reward model's score on the last token of
    each episode, so the result is Stiennon et al.'s reward. :meth:`record` stores each step's
    log π and the env's info, which holds log π_pt of the step's token (per-step reference scoring:
    ``info["ref_logprob"]``) or, where episodes ended, of all their tokens (deferred scoring, the
    TokenEnv's default with ``kl_coef=0``: ``info["final_info"]["ref_logprobs"]`` under same-step
    autoreset). :meth:`penalize` then completes the log π_pt of the deferred steps (those of the
    episodes still running come from the env's :meth:`~rlhf_envs.envs.token.TokenVectorEnv.running_info`),
    shapes the rollout's rewards with the β in force during it, and updates the controller with
    the KL the rollout measured.

    Args:
        controller: a :class:`FixedKLController` or :class:`AdaptiveKLController`.
        num_steps, num_envs: the rollout's shape.
        whiten_rewards: standardize the rewards of the steps that end an episode (mean 0, std 1 over
            the rollout), so that β weighs the KL against a reward of unit scale whatever the reward model.
        device: where the rollout's tensors live.
        estimator: ``"k1"`` or ``"k3"`` (:data:`KL_ESTIMATORS`), for the penalty and the measured KL alike.

    Data-parallel training sets :attr:`all_reduce` (a sum over processes of a tensor): the whitening
    statistics, the measured KL and so β are then those of all processes' rollouts, alike on each.
    """

    def __init__(
        self,
        controller: FixedKLController | AdaptiveKLController,
        num_steps: int,
        num_envs: int,
        whiten_rewards: bool,
        device: torch.device,
        estimator: str = "k1",
    ) -> None:
        if estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {sorted(KL_ESTIMATORS)}, got {estimator!r}")
        self.controller = controller
        self.whiten_rewards = whiten_rewards
        self.estimator = estimator
        self.logprobs = torch.zeros(num_steps, num_envs, device=device)
        self.ref_logprobs = torch.zeros(num_steps, num_envs, device=device)
        #: The rollout's per-token KL estimates [T, B], set by :meth:`penalize`.
        self.kl = torch.zeros(num_steps, num_envs, device=device)
        # Deferred scoring: each step's end-of-episode ref_logprobs [B, N] and response lengths [B].
        self._episode_ends: list[tuple[torch.Tensor, np.ndarray]] = []
        #: One :class:`KLStats` per rollout, oldest first (for learning curves).
        self.history: list[KLStats] = []
        #: ``(mean, std)`` the latest rollout's episode-end rewards were whitened with ((0, 1) unwhitened):
        #: a critic that predicts them in the env's units uses the same scale.
        self.reward_scale: tuple[float, float] = (0.0, 1.0)
        self.all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def from_config(cls, config: PPOConfig, num_envs: int, device: torch.device) -> KLPenalty:
        """The penalty a PPO config asks for: β fixed at ``kl_coef``, or adapted towards ``kl_target``."""
        controller = (
            FixedKLController(config.kl_coef)
            if config.kl_target is None
            else AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
        )
        # The estimator is a token PPO option (agents.token_ppo.TokenPPOConfig); k1 otherwise.
        estimator = getattr(config, "kl_estimator", "k1")
        return cls(controller, config.n_steps, num_envs, config.whiten_rewards, device, estimator)

    def state_dict(self) -> dict[str, Any]:
        """β as it stands and the rollouts' statistics: what a resumed run continues from."""
        return {"kl_coef": self.controller.value, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.value = float(state["kl_coef"])
        self.history = list(state["history"])

    def record(self, step: int, logprob: torch.Tensor, info: dict[str, Any]) -> None:
        """Store log π of the tokens taken at step ``step`` of the rollout, and the env's ``info`` of
        that step: log π_pt of the tokens (per step) or of the episodes that ended (deferred)."""
        self.logprobs[step] = logprob
        if "ref_logprob" in info:
            self.ref_logprobs[step] = info["ref_logprob"]
            return
        final_info = info.get("final_info", {})
        if "ref_logprobs" not in final_info:
            raise ValueError(
                "the env reports no reference log-probs: the KL penalty needs info['ref_logprob'] every "
                "step or info['final_info']['ref_logprobs'] (a TokenVectorEnv with same-step autoreset)"
            )
        self._episode_ends.append((final_info["ref_logprobs"], final_info["response_length"]))

    @property
    def deferred(self) -> bool:
        """Whether the rollout recorded so far waits for log π_pt of episodes still running at its end."""
        return bool(self._episode_ends)

    def penalize(
        self, rewards: torch.Tensor, dones: torch.Tensor, running_info: dict[str, Any] | None = None
    ) -> torch.Tensor:
        """Shaped rewards [T, B] from the rollout's env rewards and dones; then β is updated.

        With deferred reference scoring ``running_info`` is the env's info of the episodes in
        progress (``ref_logprobs`` and ``response_length`` of their tokens so far).
        """
        if self._episode_ends:
            if running_info is None:
                raise ValueError("deferred reference scoring: penalize() needs the env's running_info()")
            self.ref_logprobs = self._deferred_ref_logprobs(dones, running_info)
            self._episode_ends = []
        self.kl = KL_ESTIMATORS[self.estimator](self.logprobs - self.ref_logprobs)
        beta = self.controller.value
        dones = dones.bool()
        final_rewards = torch.where(dones, rewards, 0.0)
        # Sums over the rollout (over every process's, when data-parallel), read on the host at once.
        sums = torch.stack(
            [
                self.kl.sum(),
                dones.sum().float(),
                final_rewards.sum(),
                final_rewards.square().sum(),
                torch.tensor(float(self.kl.numel()), device=self.kl.device),
            ]
        )
        if self.all_reduce is not None:
            sums = self.all_reduce(sums)
        kl_sum, count, score_sum, square_sum, num_steps = sums.tolist()
        self.reward_scale = (0.0, 1.0)
        if self.whiten_rewards and count > 1:
            mean = score_sum / count
            std = max((square_sum - count * mean**2) / (count - 1), 0.0) ** 0.5  # unbiased, as torch.std
            self.reward_scale = (mean, std + 1e-8)
            rewards = torch.where(dones, (rewards - mean) / self.reward_scale[1], rewards)
        shaped = rewards - beta * self.kl
        # An episode's KL is the sum over its tokens; the rollout holds `count` episode ends.
        stats = KLStats(kl=kl_sum / max(count, 1.0), score=score_sum / count if count else None, kl_coef=beta)
        self.history.append(stats)
        self.controller.update(stats.kl, int(num_steps))
        return shaped

    def _deferred_ref_logprobs(self, dones: torch.Tensor, running_info: dict[str, Any]) -> torch.Tensor:
        """log π_pt [T, B] of each step's token, read from the ref_logprobs of its episode's end.

        A step belongs to the episode that ends at the next done of its column, or to the episode
        still running at the rollout's end (source T, ``running_info``). Step t of an episode whose
        last step here is e and which had L tokens then took its token j = L − 1 − (e − t).
        """
        num_steps, num_envs = dones.shape
        sources = torch.stack([ref for ref, _ in self._episode_ends] + [running_info["ref_logprobs"]])
        # One upload per rollout: the lengths the env reported on the host.
        lengths = np.stack([length for _, length in self._episode_ends] + [running_info["response_length"]])
        lengths = torch.as_tensor(lengths, device=dones.device)
        steps = torch.arange(num_steps, device=dones.device)[:, None].expand(num_steps, num_envs)
        # Each step's source: the first done at or after it (a reversed running minimum), else T.
        candidates = torch.where(dones.bool(), steps, num_steps).flip(0)
        source = candidates.cummin(0).values.flip(0)
        envs = torch.arange(num_envs, device=dones.device).expand(num_steps, num_envs)
        token = lengths[source, envs] - 1 - (source.clamp(max=num_steps - 1) - steps)
        return sources[source, envs, token]
