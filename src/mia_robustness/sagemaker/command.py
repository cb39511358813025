"""``mia-robustness sagemaker audit|fetch``: the command-line face of :mod:`mia_robustness.sagemaker`.

:func:`add_parser` adds the subcommand to the CLI's parser; :func:`run` carries it out. The CLI maps the
errors (exit 2, one line) as for every other command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ..errors import SageMakerError
from ..report import render_text
from . import aws, client, reports
from .contract import DEFAULT_INSTANCE_TYPE, MODES, Where

ProgressFactory = Callable[[TextIO], Callable[[str, int, int], None]]


def add_parser(commands: Any) -> None:
    """Add ``sagemaker audit`` and ``sagemaker fetch`` to the CLI's subcommands."""
    parser = commands.add_parser("sagemaker", help="run audits on SageMaker and download their reports")
    actions = parser.add_subparsers(dest="sagemaker_command", required=True)

    start = actions.add_parser("audit", help="upload bundles, run them on SageMaker, download the reports")
    start.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle archives or folders")
    start.add_argument(
        "--via", required=True, choices=MODES, help="batch transform, training jobs or async endpoint"
    )
    start.add_argument("--image", help="container image URI (ECR)")
    start.add_argument("--model-package", help="Marketplace model package ARN (batch, async)")
    start.add_argument("--algorithm", help="Marketplace algorithm ARN (training)")
    start.add_argument("--endpoint", help="an existing asynchronous endpoint (async; none is created)")
    start.add_argument("--role", help="execution role ARN SageMaker assumes")
    start.add_argument(
        "--s3", required=True, help="s3://bucket/prefix for the bundles, reports and the run's manifest"
    )
    start.add_argument(
        "--instance-type", default=DEFAULT_INSTANCE_TYPE, help=f"default {DEFAULT_INSTANCE_TYPE}"
    )
    start.add_argument(
        "--instance-count", type=_count, default=1, help="instances of the job or endpoint (default 1)"
    )
    start.add_argument(
        "--option",
        action="append",
        default=[],
        type=_name_value,
        metavar="NAME=VALUE",
        help="audit option by the CLI's names, e.g. repeats=1 (repeatable)",
    )
    start.add_argument(
        "--wait", action=argparse.BooleanOptionalAction, default=True, help="wait for the reports (default)"
    )
    _add_common(start)

    resume = actions.add_parser(
        "fetch", help="wait for a run started with --no-wait and download its reports"
    )
    resume.add_argument(
        "job_name", metavar="JOB_NAME", help="a transform or training job, or an async run's name"
    )
    resume.add_argument(
        "--s3", help="the s3://bucket/prefix the run was started with (needed for an async run)"
    )
    _add_common(resume)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", default=".", metavar="OUTDIR", help="folder for the reports (default .)"
    )
    parser.add_argument("--profile", help="AWS profile (default: the usual AWS configuration)")
    parser.add_argument("--region", help="AWS region (default: the profile's)")
    parser.add_argument(
        "--poll", type=_poll_seconds, default=client.POLL_SECONDS, help="seconds between status checks"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on standard error")


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number between 1 and 100")
    return int(text)


def _poll_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds between 0 and 3600")
    return value


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not of the form name=value")
    return name.strip(), value.strip()


def run(args: argparse.Namespace, progress_factory: ProgressFactory) -> None:
    """Carry out ``sagemaker audit`` or ``sagemaker fetch`` (raises ``MiaError`` for the CLI to map)."""
    quiet = args.quiet

    def say(line: str) -> None:
        if not quiet:
            sys.stderr.write(f"{line}\n")
            sys.stderr.flush()

    progress = None if quiet else progress_factory(sys.stderr)
    session = aws.make_session(args.profile, args.region)
    if args.sagemaker_command == "fetch":
        found = client.find_run(args.job_name, s3=args.s3, session=session)
        _finish(found, args, session, say, progress)
        return
    where = Where(
        image=args.image,
        model_package=args.model_package,
        algorithm=args.algorithm,
        role=args.role,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        endpoint=args.endpoint,
    )
    started = client.submit(
        args.bundles, args.via, where, args.s3, dict(args.option), session=session, say=say, progress=progress
    )
    if args.wait:
        _finish(started, args, session, say, progress)
        return
    jobs = sorted(set(started.jobs.values())) if started.mode != "async" else [started.plan.name]
    s3 = "" if started.mode != "async" else f" --s3 {args.s3}"
    for job in jobs:
        sys.stdout.write(
            f"started {job}; resume with: mia-robustness sagemaker fetch {job}{s3} -o {args.output}\n"
        )


def _finish(found: client.Run, args: argparse.Namespace, session: Any, say: Any, progress: Any) -> None:
    results = reports.finish(found, args.output, session=session, say=say, progress=progress, poll=args.poll)
    for result in results:
        if result.report is not None:
            sys.stdout.write(f"== {result.name} ({result.job})\n{render_text(result.report)}\n")
    error = reports.failures_error(results)
    if error:
        raise error
    if not results:
        raise SageMakerError("the run has no bundles", code="bad_manifest")
