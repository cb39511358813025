"""How the learned attacks' AUC and cost grow with the rows they train on, on distinct signal rows.

Usage (from the repository root)::

    .venv/bin/python bench/attack_curve.py                       # the highcard 100k target, repeat 0
    .venv/bin/python bench/attack_curve.py --sizes 10000,20000,40000,140000 --attacks rf,gb,nn

It scores the ``bench/scale.py highcard`` target (built there, cached under ``bench/.cache/``), computes the
audit's signals, takes repeat 0's split, and trains each attack on nested prefixes of the attacker's
known rows (half members, half non-members, as the sweep's proportions do), measuring AUC on the same
evaluation rows. One thread, as a sweep cell runs. This is the measurement behind the sweep's
``MAX_ATTACK_TRAIN_ROWS``: the size past which AUC stops moving.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> None:
    import joblib
    from threadpoolctl import threadpool_limits

    import scale
    from mia_robustness.attacks import REGISTRY, AttackInput
    from mia_robustness.signals import compute_signals
    from mia_robustness.sweep import make_split, single_threaded_worker

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--sizes", default="10000,20000,30000,40000,60000,100000,140000")
    parser.add_argument("--attacks", default="rf,gb,nn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bootstrap", type=int, default=None, help="rf: rows per tree (learned.MAX_BOOTSTRAP_ROWS)"
    )
    args = parser.parse_args(argv)
    if args.bootstrap:
        from mia_robustness.attacks import learned

        learned.MAX_BOOTSTRAP_ROWS = args.bootstrap
    args.case = "highcard"
    model, members, non_members = joblib.load(scale.cached_case(args))
    features = np.vstack(
        [members.drop(columns="label").to_numpy(), non_members.drop(columns="label").to_numpy()]
    )
    labels = np.concatenate([members["label"].to_numpy(), non_members["label"].to_numpy()])
    is_member = np.repeat([1, 0], [len(members), len(non_members)])
    with threadpool_limits(limits=None):
        probabilities = model.predict_proba(features)
    label_index = np.searchsorted(model.classes_, labels)
    signals = compute_signals(probabilities, label_index)
    inputs = AttackInput(signals.features, signals.scores, label_index)
    split = make_split(is_member, 0.3, np.random.default_rng([args.seed, 0]))
    evaluation = inputs.take(split.evaluation)
    truth = is_member[split.evaluation]
    from sklearn.metrics import roc_auc_score

    single_threaded_worker()
    print(f"highcard {args.rows:,} + {args.rows:,}: {len(split.evaluation):,} evaluation rows")
    print("| attack | train rows | AUC | seconds |")
    print("|---|---|---|---|")
    with threadpool_limits(limits=1):
        for attack in args.attacks.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                half = min(size // 2, len(split.member_pool), len(split.non_member_pool))
                rows = np.concatenate([split.member_pool[:half], split.non_member_pool[:half]])
                started = time.perf_counter()
                output = REGISTRY[attack].function(
                    inputs.take(rows), is_member[rows], evaluation, seed=args.seed, device="cpu"
                )
                seconds = time.perf_counter() - started
                print(
                    f"| {attack} | {2 * half:,} | {roc_auc_score(truth, output.scores):.4f} | {seconds:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
