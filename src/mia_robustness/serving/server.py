"""``serve``: nginx in front of gunicorn, both supervised by this process; or gunicorn alone.

With ``MIA_FRONT_SERVER=nginx`` (the default) ``serve`` starts gunicorn (a fork of this process, listening
on a unix socket in a private folder) and, once gunicorn's socket exists, nginx on the public port (see
:mod:`mia_robustness.serving.front`). It then watches both: when either exits by itself, it stops the
other and exits non-zero; on SIGTERM, SIGINT or SIGQUIT it stops both gracefully (gunicorn SIGTERM, nginx
SIGQUIT, so answers in flight still reach their clients), kills what is left after
:data:`STOP_GRACE` seconds, and exits 0 when both stopped cleanly. With ``MIA_FRONT_SERVER=none`` this
very process is the gunicorn master listening on the port, as before nginx was added.

One gunicorn worker process with ``threads`` threads (``gthread``): the audits run in child processes
(see :mod:`mia_robustness.serving.runner`), so the worker only moves bytes and waits, and more worker
processes would only multiply memory. ``SAGEMAKER_MODEL_SERVER_WORKERS`` therefore sets how many
audits run at once, which is what SageMaker means by it (requests served in parallel).

Signals: SIGTERM (what ``docker stop`` and SageMaker send) makes gunicorn stop gracefully; the worker
first terminates running audits, whose requests are answered 503, so shutdown takes seconds, not the
rest of an hour-long audit. The master exits 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gunicorn import glogging, util
from gunicorn.app.base import BaseApplication

from ..errors import MiaError
from . import front
from .settings import ServerSettings

log = logging.getLogger("mia_robustness.serving")
LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# Seconds gunicorn gives the worker to finish after SIGTERM; audits are cancelled at once, so this only
# covers answering them and requests still uploading.
GRACEFUL_TIMEOUT = 20
# Seconds without a heartbeat after which gunicorn replaces the worker (its loop beats every second).
HEARTBEAT_TIMEOUT = 120
# Seconds the supervisor gives gunicorn and nginx to stop after it forwarded a stop, before it kills them
# (beyond gunicorn's graceful timeout and nginx's worker_shutdown_timeout).
STOP_GRACE = GRACEFUL_TIMEOUT + 10
# Seconds gunicorn may take to create its socket (it does so before it loads the app).
SOCKET_WAIT = 60
# How often the supervisor looks at its two children.
POLL_INTERVAL = 0.1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# gunicorn's access log line with the client's address from nginx (the unix socket's peer has none).
PROXIED_ACCESS_LOG_FORMAT = '%({x-forwarded-for}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class StdoutLogger(glogging.Logger):
    """gunicorn's logger with its error log on stdout too (the container's log is its stdout)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)


def _post_worker_init(worker: Any) -> None:
    """In the worker, once the app is loaded: start the forkserver, cancel audits on stop signals."""
    from .app import RUNNER_KEY

    runner = worker.wsgi.extensions[RUNNER_KEY]
    runner.warm_up()

    def stop_then(handler: Any) -> Any:
        def handle(signum: int, frame: Any) -> None:
            runner.shutdown()
            handler(signum, frame)

        return handle

    signal.signal(signal.SIGTERM, stop_then(worker.handle_exit))
    signal.signal(signal.SIGQUIT, stop_then(worker.handle_quit))
    signal.signal(signal.SIGINT, stop_then(worker.handle_quit))


def _worker_exit(server: Any, worker: Any) -> None:
    from .app import RUNNER_KEY

    runner = getattr(worker, "wsgi", None) and worker.wsgi.extensions.get(RUNNER_KEY)
    if runner is not None:
        runner.shutdown()


# Codes for the requests gunicorn refuses itself, before the app sees them (malformed HTTP).
_GUNICORN_ERROR_CODES = {
    400: "bad_http_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "header_fields_too_large",
    500: "internal_error",
    501: "unsupported_transfer_coding",
}


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Stand-in for ``gunicorn.util.write_error``: the same answer, with the JSON body every other error of
    the server has (``{"error": code, "error-message": text}``) instead of an HTML page.

    gunicorn answers malformed requests (a control character in a header value, an over-long request
    line, a bad chunk size) itself; clients of the SageMaker contract expect JSON from every error.
    """
    code = _GUNICORN_ERROR_CODES.get(int(status_int), "bad_http_request")
    text = mesg or reason
    if int(status_int) < 500:
        text = f"the HTTP request is malformed: {text}; send a well-formed HTTP/1.1 request"
    body = json.dumps({"error": code, "error-message": text}).encode()
    head = (
        f"HTTP/1.1 {int(status_int)} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1", "replace") + body)


def _remove_folders_of_exited_worker(temp_root: Any) -> Any:
    """gunicorn's ``child_exit`` hook (runs in the master once a worker has exited): remove the invocation
    folders the worker could not, because it was killed (SIGKILL, heartbeat timeout) mid-request."""

    def child_exit(server: Any, worker: Any) -> None:
        from .runner import remove_workdirs_of

        removed = remove_workdirs_of(worker.pid, temp_root)
        if removed:
            log.warning("removed %d invocation folder(s) left by worker %s", removed, worker.pid)

    return child_exit


class GunicornServer(BaseApplication):
    """gunicorn configured from :class:`ServerSettings` (no config file, no command-line parsing).

    ``socket``: the unix socket to listen on behind nginx; ``None`` to listen on ``host:port`` itself.
    """

    def __init__(self, settings: ServerSettings, socket: Path | None = None) -> None:
        self.settings = settings
        self.socket = socket
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        if self.socket is not None:
            bind = f"unix:{self.socket}"
        else:
            bind = f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"
        options = {
            "bind": [bind],
            "workers": 1,
            "worker_class": "gthread",
            "threads": s.threads,
            # gthread workers keep notifying the master while requests run, so this only detects a hung
            # worker loop; SAGEMAKER_MODEL_SERVER_TIMEOUT limits each audit, enforced by the runner.
            "timeout": HEARTBEAT_TIMEOUT,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": s.runtime.log_level,
            "logger_class": StdoutLogger,
            "proc_name": "mia-robustness-serve",
            # gunicorn's runtime-control socket lives in $HOME (outside any temp folder, shared by
            # every server of the user); nothing here needs it.
            "control_socket_disable": True,
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
            "child_exit": _remove_folders_of_exited_worker(s.runtime.temp_root),
        }
        if self.socket is not None:
            options["access_log_format"] = PROXIED_ACCESS_LOG_FORMAT
        for key, value in options.items():
            self.cfg.set(key, value)
        # The worker's error path calls util.write_error by module attribute; set here, in the master
        # before it forks the worker, it reaches every worker (this process only: serve is gunicorn).
        util.write_error = _write_json_error

    def load(self) -> Any:
        from .app import create_app

        return create_app(self.settings)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("mia_robustness")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``serve``: parse the environment, then serve until a stop signal."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        print(
            "serve takes no arguments; configure it with environment variables "
            "(see mia_robustness.serving.settings)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = ServerSettings.from_env()
        from .app import check_settings

        check_settings(settings)
        build = None
        if settings.front_server == "nginx":
            nginx = front.find_nginx()
            if nginx is None:
                print(
                    "serve: nginx is not installed (looked on PATH and in "
                    f"{', '.join(front.NGINX_PLACES)}); install it (apt-get install nginx) or set "
                    "MIA_FRONT_SERVER=none to let gunicorn listen itself (slow clients can then hold "
                    "every HTTP thread)",
                    file=sys.stderr,
                )
                return 2
            build = front.inspect_nginx(nginx)
    except MiaError as error:
        print(f"serve: {error.message}", file=sys.stderr)
        return 2
    _configure_logging(settings.runtime.log_level)
    log.info(
        "serving on %s:%d (%s): %d audit(s) at a time, %d thread(s) each, %d HTTP threads, timeout %d s, "
        "body limit %d bytes",
        settings.host,
        settings.port,
        "gunicorn alone"
        if build is None
        else f"nginx {'.'.join(map(str, build.version))} in front of gunicorn",
        settings.workers,
        settings.threads_per_audit,
        settings.threads,
        settings.timeout,
        settings.max_payload_bytes,
    )
    if build is None:
        GunicornServer(settings).run()  # exits the process when gunicorn stops
        return 0
    return _serve_behind_nginx(settings, build)


def _serve_behind_nginx(settings: ServerSettings, build: front.NginxBuild) -> int:
    """Start gunicorn, then nginx, and supervise both until a stop signal or until one of them exits."""
    requested: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        requested.append(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    supervisor = os.getpid()
    paths = front.prepare(settings, build)
    try:
        gunicorn = os.fork()
        if gunicorn == 0:  # the child: the gunicorn master, which installs its own signal handlers
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            GunicornServer(settings, socket=paths.socket).run()  # leaves by SystemExit, never returns
            sys.exit(0)
        return _supervise(gunicorn, build, paths, requested)
    finally:
        # The gunicorn master and worker leave through here too (SystemExit): only the supervisor cleans up.
        if os.getpid() == supervisor:
            front.remove(paths)


def _shell_code(code: int) -> int:
    """An exit code as a shell reports it: 128 + the signal for a process killed by one (Python: -signal)."""
    return 128 - code if code < 0 else code


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _supervise(gunicorn: int, build: front.NginxBuild, paths: front.FrontPaths, requested: list[int]) -> int:
    """Watch gunicorn (``gunicorn`` is its PID) and nginx (started once gunicorn's socket exists)."""
    started = time.monotonic()
    nginx: subprocess.Popen | None = None
    exits: dict[str, int] = {}  # name -> exit code, once reaped
    stopping_since: float | None = None
    failure = 0
    killed = False

    def running() -> dict[str, int]:
        alive = {} if "gunicorn" in exits else {"gunicorn": gunicorn}
        if nginx is not None and "nginx" not in exits:
            alive["nginx"] = nginx.pid
        return alive

    def stop(graceful: bool) -> None:
        alive = running()
        if "gunicorn" in alive:
            _signal(gunicorn, signal.SIGTERM)  # gunicorn's graceful stop: audits cancelled, answered 503
        if "nginx" in alive:  # SIGQUIT: stop listening, finish the requests in flight
            _signal(alive["nginx"], signal.SIGQUIT if graceful else signal.SIGTERM)

    while True:
        if "gunicorn" not in exits:
            pid, status = os.waitpid(gunicorn, os.WNOHANG)
            if pid:
                exits["gunicorn"] = _shell_code(os.waitstatus_to_exitcode(status))
        if nginx is not None and "nginx" not in exits and nginx.poll() is not None:
            exits["nginx"] = _shell_code(nginx.returncode)
            # nginx's workers outlive a master that was killed, and would go on serving the port: they
            # are in the master's own process group, so end that group too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(nginx.pid, signal.SIGKILL)
        if not running():
            break
        now = time.monotonic()
        if stopping_since is None:
            if requested:
                log.info("signal %d: stopping nginx and gunicorn", requested[0])
                stopping_since = now
                stop(graceful=True)
            elif exits:  # one of them exited by itself
                name, code = next(iter(exits.items()))
                failure = code or 1
                other = "nginx" if name == "gunicorn" else "gunicorn"
                log.error("%s exited (%d) by itself; stopping %s and exiting", name, code, other)
                stopping_since = now
                stop(graceful=name == "nginx")
            elif nginx is None and paths.socket.exists():
                try:
                    nginx = subprocess.Popen(
                        front.nginx_command(build, paths), stdin=subprocess.DEVNULL, start_new_session=True
                    )
                except OSError as error:
                    log.error("cannot start nginx (%s): %s; stopping gunicorn", build.path, error)
                    failure, stopping_since = 1, now
                    stop(graceful=True)
                else:
                    log.info("nginx %d in front of gunicorn %d (unix:%s)", nginx.pid, gunicorn, paths.socket)
            elif nginx is None and now - started > SOCKET_WAIT:
                log.error("gunicorn did not create %s within %d s; stopping it", paths.socket, SOCKET_WAIT)
                failure, stopping_since = 1, now
                stop(graceful=True)
        elif not killed and now - stopping_since > STOP_GRACE:
            log.warning("still running %d s after the stop: killing %s", STOP_GRACE, ", ".join(running()))
            for pid in running().values():
                _signal(pid, signal.SIGKILL)
            killed = True
        time.sleep(POLL_INTERVAL)
    if failure:
        return failure
    unclean = {name: code for name, code in exits.items() if code != 0}
    if unclean:
        log.error("stopped, but not cleanly: %s", unclean)
        return 1
    log.info("nginx and gunicorn stopped")
    return 0
