"""The SageMaker training-job shell: `./train` against a temporary /opt/ml tree (MIA_OPT_ML)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
from sklearn.tree import DecisionTreeClassifier

from builders import CHEAPEST, FAST, REPO_ROOT, archive_bytes, noisy_numeric_frame, split_fit, write_bundle
from mia_robustness import training
from mia_robustness.errors import InputError
from mia_robustness.training import find_bundle, read_hyperparameters

TRAIN = REPO_ROOT / "train"


def _model_and_tables(rows: int = 200, seed: int = 1):
    return split_fit(noisy_numeric_frame(2 * rows, seed=seed), DecisionTreeClassifier(random_state=0))


def _job_tree(root: Path, hyperparameters: dict | None = FAST) -> Path:
    (root / "input" / "config").mkdir(parents=True)
    if hyperparameters is not None:
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return root


def _run_train(root: Path) -> subprocess.CompletedProcess:
    environ = dict(os.environ, MIA_OPT_ML=str(root))
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    return subprocess.run([str(TRAIN)], env=environ, capture_output=True, text=True, timeout=300)


def test_train_writes_the_reports(tmp_path):
    root = _job_tree(
        tmp_path / "opt_ml", {**FAST, "sagemaker_program": "train", "_tuning_objective_metric": ""}
    )
    channel = root / "input" / "data" / "training"
    channel.mkdir(parents=True)
    bundle = write_bundle(tmp_path / "made", *_model_and_tables(), kind="zip")
    bundle.rename(channel / "bundle.zip")

    done = _run_train(root)
    assert done.returncode == 0, done.stdout + done.stderr
    for folder in (root / "model", root / "output" / "data"):
        report = json.loads((folder / "report.json").read_text())
        assert report["settings"]["attack_models"] == ["threshold", "rf"]
        assert report["settings"]["proportions"] == [0.5, 1.0]
        assert report["data"]["rows_per_side"] == 200
        lines = (folder / "report.csv").read_text().splitlines()
        assert lines[0].startswith("attack_model,") and len(lines) == 1 + 4
    assert not (root / "output" / "failure").exists()
    assert "progress attacks" in done.stdout and "risk level" in done.stdout


def test_train_fails_clearly_on_a_bad_bundle(tmp_path):
    root = _job_tree(tmp_path / "opt_ml")
    channel = root / "input" / "data" / "training"
    channel.mkdir(parents=True)
    (channel / "bundle.zip").write_bytes(b"PK\x03\x04" + b"\0" * 200)

    done = _run_train(root)
    assert done.returncode == 2
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith("corrupt_archive: ") and "re-create it" in reason[:1024]
    assert "Traceback" not in done.stderr
    assert not (root / "model" / "report.json").exists()


def test_legacy_layout_in_the_training_channel(tmp_path, monkeypatch, capsys):
    root = _job_tree(tmp_path / "opt_ml", CHEAPEST)
    channel = root / "input" / "data" / "training"
    channel.mkdir(parents=True)
    model, members, non_members = _model_and_tables(150, seed=5)
    joblib.dump(model, channel / "model.pkl")
    tables = {"train_mia.csv": members.to_csv(index=False), "test_mia.csv": non_members.to_csv(index=False)}
    (channel / "data.zip").write_bytes(archive_bytes(tables))
    (root / "output").mkdir()
    (root / "output" / "failure").write_text("stale reason of an earlier run")

    monkeypatch.setenv("MIA_OPT_ML", str(root))
    assert training.main([]) == 0
    report = json.loads((root / "model" / "report.json").read_text())
    assert report["data"]["layout"] == "legacy" and report["data"]["rows_per_side"] == 150
    assert not (root / "output" / "failure").exists()


@pytest.mark.parametrize(
    ("layout", "code", "phrase"),
    [
        ("no channel", "no_input_channel", "one input channel"),
        ("two channels", "too_many_channels", "exactly one channel"),
        ("bad hyperparameter", "bad_option", "attack_modles"),
        ("hyperparameters not an object", "bad_hyperparameters", "JSON object"),
        ("missing subject table", "missing_non_members", "subject.csv"),
    ],
)
def test_input_errors_exit_2_with_the_reason(tmp_path, monkeypatch, layout, code, phrase):
    hyperparameters: dict | None = FAST
    if layout == "bad hyperparameter":
        hyperparameters = {"attack_modles": "rf"}
    root = _job_tree(tmp_path / "opt_ml", hyperparameters)
    if layout == "hyperparameters not an object":
        (root / "input" / "config" / "hyperparameters.json").write_text('["rf"]')
    if layout != "no channel":
        bundle = write_bundle(tmp_path / "made", *_model_and_tables(), kind="folder")
        if layout == "missing subject table":
            (bundle / "subject.csv").unlink()
        (root / "input" / "data").mkdir(parents=True)
        bundle.rename(root / "input" / "data" / "training")
    if layout == "two channels":
        (root / "input" / "data" / "validation").mkdir()
        (root / "input" / "data" / "validation" / "extra.csv").write_text("a\n1\n")

    monkeypatch.setenv("MIA_OPT_ML", str(root))
    assert training.main([]) == 2
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith(f"{code}: ") and phrase in reason and len(reason) <= 1024


def test_unexpected_errors_exit_1(tmp_path, monkeypatch):
    root = _job_tree(tmp_path / "opt_ml")
    (root / "input" / "data").mkdir(parents=True)
    write_bundle(tmp_path, *_model_and_tables(), kind="folder").rename(root / "input" / "data" / "training")
    (root / "model").write_text("a file where SageMaker makes a folder")  # writing the report fails

    monkeypatch.setenv("MIA_OPT_ML", str(root))
    assert training.main([]) == 1
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith("internal_error: ") and "FileExistsError" in reason


def test_hyperparameters_are_read_like_sagemaker_writes_them(tmp_path):
    path = tmp_path / "hyperparameters.json"
    assert read_hyperparameters(path) == {}
    path.write_text(
        json.dumps(
            {
                "repeats": "2",
                "attack_models": '["rf", "threshold"]',
                "label_column": '"income"',
                "proportions": "0.5,1",
                "sagemaker_region": '"eu-west-1"',
                "_tuning_objective_metric": "auc",
            }
        )
    )
    assert read_hyperparameters(path) == {
        "repeats": "2",
        "attack_models": ["rf", "threshold"],
        "label_column": "income",
        "proportions": "0.5,1",
    }


def test_find_bundle_follows_single_folders_and_prefers_a_lone_archive(tmp_path):
    data = tmp_path / "data"
    nested = data / "training" / "prefix" / "bundle"
    nested.mkdir(parents=True)
    (nested / "model.pkl").write_bytes(b"x")
    (nested / "train.csv").write_text("a\n")
    assert find_bundle(data) == nested

    archive_channel = tmp_path / "data2" / "train"
    archive_channel.mkdir(parents=True)
    (archive_channel / "anything.bin").write_bytes(archive_bytes({"train.csv": "a\n"}))
    (archive_channel / ".hidden").write_text("ignored")
    assert find_bundle(tmp_path / "data2") == archive_channel / "anything.bin"

    (tmp_path / "data3").mkdir()
    os.mkfifo(tmp_path / "data3" / "training_0")  # what Pipe input mode puts there
    with pytest.raises(InputError) as caught:
        find_bundle(tmp_path / "data3")
    assert caught.value.code == "pipe_mode_unsupported"


def test_max_runtime_stops_the_audit_and_names_its_stage(tmp_path):
    root = _job_tree(tmp_path / "opt_ml", {"attack_models": "nn,rf,gb", "repeats": "3", "max_runtime": "2"})
    channel = root / "input" / "data" / "training"
    channel.mkdir(parents=True)
    write_bundle(tmp_path / "made", *_model_and_tables(rows=1500), kind="zip").rename(channel / "bundle.zip")
    done = _run_train(root)
    assert done.returncode == 2, done.stdout + done.stderr
    reason = (root / "output" / "failure").read_text()
    assert (
        reason.startswith("audit_timeout: ") and "time limit of 2 s" in reason and "stopped during" in reason
    )
    assert not (root / "model" / "report.json").exists()


@pytest.mark.parametrize("value", ["soon", "-5", "0", "1e12"])
def test_max_runtime_must_be_a_sane_number_of_seconds(tmp_path, monkeypatch, value):
    # In this process, like the other refusals above: the `train` script's own exit status is the
    # subprocess tests' business (a bad bundle, a time limit reached).
    root = _job_tree(tmp_path / "opt_ml", {**FAST, "max_runtime": value})
    (root / "input" / "data" / "training").mkdir(parents=True)
    monkeypatch.setenv("MIA_OPT_ML", str(root))
    assert training.main([]) == 2
    assert (
        (root / "output" / "failure")
        .read_text()
        .startswith("bad_hyperparameters: hyperparameter max_runtime")
    )
