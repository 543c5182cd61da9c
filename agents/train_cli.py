"""``rlhf-envs train``: train an agent on an env and report what it learned."""

from __future__ import annotations

import argparse
import importlib

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

import rlhf_envs  # noqa: F401  (registers the env ids)
from rlhf_envs.envs.tabular import value_iteration

# --agent name -> "module:class"; imported only when chosen.
AGENTS = {
    "q-learning": "agents.q_learning:QLearning",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="rlhf_envs/TabularMDP-v0", help="a registered env id")
    parser.add_argument("--agent", choices=sorted(AGENTS), default="q-learning")
    parser.add_argument("--steps", type=int, default=50_000, help="env steps in total")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="write the trained agent to this path")


def run(args: argparse.Namespace) -> int:
    module_name, class_name = AGENTS[args.agent].split(":")
    agent_class = getattr(importlib.import_module(module_name), class_name)
    agent = agent_class(args.env, device=args.device, seed=args.seed)
    agent.learn(args.steps)
    if args.save:
        agent.save(args.save)
    if hasattr(agent, "q_table"):
        report_q_table(agent.q_table, gym.make(args.env).unwrapped)
    return 0


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
