"""Refit a pipeline's trees on a dense matrix where its encoders hand them a sparse one.

One-hot encoding (a ``ColumnTransformer`` or ``OneHotEncoder`` step) hands the next step a sparse matrix.
A scikit-learn tree searches the same splits either way (dense and sparse share one split search and
feature sampling; scikit-learn's tests assert equal trees, and ``tests/test_dense_fit.py`` asserts equal
answers), but searching a sparse matrix that is not very sparse is several times slower. On Adult (one-hot
encoding + a 100-tree forest, 16,000 rows, 12% non-zero) a refit took 7.1 s sparse and 2.1 s dense, with
identical ``predict_proba``; the reference stage and the what-if refit such a recipe 12 times per audit.

Equal only while every sample weight is a whole number (a bootstrap's counts): the two searches visit a
node's rows in another order, and sums of whole numbers do not depend on it. With a ``class_weight`` the
weights are fractions, the sums differ in the last bit, and a tie between splits (or a pruning step) can go
the other way: on Adult a forest with ``class_weight="balanced_subsample"``, or a tree with ``"balanced"``
and ``ccp_alpha``, gave other answers on a third to half of the rows. Such a recipe stays sparse.

So the recipe the reference stage and the what-if retrain gets one more step, just before its final tree
model: :class:`DenseForFit`, which hands its input on dense while the pipeline is *fitted* and untouched
when it predicts (predicting a forest on the sparse rows is as fast, and needs no dense copy). It changes
nothing the refit learns, so no figure moves; it is added after the recipe passed the gate, and is never
part of what the report names.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

# Below this share of non-zero entries the sparse search is the faster one (measured, 16,000 rows, 30-tree
# forest, one thread: 12% non-zero 3.84 s sparse / 0.86 s dense; 4.9% 3.60 / 1.47; 3.7% 3.32 / 2.05; 2.5%
# 3.28 / 3.16; 1.4% 3.76 / 7.31). At 5% dense is at least twice as fast.
MIN_DENSITY = 0.05
# A dense copy larger than this stays sparse: the copy must not be what runs a sandboxed refit out of memory.
MAX_DENSE_BYTES = 256 * 2**20

# Final steps whose fits are the same on dense and sparse input (the classifiers' split search is shared).
SAME_SPLITS_DENSE_OR_SPARSE = (
    DecisionTreeClassifier,
    ExtraTreeClassifier,
    RandomForestClassifier,
    ExtraTreesClassifier,
)
STEP_NAME = "mia_dense_for_fit"
# What scikit-learn's trees fit on (sklearn.tree._tree.DTYPE): a float64 copy would be copied again.
DENSE_DTYPE = np.float32


class DenseForFit(TransformerMixin, BaseEstimator):
    """Pass ``X`` on unchanged, except while fitting: a sparse ``X`` (``(n_rows, n_columns)``) with at least
    ``MIN_DENSITY`` non-zero entries and a dense copy of at most ``MAX_DENSE_BYTES`` is handed on dense.

    The copy is float32, the type the trees convert their input to (sparse or dense), so the fit holds one
    dense copy, not a float64 one and the trees' float32 one (three times the memory), and the values the
    trees see are the same. A copy the sandbox's memory limit refuses leaves ``X`` sparse."""

    def fit(self, X, y=None, **fit_params):  # noqa: N803 - scikit-learn's names
        return self

    def transform(self, X):  # noqa: N803
        return X

    def fit_transform(self, X, y=None, **fit_params):  # noqa: N803
        if not sparse.issparse(X) or X.ndim != 2:
            return X
        rows, columns = X.shape
        cells = rows * columns
        if cells == 0 or X.nnz < MIN_DENSITY * cells or cells * DENSE_DTYPE().itemsize > MAX_DENSE_BYTES:
            return X
        try:
            return X.astype(DENSE_DTYPE).toarray()
        except MemoryError:  # the sparse search needs less: let it run
            return X


def with_dense_fit(template: object) -> object:
    """``template`` (an unfitted recipe that passed the gate) with :class:`DenseForFit` before its final step,
    when it is a ``Pipeline`` that ends in one of ``SAME_SPLITS_DENSE_OR_SPARSE`` without a ``class_weight``
    (see the module docstring); otherwise unchanged.

    The step's name is new to the pipeline, and the final step keeps its name, so parameters addressed to it
    (the what-if's ``forest__min_samples_leaf``) reach it as before.
    """
    if type(template) is not Pipeline or len(template.steps) < 2:
        return template
    names = {name for name, _ in template.steps}
    final = template.steps[-1][1]
    if type(final) not in SAME_SPLITS_DENSE_OR_SPARSE or STEP_NAME in names or final.class_weight is not None:
        return template
    steps = [*template.steps[:-1], (STEP_NAME, DenseForFit()), template.steps[-1]]
    return template.set_params(steps=steps)
