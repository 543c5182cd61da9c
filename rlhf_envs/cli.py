"""The ``rlhf-envs`` command.

Each subcommand lives beside the code it drives and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together, importing each module lazily so that
``rlhf-envs --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("agents.train_cli", "train an agent on an env and report what it learned"),
    "pretrain": ("rlhf_envs.lm.pretrain", "pretrain the embedded default language model"),
    "demo": ("rlhf_envs.demo", "the RLHF pipeline end to end on the embedded model"),
    "reward-model": ("rlhf_envs.preferences.reward_trainer", "train the embedded text reward model"),
    "label": ("rlhf_envs.label.command", "label preferences in the browser (a local web app)"),
}


#: Errors that mean "the input is wrong" (an argument, a file, a checkpoint), not "the program is":
#: reported as one line. Subcommands raise ValueError for bad input; a missing file is an OSError.
USER_ERRORS = (ValueError, OSError)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-envs", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
    """Run a subcommand. A user error ends in one line on stderr and exit code 2 (with ``--debug``, in
    its traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except USER_ERRORS as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"rlhf-envs {args.command}: error: {message}", file=sys.stderr)
        return 2


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a step count, a batch size...)."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (a count that may be none)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a KL target...)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
