"""attacks/nn.py on synthetic arrays: the PyTorch MLP finds separable members, stays at chance on a constant
signal, repeats itself for a seed, and the device is resolved or refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from builders import attack_data, fit_and_score
from mia_robustness.attacks.nn import fit_score_nn, resolve_device
from mia_robustness.errors import DeviceError

torch = pytest.importorskip("torch")


def test_separable_members_are_found():
    inputs, is_member = attack_data()
    output, auc = fit_and_score(fit_score_nn, inputs, is_member, device="cpu")
    assert auc > 0.85, auc
    assert output.device == "cpu" and output.detail.endswith(" steps")
    assert ((output.scores > 0) & (output.scores < 1)).all()
    assert (output.predicted_member == is_member[1::2]).mean() > 0.75


def test_a_constant_signal_gives_chance():
    inputs, is_member = attack_data(constant=True)
    output, auc = fit_and_score(fit_score_nn, inputs, is_member, device="cpu")
    assert auc == pytest.approx(0.5)
    assert np.ptp(output.scores) == 0


def test_the_same_seed_gives_the_same_scores():
    inputs, is_member = attack_data(100)
    first, _ = fit_and_score(fit_score_nn, inputs, is_member, seed=5, device="cpu")
    again, _ = fit_and_score(fit_score_nn, inputs, is_member, seed=5, device="cpu")
    np.testing.assert_array_equal(first.scores, again.scores)


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(DeviceError) as caught:
            resolve_device("cuda")
        assert caught.value.code == "device_unavailable" and "--device auto or cpu" in caught.value.message
