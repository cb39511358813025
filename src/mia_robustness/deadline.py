"""The audit's time limit, and the stage it is in, so that running out of time says where."""

from __future__ import annotations

import time

from .errors import TimeLimitError


class Deadline:
    """The audit's time limit and the stage it is in, for errors that say where time ran out.

    Parameters
    ----------
    seconds:
        Time limit from now; ``None`` for none.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.ends = None if seconds is None else time.monotonic() + seconds
        self.stage = "loading"

    def remaining(self) -> float | None:
        return None if self.ends is None else self.ends - time.monotonic()

    def check(self, stage: str | None = None) -> None:
        """Raise the time-limit error if the limit has passed (``stage`` becomes the current one)."""
        if stage is not None:
            self.stage = stage
        left = self.remaining()
        if left is not None and left <= 0:
            raise self.error()

    def error(self) -> TimeLimitError:
        return TimeLimitError(
            f"the audit ran longer than its time limit of {self.seconds:g} s and was stopped during "
            f"{self.stage.replace('_', ' ')}; audit fewer rows, attack models, proportions, repeats or reference "
            "models, or raise the limit (--timeout, max_runtime)",
        )
