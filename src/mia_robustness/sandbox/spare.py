"""Starting a sandbox child's process (:mod:`.child`), now or ahead of its audit (:class:`SpareChild`).

A child is a fresh interpreter (``python -I``) with an environment of its own: nothing inherited but the
locale, its private folder as home and temporary folder, thread counts set per audit. What it may do once
it has its request is :mod:`.confine`'s business; :mod:`.session` talks to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Environment of the child: nothing inherited but the locale; thread counts set per audit.
CHILD_LOCALE = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
FOLDER_PREFIX = "mia-sandbox-"


def spawn_child(folder: Path, threads: int) -> subprocess.Popen:
    """A fresh sandbox child in ``folder`` (its home, its temporary folder, its working folder), its BLAS
    and OpenMP at ``threads`` threads; it imports the engine, then waits for its request."""
    env = {
        **CHILD_LOCALE,
        "HOME": str(folder),
        "TMPDIR": str(folder),
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "LOKY_MAX_CPU_COUNT": str(threads),
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-I", "-m", "mia_robustness.sandbox.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=folder,
        env=env,
        close_fds=True,
        start_new_session=False,
    )


@dataclasses.dataclass
class SpareChild:
    """A sandbox child started before its audit: its interpreter up and the engine imported (1.5-2 s), it
    waits for its request in a private folder of its own, where no model has been yet. A long-lived process
    that starts children again and again (a cluster worker) keeps one ready; :class:`SandboxedModel` takes
    it as a fresh child, the same request and confinement after it. Unconfined until then, like any child
    before its request: it runs nothing but the engine's imports."""

    folder: Path
    threads: int
    work_parent: Path | None
    process: subprocess.Popen

    @classmethod
    def start(cls, threads: int, work_parent: Path | None = None) -> SpareChild:
        folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=work_parent))
        try:
            return cls(folder, threads, work_parent, spawn_child(folder, threads))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def usable(self, threads: int, work_parent: Path | None) -> bool:
        """Whether it can stand for a child started now with ``threads`` under ``work_parent``: the same
        settings, and still waiting."""
        return (self.threads, self.work_parent) == (threads, work_parent) and self.process.poll() is None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        shutil.rmtree(self.folder, ignore_errors=True)
