"""``train``: the SageMaker training-job shell. The "training" is an audit; its report is the model artifact.

SageMaker lays out ``/opt/ml`` (``MIA_OPT_ML`` moves it, e.g. for tests)::

    input/config/hyperparameters.json   audit options, every value a string (optional)
    input/config/resourceconfig.json    the job's hosts (optional; several: see training_cluster)
    input/data/<channel>/               exactly one channel holding the bundle: an archive file, or the
                                        bundle's files (also the legacy data.zip + model.pkl)
    model/                              <- report.json, report.csv (SageMaker packs this as model.tar.gz)
    output/data/                        <- report.json, report.csv
    output/failure                      <- why the job failed (SageMaker shows the first 1024 characters)

Exit status: 0 done, 2 the input is wrong (bundle, options, settings), 1 anything unexpected (on a job of
several hosts, also a host that cannot reach the others, or one whose peer failed).
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import InputError, MiaError
from .json_config import load_json_config
from .serving.progress import ProgressLog
from .serving.settings import TrainingSettings, opt_ml_root
from .training_cluster import LeaderHost, WorkerHost, read_resource_config

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INPUT = 2
# SageMaker shows this much of output/failure as the job's FailureReason.
FAILURE_REASON_CHARS = 1024
# Hyperparameters SageMaker and its SDKs add on their own (sagemaker_program, _tuning_objective_metric...).
IGNORED_PREFIXES = ("sagemaker_", "_")
# How deep to follow a channel that holds a single folder (an S3 prefix copied with its parent folder).
MAX_CHANNEL_DEPTH = 5
REPORT_FORMATS = {"report.json": "json", "report.csv": "csv"}
# Hyperparameter for the audit's time limit, in seconds (SageMaker's own longest job runs 28 days).
MAX_RUNTIME = "max_runtime"
MAX_RUNTIME_CEILING = 28 * 24 * 3600
# SageMaker caps hyperparameters at 100 keys of 256 characters each: far below this.
MAX_HYPERPARAMETERS_BYTES = 256 * 1024


@dataclass(frozen=True)
class JobPaths:
    """The parts of the SageMaker tree under ``root``."""

    root: Path

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def resource_config(self) -> Path:
        return self.root / "input" / "config" / "resourceconfig.json"

    @property
    def data(self) -> Path:
        return self.root / "input" / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output_data(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


def read_hyperparameters(path: Path) -> dict[str, Any]:
    """Audit options from ``hyperparameters.json`` (``{}`` when absent), SageMaker's own keys dropped.

    Values are strings; one that holds JSON text of a list or a string (``'[0.5, 1]'``, ``'"rf"'``, as
    some SageMaker SDKs encode them) is decoded first.
    """
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_HYPERPARAMETERS_BYTES + 1)
    except OSError as error:
        raise InputError(
            f"cannot read {path.name}: {error.strerror}; it must be a JSON object", code="bad_hyperparameters"
        ) from None
    values = load_json_config(
        data,
        "hyperparameters.json",
        error=InputError,
        code="bad_hyperparameters",
        max_bytes=MAX_HYPERPARAMETERS_BYTES,
    )
    options: dict[str, Any] = {}
    for key, value in values.items():
        if str(key).startswith(IGNORED_PREFIXES):
            continue
        if isinstance(value, str) and value.strip()[:1] in ("[", '"'):
            # Not JSON after all: the option parser judges the raw text.
            with contextlib.suppress(InputError):
                value = load_json_config(
                    f'{{"v": {value}}}', "a hyperparameter", error=InputError, code="bad_hyperparameters"
                )["v"]
        options[key] = value
    return options


def parse_max_runtime(value: Any) -> float | None:
    """The ``max_runtime`` hyperparameter: the audit's time limit in seconds (``None`` when not set).

    Keep it below the job's own ``StoppingCondition.MaxRuntimeInSeconds``, so that an audit that runs
    too long ends with a failure reason naming its stage rather than being stopped without one.
    """
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds <= MAX_RUNTIME_CEILING:
        raise InputError(
            f"hyperparameter {MAX_RUNTIME} must be a number of seconds between 1 and {MAX_RUNTIME_CEILING}, "
            f"got {str(value)[:40]!r}",
            code="bad_hyperparameters",
        )
    return seconds


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def find_bundle(data: Path) -> Path:
    """The bundle in the single input channel under ``data``: its archive file or its folder."""
    if not data.is_dir():
        raise InputError(
            f"no input channel: {data} does not exist; give the training job one input channel holding the bundle",
            code="no_input_channel",
        )
    entries = _entries(data)
    pipes = [p.name for p in entries if p.is_fifo()]
    if pipes:
        raise InputError(
            f"input channel {pipes[0]} is in Pipe mode, which is not supported; use File input mode",
            code="pipe_mode_unsupported",
        )
    channels = [p for p in entries if p.is_dir() and _entries(p)]
    if not channels:
        raise InputError(
            f"no input channel under {data} holds any file; put the bundle (an archive, or its model and "
            "tables) in one channel",
            code="no_input_channel",
        )
    if len(channels) > 1:
        names = ", ".join(p.name for p in channels)
        raise InputError(
            f"found {len(channels)} input channels with files ({names}); give exactly one channel holding the bundle",
            code="too_many_channels",
        )
    folder = channels[0]
    for _ in range(MAX_CHANNEL_DEPTH):
        inside = _entries(folder)
        if len(inside) == 1 and inside[0].is_dir():
            folder = inside[0]
            continue
        if len(inside) == 1 and inside[0].is_file() and _is_archive(inside[0]):
            return inside[0]
        break
    return folder


def _is_archive(path: Path) -> bool:
    from .archive import detect_archive_kind

    return detect_archive_kind(path) is not None


def write_reports(report: Any, folders: list[Path]) -> list[Path]:
    """Render ``report`` once per format and write each file into every folder."""
    from .report import render

    texts = {name: render(report, fmt) for name, fmt in REPORT_FORMATS.items()}
    written = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (folder / name).write_text(text, encoding="utf-8")
            written.append(folder / name)
    return written


def write_failure(path: Path, reason: str) -> None:
    """Write ``reason`` to SageMaker's failure file (best effort: the exit status still tells)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason, encoding="utf-8")
    except OSError as error:
        print(f"train: could not write {path}: {error}", file=sys.stderr)


def run(settings: TrainingSettings, say: Callable[[str], None], cluster: str | None = None) -> None:
    """Audit the bundle in the job's input channel and write the reports (raises on failure).

    ``cluster`` is the address of the Dask scheduler of a job of several hosts (``tcp://HOST:PORT``); it
    replaces ``MIA_DASK_SCHEDULER``, which a job of one host follows as the CLI does.
    """
    from . import audit

    paths = JobPaths(settings.opt_ml)
    runtime = settings.runtime if cluster is None else replace(settings.runtime, cluster=cluster)
    options = read_hyperparameters(paths.hyperparameters)
    max_runtime = parse_max_runtime(options.pop(MAX_RUNTIME, None))
    source = find_bundle(paths.data)
    say(f"auditing {source} with options {options or '{}'}")
    report = audit(
        source,
        overrides=options,
        progress=ProgressLog(say),
        **runtime.audit_arguments(),
        timeout=max_runtime,
    )
    for path in write_reports(report, [paths.model, paths.output_data]):
        say(f"wrote {path}")
    summary = report.summary
    say(f"risk level {summary.risk_level}, robustness score {summary.robustness_score}/100")


def run_on_hosts(settings: TrainingSettings, say: Callable[[str], None]) -> None:
    """:func:`run`, on this host's part of the job: all of it with one host (or no resourceconfig.json);
    with several, the first host runs it on their Dask cluster and the others lend it their workers."""
    hosts = read_resource_config(JobPaths(settings.opt_ml).resource_config)
    if hosts is None or not hosts.several:
        run(settings, say)
        return
    if not hosts.is_leader:
        WorkerHost(hosts, settings.job_cluster, settings.cpus, say).serve()
        return
    with LeaderHost(hosts, settings.job_cluster, settings.cpus, say) as leader:
        try:
            run(settings, say, cluster=leader.address)
        except BaseException as error:
            leader.fail(failure_of(error)[0])
            raise
        leader.finish()


def failure_of(error: BaseException) -> tuple[str, int]:
    """The failure file's reason for ``error`` (at most :data:`FAILURE_REASON_CHARS`) and the exit status."""
    if isinstance(error, MiaError):
        status = EXIT_INPUT if error.http_status < 500 else EXIT_UNEXPECTED
        reason = f"{error.code}: {error.message}"
    else:
        status = EXIT_UNEXPECTED
        reason = (
            f"internal_error: the audit failed unexpectedly ({type(error).__name__}: {error}); "
            "the job's log has the traceback"
        )
    return reason[:FAILURE_REASON_CHARS], status


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``train`` executable; returns the exit status."""

    def say(line: str) -> None:
        print(f"train: {line}", flush=True)

    args = sys.argv[1:] if argv is None else argv
    failure = JobPaths(opt_ml_root()).failure
    if args:
        # SageMaker runs `train` without arguments; anything else is a misuse of the image.
        reason = f"train takes no arguments, got {' '.join(args)!r}; set audit options as hyperparameters"
        write_failure(failure, f"bad_arguments: {reason}")
        print(f"train: {reason}", file=sys.stderr)
        return EXIT_INPUT
    try:
        settings = TrainingSettings.from_env()
        failure = JobPaths(settings.opt_ml).failure
        run_on_hosts(settings, say)
    except Exception as error:  # noqa: BLE001 - the job must always leave a failure reason
        reason, status = failure_of(error)
        if isinstance(error, MiaError):
            print(f"train: failed: {reason}", file=sys.stderr, flush=True)
        else:
            traceback.print_exc()
        write_failure(failure, reason)
        return status
    failure.unlink(missing_ok=True)  # a stale reason from an earlier run of the same tree
    return EXIT_OK
