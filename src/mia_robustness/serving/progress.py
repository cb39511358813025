"""Progress lines for logs: the audit's ``progress(stage, done, total)`` calls, thinned out."""

from __future__ import annotations

import time
from collections.abc import Callable


class ProgressLog:
    """A progress callback that writes one line when a stage first reports, per finished stage and at most
    one line every ``interval`` seconds per unfinished stage otherwise (an audit may report thousands of
    steps, and two stages may report interleaved: the sweep beside the reference fits).

    Parameters
    ----------
    write:
        Receives each line (without a newline), e.g. a logger method or ``print``.
    prefix:
        Put before every line, e.g. the request id.
    interval:
        Least seconds between two lines of the same unfinished stage.
    """

    accepts_notes = True  # the engine's notes on the reference stage's cost (see engine.Stopwatch)

    def __init__(self, write: Callable[[str], None], prefix: str = "", interval: float = 5.0) -> None:
        self._write = write
        self._prefix = prefix
        self._interval = interval
        self._last: dict[str, float] = {}  # each stage's last line

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        now = time.monotonic()
        # A stage's plan (at 0) and its estimated cost (at 1) are always written; later notes ride along.
        plan_or_cost = bool(note) and done <= 1
        last = self._last.get(stage)
        if last is None or done >= total or now - last >= self._interval or plan_or_cost:
            self._last[stage] = now
            self._write(f"{self._prefix}progress {stage} {done}/{total}" + (f" ({note})" if note else ""))
