"""Rebuild sample_input/xgboost/: an XGBoost model saved in XGBoost's own JSON format, on part of Adult.

Run from the repository root: ``python sample_input/xgboost/make_sample.py``. It reads
``../shared/data/adult.csv``, keeps its six numeric columns and the label, draws 400 training rows (members)
and 400 other rows (non-members), fits an ``XGBClassifier`` on the members (labels as 0 / 1, the order
``config.json``'s ``classes`` gives: ``<=50K`` then ``>50K``) and writes ``model.json`` (the booster's
``save_model``: trees and numbers, no code), ``train.csv`` and ``subject.csv`` (labels as text) here.

``make demo`` does not use it; ``tests/test_boosters.py`` audits it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import xgboost

HERE = Path(__file__).resolve().parent
ADULT = HERE.parents[2] / "shared" / "data" / "adult.csv"
ROWS_PER_SIDE = 400
SEED = 11
COLUMNS = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
CLASSES = ["<=50K", ">50K"]


def main() -> None:
    frame = pd.read_csv(ADULT, usecols=[*COLUMNS, "income"])
    frame = frame.sample(n=2 * ROWS_PER_SIDE, random_state=SEED).reset_index(drop=True)
    members, non_members = frame.iloc[:ROWS_PER_SIDE], frame.iloc[ROWS_PER_SIDE:]
    model = xgboost.XGBClassifier(n_estimators=60, max_depth=6, learning_rate=0.3, random_state=SEED, n_jobs=1)
    model.fit(members[COLUMNS], members["income"].map(CLASSES.index))
    model.get_booster().save_model(HERE / "model.json")
    members.to_csv(HERE / "train.csv", index=False)
    non_members.to_csv(HERE / "subject.csv", index=False)
    print(f"model.json {(HERE / 'model.json').stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
