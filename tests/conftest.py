"""Shared test fixtures: real data (Adult from ../shared/data, or a synthetic stand-in) and bundles."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

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


def adult_frame(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """``n_rows`` random rows of Adult (label column ``income``)."""
    frame = pd.read_csv(ADULT_CSV)
    return frame.sample(n=n_rows, random_state=seed).reset_index(drop=True)


def noisy_numeric_frame(
    n_rows: int, n_features: int = 6, n_classes: int = 2, noise: float = 0.3, seed: int = 0
):
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
    """Write a bundle (``folder``, ``zip``, ``tar`` or ``tar.gz``) and return its path."""
    folder = directory / "bundle"
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / model_name)
    members.to_csv(folder / "train.csv", index=False)
    non_members.to_csv(folder / "subject.csv", index=False)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if kind == "folder":
        return folder
    files = sorted(p for p in folder.iterdir())
    if kind == "zip":
        path = directory / "bundle.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                archive.write(file, file.name)
    elif kind in ("tar", "tar.gz"):
        path = directory / f"bundle.{kind}"
        with tarfile.open(path, "w:gz" if kind == "tar.gz" else "w") as archive:
            for file in files:
                archive.add(file, file.name)
    else:
        raise ValueError(kind)
    shutil.rmtree(folder)
    return path


@pytest.fixture(scope="session")
def overfit_tree_data():
    """(model, members, non_members): an unpruned decision tree on noisy synthetic data."""
    from sklearn.tree import DecisionTreeClassifier

    frame = noisy_numeric_frame(1200, seed=1)
    members, non_members = frame.iloc[:600].reset_index(drop=True), frame.iloc[600:].reset_index(drop=True)
    model = DecisionTreeClassifier(random_state=0).fit(members.drop(columns="label"), members["label"])
    return model, members, non_members


@pytest.fixture()
def overfit_bundle(tmp_path, overfit_tree_data):
    """A folder bundle with an overfit decision tree and a fast config (1 repeat, 3 proportions)."""
    model, members, non_members = overfit_tree_data
    return write_bundle(
        tmp_path,
        model,
        members,
        non_members,
        config={"repeats": 1, "proportions": [0.2, 0.6, 1.0], "attack_models": ["rf", "threshold"]},
    )


# --------------------------------------------------------------------------------------------------
# A real `./serve` for the HTTP tests (test_serve, test_server_stress, test_fuzz)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One `./serve` shared by the session: 2 audits at a time, 1 MB body limit, its own temporary root."""
    from serving_helpers import Server  # imported here: serving_helpers imports this module

    running = Server(
        tmp_path_factory.mktemp("serve"), SAGEMAKER_MODEL_SERVER_WORKERS="2", MIA_MAX_PAYLOAD_MB="1"
    )
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """Bytes of real bundle archives for the HTTP tests, by name."""
    from serving_helpers import bundle_bytes

    root = tmp_path_factory.mktemp("serve-bundles")
    return {
        # 300 members / 300 non-members, label "label"
        "small": bundle_bytes(root / "small", 300),
        # 200 / 200, label "target", 4 features, tar.gz, with a config.json of its own
        "other": bundle_bytes(
            root / "other",
            200,
            kind="tar.gz",
            label="target",
            seed=3,
            features=4,
            config={"attack_models": ["rf"], "proportions": [1.0], "repeats": 1},
        ),
        "tar": bundle_bytes(root / "tar", 150, kind="tar", seed=4),
        # enough work to keep an audit busy for seconds (see the ping test)
        "busy": bundle_bytes(root / "busy", 1000, seed=2),
    }
