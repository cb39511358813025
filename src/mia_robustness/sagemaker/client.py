"""Run audits on SageMaker with boto3: upload the bundles, start the jobs, wait, download the reports.

The steps are separate so that a caller can stop after :func:`submit` (``--no-wait``) and resume later
with :func:`find_run` and :func:`wait`, then ``reports.collect`` (or ``reports.finish`` for all three). Each run writes a small manifest next to its
bundles (``<prefix><run>/manifest.json``); it is what :func:`find_run` reads back. Nothing here opens a
model: the bundles travel as archives, and the reports come back as JSON.

AWS is reached through a ``boto3.Session`` the caller gives or one built from the user's usual
configuration (profile, region, ``AWS_ENDPOINT_URL``). Every AWS refusal becomes a
:class:`~mia_robustness.errors.SageMakerError` that names the AWS error code; a failed job a
:class:`~mia_robustness.errors.SageMakerJobFailedError` with its ``FailureReason``.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import SageMakerError, SageMakerJobFailedError
from . import contract
from .aws import aws_errors, exists, make_session, one_line, parse_s3_uri, read_object
from .contract import RunPlan, Upload, Where
from .packing import archive_suffix, bundle_archives, check_options

Progress = Callable[[str, int, int], None]
Say = Callable[[str], None]

POLL_SECONDS = 30.0
RUNNING = {"InProgress", "Stopping", "Creating", "Updating", "Pending"}
MANIFEST_VERSION = 1


@dataclass
class Run:
    """A submitted run: what :func:`submit` started, as its manifest records it.

    Attributes
    ----------
    mode:
        ``batch``, ``training`` or ``async``.
    plan:
        The run's name, bucket, prefix, uploads and options.
    jobs:
        Bundle name -> SageMaker job name (the one transform job for every bundle in ``batch``; one
        training job each in ``training``; the inference id in ``async``).
    endpoint:
        The asynchronous endpoint (``async``); ``created_endpoint`` says whether this run created it.
    locations:
        Bundle name -> ``(output URI, failure URI)`` of an asynchronous invocation.
    """

    mode: str
    plan: RunPlan
    jobs: dict[str, str]
    endpoint: str | None = None
    created_endpoint: bool = False
    locations: dict[str, tuple[str, str]] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "version": MANIFEST_VERSION,
            "mode": self.mode,
            "name": plan.name,
            "bucket": plan.bucket,
            "prefix": plan.prefix,
            "uploads": [asdict(upload) for upload in plan.uploads],
            "options": plan.options,
            "jobs": self.jobs,
            "endpoint": self.endpoint,
            "created_endpoint": self.created_endpoint,
            "locations": {name: list(pair) for name, pair in self.locations.items()},
        }

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Run:
        plan = RunPlan(
            name=data["name"],
            bucket=data["bucket"],
            prefix=data["prefix"],
            uploads=tuple(Upload(**upload) for upload in data["uploads"]),
            where=Where(),
            options=dict(data["options"]),
        )
        return cls(
            mode=data["mode"],
            plan=plan,
            jobs=dict(data["jobs"]),
            endpoint=data.get("endpoint"),
            created_endpoint=bool(data.get("created_endpoint")),
            locations={name: (pair[0], pair[1]) for name, pair in data.get("locations", {}).items()},
        )


def run_name(now: datetime | None = None) -> str:
    """A new run's name: valid for every SageMaker resource (at most 63 characters, letters, digits, -)."""
    now = now or datetime.now(timezone.utc)
    return f"mia-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------------------------------
# Submit
# --------------------------------------------------------------------------------------------------


def submit(
    bundles: Sequence[str | Path],
    mode: str,
    where: Where,
    s3: str,
    options: dict[str, str] | None = None,
    *,
    session: Any = None,
    say: Say | None = None,
    progress: Progress | None = None,
) -> Run:
    """Upload ``bundles`` under ``s3`` and start their audits in ``mode``; return the :class:`Run`.

    Parameters
    ----------
    bundles:
        Bundle archives or folders (a folder is packed into a zip first, as ``mia-robustness bundle``
        packs); their names (file or folder name without suffix) name the reports and must differ.
    mode:
        ``batch`` (one transform job for all), ``training`` (one training job each) or ``async`` (one
        asynchronous invocation each, on ``where.endpoint`` or an endpoint this run creates).
    where:
        The image, model package or algorithm, the role and the machines (see :class:`Where`).
    s3:
        ``s3://bucket/prefix``: the run's bundles, reports and manifest go under ``<prefix>/<run>/``.
    options:
        Audit options by the container's names (``repeats``, ``attack_models``...), checked here first.
    """
    where.check(mode)
    options = check_options(options or {}, mode)
    bucket, prefix = parse_s3_uri(s3)
    say = say or (lambda _line: None)
    session = session or make_session()
    with aws_errors("create the SageMaker clients"):
        s3_client = session.client("s3")
        sagemaker = session.client("sagemaker")
    name = run_name()
    with tempfile.TemporaryDirectory(prefix="mia-sagemaker-") as scratch:
        archives = bundle_archives(bundles, Path(scratch))
        sizes = {bundle: path.stat().st_size for bundle, path in archives.items()}
        if mode == "async":
            _check_async_sizes(sizes)
        plan = RunPlan(
            name=name,
            bucket=bucket,
            prefix=prefix,
            uploads=tuple(
                Upload(bundle, f"{prefix}{name}/input/{bundle}{archive_suffix(archives[bundle])}", size)
                for bundle, size in sizes.items()
            ),
            where=where,
            options=options,
        )
        if mode == "batch":
            contract.batch_payload_mb(plan.uploads)  # refuse an oversized bundle before uploading any
        for done, upload in enumerate(plan.uploads):
            # One PUT (S3 takes up to 5 GB so): its refusals arrive as they are (NoSuchBucket,
            # AccessDenied), where upload_file would wrap them in an exception of its own.
            with (
                aws_errors(f"upload {upload.name} to {plan.uri(upload.key)}"),
                archives[upload.name].open("rb") as body,
            ):
                s3_client.put_object(
                    Bucket=bucket, Key=upload.key, Body=body, ContentType=contract.BUNDLE_CONTENT_TYPE
                )
            if progress:
                progress("upload", done + 1, len(plan.uploads))
    run = _start(mode, plan, sagemaker, session, say)
    with aws_errors(f"write the run's manifest to {plan.uri(plan.manifest_key)}"):
        s3_client.put_object(
            Bucket=bucket,
            Key=plan.manifest_key,
            Body=json.dumps(run.to_manifest(), indent=2).encode(),
            ContentType=contract.REPORT_CONTENT_TYPE,
        )
    return run


def _check_async_sizes(sizes: dict[str, int]) -> None:
    for bundle_name, size in sizes.items():
        if size > contract.ASYNC_MAX_BUNDLE_BYTES:
            raise SageMakerError(
                f"bundle {bundle_name} is {size / contract.MB:.0f} MB; an asynchronous endpoint takes at most "
                "1 GB a request: use --via training",
                code="bundle_too_large",
            )


def _start(mode: str, plan: RunPlan, sagemaker: Any, session: Any, say: Say) -> Run:
    if mode == "batch":
        with aws_errors("create the model"):
            sagemaker.create_model(**contract.model_request(plan))
        with aws_errors("start the transform job"):
            sagemaker.create_transform_job(**contract.transform_job_request(plan))
        say(f"started transform job {plan.name} for {len(plan.uploads)} bundle(s)")
        return Run(mode, plan, {upload.name: plan.name for upload in plan.uploads})
    if mode == "training":
        jobs = {}
        for index, upload in enumerate(plan.uploads):
            request = contract.training_job_request(plan, index)
            with aws_errors(f"start the training job for {upload.name}"):
                sagemaker.create_training_job(**request)
            jobs[upload.name] = request["TrainingJobName"]
            say(f"started training job {request['TrainingJobName']} for {upload.name}")
        return Run(mode, plan, jobs)
    endpoint = plan.where.endpoint
    created = endpoint is None
    if created:
        endpoint = plan.name
        with aws_errors("create the model"):
            sagemaker.create_model(**contract.model_request(plan))
        with aws_errors("create the endpoint configuration"):
            sagemaker.create_endpoint_config(**contract.endpoint_config_request(plan))
        with aws_errors("create the endpoint"):
            sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=plan.name)
        say(f"creating asynchronous endpoint {endpoint}")
    else:
        _check_endpoint_isolated(sagemaker, endpoint)
    _wait_in_service(sagemaker, endpoint, say)
    with aws_errors("create the SageMaker runtime client"):
        runtime = session.client("sagemaker-runtime")
    run = Run(mode, plan, {}, endpoint=endpoint, created_endpoint=created)
    for upload in plan.uploads:
        with aws_errors(f"invoke endpoint {endpoint} for {upload.name}"):
            answer = runtime.invoke_endpoint_async(
                **contract.async_invocation_request(plan, endpoint, upload)
            )
        run.jobs[upload.name] = answer.get("InferenceId", "")
        run.locations[upload.name] = (answer["OutputLocation"], answer.get("FailureLocation", ""))
        say(f"invoked {endpoint} for {upload.name}")
    return run


def _check_endpoint_isolated(sagemaker: Any, endpoint: str) -> None:
    """Refuse an endpoint whose models may reach the network: the audit runs a stranger's model."""
    with aws_errors(f"describe endpoint {endpoint}"):
        config_name = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        variants = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
        for variant in variants:
            model = sagemaker.describe_model(ModelName=variant["ModelName"])
            if not model.get("EnableNetworkIsolation"):
                raise SageMakerError(
                    f"endpoint {endpoint} serves model {variant['ModelName']} without network isolation; "
                    "recreate the model with EnableNetworkIsolation=True, or let the command create an endpoint",
                    code="network_not_isolated",
                )


def _wait_in_service(
    sagemaker: Any,
    endpoint: str,
    say: Say,
    poll: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    last = None
    while True:
        with aws_errors(f"describe endpoint {endpoint}"):
            described = sagemaker.describe_endpoint(EndpointName=endpoint)
        status = described.get("EndpointStatus", "")
        if status != last:
            say(f"endpoint {endpoint}: {status}")
            last = status
        if status == "InService":
            return
        if status not in RUNNING:
            reason = one_line(described.get("FailureReason") or "no reason given")
            raise SageMakerJobFailedError(f"endpoint {endpoint} is {status}: {reason}")
        sleep(poll)


# --------------------------------------------------------------------------------------------------
# Find, wait, collect
# --------------------------------------------------------------------------------------------------


def find_run(job_name: str, *, s3: str | None = None, session: Any = None) -> Run:
    """The :class:`Run` that started ``job_name`` (a transform or training job, or with ``s3`` a run name).

    The manifest is found from the job's own description (its input or output location); an
    asynchronous run has no job to describe, so its run name and ``s3`` locate it.
    """
    session = session or make_session()
    with aws_errors("create the SageMaker client"):
        sagemaker = session.client("sagemaker")
    manifest_uri = None
    transform = _describe_if_any(
        lambda: sagemaker.describe_transform_job(TransformJobName=job_name), job_name
    )
    if transform:
        manifest_uri = transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    else:
        training = _describe_if_any(
            lambda: sagemaker.describe_training_job(TrainingJobName=job_name), job_name
        )
        if training:
            manifest_uri = training["OutputDataConfig"]["S3OutputPath"]
    if manifest_uri:  # <prefix><run>/input/ or <prefix><run>/output/: the manifest is beside them
        manifest_uri = manifest_uri.rstrip("/").rsplit("/", 1)[0] + "/manifest.json"
    if manifest_uri is None:
        if not s3:
            raise SageMakerError(
                f"no transform or training job named {job_name!r}; for an asynchronous run give its run name "
                "and the --s3 location it was started with",
                code="job_not_found",
            )
        bucket, prefix = parse_s3_uri(s3)
        manifest_uri = f"s3://{bucket}/{prefix}{job_name}/manifest.json"
    bucket, key = manifest_uri[len("s3://") :].split("/", 1)
    data = read_object(session.client("s3"), bucket, key, f"read the run's manifest {manifest_uri}")
    try:
        return Run.from_manifest(json.loads(data))
    except (ValueError, KeyError, TypeError):
        raise SageMakerError(
            f"{manifest_uri} is not a mia-robustness run manifest", code="bad_manifest"
        ) from None


def _describe_if_any(describe: Callable[[], dict[str, Any]], job_name: str) -> dict[str, Any] | None:
    """``describe()``'s answer, or ``None`` when SageMaker knows no such job."""
    from botocore.exceptions import ClientError

    with aws_errors(f"describe job {job_name}"):
        try:
            return describe()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
                return None
            raise


def job_states(run: Run, *, session: Any) -> dict[str, tuple[str, str]]:
    """Job name -> ``(status, detail)`` now; ``detail`` is the failure reason or SageMaker's sub-status."""
    states: dict[str, tuple[str, str]] = {}
    if run.mode == "async":
        s3_client = session.client("s3")
        for bundle_name, (output, failure) in run.locations.items():
            job = run.jobs[bundle_name] or bundle_name
            if exists(s3_client, output):
                states[job] = ("Completed", "")
            elif failure and exists(s3_client, failure):
                states[job] = ("Failed", "")
            else:
                states[job] = ("InProgress", "")
        return states
    sagemaker = session.client("sagemaker")
    for job in dict.fromkeys(run.jobs.values()):
        with aws_errors(f"describe job {job}"):
            if run.mode == "batch":
                described = sagemaker.describe_transform_job(TransformJobName=job)
                status = described["TransformJobStatus"]
                detail = described.get("FailureReason") or ""
            else:
                described = sagemaker.describe_training_job(TrainingJobName=job)
                status = described["TrainingJobStatus"]
                detail = described.get("FailureReason") or described.get("SecondaryStatus") or ""
        states[job] = (status, detail)
    return states


def wait(
    run: Run,
    *,
    session: Any = None,
    say: Say | None = None,
    progress: Progress | None = None,
    poll: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, tuple[str, str]]:
    """Poll until every job of ``run`` has ended; return job name -> ``(final status, detail)``.

    ``say`` gets a line at each change of a job's status; ``progress("jobs finished", done, total)``
    after each poll.
    """
    session = session or make_session()
    seen: dict[str, tuple[str, str]] = {}
    while True:
        states = job_states(run, session=session)
        for job, state in states.items():
            if say and seen.get(job) != state:
                say(f"{job}: {state[0]}" + (f" ({one_line(state[1], 200)})" if state[1] else ""))
        seen = states
        done = sum(status not in RUNNING for status, _ in states.values())
        if progress:
            progress("jobs finished", done, len(states))
        if done == len(states):
            return states
        sleep(poll)


def delete_endpoint(run: Run, *, session: Any = None, say: Say | None = None) -> None:
    """Delete the endpoint, endpoint configuration and model a run created (an endpoint costs by the hour)."""
    if not run.created_endpoint or not run.endpoint:
        return
    sagemaker = (session or make_session()).client("sagemaker")
    with aws_errors(f"delete endpoint {run.endpoint}"):
        sagemaker.delete_endpoint(EndpointName=run.endpoint)
        sagemaker.delete_endpoint_config(EndpointConfigName=run.plan.name)
        sagemaker.delete_model(ModelName=run.plan.name)
    if say:
        say(f"deleted endpoint {run.endpoint}")
