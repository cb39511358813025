"""One family of errors for everything that can go wrong in an audit.

Every error carries a stable machine-readable ``code``, a human ``message`` that says what is wrong and
how to fix it, and the HTTP status a server should answer with. Each shell maps them once: the HTTP
server to a status and a JSON body, the CLI to exit code 2 and one line, the training job to its
failure file. A subclass states its default code and status in its class line
(``class DataError(InputError, code="bad_data")``); an error that crossed a process boundary by name
becomes its class again through :func:`error_class`.
"""

from __future__ import annotations

import re


class MiaError(Exception):
    """Base class of all errors the audit raises on purpose.

    Parameters
    ----------
    message:
        One or two sentences for the user: what is wrong and how to fix it.
    code:
        Stable identifier (snake_case) for programs; defaults to the class's ``default_code``.
    """

    default_code = "internal_error"
    http_status = 500

    def __init_subclass__(
        cls, *, code: str | None = None, status: int | None = None, **kwargs: object
    ) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.default_code = code
        if status is not None:
            cls.http_status = status

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def to_dict(self) -> dict[str, str]:
        """The JSON body a server returns for this error (SageMaker-style keys)."""
        return {"error": self.code, "error-message": self.message}


class InputError(MiaError, code="bad_input", status=400):
    """The caller's input is wrong: a 4xx, never a crash."""


class OptionsError(InputError, code="bad_option"):
    """An audit option is unknown or has an invalid value."""


class BundleError(InputError, code="bad_bundle"):
    """The bundle (archive or folder) is malformed, incomplete or unsafe to unpack."""


class LimitError(BundleError, code="limit_exceeded"):
    """The input exceeds a configured size limit (bytes, members, compression ratio, memory)."""


class ModelError(InputError, code="bad_model"):
    """The model file cannot be loaded or the model misbehaves when queried."""


class UnsafeModelError(ModelError, code="unsafe_model"):
    """The model file references code outside the allowlist; it was refused before anything ran."""


class DataError(InputError, code="bad_data"):
    """The members or non-members tables do not fit the model or are too small."""


class TimeLimitError(LimitError, code="audit_timeout"):
    """The audit ran past the time limit its caller set (``--timeout``, ``max_runtime``)."""


class UnsupportedMediaError(InputError, code="unsupported_media_type", status=415):
    """The request body's ``Content-Type`` is not a bundle archive."""


class NotAcceptableError(InputError, code="not_acceptable", status=406):
    """No report format the caller's ``Accept`` header allows."""


class PayloadTooLargeError(LimitError, code="payload_too_large", status=413):
    """The request body is over the server's size limit."""


class ServerBusyError(MiaError, code="server_busy", status=503):
    """Too many invocations are waiting for an audit slot; the caller should retry later."""


class ShuttingDownError(MiaError, code="shutting_down", status=503):
    """The server is stopping and runs no more audits."""


class ServerTimeoutError(MiaError, code="audit_timeout", status=500):
    """An audit ran past the server's own time limit (``SAGEMAKER_MODEL_SERVER_TIMEOUT``): the server's
    setting, not the caller's input, so a 5xx."""


class AuditCrashedError(MiaError, code="audit_crashed", status=500):
    """The process running an audit ended without an answer (killed, out of memory, crashed)."""


class ClusterError(MiaError, code="cluster_unavailable", status=503):
    """The Dask scheduler the audit was told to use (``--cluster``, ``MIA_DASK_SCHEDULER``) cannot be
    reached, has no workers, or lost them mid-audit: a 503 for a server (its setting, retry later); the
    CLI exits 2, since the address is the user's to fix. In a training job of several hosts
    (``training_cluster``): a host unreachable or gone, or a peer that failed; ``train`` exits 1."""


class DeviceError(InputError, code="device_unavailable"):
    """The requested compute device is not available (e.g. ``--device cuda`` without CUDA)."""


class SageMakerError(InputError, code="sagemaker_error"):
    """A SageMaker run cannot start or finish: bad flags, an AWS refusal (no bucket, no permission),
    no credentials. The message names the AWS error code where there is one."""


class SageMakerJobFailedError(SageMakerError, code="job_failed"):
    """A SageMaker job or invocation ended in failure; the message carries its ``FailureReason`` and the
    container's failure text."""


# Every error class of this module but MiaError itself, by name: what another process may name.
_SUBCLASSES = {
    name: value
    for name, value in dict(globals()).items()
    if isinstance(value, type) and issubclass(value, MiaError) and value is not MiaError
}


def error_class(
    name: object, default: type[MiaError] = MiaError, *, base: type[MiaError] = MiaError
) -> type[MiaError]:
    """The error class of this module called ``name``, to rebuild an error that another process (the audit
    child, the sandbox) sent by its class name.

    Anything else (an unknown name, ``"MiaError"`` itself, a name of something that is not an error class,
    a value that is not a string, a class that is not a subclass of ``base``) gives ``default``: a message
    from a child names a class, it never chooses an arbitrary one. ``base`` bounds what a child that may lie
    (the sandbox's, which runs the model) can name: its refusal must not pass for the server's own
    ``ServerBusyError`` or ``AuditCrashedError``.
    """
    found = _SUBCLASSES.get(name, default) if isinstance(name, str) else default
    return found if issubclass(found, base) else default


_NOT_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.<>-]")


def quoted_name(text: object, limit: int = 120) -> str:
    """A name from the model (class, function, parameter path) made fit to quote in a message.

    Only names are quoted, never values or reprs; even names are the file's text, so anything but
    identifier characters becomes ``?`` and the length is capped.
    """
    clean = _NOT_NAME_CHARACTERS.sub("?", text) if isinstance(text, str) else "?"
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def raised_by_model(error: type[MiaError], exc: BaseException, message: str, *, code: str) -> MiaError:
    """``error`` for an exception that the model's own code raised (its ``predict_proba``, its recipe's
    ``fit``). ``message`` has one ``{}``, where the exception's class name goes: only that name reaches the
    user, through :func:`quoted_name`, never the exception's text, which comes from the model's code and
    may quote its values or memory addresses (the caller logs the whole exception)."""
    return error(message.format(quoted_name(type(exc).__name__)), code=code)
