"""Learning curves read back from an agent's TensorBoard log."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def read_scalars(
    logdir: str | os.PathLike, tag: str = "rollout/episode_return"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(steps, values)`` logged under ``tag`` in ``logdir``, in step order.

    A resumed run logs again the steps its interrupted predecessor logged after the checkpoint;
    for each step the latest value written wins, so the curve is the resumed one.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    files = sorted(Path(logdir).glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files in {logdir}")
    latest: dict[int, tuple[float, float]] = {}
    tags: set[str] = set()
    for file in files:
        for event in EventFileLoader(str(file)).Load():
            for value in event.summary.value:
                tags.add(value.tag)
                if value.tag == tag:
                    number = float(tensor_util.make_ndarray(value.tensor))
                    if event.step not in latest or event.wall_time >= latest[event.step][0]:
                        latest[event.step] = (event.wall_time, number)
    if not latest:
        raise ValueError(f"{logdir} has no scalar {tag!r}; it has {sorted(tags)}")
    steps = np.array(sorted(latest))
    return steps, np.array([latest[step][1] for step in steps])


def plot_learning_curve(
    logdir: str | os.PathLike, path: str | os.PathLike, tag: str = "rollout/episode_return"
) -> Path:
    """Plot ``tag`` (the mean episode return) from ``logdir`` against env steps into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = read_scalars(logdir, tag)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(steps, values, label=tag.split("/")[-1])
    axes.set_xlabel("env steps")
    axes.set_ylabel(tag.split("/")[-1].replace("_", " "))
    axes.set_title(Path(logdir).name)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
