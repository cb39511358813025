"""Would the boundary attack's perturbed query passes pay run two at a time? (issue #13, item 2 of the
overlap brief; not built: measure it on a quiet machine first.)

Usage (from the repository root, after ``bench/scale.py adult --rows 16000`` cached the target)::

    .venv/bin/python bench/boundary_threads.py

It draws the 8 perturbed copies exactly as ``label_robustness`` does (one stream, in order), then predicts
them one at a time and two at a time (threads, one BLAS / OpenMP thread each), and prints both walls and
whether the predicted labels are identical. Drawing the copies in order and only predicting in parallel
keeps the robustness array bit-identical.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mia_robustness.label_robustness import _STREAM, noise_scales, perturbed_copy

CASE = Path(__file__).resolve().parent / ".cache" / "adult-pipeline-16000-s0.joblib"
QUERIES = 8  # the default boundary_queries


def main() -> None:
    model, members, non_members = joblib.load(CASE)[:3]
    features = pd.concat([members, non_members], ignore_index=True)[list(model.feature_names_in_)]
    rng = np.random.default_rng([0, _STREAM])
    scales = noise_scales(features)
    copies = [perturbed_copy(features, rng, scales) for _ in range(QUERIES)]
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        one = [model.predict_proba(copy).argmax(axis=1) for copy in copies]
        one_s = time.perf_counter() - started
        with ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            two = list(pool.map(lambda copy: model.predict_proba(copy).argmax(axis=1), copies))
            two_s = time.perf_counter() - started
    same = all((a == b).all() for a, b in zip(one, two, strict=True))
    print(
        f"{QUERIES} query passes over {len(features):,} rows: one at a time {one_s:.2f} s, two at a time "
        f"{two_s:.2f} s ({one_s / two_s:.2f}x), labels identical: {same}; load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
