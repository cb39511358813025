"""``serve``: run the Flask app under gunicorn in this very process (so ``serve`` is the gunicorn master).

One gunicorn worker process with ``threads`` threads (``gthread``): the audits run in child processes
(see :mod:`mia_robustness.serving.runner`), so the worker only moves bytes and waits, and more worker
processes would only multiply memory. ``SAGEMAKER_MODEL_SERVER_WORKERS`` therefore sets how many
audits run at once, which is what SageMaker means by it (requests served in parallel).

Signals: SIGTERM (what ``docker stop`` and SageMaker send) makes gunicorn stop gracefully; the worker
first terminates running audits, whose requests are answered 503, so shutdown takes seconds, not the
rest of an hour-long audit. The master exits 0.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any

from gunicorn import glogging, util
from gunicorn.app.base import BaseApplication

from ..errors import MiaError
from .settings import ServerSettings

log = logging.getLogger("mia_robustness.serving")
LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# Seconds gunicorn gives the worker to finish after SIGTERM; audits are cancelled at once, so this only
# covers answering them and requests still uploading.
GRACEFUL_TIMEOUT = 20
# Seconds without a heartbeat after which gunicorn replaces the worker (its loop beats every second).
HEARTBEAT_TIMEOUT = 120


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
    """gunicorn configured from :class:`ServerSettings` (no config file, no command-line parsing)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": [f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"],
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
            "loglevel": s.log_level,
            "logger_class": StdoutLogger,
            "proc_name": "mia-robustness-serve",
            # gunicorn's runtime-control socket lives in $HOME (outside any temp folder, shared by
            # every server of the user); nothing here needs it.
            "control_socket_disable": True,
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
            "child_exit": _remove_folders_of_exited_worker(s.temp_root),
        }
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
    """Entry point of ``serve``: parse the environment, then run gunicorn until a stop signal."""
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
    except MiaError as error:
        print(f"serve: {error.message}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    log.info(
        "serving on %s:%d: %d audit(s) at a time, %d thread(s) each, %d HTTP threads, timeout %d s, "
        "body limit %d bytes",
        settings.host,
        settings.port,
        settings.workers,
        settings.threads_per_audit,
        settings.threads,
        settings.timeout,
        settings.max_payload_bytes,
    )
    GunicornServer(settings).run()  # exits the process when gunicorn stops
    return 0
