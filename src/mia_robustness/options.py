"""Audit options: one typed, validated object built once by each shell and passed down.

Options reach the audit from CLI flags, a bundle's ``config.json``, the SageMaker custom-attributes
header or training-job hyperparameters. All of them go through :func:`options_from_mapping`, which
accepts the CLI's names (``attack_models`` or ``attack-models``) with native JSON values or strings, and
rejects unknown names and bad values with an :class:`~mia_robustness.errors.OptionsError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionsError

LEARNED_ATTACKS = ("nn", "rf", "gb", "threshold", "class_threshold")
REFERENCE_ATTACKS = ("lira", "rmia")
ATTACK_MODELS = LEARNED_ATTACKS + REFERENCE_ATTACKS
DEFAULT_ATTACK_MODELS = ATTACK_MODELS
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_PROPORTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MAX_REPEATS = 20


@dataclass(frozen=True)
class AuditOptions:
    """Everything that decides what an audit does. Same bundle + same options = same report.

    Attributes
    ----------
    proportions:
        Shares of the attacker-knowledge member pool the attacker knows, each in (0, 1].
    attack_models:
        Attack models to run: ``nn`` (PyTorch MLP), ``rf`` (random forest), ``gb`` (histogram gradient
        boosting), ``threshold`` (best single-signal threshold), ``class_threshold`` (one threshold per
        class), and the reference-model attacks ``lira`` and ``rmia`` (each reported online and offline).
    repeats:
        Independent repetitions with different seeds; the report gives mean and standard deviation.
    seed:
        Root seed; every random choice in the audit derives from it.
    device:
        Where the ``nn`` attack trains: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    label_column:
        Name of the label column; ``None`` means ``label``, ``target``, ``class`` or ``y``, else the last.
    eval_fraction:
        Share of members and of non-members held out as the fixed evaluation set, in [0.1, 0.5].
    reference_models:
        Clones of the target trained per repeat for ``lira`` and ``rmia`` (even, 2 to 64); each record is
        in exactly half of them.
    """

    proportions: tuple[float, ...] = DEFAULT_PROPORTIONS
    attack_models: tuple[str, ...] = DEFAULT_ATTACK_MODELS
    repeats: int = 3
    seed: int = 0
    device: str = "auto"
    label_column: str | None = None
    eval_fraction: float = 0.3
    reference_models: int = 4
    # Not an option a user sets: names of the options that were set explicitly, for the report.
    explicit: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (the names a user passes back to reproduce the audit)."""
        values = {name: getattr(self, name) for name in OPTION_NAMES}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(AuditOptions) if f.name != "explicit")


def _as_list(name: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        items = [item.strip() for item in value.replace(";", ",").split(",")]
        return [item for item in items if item]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise OptionsError(f"option {name!r} must be a comma-separated list, got {value!r}")


def _parse_proportions(value: Any) -> tuple[float, ...]:
    items = _as_list("proportions", value)
    if not items:
        raise OptionsError("option 'proportions' is empty: give shares in (0, 1], e.g. 0.1,0.5,1")
    numbers = []
    for item in items:
        try:
            numbers.append(float(item))
        except (TypeError, ValueError):
            raise OptionsError(
                f"option 'proportions' has {item!r}, not a number: give shares in (0, 1]"
            ) from None
    # The replaced product spoke in percentages (10, 20, ..., 100): accept them when every value is one.
    if all(1 < number <= 100 for number in numbers):
        numbers = [number / 100.0 for number in numbers]
    result = []
    for item, number in zip(items, numbers, strict=True):
        if not (0 < number <= 1):
            raise OptionsError(
                f"option 'proportions' has {item!r}: each share must be in (0, 1] (or all in percent)"
            )
        result.append(round(number, 6))
    return tuple(sorted(set(result)))


def _parse_attack_models(value: Any) -> tuple[str, ...]:
    items = [str(item).strip().lower() for item in _as_list("attack_models", value)]
    if not items:
        raise OptionsError(f"option 'attack_models' is empty: choose from {', '.join(ATTACK_MODELS)}")
    unknown = [item for item in items if item not in ATTACK_MODELS]
    if unknown:
        raise OptionsError(
            f"option 'attack_models' has unknown model {unknown[0]!r}: choose from {', '.join(ATTACK_MODELS)}"
        )
    return tuple(dict.fromkeys(items))


def _parse_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise OptionsError(f"option {name!r} must be an integer, got {value!r}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise OptionsError(f"option {name!r} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise OptionsError(f"option {name!r} must be between {low} and {high}, got {number}")
    return number


def _parse_float(name: str, value: Any, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionsError(f"option {name!r} must be a number, got {value!r}") from None
    if not (low <= number <= high):
        raise OptionsError(f"option {name!r} must be between {low} and {high}, got {value!r}")
    return number


def _parse_reference_models(value: Any) -> int:
    number = _parse_int("reference_models", value, 2, 64)
    if number % 2:
        raise OptionsError(
            f"option 'reference_models' must be even (each record is in half of them), got {number}"
        )
    return number


def _parse_device(value: Any) -> str:
    device = str(value).strip().lower()
    if device not in DEVICES:
        raise OptionsError(f"option 'device' must be one of {', '.join(DEVICES)}, got {value!r}")
    return device


def _parse_label_column(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


_PARSERS = {
    "proportions": _parse_proportions,
    "attack_models": _parse_attack_models,
    "repeats": lambda v: _parse_int("repeats", v, 1, MAX_REPEATS),
    "seed": lambda v: _parse_int("seed", v, 0, 2**32 - 1),
    "device": _parse_device,
    "label_column": _parse_label_column,
    "eval_fraction": lambda v: _parse_float("eval_fraction", v, 0.1, 0.5),
    "reference_models": _parse_reference_models,
}


def normalize_name(name: str) -> str:
    """``--attack-models``, ``attack-models`` and ``attack_models`` all name the same option."""
    return str(name).strip().lstrip("-").replace("-", "_").lower()


def options_from_mapping(values: Mapping[str, Any] | None, base: AuditOptions | None = None) -> AuditOptions:
    """Validate ``values`` (option name -> value) and lay them over ``base`` (defaults when ``None``).

    Values may be native (lists, numbers) or strings as they come from headers and hyperparameters.
    ``None`` values are ignored, so a shell can pass every flag it has.
    """
    base = base or AuditOptions()
    if values is None:
        return base
    if not isinstance(values, Mapping):
        raise OptionsError("audit options must be a JSON object of option names to values")
    changes: dict[str, Any] = {}
    for raw_name, value in values.items():
        name = normalize_name(raw_name)
        if name not in _PARSERS:
            raise OptionsError(f"unknown option {raw_name!r}: valid options are {', '.join(OPTION_NAMES)}")
        if value is None:
            continue
        changes[name] = _PARSERS[name](value)
    explicit = tuple(dict.fromkeys(base.explicit + tuple(changes)))
    return dataclasses.replace(base, **changes, explicit=explicit)


def parse_key_value_pairs(text: str) -> dict[str, str]:
    """Parse ``key=value;key=value`` (the SageMaker custom-attributes header) into a dict.

    Commas inside a value are kept (``proportions=0.1,0.5``). Raises ``OptionsError`` on a pair without
    ``=``.
    """
    result: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionsError(f"custom attribute {pair.strip()!r} is not of the form key=value")
        result[key.strip()] = value.strip()
    return result
