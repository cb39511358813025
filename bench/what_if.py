"""The remediation what-if's cost beside the reference stage's, in the same audits (issue #12).

Usage (from the repository root)::

    .venv/bin/python bench/what_if.py                              # sample_input (median of 3) + Adult 10k
    .venv/bin/python bench/what_if.py --times 1 --write bench/RESULTS.md

Each audit runs sandboxed, as ``audit(path)`` runs it, in a fresh process, at the default settings of the
two stages compared (``repeats`` 3, ``reference_models`` 4, the what-if on by default because lira / rmia
run). ``sample_input/`` runs the whole default audit; Adult 10k+10k (the random-forest bundle of
``bench/sweep.py``) runs ``threshold,lira,rmia`` only, since the learned attacks do not touch either stage.
The done-when: the what-if costs at most what the reference attacks cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
HEADING = "### What-if cost beside the reference stage (bench/what_if.py)"


def run_child(bundle: str, options: str) -> None:
    """One audit in this fresh process; a JSON record on stdout."""
    from mia_robustness import audit

    started = time.perf_counter()
    report = audit(bundle, json.loads(options))
    section = report.remediation
    print(
        json.dumps(
            {
                "wall": time.perf_counter() - started,
                "reference": report.timings.get("reference_attacks", 0.0),
                "what_if": report.timings.get("what_if", 0.0),
                "status": section.status,
                "configs": 1 + sum(v.kind == "retrained" for v in section.variants),
                "models_per_config": section.protocol.get("models_per_config"),
                "recommended": section.recommended.variant,
                "baseline_auc": section.baseline.attack.auc if section.baseline else None,
                "target_auc": report.summary.auc,
            }
        )
    )


def measure(bundle: Path, options: dict, times: int) -> dict:
    runs = []
    for _ in range(times):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(bundle), "--options", json.dumps(options)],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = sorted(runs, key=lambda r: r["what_if"])[len(runs) // 2]
    return {"runs": runs, "median": median}


def describe(name: str, result: dict) -> str:
    runs, m = result["runs"], result["median"]
    each = ", ".join(f"{r['what_if']:.1f}" for r in runs)
    reference = statistics.median(r["reference"] for r in runs)
    what_if = statistics.median(r["what_if"] for r in runs)
    fits = m["configs"] * (m["models_per_config"] or 0)
    return (
        f"| {name} | {len(runs)} | {reference:.1f} | {what_if:.1f} | {what_if / reference:.2f} | "
        f"{m['configs']} configs x {m['models_per_config']} = {fits} fits | "
        f"{m['target_auc']:.3f} / {m['baseline_auc']:.3f} | {m['recommended']} | "
        f"{each} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", type=int, default=3, help="runs of the sample (median); Adult runs once")
    parser.add_argument(
        "--write", type=Path, help="put the table into this Markdown file (replacing its own)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.options)
        return
    from sweep import adult_rows_available, build_bundle

    lines = [
        HEADING,
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} (load average at start {Path('/proc/loadavg').read_text().split()[0]}); "
        "seconds are the report's `timings` (median where run more than once); the what-if should cost at most "
        "the reference stage.",
        "",
        "| bundle | runs | reference_attacks s | what_if s | ratio | what-if fits | target AUC / baseline AUC | "
        "recommended | what_if s per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines.append(
        describe(
            "sample_input (RF pipeline, 1,500 + 1,500, default audit)",
            measure(ROOT / "sample_input", {}, args.times),
        )
    )
    print(lines[-1], flush=True)
    if adult_rows_available() >= 10_000:
        bundle = build_bundle("adult", 10_000, "rf", 0)
        options = {"attack_models": "threshold,lira,rmia"}
        lines.append(
            describe("Adult 10,000 + 10,000 (default RF, threshold,lira,rmia)", measure(bundle, options, 1))
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        old = args.write.read_text() if args.write.exists() else ""
        if HEADING in old:
            start = old.index(HEADING)
            end = old.find("\n### ", start + len(HEADING))
            old = old[:start] + (old[end + 1 :] if end >= 0 else "")
        args.write.write_text(old.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
