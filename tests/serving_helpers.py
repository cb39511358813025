"""Helpers for the tests that drive a real `./serve` over HTTP (test_serve, test_server_stress, test_fuzz).

:class:`Server` starts `./serve` as a subprocess on a free loopback port with its own temporary root and
log file, behind nginx (the product's way) where nginx is installed, else with gunicorn listening itself
(``MIA_FRONT_SERVER=none``; :data:`FRONT_SERVER` says which); the process helpers read ``/proc`` (Linux
only) to find nginx, the gunicorn master and worker, the forkserver and the audit children, and to
measure their open files and memory. :func:`bundle_bytes` makes a real bundle
archive (an unpruned decision tree on noisy synthetic data) and returns its bytes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests
from sklearn.tree import DecisionTreeClassifier

import builders
from builders import REPO_ROOT, as_header, noisy_numeric_frame, split_fit, wait_until, write_bundle
from mia_robustness.serving.front import FOLDER_PREFIX, find_nginx

SERVE = REPO_ROOT / "serve"
TINY = as_header(builders.TINY)
ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
STARTUP_SECONDS = 120  # imports are slow on a busy 2-core machine
# What the serve tests run behind: nginx where it is installed (.ci/run installs it), else gunicorn alone.
NGINX = find_nginx()
FRONT_SERVER = "nginx" if NGINX else "none"


# Custom attributes that keep an audit of the "busy" bundle running for seconds (about 6 s on one thread
# of this project's machines, 3x the 2 s timeout the timeout test sets): the ping, crash, timeout and
# killed-worker tests need an audit that is still running when they act.
BUSY = "attack_models=rf,gb,nn;repeats=6;proportions=0.2,0.4,0.6,0.8,1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_table() -> dict[int, tuple[str, int]]:
    """pid -> (state, parent pid) for every process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(stat.parent.name)] = (fields[0], int(fields[1]))
    return table


def ppid(pid: int) -> int:
    return process_table().get(pid, ("", 0))[1]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def comm(pid: int) -> str:
    """The process's name (``/proc/PID/comm``)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    state = process_table().get(pid)
    return state is not None and state[0] != "Z"


def open_fds(pid: int) -> int:
    """Number of open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Server:
    """A running `./serve` subprocess and what the tests need to know about it.

    Parameters
    ----------
    directory:
        Holds the server's temporary root (``tmp/``, its ``MIA_TEMP_DIR``) and its log (``serve.log``).
    env:
        Extra environment variables for `./serve` (its settings); ``MIA_FRONT_SERVER`` defaults to
        :data:`FRONT_SERVER`.
    """

    def __init__(self, directory: Path, **env: str) -> None:
        self.temp_root = directory / "tmp"
        self.temp_root.mkdir()
        self.log_path = directory / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = dict(os.environ)
        environ.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}",
            SAGEMAKER_BIND_TO_PORT=str(self.port),
            MIA_BIND_HOST="127.0.0.1",
            MIA_TEMP_DIR=str(self.temp_root),
        )
        environ.setdefault("MIA_FRONT_SERVER", FRONT_SERVER)
        environ.update(env)
        self.front = environ["MIA_FRONT_SERVER"]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([str(SERVE)], env=environ, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_until_up()

    def wait_until_up(self, seconds: float = STARTUP_SECONDS) -> None:
        """Wait until /ping answers 200 (the server process must stay alive meanwhile)."""

        def state() -> str | None:
            if self.process.poll() is not None:
                return "exited"
            try:
                return "up" if requests.get(f"{self.url}/ping", timeout=2).status_code == 200 else None
            except requests.RequestException:
                return None

        try:
            outcome = wait_until(state, seconds, interval=0.2, what="an answer to /ping")
        except AssertionError:
            self.stop()
            raise AssertionError(f"serve did not answer /ping within {seconds} s:\n{self.log()}") from None
        if outcome == "exited":
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def invoke(self, body: bytes, attributes: str | None = TINY, **headers: str) -> requests.Response:
        headers.setdefault("Content-Type", "application/zip")
        if attributes is not None:
            headers[ATTRIBUTES] = attributes
        # A fresh connection per call: a refused upload may leave its connection closed by the server.
        return requests.post(f"{self.url}/invocations", data=body, headers=headers, timeout=300)

    def descendants(self, root: int | None = None) -> list[int]:
        """Live PIDs below the server (nginx, gunicorn, its worker, the forkserver and the audit children),
        or below ``root``."""
        parents = {pid: stat[1] for pid, stat in process_table().items() if stat[0] != "Z"}
        found, frontier = [], [self.process.pid if root is None else root]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, parent_pid in parents.items() if parent_pid == parent]
            found += children
            frontier += children
        return found

    def zombies(self) -> list[int]:
        """Exited but unreaped processes below the server (a leak of process-table entries)."""
        table = process_table()
        below = {self.process.pid, *self.descendants()}
        return [pid for pid, (state, parent) in table.items() if state == "Z" and parent in below]

    def children(self) -> list[int]:
        """Live PIDs whose parent is `serve` itself."""
        return [pid for pid in self.descendants() if ppid(pid) == self.process.pid]

    def nginx_master(self) -> int:
        """PID of nginx's master process (a child of `serve`, behind nginx only)."""
        assert self.front == "nginx", "this server runs without nginx"
        masters = [pid for pid in self.children() if cmdline(pid).startswith("nginx")]
        assert len(masters) == 1, f"expected one nginx master, found {masters}"
        return masters[0]

    def gunicorn_master(self) -> int:
        """PID of the gunicorn master: `serve` itself without nginx, its other child behind nginx."""
        if self.front == "none":
            return self.process.pid
        masters = [pid for pid in self.children() if not cmdline(pid).startswith("nginx")]
        assert len(masters) == 1, f"expected one gunicorn master, found {masters}"
        return masters[0]

    def worker(self) -> int:
        """PID of the (single) gunicorn worker: the gunicorn master's child."""
        master = self.gunicorn_master()
        children = [pid for pid in self.descendants() if ppid(pid) == master]
        assert len(children) == 1, f"expected one gunicorn worker, found {children}"
        return children[0]

    def leftovers(self) -> list[Path]:
        """What is in the temporary root besides the front server's own folder (nginx's configuration,
        buffers and gunicorn's socket, there while `serve` runs): the invocations' folders."""
        return [path for path in self.temp_root.iterdir() if not path.name.startswith(FOLDER_PREFIX)]

    def forkservers(self) -> list[int]:
        """PIDs of the audit forkservers (normally one, started by the worker)."""
        below = self.descendants()
        return [
            pid for pid in below if "forkserver" in cmdline(pid) and "forkserver" not in cmdline(ppid(pid))
        ]

    def audit_children(self) -> list[int]:
        """Live audit processes: the children of the worker's forkserver (its sweep helpers aside)."""
        servers = self.forkservers()
        return [pid for pid in self.descendants() if ppid(pid) in servers and comm(pid) != "mia-helper"]

    def helpers(self) -> list[int]:
        """Live sweep helpers: the children of the worker's forkserver named ``mia-helper``."""
        servers = self.forkservers()
        return [pid for pid in self.descendants() if ppid(pid) in servers and comm(pid) == "mia-helper"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def bundle_bytes(
    directory: Path,
    rows: int,
    *,
    kind: str = "zip",
    label: str = "label",
    seed: int = 1,
    features: int = 6,
    config: dict | None = None,
    model=None,
) -> bytes:
    """The bytes of a real bundle archive: ``rows`` members and ``rows`` non-members.

    Parameters
    ----------
    directory:
        Scratch folder (created) where the archive is written.
    rows:
        Rows per side.
    kind:
        ``zip``, ``tar`` or ``tar.gz``.
    label:
        Name of the label column.
    seed, features:
        Of the synthetic table (see ``noisy_numeric_frame``).
    config:
        Written as the bundle's ``config.json`` when given.
    model:
        An unfitted scikit-learn classifier to fit on the members (an unpruned decision tree by default).
    """
    frame = noisy_numeric_frame(2 * rows, n_features=features, seed=seed).rename(columns={"label": label})
    model = DecisionTreeClassifier(random_state=0) if model is None else model
    model, members, non_members = split_fit(frame, model, rows, label=label)
    directory.mkdir(parents=True, exist_ok=True)
    return write_bundle(directory, model, members, non_members, kind=kind, config=config).read_bytes()
