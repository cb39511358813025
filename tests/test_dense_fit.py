"""The reference stage and the what-if refit a one-hot + trees recipe on a dense matrix (dense_fit.py) only
where that grows the very trees the sparse matrix would: the refit's answers equal a plain clone's."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from builders import (
    ADULT_NUMBER_COLUMNS,
    ADULT_TEXT_COLUMNS,
    adult_encoded,
    adult_frame,
    needs_adult,
    split_fit,
)
from mia_robustness import dense_fit
from mia_robustness.dense_fit import MIN_DENSITY, STEP_NAME, DenseForFit
from mia_robustness.recipe import contained_clone

pytestmark = needs_adult
LABEL = "income"


@pytest.fixture(scope="module")
def adult():
    return adult_frame(3000, seed=11)


def _one_hot_pipeline(final) -> Pipeline:
    """Adult's categories one-hot encoded (a sparse matrix, about 12% non-zero) beside its numbers."""
    encode = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), list(ADULT_TEXT_COLUMNS)),
            ("num", "passthrough", list(ADULT_NUMBER_COLUMNS)),
        ],
        sparse_threshold=1.0,
    )
    return Pipeline([("encode", encode), ("trees", final)])


@pytest.mark.parametrize(
    ("final", "densified"),
    [
        (RandomForestClassifier(n_estimators=20, random_state=0), True),
        (ExtraTreesClassifier(n_estimators=20, max_features=0.3, random_state=0), True),
        (DecisionTreeClassifier(random_state=0), True),
        # Fractional weights: the dense and sparse searches sum them in another order (found in review).
        (RandomForestClassifier(n_estimators=20, class_weight="balanced_subsample", random_state=0), False),
        (DecisionTreeClassifier(class_weight="balanced", ccp_alpha=0.0005, random_state=0), False),
    ],
    ids=["forest", "extra_trees", "tree", "forest_balanced_subsample", "tree_balanced_pruned"],
)
def test_refit_answers_equal_a_plain_clone(final, densified):
    frame = adult_frame(3000, seed=1)
    labels = (frame.pop("income") == ">50K").astype(int).to_numpy()
    target = _one_hot_pipeline(final).fit(frame, labels)

    refit = contained_clone(target)
    assert (STEP_NAME in refit.named_steps) is densified
    assert refit.steps[-1][0] == "trees"  # the what-if's parameters still reach the final step

    expected = clone(target).fit(frame, labels).predict_proba(frame)
    np.testing.assert_array_equal(refit.fit(frame, labels).predict_proba(frame), expected)


def test_fitting_holds_one_float32_dense_copy():
    """The dense copy is the trees' own float32 input, not a float64 one they copy again (found in review:
    12 bytes a cell at the fit's peak, 4 after)."""
    frame = adult_frame(8000, seed=2)
    labels = (frame.pop("income") == ">50K").astype(int).to_numpy()
    target = _one_hot_pipeline(DecisionTreeClassifier(max_depth=3, random_state=0)).fit(frame, labels)
    refit = contained_clone(target)
    assert STEP_NAME in refit.named_steps
    encoded = refit[:-2].fit_transform(frame)
    float32_bytes = encoded.shape[0] * encoded.shape[1] * 4

    tracemalloc.start()
    try:
        refit[-2:].fit(encoded, labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert float32_bytes <= peak < 2 * float32_bytes
    np.testing.assert_array_equal(refit.predict_proba(frame), target.predict_proba(frame))


def test_other_recipes_are_left_as_they_are(adult):
    """A pipeline whose final step is no tree, and a tree that takes the rows itself."""
    logistic, _, _ = split_fit(adult, adult_encoded(LogisticRegression(max_iter=300)), label=LABEL)
    assert STEP_NAME not in dict(contained_clone(logistic).steps)
    numeric = adult.select_dtypes("number").assign(**{LABEL: adult[LABEL]})
    tree, _, _ = split_fit(numeric, DecisionTreeClassifier(random_state=0), label=LABEL)
    assert type(contained_clone(tree)) is DecisionTreeClassifier


def test_only_a_dense_enough_and_small_enough_matrix_is_densified(adult, monkeypatch):
    step = DenseForFit()
    encoded = adult_encoded(LogisticRegression())[0].fit_transform(adult.drop(columns=LABEL))
    assert sparse.issparse(encoded)
    dense = step.fit_transform(encoded)
    assert isinstance(dense, np.ndarray)
    assert dense.dtype == np.float32  # the trees' own input type: they make no second copy
    np.testing.assert_array_equal(dense, encoded.toarray().astype(np.float32))
    assert step.transform(encoded) is encoded  # predicting: untouched
    # The same rows among many empty columns: under MIN_DENSITY, kept sparse.
    padded = sparse.hstack([encoded, sparse.csr_matrix((encoded.shape[0], 40 * encoded.shape[1]))]).tocsr()
    assert padded.nnz < MIN_DENSITY * np.prod(padded.shape)
    assert step.fit_transform(padded) is padded
    # More cells than a dense copy may hold (the limit lowered to just under this copy's float32 bytes, not a
    # quarter-gigabyte matrix built): kept sparse.
    monkeypatch.setattr(dense_fit, "MAX_DENSE_BYTES", dense.nbytes - 1)
    assert step.fit_transform(encoded) is encoded
