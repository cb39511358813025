"""The data-sanity step: tables that share rows, and members swapped with non-members, on real data.

The target is the shipped sample's model (a one-hot + random-forest Pipeline fitted on 1,500 Adult rows,
``sample_input/train.csv``); ``subject.csv`` holds 1,500 other Adult rows. Bundles go through the real
path (``audit``: the sandbox child reads the tables and scores them); ``audit_estimator`` is checked too.
"""

from __future__ import annotations

import json

import joblib
import pandas as pd
import pytest

from builders import ADULT_CSV, CHEAPEST, REPO_ROOT, needs_adult, raised, write_bundle
from mia_robustness import audit, audit_estimator
from mia_robustness.cli import main
from mia_robustness.errors import DataError, OptionsError
from mia_robustness.options import options_from_mapping, parse_key_value_pairs
from mia_robustness.rules import RISK_RULES
from mia_robustness.sanity import EXTREME_LOSS_AUC, find_shared_rows

SAMPLE = REPO_ROOT / "sample_input"
IN_MEMORY = {"attack_models": "threshold", "repeats": 1, "proportions": "1"}


@pytest.fixture(scope="module")
def sample():
    """(model, members, non_members) of the shipped sample: a correct bundle."""
    model = joblib.load(SAMPLE / "model.joblib")  # the project's own file, trusted
    return model, pd.read_csv(SAMPLE / "train.csv"), pd.read_csv(SAMPLE / "subject.csv")


def test_a_correct_bundle_raises_no_sanity_warning(sample):
    report = audit_estimator(*sample, **IN_MEMORY)
    sanity = report.data.sanity
    assert sanity.warnings == [] and sanity.overlap.members_shared == 0
    assert sanity.swap.verdict == "consistent"
    assert sanity.swap.member_accuracy > sanity.swap.non_member_accuracy  # the forest knows its members
    assert sanity.swap.loss_auc > 0.5
    assert not any("swap" in text or "non-member row" in text for text in report.warnings)
    assert not any("swap" in sentence for sentence in report.summary.sentences)


# ---------------------------------------------------------------- shared rows


def test_the_same_table_as_both_sides_is_refused(tmp_path, sample):
    model, members, _ = sample
    error = raised(DataError, "shared_rows", audit, write_bundle(tmp_path, model, members, members), CHEAPEST)
    assert "1,500 of 1,500 member rows are also non-member rows" in error.message
    assert "member row 0 = non-member row 0" in error.message and "0-based" in error.message
    assert error.http_status == 400
    # the in-memory path runs the same step
    raised(DataError, "shared_rows", audit_estimator, model, members, members.copy(), **IN_MEMORY)


def test_mostly_the_same_rows_reordered_and_retyped_are_refused(sample):
    model, members, non_members = sample
    # 60% of the non-members are member rows, shuffled, with a numeric column read as float
    mixed = pd.concat([members.iloc[:900], non_members.iloc[:600]]).sample(frac=1, random_state=1)
    mixed = mixed.reset_index(drop=True).astype({"age": float})
    error = raised(DataError, "shared_rows", audit_estimator, model, members, mixed, **IN_MEMORY)
    assert "900 of 1,500 member rows" in error.message


def test_a_partial_overlap_is_warned_with_the_count_and_rows(tmp_path, sample):
    model, members, non_members = sample
    leaked = pd.concat([non_members.iloc[:1470], members.iloc[100:130]], ignore_index=True)
    report = audit(write_bundle(tmp_path, model, members, leaked), CHEAPEST)
    overlap = report.data.sanity.overlap
    assert (overlap.members_shared, overlap.non_members_shared) == (30, 30)
    assert overlap.examples == [[100 + i, 1470 + i] for i in range(5)]
    [warning] = [text for text in report.warnings if "non-member rows" in text]
    assert warning.startswith(
        "30 of 1,500 member rows are also non-member rows (30 of 1,500 non-member rows)"
    )
    assert "member row 100 = non-member row 1470, 101 = non-member row 1471" in warning
    assert "0-based" in warning
    assert report.data.sanity.warnings == [warning]
    assert report.to_dict()["data"]["sanity"]["overlap"]["members_shared"] == 30


@needs_adult
def test_data_with_few_distinct_rows_is_warned_not_refused():
    """Three categorical columns: two random halves share most rows by chance, as each half repeats its
    own rows; that is no mix-up, so the audit runs (and says how many rows are shared)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.read_csv(ADULT_CSV, usecols=["sex", "race", "relationship", "income"]).iloc[:2000]
    members, non_members = frame.iloc[:1000].reset_index(drop=True), frame.iloc[1000:].reset_index(drop=True)
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression())
    model.fit(members.drop(columns="income"), members["income"])
    report = audit_estimator(model, members, non_members, **IN_MEMORY)
    overlap = report.data.sanity.overlap
    assert overlap.members_shared > 500  # over the refusal share, yet explained by repeats within each table
    assert any(text.startswith(f"{overlap.members_shared} of 1,000 member rows") for text in report.warnings)


def test_shared_rows_compare_numbers_across_integer_and_float_columns():
    members = pd.DataFrame({"a": range(200), "b": ["x", "y"] * 100, "label": [0, 1] * 100})
    non_members = members.iloc[50:60].astype({"a": float}).reset_index(drop=True)
    non_members = pd.concat([non_members, members.iloc[:190].assign(a=lambda f: f["a"] + 1000)])
    overlap = find_shared_rows(members, non_members.reset_index(drop=True), ["a", "b", "label"])
    assert (overlap.members_shared, overlap.non_members_shared) == (10, 10)
    assert overlap.examples[0] == [50, 0]


# ---------------------------------------------------------------- swapped tables


def test_swapped_tables_are_refused_unless_allowed(tmp_path, sample):
    model, members, non_members = sample
    bundle = write_bundle(tmp_path, model, non_members, members)  # train and subject swapped
    error = raised(DataError, "swapped_tables", audit, bundle, CHEAPEST)
    assert error.message.startswith("did you swap members and non-members?")
    assert "accuracy 100.0% against 84.7%" in error.message and "allow_swapped" in error.message

    report = audit(bundle, {**CHEAPEST, "allow_swapped": "true"})
    swap = report.data.sanity.swap
    assert swap.verdict == "extreme" and swap.loss_auc <= EXTREME_LOSS_AUC
    assert swap.accuracy_z > 3 and swap.loss_z > 3
    [warning] = [text for text in report.warnings if "swap" in text]
    assert warning.startswith("did you swap members and non-members? The model scores non-members better")
    assert report.summary.sentences[0].startswith("Did you swap members and non-members?")
    assert report.settings["allow_swapped"] is True


@needs_adult
def test_non_members_scored_better_beyond_noise_are_warned(sample):
    """Half the non-members are training rows: they are scored better than the (unseen) members, beyond
    noise but not extremely, so the audit runs with the warning."""
    model, members, non_members = sample
    adult = pd.read_csv(ADULT_CSV)
    unseen = adult.drop(index=adult.sample(n=3000, random_state=7).index)  # rows make_sample.py never drew
    unseen = unseen.sample(n=750, random_state=0)
    report = audit_estimator(model, non_members, pd.concat([members.iloc[:750], unseen]), **IN_MEMORY)
    swap = report.data.sanity.swap
    assert swap.verdict == "suspicious" and EXTREME_LOSS_AUC < swap.loss_auc < 0.5
    assert swap.non_member_accuracy > swap.member_accuracy
    assert any(text.startswith("did you swap members and non-members?") for text in report.warnings)
    assert report.summary.sentences[0].startswith("Did you swap")


def test_the_extreme_bound_is_the_medium_risk_auc_read_backwards():
    medium_auc = dict((level, auc) for level, auc, _ in RISK_RULES)["medium"]
    assert round(1 - medium_auc, 9) == EXTREME_LOSS_AUC


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("no", False), (False, False)])
def test_allow_swapped_from_every_source(value, expected):
    assert options_from_mapping({"allow_swapped": value}).allow_swapped is expected
    header = parse_key_value_pairs(f"repeats=1;allow-swapped={str(value).lower()}")
    assert options_from_mapping(header).allow_swapped is expected
    with pytest.raises(OptionsError, match="must be true or false"):
        options_from_mapping({"allow_swapped": "maybe"})


def test_cli_says_swapped_tables_in_one_line_and_warns_when_allowed(tmp_path, sample, capsys):
    model, members, non_members = sample
    bundle = write_bundle(tmp_path, model, non_members, members)
    flags = ["--attack-models", "threshold", "--repeats", "1", "--proportions", "1", "-q"]
    assert main(["audit", str(bundle), *flags, "-o", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: did you swap members and non-members?") and err.count("\n") == 1
    assert main(["audit", str(bundle), *flags, "--allow-swapped", "-o", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: did you swap members and non-members?")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["data"]["sanity"]["swap"]["verdict"] == "extreme"
    # ... and `summary` prints it with the report's other warnings
    assert main(["summary", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "Warnings:" in out and "  - did you swap members and non-members?" in out


def test_the_http_header_key_allows_swapped_tables(tmp_path, sample, server):
    from builders import archive_bytes, as_header, folder_files

    model, members, non_members = sample
    body = archive_bytes(folder_files(write_bundle(tmp_path, model, non_members, members)), "zip")
    refused = server.invoke(body, attributes=as_header(CHEAPEST))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "swapped_tables"
    assert refused.json()["error-message"].startswith("did you swap members and non-members?")
    allowed = server.invoke(body, attributes=as_header(CHEAPEST) + ";allow_swapped=true")
    assert allowed.status_code == 200, allowed.text
    report = allowed.json()
    assert report["data"]["sanity"]["swap"]["verdict"] == "extreme"
    assert report["settings"]["allow_swapped"] is True
    assert any(warning.startswith("did you swap") for warning in report["warnings"])
