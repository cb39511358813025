"""The container's SageMaker contract as request fields: one place for every name the jobs depend on.

Pure functions from a :class:`RunPlan` to the keyword arguments of boto3's ``create_*`` calls, so that the
fields can be read (and tested) without AWS. The names come from the container itself: the options'
environment variable from :mod:`mia_robustness.runtime`, the report files and the ``max_runtime``
hyperparameter from :mod:`mia_robustness.training`, the batch payload ceiling from
:mod:`mia_robustness.serving.settings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import SageMakerError
from ..runtime import ENV_AUDIT_OPTIONS, MB
from ..serving.settings import SAGEMAKER_MAX_PAYLOAD_MB
from ..training import MAX_RUNTIME, REPORT_FORMATS

MODES = ("batch", "training", "async")
BUNDLE_CONTENT_TYPE = "application/zip"
REPORT_CONTENT_TYPE = "application/json"
REPORT_JSON = next(name for name, fmt in REPORT_FORMATS.items() if fmt == "json")
REPORT_FILES = tuple(REPORT_FORMATS)
# Any single channel works for `train`; "training" is the name SageMaker's own tools give it.
TRAINING_CHANNEL = "training"
# Where SageMaker puts what a training job leaves in /opt/ml/model, under <S3OutputPath>/<job>/.
MODEL_ARTIFACT = "output/model.tar.gz"
# Batch transform names each output object after its input object plus this suffix.
BATCH_OUTPUT_SUFFIX = ".out"
# SageMaker's own limits per mode: a batch record, an asynchronous request body.
BATCH_MAX_BUNDLE_BYTES = SAGEMAKER_MAX_PAYLOAD_MB * MB
ASYNC_MAX_BUNDLE_BYTES = 1024 * MB
TRAINING_MAX_RUNTIME_S = 24 * 3600
# The audit's own limit stays this far below the job's, so that an audit that runs too long fails with a
# reason naming its stage instead of being stopped without one (see training.parse_max_runtime).
AUDIT_RUNTIME_MARGIN_S = 600
TRAINING_MIN_VOLUME_GB = 10
ASYNC_VARIANT = "main"
ASYNC_CONCURRENCY_PER_INSTANCE = 2
DEFAULT_INSTANCE_TYPE = "ml.c5.2xlarge"


@dataclass(frozen=True)
class Where:
    """Where the audits run: exactly one of ``image``, ``model_package`` or ``algorithm``.

    Attributes
    ----------
    image:
        The container image URI (ECR), for every mode.
    model_package:
        A Marketplace model package ARN, for ``batch`` and ``async``.
    algorithm:
        A Marketplace algorithm ARN, for ``training``.
    role:
        The execution role SageMaker assumes (reads the bundles, writes the reports).
    instance_type, instance_count:
        The machines of each job or endpoint.
    endpoint:
        An existing asynchronous endpoint (``async`` only); none is created then.
    """

    image: str | None = None
    model_package: str | None = None
    algorithm: str | None = None
    role: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    endpoint: str | None = None

    def check(self, mode: str) -> None:
        """Refuse a combination that cannot run in ``mode`` (raises :class:`SageMakerError`)."""
        if mode not in MODES:
            raise SageMakerError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}", code="bad_mode")
        given = [name for name in ("image", "model_package", "algorithm") if getattr(self, name)]
        if mode == "async" and self.endpoint:
            if given:
                raise SageMakerError(
                    "--endpoint runs on an endpoint that exists: give no --image, --model-package or --algorithm",
                    code="bad_target",
                )
            return
        if len(given) != 1:
            raise SageMakerError(
                "say where the audit runs: give exactly one of --image, --model-package or --algorithm"
                + (" (or --endpoint)" if mode == "async" else ""),
                code="bad_target",
            )
        if mode == "training" and self.model_package:
            raise SageMakerError(
                "a model package serves batch and async; a training job runs an image or an algorithm: "
                "give --image or --algorithm",
                code="bad_target",
            )
        if mode != "training" and self.algorithm:
            raise SageMakerError(
                f"an algorithm runs training jobs; for --via {mode} give --image or --model-package",
                code="bad_target",
            )
        if not self.role:
            raise SageMakerError(
                "give --role: the execution role SageMaker assumes to read the bundles and write the reports",
                code="bad_target",
            )
        if self.instance_count < 1:
            raise SageMakerError("--instance-count must be at least 1", code="bad_target")


@dataclass(frozen=True)
class Upload:
    """One bundle as uploaded: its name (the report's name too), its S3 key and its size in bytes."""

    name: str
    key: str
    size: int


@dataclass(frozen=True)
class RunPlan:
    """One run: its name, its bundles in S3 and what runs them.

    ``options`` are the audit options as strings, by the container's option names.
    """

    name: str
    bucket: str
    prefix: str
    uploads: tuple[Upload, ...]
    where: Where
    options: dict[str, str] = field(default_factory=dict)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def input_prefix(self) -> str:
        return f"{self.prefix}{self.name}/input/"

    @property
    def output_prefix(self) -> str:
        return f"{self.prefix}{self.name}/output/"

    @property
    def failure_prefix(self) -> str:
        return f"{self.prefix}{self.name}/failures/"

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}{self.name}/manifest.json"

    def training_job_name(self, index: int) -> str:
        return f"{self.name}-{index + 1}"


def header_form(options: dict[str, str]) -> str:
    """Options as the custom-attributes header and ``MIA_AUDIT_OPTIONS`` carry them."""
    return ";".join(f"{name}={value}" for name, value in options.items())


def model_request(plan: RunPlan) -> dict[str, Any]:
    """``create_model`` for batch and async: the image or the model package, network isolation on."""
    container: dict[str, Any] = (
        {"ModelPackageName": plan.where.model_package}
        if plan.where.model_package
        else {"Image": plan.where.image}
    )
    return {
        "ModelName": plan.name,
        "ExecutionRoleArn": plan.where.role,
        "PrimaryContainer": container,
        "EnableNetworkIsolation": True,
    }


def batch_payload_mb(uploads: tuple[Upload, ...]) -> int:
    """``MaxPayloadInMB``: the largest bundle rounded up to whole MB (at least 1, at most 100)."""
    largest = max(upload.size for upload in uploads)
    if largest > BATCH_MAX_BUNDLE_BYTES:
        raise SageMakerError(
            f"a bundle is {largest / MB:.0f} MB; batch transform takes at most {SAGEMAKER_MAX_PAYLOAD_MB} MB "
            "a record: use --via async (up to 1 GB) or --via training",
            code="bundle_too_large",
        )
    return max(1, min(SAGEMAKER_MAX_PAYLOAD_MB, math.ceil(largest / MB)))


def transform_job_request(plan: RunPlan) -> dict[str, Any]:
    """``create_transform_job``: one record per bundle object, never split, options in the environment."""
    request: dict[str, Any] = {
        "TransformJobName": plan.name,
        "ModelName": plan.name,
        "BatchStrategy": "SingleRecord",
        "MaxPayloadInMB": batch_payload_mb(plan.uploads),
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": plan.uri(plan.input_prefix)}},
            "ContentType": BUNDLE_CONTENT_TYPE,
            "SplitType": "None",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": plan.uri(plan.output_prefix), "Accept": REPORT_CONTENT_TYPE},
        "TransformResources": {
            "InstanceType": plan.where.instance_type,
            "InstanceCount": plan.where.instance_count,
        },
    }
    if plan.options:
        request["Environment"] = {ENV_AUDIT_OPTIONS: header_form(plan.options)}
    return request


def training_job_request(plan: RunPlan, index: int) -> dict[str, Any]:
    """``create_training_job`` for the ``index``-th bundle: one channel, options as hyperparameters."""
    upload = plan.uploads[index]
    if plan.where.algorithm:
        algorithm = {"AlgorithmName": plan.where.algorithm, "TrainingInputMode": "File"}
    else:
        algorithm = {"TrainingImage": plan.where.image, "TrainingInputMode": "File"}
    hyperparameters = {MAX_RUNTIME: str(TRAINING_MAX_RUNTIME_S - AUDIT_RUNTIME_MARGIN_S), **plan.options}
    volume_gb = max(TRAINING_MIN_VOLUME_GB, math.ceil(4 * upload.size / (1024 * MB)))
    return {
        "TrainingJobName": plan.training_job_name(index),
        "RoleArn": plan.where.role,
        "AlgorithmSpecification": algorithm,
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": TRAINING_CHANNEL,
                "ContentType": BUNDLE_CONTENT_TYPE,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": plan.uri(upload.key),
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": plan.uri(plan.output_prefix)},
        "ResourceConfig": {
            "InstanceType": plan.where.instance_type,
            # Several instances form one Dask cluster (training_cluster.py): the first runs the audit,
            # the others lend it their workers. The bundle reaches every instance (FullyReplicated).
            "InstanceCount": plan.where.instance_count,
            "VolumeSizeInGB": volume_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": TRAINING_MAX_RUNTIME_S},
        "EnableNetworkIsolation": True,
    }


def endpoint_config_request(plan: RunPlan) -> dict[str, Any]:
    """``create_endpoint_config`` of an asynchronous endpoint writing reports and failures under the run."""
    return {
        "EndpointConfigName": plan.name,
        "ProductionVariants": [
            {
                "VariantName": ASYNC_VARIANT,
                "ModelName": plan.name,
                "InstanceType": plan.where.instance_type,
                "InitialInstanceCount": plan.where.instance_count,
            }
        ],
        "AsyncInferenceConfig": {
            "OutputConfig": {
                "S3OutputPath": plan.uri(plan.output_prefix),
                "S3FailurePath": plan.uri(plan.failure_prefix),
            },
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": ASYNC_CONCURRENCY_PER_INSTANCE},
        },
    }


def async_invocation_request(plan: RunPlan, endpoint: str, upload: Upload) -> dict[str, Any]:
    """``invoke_endpoint_async`` for one bundle: its S3 object in, the JSON report out."""
    request = {
        "EndpointName": endpoint,
        "InputLocation": plan.uri(upload.key),
        "ContentType": BUNDLE_CONTENT_TYPE,
        "Accept": REPORT_CONTENT_TYPE,
    }
    if plan.options:
        request["CustomAttributes"] = header_form(plan.options)
    return request
