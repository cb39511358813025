"""`mia-robustness sagemaker` and `mia_robustness.sagemaker` against a moto server on loopback.

Every AWS call goes to a moto server this module starts on 127.0.0.1 (``AWS_ENDPOINT_URL``; dummy keys,
no AWS files). moto records the calls and keeps S3; :class:`sagemaker_helpers.JobRunner` plays SageMaker's
machines with the real `./serve` and `./train`, so the reports that come back are real. Where moto drops
a field of a request (``EnableNetworkIsolation`` of ``create_model``, ``CustomAttributes`` of
``invoke_endpoint_async``), the request is recorded on its way out by a botocore event hook; the call
itself still goes to moto.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import boto3
import pytest

from builders import CHEAPEST
from mia_robustness import cli
from mia_robustness.bundle import open_bundle
from mia_robustness.errors import BundleError, OptionsError, SageMakerError
from mia_robustness.sagemaker import aws as sagemaker_aws
from mia_robustness.sagemaker import contract
from mia_robustness.sagemaker.contract import RunPlan, Upload, Where
from mia_robustness.serving.settings import ServerSettings
from sagemaker_helpers import (
    REGION,
    JobRunner,
    MotoServer,
    aws_environment,
    start_jobs_in_progress,
)
from serving_helpers import bundle_bytes

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mia-robustness:1"
ROLE = "arn:aws:iam::123456789012:role/sagemaker-audit"
BUCKET = "audits"
S3 = f"s3://{BUCKET}/runs"
TARGET = ["--image", IMAGE, "--role", ROLE, "--s3", S3]
OPTIONS = ["--option", "repeats=1", "--option", "attack-models=threshold", "--option", "proportions=1"]


@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture()
def aws(moto_server, monkeypatch):
    """A clean moto with bucket ``audits``, the user's environment pointing at it, jobs that take time."""
    moto_server.reset()
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_environment(moto_server.url).items():
        monkeypatch.setenv(name, value)
    start_jobs_in_progress(monkeypatch)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    return moto_server


@pytest.fixture(scope="module")
def bundle_files(tmp_path_factory):
    """Two small real bundles, and one without a model (its audit fails in the container)."""
    root = tmp_path_factory.mktemp("sagemaker-bundles")
    paths = {}
    for name, seed in (("sample", 1), ("other", 3)):
        paths[name] = root / f"{name}.zip"
        paths[name].write_bytes(bundle_bytes(root / f"build-{name}", 150, seed=seed))
    broken = io.BytesIO()
    with zipfile.ZipFile(paths["sample"]) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.namelist():
            if item.endswith(".csv"):
                target.writestr(item, source.read(item))
    paths["broken"] = root / "broken.zip"
    paths["broken"].write_bytes(broken.getvalue())
    return paths


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def record_requests(monkeypatch, *operations: str) -> list[tuple[str, dict]]:
    """Record the parameters of ``operations`` (e.g. ``sagemaker.CreateModel``) the command sends."""
    sent: list[tuple[str, dict]] = []
    original = sagemaker_aws.make_session

    def make_session(*args, **kwargs):
        session = original(*args, **kwargs)
        for operation in operations:
            session.events.register(
                f"provide-client-params.{operation}",
                lambda params, _op=operation, **_: sent.append((_op, dict(params))),
            )
        return session

    monkeypatch.setattr(sagemaker_aws, "make_session", make_session)
    return sent


def s3_keys(prefix: str = "") -> dict[str, int]:
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"]: item["Size"] for item in listed.get("Contents", [])}


def s3_bytes(key: str) -> bytes:
    return boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=key)["Body"].read()


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------------------------------
# Batch transform
# --------------------------------------------------------------------------------------------------


def test_batch_no_wait_leaves_both_bundles_and_one_transform_job_with_the_contract(
    aws, bundle_files, monkeypatch, capsys
):
    sent = record_requests(monkeypatch, "sagemaker.CreateModel")
    status, out, err = run_cli(
        ["sagemaker", "audit", str(bundle_files["sample"]), str(bundle_files["other"]), "--via", "batch"]
        + [
            *TARGET,
            "--instance-type",
            "ml.m5.xlarge",
            *OPTIONS,
            "--no-wait",
        ],
        capsys,
    )
    assert status == 0, err
    sm = boto3.client("sagemaker", region_name=REGION)
    jobs = sm.list_transform_jobs()["TransformJobSummaries"]
    assert len(jobs) == 1
    name = jobs[0]["TransformJobName"]
    assert f"mia-robustness sagemaker fetch {name} " in out

    keys = s3_keys()
    for bundle in ("sample", "other"):
        key = f"runs/{name}/input/{bundle}.zip"
        assert s3_bytes(key) == bundle_files[bundle].read_bytes()
    assert f"runs/{name}/manifest.json" in keys

    job = sm.describe_transform_job(TransformJobName=name)
    assert job["ModelName"] == name
    assert job["BatchStrategy"] == "SingleRecord"
    assert job["MaxPayloadInMB"] == 1  # both bundles are under 1 MB
    assert job["TransformInput"] == {
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/runs/{name}/input/"}
        },
        "ContentType": "application/zip",
        "SplitType": "None",
        "CompressionType": "None",
    }
    assert job["TransformOutput"] == {
        "S3OutputPath": f"s3://{BUCKET}/runs/{name}/output/",
        "Accept": "application/json",
    }
    assert job["TransformResources"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}
    assert job["Environment"] == {"MIA_AUDIT_OPTIONS": "repeats=1;attack_models=threshold;proportions=1"}
    model = sm.describe_model(ModelName=name)
    assert model["PrimaryContainer"]["Image"] == IMAGE and model["ExecutionRoleArn"] == ROLE
    [(_, create_model)] = sent
    assert create_model["EnableNetworkIsolation"] is True


def test_batch_fetch_waits_and_downloads_the_real_container_reports(aws, bundle_files, tmp_path, capsys):
    status, out, err = run_cli(
        ["sagemaker", "audit", str(bundle_files["sample"]), str(bundle_files["other"]), "--via", "batch"]
        + [*TARGET, *OPTIONS, "--no-wait"],
        capsys,
    )
    assert status == 0, err
    [name] = {line.split()[1].rstrip(";") for line in out.splitlines()}
    assert (
        boto3.client("sagemaker", region_name=REGION).describe_transform_job(TransformJobName=name)[
            "TransformJobStatus"
        ]
        == "InProgress"
    )

    runner = JobRunner(aws.url, tmp_path)
    try:
        status, out, err = run_cli(
            ["sagemaker", "fetch", name, "-o", str(tmp_path / "reports"), "--poll", "0.2"], capsys
        )
    finally:
        runner.stop()
    assert status == 0, err
    assert f"{name}: InProgress" in err and f"{name}: Completed" in err
    for bundle in ("sample", "other"):
        path = tmp_path / "reports" / f"{bundle}.report.json"
        report = json.loads(path.read_text())
        # The options travelled in the job's Environment and the container applied them.
        assert report["settings"]["repeats"] == 1 and report["settings"]["attack_models"] == ["threshold"]
        assert report["settings"]["proportions"] == [1.0]
        assert path.read_bytes() == s3_bytes(f"runs/{name}/output/{bundle}.zip.out")
        assert f"== {bundle} ({name})" in out
    assert out.count("Membership-inference risk:") == 2


def test_a_failed_batch_record_is_one_line_and_the_other_reports_still_come_back(
    aws, bundle_files, tmp_path, capsys
):
    runner = JobRunner(aws.url, tmp_path)
    try:
        status, out, err = run_cli(
            ["sagemaker", "audit", str(bundle_files["sample"]), str(bundle_files["broken"]), "--via", "batch"]
            + [*TARGET, *OPTIONS, "-o", str(tmp_path / "out"), "--poll", "0.2"],
            capsys,
        )
    finally:
        runner.stop()
    assert status == 2
    report = json.loads((tmp_path / "out" / "sample.report.json").read_text())
    assert report["settings"]["attack_models"] == ["threshold"]
    assert not (tmp_path / "out" / "broken.report.json").exists()
    assert out.count("Membership-inference risk:") == 1
    [line] = error_lines(err)
    assert " for broken failed: Failed: ClientError: the model container answered 400 for " in line
    assert '"error":"missing_model"' in line.replace(" ", "")


def test_batch_refuses_a_bundle_over_100_mb_before_uploading():
    plan_uploads = (Upload("small", "k1", 3 * 1024 * 1024 + 1), Upload("big", "k2", 100 * 1024 * 1024 + 1))
    with pytest.raises(SageMakerError, match="--via async"):
        contract.batch_payload_mb(plan_uploads)
    assert contract.batch_payload_mb(plan_uploads[:1]) == 4
    assert contract.batch_payload_mb((Upload("tiny", "k", 10),)) == 1
    assert contract.batch_payload_mb((Upload("edge", "k", 100 * 1024 * 1024),)) == 100


# --------------------------------------------------------------------------------------------------
# Training jobs
# --------------------------------------------------------------------------------------------------


def test_training_no_wait_starts_one_isolated_job_per_bundle(aws, bundle_files, capsys):
    status, out, err = run_cli(
        ["sagemaker", "audit", str(bundle_files["sample"]), str(bundle_files["other"]), "--via", "training"]
        + ["--image", IMAGE, "--role", ROLE, "--s3", S3 + "/", *OPTIONS, "--no-wait"],
        capsys,
    )
    assert status == 0, err
    sm = boto3.client("sagemaker", region_name=REGION)
    names = sorted(job["TrainingJobName"] for job in sm.list_training_jobs()["TrainingJobSummaries"])
    assert len(names) == 2 and out.count("resume with") == 2
    run = names[0].rsplit("-", 1)[0]
    for index, bundle in enumerate(("sample", "other")):
        job = sm.describe_training_job(TrainingJobName=f"{run}-{index + 1}")
        assert job["EnableNetworkIsolation"] is True
        assert job["RoleArn"] == ROLE
        assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
        assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
        assert job["HyperParameters"] == {
            "max_runtime": "85800",
            "repeats": "1",
            "attack_models": "threshold",
            "proportions": "1",
        }
        [channel] = job["InputDataConfig"]
        assert channel["ChannelName"] == "training" and channel["ContentType"] == "application/zip"
        assert (
            channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/runs/{run}/input/{bundle}.zip"
        )
        assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/runs/{run}/output/"
        assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 86400
        assert s3_bytes(f"runs/{run}/input/{bundle}.zip") == bundle_files[bundle].read_bytes()


def test_a_training_job_of_several_instances_is_one_job_on_all_of_them():
    """`train` on several hosts makes one Dask cluster of them (test_train_cluster.py): one job, every
    instance in it, the bundle on each."""
    plan = RunPlan("run", BUCKET, "runs/", (Upload("sample", "runs/run/input/sample.zip", 2048),),
                   Where(image=IMAGE, role=ROLE, instance_count=3))  # fmt: skip
    request = contract.training_job_request(plan, 0)
    assert request["ResourceConfig"]["InstanceCount"] == 3
    [channel] = request["InputDataConfig"]
    assert channel["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "FullyReplicated"
    assert request["EnableNetworkIsolation"] is True


def test_training_waits_downloads_and_reports_a_failed_job_in_one_line(aws, bundle_files, tmp_path, capsys):
    runner = JobRunner(aws.url, tmp_path)
    try:
        status, out, err = run_cli(
            [
                "sagemaker",
                "audit",
                str(bundle_files["sample"]),
                str(bundle_files["broken"]),
                "--via",
                "training",
            ]
            + [
                *TARGET,
                *OPTIONS,
                "-o",
                str(tmp_path / "out"),
                "--poll",
                "0.2",
            ],
            capsys,
        )
    finally:
        runner.stop()
    assert status == 2
    report = json.loads((tmp_path / "out" / "sample.report.json").read_text())
    assert report["settings"]["repeats"] == 1 and report["summary"]["risk_level"]
    assert (tmp_path / "out" / "sample.report.csv").read_text().startswith("attack_model,")
    assert not (tmp_path / "out" / "broken.report.json").exists()
    assert out.count("Membership-inference risk:") == 1 and "== sample (" in out
    [line] = error_lines(err)
    # The container's failure file, as SageMaker reports it in FailureReason.
    assert " for broken failed: Failed: AlgorithmError: missing_model: the bundle has no model file" in line


def test_a_folder_is_packed_as_the_bundle_command_packs_it(aws, tmp_path, capsys):
    status, _, err = run_cli(
        ["sagemaker", "audit", str(ROOT / "sample_input"), "--via", "training"] + [*TARGET, "--no-wait"],
        capsys,
    )
    assert status == 0, err
    [key] = [key for key in s3_keys() if key.endswith("/input/sample_input.zip")]
    expected = tmp_path / "expected.zip"
    assert (
        cli.main(
            [
                "bundle",
                "--model",
                str(ROOT / "sample_input" / "model.joblib"),
                "--train",
                str(ROOT / "sample_input" / "train.csv"),
            ]
            + ["--subject", str(ROOT / "sample_input" / "subject.csv"), "-o", str(expected)]
        )
        == 0
    )
    with zipfile.ZipFile(io.BytesIO(s3_bytes(key))) as sent, zipfile.ZipFile(expected) as packed:
        assert sent.namelist() == packed.namelist() == ["model.joblib", "train.csv", "subject.csv"]
        for item in sent.namelist():
            assert sent.read(item) == packed.read(item)


# --------------------------------------------------------------------------------------------------
# Asynchronous endpoint
# --------------------------------------------------------------------------------------------------


def queue_async_answers(url: str, *answers: dict) -> None:
    import requests

    requests.post(
        f"{url}/moto-api/static/sagemaker/async-endpoint-results", json={"results": list(answers)}, timeout=10
    ).raise_for_status()


def test_async_creates_an_endpoint_invokes_it_downloads_and_deletes_it(
    aws, bundle_files, monkeypatch, tmp_path, capsys
):
    report_text = (ROOT / "sample_input" / "report.json").read_text()
    with pytest.raises(BundleError) as refused, open_bundle(bundle_files["broken"]):
        pass
    # moto answers the queued bodies in order: the real sample report, then the container's real error body.
    queue_async_answers(
        aws.url, {"data": report_text}, {"is_failure": True, "data": json.dumps(refused.value.to_dict())}
    )
    sent = record_requests(monkeypatch, "sagemaker.CreateModel", "sagemaker-runtime.InvokeEndpointAsync")
    status, out, err = run_cli(
        ["sagemaker", "audit", str(bundle_files["sample"]), str(bundle_files["broken"]), "--via", "async"]
        + ["--model-package", "arn:aws:sagemaker:us-east-1:123456789012:model-package/mia/1", "--role", ROLE]
        + ["--s3", S3, *OPTIONS, "-o", str(tmp_path), "--poll", "0.1"],
        capsys,
    )
    assert status == 2
    assert (tmp_path / "sample.report.json").read_text() == report_text
    [line] = error_lines(err)
    assert (
        "asynchronous invocation" in line
        and "for broken failed: missing_model: the bundle has no model file" in line
    )
    create_model = [params for op, params in sent if op == "sagemaker.CreateModel"]
    assert create_model[0]["EnableNetworkIsolation"] is True
    assert create_model[0]["PrimaryContainer"] == {
        "ModelPackageName": "arn:aws:sagemaker:us-east-1:123456789012:model-package/mia/1"
    }
    invocations = [params for op, params in sent if op == "sagemaker-runtime.InvokeEndpointAsync"]
    assert [params["InputLocation"].rsplit("/", 1)[1] for params in invocations] == [
        "sample.zip",
        "broken.zip",
    ]
    for params in invocations:
        assert params["ContentType"] == "application/zip" and params["Accept"] == "application/json"
        assert params["CustomAttributes"] == "repeats=1;attack_models=threshold;proportions=1"
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_endpoints()["Endpoints"] == []  # the endpoint this run created is gone
    assert "deleted endpoint" in err


def test_async_no_wait_then_fetch_by_run_name(aws, bundle_files, tmp_path, capsys):
    report_text = (ROOT / "sample_input" / "report.json").read_text()
    queue_async_answers(aws.url, {"data": report_text})
    status, out, err = run_cli(
        ["sagemaker", "audit", str(bundle_files["sample"]), "--via", "async", *TARGET, "--no-wait"], capsys
    )
    assert status == 0, err
    [line] = out.splitlines()
    run = line.split()[1].rstrip(";")
    assert f"mia-robustness sagemaker fetch {run} --s3 {S3} " in line
    sm = boto3.client("sagemaker", region_name=REGION)
    assert [endpoint["EndpointName"] for endpoint in sm.list_endpoints()["Endpoints"]] == [run]

    status, out, err = run_cli(
        ["sagemaker", "fetch", run, "--s3", S3, "-o", str(tmp_path), "--poll", "0.1"], capsys
    )
    assert status == 0, err
    assert (tmp_path / "sample.report.json").read_text() == report_text
    assert out.startswith("== sample (")
    assert sm.list_endpoints()["Endpoints"] == []  # fetch deletes the endpoint the run created


def test_async_refuses_an_endpoint_without_network_isolation(aws, bundle_files, capsys):
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model(ModelName="open", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    sm.create_endpoint_config(
        EndpointConfigName="open",
        ProductionVariants=[
            {
                "VariantName": "main",
                "ModelName": "open",
                "InstanceType": "ml.c5.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName="open", EndpointConfigName="open")
    status, _, err = run_cli(
        [
            "sagemaker",
            "audit",
            str(bundle_files["sample"]),
            "--via",
            "async",
            "--endpoint",
            "open",
            "--s3",
            S3,
        ],
        capsys,
    )
    assert status == 2
    [line] = error_lines(err)
    assert "endpoint open serves model open without network isolation" in line


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_a_missing_bucket_is_one_line(aws, bundle_files, capsys):
    status, _, err = run_cli(
        [
            "sagemaker",
            "audit",
            str(bundle_files["sample"]),
            "--via",
            "batch",
            "--image",
            IMAGE,
            "--role",
            ROLE,
        ]
        + ["--s3", "s3://no-such-bucket/x"],
        capsys,
    )
    assert status == 2
    [line] = error_lines(err)
    assert "NoSuchBucket" in line and "create the bucket or give another --s3" in line
    assert boto3.client("sagemaker", region_name=REGION).list_transform_jobs()["TransformJobSummaries"] == []


def test_no_permission_is_one_line(aws, bundle_files, monkeypatch, capsys):
    import moto.settings

    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks IAM from now on
    status, _, err = run_cli(
        [
            "sagemaker",
            "audit",
            str(bundle_files["sample"]),
            "--via",
            "training",
            "--image",
            IMAGE,
            "--role",
            ROLE,
        ]
        + ["--s3", S3],
        capsys,
    )
    assert status == 2
    [line] = error_lines(err)
    assert "AccessDenied" in line and "lacks the permission" in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--via", "batch", "--image", IMAGE], "give --role"),
        (["--via", "batch", "--algorithm", "arn:alg", "--role", ROLE], "an algorithm runs training jobs"),
        (["--via", "training", "--model-package", "arn:pkg", "--role", ROLE], "give --image or --algorithm"),
        (["--via", "batch", "--role", ROLE], "exactly one of --image, --model-package or --algorithm"),
        (["--via", "batch", "--image", IMAGE, "--role", ROLE, "--option", "repets=1"], "unknown option"),
        (["--via", "batch", "--image", IMAGE, "--role", ROLE, "--option", "repeats=0"], "repeats"),
        (
            ["--via", "training", "--image", IMAGE, "--role", ROLE, "--option", "max_runtime=-1"],
            "max_runtime",
        ),
        (["--via", "batch", "--image", IMAGE, "--role", ROLE, "--s3", "http://x"], "is not an S3 location"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_uploaded(aws, bundle_files, capsys, flags, message):
    argv = ["sagemaker", "audit", str(bundle_files["sample"]), *flags]
    status, _, err = run_cli(argv if "--s3" in flags else [*argv, "--s3", S3], capsys)
    assert status == 2
    [line] = error_lines(err)
    assert message in line
    assert s3_keys() == {}


def test_two_bundles_with_one_name_and_a_file_that_is_no_archive_are_refused(
    aws, bundle_files, tmp_path, capsys
):
    twin = tmp_path / "sample.tar"
    twin.write_bytes(b"not an archive")
    status, _, err = run_cli(
        ["sagemaker", "audit", str(bundle_files["sample"]), str(twin), "--via", "training", "--image", IMAGE]
        + ["--role", ROLE, "--s3", S3],
        capsys,
    )
    assert status == 2 and "two bundles are both named 'sample'" in error_lines(err)[0]
    status, _, err = run_cli(
        ["sagemaker", "audit", str(twin), "--via", "training", "--image", IMAGE, "--role", ROLE, "--s3", S3],
        capsys,
    )
    assert status == 2 and "is not a bundle archive" in error_lines(err)[0]
    assert s3_keys() == {}


def test_fetch_of_an_unknown_job_is_one_line(aws, capsys):
    status, _, err = run_cli(["sagemaker", "fetch", "mia-nothing-1", "-o", "unused"], capsys)
    assert status == 2
    assert "no transform or training job named 'mia-nothing-1'" in error_lines(err)[0]


# --------------------------------------------------------------------------------------------------
# The container side of the batch contract: MIA_AUDIT_OPTIONS
# --------------------------------------------------------------------------------------------------


def test_serve_reads_default_options_from_mia_audit_options():
    settings = ServerSettings.from_env({"MIA_AUDIT_OPTIONS": "repeats=1; attack-models=threshold,rf"})
    assert settings.default_overrides == {"repeats": "1", "attack_models": "threshold,rf"}
    assert ServerSettings.from_env({}).default_overrides == {}
    for bad in ("repeats", "repets=1", "repeats=0"):
        with pytest.raises(OptionsError) as raised:
            ServerSettings.from_env({"MIA_AUDIT_OPTIONS": bad})
        assert raised.value.code == "bad_setting" and "MIA_AUDIT_OPTIONS" in raised.value.message


def test_the_header_form_round_trips_through_the_containers_parser():
    from mia_robustness.options import parse_key_value_pairs

    options = {name: str(value) for name, value in CHEAPEST.items()} | {"label_column": "income"}
    assert parse_key_value_pairs(contract.header_form(options)) == options
    plan = RunPlan(
        "run", BUCKET, "p/", (Upload("a", "p/run/input/a.zip", 10),), Where(image=IMAGE, role=ROLE), options
    )
    assert contract.transform_job_request(plan)["Environment"] == {
        "MIA_AUDIT_OPTIONS": contract.header_form(options)
    }


# --------------------------------------------------------------------------------------------------
# The Marketplace notebook, executed
# --------------------------------------------------------------------------------------------------

EXAMPLES = ROOT / "examples"


def test_the_marketplace_notebook_runs_against_moto(aws, tmp_path, monkeypatch):
    """Every code cell of examples/sagemaker-marketplace.ipynb, in order, with REAL_AWS as the file has it.

    The batch transform and the training job really run (the job runner starts `./serve` and `./train`
    on the sample bundle). moto's server cannot take a binary body for ``invoke_endpoint`` (it decodes every
    body as UTF-8), so that one call is answered by botocore's Stubber, which also checks the request's
    fields; its answer is the real-time output sample that examples/make_samples.py recorded from `./serve`.
    """
    import nbformat
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    notebook = nbformat.read(EXAMPLES / "sagemaker-marketplace.ipynb", as_version=4)
    nbformat.validate(notebook)
    realtime_sample = (EXAMPLES / "samples" / "realtime" / "output" / "report.json").read_bytes()
    monkeypatch.chdir(EXAMPLES)
    monkeypatch.setenv("MIA_SAGEMAKER_S3", f"s3://{BUCKET}/notebook")
    monkeypatch.setenv("MIA_NOTEBOOK_REPORTS", str(tmp_path / "reports"))
    namespace: dict = {}
    stubber = None
    runner = JobRunner(aws.url, tmp_path)
    try:
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            exec(compile(cell.source, f"<notebook {cell['id']}>", "exec"), namespace)  # noqa: S102
            if stubber is None and "runtime" in namespace:
                stubber = Stubber(namespace["runtime"])
                stubber.add_response(
                    "invoke_endpoint",
                    {
                        "Body": StreamingBody(io.BytesIO(realtime_sample), len(realtime_sample)),
                        "ContentType": "application/json",
                    },
                    {
                        "EndpointName": "mia-robustness-realtime",
                        "Body": (EXAMPLES / "samples" / "input" / "sample_input.zip").read_bytes(),
                        "ContentType": "application/zip",
                        "Accept": "application/json",
                        "CustomAttributes": "attack_models=threshold,rf;repeats=1;proportions=0.5,1",
                    },
                )
                stubber.activate()
    finally:
        runner.stop()
    stubber.assert_no_pending_responses()

    assert namespace["REAL_AWS"] is False  # the file as committed runs here, not on AWS
    options = {"repeats": 1, "attack_models": ["threshold", "rf"], "proportions": [0.5, 1.0]}
    batch = json.loads((tmp_path / "reports" / "batch" / "sample_input.report.json").read_text())
    training = json.loads((tmp_path / "reports" / "training" / "sample_input.report.json").read_text())
    sample = json.loads(realtime_sample)
    for report in (batch, training, namespace["realtime_report"]):
        assert {name: report["settings"][name] for name in options} == options
        # The same bundle, options and seed give the same figures in every mode.
        assert report["summary"] == sample["summary"] and report["results"] == sample["results"]
    assert (tmp_path / "reports" / "training" / "sample_input.report.csv").is_file()
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert s3_keys("notebook/") == {}  # the clean-up cell removed what the runs left
