"""``rlhf-envs label``: serve the labelling page over a preference store.

Pairs come from a control env (segments of random-action rollouts, rendered headless to clips), from
a language model (two sampled continuations of a prompt), or from the queue a training loop left
behind: with neither ``--env`` nor ``--text`` the pairs still waiting in the queue are served.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from rlhf_envs.label.app import create_app
from rlhf_envs.label.clips import CLIP_FORMATS
from rlhf_envs.label.session import LabelSession, check_labeler_name
from rlhf_envs.preferences import PreferenceStore, collect_segments, uniform_pairs
from rlhf_envs.preferences.text import TextPreferenceStore

__all__ = [
    "LOOPBACK",
    "access",
    "add_arguments",
    "address",
    "queue_env_pairs",
    "queue_text_pairs",
    "run",
    "serve",
]

#: Addresses only this machine reaches: no token is needed there.
LOOPBACK = ("127.0.0.1", "localhost")
INSTRUCTIONS = {
    "control": "Which clip shows the better behaviour? Watch both loops, then choose.",
    "text": "Which continuation of the prompt is better?",
}


def access(host: str, token: str | None) -> tuple[str | None, list[str] | None]:
    """The access token and the accepted ``Host`` names for serving on ``host``.

    127.0.0.1 / localhost need no token, and then only those names may reach the app (a page from
    elsewhere cannot rebind its DNS name to 127.0.0.1); any other address needs a token, generated
    when not given.
    """
    if host not in LOOPBACK and not token:
        token = secrets.token_urlsafe(24)
    return token, list(LOOPBACK) if host in LOOPBACK and token is None else None


def address(host: str, port: int, token: str | None) -> str:
    """The page's address, with the token when there is one."""
    shown = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(
    session: LabelSession,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    print_fn: Callable[[str], None] = print,
    **app_options: Any,
) -> None:
    """Serve ``session`` with uvicorn until interrupted (Ctrl-C or SIGTERM make every answer final).

    Any ``host`` but 127.0.0.1 / localhost needs an access token: one is generated when not given;
    the address printed carries it.
    """
    token, allowed_hosts = access(host, token)
    app = create_app(session, token=token, allowed_hosts=allowed_hosts, **app_options)
    print_fn(f"Label at {address(host, port, token)}")
    print_fn(f"Labels go to {session.store.path}; pairs waiting: {len(session.pending)}. Ctrl-C stops.")
    # uvicorn shuts down gracefully on Ctrl-C, then re-raises it: a stop, not an error to trace back.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host=host, port=port, log_level="warning")
    print_fn(f"Stopped; {len(session.store)} labels in {session.store.path}.")


def queue_env_pairs(
    session: LabelSession,
    env_id: str,
    num_pairs: int,
    segment_length: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> int:
    """Roll out random actions in ``env_id`` (rendered), cut segments, queue ``num_pairs`` uniform pairs."""
    import gymnasium as gym

    env = gym.make(env_id, render_mode="rgb_array", **(env_kwargs or {}))
    try:
        segments = collect_segments(
            env, None, max(2, num_pairs) * segment_length, segment_length, seed=seed, render=True
        )
        fps = float(env.metadata.get("render_fps") or 10)
    finally:
        env.close()
    for i, j in uniform_pairs(len(segments), num_pairs, np.random.default_rng(seed)):
        session.add_segment_pair(segments[i], segments[j], fps=fps, meta={"env": env_id})
    return num_pairs


def queue_text_pairs(
    session: LabelSession,
    num_pairs: int,
    model: str = "embedded",
    prompts: str | None = None,
    max_new_tokens: int = 24,
    seed: int = 0,
    device: str = "auto",
) -> int:
    """Sample two continuations of ``num_pairs`` prompts from ``model`` and queue them."""
    from rlhf_envs.preferences.reward_trainer import sample_continuation_pairs

    pair_prompts, first, second = sample_continuation_pairs(
        model, prompts=prompts, num_pairs=num_pairs, max_new_tokens=max_new_tokens, seed=seed, device=device
    )
    for prompt, left, right in zip(pair_prompts, first, second, strict=True):
        session.add_text_pair(prompt, left, right, meta={"model": model})
    return num_pairs


def _queued_kind(queue_dir: Path) -> str | None:
    journal = queue_dir / "journal.jsonl"
    if not journal.is_file():
        return None
    with open(journal, encoding="utf-8") as lines:
        first = lines.readline()
    return json.loads(first).get("kind") if first.strip() else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", type=Path, required=True, help="the preference store (.jsonl) labels go to"
    )
    parser.add_argument(
        "--queue", type=Path, default=None, help="the session's folder (default <store>.queue)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--env", default=None, help="a control env id: label clips of its segments")
    source.add_argument(
        "--text", action="store_true", help="label pairs of continuations sampled from --model"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=20,
        help="keep this many pairs waiting: new ones top the queue up (default 20)",
    )
    parser.add_argument("--segment-length", type=int, default=50, help="steps per clip (--env)")
    parser.add_argument(
        "--env-kwargs",
        type=json.loads,
        default=None,
        help="JSON keyword arguments of gym.make, e.g. '{\"width\": 320}'",
    )
    parser.add_argument(
        "--model", default="embedded", help="causal LM for --text: 'embedded', an id or a path"
    )
    parser.add_argument(
        "--prompts", default=None, help="prompts file for --text (default: the embedded LM's)"
    )
    parser.add_argument("--pair-tokens", type=int, default=24, help="tokens per continuation (--text)")
    parser.add_argument(
        "--labeler", default=None, help="the name the page starts with (default: your user name)"
    )
    parser.add_argument("--instructions", default=None, help="what 'better' means, shown above each pair")
    parser.add_argument(
        "--target", type=int, default=None, help="labels wanted (default: pairs × labels per pair)"
    )
    parser.add_argument(
        "--labels-per-pair", type=int, default=1, help="answers per pair from different people"
    )
    parser.add_argument("--undo-seconds", type=float, default=10.0, help="how long a label can be undone")
    parser.add_argument("--clip-format", choices=CLIP_FORMATS, default="mp4")
    parser.add_argument("--host", default="127.0.0.1", help="any other address than 127.0.0.1 needs a token")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=None, help="access token (generated for a non-loopback --host)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    queue_dir = args.queue or Path(f"{args.store}.queue")
    kind = "control" if args.env else "text" if args.text else _queued_kind(queue_dir)
    if kind is None:
        raise SystemExit(
            f"nothing to label: give --env ID or --text, or a --queue with pairs ({queue_dir} has none)"
        )
    if args.pairs < 0:
        raise SystemExit(f"--pairs must be >= 0, got {args.pairs}")
    labeler = check_labeler_name(args.labeler or getpass.getuser())
    store_class = PreferenceStore if kind == "control" else TextPreferenceStore
    # A line torn by a killed server was never acknowledged; the session rewrites it from its journal.
    store = store_class(args.store, repair=True)
    session = LabelSession(
        store,
        queue_dir,
        labels_per_pair=args.labels_per_pair,
        undo_seconds=args.undo_seconds,
        target=args.target,
        clip_format=args.clip_format,
    )
    missing = args.pairs - len(session.pending)
    if missing > 0 and args.env:
        print(f"rendering {missing} pairs of {args.segment_length}-step clips of {args.env}...")
        queue_env_pairs(
            session, args.env, missing, args.segment_length, args.seed + len(session), args.env_kwargs
        )
    elif missing > 0 and args.text:
        print(f"sampling {missing} pairs of continuations from {args.model}...")
        queue_text_pairs(
            session,
            missing,
            args.model,
            args.prompts,
            args.pair_tokens,
            args.seed + len(session),
            args.device,
        )
    serve(
        session,
        host=args.host,
        port=args.port,
        token=args.token,
        instructions=args.instructions or INSTRUCTIONS[kind],
        default_labeler=labeler,
    )
    return 0
