"""Issue 14 for the applications: the CLI, the demo and the preference stores refuse bad input before
any work, with one line naming the problem, and recover from what a killed writer leaves behind.

CLI tests run ``rlhf_envs.cli.main`` in-process: a user error must give a non-zero exit code and a last
stderr line naming the problem (argparse's usage line before it is fine), never an exception escaping
``main``.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from tiny_lm import tiny_lm, tiny_tokenizer

from rlhf_envs.cli import main
from rlhf_envs.preferences import PreferenceStore, Segment
from rlhf_envs.preferences.text import TextPreferenceStore

PROMPTS = ["the cat sat", "a good day", "love and joy", "in the beginning", "the dog", "a bad day"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny causal LM folder (a 96-token context) and a prompts file, as ``--model/--prompts`` take them."""
    folder = tmp_path_factory.mktemp("tiny")
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer).save_pretrained(folder / "lm")
    tokenizer.save_pretrained(folder / "lm")
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return folder


def demo_argv(model_dir, out, *extra: str) -> list[str]:
    model, prompts = str(model_dir / "lm"), str(model_dir / "prompts.txt")
    return [
        "demo",
        "--quick",
        "--model",
        model,
        "--prompts",
        prompts,
        "--out",
        str(out),
        "--threads",
        "1",
        *extra,
    ]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``rlhf-envs ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except Exception as error:  # noqa: BLE001 - the point: nothing may escape main()
        pytest.fail(f"rlhf-envs {' '.join(argv)} raised {type(error).__name__}: {error}")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *names: str) -> None:
    """A non-zero exit, no traceback, and a last stderr line that names every one of ``names``."""
    assert code not in (0, None), f"exit code {code!r} for a user error"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no message on stderr"
    for name in names:
        assert name in lines[-1], f"{name!r} not named in {lines[-1]!r}"


# -- item 2 and 8: numbers and names the CLI refuses before any work --------------------------------
CLI_USER_ERRORS = [
    (["train", "--steps", "-5", "--device", "cpu"], ["--steps", "-5"]),
    (["train", "--steps", "0", "--device", "cpu"], ["--steps"]),
    (["train", "--steps", "2.5"], ["--steps", "2.5"]),
    (["train", "--checkpoint-every", "0", "--logdir", "logs"], ["--checkpoint-every"]),
    (["train", "--env", "rlhf_envs/NoSuchEnv-v0"], ["rlhf_envs/NoSuchEnv-v0"]),
    (["train", "--agent", "dqn", "--env", "rlhf_envs/TokenEnv-v0"], ["--agent dqn"]),
    (["train", "--agent", "ppo", "--resume"], ["--resume", "--logdir"]),
    (["train", "--agent", "ppo", "--resume", "--logdir", "empty"], ["checkpoint.pt"]),
    (["train", "--device", "tpu"], ["tpu"]),
    (["demo", "--prompts", "/nonexistent/prompts.txt"], ["/nonexistent/prompts.txt"]),
    (["demo", "--pairs", "0"], ["--pairs"]),
    (["demo", "--new-tokens", "-3"], ["--new-tokens"]),
    (["demo", "--kl-target", "nan"], ["--kl-target"]),
    (["demo", "--kl-coef", "0"], ["--kl-coef"]),
    (["demo", "--threads", "0"], ["--threads"]),
]


@pytest.mark.parametrize(
    ("argv", "names"), CLI_USER_ERRORS, ids=[" ".join(argv) for argv, _ in CLI_USER_ERRORS]
)
def test_cli_user_errors_end_in_one_line_and_a_non_zero_exit(argv, names, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, *names)
    assert not list(tmp_path.iterdir()), "a refused command left files behind"


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--resume needs the --logdir"):
        main(["--debug", "train", "--agent", "ppo", "--resume"])


# -- item 5: what a kill leaves behind must not block a resume -------------------------------------
def torn_text_store(path, records: int) -> bytes:
    """A store of ``records`` labels whose last line a kill tore; returns the torn bytes."""
    store = TextPreferenceStore(path)
    for index in range(records):
        store.add(PROMPTS[index % len(PROMPTS)], f" good {index}", f" bad {index}")
    torn = b'{"prompt": "the cat", "chosen": " a'
    with open(path, "ab") as handle:
        handle.write(torn)
    return torn


def test_text_store_repair_cuts_a_torn_last_line_and_keeps_a_backup(tmp_path):
    path = tmp_path / "preferences.jsonl"
    torn = torn_text_store(path, records=3)
    before = path.read_bytes()
    with pytest.warns(UserWarning, match=f"dropped {len(torn)} bytes"):
        store = TextPreferenceStore(path, repair=True)
    assert len(store) == 3 and path.read_bytes() == before[: -len(torn)]
    (backup,) = tmp_path.glob("preferences.jsonl.*.bak")
    assert backup.read_bytes() == before
    store.add("a good day", " yes", " no")  # appends after the last whole line
    assert len(TextPreferenceStore(path)) == 4


def test_demo_resumes_from_a_preference_file_with_a_torn_last_line(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    torn_text_store(out / "preferences.jsonl", records=16)
    with pytest.warns(UserWarning, match="torn"):
        code, _, err = run_cli(demo_argv(model_dir, out), capsys)
    assert code == 0, err
    assert len(TextPreferenceStore(out / "preferences.jsonl")) == 16  # readable again, nothing lost


def test_reward_model_command_resumes_from_a_preference_file_with_a_torn_last_line(
    model_dir, tmp_path, capsys
):
    labels = tmp_path / "labels.jsonl"
    torn_text_store(labels, records=8)
    argv = ["reward-model", "--model", str(model_dir / "lm"), "--prompts", str(model_dir / "prompts.txt")]
    argv += ["--labels-file", str(labels), "--num-pairs", "8", "--out", str(tmp_path / "rm")]
    argv += ["--num-epochs", "1", "--batch-size", "4", "--device", "cpu"]
    with pytest.warns(UserWarning, match="torn"):
        code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert len(TextPreferenceStore(labels)) == 8


def segment(seed: int) -> Segment:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(3, 4))
    return Segment(obs, rng.integers(3, size=3), obs + 1, rng.normal(size=3))


def test_store_reports_a_truncated_segment_file_as_a_corrupt_comparison(tmp_path):
    path = tmp_path / "prefs.jsonl"
    store = PreferenceStore(path)
    store.add(segment(0), segment(1), 1.0)
    store.add(segment(2), segment(3), 0.0)
    damaged = store.segment_dir / store.records[0]["segments"]
    damaged.write_bytes(damaged.read_bytes()[:40])

    with pytest.warns(UserWarning, match="skipped 1 corrupt line"):
        comparisons = list(PreferenceStore(path, skip_invalid=True))
    assert [comparison.label for comparison in comparisons] == [0.0]
    try:
        list(PreferenceStore(path))
    except zipfile.BadZipFile:
        pytest.fail("a truncated segment file raised BadZipFile, not an error naming the file")
    except ValueError as error:
        assert damaged.name in str(error)
    else:
        pytest.fail("a truncated segment file was read without an error")


def test_store_repair_removes_orphan_segment_files_and_a_torn_last_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    store = PreferenceStore(path)
    store.add(segment(0), segment(1), 1.0)
    kept = store.segment_dir / store.records[0]["segments"]
    orphan = store.segment_dir / "0123456789abcdef.npz"
    orphan.write_bytes(kept.read_bytes())
    leftover = store.segment_dir / "fedcba9876543210.npz.tmp"
    leftover.write_bytes(b"PK\x03\x04")
    with open(path, "ab") as handle:
        handle.write(b'{"segments": "ab')

    with pytest.warns(UserWarning, match="dropped 16 bytes"):
        removed = PreferenceStore(path, skip_invalid=True).repair()
    assert sorted(removed) == sorted([orphan, leftover])
    assert kept.is_file() and not orphan.exists() and not leftover.exists()
    assert len(PreferenceStore(path)) == 1  # the torn line is gone: a strict open succeeds
    assert PreferenceStore(path, repair=True).repair() == []  # nothing left to repair


# -- items 6 and 7: the demo checks its arguments first, and writes strict JSON --------------------
def test_demo_refuses_too_many_new_tokens_before_any_work(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(demo_argv(model_dir, out, "--new-tokens", "200"), capsys)
    assert_user_error(code, err, "--new-tokens", "96")
    assert not out.exists()


def test_demo_refuses_an_output_folder_it_cannot_write_before_any_work(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model").write_text("not a folder")
    code, _, err = run_cli(demo_argv(model_dir, out), capsys)
    assert_user_error(code, err, str(out / "model"))
    assert sorted(path.name for path in out.iterdir()) == ["model"]


def test_demo_summary_is_strict_json(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(demo_argv(model_dir, out), capsys)
    assert code == 0, err

    def refuse(constant: str) -> None:
        raise ValueError(f"summary.json holds {constant}, which is not JSON")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    # The tiny model's samples give VADER nothing to score: the agreement is undefined, not NaN.
    assert summary["reward_model"]["oracle_agreement"] is None
