"""dense_fit.py: the recipe a pipeline of one-hot encoding + trees is refitted with hands the trees a dense matrix
while fitting, and the refits are the same models (real Adult rows, real pipelines)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from builders import adult_encoded, adult_frame, needs_adult, split_fit
from mia_robustness.dense_fit import MAX_DENSE_BYTES, MIN_DENSITY, STEP_NAME, DenseForFit
from mia_robustness.recipe import contained_clone
from mia_robustness.remediation.family import final_step

pytestmark = needs_adult
LABEL = "income"


@pytest.fixture(scope="module")
def adult():
    return adult_frame(3000, seed=11)


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=20, random_state=0),
        ExtraTreesClassifier(n_estimators=20, max_features=0.3, random_state=0),
        DecisionTreeClassifier(random_state=0),
    ],
    ids=["forest", "extra_trees", "tree"],
)
def test_the_refit_recipe_fits_dense_and_answers_as_the_sparse_fit_does(adult, estimator):
    model, members, non_members = split_fit(adult, adult_encoded(estimator), label=LABEL)
    template = contained_clone(model)
    assert [name for name, _ in template.steps][-2] == STEP_NAME
    features, labels = members.drop(columns=LABEL), members[LABEL]
    rows = adult.drop(columns=LABEL)
    encoded = model[0].transform(rows)
    assert sparse.issparse(encoded) and encoded.nnz >= MIN_DENSITY * np.prod(encoded.shape)  # the dense path

    refit = clone(template).fit(features, labels)
    as_before = clone(model).fit(
        features, labels
    )  # the recipe as the file declares it: sparse into the trees
    np.testing.assert_array_equal(refit.predict_proba(rows), as_before.predict_proba(rows))
    # The final step keeps its name, so the what-if's parameters still reach it.
    assert final_step(template)[1] == final_step(model)[1]


def test_other_recipes_are_left_as_they_are(adult):
    """A pipeline whose final step is no tree, trees with fractional weights (their sums, and so their near-ties,
    depend on the layout), and a tree that takes the rows itself."""
    for weighted in (
        DecisionTreeClassifier(class_weight="balanced"),
        RandomForestClassifier(5, class_weight="balanced"),
    ):
        model, _, _ = split_fit(adult, adult_encoded(weighted), label=LABEL)
        assert STEP_NAME not in dict(contained_clone(model).steps)
    logistic, _, _ = split_fit(adult, adult_encoded(LogisticRegression(max_iter=300)), label=LABEL)
    assert STEP_NAME not in dict(contained_clone(logistic).steps)
    numeric = adult.select_dtypes("number").assign(**{LABEL: adult[LABEL]})
    tree, _, _ = split_fit(numeric, DecisionTreeClassifier(random_state=0), label=LABEL)
    assert type(contained_clone(tree)) is DecisionTreeClassifier


def test_only_a_dense_enough_and_small_enough_matrix_is_densified(adult):
    step = DenseForFit()
    encoded = adult_encoded(LogisticRegression())[0].fit_transform(adult.drop(columns=LABEL))
    assert sparse.issparse(encoded)
    dense = step.fit_transform(encoded)
    assert isinstance(dense, np.ndarray)
    np.testing.assert_array_equal(dense, encoded.toarray())
    assert step.transform(encoded) is encoded  # predicting: untouched
    # The same rows among many empty columns: under MIN_DENSITY, kept sparse.
    padded = sparse.hstack([encoded, sparse.csr_matrix((encoded.shape[0], 40 * encoded.shape[1]))]).tocsr()
    assert padded.nnz < MIN_DENSITY * np.prod(padded.shape)
    assert step.fit_transform(padded) is padded
    # More rows than a dense copy may hold: kept sparse.
    columns = MAX_DENSE_BYTES // 8 // encoded.shape[0] + 1
    wide = sparse.random(encoded.shape[0], columns, density=0.2, format="csr", random_state=0)
    assert step.fit_transform(wide) is wide
