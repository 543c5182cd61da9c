"""Imports run down the layers only: lm → envs → rewards → preferences → agents → applications.

Every module of ``rlhf_envs`` and ``agents`` is parsed (no import is executed) and each import of
our own code, wherever it stands (top level, inside a function, under ``TYPE_CHECKING``), is
checked against the importer's layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rlhf_envs", "agents")

# (module prefix, rank); the longest matching prefix wins. Applications may import everything.
# The package itself (its registration table; entry points and lazy names are strings) is the base.
ROOT_PACKAGE = ("rlhf_envs", 0)
LAYERS: tuple[tuple[str, int], ...] = (
    ("rlhf_envs.device", 0),
    ("rlhf_envs.checkpoints", 0),
    ("rlhf_envs.lm", 1),
    ("rlhf_envs.envs", 2),
    ("rlhf_envs.rewards", 3),
    ("rlhf_envs.preferences", 4),
    ("agents", 5),
    ("agents.train_cli", 6),
    ("rlhf_envs.cli", 6),
    ("rlhf_envs.demo", 6),
    ("rlhf_envs.pipeline", 6),
    ("rlhf_envs.label", 6),
)
NAMES = {0: "base", 1: "lm", 2: "envs", 3: "rewards", 4: "preferences", 5: "agents", 6: "applications"}


def layer_of(module: str) -> int | None:
    """The rank of a module of ours, or None for a third-party module."""
    if module.split(".")[0] not in PACKAGES:
        return None
    if module == ROOT_PACKAGE[0]:
        return ROOT_PACKAGE[1]
    matches = [
        (len(prefix), rank) for prefix, rank in LAYERS if module == prefix or module.startswith(prefix + ".")
    ]
    if not matches:
        raise ValueError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source``; ``from a import b`` names ``a.b``."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import submodule` imports the submodule, else a name of `base`.
            found += [(node.lineno, _submodule_or_module(base, alias.name)) for alias in node.names]
    return sorted(set(found))


def _submodule_or_module(base: str, name: str) -> str:
    path = ROOT.joinpath(*base.split("."), name)
    return f"{base}.{name}" if path.with_suffix(".py").is_file() or path.is_dir() else base


def violations(path: Path, source: str) -> list[str]:
    module = module_name(path)
    rank = layer_of(module)
    problems = []
    for line, target in imported_modules(source, module, path.name == "__init__.py"):
        target_rank = layer_of(target)
        if target_rank is not None and target_rank > rank:
            problems.append(
                f"{path.relative_to(ROOT)}:{line} ({NAMES[rank]}) imports {target} ({NAMES[target_rank]})"
            )
    return problems


def all_modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_every_import_runs_down_the_layers():
    problems = [problem for path in all_modules() for problem in violations(path, path.read_text())]
    assert not problems, "imports that run up the layers:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("rlhf_envs/envs/token.py", "from rlhf_envs.rewards.learned import LearnedReward"),
        ("rlhf_envs/rewards/trajectory.py", "from rlhf_envs.preferences import Segment"),
        ("rlhf_envs/preferences/trainer.py", "def f():\n    from agents import PPO"),
        (
            "rlhf_envs/lm/loading.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rlhf_envs.envs",
        ),
        ("rlhf_envs/rewards/learned.py", "from ..preferences import store"),
        ("agents/ppo.py", "from rlhf_envs import demo"),
    ],
)
def test_an_import_up_the_layers_is_reported(path, source):
    assert len(violations(ROOT / path, source)) == 1


def test_imports_down_and_third_party_pass():
    source = "import torch\nfrom rlhf_envs.lm.tokens import position_ids\nfrom . import batched\n"
    assert violations(ROOT / "rlhf_envs/envs/token.py", source) == []


def test_a_module_of_ours_outside_every_layer_is_refused():
    with pytest.raises(ValueError, match="in no layer"):
        layer_of("rlhf_envs.unplaced")
    assert layer_of("numpy") is None
    assert layer_of("rlhf_envs") == 0
