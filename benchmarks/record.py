"""What every benchmark writes beside its printout: ``benchmarks/results/<name>.json``.

The figures, the command that produced them, the machine and the date, so that the README's
tables cite a file instead of a remembered number.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """The hardware and software a figure was measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def result_path(name: str, device: str | torch.device = "cpu") -> Path:
    """``benchmarks/results/<name>.json`` for CPU figures, ``<name>_cuda.json`` for a GPU's: a GPU run never
    overwrites the CPU figures that the README cites, nor the other way round."""
    kind = torch.device(device).type
    return RESULTS_DIR / (f"{name}.json" if kind == "cpu" else f"{name}_{kind}.json")


def write_result(
    name: str, figures: dict[str, Any], notes: str = "", device: str | torch.device = "cpu"
) -> Path:
    """Write ``figures`` with the command, machine and date to ``result_path(name, device)``."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = result_path(name, device)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": figures,
        "notes": notes,
    }
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return path
