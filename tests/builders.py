"""What the tests build, in one place: paths to the shared data, tables (real and synthetic), a model fitted
on the first rows of a table, bundles and archives in memory, option presets (as a mapping, a
custom-attributes header or CLI flags), and polling against a deadline instead of sleeping.

Plain functions and constants only; conftest.py holds the fixtures built from them. Import from here:
``from builders import FAST, split_fit, write_bundle``.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import joblib
import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ADULT_CSV = SHARED_DATA / "adult.csv"
SEED_SAMPLE = SHARED_DATA / "seed-sample"

needs_adult = pytest.mark.skipif(not ADULT_CSV.exists(), reason=f"shared data set absent: {ADULT_CSV}")
needs_seed_sample = pytest.mark.skipif(
    not (SEED_SAMPLE / "data.zip").exists(), reason=f"replaced product's sample absent: {SEED_SAMPLE}"
)

# --------------------------------------------------------------------------------------------------
# Option presets: string values, as a header or hyperparameters carry them (the engine parses both)
# --------------------------------------------------------------------------------------------------

#: One cell: the threshold attack at full knowledge, once. The cheapest audit there is.
CHEAPEST = {"attack_models": "threshold", "repeats": "1", "proportions": "1"}
#: The threshold attack at two proportions, once (two report rows).
TINY = {"attack_models": "threshold", "repeats": "1", "proportions": "0.5,1"}
#: A model-free and a learned attack at two proportions, once (four report rows).
FAST = {"attack_models": "threshold,rf", "repeats": "1", "proportions": "0.5,1"}


def as_header(options: Mapping[str, object]) -> str:
    """``options`` as the custom-attributes header: ``attack_models=threshold;repeats=1;...``."""
    return ";".join(f"{name}={value}" for name, value in options.items())


def as_flags(options: Mapping[str, object]) -> list[str]:
    """``options`` as CLI flags: ``["--attack-models", "threshold", "--repeats", "1", ...]``."""
    flags = []
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


# --------------------------------------------------------------------------------------------------
# Tables and models
# --------------------------------------------------------------------------------------------------


def adult_frame(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """``n_rows`` random rows of Adult (label column ``income``)."""
    frame = pd.read_csv(ADULT_CSV)
    return frame.sample(n=n_rows, random_state=seed).reset_index(drop=True)


#: Adult's six number columns.
ADULT_NUMBER_COLUMNS = ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week")
#: Adult's text columns (the other six are numbers).
ADULT_TEXT_COLUMNS = (
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native_country",
)


def adult_encoded(estimator):
    """``estimator`` behind a one-hot encoding of Adult's text columns (the numeric ones pass through)."""
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    encoder = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), list(ADULT_TEXT_COLUMNS)), remainder="passthrough"
    )
    return make_pipeline(encoder, estimator)


def noisy_numeric_frame(
    n_rows: int, n_features: int = 6, n_classes: int = 2, noise: float = 0.3, seed: int = 0
) -> pd.DataFrame:
    """A synthetic numeric table whose labels are partly random, so an unpruned tree memorises members."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_rows, n_features))
    weights = rng.normal(size=(n_features, n_classes))
    labels = np.argmax(features @ weights, axis=1)
    flip = rng.random(n_rows) < noise
    labels[flip] = rng.integers(0, n_classes, size=int(flip.sum()))
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(n_features)])
    frame["label"] = labels
    return frame


def split_fit(
    frame: pd.DataFrame,
    model,
    members: int | None = None,
    *,
    label: str = "label",
    arrays: bool = False,
):
    """``(model, members, non_members)``: the first ``members`` rows of ``frame`` (half by default) are
    the members, the rest the non-members, both indexed from 0; ``model`` is fitted on the members'
    feature columns (as a DataFrame, so it records their names; as a bare array with ``arrays``)."""
    members = len(frame) // 2 if members is None else members
    inside = frame.iloc[:members].reset_index(drop=True)
    outside = frame.iloc[members:].reset_index(drop=True)
    features = inside.drop(columns=label)
    model.fit(features.to_numpy() if arrays else features, inside[label])
    return model, inside, outside


# --------------------------------------------------------------------------------------------------
# Attack inputs on plain arrays
# --------------------------------------------------------------------------------------------------


def attack_data(n_per_side: int = 300, shift: float = 2.0, *, constant: bool = False, seed: int = 0):
    """``(inputs, is_member)``: synthetic per-row signals for the attacks, members first.

    The single-signal score ``confidence`` and feature 0 sit ``shift`` standard deviations higher for
    members; ``noise`` (score and feature 1) says nothing; the true-label class is 0 or 1 at random. With
    ``constant`` every feature and score is the same for every row, so no attack can tell members apart.
    """
    from mia_robustness.attacks import AttackInput

    rng = np.random.default_rng(seed)
    is_member = np.repeat([1, 0], n_per_side)
    signal = rng.normal(size=2 * n_per_side) + shift * is_member
    noise = rng.normal(size=2 * n_per_side)
    if constant:
        signal, noise = np.full(2 * n_per_side, 0.7), np.full(2 * n_per_side, 0.2)
    inputs = AttackInput(
        features=np.column_stack([signal, noise]).astype(np.float32),
        signal_scores={"confidence": signal, "noise": noise},
        label_index=rng.integers(0, 2, 2 * n_per_side),
    )
    return inputs, is_member


def fit_and_score(fit_score, inputs, is_member: np.ndarray, *, seed: int = 0, **kwargs):
    """``(output, auc)``: a learned attack trained on the even rows of ``inputs`` and scored on the odd
    rows, and the ROC AUC of its scores there. One thread for native kernels, as the sweep runs a cell
    (OpenMP teams of every core fight on a shared machine: a small boosting fit then takes seconds)."""
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    train, evaluation = np.arange(0, len(inputs), 2), np.arange(1, len(inputs), 2)
    with threadpool_limits(limits=1):
        output = fit_score(inputs.take(train), is_member[train], inputs.take(evaluation), seed=seed, **kwargs)
    assert len(output.scores) == len(evaluation) == len(output.predicted_member)
    return output, float(roc_auc_score(is_member[evaluation], output.scores))


def separates(fit_score, **kwargs):
    """A learned attack on :func:`attack_data` (members two standard deviations apart): its ranking beats
    chance clearly (AUC > 0.85; about 0.92 in theory) and so do its hard decisions. Returns its output."""
    inputs, is_member = attack_data()
    output, auc = fit_and_score(fit_score, inputs, is_member, **kwargs)
    assert auc > 0.85, auc
    accuracy = (output.predicted_member == is_member[1::2]).mean()
    assert accuracy > 0.75, accuracy  # a sensible cut-off, not just a ranking
    return output


def at_chance_on_a_constant_signal(fit_score, **kwargs):
    """A learned attack on a constant signal: AUC 0.5 and the same score for every row. Returns its output."""
    inputs, is_member = attack_data(constant=True)
    output, auc = fit_and_score(fit_score, inputs, is_member, **kwargs)
    assert auc == pytest.approx(0.5)
    assert np.ptp(output.scores) == 0 and len(set(output.predicted_member.tolist())) == 1
    return output


# --------------------------------------------------------------------------------------------------
# Archives and bundles
# --------------------------------------------------------------------------------------------------

_TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}


def archive_bytes(
    files: Mapping[str, bytes | str], kind: str = "zip", *, compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """An archive (``zip``, ``tar``, ``tar.gz``, ``tar.bz2`` or ``tar.xz``) of ``files`` (member name ->
    content, text as UTF-8), in memory; ``compression`` is the zip's method."""
    buffer = io.BytesIO()
    contents = {name: data.encode() if isinstance(data, str) else data for name, data in files.items()}
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, data in contents.items():
                archive.writestr(name, data)
    elif kind in _TAR_MODES:
        with tarfile.open(fileobj=buffer, mode=_TAR_MODES[kind]) as archive:
            for name, data in contents.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    else:
        raise ValueError(kind)
    return buffer.getvalue()


def folder_files(folder: Path) -> dict[str, bytes]:
    """The files directly in ``folder``, name -> content, in name order (to pack them as an archive)."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def write_bundle(
    directory: Path,
    model,
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    *,
    kind: str = "folder",
    config: dict | None = None,
    model_name: str = "model.pkl",
) -> Path:
    """Write a bundle (``folder``, or an archive kind of :func:`archive_bytes`) and return its path."""
    folder = directory / "bundle"
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / model_name)
    members.to_csv(folder / "train.csv", index=False)
    non_members.to_csv(folder / "subject.csv", index=False)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if kind == "folder":
        return folder
    path = directory / f"bundle.{kind}"
    path.write_bytes(archive_bytes(folder_files(folder), kind))
    shutil.rmtree(folder)
    return path


# --------------------------------------------------------------------------------------------------
# Errors and waiting
# --------------------------------------------------------------------------------------------------


def raised(error_type: type[BaseException], code: str, call: Callable, *args, **kwargs):
    """The ``error_type`` that ``call(*args, **kwargs)`` raises, after checking its ``code`` (the message
    is shown when it is another)."""
    with pytest.raises(error_type) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and return that;
    raise AssertionError (naming ``what``) when ``timeout`` seconds pass first. It is called once more at
    the deadline, so a slow poll never fails a condition that has just come true."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'the condition'} not reached within {timeout:g} s")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# --------------------------------------------------------------------------------------------------
# A remediation section measured on real fits, for the renderers' tests (the engine's own protocol is
# tested in the what-if's tests; the renderers only need a section of the real shape with real figures)
# --------------------------------------------------------------------------------------------------


def measured_what_if_section(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """A schema 1.2 ``remediation`` dict from a random forest and three variants of it on ``(x, y)``.

    Each config is fitted on two random halves of the rows (the same halves for every config); each fit in
    turn is the target and its loss-threshold attack (true-class confidence) is scored on the evaluation
    half of the rows, pooled over both fits; accuracy on each fit's unseen rows. Two serving-side rows are
    measured on the first fit. ``pareto`` and ``recommended`` follow the what-if's rules.
    """
    from sklearn.base import clone
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import log_loss

    from mia_robustness.metrics import attack_metrics, auc_interval, clopper_pearson, metric_intervals

    rng = np.random.default_rng(seed)
    n = len(y)
    masks = [rng.permutation(n) < n // 2 for _ in range(2)]
    evaluation = rng.permutation(n) < n // 2
    base = RandomForestClassifier(n_estimators=30, random_state=seed)

    def figures(true_prob: list, correct: list, proba: list, attack_model: str) -> dict:
        truth = np.concatenate([m[evaluation] for m in masks[: len(true_prob)]])
        scores = np.concatenate([t[evaluation] for t in true_prob])
        found = attack_metrics(truth, scores, scores >= np.median(scores))
        unseen = np.concatenate([c[~m] for c, m in zip(correct, masks, strict=False)])
        labels = np.concatenate([y[~m] for m in masks[: len(correct)]])
        ci = metric_intervals(truth, scores)
        return {
            "utility": {
                "accuracy": float(unseen.mean()),
                "balanced_accuracy": float(np.mean([unseen[labels == c].mean() for c in np.unique(labels)])),
                "log_loss": float(log_loss(labels, np.concatenate(proba), labels=np.unique(y)))
                if proba
                else None,
                "ci95": {"accuracy": list(clopper_pearson(int(unseen.sum()), len(unseen)))},
            },
            "attack": {
                "attack_model": attack_model,
                "auc": found.auc,
                "tpr_at_1pct_fpr": found.tpr_at_1pct_fpr,
                "ci95": {
                    "auc": list(auc_interval(found.auc, int(truth.sum()), int((~truth).sum()))),
                    "tpr_at_1pct_fpr": ci["tpr_at_1pct_fpr"],
                },  # fmt: skip
            },
        }

    def measured(model, name: str, kind: str, parameter: str | None, value) -> dict:
        fits = [clone(model).fit(x[m], y[m]) for m in masks]
        probas = [f.predict_proba(x) for f in fits]
        true_prob = [p[np.arange(n), y] for p in probas]
        correct = [p.argmax(axis=1) == y for p in probas]
        unseen_proba = [p[~m] for p, m in zip(probas, masks, strict=True)]
        config = {"name": name, "kind": kind, "parameter": parameter, "value": value}
        return config | figures(true_prob, correct, unseen_proba, "loss_threshold")

    baseline = measured(base, "baseline", "baseline", None, None)
    variants = [
        measured(
            clone(base).set_params(**{parameter: value}),
            f"{parameter}={value}",
            "retrained",
            parameter,
            value,
        )
        for parameter, value in (("min_samples_leaf", 5), ("min_samples_leaf", 20), ("max_depth", 6))
    ]
    target = base.fit(x[masks[0]], y[masks[0]])
    proba = target.predict_proba(x)
    rounded = np.round(proba, 1)
    correct = rounded.argmax(axis=1) == y
    serving = [
        {"name": "labels only", "kind": "serving", "parameter": None, "value": None}
        | figures([correct.astype(float)], [correct], [], "gap"),
        {"name": "probabilities rounded to 1 decimal", "kind": "serving", "parameter": None, "value": None}
        | figures([rounded[np.arange(n), y]], [correct], [_normalised(rounded[~masks[0]])], "loss_threshold"),
    ]
    configs = [baseline, *variants, *serving]
    for config in configs:
        reference = (
            baseline
            if config["kind"] != "serving"
            else serving[0]
            | figures([proba[np.arange(n), y]], [proba.argmax(axis=1) == y], [], "loss_threshold")
        )
        config["auc_change"] = config["attack"]["auc"] - reference["attack"]["auc"]
        config["accuracy_change"] = config["utility"]["accuracy"] - reference["utility"]["accuracy"]
    for config in configs:
        acc, auc = config["utility"]["accuracy"], config["attack"]["auc"]
        config["pareto"] = config["kind"] != "serving" and not any(
            o["utility"]["accuracy"] >= acc and o["attack"]["auc"] <= auc and o is not config
            and (o["utility"]["accuracy"] > acc or o["attack"]["auc"] < auc)
            for o in configs if o["kind"] != "serving"
        )  # fmt: skip
    within = [v for v in variants if v["utility"]["accuracy"] >= baseline["utility"]["accuracy"] - 0.01]
    best = min(within, key=lambda v: v["auc_change"], default=None)
    chosen = best if best is not None and best["auc_change"] < -0.02 else None
    sentence = (
        f"Retrain with {chosen['name']}: the strongest attack's AUC falls by {-chosen['auc_change']:.2f} "
        f"for an accuracy change of {chosen['accuracy_change'] * 100:+.1f} points."
        if chosen
        else "No variant lowers the attack's AUC beyond the noise within 1 point of accuracy."
    )
    return {
        "status": "ran",
        "skipped": None,
        "estimator_class": "RandomForestClassifier",
        "family": "forest",
        "protocol": {
            "models_per_config": 2,
            "rows": n,
            "evaluation_rows": int(evaluation.sum()),
            "utility_budget": 1.0,
        },  # fmt: skip
        "baseline": baseline,
        "variants": variants + serving,
        "recommended": {"variant": chosen["name"] if chosen else None, "sentence": sentence},
        "rules": [
            {
                "parameter": "min_samples_leaf",
                "value": 1,
                "why": "leaves of one training row let every tree reproduce its rows' labels exactly",
            }
        ],  # fmt: skip
    }


def _normalised(proba: np.ndarray) -> np.ndarray:
    clipped = np.clip(proba, 1e-6, 1)
    return clipped / clipped.sum(axis=1, keepdims=True)
