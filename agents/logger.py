"""Training telemetry: episode statistics kept on the device, TensorBoard scalars and a progress bar."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm


class EpisodeTracker:
    """Returns and lengths of the episodes of ``num_envs`` parallel envs, accumulated on the device.

    :meth:`update` runs every step without a host sync; :meth:`summary` reads the finished
    episodes' means back once, when they are logged.
    """

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.returns = torch.zeros(num_envs, device=device)
        self.lengths = torch.zeros(num_envs, dtype=torch.long, device=device)
        # Sums over the episodes finished since the last summary: return, length, count.
        self.finished = torch.zeros(3, device=device)

    def update(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        self.returns += reward
        self.lengths += 1
        done_float = done.float()
        self.finished += torch.stack(
            [(self.returns * done_float).sum(), (self.lengths * done_float).sum(), done_float.sum()]
        )
        self.returns *= ~done
        self.lengths *= ~done

    def summary(self) -> dict[str, float]:
        """Mean return and length of the episodes finished since the last call (empty if none)."""
        total_return, total_length, count = self.finished.tolist()
        self.finished.zero_()
        if count == 0:
            return {}
        return {
            "episode_return": total_return / count,
            "episode_length": total_length / count,
            "episodes": count,
        }

    def reset(self) -> None:
        """Forget the episodes in progress (their envs were reset)."""
        self.returns.zero_()
        self.lengths.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"returns": self.returns, "lengths": self.lengths, "finished": self.finished}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("returns", "lengths", "finished"):
            getattr(self, name).copy_(state[name])


class Logger:
    """Writes scalars to TensorBoard under ``logdir`` (if given) and drives a tqdm progress bar.

    ``start_step`` > 0 continues an earlier run: TensorBoard then hides whatever the interrupted
    run logged at or after that step (``purge_step``), so a resumed curve has no duplicate tail.
    """

    def __init__(
        self, logdir: str | Path | None, total: int, start_step: int, desc: str, progress_bar: bool = True
    ) -> None:
        self.writer = None
        if logdir is not None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when logging

            self.writer = SummaryWriter(str(logdir), purge_step=start_step if start_step > 0 else None)
        self.bar = tqdm(total=total, initial=start_step, disable=not progress_bar, desc=desc, unit="step")
        self._last_time, self._last_step = time.perf_counter(), start_step
        self.latest: dict[str, float] = {}

    def record(self, step: int, scalars: dict[str, float]) -> None:
        """Log ``scalars`` (names like ``"rollout/episode_return"``) at env step ``step``, adding fps."""
        now = time.perf_counter()
        scalars = dict(scalars, **{"time/fps": (step - self._last_step) / max(now - self._last_time, 1e-9)})
        self._last_time, self._last_step = now, step
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)
        self.latest.update(scalars)
        if "rollout/episode_return" in scalars:
            self.bar.set_postfix(episode_return=f"{scalars['rollout/episode_return']:.2f}", refresh=False)

    def advance(self, steps: int) -> None:
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
