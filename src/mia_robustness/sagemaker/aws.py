"""AWS access for the SageMaker client: the session, one-line errors, and the few S3 reads it needs.

Every boto3 call of the package runs inside :func:`aws_errors`, so that an AWS refusal (no bucket, no
permission, no credentials, no region) reaches the user as one :class:`~mia_robustness.errors.SageMakerError`
line naming the AWS error code, never as a traceback.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from ..errors import SageMakerError

# Reports are kilobytes; a bound keeps a wrong object from filling memory.
MAX_REPORT_BYTES = 64 * 1024 * 1024
# The longest failure text shown: SageMaker's own FailureReason is at most 1024 characters.
MAX_FAILURE_CHARS = 1024


def make_session(profile: str | None = None, region: str | None = None) -> Any:
    """A ``boto3.Session`` from the user's usual configuration; ``profile`` and ``region`` override it."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as error:
        raise SageMakerError(f"cannot use the AWS configuration: {error}", code="aws_config") from None


@contextlib.contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn a boto3 failure while ``doing`` something into one :class:`SageMakerError` line."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    try:
        yield
    except ClientError as error:
        details = error.response.get("Error", {})
        code = str(details.get("Code") or "ClientError")
        message = one_line(str(details.get("Message") or ""), 300)
        hint = {
            "NoSuchBucket": "; create the bucket or give another --s3",
            "AccessDenied": "; the AWS identity in use lacks the permission (check the profile and its policy)",
            "403": "; the AWS identity in use lacks the permission (check the profile and its policy)",
            "404": "; check the bucket and the prefix",
        }.get(code, "")
        raise SageMakerError(
            f"AWS refused to {doing}: {code}" + (f": {message}" if message else "") + hint, code="aws_error"
        ) from None
    except NoCredentialsError:
        raise SageMakerError(
            f"cannot {doing}: no AWS credentials found; configure a profile (aws configure) or the usual "
            "AWS_* environment variables, then give --profile if it is not the default",
            code="aws_credentials",
        ) from None
    except NoRegionError:
        raise SageMakerError(
            f"cannot {doing}: no AWS region set; give --region or set it in the profile", code="aws_config"
        ) from None
    except BotoCoreError as error:
        raise SageMakerError(f"cannot {doing}: {one_line(str(error), 300)}", code="aws_error") from None


def one_line(text: str, limit: int = MAX_FAILURE_CHARS) -> str:
    """``text`` on one line (whitespace runs become one space), cut to ``limit`` characters."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, "prefix/")`` (the prefix empty or ending in ``/``)."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?", uri.strip())
    if not match:
        raise SageMakerError(
            f"{uri[:100]!r} is not an S3 location: give s3://bucket or s3://bucket/prefix", code="bad_s3_uri"
        )
    prefix = (match.group(2) or "").strip("/")
    return match.group(1), f"{prefix}/" if prefix else ""


def read_object(s3_client: Any, bucket: str, key: str, doing: str) -> bytes:
    with aws_errors(doing):
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read(MAX_REPORT_BYTES + 1)
    if len(data) > MAX_REPORT_BYTES:
        raise SageMakerError(
            f"s3://{bucket}/{key} is over {MAX_REPORT_BYTES} bytes; it is no report", code="bad_output"
        )
    return data


def exists(s3_client: Any, uri: str) -> bool:
    from botocore.exceptions import ClientError

    bucket, key = uri[len("s3://") :].split("/", 1)
    try:
        s3_client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        with aws_errors(f"look for {uri}"):
            raise
    return True
