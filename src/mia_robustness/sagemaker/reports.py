"""Bring a run's reports home: each bundle's report written to disk and parsed, or why there is none; and
the whole round trip (:func:`audit`: submit, wait, collect), which sits here, above ``client``, so that the
two modules import one way only.

Where SageMaker leaves them: batch transform ``<output>/<input name>.out``; a training job's
``model.tar.gz`` (only the report files are read out of it); an asynchronous invocation's output object,
or its failure object holding the container's error body.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MiaError, SageMakerJobFailedError
from . import contract
from .aws import MAX_REPORT_BYTES, aws_errors, exists, make_session, one_line, read_object
from .client import POLL_SECONDS, Progress, Run, Say, delete_endpoint, job_states, submit, wait
from .contract import Upload, Where


@dataclass(frozen=True)
class Result:
    """What came back for one bundle: its report (a dict, as JSON) and the files written, or why not.

    ``failure`` is ``None`` when the report came back; otherwise one line: the job's ``FailureReason``
    and, where SageMaker keeps it, the container's own failure text.
    """

    name: str
    job: str
    files: tuple[Path, ...] = ()
    report: dict[str, Any] | None = None
    failure: str | None = None


def collect(run: Run, outdir: str | Path, *, session: Any = None, say: Say | None = None) -> list[Result]:
    """Download each bundle's report into ``outdir`` as ``<name>.report.json`` (and ``.csv`` from a
    training job), or say why there is none; the jobs must have ended (see :func:`wait`)."""
    session = session or make_session()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    s3_client = session.client("s3")
    states = job_states(run, session=session)
    results = []
    for upload in run.plan.uploads:
        job = run.jobs.get(upload.name) or upload.name
        status, detail = states[job]
        if run.mode == "batch":
            result = _collect_batch(run, upload, job, status, detail, s3_client, outdir)
        elif run.mode == "training":
            result = _collect_training(run, upload, job, status, detail, session, s3_client, outdir)
        else:
            result = _collect_async(run, upload, job, status, s3_client, outdir)
        if say:
            say(f"{upload.name}: " + (", ".join(str(p) for p in result.files) or f"failed: {result.failure}"))
        results.append(result)
    return results


def _failed(upload: Upload, job: str, what: str, reason: str, container: str = "") -> Result:
    text = f"{what} {job} for {upload.name} failed: {one_line(reason or 'no reason given', 600)}"
    if container and one_line(container) not in text:
        text += f"; container: {one_line(container, 600)}"
    return Result(upload.name, job, failure=text)


def _write_report(outdir: Path, upload: Upload, job: str, texts: dict[str, bytes]) -> Result:
    files = []
    report = None
    for file_name, data in texts.items():
        path = outdir / f"{upload.name}.{file_name}"
        path.write_bytes(data)
        files.append(path)
        if file_name == contract.REPORT_JSON:
            try:
                report = json.loads(data)
            except ValueError:
                return Result(
                    upload.name, job, tuple(files), failure=f"the report of {upload.name} is not JSON"
                )
    return Result(upload.name, job, tuple(files), report=report)


def _collect_batch(
    run: Run, upload: Upload, job: str, status: str, detail: str, s3_client: Any, outdir: Path
) -> Result:
    plan = run.plan
    key = plan.output_prefix + upload.key[len(plan.input_prefix) :] + contract.BATCH_OUTPUT_SUFFIX
    # One job serves every bundle: when it fails, the records answered before the failure still have
    # their report, and only the others fail with the job's reason.
    if status != "Completed" and not exists(s3_client, plan.uri(key)):
        return _failed(upload, job, "transform job", f"{status}: {detail}" if detail else status)
    data = read_object(s3_client, plan.bucket, key, f"download the report of {upload.name}")
    return _write_report(outdir, upload, job, {contract.REPORT_JSON: data})


def _collect_training(
    run: Run, upload: Upload, job: str, status: str, detail: str, session: Any, s3_client: Any, outdir: Path
) -> Result:
    if status != "Completed":
        # SageMaker makes the container's failure file (/opt/ml/output/failure) the job's FailureReason.
        return _failed(upload, job, "training job", f"{status}: {detail}" if detail else status)
    with aws_errors(f"describe job {job}"):
        artifact = session.client("sagemaker").describe_training_job(TrainingJobName=job)["ModelArtifacts"]
    bucket, key = artifact["S3ModelArtifacts"][len("s3://") :].split("/", 1)
    data = read_object(s3_client, bucket, key, f"download the report of {upload.name}")
    texts = _reports_in_tarball(data)
    if contract.REPORT_JSON not in texts:
        return Result(
            upload.name,
            job,
            failure=f"training job {job} left no {contract.REPORT_JSON} in its model artifact",
        )
    return _write_report(outdir, upload, job, texts)


def _reports_in_tarball(data: bytes) -> dict[str, bytes]:
    """The report files at the top of a ``model.tar.gz`` (nothing else is read out of it)."""
    texts: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("./")
                if name in contract.REPORT_FILES and member.isfile() and member.size <= MAX_REPORT_BYTES:
                    handle = archive.extractfile(member)
                    if handle is not None:
                        texts[name] = handle.read()
    except (tarfile.TarError, OSError, EOFError):
        return {}
    return {name: texts[name] for name in contract.REPORT_FILES if name in texts}


def _collect_async(run: Run, upload: Upload, job: str, status: str, s3_client: Any, outdir: Path) -> Result:
    output, failure = run.locations[upload.name]
    if status == "Completed":
        bucket, key = output[len("s3://") :].split("/", 1)
        data = read_object(s3_client, bucket, key, f"download the report of {upload.name}")
        return _write_report(outdir, upload, job, {contract.REPORT_JSON: data})
    if status != "Failed":
        return _failed(upload, job, "asynchronous invocation", status)
    bucket, key = failure[len("s3://") :].split("/", 1)
    text = read_object(s3_client, bucket, key, f"download the failure of {upload.name}").decode(
        "utf-8", "replace"
    )
    return _failed(upload, job, "asynchronous invocation", _container_error(text))


def _container_error(text: str) -> str:
    """The container's error body (``{"error": code, "error-message": text}``) as ``code: text``."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        body = json.loads(text)
        if isinstance(body, dict) and "error" in body:
            return f"{body['error']}: {body.get('error-message', '')}"
    return text


def failures_error(results: Sequence[Result]) -> MiaError | None:
    """One :class:`SageMakerJobFailedError` for every bundle that came back without a report, or ``None``."""
    failed = [result.failure for result in results if result.failure]
    if not failed:
        return None
    return SageMakerJobFailedError("; ".join(failed))


def finish(
    run: Run,
    outdir: str | Path,
    *,
    session: Any,
    say: Say | None = None,
    progress: Progress | None = None,
    poll: float = POLL_SECONDS,
) -> list[Result]:
    """Wait for ``run``, then download its reports into ``outdir``; an endpoint the run created is deleted
    once every answer is in (or the wait fails). Failed bundles are results with their reason: see
    :func:`failures_error`."""
    try:
        wait(run, session=session, say=say, progress=progress, poll=poll)
        return collect(run, outdir, session=session, say=say)
    finally:
        delete_endpoint(run, session=session, say=say)


def audit(
    bundles: Sequence[str | Path],
    mode: str,
    where: Where,
    s3: str,
    outdir: str | Path,
    options: dict[str, str] | None = None,
    *,
    session: Any = None,
    say: Say | None = None,
    progress: Progress | None = None,
    poll: float = POLL_SECONDS,
) -> list[Result]:
    """Submit, wait, download: the reports of ``bundles`` in ``outdir`` (see ``client.submit``).

    Raises :class:`~mia_robustness.errors.SageMakerJobFailedError` after downloading what did come back
    when any bundle failed.
    """
    session = session or make_session()
    run = submit(bundles, mode, where, s3, options, session=session, say=say, progress=progress)
    results = finish(run, outdir, session=session, say=say, progress=progress, poll=poll)
    error = failures_error(results)
    if error:
        raise error
    return results
