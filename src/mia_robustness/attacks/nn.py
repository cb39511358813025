"""Neural-network attack: a PyTorch MLP over all signals, early-stopped on a validation slice.

The MLP sees the one-hot true label and the probability signals in one input layer, so it can learn
their interaction (a label branch and a prediction branch added without interaction, as in IBM ART, stay
at chance on decision trees).

Speed without changing what is learned: identical (signal vector, membership) rows are merged into one
row weighted by its count, so the weighted loss is exactly the loss over the attacker's rows; targets
that output few distinct probability vectors (trees, forests: a 100-tree forest gives at most 101 per
class) then train on a few hundred rows however many the attacker knows. Batches are large (the loss
surface is low-dimensional, so large batches converge in few steps), and training stops once the
validation loss stops improving. Evaluation rows are scored once per distinct row too.
"""

from __future__ import annotations

import numpy as np

from ..errors import DeviceError
from .base import AttackInput, AttackOutput, distinct_rows, merge_duplicates

HIDDEN_UNITS = (64, 32)
BATCH_SIZE = 2048  # distinct rows per step
MIN_STEPS_PER_ROUND = 10  # steps between validation checks when one epoch is a single full batch
MAX_ROUNDS = 100
MAX_STEPS = 3000
PATIENCE = 8  # rounds without a better validation loss before stopping
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 1e-4
VALIDATION_FRACTION = 0.15


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "device 'cuda' was requested but no CUDA GPU is available here; use --device auto or cpu",
            code="device_unavailable",
        )
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

    # The validation slice is drawn from the attacker's rows before merging, as if rows were never merged.
    order = rng.permutation(len(features))
    n_validation = max(1, int(round(VALIDATION_FRACTION * len(features))))
    validation_rows, fit_rows = order[:n_validation], order[n_validation:]

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((values - mean) / scale).astype(np.float32)).to(device)

    fit_x, fit_y, fit_w = merge_duplicates(features[fit_rows], is_member[fit_rows])
    val_x, val_y, val_w = merge_duplicates(features[validation_rows], is_member[validation_rows])
    x_fit, y_fit, w_fit = (
        tensor(fit_x),
        torch.from_numpy(fit_y).to(device),
        torch.from_numpy(fit_w).to(device),
    )
    x_val, y_val, w_val = (
        tensor(val_x),
        torch.from_numpy(val_y).to(device),
        torch.from_numpy(val_w).to(device),
    )

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

    def weighted_loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        losses = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y, reduction="none")
        return (losses * w).sum() / w.sum()

    n_fit = len(x_fit)
    full_batch = n_fit <= BATCH_SIZE
    steps_per_round = max(MIN_STEPS_PER_ROUND, -(-n_fit // BATCH_SIZE))
    best_loss, best_state, stale, steps = float("inf"), None, 0, 0
    permutation, cursor = None, n_fit
    for _round in range(MAX_ROUNDS):
        model.train()
        for _step in range(steps_per_round):
            if full_batch:
                batch_x, batch_y, batch_w = x_fit, y_fit, w_fit
            else:
                if cursor >= n_fit:
                    permutation, cursor = torch.randperm(n_fit, generator=generator).to(device), 0
                batch = permutation[cursor : cursor + BATCH_SIZE]
                cursor += BATCH_SIZE
                batch_x, batch_y, batch_w = x_fit[batch], y_fit[batch], w_fit[batch]
            optimiser.zero_grad(set_to_none=True)
            weighted_loss(batch_x, batch_y, batch_w).backward()
            optimiser.step()
        steps += steps_per_round
        model.eval()
        with torch.no_grad():
            validation_loss = float(weighted_loss(x_val, y_val, w_val))
        if validation_loss < best_loss - 1e-5:
            best_loss, stale = validation_loss, 0
            best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        else:
            stale += 1
        if stale >= PATIENCE or steps >= MAX_STEPS:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    eval_features = evaluation.features.astype(np.float32)
    first, inverse = distinct_rows(eval_features)
    with torch.no_grad():
        distinct_scores = (
            torch.sigmoid(model(tensor(eval_features[first])).squeeze(1)).cpu().numpy().astype(np.float64)
        )
    scores = distinct_scores[inverse]
    return AttackOutput(scores=scores, predicted_member=scores >= 0.5, device=device, detail=f"{steps} steps")
