"""The browser app as the labeler of a training loop.

``WebLabeler`` serves a ``LabelSession`` from a background thread of the training process: the loop
hands it pairs (``submit``) and takes the labels people have given (``collect``), as new rows of the
session's store. Two modes:

- ``"sync"``: ``collect`` waits until every pair handed over has its answers and they are final,
  so each round trains on all of its labels;
- ``"async"``: ``collect`` returns the labels given so far at once and training goes on; pairs not
  labelled yet stay in the queue and their labels arrive in a later round (Christiano et al., 2017).

The queue is on disk: pairs handed over before a crash or a restart are served again, and their
labels are collected by the next run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import uvicorn

from rlhf_envs.label.app import create_app
from rlhf_envs.label.command import access, address
from rlhf_envs.label.session import LabelSession
from rlhf_envs.preferences import Segment

__all__ = ["WebLabeler"]


class WebLabeler:
    """Hands pairs to people in the browser and collects their labels for a training loop.

    Args:
        session: the queue and the store labels go to (``collect`` returns the store's new rows:
            ``Comparison`` objects for a ``PreferenceStore``, TRL rows for a ``TextPreferenceStore``).
        mode: ``"sync"`` (wait for every label handed over) or ``"async"`` (take the labels so far).
        fps: frame rate of the clips of control segments.
        serve: run the web app on ``host``:``port`` (``port=0`` picks a free one); ``False`` when the
            session is answered from code (one process owns a queue: a separate ``rlhf-envs label``
            on it would not see the pairs handed over later).
        host, port, token: as for ``rlhf-envs label``: a host other than 127.0.0.1 needs a token,
            generated and printed when not given.
        timeout: the longest a synchronous ``collect`` waits (``None``: until the labels are there).
        print_fn: where the address and the waiting messages go.
        app_options: passed to ``create_app`` (``instructions``, ``default_labeler``, ``title``).
    """

    def __init__(
        self,
        session: LabelSession,
        mode: Literal["sync", "async"] = "sync",
        *,
        fps: float = 10.0,
        serve: bool = True,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str | None = None,
        timeout: float | None = None,
        print_fn: Callable[[str], None] = print,
        **app_options: Any,
    ) -> None:
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        self.session = session
        self.mode = mode
        self.fps = fps
        self.timeout = timeout
        self.print_fn = print_fn
        self._collected = 0  # rows of the store returned by collect()
        self.url: str | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        if serve:
            self._start(host, port, token, app_options)

    def _start(self, host: str, port: int, token: str | None, app_options: dict[str, Any]) -> None:
        token, allowed_hosts = access(host, token)
        app = create_app(self.session, token=token, allowed_hosts=allowed_hosts, **app_options)
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="label-app", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(
                    f"the labelling app could not start on {host}:{port} (is the port in use?)"
                )
            time.sleep(0.05)
        self.url = address(host, self._server.servers[0].sockets[0].getsockname()[1], token)
        self.print_fn(f"Label at {self.url}")

    # -- the loop's side ------------------------------------------------------------------------
    def submit(
        self, pairs: Sequence[tuple[Segment, Segment]], meta: dict[str, Any] | None = None
    ) -> list[str]:
        """Queue pairs of segments (with image frames) for labelling; returns their ids."""
        return [self.session.add_segment_pair(left, right, self.fps, meta) for left, right in pairs]

    def submit_texts(
        self,
        prompts: Sequence[str],
        left: Sequence[str],
        right: Sequence[str],
        meta: dict[str, Any] | None = None,
    ) -> list[str]:
        """Queue pairs of continuations of ``prompts`` for labelling; returns their ids."""
        if not len(prompts) == len(left) == len(right):
            raise ValueError(f"got {len(prompts)} prompts, {len(left)} and {len(right)} continuations")
        return [
            self.session.add_text_pair(p, a, b, meta) for p, a, b in zip(prompts, left, right, strict=True)
        ]

    @property
    def store(self) -> Any:
        """Where the labels go (the session's store)."""
        return self.session.store

    @property
    def pending(self) -> int:
        """Pairs handed over (in this run or an earlier one) that still wait for answers."""
        return len(self.session.pending)

    @property
    def outstanding(self) -> int:
        """Pairs whose labels ``collect`` has not returned yet: waiting, being answered, or stored since."""
        with self.session.changed:
            return self.session.unanswered + len(self.store) - self._collected

    def collect(self, at_least: int = 0) -> list[Any]:
        """The store's rows not returned before (the first call returns those of earlier runs too).

        ``"sync"``: first waits until every pair handed over has its final answers; ``"async"``: waits
        only until ``at_least`` new labels are there. ``TimeoutError`` after ``timeout`` seconds.
        """
        if self.mode == "sync":
            self._wait_until(lambda: self.session.settled, "every pair is answered")
        else:
            self._wait_until(lambda: len(self.store) - self._collected >= at_least, f"{at_least} new labels")
        new = [self.store[i] for i in range(self._collected, len(self.store))]
        self._collected += len(new)
        return new

    def _wait_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        told = False
        with self.session.changed:
            self.session.commit_due()
            while not done():
                if not told:
                    where = f" at {self.url}" if self.url else ""
                    self.print_fn(f"waiting until {what}: {self.pending} pairs wait for labels{where}")
                    told = True
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"waited {self.timeout} s; {self.pending} pairs still wait for labels")
                # Answers become final when their undo window closes: look again every second.
                self.session.changed.wait(1.0)
                self.session.commit_due()

    def close(self) -> None:
        """Stop the app (its shutdown makes every answer given so far final)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> WebLabeler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
