"""A moto server on loopback, and a stand-in for SageMaker's machines that runs the real container.

moto records the SageMaker calls and keeps S3, but it runs nothing: its transform and training jobs are
``Completed`` the moment they are created, with no output. :class:`JobRunner` does what SageMaker's
machines would do, with the product's own entry points:

* a transform job: `./serve` started with the job's ``Environment`` (as SageMaker starts the container),
  each input object POSTed to ``/invocations`` with the job's content type and ``Accept``, each answer
  written to ``<S3OutputPath>/<input name>.out``; a non-200 answer fails the job (the other records
  still run);
* a training job: the channel's objects laid out under ``input/data/<channel>/``, the hyperparameters
  in ``input/config/hyperparameters.json``, `./train` run on that tree (``MIA_OPT_ML``), ``model/``
  packed as ``<S3OutputPath>/<job>/output/model.tar.gz``; on failure the job's ``FailureReason`` is
  ``AlgorithmError: `` and the container's failure file, as SageMaker reports it.

Jobs start ``InProgress`` (moto's classes are patched for the test), so the client really waits.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import boto3
import requests

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train"
ACCOUNT = "123456789012"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """moto's server in this process, on a loopback port (its backends are then this process's too)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(
            logging.WARNING
        )  # a line per request drowns the test's own log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        self.server.stop()


def aws_environment(url: str) -> dict[str, str]:
    """The environment of a user whose AWS configuration points at ``url``: no files, dummy keys."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def sagemaker_backend():
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION]


def start_jobs_in_progress(monkeypatch) -> None:
    """Make moto's new transform and training jobs ``InProgress`` until :class:`JobRunner` ends them."""
    from moto.sagemaker import models

    for cls, attribute in (
        (models.FakeTransformJob, "transform_job_status"),
        (models.FakeTrainingJob, "training_job_status"),
    ):
        original = cls.__init__

        def patched(self, *args, _original=original, _attribute=attribute, **kwargs):
            _original(self, *args, **kwargs)
            setattr(self, _attribute, "InProgress")
            if _attribute == "training_job_status":
                self.secondary_status = "Starting"

        monkeypatch.setattr(cls, "__init__", patched)


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


class JobRunner:
    """Runs moto's ``InProgress`` jobs with the real container, one at a time, in a background thread."""

    def __init__(self, url: str, workdir: Path, serve_env: dict[str, str] | None = None) -> None:
        self.s3 = boto3.client("s3", endpoint_url=url, region_name=REGION)
        self.workdir = workdir
        self.serve_env = serve_env or {}
        self.handled: set[str] = set()
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)
        if self.errors:
            raise self.errors[0]

    def _loop(self) -> None:
        backend = sagemaker_backend()
        while not self.stopping.wait(0.05):
            for jobs, status, run in (
                (backend.transform_jobs, "transform_job_status", self._transform),
                (backend.training_jobs, "training_job_status", self._train),
            ):
                for name, job in list(jobs.items()):
                    if getattr(job, status) != "InProgress" or name in self.handled:
                        continue
                    self.handled.add(name)
                    try:
                        run(job)
                    except BaseException as error:  # noqa: BLE001 - surfaced by stop()
                        # End the job, so that the client under test stops waiting for it.
                        self.errors.append(error)
                        job.failure_reason = f"the test's job runner failed: {error!r}"
                        setattr(job, status, "Failed")

    def _objects(self, uri: str) -> list[str]:
        bucket, prefix = _split(uri)
        listed = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for item in listed.get("Contents", [])]

    def _transform(self, job) -> None:
        from serving_helpers import Server

        source = job.transform_input["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = _split(source)
        out_bucket, out_prefix = _split(job.transform_output["S3OutputPath"])
        folder = Path(tempfile.mkdtemp(dir=self.workdir, prefix="serve-"))
        server = Server(folder, **{**self.serve_env, **(job.environment or {})})
        failures = []
        try:
            for key in self._objects(source):
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                answer = requests.post(
                    f"{server.url}/invocations",
                    data=body,
                    headers={
                        "Content-Type": job.transform_input["ContentType"],
                        "Accept": job.transform_output["Accept"],
                    },
                    timeout=600,
                )
                if answer.status_code != 200:  # the record fails; the others still run
                    failures.append(
                        f"the model container answered {answer.status_code} for {key}: {answer.text}"
                    )
                    continue
                name = key[len(prefix) :].lstrip("/")
                self.s3.put_object(
                    Bucket=out_bucket, Key=f"{out_prefix.rstrip('/')}/{name}.out", Body=answer.content
                )
            if failures:
                job.failure_reason = "ClientError: " + failures[0]
            job.transform_job_status = "Failed" if failures else "Completed"
        finally:
            server.stop()

    def _train(self, job) -> None:
        tree = Path(tempfile.mkdtemp(dir=self.workdir, prefix="opt-ml-"))
        (tree / "input" / "config").mkdir(parents=True)
        (tree / "input" / "config" / "hyperparameters.json").write_text(json.dumps(job.hyper_parameters))
        for channel in job.input_data_config:
            source = channel["DataSource"]["S3DataSource"]["S3Uri"]
            bucket, prefix = _split(source)
            folder = tree / "input" / "data" / channel["ChannelName"]
            folder.mkdir(parents=True)
            for key in self._objects(source):
                relative = key[len(prefix.rsplit("/", 1)[0]) :].lstrip("/") or Path(key).name
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, key, str(folder / relative))
        job.secondary_status = "Training"
        environ = {**os.environ, "MIA_OPT_ML": str(tree), "MIA_TEMP_DIR": str(tree)}
        environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
        done = subprocess.run([str(TRAIN)], env=environ, capture_output=True, timeout=600)
        if done.returncode != 0:
            failure = tree / "output" / "failure"
            job.failure_reason = "AlgorithmError: " + (failure.read_text() if failure.exists() else "exited")
            job.training_job_status = "Failed"
            job.secondary_status = "Failed"
            return
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w:gz") as archive:
            for path in sorted((tree / "model").iterdir()):
                archive.add(path, arcname=path.name)
        bucket, key = _split(job.model_artifacts["S3ModelArtifacts"])
        self.s3.put_object(Bucket=bucket, Key=key, Body=packed.getvalue())
        job.training_job_status = "Completed"
        job.secondary_status = "Completed"
