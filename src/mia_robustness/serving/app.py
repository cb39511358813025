"""The Flask app of the SageMaker inference contract: ``/ping``, ``/invocations``, ``/execution-parameters``.

``POST /invocations`` takes a bundle archive as the body and answers with the audit's report. The
request is checked in this order, each failure answered at once without running anything:
Content-Type (415), Accept (406), the custom-attributes header (400), Content-Length (413); then the
body is streamed to a private folder with a bounded read (413, or 400 when empty) and audited in a
child process (see :mod:`mia_robustness.serving.runner`). Every error, expected or not, is answered by
one handler as ``{"error": code, "error-message": text}`` with a non-200 status.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, Request, Response, jsonify, request
from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_accept_header

from ..errors import (
    InputError,
    MiaError,
    NotAcceptableError,
    OptionsError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from ..options import normalize_name, options_from_mapping, parse_key_value_pairs, shown
from .runner import AuditRunner, remove_workdir
from .settings import ServerSettings

log = logging.getLogger("mia_robustness.serving")

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
# Archive media types; the engine recognises zip / tar / tar.gz by content whatever is declared, so
# octet-stream (and a missing Content-Type) are fine too.
BUNDLE_MEDIA_TYPES = (
    "application/zip",
    "application/x-zip-compressed",
    "application/x-tar",
    "application/gzip",
    "application/x-gzip",
    "application/x-gtar",
    "application/x-bzip2",
    "application/x-xz",
    "application/octet-stream",
)
# Report media type -> format name of mia_robustness.report.render.
REPORT_FORMATS = {"application/json": "json", "text/csv": "csv", "text/html": "html"}
READ_CHUNK = 1024 * 1024
RUNNER_KEY = "mia_robustness.runner"


def supported_media_types() -> list[str]:
    """Report media types this build can render (HTML only once the report module renders it)."""
    from ..report import RENDERERS

    return [media for media, fmt in REPORT_FORMATS.items() if fmt in RENDERERS]


def check_settings(settings: ServerSettings) -> None:
    """Refuse settings that only this module can judge (raises ``OptionsError``)."""
    supported = supported_media_types()
    if settings.default_accept not in supported:
        raise OptionsError(
            f"environment variable SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={settings.default_accept!r} is invalid: "
            f"this version renders {', '.join(supported)}",
            code="bad_setting",
        )


def create_app(settings: ServerSettings, runner: AuditRunner | None = None) -> Flask:
    """Build the app.

    Parameters
    ----------
    settings:
        The server's settings, parsed once by the caller (see :class:`ServerSettings`).
    runner:
        Runs the audits; a new :class:`AuditRunner` for ``settings`` when ``None``.
    """
    check_settings(settings)
    runner = runner or AuditRunner(settings)
    media_types = supported_media_types()
    # The default first: werkzeug's best_match breaks ties in list order.
    preference = [settings.default_accept] + [m for m in media_types if m != settings.default_accept]
    app = Flask("mia_robustness.serving")
    app.extensions[RUNNER_KEY] = runner

    @app.get("/ping")
    def ping() -> Response:
        # Deliberately trivial: it must answer within 2 s while every audit slot is busy.
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return jsonify(
            MaxConcurrentTransforms=settings.workers,
            BatchStrategy="SINGLE_RECORD",
            MaxPayloadInMB=settings.max_payload_mb,
        )

    @app.post("/invocations")
    def invocations() -> Response:
        request_id = uuid.uuid4().hex[:12]
        started = time.monotonic()
        _check_content_type(request)
        media_type = _negotiate(request, preference, media_types)
        overrides = {**settings.default_overrides, **_overrides(request)}
        _check_declared_length(request, settings.max_payload_bytes)
        workdir = runner.new_workdir()
        try:
            archive = workdir / "request-body"
            size = _save_body(request, archive, settings.max_payload_bytes)
            log.info(
                "%s invocation: %d bytes, report as %s, options %s",
                request_id,
                size,
                media_type,
                overrides or "{}",
            )
            body = runner.run(request_id, archive, overrides, REPORT_FORMATS[media_type], workdir)
        finally:
            remove_workdir(workdir)
        log.info("%s answered in %.2f s", request_id, time.monotonic() - started)
        return Response(body, status=200, mimetype=media_type)

    @app.errorhandler(Exception)
    def handle_error(error: Exception) -> tuple[Response, int]:
        if request.method == "POST" and not isinstance(error, PayloadTooLargeError):
            _discard_unread_body(request, settings.max_payload_bytes)
        return _error_response(error)

    return app


def _error_response(error: Exception) -> tuple[Response, int]:
    """The one mapping of exceptions to HTTP answers."""
    if isinstance(error, MiaError):
        status = error.http_status
        body: dict[str, Any] = error.to_dict()
        if status >= 500:
            log.error("invocation failed: %s: %s", error.code, error.message)
        else:
            log.info("invocation refused (%d): %s: %s", status, error.code, error.message)
    elif isinstance(error, HTTPException):  # routing (404, 405) and malformed requests from werkzeug
        status = error.code or 500
        code = (error.name or "http_error").lower().replace(" ", "_").replace("-", "_")
        body = {"error": code, "error-message": error.description or error.name}
    else:
        log.exception("unexpected error while answering a request")
        status = 500
        body = {
            "error": "internal_error",
            "error-message": "an unexpected error occurred; the server log has the details",
        }
    return jsonify(body), status


def _check_content_type(req: Request) -> None:
    media = req.mimetype  # lower case, parameters dropped; "" when absent
    if media and media not in BUNDLE_MEDIA_TYPES:
        raise UnsupportedMediaError(
            f"Content-Type {shown(media)} is not a bundle archive: send a zip, tar or tar.gz archive as "
            "application/zip, application/x-tar, application/gzip or application/octet-stream"
        )


def _negotiate(req: Request, preference: list[str], media_types: list[str]) -> str:
    header = (req.headers.get("Accept") or "").strip()
    if not header or header == "*/*":
        return preference[0]
    # Parameters other than q (charset=utf-8, header=present) would make werkzeug skip an exact type;
    # the report's encoding is UTF-8 either way.
    kept = []
    for item in header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        kept.append(";".join([media] + [p for p in params if p.replace(" ", "").startswith("q=")]))
    best = parse_accept_header(", ".join(kept), MIMEAccept).best_match(preference)
    if best is None:
        raise NotAcceptableError(
            f"cannot answer with Accept: {shown(header)}: the report is available as {', '.join(media_types)}"
        )
    return best


def _overrides(req: Request) -> dict[str, str]:
    """Audit options from the custom-attributes header, validated now so a typo costs no audit."""
    text = req.headers.get(CUSTOM_ATTRIBUTES_HEADER, "")
    overrides = {normalize_name(name): value for name, value in parse_key_value_pairs(text).items()}
    options_from_mapping(overrides)  # raises OptionsError (400) for unknown names and bad values
    return overrides


def _too_large(limit: int, size: int | None) -> MiaError:
    got = f" ({size} bytes)" if size is not None else ""
    return PayloadTooLargeError(
        f"the request body{got} is over the limit of {limit} bytes (MIA_MAX_PAYLOAD_MB); "
        "send a smaller bundle (fewer rows, Parquet instead of CSV) or raise the limit"
    )


def _check_declared_length(req: Request, limit: int) -> None:
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit, req.content_length)


def _save_body(req: Request, path: Path, limit: int) -> int:
    """Stream the body to ``path``, reading at most ``limit + 1`` bytes whatever the headers say."""
    total = 0
    stream = req.stream
    with path.open("wb") as out:
        while True:
            chunk = _read_body(stream, min(READ_CHUNK, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise _too_large(limit, None)
            out.write(chunk)
    if total == 0:
        raise InputError(
            "the request body is empty: send the bundle archive (zip, tar or tar.gz) as the body",
            code="empty_body",
        )
    return total


def _discard_unread_body(req: Request, limit: int) -> None:
    """Read what is left of a refused request's body (at most ``limit`` bytes) before answering.

    A request refused from its headers (415, 406, a bad option) is answered before its body is read.
    Closing a connection whose body is still arriving resets it, and the sender may then lose the answer:
    nginx, still writing the buffered body to gunicorn, answers a 502 instead of our 400. A body behind nginx
    is already complete, so reading it costs a copy at most.
    """
    stream, left = req.stream, limit + 1
    try:
        while left > 0 and (chunk := stream.read(min(READ_CHUNK, left))):
            left -= len(chunk)
    except Exception:  # noqa: BLE001 - the refusal is the answer; a body that cannot be read changes nothing
        log.debug("the refused request's body could not be read", exc_info=True)


def _read_body(stream: Any, size: int) -> bytes:
    """One read of the request body; a body the HTTP server cannot decode is the client's fault (400).

    Behind nginx the body arrives complete and well-formed; gunicorn alone (``MIA_FRONT_SERVER=none``)
    raises its own exceptions from the read, e.g. for a malformed chunk size, which would otherwise end
    as a 500.
    """
    try:
        return stream.read(size)
    except HTTPException:  # werkzeug's ClientDisconnected and the like: already a 400
        raise
    except Exception as error:
        raise InputError(
            f"the HTTP request is malformed: its body could not be read ({type(error).__name__}: {error}); "
            "send a well-formed HTTP/1.1 request (a Content-Length, or valid chunked encoding)",
            code="bad_http_request",
        ) from None
