"""Issue #13's one-machine targets: each audit in a fresh process, in-process (``audit_estimator``).

Usage (from the repository root)::

    .venv/bin/python bench/scale.py highcard --rows 100000 --repeats 3      # target: <= 45 s, <= 2 GB
    .venv/bin/python bench/scale.py highcard --rows 1000000 --repeats 1     # target: <= 5 min, <= 6 GB
    .venv/bin/python bench/scale.py adult --rows 16000                      # target: <= 30 s
    .venv/bin/python bench/scale.py highcard --rows 100000 --times 3 --json out.json

``highcard`` is the issue's case: a 4-class random forest (``min_samples_leaf=2``, scikit-learn's other
defaults) on 20 continuous features, members and as many non-members, default attacks. Its signal rows are
almost all distinct, so the learned attacks cannot merge duplicates. ``--trees`` shrinks the forest (the
1M-row forest at 100 trees is ~6 GB of nodes before the audit starts). ``adult`` is the Adult census table,
one-hot encoding + a 100-tree forest in one scikit-learn pipeline, every audit option at its default
(LiRA, RMIA and the what-if included).

Targets are built once and cached under ``bench/.cache/``. Each audit runs in a child process, so its
peak resident memory (``ru_maxrss``) is its own; the figures printed are the median run's, with every run's
wall time beside it and the load average before each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ADULT = ROOT.parent / "shared" / "data" / "adult.csv"
CACHE = Path(__file__).resolve().parent / ".cache"


def highcard_case(rows: int, trees: int, seed: int):
    """``(model, members, non_members)``: the 4-class forest on 20 continuous features."""
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(
        n_samples=2 * rows,
        n_features=20,
        n_informative=12,
        n_redundant=4,
        n_classes=4,
        flip_y=0.05,
        random_state=seed,
    )
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"x{i}" for i in range(20)]).assign(label=y)
    model = RandomForestClassifier(n_estimators=trees, min_samples_leaf=2, n_jobs=-1, random_state=seed)
    model.fit(frame.iloc[:rows].drop(columns="label"), y[:rows])
    model.set_params(n_jobs=None)  # ship it as a user would
    return model, frame.iloc[:rows].reset_index(drop=True), frame.iloc[rows:].reset_index(drop=True)


def adult_case(rows: int, seed: int):
    """``(pipeline, members, non_members)``: one-hot encoding + a 100-tree forest on Adult."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.read_csv(ADULT, skipinitialspace=True).sample(n=2 * rows, random_state=seed)
    frame = frame.reset_index(drop=True)
    categorical = list(frame.drop(columns="income").select_dtypes(exclude="number").columns)
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("onehot", OneHotEncoder(handle_unknown="ignore"), categorical)], remainder="passthrough"
                ),
            ),
            ("forest", RandomForestClassifier(n_estimators=100, random_state=seed)),
        ]
    )
    members, non_members = frame.iloc[:rows].reset_index(drop=True), frame.iloc[rows:].reset_index(drop=True)
    model.fit(members.drop(columns="income"), members["income"])
    return model, members, non_members


def cached_case(args: argparse.Namespace) -> Path:
    """Build the case once; its pickle's path."""
    import joblib

    name = (
        f"highcard-{args.rows}-t{args.trees}-s{args.seed}.joblib"
        if args.case == "highcard"
        else f"adult-pipeline-{args.rows}-s{args.seed}.joblib"
    )
    path = CACHE / name
    if not path.exists():
        started = time.perf_counter()
        case = (
            highcard_case(args.rows, args.trees, args.seed)
            if args.case == "highcard"
            else adult_case(args.rows, args.seed)
        )
        CACHE.mkdir(parents=True, exist_ok=True)
        joblib.dump(case, path.with_suffix(".part"))
        path.with_suffix(".part").rename(path)
        print(f"  built {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def run_child(args: argparse.Namespace) -> None:
    """One audit in this fresh process; a JSON record on stdout."""
    import joblib

    from mia_robustness import audit_estimator

    model, members, non_members = joblib.load(args.case_file)
    options = json.loads(args.options)
    started, cpu_started = time.perf_counter(), time.process_time()
    report = audit_estimator(model, members, non_members, **options)
    wall = time.perf_counter() - started
    record = {
        "wall_seconds": wall,
        "cpu_seconds": time.process_time() - cpu_started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timings": report.timings,
        "rows_per_side": report.data.rows_per_side,
        "warnings": list(report.warnings),
        "results": [
            {
                "attack": r.attack_model,
                "proportion": r.proportion,
                "auc": r.mean["auc"],
                "tpr": r.mean["tpr_at_1pct_fpr"],
            }
            for r in report.results
        ],
        "what_if": report.remediation.status if report.remediation is not None else None,
        # The retrained rows' figures: name -> (strongest attack's AUC, accuracy), baseline first.
        "what_if_rows": {
            row.name: [row.attack.auc, row.utility.accuracy]
            for row in [report.remediation.baseline, *report.remediation.variants]
            if row is not None and row.kind != "serving"
        }
        if report.remediation is not None and report.remediation.status == "ran"
        else {},
    }
    print(json.dumps(record))


def measure(args: argparse.Namespace, case_file: Path, python: str = sys.executable) -> dict:
    """Run the audit ``args.times`` times, each in a fresh process of ``python``; the median run's record,
    with every wall."""
    records = []
    for _ in range(args.times):
        command = [python, __file__, "--child", str(case_file), "--options", args.options, args.case]
        load = os.getloadavg()[0]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"the benchmark child failed:\n{done.stderr[-4000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
        record["load_average_before"] = load
        records.append(record)
    walls = [r["wall_seconds"] for r in records]
    median = sorted(records, key=lambda r: r["wall_seconds"])[len(records) // 2]
    return {**median, "walls": walls, "loads": [r["load_average_before"] for r in records]}


def describe(args: argparse.Namespace, record: dict) -> str:
    """Plain-text lines for the median run."""
    timings = record["timings"]
    cells = {k[7:-8]: v for k, v in timings.items() if k.startswith("attack_") and k.endswith("_seconds")}
    best: dict[float, tuple[str, float]] = {}
    for row in record["results"]:
        if row["proportion"] not in best or row["auc"] > best[row["proportion"]][1]:
            best[row["proportion"]] = (row["attack"], row["auc"])
    return "\n".join(
        [
            f"{args.case} {record['rows_per_side']:,} + {record['rows_per_side']:,} rows, options {args.options}",
            f"  audit wall median {statistics.median(record['walls']):.2f} s (runs "
            + ", ".join(f"{w:.2f}" for w in record["walls"])
            + f"), peak RSS {record['peak_rss_mb']:.0f} MB, CPU {record['cpu_seconds']:.1f} s; load average before "
            + ", ".join(f"{v:.2f}" for v in record["loads"]),
            "  stages: "
            + ", ".join(
                f"{k} {v:.2f} s" for k, v in timings.items() if not k.startswith("attack_") and k != "total"
            ),
            "  attack cell-seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in cells.items()),
            "  strongest AUC per proportion: "
            + ", ".join(f"{p:g}:{a}={auc:.4f}" for p, (a, auc) in sorted(best.items())),
            f"  what-if: {record['what_if']}"
            + "".join(
                f"; {name} AUC {auc:.4f} acc {accuracy:.4f}"
                for name, (auc, accuracy) in record.get("what_if_rows", {}).items()
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("highcard", "adult"))
    parser.add_argument("--rows", type=int, default=100_000, help="rows per side")
    parser.add_argument("--repeats", type=int, default=None, help="audit repeats (default: the audit's)")
    parser.add_argument("--trees", type=int, default=100, help="highcard: the target forest's trees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--times", type=int, default=1, help="runs; the median is reported")
    parser.add_argument("--options", default=None, help="audit options as JSON (overrides --repeats)")
    parser.add_argument("--json", type=Path, help="append the record (one JSON line) here")
    parser.add_argument(
        "--baseline",
        help="another interpreter whose mia_robustness is the code before (e.g. main's .venv/bin/python): "
        "its audit runs first, then this one's, and both are printed with their ratio",
    )
    parser.add_argument("--child", type=Path, dest="case_file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.options is None:
        args.options = json.dumps({"repeats": args.repeats} if args.repeats else {})
    if args.case_file is not None:
        run_child(args)
        return
    case_file = cached_case(args)
    runs = (
        [("before", args.baseline), ("after", sys.executable)] if args.baseline else [("now", sys.executable)]
    )
    records = {}
    for name, python in runs:
        records[name] = measure(args, case_file, python)
        print(f"[{name}] " + describe(args, records[name]), flush=True)
        if args.json:
            with args.json.open("a") as handle:
                row = {"case": args.case, "rows": args.rows, "options": args.options, "code": name}
                handle.write(json.dumps(row | records[name]) + "\n")
    if args.baseline:
        print(compare(records["before"], records["after"]))


def compare(before: dict, after: dict) -> str:
    """The after / before ratios, and a Markdown table of each attack's AUC and TPR at 1% FPR per proportion."""
    ratio = (
        f"after / before: wall {statistics.median(after['walls']) / statistics.median(before['walls']):.2f}, "
        f"CPU {after['cpu_seconds'] / before['cpu_seconds']:.2f}, "
        f"peak RSS {after['peak_rss_mb'] / before['peak_rss_mb']:.2f}"
    )
    old = {(r["attack"], r["proportion"]): r for r in before["results"]}
    lines = [
        ratio,
        "| attack | proportion | AUC before | AUC after | change | TPR@1%FPR before | after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in after["results"]:
        b = old.get((r["attack"], r["proportion"]))
        if b is not None:
            lines.append(
                f"| {r['attack']} | {r['proportion']:g} | {b['auc']:.4f} | {r['auc']:.4f} | "
                f"{r['auc'] - b['auc']:+.4f} | {b['tpr']:.4f} | {r['tpr']:.4f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
