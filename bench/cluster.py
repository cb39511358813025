"""The audit on a local Dask cluster vs in one process: real `dask scheduler` / `dask worker` processes on
loopback (``tests/cluster_helpers.py``), the same bundle and options each time.

Usage (from the repository root)::

    .venv/bin/python bench/cluster.py                         # Adult 6k + 6k, forest pipeline
    .venv/bin/python bench/cluster.py --rows 16000 --trees 100 --models 8 --json out.json

Runs, one after another:

* in-process, one thread (``workers=1``: the compute one single-threaded worker has) and with every CPU;
* one single-threaded worker;
* two single-threaded workers.

The workers preload the engine (``executor.WORKER_PRELOAD``, as the README says to start them), and each audit
starts once they are idle: a cluster that has been up a while has imported the engine and started its spare
sandbox children (``sandbox/spare.py``) long before an audit arrives.

For each: the whole audit's wall time and the reference stage's (``timings.reference_attacks``: its fits
and LiRA / RMIA), and whether the figures equal the in-process ones. Targets (issue #13): one worker takes at
most 1.2x the in-process time, and two workers make the reference stage at least 1.5x faster than one.
The attacks are LiRA and RMIA only (and no what-if), so the reference stage is the audit's work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from pandas.api.types import is_numeric_dtype  # noqa: E402
from sklearn.compose import make_column_transformer  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder  # noqa: E402

from builders import adult_frame, split_fit, write_bundle  # noqa: E402
from cluster_helpers import loopback_cluster, wait_until_idle  # noqa: E402
from mia_robustness import audit  # noqa: E402
from mia_robustness.executor import WORKER_PRELOAD  # noqa: E402
from mia_robustness.report import render  # noqa: E402


def build_bundle(folder: Path, rows_per_side: int, trees: int) -> Path:
    frame = adult_frame(2 * rows_per_side, seed=0)
    categorical = [c for c in frame.columns if not is_numeric_dtype(frame[c]) and c != "income"]
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), categorical), remainder="passthrough"
        ),
        RandomForestClassifier(n_estimators=trees, random_state=0),
    )
    model, members, non_members = split_fit(frame, model, label="income")
    return write_bundle(folder, model, members, non_members, config={"label_column": "income"})


def figures(report) -> dict:
    document = json.loads(render(report, "json"))
    for key in ("timings", "resolved", "created", "started", "finished"):
        document.pop(key, None)
    return document


def measure(bundle: Path, options: dict, **where) -> dict:
    started = time.perf_counter()
    report = audit(bundle, options, **where)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "reference_s": report.timings["reference_attacks"], "figures": figures(report)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000, help="rows per side (default 6000)")
    parser.add_argument("--trees", type=int, default=60, help="trees of the target forest (default 60)")
    parser.add_argument("--models", type=int, default=8, help="reference models per repeat (default 8)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    options = {
        "attack_models": "lira,rmia",
        "repeats": "1",
        "reference_models": str(args.models),
        "what_if": "false",
    }
    runs = {}
    with tempfile.TemporaryDirectory(prefix="mia-bench-cluster-") as folder:
        bundle = build_bundle(Path(folder), args.rows, args.trees)
        runs["in-process, 1 thread"] = measure(bundle, options, workers=1)
        runs[f"in-process, {os.cpu_count()} threads"] = measure(bundle, options)
        for workers in (1, 2):
            with loopback_cluster(workers=workers, preload=WORKER_PRELOAD) as cluster:
                wait_until_idle(cluster.worker_pids)  # warmed up, as a cluster that has been up a while is
                runs[f"{workers} worker{'s' if workers > 1 else ''} x 1 thread"] = measure(
                    bundle, options, cluster=cluster.address
                )
    base = runs["in-process, 1 thread"]
    print(
        f"Adult {args.rows:,} + {args.rows:,} rows, one-hot + {args.trees}-tree forest, lira + rmia, "
        f"{args.models} reference models, 1 repeat; {os.cpu_count()} CPUs"
    )
    print(f"{'where':<28}{'audit s':>9}{'reference s':>13}{'same figures':>14}")
    for name, run in runs.items():
        same = run["figures"] == base["figures"]
        print(f"{name:<28}{run['wall_s']:>9.1f}{run['reference_s']:>13.1f}{str(same):>14}")
    one, two = runs["1 worker x 1 thread"], runs["2 workers x 1 thread"]
    one_vs_in = one["wall_s"] / base["wall_s"]
    speedup = one["reference_s"] / two["reference_s"]
    print(f"one worker / in-process (1 thread): {one_vs_in:.2f}x (target <= 1.2x)")
    print(f"reference stage, one worker / two workers: {speedup:.2f}x faster (target >= 1.5x)")
    if args.json:
        summary = {name: {k: v for k, v in run.items() if k != "figures"} for name, run in runs.items()}
        summary["one_worker_vs_in_process"] = one_vs_in
        summary["two_workers_reference_speedup"] = speedup
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
