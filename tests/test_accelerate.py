"""Token PPO data-parallel under ``accelerate launch`` (issue 15 item 3): two gloo processes on the CPU
keep identical parameters and β, and match one process stepping the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("accelerate_token_ppo_worker.py")
ACCELERATE = Path(sys.executable).with_name("accelerate")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str]) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[1])}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


@pytest.mark.slow  # two launches of tiny-LM PPO: about 40 s on a busy 2-core machine
def test_two_processes_agree_with_each_other_and_with_one(tmp_path):
    launch = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    run([*launch, str(WORKER), str(tmp_path / "two"), "4"])
    run([sys.executable, str(WORKER), str(tmp_path / "one"), "8"])
    rank0, rank1 = load(tmp_path / "two" / "rank0.pt"), load(tmp_path / "two" / "rank1.pt")
    one = load(tmp_path / "one" / "rank0.pt")

    # The processes take the same steps: bit-identical parameters and the same β every rollout.
    assert rank0["history"] == rank1["history"]
    for name, tensor in rank0["state"].items():
        assert torch.equal(rank1["state"][name], tensor), name
    betas = [beta for _, _, beta in rank0["history"]]
    assert len(set(betas)) == len(betas)  # β moved every rollout

    # Two processes of 4 episodes sample and learn what one process of 8 does, up to the float
    # rounding of other batch shapes: stated tolerance 1e-4 on parameters, 1e-4 relative on the
    # KL, score and β of every rollout.
    for name, tensor in one["state"].items():
        torch.testing.assert_close(rank0["state"][name], tensor, rtol=0, atol=1e-4, msg=name)
    for two_stats, one_stats in zip(rank0["history"], one["history"], strict=True):
        assert two_stats == pytest.approx(one_stats, rel=1e-4, abs=1e-6)
