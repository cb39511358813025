"""The audit's time limit, and the stage it is in, so that running out of time says where."""

from __future__ import annotations

import threading
import time

from .errors import TimeLimitError


class Cancelled(Exception):  # noqa: N818 -- a signal between the audit's two halves, not an error it reports
    """The other half of an overlapped audit failed (``engine.py``): this half stops. The engine raises
    the other half's error instead; this never leaves it."""


class Deadline:
    """The audit's time limit and the stage it is in, for errors that say where time ran out.

    The stage is kept per thread: while the engine runs the sweep beside the model stage's fits, each
    names its own stage in its errors. :meth:`cancel` makes every later :meth:`check` raise
    :class:`Cancelled` (the other half failed).

    Parameters
    ----------
    seconds:
        Time limit from now; ``None`` for none.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.ends = None if seconds is None else time.monotonic() + seconds
        self._stage = "loading"  # the stage last set by any thread: a thread that set none reads it
        self._local = threading.local()
        self._cancelled = threading.Event()

    @property
    def stage(self) -> str:
        return getattr(self._local, "stage", self._stage)

    @stage.setter
    def stage(self, value: str) -> None:
        self._local.stage = self._stage = value

    def remaining(self) -> float | None:
        return None if self.ends is None else self.ends - time.monotonic()

    def check(self, stage: str | None = None) -> None:
        """Raise the time-limit error if the limit has passed (``stage`` becomes the current one), or
        :class:`Cancelled` once :meth:`cancel` was called."""
        if stage is not None:
            self.stage = stage
        self.raise_if_cancelled()
        left = self.remaining()
        if left is not None and left <= 0:
            raise self.error()

    def cancel(self) -> None:
        """Stop the audit's other half at its next check (this half failed)."""
        self._cancelled.set()

    def raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled

    def error(self) -> TimeLimitError:
        return TimeLimitError(
            f"the audit ran longer than its time limit of {self.seconds:g} s and was stopped during "
            f"{self.stage.replace('_', ' ')}; audit fewer rows, attack models, proportions, repeats or reference "
            "models, or raise the limit (--timeout, max_runtime)",
        )
