"""What a reward model must look like to plug into an environment.

These are structural types (``typing.Protocol``): any object with a matching ``__call__`` qualifies,
whether it is a plain function, a ``torch.nn.Module`` or an ensemble, without inheriting from anything.
They are for type checkers only: at run time nothing but ``callable`` can be checked, and the
wrappers check that.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

#: What a control reward model may return: a Python number, a NumPy array or scalar, or a torch tensor.
RewardLike = float | int | np.ndarray | np.number | torch.Tensor


class ControlRewardModel(Protocol):
    """A per-step reward ``r(obs, action, next_obs)`` for control environments.

    Called by :class:`~rlhf_envs.rewards.LearnedReward` with one unbatched transition, as the env returns
    it; the result is a scalar (shape ``()`` or ``(1,)``). Called by
    :class:`~rlhf_envs.rewards.VectorLearnedReward` once per batched step with ``[B, ...]`` arrays or tensors,
    as the vector env returns them (torch tensors stay on their device); the result has shape ``(B,)``.
    The inputs are passed through untouched, so the model converts them to whatever it needs.
    """

    def __call__(self, obs: Any, action: Any, next_obs: Any) -> RewardLike: ...
