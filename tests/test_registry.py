"""The attack registry: every table the audit uses comes from it, so one entry adds an attack everywhere."""

from __future__ import annotations

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from builders import TINY, noisy_numeric_frame, split_fit, write_bundle
from mia_robustness import audit
from mia_robustness.attacks import ATTACK_DESCRIPTIONS, KNOWLEDGE, REGISTRY, AttackOutput, AttackSpec, Variant
from mia_robustness.attacks.registry import KNOWN_ROWS
from mia_robustness.options import options_from_mapping


def fit_score_loss_rank(train, is_member, evaluation, *, seed, device):
    """A new attack for the test: members are the rows with the lowest loss, cut at the known members' median."""
    del seed, device
    cut = np.median(train.signal_scores["neg_loss"][is_member == 1])
    scores = evaluation.signal_scores["neg_loss"]
    return AttackOutput(scores=scores, predicted_member=scores >= cut, device="cpu", detail="median cut")


def test_one_registry_entry_adds_an_attack_to_options_sweep_and_report(tmp_path, monkeypatch):
    spec = AttackSpec(
        "loss_rank",
        "learned",
        fit_score_loss_rank,
        KNOWN_ROWS,
        cost_rank=5,
        uses_device=False,
        variants=(Variant("loss_rank", "members are the rows with the lowest loss"),),
    )
    monkeypatch.setitem(REGISTRY, "loss_rank", spec)
    assert options_from_mapping({"attack_models": "loss_rank"}).attack_models == ("loss_rank",)
    assert ATTACK_DESCRIPTIONS["loss_rank"] == "members are the rows with the lowest loss"
    assert KNOWLEDGE["loss_rank"] == KNOWN_ROWS

    model, members, non_members = split_fit(
        noisy_numeric_frame(600, seed=5), DecisionTreeClassifier(random_state=0)
    )
    bundle = write_bundle(tmp_path, model, members, non_members)
    # In this process: the bundle is the test's own, and the learned attacks run in the audit's process
    # whether or not the model is in a sandbox child.
    report = audit(bundle, TINY | {"attack_models": "loss_rank,threshold"}, sandbox=False)
    rows = {(row.attack_model, row.proportion) for row in report.results}
    assert rows == {("loss_rank", 0.5), ("loss_rank", 1.0), ("threshold", 0.5), ("threshold", 1.0)}
    loss_rank = report.result("loss_rank", 1.0)
    assert loss_rank.knowledge == KNOWN_ROWS
    # A fully grown tree is right on every member and often wrong on non-members: the loss separates them.
    assert loss_rank.mean["auc"] > 0.6


def test_every_report_row_has_a_description_and_knowledge():
    for spec in REGISTRY.values():
        assert spec.kind in ("learned", "reference") and callable(spec.function)
        for variant in spec.variants:
            assert ATTACK_DESCRIPTIONS[variant.name] and KNOWLEDGE[variant.name] == spec.knowledge
    assert [name for name, spec in REGISTRY.items() if spec.uses_device] == ["nn"]
