"""Reference-model attacks: LiRA (Carlini et al. 2022) and RMIA (Zarifzadeh et al. 2024).

Both compare the target's confidence on a record with the confidence of *reference models*: clones of
the target's own recipe (same class, same hyperparameters) trained on random halves of data the attacker
holds. scikit-learn targets retrain in seconds, which makes these attacks, the strongest known in the
black-box setting, affordable here.

This module is pure arithmetic on confidences: ``target_conf`` is the target's probability of each row's
true label, ``reference_conf[k]`` the same for reference model ``k``, and ``in_mask[k, i]`` says whether row
``i`` was in model ``k``'s training half.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

EPSILON = 1e-6
# Below this many IN (or OUT) models per record, per-record variances are too noisy; LiRA's authors use one
# global variance then (Carlini et al. 2022, section 4.2).
MIN_MODELS_FOR_PER_RECORD_VARIANCE = 16
RMIA_GAMMA = 1.0
# RMIA offline: Pr(x) under IN models is approximated from OUT models as ((1 + a) p_out + (1 - a)) / 2.
RMIA_OFFLINE_A = 0.3


def logit_confidence(confidence: np.ndarray) -> np.ndarray:
    """LiRA's logit scaling, log(p / (1 - p)), which makes confidences roughly Gaussian."""
    p = np.clip(confidence, EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def _masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-record mean and std over the models selected by ``mask`` (K x n), and the pooled global std."""
    counts = mask.sum(axis=0)
    safe = np.maximum(counts, 1)
    mean = np.where(mask, values, 0.0).sum(axis=0) / safe
    deviation = np.where(mask, values - mean, 0.0)
    std = np.sqrt((deviation**2).sum(axis=0) / np.maximum(counts - 1, 1))
    pooled = float(np.sqrt((deviation**2).sum() / max(int(counts.sum()) - int((counts > 0).sum()), 1)))
    return mean, std, max(pooled, 1e-3)


def lira_scores(
    target_conf: np.ndarray,
    reference_conf: np.ndarray,
    in_mask: np.ndarray,
    population: np.ndarray | None = None,
    *,
    online: bool,
) -> np.ndarray:
    """LiRA membership scores (higher = more likely a member). ``population`` is not used (LiRA compares
    each record with its own reference models only); it is there so that every reference attack has the
    registry's one signature.

    Online: log-likelihood ratio of the target's logit confidence under Gaussians fitted to the IN and to
    the OUT reference models of each record. Offline: how far above the OUT Gaussian the target's
    confidence lies (one-sided), needing no model trained on the record.
    """
    observed = logit_confidence(target_conf)
    values = logit_confidence(reference_conf)
    out_mean, out_std, out_pooled = _masked_mean_std(values, ~in_mask)
    per_record = (~in_mask).sum(axis=0).min() >= MIN_MODELS_FOR_PER_RECORD_VARIANCE
    out_scale = np.maximum(out_std, 1e-3) if per_record else out_pooled
    if not online:
        return norm.logcdf(observed, loc=out_mean, scale=out_scale)
    in_mean, in_std, in_pooled = _masked_mean_std(values, in_mask)
    in_scale = np.maximum(in_std, 1e-3) if per_record else in_pooled
    return norm.logpdf(observed, loc=in_mean, scale=in_scale) - norm.logpdf(
        observed, loc=out_mean, scale=out_scale
    )


def rmia_scores(
    target_conf: np.ndarray,
    reference_conf: np.ndarray,
    in_mask: np.ndarray,
    population: np.ndarray,
    *,
    online: bool,
) -> np.ndarray:
    """RMIA scores: the share of population records ``z`` that the record ``x`` dominates.

    ``x`` dominates ``z`` when (Pr(x|target) / Pr(x)) / (Pr(z|target) / Pr(z)) >= gamma, with Pr(.) the
    average confidence of the reference models (online: IN and OUT models alike; offline: OUT models,
    scaled to approximate the IN side). ``population`` indexes the rows used as ``z`` (known non-members).
    """
    if online:
        reference = reference_conf.mean(axis=0)
    else:
        out = ~in_mask
        p_out = np.where(out, reference_conf, 0.0).sum(axis=0) / np.maximum(out.sum(axis=0), 1)
        reference = 0.5 * ((1 + RMIA_OFFLINE_A) * p_out + (1 - RMIA_OFFLINE_A))
    ratio = np.clip(target_conf, EPSILON, 1) / np.clip(reference, EPSILON, None)
    population_ratio = np.sort(ratio[population])
    # Counting z with ratio_z <= ratio_x / gamma by binary search keeps this O(n log n), not O(n * |Z|).
    return np.searchsorted(population_ratio, ratio / RMIA_GAMMA, side="right") / len(population_ratio)


def balanced_in_mask(n_models: int, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """A (K x n) mask putting every row in exactly half of the K reference models (K even)."""
    mask = np.zeros((n_models, n_rows), dtype=bool)
    order = np.argsort(rng.random((n_models, n_rows)), axis=0)
    mask[order[: n_models // 2], np.arange(n_rows)] = True
    return mask


def seeded_in_mask(n_models: int, n_rows: int, seed: int) -> np.ndarray:
    """:func:`balanced_in_mask` from the audit's ``seed``: the halves the reference stage shares across repeats,
    which the what-if's baseline reuses (same rows, same models)."""
    return balanced_in_mask(n_models, n_rows, np.random.default_rng([seed, 7919]))
