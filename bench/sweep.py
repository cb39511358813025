"""Benchmark the default audit, optionally side by side with IBM ART's MembershipInferenceBlackBox.

Usage (from the repository root)::

    .venv/bin/python bench/sweep.py --rows 10000                      # Adult, RF target, default audit
    .venv/bin/python bench/sweep.py --rows 10000 --repeats 1 --attacks nn,rf,gb --vs-art
    .venv/bin/python bench/sweep.py --rows 100000 --data synthetic    # beyond Adult's size
    .venv/bin/python bench/sweep.py --standard --write bench/RESULTS.md   # what `make bench` runs
    .venv/bin/python bench/sweep.py --standard --no-art --write bench/RESULTS.md   # keep ART's recorded run

Each measured audit runs in a fresh child process (so peak resident memory is the audit's own, and
one run's caches do not help the next); the bundle is built once per configuration and cached under
``bench/.cache/``. With ``--vs-art`` the same child then runs ART 1.20.1 (``pip install -r
bench/requirements.txt``) on exactly the rows the audit used: the same balanced rows, the same
evaluation rows, and for each proportion the same member / non-member rows for attack training. ART
queries the same fitted target itself (through ``SklearnClassifier``), as a user of ART would.

``--standard`` runs: Adult 10k+10k (median of ``--times``, default 3; ART beside the first run),
the scaling runs (with the engine's memory estimate beside the measured peak), ``sample_input/`` through
the CLI, and ``bench/serve_load.py`` (``./serve`` under load; ``--no-serve`` skips it). ART's figures are
saved to ``bench/art_recorded.json`` whenever it runs; with ``--no-art`` the report shows those recorded
figures, dated, and the speed-up compares this run's time with ART's recorded time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
ADULT_LABEL = "income"
ART_ATTACKS = ("nn", "rf", "gb")
# ART's last full run (846 s), kept so that `--standard --no-art` can still compare against it.
ART_RECORD = Path(__file__).resolve().parent / "art_recorded.json"
MANUAL_MARKER = "<!-- notes kept by bench/sweep.py -->"


# --------------------------------------------------------------------------------------------- bundles


def adult_rows_available() -> int:
    """Rows per side Adult can give (half its rows), 0 when the file is absent."""
    if not ADULT.exists():
        return 0
    with ADULT.open() as handle:
        return (sum(1 for _ in handle) - 1) // 2


def encoded_adult(rows_per_side: int, seed: int):
    """``2 * rows_per_side`` Adult rows, categoricals one-hot encoded up front (ART needs numeric x)."""
    import pandas as pd

    frame = pd.read_csv(ADULT, skipinitialspace=True)
    frame = frame.sample(n=2 * rows_per_side, random_state=seed).reset_index(drop=True)
    labels = frame.pop(ADULT_LABEL).to_numpy()
    encoded = pd.get_dummies(frame, dtype=np.float64)
    encoded.columns = [c.replace(" ", "_") for c in encoded.columns]
    return encoded, labels


def synthetic(rows_per_side: int, seed: int):
    """A 20-feature, 2-class problem with 5% label noise, so a fully grown forest memorises its rows."""
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=2 * rows_per_side,
        n_features=20,
        n_informative=8,
        n_redundant=4,
        flip_y=0.05,
        class_sep=1.0,
        random_state=seed,
    )
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]), y


def make_target(kind: str, seed: int):
    """The target model: scikit-learn defaults, so the benchmark measures a model people actually ship."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    if kind == "rf":
        return RandomForestClassifier(random_state=seed)
    if kind == "gb":
        return HistGradientBoostingClassifier(random_state=seed)
    if kind == "tree":
        return DecisionTreeClassifier(random_state=seed)
    if kind == "lr":
        return LogisticRegression(max_iter=1000)
    raise SystemExit(f"unknown target {kind!r}: choose rf, gb, tree or lr")


def build_bundle(data: str, rows_per_side: int, target: str, seed: int) -> Path:
    """Write (once) a bundle folder: ``model.joblib``, ``train.csv`` (members), ``subject.csv`` (non-members)."""
    import joblib

    folder = CACHE / f"{data}-{rows_per_side}-{target}-s{seed}"
    if (folder / "model.joblib").exists():
        return folder
    started = time.perf_counter()
    features, labels = (
        encoded_adult(rows_per_side, seed) if data == "adult" else synthetic(rows_per_side, seed)
    )
    model = make_target(target, seed)
    if hasattr(model, "n_jobs"):
        model.set_params(n_jobs=-1)  # fit on every core, then ship the default (n_jobs=None) as a user would
    # Fitted on a plain matrix: ART passes numpy arrays, and the audit then does too.
    model.fit(features.to_numpy()[:rows_per_side], labels[:rows_per_side])
    if hasattr(model, "n_jobs"):
        model.set_params(n_jobs=None)
    folder.mkdir(parents=True, exist_ok=True)
    label_name = ADULT_LABEL if data == "adult" else "label"
    table = features.assign(**{label_name: labels})
    table.iloc[:rows_per_side].to_csv(folder / "train.csv", index=False)
    table.iloc[rows_per_side:].to_csv(folder / "subject.csv", index=False)
    joblib.dump(model, folder / "model.joblib.part")
    (folder / "model.joblib.part").rename(folder / "model.joblib")
    print(f"  built bundle {folder.name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return folder


# ------------------------------------------------------------------------------------ child: one audit


def peak_rss_mb() -> float:
    """Peak resident memory of this audit: its own process plus the sandbox child that held the model
    (both alive at once, so their peaks add up to an upper end)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024.0  # Linux reports KiB


def run_child(args: argparse.Namespace) -> None:
    """Run one audit (and ART when asked) in this fresh process; print a JSON record on stdout."""
    imports_started = time.perf_counter()
    import mia_robustness
    from mia_robustness import audit

    record: dict = {"import_seconds": time.perf_counter() - imports_started}
    overrides = {
        "proportions": args.proportions,
        "attack_models": args.attacks,
        "repeats": args.repeats,
        "seed": args.seed,
        "device": args.device,
    }
    started = time.perf_counter()
    cpu_started = time.process_time()
    report = audit(args.bundle, overrides, workers=args.workers)
    record.update(
        wall_seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        peak_rss_mb=peak_rss_mb(),
        estimated_peak_mb=memory_estimate(args, overrides),
        timings=report.timings,
        rows_per_side=report.data.rows_per_side,
        eval_rows_per_side=report.data.eval_rows_per_side,
        tool_version=mia_robustness.__version__,
        results=[
            {
                "attack": r.attack_model,
                "proportion": r.proportion,
                "auc": r.mean["auc"],
                "auc_std": r.std["auc"],
                "tpr_at_1pct_fpr": r.mean["tpr_at_1pct_fpr"],
                "train_rows": r.train_rows,
                "device": r.device,
            }
            for r in report.results
        ],
        summary={
            "attack": report.summary.strongest_attack,
            "auc": report.summary.auc,
            "risk": report.summary.risk_level,
        },
    )
    if args.vs_art:
        record["art"] = run_art(args)
    print(json.dumps(record))


def memory_estimate(args: argparse.Namespace, overrides: dict) -> float:
    """The engine's own peak-memory estimate for this audit (what ``max_memory_mb`` is checked against).

    Called after the audit (its peak RSS is already measured), with the inputs ``audit()`` gives it.
    """
    from mia_robustness.bundle import open_bundle
    from mia_robustness.bundle_audit import resolve_options
    from mia_robustness.engine import estimate_peak_memory_mb
    from mia_robustness.prepare import resolve_label_column
    from mia_robustness.sweep import default_workers
    from mia_robustness.tables import read_table

    with open_bundle(args.bundle) as bundle:
        options = resolve_options(bundle.config, overrides)
        members = read_table(bundle.members_path, "members")
        non_members = read_table(bundle.non_members_path, "non-members")
        model_file_bytes = bundle.model_path.stat().st_size
    label = resolve_label_column(members, options.label_column, "members")
    return estimate_peak_memory_mb(
        min(len(members), len(non_members)),
        int(members.memory_usage(deep=True).sum() + non_members.memory_usage(deep=True).sum()),
        int(members[label].nunique()),
        model_file_bytes,
        options,
        args.workers or default_workers(),
    )


def run_art(args: argparse.Namespace) -> dict:
    """ART's black-box attack (nn, rf, gb; its defaults) on exactly the audit's splits."""
    import torch
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.classification import SklearnClassifier
    from sklearn.metrics import roc_auc_score

    from mia_robustness.bundle import open_bundle
    from mia_robustness.loading import load_model
    from mia_robustness.options import options_from_mapping
    from mia_robustness.prepare import prepare_data
    from mia_robustness.sweep import attacker_rows, plan_cells
    from mia_robustness.tables import read_table
    from mia_robustness.target import label_positions, model_classes

    options = options_from_mapping(
        {
            "proportions": args.proportions,
            "attack_models": args.attacks,
            "repeats": args.repeats,
            "seed": args.seed,
        }
    )
    # Rebuild the audit's rows exactly as audit() does (same balancing stream, same split plan).
    with open_bundle(args.bundle) as bundle:
        model = load_model(bundle.model_path)
        members = read_table(bundle.members_path, "members")
        non_members = read_table(bundle.non_members_path, "non-members")
    data = prepare_data(
        members, non_members, model, options.label_column, np.random.default_rng([options.seed, 2**31 - 1])
    )
    x = data.features.to_numpy(dtype=np.float64)
    y = label_positions(data.labels, model_classes(model))
    splits, _ = plan_cells(
        data.is_member,
        options.proportions,
        options.attack_models,
        options.repeats,
        options.eval_fraction,
        options.seed,
    )
    classifier = SklearnClassifier(model=model)
    # ART seeds nothing itself; seed the global generators so a rerun trains the same attack models.
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    results, seconds = [], dict.fromkeys(ART_ATTACKS, 0.0)
    started = time.perf_counter()
    for repeat, split in enumerate(splits):
        evaluation = split.evaluation
        for proportion in options.proportions:
            rows = attacker_rows(split, proportion)
            half = len(rows) // 2
            known_members, known_non_members = rows[:half], rows[half:]
            assert data.is_member[known_members].all() and not data.is_member[known_non_members].any()
            for attack_type in ART_ATTACKS:
                cell_started = time.perf_counter()
                attack = MembershipInferenceBlackBox(classifier, attack_model_type=attack_type)
                attack.fit(x[known_members], y[known_members], x[known_non_members], y[known_non_members])
                scores = attack.infer(x[evaluation], y[evaluation], probabilities=True).ravel()
                elapsed = time.perf_counter() - cell_started
                seconds[attack_type] += elapsed
                results.append(
                    {
                        "attack": attack_type,
                        "proportion": proportion,
                        "repeat": repeat,
                        "seconds": elapsed,
                        "auc": float(roc_auc_score(data.is_member[evaluation], scores)),
                        "train_rows": len(rows),
                    }
                )
                print(
                    f"  ART {attack_type} p={proportion:g}: {elapsed:.1f} s auc {results[-1]['auc']:.4f}",
                    file=sys.stderr,
                )
    return {
        "wall_seconds": time.perf_counter() - started,
        "attack_seconds": seconds,
        "results": results,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
    }


# ----------------------------------------------------------------------------------- parent: measuring


def measure(
    args: argparse.Namespace, *, rows: int, data: str, target: str, repeats: int, attacks: str, vs_art: bool
) -> dict:
    """Build (or reuse) the bundle, then run the audit in a fresh child process and return its record."""
    bundle = build_bundle(data, rows, target, args.seed)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--bundle",
        str(bundle),
        "--proportions",
        args.proportions,
        "--attacks",
        attacks,
        "--repeats",
        str(repeats),
        "--seed",
        str(args.seed),
        "--device",
        args.device,
    ]
    if args.workers:
        command += ["--workers", str(args.workers)]
    if vs_art:
        command.append("--vs-art")
    load_average = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHONHASHSEED": "0"}
    )
    process_seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the benchmark child failed:\n{done.stderr[-4000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record.update(
        process_seconds=process_seconds,
        load_average_before=load_average,
        data=data,
        target=target,
        repeats=repeats,
        attacks=attacks,
    )
    return record


def strongest_by_proportion(
    results: list[dict], attacks: tuple[str, ...] | None = None
) -> dict[float, tuple[str, float]]:
    """Per proportion, the attack model with the highest (mean) AUC."""
    best: dict[float, tuple[str, float]] = {}
    for row in results:
        if attacks and row["attack"] not in attacks:
            continue
        key = round(row["proportion"], 6)
        if key not in best or row["auc"] > best[key][1]:
            best[key] = (row["attack"], row["auc"])
    return dict(sorted(best.items()))


def describe_run(record: dict) -> list[str]:
    """Plain-text lines for one measured audit."""
    timings = record["timings"]
    n = 2 * record["rows_per_side"]
    lines = [
        f"{record['data']} {record['rows_per_side']:,} + {record['rows_per_side']:,} rows, target {record['target']}, "
        f"attacks {record['attacks']}, {record['repeats']} repeat(s)",
        f"  audit wall {record['wall_seconds']:.2f} s (process incl. startup {record['process_seconds']:.2f} s), "
        f"CPU {record['cpu_seconds']:.1f} s, peak RSS {record['peak_rss_mb']:.0f} MB (engine's estimate "
        f"{record['estimated_peak_mb']:.0f} MB), {n / record['wall_seconds']:,.0f} rows/s; "
        f"load average before {record['load_average_before']:.2f}",
        "  stages: "
        + ", ".join(
            f"{k} {v:.2f} s" for k, v in timings.items() if not k.startswith("attack_") and k != "total"
        ),
        "  attack cell-seconds (summed over cells run in parallel): "
        + ", ".join(
            f"{k[7:-8]} {v:.2f}"
            for k, v in timings.items()
            if k.startswith("attack_") and k.endswith("_seconds")
        ),
        "  devices: " + ", ".join(sorted({f"{r['attack']}={r['device']}" for r in record["results"]})),
        "  strongest AUC per proportion: "
        + ", ".join(
            f"{p:g}:{a}={auc:.4f}" for p, (a, auc) in strongest_by_proportion(record["results"]).items()
        ),
    ]
    return lines


def describe_art(record: dict, art: dict, recorded: dict | None = None) -> list[str]:
    """Side-by-side lines: times, ratio, AUC per proportion and attack model.

    ``art`` is ART's figures; ``recorded`` the saved run they come from when ART was not re-run now
    (then the ratio compares this run's time with ART's recorded time).
    """
    ours_attacks = record["timings"]["attacks"]
    ours_pipeline = record["timings"]["target_scoring"] + record["timings"]["signals"] + ours_attacks
    source = ""
    if recorded:
        source = (
            f" -- RECORDED {recorded['measured']} (commit {recorded['commit']}, load average "
            f"{recorded['load_average_at_start']:.2f}), not re-run"
        )
    lines = [
        f"  ART 1.20.1 MembershipInferenceBlackBox (nn, rf, gb): {art['wall_seconds']:.1f} s "
        f"(nn {art['attack_seconds']['nn']:.1f}, rf {art['attack_seconds']['rf']:.1f}, gb {art['attack_seconds']['gb']:.1f}); "
        f"torch threads {art['torch_threads']}{source}",
        f"  ours: attack sweep {ours_attacks:.2f} s, target scoring + signals + sweep {ours_pipeline:.2f} s, "
        f"whole audit {record['wall_seconds']:.2f} s",
        f"  speed-up: {art['wall_seconds'] / ours_pipeline:.1f}x (vs scoring + signals + sweep), "
        f"{art['wall_seconds'] / record['wall_seconds']:.1f}x (vs whole audit incl. CSV loading)"
        + ("; our time measured now, ART's recorded time" if recorded else ""),
    ]
    lines += [f"  {line}" for line in auc_table(record, art)]
    return lines


def auc_table(record: dict, art_record: dict) -> list[str]:
    """Markdown table: per proportion, each tool's AUC per attack model and its best."""
    ours = {(r["attack"], round(r["proportion"], 6)): r["auc"] for r in record["results"]}
    art: dict[tuple[str, float], list[float]] = {}
    for r in art_record["results"]:
        art.setdefault((r["attack"], round(r["proportion"], 6)), []).append(r["auc"])
    proportions = sorted({p for _, p in ours})
    head = "| proportion | " + " | ".join(f"ours {a}" for a in ART_ATTACKS) + " | ours best | "
    head += " | ".join(f"ART {a}" for a in ART_ATTACKS) + " | ART best | best gap |"
    lines = [head, "|" + "---|" * (4 + 2 * len(ART_ATTACKS) + 2)]
    for p in proportions:
        mine = [ours.get((a, p), float("nan")) for a in ART_ATTACKS]
        theirs = [float(np.mean(art[(a, p)])) for a in ART_ATTACKS]
        best_mine, best_theirs = np.nanmax(mine), max(theirs)
        lines.append(
            f"| {p:g} | "
            + " | ".join(f"{v:.4f}" for v in mine)
            + f" | **{best_mine:.4f}** | "
            + " | ".join(f"{v:.4f}" for v in theirs)
            + f" | **{best_theirs:.4f}** | {best_mine - best_theirs:+.4f} |"
        )
    return lines


def save_art_record(record: dict, args: argparse.Namespace, machine: str) -> None:
    """Keep ART's figures (and what they were measured on) for later `--no-art` runs."""
    art = record["art"]
    saved = {
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(),
        "machine": machine,
        "load_average_at_start": record["load_average_before"],
        "rows_per_side": record["rows_per_side"],
        "target": record["target"],
        "attacks": record["attacks"],
        "repeats": record["repeats"],
        "seed": args.seed,
        "proportions": args.proportions,
        **{k: art[k] for k in ("wall_seconds", "attack_seconds", "torch_threads", "results")},
        "ours_then": {
            "attacks_seconds": record["timings"]["attacks"],
            "pipeline_seconds": record["timings"]["target_scoring"]
            + record["timings"]["signals"]
            + record["timings"]["attacks"],
            "audit_wall_seconds": record["wall_seconds"],
        },
    }
    ART_RECORD.write_text(json.dumps(saved, indent=1) + "\n")


def load_art_record(record: dict, args: argparse.Namespace) -> dict | None:
    """ART's recorded figures when they were measured on this configuration, else ``None``."""
    if not ART_RECORD.exists():
        return None
    saved = json.loads(ART_RECORD.read_text())
    same = (saved["rows_per_side"], saved["target"], saved["attacks"], saved["repeats"], saved["seed"]) == (
        record["rows_per_side"],
        record["target"],
        record["attacks"],
        record["repeats"],
        args.seed,
    )
    return saved if same and saved["proportions"] == args.proportions else None


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or "unknown"


def machine_description() -> str:
    import sklearn
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        memory_gb = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} usable cores, {memory_gb:.0f} GB RAM, {gpu}; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}; load average at start {os.getloadavg()[0]:.2f}"
    )


def cli_sample_audit(times: int) -> dict:
    """Wall time of ``mia-robustness audit sample_input -q`` as a user runs it (process startup included)."""
    executable = Path(sys.executable).with_name("mia-robustness")
    walls = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run(
            [str(executable), "audit", str(ROOT / "sample_input"), "-q", "-o", os.devnull],
            check=True,
            cwd=ROOT,
        )
        walls.append(time.perf_counter() - started)
    return {"walls": walls, "median": statistics.median(walls)}


# ------------------------------------------------------------------------------------------- the set


def standard(args: argparse.Namespace) -> str:
    """The standard set; returns the Markdown report."""
    started = time.strftime("%Y-%m-%d %H:%M")
    machine = machine_description()
    sections = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`bench/sweep.py --standard`) on {started} at commit {git_commit()}.",
        "",
        f"Machine: {machine}.",
        "",
        "Each audit runs in a fresh process; wall time is the `audit()` call, peak RSS is that process's.",
        "",
    ]
    adult_rows = min(10_000, adult_rows_available())
    if adult_rows:
        times = args.times or 3
        print(
            f"[1/4] Adult {adult_rows:,}+{adult_rows:,}, RF target, nn+rf+gb, 1 repeat, {times} time(s)"
            f"{', vs ART' if not args.no_art else ''}",
            file=sys.stderr,
        )
        records = [
            measure(
                args,
                rows=adult_rows,
                data="adult",
                target="rf",
                repeats=1,
                attacks="nn,rf,gb",
                vs_art=not args.no_art and i == 0,
            )
            for i in range(times)
        ]
        walls = [r["wall_seconds"] for r in records]
        record = next(r for r in records if r["wall_seconds"] == statistics.median_low(walls))
        if "art" in records[0]:
            save_art_record(records[0], args, machine)
        art, recorded = (records[0]["art"], None) if "art" in records[0] else (None, None)
        if art is None:
            recorded = load_art_record(record, args)
            art = recorded
        sections += [
            "## Default sweep vs IBM ART (Adult, random-forest target)",
            "",
        ]
        if recorded:
            sections += [
                f"ART was **not re-run** this time (`--no-art`): its figures below are those it measured on "
                f"{recorded['measured']} (commit {recorded['commit']}, the same bundle and the same splits, "
                f"load average {recorded['load_average_at_start']:.2f}), kept in `bench/art_recorded.json`. "
                "Our figures are new; the speed-up compares our new time with ART's recorded time. "
                f"Our own time in that recorded run: whole audit {recorded['ours_then']['audit_wall_seconds']:.2f} s, "
                f"scoring + signals + sweep {recorded['ours_then']['pipeline_seconds']:.2f} s.",
                "",
            ]
        sections += [
            f"Our audit, median of {len(walls)} runs: **{statistics.median(walls):.2f} s** "
            f"({', '.join(f'{w:.2f}' for w in walls)}); details of the median run:",
            "",
            "```",
            *describe_run(record),
        ]
        if art:
            sections += [line for line in describe_art(record, art, recorded) if not line.startswith("  |")]
            sections += ["```", "", *auc_table(record, art), ""]
        else:
            sections += ["```", "", "(no ART figures: run without `--no-art` once to measure them)", ""]
    runs = []
    for rows in args.scale_rows:
        print(f"[2/4] synthetic {rows:,}+{rows:,}, RF target, default attacks, 3 repeats", file=sys.stderr)
        runs.append(
            measure(
                args, rows=rows, data="synthetic", target="rf", repeats=3, attacks=args.attacks, vs_art=False
            )
        )
    if runs:
        sections += [
            "## Scaling (synthetic, random-forest target, default attack models, 3 repeats)",
            "",
            "`estimate MB` is the engine's `estimate_peak_memory_mb` for the same audit (what `max_memory_mb` "
            "and `MIA_MAX_AUDIT_MEMORY_MB` are checked against), beside the measured peak.",
            "",
            "| rows per side | audit wall s | process wall s | CPU s | peak RSS MB | estimate MB | estimate / peak "
            "| loading s | target scoring s | attacks s | rows/s | wall per 10k rows s | load avg before |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            t = r["timings"]
            sections.append(
                f"| {r['rows_per_side']:,} | {r['wall_seconds']:.1f} | {r['process_seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                f"{r['peak_rss_mb']:.0f} | {r['estimated_peak_mb']:.0f} | {r['estimated_peak_mb'] / r['peak_rss_mb']:.2f} | "
                f"{t['loading']:.2f} | {t['target_scoring']:.2f} | {t['attacks']:.1f} | "
                f"{2 * r['rows_per_side'] / r['wall_seconds']:,.0f} | {r['wall_seconds'] / (r['rows_per_side'] / 10_000):.2f} | "
                f"{r['load_average_before']:.2f} |"
            )
        sections += ["", "```"] + [line for r in runs for line in describe_run(r)] + ["```", ""]
    print("[3/4] sample_input/ default audit through the CLI", file=sys.stderr)
    sample = cli_sample_audit(3)
    sections += [
        "## `mia-robustness audit sample_input -q` (1,500 + 1,500 rows, defaults)",
        "",
        f"Wall including process startup, 3 runs: {', '.join(f'{w:.2f}' for w in sample['walls'])} s; "
        f"median **{sample['median']:.2f} s**.",
        "",
    ]
    if not args.no_serve:
        import serve_load  # bench/ is this script's folder, so it is on sys.path

        print("[4/4] sample_input/ through ./serve: calls, /ping under load, overhead", file=sys.stderr)
        served = serve_load.measure()
        sections += [
            "## `./serve` under load (`bench/serve_load.py`, `sample_input/` zipped, default options, JSON)",
            "",
            f"`./serve` with its defaults on this machine: {served['server_workers']} concurrent audits, "
            f"{served['threads_per_audit']} thread(s) each; load average at start {served['load_average_at_start']:.2f}. "
            "Walls are end to end as the client sees them (upload, unpack, audit in a forked child, JSON answer).",
            "",
            *serve_load.describe(served),
            "",
        ]
    return "\n".join(sections)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=10_000, help="members (and as many non-members) in the bundle"
    )
    parser.add_argument(
        "--data",
        choices=("auto", "adult", "synthetic"),
        default="auto",
        help="auto: Adult while it has the rows, synthetic beyond",
    )
    parser.add_argument(
        "--target", default="rf", help="target model: rf, gb, tree or lr (scikit-learn defaults)"
    )
    parser.add_argument(
        "--attacks",
        default="nn,rf,gb,threshold,class_threshold",
        help="attack models (the default set without lira/rmia, which the audit skips above 20,000 rows per side)",
    )
    parser.add_argument("--proportions", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="where the nn attack trains: auto, cpu or cuda")
    parser.add_argument("--workers", type=int, default=None, help="sweep threads (default: all usable cores)")
    parser.add_argument(
        "--vs-art", action="store_true", help="also run ART 1.20.1 nn/rf/gb on the same splits"
    )
    parser.add_argument(
        "--times",
        type=int,
        default=None,
        help="measure this many times and report the median wall (default 1; with --standard, the Adult run 3)",
    )
    parser.add_argument(
        "--standard", action="store_true", help="run the standard set (Adult vs ART, scaling, sample)"
    )
    parser.add_argument(
        "--no-art",
        action="store_true",
        help="with --standard: skip the ~15 minute ART run and compare with ART's recorded figures "
        "(bench/art_recorded.json)",
    )
    parser.add_argument("--no-serve", action="store_true", help="with --standard: skip the serve-load run")
    parser.add_argument(
        "--scale-rows",
        type=lambda s: [int(v) for v in s.split(",") if v],
        default=[10_000, 30_000, 100_000],
        help="with --standard: rows per side of the scaling runs",
    )
    parser.add_argument("--write", type=Path, help="write the Markdown report here")
    parser.add_argument("--json", type=Path, help="write the raw records here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    if args.standard:
        text = standard(args)
        print(text)
        if args.write:
            # Hand-written notes below the marker (figures measured while tuning) survive a rerun.
            kept = ""
            if args.write.exists() and MANUAL_MARKER in args.write.read_text():
                kept = args.write.read_text()[args.write.read_text().index(MANUAL_MARKER) :]
            args.write.write_text(text + "\n" + (("\n" + kept) if kept else ""))
        return
    data = args.data
    if data == "auto":
        data = "adult" if 0 < args.rows <= adult_rows_available() else "synthetic"
    records = [
        measure(
            args,
            rows=args.rows,
            data=data,
            target=args.target,
            repeats=args.repeats,
            attacks=args.attacks,
            vs_art=args.vs_art and i == 0,
        )
        for i in range(args.times or 1)
    ]
    for record in records:
        print("\n".join(describe_run(record)))
    if len(records) > 1:
        walls = [r["wall_seconds"] for r in records]
        print(
            f"median audit wall over {len(walls)} runs: {statistics.median(walls):.2f} s ({', '.join(f'{w:.2f}' for w in walls)})"
        )
    if "art" in records[0]:
        print("\n".join(describe_art(records[0], records[0]["art"])))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    if args.write:
        args.write.write_text(
            "\n".join(
                [
                    "```",
                    *describe_run(records[0]),
                    *(describe_art(records[0], records[0]["art"]) if "art" in records[0] else []),
                    "```",
                    "",
                ]
            )
        )


if __name__ == "__main__":
    main()
