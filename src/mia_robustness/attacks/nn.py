"""Neural-network attack: a PyTorch MLP over all signals, early-stopped on a validation slice.

The MLP sees the one-hot true label and the probability signals in one input layer, so it can learn
their interaction (a label branch and a prediction branch added without interaction, as in IBM ART, stay
at chance on decision trees).
"""

from __future__ import annotations

import numpy as np

from ..errors import DeviceError
from .base import AttackInput, AttackOutput

HIDDEN_UNITS = (64, 32)
BATCH_SIZE = 256
MAX_EPOCHS = 200
PATIENCE = 10
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
VALIDATION_FRACTION = 0.15


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was requested but no CUDA GPU is available here; use --device auto or cpu", code="device_unavailable")
    return requested


def fit_score_nn(
    train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int, device: str = "cpu"
) -> AttackOutput:
    """Train the MLP on ``train`` and score ``evaluation``; deterministic for a given seed on one device."""
    import torch
    from torch import nn

    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(int(seed))
    features = train.features.astype(np.float32)
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-6] = 1.0

    order = rng.permutation(len(features))
    n_validation = max(1, int(round(VALIDATION_FRACTION * len(features))))
    validation_rows, fit_rows = order[:n_validation], order[n_validation:]

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((values - mean) / scale).astype(np.float32)).to(device)

    x_fit, x_val = tensor(features[fit_rows]), tensor(features[validation_rows])
    y_all = torch.from_numpy(is_member.astype(np.float32)).to(device)
    y_fit, y_val = y_all[torch.from_numpy(fit_rows).to(device)], y_all[torch.from_numpy(validation_rows).to(device)]

    layers: list[nn.Module] = []
    width = features.shape[1]
    for units in HIDDEN_UNITS:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, 1))
    # Initialise from our own generator (PyTorch's default init reads the global RNG, which other
    # threads may be using).
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / np.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
    model = nn.Sequential(*layers).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.BCEWithLogitsLoss()

    best_loss, best_state, stale = float("inf"), None, 0
    n_fit = len(fit_rows)
    for _epoch in range(MAX_EPOCHS):
        model.train()
        permutation = torch.randperm(n_fit, generator=generator).to(device)
        for start in range(0, n_fit, BATCH_SIZE):
            batch = permutation[start : start + BATCH_SIZE]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_fit[batch]).squeeze(1), y_fit[batch])
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            validation_loss = float(loss_fn(model(x_val).squeeze(1), y_val))
        if validation_loss < best_loss - 1e-4:
            best_loss, stale = validation_loss, 0
            best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(tensor(evaluation.features.astype(np.float32))).squeeze(1)).cpu().numpy().astype(np.float64)
    return AttackOutput(scores=scores, predicted_member=scores >= 0.5, device=device)
