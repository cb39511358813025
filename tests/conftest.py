"""Shared test fixtures: real data (Adult from ../shared/data, or a synthetic stand-in) and bundles.

The builders these fixtures use (tables, fitted models, bundles, archives, option presets, polling) are in
builders.py; import them from there.
"""

from __future__ import annotations

import pytest
from sklearn.tree import DecisionTreeClassifier

from builders import noisy_numeric_frame, split_fit, write_bundle


@pytest.fixture(scope="session")
def overfit_tree_data():
    """(model, members, non_members): an unpruned decision tree on noisy synthetic data."""
    return split_fit(noisy_numeric_frame(1200, seed=1), DecisionTreeClassifier(random_state=0))


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
    """One `./serve` shared by the session: 2 audits at a time, 1 MB body limit, its own temporary root, and
    progress lines in its log whatever MIA_LOG_LEVEL says (test_serve's crash test waits for one)."""
    from serving_helpers import Server  # imported here: only the HTTP tests need requests and nginx

    running = Server(
        tmp_path_factory.mktemp("serve"),
        SAGEMAKER_MODEL_SERVER_WORKERS="2",
        MIA_MAX_PAYLOAD_MB="1",
        MIA_LOG_LEVEL="info",
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
