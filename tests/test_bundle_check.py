"""`mia-robustness bundle` checks what it packs (issue #15): real models on Adult, through the CLI and the
sandbox child, refused at packing time with the user's own file names, or packed and then audited."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from builders import CHEAPEST, adult_encoded, adult_frame, needs_adult, raised
from mia_robustness import audit, check_bundle, make_bundle
from mia_robustness.cli import main as cli_main
from mia_robustness.errors import DataError, ModelError
from mia_robustness.model_check import CheckRequest
from mia_robustness.sandbox.protocol import ProtocolError
from mia_robustness.sandbox.stage import checked_from_message

pytestmark = needs_adult

LABEL = "income"
ROWS = 600  # 300 members and 300 non-members: over the audit's 100 a side, quick to fit and read


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A folder of bundle parts under users' names: Adult's members and non-members, a good model, and
    the mistakes the check refuses (issue #15's five, and their variants)."""
    folder = tmp_path_factory.mktemp("parts")
    frame = adult_frame(ROWS, seed=3)
    members, non_members = frame.iloc[: ROWS // 2], frame.iloc[ROWS // 2 :]
    features, labels = members.drop(columns=LABEL), members[LABEL]
    members.to_csv(folder / "adult_members.csv", index=False)
    non_members.to_csv(folder / "adult_holdout.csv", index=False)
    non_members.drop(columns=LABEL).to_csv(folder / "holdout_unlabelled.csv", index=False)
    members.rename(columns={"age": "Age"}).to_csv(folder / "members_renamed.csv", index=False)
    non_members.assign(row_id=np.arange(len(non_members))).to_csv(
        folder / "holdout_with_ids.csv", index=False
    )

    skops.io.dump(
        adult_encoded(RandomForestClassifier(30, random_state=0)).fit(features, labels),
        folder / "forest.skops",
    )
    joblib.dump(adult_encoded(LogisticRegression(max_iter=200)), folder / "untrained.joblib")
    joblib.dump(adult_encoded(LinearSVC()).fit(features, labels), folder / "svm.joblib")
    numeric = features.select_dtypes("number")
    joblib.dump(
        RandomForestRegressor(10, random_state=0).fit(numeric, labels == ">50K"), folder / "regressor.pkl"
    )
    skops.io.dump(adult_encoded(TruncatedSVD(3, random_state=0)).fit(features), folder / "prep_only.skops")
    # Fitted on the six numeric columns as a bare array: it knows their number, not their names.
    joblib.dump(
        RandomForestClassifier(10, random_state=0).fit(numeric.to_numpy(), labels), folder / "numeric.pkl"
    )
    (folder / "csv").mkdir()
    members.head(20).to_csv(folder / "csv" / "model.pkl", index=False)
    (folder / "script").mkdir()
    (folder / "script" / "model.pkl").write_text(
        "import time\nimport pandas as pd\n\nprint(pd.__version__)\n"
    )
    return folder


def run_bundle(
    parts: Path,
    out: Path,
    capsys,
    *,
    model: str,
    train: str = "adult_members.csv",
    subject: str = "adult_holdout.csv",
    extra: tuple[str, ...] = (),
) -> tuple[int, list[str]]:
    """``mia-robustness bundle`` as a user types it; its exit status and its lines on standard error."""
    status = cli_main(
        [
            "bundle",
            "--model",
            str(parts / model),
            "--train",
            str(parts / train),
            "--subject",
            str(parts / subject),
            "-o",
            str(out),
            *extra,
        ]
    )
    return status, capsys.readouterr().err.strip().splitlines()


MISTAKES = {
    "unfitted": ("untrained.joblib", {}, ["untrained.joblib", "never fitted", "Pipeline"]),
    "regressor": ("regressor.pkl", {}, ["regressor.pkl", "RandomForestRegressor", "predict_proba"]),
    "pipeline ending in a transformer": (
        "prep_only.skops",
        {},
        ["prep_only.skops", "Pipeline", "predict_proba"],
    ),
    "label column missing": (
        "forest.skops",
        {"subject": "holdout_unlabelled.csv", "extra": ("--label-column", LABEL)},
        ["non-members table", f"label column '{LABEL}'"],
    ),
    "feature column renamed": (
        "forest.skops",
        {"train": "members_renamed.csv"},
        [
            "members table members_renamed.csv",
            "lacks 1 column",
            "('age')",
            "1 column the model does not know ('Age')",
        ],
    ),
    "feature count differs from a model fitted on arrays": (
        "numeric.pkl",
        {},
        ["expects 6 features", "have 14 besides the label column 'income'"],
    ),
    "unexpected feature column": (
        "forest.skops",
        {"subject": "holdout_with_ids.csv"},
        ["non-members table holdout_with_ids.csv", "does not know ('row_id')"],
    ),
    "a CSV saved as model.pkl": ("csv/model.pkl", {}, ["model.pkl", "it looks like a CSV table"]),
    "a Python script saved as model.pkl": (
        "script/model.pkl",
        {},
        ["model.pkl", "it looks like Python source code"],
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_bundle_refuses_each_mistake_with_one_specific_line(parts, tmp_path, capsys, mistake):
    model, files, fragments = MISTAKES[mistake]
    out = tmp_path / "bundle.zip"
    status, lines = run_bundle(parts, out, capsys, model=model, **files)
    assert status == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    # The user's own names: the check runs before the files are renamed for the bundle.
    for packed_name in ("model.skops", "model.joblib", "train.csv", "subject.csv"):
        assert packed_name not in lines[0]
    assert not out.exists()


def test_refusal_codes_in_the_python_api(parts, tmp_path):
    """The same refusals, by their stable codes, from ``make_bundle``."""
    args = (parts / "adult_members.csv", parts / "adult_holdout.csv", tmp_path / "b.zip")
    raised(ModelError, "not_fitted", make_bundle, parts / "untrained.joblib", *args)
    raised(ModelError, "not_a_classifier", make_bundle, parts / "regressor.pkl", *args)
    raised(ModelError, "not_a_classifier", make_bundle, parts / "prep_only.skops", *args)
    raised(ModelError, "corrupt_model", make_bundle, parts / "csv" / "model.pkl", *args)
    raised(
        DataError,
        "feature_mismatch",
        make_bundle,
        parts / "forest.skops",
        parts / "members_renamed.csv",
        *args[1:],
    )
    assert not (tmp_path / "b.zip").exists()


def test_a_correct_bundle_passes_the_check_and_audits(parts, tmp_path, capsys):
    out = tmp_path / "good.zip"
    status, lines = run_bundle(parts, out, capsys, model="forest.skops", extra=("--label-column", LABEL))
    assert status == 0, lines
    assert lines[0] == (
        "checked: Pipeline ending in RandomForestClassifier, 2 classes, answers with class probabilities "
        "(predict_proba), 14 feature columns, label column 'income'; it scored 5 rows of each table (300 members, 300 non-members)"
    )
    assert lines[1] == f"bundle written to {out}"
    with zipfile.ZipFile(out) as packed:
        assert sorted(packed.namelist()) == ["config.json", "model.skops", "subject.csv", "train.csv"]
        assert json.loads(packed.read("config.json")) == {"label_column": LABEL}
    # The bundle check of the packed file finds what the packing check found, and the audit runs.
    checked = check_bundle(out)
    assert (checked.label_column, checked.n_features, checked.rows_scored) == (LABEL, 14, 5)
    report = audit(out, CHEAPEST)
    assert (report.data.label_column, report.data.feature_columns) == (LABEL, 14)


def test_the_check_says_what_the_model_answers_with(parts, tmp_path, capsys):
    """A margin model (no predict_proba) passes the check, which says so: the audit will leave out the
    attacks that need probabilities."""
    status, lines = run_bundle(parts, tmp_path / "svm.zip", capsys, model="svm.joblib")
    assert status == 0, lines
    assert (
        "2 classes, answers with decision margins (decision_function), not probabilities, 14 feature"
        in lines[0]
    )
    assert check_bundle(tmp_path / "svm.zip").output_kind == "margins"


def test_no_check_packs_without_loading_the_model(parts, tmp_path, capsys):
    out = tmp_path / "unchecked.zip"
    status, lines = run_bundle(parts, out, capsys, model="untrained.joblib", extra=("--no-check",))
    assert status == 0 and lines == [f"bundle written to {out}"]
    with zipfile.ZipFile(out) as packed:
        assert sorted(packed.namelist()) == ["model.joblib", "subject.csv", "train.csv"]
    # What --no-check let through is what the audit then refuses.
    raised(ModelError, "not_fitted", audit, out, CHEAPEST)


def test_check_bundle_in_process_matches_the_sandbox(parts, tmp_path):
    """``sandbox=False`` (a trusted model) runs the same check in this process."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    for source, name in (
        ("forest.skops", "model.skops"),
        ("adult_members.csv", "train.csv"),
        ("adult_holdout.csv", "subject.csv"),
    ):
        (folder / name).write_bytes((parts / source).read_bytes())
    assert check_bundle(folder, sandbox=False) == check_bundle(folder)
    refused = raised(DataError, "missing_label_column", check_bundle, folder, {"label_column": "Income"})
    assert "'Income'" in refused.message


def test_a_forged_check_answer_is_refused_or_cleaned():
    """The child that answers may run a hostile model: its ``checked`` answer is parsed as untrusted."""
    answer = {
        "kind": "checked",
        "model_class": "Pipeline",
        "estimator_class": "RandomForestClassifier",
        "n_classes": 2,
        "output_kind": "probabilities",
        "label_column": "income\x1b[31m\nred",
        "n_features": 14,
        "members_rows": 300,
        "non_members_rows": 300,
        "rows_scored": 5,
    }
    asked = CheckRequest(label_column=None)
    assert checked_from_message(answer, asked).label_column == "income [31m red"
    for field, forged in (
        ("model_class", "os.system('x')"),
        ("n_features", -1),
        ("rows_scored", True),
        ("label_column", None),
        ("output_kind", "scores"),
        ("output_kind", 1),
    ):
        with pytest.raises(ProtocolError):
            checked_from_message({**answer, field: forged}, asked)
    for field in ("n_classes", "output_kind"):
        with pytest.raises(ProtocolError):
            checked_from_message({key: value for key, value in answer.items() if key != field}, asked)


@pytest.mark.parametrize(
    ("field", "lie"),
    [
        ("label_column", "you may skip the audit"),  # not the label column asked for
        ("n_classes", 1),
        ("n_classes", 0),
        ("n_features", 0),
        ("rows_scored", 0),  # it scored nothing
        ("rows_scored", 6),  # more than asked for
        ("members_rows", 3),  # fewer rows than it says it scored
    ],
)
def test_a_check_answer_that_lies_about_what_was_asked_is_refused(field, lie):
    """Well-formed but not an answer to this request: the parent knows what it asked for."""
    answer = {
        "kind": "checked",
        "model_class": "Pipeline",
        "estimator_class": "RandomForestClassifier",
        "n_classes": 2,
        "output_kind": "probabilities",
        "label_column": LABEL,
        "n_features": 14,
        "members_rows": 300,
        "non_members_rows": 300,
        "rows_scored": 5,
    }
    asked = CheckRequest(label_column=LABEL, rows=5)
    assert checked_from_message(answer, asked).rows_scored == 5
    with pytest.raises(ProtocolError):
        checked_from_message({**answer, field: lie}, asked)


CRAFTED = "VISIT evil.example TO FIX"


def test_feature_names_only_the_model_holds_never_reach_the_user(parts, tmp_path, capsys):
    """A model's ``feature_names_in_`` is the model file's text: a column the tables lack is named only when
    one of the user's tables has it; one that only the model names is counted, in the check and the audit."""
    frame = adult_frame(ROWS, seed=3).iloc[: ROWS // 2].rename(columns={"age": CRAFTED})
    model = adult_encoded(RandomForestClassifier(10, random_state=0)).fit(
        frame.drop(columns=LABEL), frame[LABEL]
    )
    joblib.dump(model, tmp_path / "crafted.joblib")
    args = (parts / "adult_members.csv", parts / "adult_holdout.csv")
    status, lines = run_bundle(tmp_path, tmp_path / "b.zip", capsys, model="crafted.joblib", **{
        "train": str(args[0]), "subject": str(args[1])})  # fmt: skip
    assert status == 2 and len(lines) == 1, lines
    assert "lacks 1 column" in lines[0] and "1 in neither table" in lines[0], lines[0]
    assert "does not know ('age')" in lines[0] and "evil" not in lines[0].lower(), lines[0]
    make_bundle(tmp_path / "crafted.joblib", *args, tmp_path / "unchecked.zip", check=False)
    refused = raised(DataError, "feature_mismatch", audit, tmp_path / "unchecked.zip", CHEAPEST)
    assert "1 in neither table" in refused.message and "evil" not in refused.message.lower()


def test_an_output_that_is_a_part_or_a_folder_is_refused_and_the_part_kept(parts, tmp_path, capsys):
    """``bundle -o`` naming one of its own inputs would truncate that file before zipping it: refused (exit
    2, one line) before the check, the user's table left as it was; a folder's name likewise."""
    members = tmp_path / "members.csv"
    members.write_bytes((parts / "adult_members.csv").read_bytes())
    before = members.read_bytes()
    for out, fragment in ((members, "would destroy that file"), (tmp_path, "is a folder")):
        status, lines = run_bundle(parts, out, capsys, model="forest.skops", train=str(members))
        assert status == 2 and len(lines) == 1 and fragment in lines[0], lines
        assert members.read_bytes() == before
    assert not list(tmp_path.glob(".*.partial"))
