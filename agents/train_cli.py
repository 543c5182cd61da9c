"""``rlhf-envs train``: train an agent on an env and report what it learned."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

import rlhf_envs  # noqa: F401  (registers the env ids)
from agents.base import CHECKPOINT_NAME
from agents.plotting import plot_learning_curve
from agents.schedules import LinearSchedule
from agents.token_policy import is_token_env
from rlhf_envs.cli import positive_int
from rlhf_envs.envs.tabular import value_iteration

# --agent name -> "module:class"; imported only when chosen.
AGENTS = {
    "q-learning": "agents.q_learning:QLearning",
    "ppo": "agents.ppo:PPO",
    "dqn": "agents.dqn:DQN",
}
#: On the TokenEnv the language model is the policy: PPO with the KL penalty, and soft Q-learning.
TOKEN_ENV_AGENTS = {
    "q-learning": "agents.token_q_learning:TokenQLearning",
    "ppo": "agents.token_ppo:TokenPPO",
}

# rl-baselines3-zoo's tuned PPO for HalfCheetah (hyperparams/ppo.yml, HalfCheetah-v3): one env,
# 160 small gradient steps per 512 env steps.
HALF_CHEETAH_ZOO_PPO = dict(
    num_envs=1,
    n_steps=512,
    batch_size=64,
    n_epochs=20,
    learning_rate=2.0633e-05,
    gamma=0.98,
    gae_lambda=0.92,
    clip_range=0.1,
    clip_range_vf=None,
    ent_coef=0.000401762,
    vf_coef=0.58096,
    max_grad_norm=0.8,
    normalize_observations=True,
    normalize_rewards=True,
    net_arch=(256, 256),
    activation="relu",
    log_std_init=-2.0,
    ortho_init=False,
)

#: Named configurations per (agent, env) pair, picked by ``--preset``; without it a pair trains
#: with its HYPERPARAMETERS row.
PRESETS: dict[tuple[str, str], dict[str, dict]] = {
    ("ppo", "rlhf_envs/HalfCheetah-v0"): {
        # zoo's network, normalization and discounting; 8 envs and 2x the minibatch make 1/4 of
        # zoo's gradient steps, and a 10x, linearly decaying learning rate with clip 0.2 makes up
        # for them (lr and clip chosen at 300k steps among 4 variants: return 4688, zoo's lr x5 with
        # clip 0.1: 3171; minibatch 128 at 1M steps, seed 0: 6066, against 5522 with 256).
        "fast": HALF_CHEETAH_ZOO_PPO
        | dict(
            num_envs=8,
            n_steps=256,
            batch_size=128,
            n_epochs=10,
            learning_rate=LinearSchedule(2e-4, 0.0),
            clip_range=0.2,
        ),
        "zoo": HALF_CHEETAH_ZOO_PPO,
    },
}
# Per-(agent, env) hyperparameters, as in rl-baselines3-zoo; other pairs use the config defaults.
HYPERPARAMETERS: dict[tuple[str, str], dict] = {
    # Many cars on the batched core; returns span −1000 to +50, hence reward normalization.
    ("ppo", "rlhf_envs/CarDriving-v0"): dict(
        num_envs=256, n_steps=16, batch_size=1024, normalize_rewards=True
    ),
    ("dqn", "rlhf_envs/CarDriving-v0"): dict(reward_scale=0.01),
    # Learns HalfCheetah in minutes; --preset zoo for rl-baselines3-zoo's configuration.
    ("ppo", "rlhf_envs/HalfCheetah-v0"): PRESETS[("ppo", "rlhf_envs/HalfCheetah-v0")]["fast"],
    # MuJoCo steps on the host: a few envs, and more updates per step than on the batched cores.
    ("dqn", "rlhf_envs/HalfCheetah-v0"): dict(
        num_envs=4, learning_starts=5_000, batch_size=256, gradient_steps=1, target_update_interval=2_000
    ),
}


def hyperparameters(agent: str, env_id: str, preset: str | None = None) -> dict:
    """The config ``agent`` trains with on ``env_id``: its ``preset``, else its HYPERPARAMETERS row."""
    if preset is None:
        return dict(HYPERPARAMETERS.get((agent, env_id), {}))
    presets = PRESETS.get((agent, env_id), {})
    if preset not in presets:
        known = f"choose one of {sorted(presets)}" if presets else "it has none"
        raise ValueError(f"--preset {preset} is not a preset of {agent} on {env_id}; {known}")
    return dict(presets[preset])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="rlhf_envs/TabularMDP-v0", help="a registered env id")
    parser.add_argument(
        "--agent",
        choices=sorted(AGENTS),
        default="q-learning",
        help="on the TokenEnv: ppo is TokenPPO (PPO + KL), q-learning token-level soft Q-learning",
    )
    parser.add_argument("--steps", type=positive_int, default=50_000, help="env steps in total")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--preset",
        default=None,
        help="a named configuration of the agent on the env (PPO on HalfCheetah: fast, zoo); "
        "default: the table's row (fast for PPO on HalfCheetah)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="write the trained agent to this path")
    parser.add_argument("--logdir", default=None, help="TensorBoard logs, checkpoints and the learning curve")
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        help="env steps between checkpoints (default: steps/10)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from LOGDIR/checkpoint.pt up to --steps in total"
    )


def agent_class(agent: str, env_id: str) -> type:
    """The class that ``--agent`` names for ``env_id`` (its token form on the TokenEnv)."""
    agents = TOKEN_ENV_AGENTS if is_token_env(env_id) else AGENTS
    if agent not in agents:
        raise ValueError(f"--agent {agent} does not train on {env_id}; choose one of {sorted(agents)}")
    module_name, class_name = agents[agent].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def check_env_id(env_id: str) -> None:
    """A ValueError naming ``--env`` unless ``env_id`` is registered (``module:id`` imports the module)."""
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        gym.spec(name)
    except (ImportError, gym.error.Error) as error:
        raise ValueError(f"--env {env_id} is not a registered env id: {error}") from None


def run(args: argparse.Namespace) -> int:
    check_env_id(args.env)
    agent = train(agent_class(args.agent, args.env), args)
    if args.save:
        agent.save(args.save)
    if hasattr(agent, "q_table"):
        report_q_table(agent.q_table, gym.make(args.env).unwrapped)
    return 0


def train(agent_class: type, args: argparse.Namespace):
    """Train to ``args.steps`` env steps in total, anew or from ``LOGDIR/checkpoint.pt``."""
    logging: dict = {}
    if args.logdir:
        every = args.checkpoint_every if args.checkpoint_every is not None else max(args.steps // 10, 1)
        logging = dict(logdir=args.logdir, checkpoint_every=every)
    if args.resume:
        if not args.logdir:
            raise ValueError("--resume needs the --logdir of the run to continue")
        checkpoint = Path(args.logdir) / CHECKPOINT_NAME
        agent = agent_class.load(checkpoint, env=args.env, device=args.device, **logging)
        remaining = args.steps - agent.num_timesteps
        if remaining > 0:
            agent.learn(remaining, reset_num_timesteps=False)
    else:
        config = hyperparameters(args.agent, args.env, args.preset)
        agent = agent_class(args.env, device=args.device, seed=args.seed, **config, **logging)
        agent.learn(args.steps)
    Console().print(f"{args.agent}: {agent.num_timesteps} env steps on {args.env}")
    if args.logdir:
        agent.save(Path(args.logdir) / CHECKPOINT_NAME)
        try:
            curve = plot_learning_curve(args.logdir, Path(args.logdir) / "learning_curve.png")
            Console().print(f"learning curve: {curve}")
        except ValueError as error:  # no episode ended yet: nothing to plot
            Console().print(f"no learning curve: {error}")
    return agent


def report_q_table(q_table: np.ndarray, env: gym.Env) -> None:
    """Print the learned Q table and greedy policy, beside Q* when the env's tables are known."""
    console = Console()
    known = all(hasattr(env, name) for name in ("P", "R", "gamma"))
    q_star, optimal = value_iteration(env.P, env.R, env.gamma) if known else (None, None)
    table = Table(title="Learned Q (and Q*)" if known else "Learned Q")
    table.add_column("state", justify="right")
    for action in range(q_table.shape[1]):
        table.add_column(f"a={action}", justify="right")
    table.add_column("greedy", justify="right")
    if known:
        table.add_column("optimal", justify="right")
    for state, row in enumerate(q_table):
        cells = [
            f"{value:.3f}" + (f" ({q_star[state, a]:.3f})" if known else "") for a, value in enumerate(row)
        ]
        extra = [str(optimal[state])] if known else []
        table.add_row(str(state), *cells, str(int(row.argmax())), *extra)
    console.print(table)
    if known:
        error = np.abs(q_table - q_star).max()
        console.print(
            f"max |Q - Q*| = {error:.4f} ({error / np.abs(q_star).max():.2%} of max |Q*|); "
            f"greedy policy optimal in {(q_table.argmax(1) == optimal).sum()}/{len(optimal)} states"
        )
