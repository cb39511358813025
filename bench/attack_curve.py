"""How the learned attacks' AUC and cost grow with the rows they train on, on distinct signal rows.

Usage (from the repository root)::

    .venv/bin/python bench/attack_curve.py                       # the highcard 100k target, repeat 0
    .venv/bin/python bench/attack_curve.py --sizes 10000,20000,40000,140000 --attacks rf,gb,nn
    .venv/bin/python bench/attack_curve.py --attacks rf --rf-variants 5:20000,20:10000 --rows 250000 --trees 10

``--sizes proportions`` (the default for ``--rf-variants``) trains at the audit's default proportions
0.1 ... 1.0 of the attacker's pool, as the sweep does. ``--rf-variants LEAF:BOOTSTRAP,...`` measures the
rf attack's high-cardinality forest (``learned.HIGH_CARDINALITY_LEAF_ROWS`` and ``_BOOTSTRAP_ROWS``) at each
setting; ``5:20000`` is the forest before they existed (5-row leaves, 20,000-row bootstraps).

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


def gb_case(rows: int, seed: int):
    """``(model, members, non_members)``: a histogram gradient-boosting target on a synthetic binary task
    (20 features, 5% flipped labels), 300 rounds without early stopping, so it overfits its members; its
    probabilities are continuous, so nearly every signal row is distinct."""
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = make_classification(
        n_samples=2 * rows, n_features=20, n_informative=10, flip_y=0.05, random_state=seed
    )
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"x{i}" for i in range(20)]).assign(label=y)
    model = HistGradientBoostingClassifier(
        max_iter=300, max_leaf_nodes=63, early_stopping=False, random_state=seed
    ).fit(frame.iloc[:rows].drop(columns="label"), y[:rows])
    return model, frame.iloc[:rows].reset_index(drop=True), frame.iloc[rows:].reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    import joblib
    from threadpoolctl import threadpool_limits

    import scale
    from mia_robustness.attacks import REGISTRY, AttackInput
    from mia_robustness.executor import single_threaded_worker
    from mia_robustness.signals import compute_signals
    from mia_robustness.sweep import make_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument(
        "--sizes", default="10000,20000,30000,40000,60000,100000,140000", help="train rows, or 'proportions'"
    )
    parser.add_argument("--attacks", default="rf,gb,nn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bootstrap", type=int, default=None, help="rf: rows per tree (learned.MAX_BOOTSTRAP_ROWS)"
    )
    parser.add_argument("--rf-variants", default=None, help="rf: LEAF:BOOTSTRAP[:TREES] settings to compare")
    parser.add_argument(
        "--target",
        choices=("highcard", "gb"),
        default="highcard",
        help="highcard: bench/scale.py's forest; gb: gb_case's boosted target, built here",
    )
    args = parser.parse_args(argv)
    from mia_robustness.attacks import learned

    variants = [None]
    if args.rf_variants:
        variants = [tuple(int(v) for v in item.split(":")) for item in args.rf_variants.split(",")]
    if args.bootstrap:
        learned.MAX_BOOTSTRAP_ROWS = args.bootstrap
    if args.target == "gb":
        model, members, non_members = gb_case(args.rows, args.seed)
    else:
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
    distinct = len(np.unique(signals.features, axis=0))
    print(
        f"{args.target} {args.rows:,} + {args.rows:,}: {len(split.evaluation):,} evaluation rows, "
        f"{distinct:,} distinct signal rows"
    )
    pool = min(len(split.member_pool), len(split.non_member_pool))
    if args.sizes == "proportions":
        sizes = [2 * int(round(p / 10 * pool)) for p in range(1, 11)]
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
    print("| attack | variant | train rows | AUC | seconds |")
    print("|---|---|---|---|---|")
    with threadpool_limits(limits=1):
        for attack in args.attacks.split(","):
            for variant in variants if attack == "rf" else [None]:
                if variant is not None:
                    learned.HIGH_CARDINALITY_LEAF_ROWS, learned.HIGH_CARDINALITY_BOOTSTRAP_ROWS = variant[:2]
                    if len(variant) > 2:
                        learned.HIGH_CARDINALITY_TREES = variant[2]
                name = (
                    ""
                    if variant is None
                    else f"leaf {variant[0]}, bootstrap {variant[1]:,}"
                    + (f", {variant[2]} trees" if len(variant) > 2 else "")
                )
                for size in sizes:
                    half = min(size // 2, pool)
                    rows = np.concatenate([split.member_pool[:half], split.non_member_pool[:half]])
                    started = time.perf_counter()
                    output = REGISTRY[attack].function(
                        inputs.take(rows), is_member[rows], evaluation, seed=args.seed, device="cpu"
                    )
                    seconds = time.perf_counter() - started
                    auc = roc_auc_score(truth, output.scores)
                    print(f"| {attack} | {name} | {2 * half:,} | {auc:.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
