"""The command-line shell: parse flags, call :func:`audit`, write the report. Exit 2 on bad input."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn, TextIO

from .bundle_audit import audit
from .bundle_check import make_bundle
from .errors import ClusterError, InputError, MiaError
from .executor import scheduler_address
from .options import ATTACK_MODELS, DEVICES
from .report import render, render_remediation_csv, render_text
from .rules import BELOW_RULES, RISK_RULES
from .runtime import ENV_DEBUG, RuntimeSettings
from .sagemaker import command as sagemaker_command
from .version import __version__

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
# `audit --fail-on LEVEL`: the report was written and its risk level is at or above LEVEL.
EXIT_RISK = 3
RISK_LEVELS = (BELOW_RULES, *(level for level, _, _ in reversed(RISK_RULES)))  # lowest first
FORMAT_BY_SUFFIX = {".json": "json", ".csv": "csv", ".html": "html", ".htm": "html"}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mia-robustness", description="Audit a classifier's robustness to membership inference."
    )
    parser.add_argument("--version", action="version", version=f"mia-robustness {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = commands.add_parser("audit", help="audit a bundle and write its report")
    run.add_argument("input", help="bundle: a folder, or a zip / tar / tar.gz archive")
    run.add_argument("-o", "--output", help="write the report here (default: standard output)")
    run.add_argument(
        "--format",
        choices=sorted(set(FORMAT_BY_SUFFIX.values())),
        help="report format (default: from -o's suffix, else json)",
    )
    run.add_argument(
        "--proportions", help="attacker-knowledge shares, e.g. 0.1,0.5,1 (default 0.1,0.2,...,1)"
    )
    run.add_argument("--attack-models", help=f"comma-separated, from {','.join(ATTACK_MODELS)} (default all)")
    run.add_argument("--repeats", help="repetitions with different seeds (default 3)")
    run.add_argument("--seed", help="root random seed (default 0)")
    run.add_argument("--device", choices=DEVICES, help="where the nn attack trains (default auto)")
    run.add_argument(
        "--label-column", help="label column (default: label/target/class/y, else the last column)"
    )
    run.add_argument(
        "--classes",
        help="for a native XGBoost / LightGBM / CatBoost model file: its class names, comma-separated, in the "
        "order of its classes 0, 1, ... (default: the indices); a model that names its own classes keeps them, "
        "and other names are refused",
    )
    run.add_argument(
        "--reference-recipe",
        help='JSON: the recipe lira / rmia and the what-if retrain, e.g. \'{"estimator": "XGBClassifier", '
        '"params": {"max_depth": 4}}\' (default: the model\'s own)',
    )
    run.add_argument("--eval-fraction", help="share of each side held out for evaluation (default 0.3)")
    run.add_argument(
        "--reference-models",
        help="clones of the target for lira and rmia, shared by the repeats at the default proportions (default 4)",
    )
    run.add_argument(
        "--boundary-queries",
        help="perturbed copies of each row the boundary attack asks the model about (default 8)",
    )
    run.add_argument(
        "--allow-swapped",
        nargs="?",
        const="true",
        choices=("true", "false"),  # so `--allow-swapped BUNDLE` is refused, not read as the value
        help="audit even when non-members are scored far better than members (the tables look swapped); "
        "the flag alone means true",
    )
    run.add_argument(
        "--what-if",
        action=argparse.BooleanOptionalAction,
        help="retrain variants of the model's recipe and measure what each does to the attack and to "
        "accuracy (default: when lira / rmia run)",
    )
    run.add_argument(
        "--utility-budget",
        help="accuracy points the recommended variant may give up (default 1.0)",
    )
    run.add_argument(
        "--fail-on",
        choices=RISK_LEVELS[1:],
        help="exit with status 3 when the risk level is at or above this, after writing the report (for CI)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_seconds,
        help="stop the audit after this many seconds, naming the stage it was in (default: no limit)",
    )
    run.add_argument(
        "--no-sandbox",
        dest="sandbox",
        action="store_false",
        help="load and run the model in this process, without containment: only for models you trust",
    )
    run.add_argument(
        "--sandbox-memory-mb",
        type=_sandbox_megabytes,
        help="address-space limit of the sandboxed model process (default: estimated from the bundle)",
    )
    run.add_argument(
        "--cluster",
        metavar="tcp://HOST:PORT",
        help="run the audit's work on this Dask scheduler's workers (default: MIA_DASK_SCHEDULER, else "
        "in this process)",
    )
    run.add_argument(
        "--records",
        metavar="FILE",
        help="also write every evaluated member's per-attack scores to this CSV, most exposed first",
    )
    run.add_argument(
        "--what-if-csv",
        metavar="FILE",
        help="also write the remediation what-if's configurations (baseline, variants, serving-side options) "
        "to this CSV, one row each",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress on standard error")

    pack = commands.add_parser(
        "bundle", help="check a model and its tables as the audit will, and pack them into a bundle zip"
    )
    pack.add_argument(
        "--model",
        required=True,
        help="model file (.pkl, .pickle, .joblib, .skops, .onnx, or a native XGBoost .json / .ubj, LightGBM .txt, "
        "CatBoost .cbm)",
    )
    pack.add_argument("--train", required=True, help="members table (CSV or Parquet)")
    pack.add_argument("--subject", required=True, help="non-members table (CSV or Parquet)")
    pack.add_argument("--label-column", help="stored in the bundle's config.json")
    pack.add_argument(
        "--classes",
        help="for a model file that knows its classes only as 0, 1, ... (a native booster, a PyTorch ONNX graph): "
        "their names, comma-separated, in that order; stored in the bundle's config.json",
    )
    pack.add_argument("-o", "--output", required=True, help="bundle zip to write")
    pack.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="pack without checking that the model loads and scores the tables (in the sandbox, as the audit)",
    )

    show = commands.add_parser("summary", help="print the summary table of a JSON report")
    show.add_argument("report", help="a report written by `audit --format json`")
    sagemaker_command.add_parser(commands)
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 7 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds between 1 and 604800")
    return value


def _sandbox_megabytes(text: str) -> int:
    # The sandboxed interpreter with numpy, pandas and scikit-learn maps about a gigabyte before any data.
    if not text.isdigit() or not 1024 <= int(text) <= 10**7:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number of MB, at least 1024")
    return int(text)


class Progress:
    """Progress on standard error: a bar on a terminal, otherwise a line per step of a short counted stage
    (at most :data:`EVERY_STEP_UP_TO` steps: the reference fits) and a line per tenth of a longer one.

    The engine's notes (what the reference stage will cost, then the time left) follow the count.
    """

    BAR = 30
    EVERY_STEP_UP_TO = 20
    accepts_notes = True  # the engine passes note= text (see engine.Stopwatch)

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.perf_counter()
        self.last_tenth: dict[str, int] = {}
        self.bars: dict[str, str] = {}  # on a terminal: the unfinished stages' bars, side by side on one line

    def _write_bars(self, elapsed: float) -> None:
        self.stream.write(f"\r{' | '.join(self.bars.values())} {elapsed:6.1f}s\x1b[K")

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        elapsed = time.perf_counter() - self.started
        name = stage.replace("_", " ")
        if total <= 1:
            self.stream.write(
                f"\r[{elapsed:6.1f}s] {name} done\x1b[K\n" if self.tty else f"[{elapsed:6.1f}s] {name} done\n"
            )
            if self.tty and self.bars:  # a stage running beside it: its bar again, below the line
                self._write_bars(elapsed)
        elif self.tty:
            if note and done <= 1:  # the stage's plan, then its estimated cost: lines of their own
                self.stream.write(f"\r{name}: {note}\x1b[K\n")
                note = ""
            filled = self.BAR * done // total
            bar = f"{name} [{'#' * filled}{'.' * (self.BAR - filled)}] {done}/{total}"
            if done == total:  # a finished stage keeps its line; the others' bars follow below it
                self.bars.pop(stage, None)
                self.stream.write(f"\r{bar} {elapsed:6.1f}s\x1b[K\n")
            else:
                self.bars[stage] = bar + (f"  {note}" if note else "")
            if self.bars:
                self._write_bars(elapsed)
        elif note or total <= self.EVERY_STEP_UP_TO or 10 * done // total != self.last_tenth.get(stage):
            self.last_tenth[stage] = 10 * done // total
            self.stream.write(f"[{elapsed:6.1f}s] {name} {done}/{total}{f': {note}' if note else ''}\n")
        self.stream.flush()


def _run_audit(args: argparse.Namespace) -> int:
    fmt = (
        args.format or FORMAT_BY_SUFFIX.get(Path(args.output).suffix.lower(), "json")
        if args.output
        else args.format or "json"
    )
    _check_outputs({"-o": args.output, "--records": args.records, "--what-if-csv": args.what_if_csv})
    overrides = {
        "proportions": args.proportions,
        "attack_models": args.attack_models,
        "repeats": args.repeats,
        "seed": args.seed,
        "device": args.device,
        "label_column": args.label_column,
        "eval_fraction": args.eval_fraction,
        "reference_models": args.reference_models,
        "allow_swapped": args.allow_swapped,
        "what_if": args.what_if,
        "utility_budget": args.utility_budget,
        "boundary_queries": args.boundary_queries,
        "classes": args.classes,
        "reference_recipe": args.reference_recipe,
    }
    if not args.sandbox and not args.quiet:
        sys.stderr.write(
            "warning: --no-sandbox: the model's code runs in this process, with your permissions\n"
        )
    arguments = RuntimeSettings.from_env(os.environ).audit_arguments()
    if args.sandbox_memory_mb is not None:
        arguments["sandbox_memory_mb"] = args.sandbox_memory_mb
    if args.cluster is not None:
        arguments["cluster"] = scheduler_address(args.cluster, "--cluster")
    report = audit(
        args.input,
        overrides,
        progress=None if args.quiet else Progress(sys.stderr),
        timeout=args.timeout,
        sandbox=args.sandbox,
        **arguments,
    )
    text = render(report, fmt)
    if args.output:
        _write_atomically(Path(args.output), text)
        if not args.quiet:
            sys.stderr.write(f"report written to {args.output}\n")
    else:
        sys.stdout.write(text)
    if args.records and report.records is not None:
        _write_atomically(Path(args.records), report.records.to_csv())
        if not args.quiet:
            sys.stderr.write(f"per-record scores written to {args.records}\n")
    if args.what_if_csv:
        _write_atomically(Path(args.what_if_csv), render_remediation_csv(report))
        if not args.quiet:
            sys.stderr.write(f"what-if configurations written to {args.what_if_csv}\n")
    for warning in report.data.sanity.warnings:  # mixed-up data: said here too, not only in the report
        sys.stderr.write(f"warning: {warning}\n")
    level = report.summary.risk_level
    if args.fail_on and RISK_LEVELS.index(level) >= RISK_LEVELS.index(args.fail_on):
        sys.stderr.write(
            f"risk level {level} is at or above --fail-on {args.fail_on}: exit status {EXIT_RISK}\n"
        )
        return EXIT_RISK
    return 0


def _check_outputs(outputs: dict[str, str | None]) -> None:
    """Refuse, before an audit of minutes, output files that could not be written: a folder's name, or
    one file named by two flags (one output would overwrite another)."""
    given = {flag: Path(name) for flag, name in outputs.items() if name}
    for flag, path in given.items():
        if path.is_dir():
            raise InputError(
                f"{flag} {path} is a folder; give the name of a file to write", code="bad_output"
            )
    by_file: dict[Path, list[str]] = {}
    for flag, path in given.items():
        by_file.setdefault(path.resolve(), []).append(flag)
    for flags in by_file.values():
        if len(flags) > 1:
            raise InputError(
                f"{' and '.join(flags)} name the same file ({given[flags[0]]}); give each its own file",
                code="bad_output",
            )


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise InputError(
            f"cannot write {path}: {exc.strerror or type(exc).__name__}; give a file in a folder you can write",
            code="bad_output",
        ) from None


def _run_bundle(args: argparse.Namespace) -> None:
    settings = RuntimeSettings.from_env(os.environ)
    checked = make_bundle(
        args.model,
        args.train,
        args.subject,
        args.output,
        label_column=args.label_column,
        classes=args.classes,
        check=args.check,
        workdir=settings.temp_root,
        sandbox_memory_mb=settings.sandbox_memory_mb,
    )
    if checked is not None:
        sys.stderr.write(f"checked: {checked.describe()}\n")
    sys.stderr.write(f"bundle written to {args.output}\n")


def _run_summary(args: argparse.Namespace) -> None:
    try:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
        sys.stdout.write(render_text(report))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{args.report} is not a readable mia-robustness JSON report ({type(exc).__name__}: {exc})",
            code="bad_report",
        ) from None


COMMANDS = {
    "audit": _run_audit,
    "bundle": _run_bundle,
    "summary": _run_summary,
    "sagemaker": lambda args: sagemaker_command.run(args, Progress),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
    except MiaError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        # An unreachable --cluster is a 503 for a server (its own setting) but the user's address here.
        user_fixable = exc.http_status < 500 or isinstance(exc, ClusterError)
        return EXIT_BAD_INPUT if user_fixable else EXIT_INTERNAL
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:  # the one place an unexpected failure becomes one line, not a traceback
        if os.environ.get(ENV_DEBUG):
            raise
        sys.stderr.write(
            f"internal error: {type(exc).__name__}: {exc} (set MIA_DEBUG=1 for a traceback and report it)\n"
        )
        return EXIT_INTERNAL
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
