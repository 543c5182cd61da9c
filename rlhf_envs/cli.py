"""The ``rlhf-envs`` command.

Each subcommand lives beside the code it drives and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together, importing each module lazily so that
``rlhf-envs --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("agents.train_cli", "train an agent on an env and report what it learned"),
    "pretrain": ("rlhf_envs.lm.pretrain", "pretrain the embedded default language model"),
    "demo": ("rlhf_envs.demo", "the RLHF pipeline end to end on the embedded model"),
    "reward-model": ("rlhf_envs.preferences.reward_trainer", "train the embedded text reward model"),
    "label": ("rlhf_envs.label.command", "label preferences in the browser (a local web app)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-envs", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text)
        # Only the chosen subcommand's module is imported: its arguments are all argparse needs.
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
