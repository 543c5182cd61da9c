"""The lecture's tabular MDP: 4 states, the same 3 actions in each, solved by Q-learning."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlhf_envs.envs.arguments import positive_int, real
from rlhf_envs.envs.batched import BatchedCore, CoreEnv, CoreVectorEnv, default_vector_device, vector_horizon

# The default instance (see TabularMDP's docstring). States 0–3 form a path to a goal.
# Actions: 0 = rest (a small sure reward, stay), 1 = advance (no reward now, usually one state
# closer to the goal; at the goal it cashes in), 2 = sprint (a bigger reward now, sent home to 0).
DEFAULT_P = np.array(
    [
        # s = 0
        [[1.0, 0.0, 0.0, 0.0], [0.1, 0.9, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
        # s = 1
        [[0.0, 1.0, 0.0, 0.0], [0.0, 0.1, 0.9, 0.0], [1.0, 0.0, 0.0, 0.0]],
        # s = 2
        [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.1, 0.9], [1.0, 0.0, 0.0, 0.0]],
        # s = 3
        [[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
    ]
)
DEFAULT_R = np.array(
    [
        [1.0, 0.0, 0.5],
        [1.0, 0.0, 2.0],
        [1.0, 0.0, 2.0],
        [1.0, 10.0, 3.0],
    ]
)
DEFAULT_GAMMA = 0.9
#: Steps per episode before truncation; registered as the env's ``max_episode_steps``.
DEFAULT_HORIZON = 100


def validate_mdp(P: Any, R: Any, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Check (P, R, γ) and return them as float64 arrays; a ValueError or TypeError names what is wrong."""
    P, R = _float_table("P", P), _float_table("R", R)
    if P.ndim != 3 or P.shape[0] != P.shape[2]:
        raise ValueError(f"P must have shape [S, A, S] (P[s, a, s'] = probability), got {P.shape}")
    if R.shape != P.shape[:2]:
        raise ValueError(f"R must have shape [S, A] = {P.shape[:2]} to match P, got {R.shape}")
    if not (np.isfinite(P).all() and np.isfinite(R).all()):
        raise ValueError("P and R must be finite")
    # The batched core pays rewards from a float32 table: a larger reward would become infinity.
    if np.abs(R).max(initial=0.0) > np.finfo(np.float32).max:
        s, a = np.unravel_index(np.abs(R).argmax(), R.shape)
        raise ValueError(f"R[{s}, {a}] = {R[s, a]} is beyond float32's range, in which rewards are paid")
    if (P < 0).any():
        s, a, s_next = np.argwhere(P < 0)[0]
        raise ValueError(f"P has a negative probability: P[{s}, {a}, {s_next}] = {P[s, a, s_next]}")
    row_sums = P.sum(axis=2)
    if not np.allclose(row_sums, 1.0, atol=1e-6):
        s, a = np.argwhere(~np.isclose(row_sums, 1.0, atol=1e-6))[0]
        raise ValueError(
            f"P[{s}, {a}, :] must sum to 1 (a distribution over next states), sums to {row_sums[s, a]}"
        )
    real("gamma", gamma, low=0.0, high=1.0, high_open=True)
    return P, R


def _float_table(name: str, table: Any) -> np.ndarray:
    array = np.asarray(table)
    if array.dtype.kind not in "iuf":  # bools, complex numbers, strings, ragged lists
        raise TypeError(f"{name} must be an array of real numbers, got dtype {array.dtype}")
    return array.astype(np.float64)


def value_iteration(
    P: Any, R: Any, gamma: float = DEFAULT_GAMMA, tol: float = 1e-10, max_iterations: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Q* and its greedy policy from the lecture's Bellman equation.

    Iterates Q(x, a) ← R[x, a] + γ Σ_x' P[x' | x, a] max_a' Q(x', a') until the largest change is
    below ``tol``. Returns ``(q_star [S, A], policy [S])``.
    """
    P, R = validate_mdp(P, R, gamma)
    q = np.zeros_like(R)
    for _ in range(max_iterations):
        updated = R + gamma * P @ q.max(axis=1)
        change = np.abs(updated - q).max()
        q = updated
        if change < tol:
            return q, q.argmax(axis=1)
    raise RuntimeError(f"value iteration did not reach tol={tol} in {max_iterations} iterations")


class TabularCore(BatchedCore):
    """Batched dynamics of a finite MDP: the state is one integer per episode."""

    def __init__(
        self,
        P: Any,
        R: Any,
        gamma: float,
        horizon: int,
        initial_state_distribution: Any,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(device)
        P, R = validate_mdp(P, R, gamma)
        num_states, num_actions = R.shape
        initial = _float_table("initial_state_distribution", initial_state_distribution)
        if initial.shape != (num_states,) or (initial < 0).any() or not np.isclose(initial.sum(), 1.0):
            raise ValueError(
                f"initial_state_distribution must be {num_states} non-negative numbers summing to 1, "
                f"got {initial}"
            )
        self.P, self.R, self.gamma = P, R, float(gamma)
        self.horizon = positive_int("horizon", horizon)
        self.observation_space = gym.spaces.Discrete(num_states)
        self.action_space = gym.spaces.Discrete(num_actions)
        self._initial = initial
        self._build_tables()

    def _build_tables(self) -> None:
        # Sampling by inverting cumulative distributions takes one uniform draw per episode and
        # scales better with B than torch.multinomial over rows. float64 costs nothing on a CPU (and
        # keeps the episodes seeded there as they were); a GPU runs float64 at a fraction of float32's
        # speed, and float32 resolves probabilities to 1e-7.
        dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        self._transition_cdf = torch.as_tensor(self.P.cumsum(axis=2), dtype=dtype, device=self.device)
        self._initial_cdf = torch.as_tensor(self._initial.cumsum(), dtype=dtype, device=self.device)
        self._R = torch.as_tensor(self.R, dtype=torch.float32, device=self.device)

    def to(self, device: str | torch.device) -> TabularCore:
        moved = super().to(device)
        moved._build_tables()
        return moved

    def reset(self, num_envs: int, generator: torch.Generator) -> torch.Tensor:
        return self._sample(self._initial_cdf.expand(num_envs, -1), generator)

    def step(self, state, action, generator):
        reward = self._R[state, action]
        next_state = self._sample(self._transition_cdf[state, action], generator)
        terminated = torch.zeros_like(state, dtype=torch.bool)
        return next_state, reward, terminated, {}

    def _sample(self, cdf: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One index per row of ``cdf`` [B, S], drawn with the probabilities it accumulates."""
        uniform = torch.rand(cdf.shape[0], 1, generator=generator, device=self.device, dtype=cdf.dtype)
        return (cdf <= uniform).sum(dim=1).clamp(max=cdf.shape[1] - 1)

    def render(self, state: torch.Tensor, mode: str) -> str:
        return " ".join("[*]" if s == int(state) else "[ ]" for s in range(self.observation_space.n))


class TabularMDP(CoreEnv):
    """A finite MDP given by its tables, by default the lecture's 4 states × 3 actions.

    ## Description
    The lecture's Q-learning slide: a simple MDP with 4 states and the same 3 actions in every
    state, whose Q-function satisfies Q(x, a) = r + γ Σ_x' P[x' | x, a] max_a' Q(x', a'). Any
    (P, R, γ) can be given instead.

    The default instance is a path 0 → 1 → 2 → 3 to a goal. In every state, action 0 (*rest*)
    pays 1 and stays; action 1 (*advance*) pays 0 and moves one state on with probability 0.9
    (stays with 0.1), except at the goal, state 3, where it pays 10 and returns to 0; action 2
    (*sprint*) pays 0.5, 2, 2, 3 in states 0–3 and returns to 0. With γ = 0.9 the optimal policy
    advances everywhere, while the myopic policy that maximises R[s, a] rests in state 0 and
    sprints in states 1 and 2: long-term value and immediate reward disagree in three states.

    ## Action space
    `Discrete(A)`; 3 by default: 0 rest, 1 advance, 2 sprint.

    ## Observation space
    `Discrete(S)`: the current state; 4 by default.

    ## Rewards
    `R[s, a]` for taking action a in state s (the lecture's r(a) is the case of equal rows).

    ## Starting state
    Drawn from `initial_state_distribution`; state 0 by default.

    ## Episode end
    The MDP is continuing (discounted by γ, never terminates); an episode is truncated after
    `horizon` steps (by the `TimeLimit` of `gym.make`, registered with `max_episode_steps=100`, unless
    `horizon` is given). Agents should bootstrap through the truncation.
    After the episode has terminated or been truncated, `step()` raises a RuntimeError until `reset()`.

    ## Arguments
    - `P`: transition probabilities, shape [S, A, S], `P[s, a, s']`; rows sum to 1.
    - `R`: rewards, shape [S, A].
    - `gamma`: the discount in [0, 1), exposed for agents and `value_iteration`.
    - `horizon`: steps per episode before truncation (default 100).
    - `initial_state_distribution`: shape [S] (default: always state 0).
    - `render_mode`: `"ansi"` or None.
    - `device`: where the batched core runs (CPU by default for the single env).

    Bad tables raise a ValueError naming the problem (rows not summing to 1, negative entries,
    mismatched shapes, γ outside [0, 1)).

    ## Example
    >>> import gymnasium as gym
    >>> import rlhf_envs
    >>> from rlhf_envs.envs.tabular import value_iteration
    >>> env = gym.make("rlhf_envs/TabularMDP-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs
    0
    >>> obs, reward, terminated, truncated, info = env.step(2)  # sprint in state 0: 0.5 now, stay home
    >>> obs, reward
    (0, 0.5)
    >>> q_star, policy = value_iteration(env.unwrapped.P, env.unwrapped.R, env.unwrapped.gamma)
    >>> policy.tolist()  # the optimal policy advances everywhere
    [1, 1, 1, 1]

    ## Version history
    - v0: first version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        P: Any = DEFAULT_P,
        R: Any = DEFAULT_R,
        gamma: float = DEFAULT_GAMMA,
        horizon: int = DEFAULT_HORIZON,
        initial_state_distribution: Any = None,
        render_mode: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        core = TabularCore(P, R, gamma, horizon, _initial_or_default(initial_state_distribution, P), device)
        super().__init__(core, render_mode=render_mode)
        self.P, self.R = core.P, core.R


class TabularMDPVectorEnv(CoreVectorEnv):
    """``num_envs`` episodes of :class:`TabularMDP` on one device; see :class:`CoreVectorEnv`.

    Takes the arguments of :class:`TabularMDP`, ``as_tensors``, ``device`` (by default CUDA when
    present for tensors, the CPU for NumPy in and out: see
    :func:`~rlhf_envs.envs.batched.default_vector_device`), ``autoreset_mode`` (NEXT_STEP by default)
    and ``max_episode_steps`` (what ``gym.make_vec`` passes: the horizon unless ``horizon`` is given).

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import rlhf_envs
    >>> envs = gym.make_vec("rlhf_envs/TabularMDP-v0", num_envs=1024, vectorization_mode="vector_entry_point")
    >>> obs, info = envs.reset(seed=0)
    >>> obs.shape
    (1024,)
    >>> obs, rewards, terminated, truncated, info = envs.step(np.ones(1024, dtype=np.int64))
    >>> float(rewards.sum())  # advancing pays nothing before the goal
    0.0
    """

    metadata = {**CoreVectorEnv.metadata, "render_modes": ["ansi"]}

    def __init__(
        self,
        num_envs: int = 1,
        P: Any = DEFAULT_P,
        R: Any = DEFAULT_R,
        gamma: float = DEFAULT_GAMMA,
        horizon: int | None = None,
        initial_state_distribution: Any = None,
        render_mode: str | None = None,
        device: str | torch.device | None = None,
        as_tensors: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        max_episode_steps: int | None = None,
    ) -> None:
        horizon = vector_horizon(horizon, max_episode_steps, DEFAULT_HORIZON)
        device = default_vector_device(device, as_tensors)
        core = TabularCore(P, R, gamma, horizon, _initial_or_default(initial_state_distribution, P), device)
        super().__init__(core, num_envs, as_tensors, render_mode, autoreset_mode)
        self.P, self.R = core.P, core.R


def _initial_or_default(initial_state_distribution: Any, P: Any) -> Any:
    if initial_state_distribution is not None:
        return initial_state_distribution
    start = np.zeros(np.shape(P)[0])
    start[0] = 1.0
    return start
