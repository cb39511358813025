"""Rebuild sample_input/: a scikit-learn Pipeline (one-hot encoding + random forest) on part of Adult.

Run from the repository root: ``python sample_input/make_sample.py``. It reads ``../shared/data/adult.csv``,
draws 1,500 training rows (members) and 1,500 other rows (non-members), fits the pipeline on the members,
and writes ``model.joblib``, ``train.csv`` and ``subject.csv`` here. Then it audits the folder and writes
``report.json`` / ``report.csv`` / ``report.html``, the report the sample gives with the default options and
seed 0 (``tests/test_sample_input.py`` checks that it still does).
"""

from __future__ import annotations

from pathlib import Path

import joblib
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

HERE = Path(__file__).resolve().parent
ADULT = HERE.parent.parent / "shared" / "data" / "adult.csv"
ROWS_PER_SIDE = 1500
SEED = 7


def main() -> None:
    frame = pd.read_csv(ADULT).sample(n=2 * ROWS_PER_SIDE, random_state=SEED).reset_index(drop=True)
    members, non_members = frame.iloc[:ROWS_PER_SIDE], frame.iloc[ROWS_PER_SIDE:]
    features = members.drop(columns="income")
    categorical = list(features.select_dtypes(exclude="number").columns)
    numeric = [c for c in features.columns if c not in categorical]
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
                        ("numbers", "passthrough", numeric),
                    ]
                ),
            ),
            ("forest", RandomForestClassifier(n_estimators=40, random_state=SEED)),
        ]
    ).fit(features, members["income"])
    joblib.dump(model, HERE / "model.joblib", compress=3)
    members.to_csv(HERE / "train.csv", index=False)
    non_members.to_csv(HERE / "subject.csv", index=False)

    from mia_robustness import audit, render

    report = audit(HERE)
    (HERE / "report.json").write_text(render(report, "json"))
    (HERE / "report.csv").write_text(render(report, "csv"))
    (HERE / "report.html").write_text(render(report, "html"))
    print(f"model {(HERE / 'model.joblib').stat().st_size / 1e6:.2f} MB; risk {report.summary.risk_level}")


if __name__ == "__main__":
    main()
