"""attacks/nn.py on synthetic arrays: the PyTorch MLP finds separable members, stays at chance on a constant
signal, repeats itself for a seed, and the device is resolved or refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from builders import at_chance_on_a_constant_signal, attack_data, fit_and_score, separates
from mia_robustness.attacks.nn import fit_score_nn, resolve_device
from mia_robustness.errors import DeviceError

torch = pytest.importorskip("torch")


def test_separable_members_are_found():
    output = separates(fit_score_nn, device="cpu")
    assert output.device == "cpu" and output.detail.endswith(" steps")
    assert ((output.scores > 0) & (output.scores < 1)).all()


def test_a_constant_signal_gives_chance():
    at_chance_on_a_constant_signal(fit_score_nn, device="cpu")


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
