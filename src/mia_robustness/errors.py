"""One family of errors for everything that can go wrong in an audit.

Every error carries a stable machine-readable ``code``, a human ``message`` that says what is wrong and
how to fix it, and the HTTP status a server should answer with. Each shell maps them once: the HTTP
server to a status and a JSON body, the CLI to exit code 2 and one line, the training job to its
failure file.
"""

from __future__ import annotations


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

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def to_dict(self) -> dict[str, str]:
        """The JSON body a server returns for this error (SageMaker-style keys)."""
        return {"error": self.code, "error-message": self.message}


class InputError(MiaError):
    """The caller's input is wrong: a 4xx, never a crash."""

    default_code = "bad_input"
    http_status = 400


class OptionsError(InputError):
    """An audit option is unknown or has an invalid value."""

    default_code = "bad_option"


class BundleError(InputError):
    """The bundle (archive or folder) is malformed, incomplete or unsafe to unpack."""

    default_code = "bad_bundle"


class LimitError(BundleError):
    """The input exceeds a configured size limit (bytes, members, compression ratio, memory)."""

    default_code = "limit_exceeded"


class ModelError(InputError):
    """The model file cannot be loaded or the model misbehaves when queried."""

    default_code = "bad_model"


class UnsafeModelError(ModelError):
    """The model file references code outside the allowlist; it was refused before anything ran."""

    default_code = "unsafe_model"


class DataError(InputError):
    """The members or non-members tables do not fit the model or are too small."""

    default_code = "bad_data"


class TimeLimitError(LimitError):
    """The audit ran past the time limit its caller set (``--timeout``, ``max_runtime``)."""

    default_code = "audit_timeout"


class UnsupportedMediaError(InputError):
    """The request body's ``Content-Type`` is not a bundle archive."""

    default_code = "unsupported_media_type"
    http_status = 415


class NotAcceptableError(InputError):
    """No report format the caller's ``Accept`` header allows."""

    default_code = "not_acceptable"
    http_status = 406


class PayloadTooLargeError(LimitError):
    """The request body is over the server's size limit."""

    default_code = "payload_too_large"
    http_status = 413


class ServerBusyError(MiaError):
    """Too many invocations are waiting for an audit slot; the caller should retry later."""

    default_code = "server_busy"
    http_status = 503


class ShuttingDownError(MiaError):
    """The server is stopping and runs no more audits."""

    default_code = "shutting_down"
    http_status = 503


class ServerTimeoutError(MiaError):
    """An audit ran past the server's own time limit (``SAGEMAKER_MODEL_SERVER_TIMEOUT``): the server's
    setting, not the caller's input, so a 5xx."""

    default_code = "audit_timeout"
    http_status = 500


class AuditCrashedError(MiaError):
    """The process running an audit ended without an answer (killed, out of memory, crashed)."""

    default_code = "audit_crashed"
    http_status = 500


class DeviceError(InputError):
    """The requested compute device is not available (e.g. ``--device cuda`` without CUDA)."""

    default_code = "device_unavailable"


class SageMakerError(InputError):
    """A SageMaker run cannot start or finish: bad flags, an AWS refusal (no bucket, no permission),
    no credentials. The message names the AWS error code where there is one."""

    default_code = "sagemaker_error"


class SageMakerJobFailedError(SageMakerError):
    """A SageMaker job or invocation ended in failure; the message carries its ``FailureReason`` and the
    container's failure text."""

    default_code = "job_failed"
