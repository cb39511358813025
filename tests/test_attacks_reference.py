"""attacks/reference.py on synthetic confidences: LiRA and RMIA rank members first, a constant signal gives
chance, and the IN/OUT mask puts every record in half of the reference models."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mia_robustness.attacks.reference import (
    MIN_MODELS_FOR_PER_RECORD_VARIANCE,
    balanced_in_mask,
    lira_scores,
    logit_confidence,
    rmia_scores,
)

N_MODELS, N = 8, 400
IS_MEMBER = np.repeat([1, 0], N // 2)
POPULATION = np.flatnonzero(IS_MEMBER == 0)[:100]  # known non-members, RMIA's reference records z


def confidences(n_models: int = N_MODELS, seed: int = 0):
    """(target, reference, in_mask): each record has a hardness shared by every model, and a model trained
    on a record is 1.5 logits more confident on it."""
    rng = np.random.default_rng(seed)
    in_mask = balanced_in_mask(n_models, N, rng)
    difficulty = rng.normal(0, 1, N)
    reference = 1 / (1 + np.exp(-(difficulty + 1.5 * in_mask + rng.normal(0, 0.3, (n_models, N)))))
    target = 1 / (1 + np.exp(-(difficulty + 1.5 * IS_MEMBER + rng.normal(0, 0.3, N))))
    return target, reference, in_mask


def both(target, reference, in_mask, online):
    return {
        "lira": lira_scores(target, reference, in_mask, online=online),
        "rmia": rmia_scores(target, reference, in_mask, POPULATION, online=online),
    }


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
def test_lira_and_rmia_rank_members_first(online):
    target, reference, in_mask = confidences()
    for name, scores in both(target, reference, in_mask, online).items():
        assert roc_auc_score(IS_MEMBER, scores) > 0.85, name
    # the raw confidence is blurred by per-record difficulty; calibrating on references removes it
    assert roc_auc_score(IS_MEMBER, target) < roc_auc_score(
        IS_MEMBER, lira_scores(target, reference, in_mask, online=True)
    )


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
def test_a_constant_signal_gives_chance(online):
    _, _, in_mask = confidences()
    target, reference = np.full(N, 0.8), np.full((N_MODELS, N), 0.8)
    for name, scores in both(target, reference, in_mask, online).items():
        assert np.isfinite(scores).all(), name
        assert roc_auc_score(IS_MEMBER, scores) == pytest.approx(0.5), name


def test_rmia_scores_are_shares_of_the_population():
    target, reference, in_mask = confidences()
    scores = rmia_scores(target, reference, in_mask, POPULATION, online=True)
    assert ((scores >= 0) & (scores <= 1)).all()
    # the population records themselves: ranks among themselves, so their scores spread evenly over (0, 1]
    own = np.sort(scores[POPULATION])
    np.testing.assert_allclose(own, np.arange(1, len(POPULATION) + 1) / len(POPULATION))


def test_lira_uses_per_record_variances_only_with_enough_models():
    """With few models a record's own spread is noise: one pooled spread instead (Carlini et al. 4.2)."""
    target, reference, in_mask = confidences(n_models=2 * MIN_MODELS_FOR_PER_RECORD_VARIANCE)
    many = lira_scores(target, reference, in_mask, online=False)
    assert roc_auc_score(IS_MEMBER, many) > 0.85
    # offline with a pooled spread is a monotone function of (observed - OUT mean) per record; per-record
    # spreads re-weigh records, so the two rankings differ
    few_target, few_reference, few_mask = confidences(n_models=4)
    pooled = lira_scores(few_target, few_reference, few_mask, online=False)
    observed = logit_confidence(few_target)
    out_mean = np.where(~few_mask, logit_confidence(few_reference), 0).sum(axis=0) / (~few_mask).sum(axis=0)
    np.testing.assert_array_equal(
        np.argsort(pooled, kind="stable"), np.argsort(observed - out_mean, kind="stable")
    )


def test_balanced_in_mask():
    mask = balanced_in_mask(6, 50, np.random.default_rng(3))
    assert mask.shape == (6, 50) and mask.dtype == bool
    assert (mask.sum(axis=0) == 3).all()  # every record in exactly half of the models
    assert len({tuple(column) for column in mask.T}) > 1  # not the same half for every record
    np.testing.assert_array_equal(mask, balanced_in_mask(6, 50, np.random.default_rng(3)))


def test_logit_confidence_is_finite_at_zero_and_one():
    values = logit_confidence(np.array([0.0, 0.5, 1.0]))
    assert np.isfinite(values).all() and values[1] == 0 and values[0] < -10
    assert values[0] == pytest.approx(-values[2])  # clipped symmetrically
