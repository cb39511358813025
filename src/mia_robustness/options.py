"""Audit options: one typed, validated object built once by each shell and passed down.

Options reach the audit from CLI flags, a bundle's ``config.json``, the SageMaker custom-attributes
header or training-job hyperparameters. All of them go through :func:`options_from_mapping`, which
accepts the CLI's names (``attack_models`` or ``attack-models``) with native JSON values or strings, and
rejects unknown names and bad values with an :class:`~mia_robustness.errors.OptionsError`.

The options that set the audit's cost are bounded, so no option set can ask for unbounded work: at most
``MAX_PROPORTIONS`` (20) distinct proportions, ``MAX_REPEATS`` (20) repeats and ``MAX_REFERENCE_MODELS``
(64) reference models. With the seven attack models that is at most 20 x 5 x 20 = 2,000 learned-attack
fits and 20 x 64 = 1,280 reference-model trainings. :class:`AuditOptions` checks these bounds on
construction too, so an options object built in code cannot bypass them.

JSON text that carries options (``config.json``, and for the other shells ``hyperparameters.json`` or a
header) is parsed by :func:`~mia_robustness.json_config.load_json_config`. Error messages quote a user's value
only through :func:`shown` (cut short, escaped).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .attacks.registry import ATTACK_NAMES, attack_names
from .errors import OptionsError
from .json_config import load_json_config, shown

ATTACK_MODELS = ATTACK_NAMES
DEFAULT_ATTACK_MODELS = ATTACK_NAMES
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_PROPORTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Cost bounds: every proportion runs every learned attack once per repeat; the reference stage trains
# reference_models clones of the target, once (shared by the repeats) or, below proportion 1, per repeat.
MAX_PROPORTIONS = 20
MAX_REPEATS = 20
MIN_REFERENCE_MODELS = 2
MAX_REFERENCE_MODELS = 64
# The boundary attack queries the target this many times per audited row, on perturbed copies.
DEFAULT_BOUNDARY_QUERIES = 8
MAX_BOUNDARY_QUERIES = 256
# A list option's raw items (before duplicates are dropped) are capped too, so parsing stays cheap.
MAX_LIST_ITEMS = 200


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
        class), the label-only attacks ``gap`` and ``boundary``, and the reference-model attacks ``lira``
        and ``rmia`` (each reported online and offline). Attacks the target's output kind cannot feed are
        left out when not named explicitly.
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
        Clones of the target trained for ``lira`` and ``rmia`` (even, 2 to 64), one set shared by every
        repeat whose attacker holds the same rows (``reference.plan_fit_sets``), else one per repeat; each record is
        in exactly half of them.
    allow_swapped:
        Audit even when the target scores non-members far better than members (the tables look swapped:
        ``sanity.check_swap``); the report still warns.
    what_if:
        The remediation what-if (``remediation/``): ``True`` runs it, ``False`` never, ``None`` (the
        default) runs it when the audit's reference attacks (lira / rmia) run, whose size rule it shares.
    utility_budget:
        Accuracy the recommended variant may give up, in percentage points (1.0 = one point), 0 to 50.
    boundary_queries:
        Perturbed copies of each audited row the ``boundary`` attack asks the target about (1 to 256);
        its cost is this many extra passes of the target over every row.
    classes:
        For a native XGBoost / LightGBM / CatBoost model file (whose classes are ``0..K-1``), the class
        names in that order, as the label column holds them, and for an ONNX graph that names no classes
        (one exported from PyTorch), its classes in output order; ``None`` keeps the indices.
    reference_recipe:
        A recipe for the reference attacks and the what-if, instead of the model's own (or for a model
        that has none): a classifier class name and plain JSON parameters (:class:`ReferenceRecipe`).

    Construction checks the cost bounds (at most 20 proportions, 1 to 20 repeats, an even 2 to 64
    reference models) with the same errors as :func:`options_from_mapping`; it does not normalise values.
    """

    proportions: tuple[float, ...] = DEFAULT_PROPORTIONS
    attack_models: tuple[str, ...] = DEFAULT_ATTACK_MODELS
    repeats: int = 3
    seed: int = 0
    device: str = "auto"
    label_column: str | None = None
    eval_fraction: float = 0.3
    reference_models: int = 4
    allow_swapped: bool = False
    what_if: bool | None = None
    utility_budget: float = 1.0
    boundary_queries: int = DEFAULT_BOUNDARY_QUERIES
    classes: tuple[str | int, ...] | None = None
    reference_recipe: ReferenceRecipe | None = None
    # Not an option a user sets: names of the options that were set explicitly, for the report.
    explicit: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_proportion_count(len(set(self.proportions)))
        _PARSERS["repeats"](self.repeats)
        _PARSERS["reference_models"](self.reference_models)
        _PARSERS["utility_budget"](self.utility_budget)
        _PARSERS["boundary_queries"](self.boundary_queries)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (the names a user passes back to reproduce the audit)."""
        values = {name: getattr(self, name) for name in OPTION_NAMES}
        if self.reference_recipe is not None:
            values["reference_recipe"] = self.reference_recipe.to_dict()
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


@dataclass(frozen=True)
class ReferenceRecipe:
    """``reference_recipe``: a class name (checked where the recipe is built, ``recipe_spec.py``) and its
    parameters as (name, value) pairs of plain JSON values (lists as tuples), sorted by name."""

    estimator: str
    params: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as ``config.json`` gives it."""
        return {"estimator": self.estimator, "params": {k: _plain_json(v) for k, v in self.params}}


def _plain_json(value: Any) -> Any:
    return [_plain_json(v) for v in value] if isinstance(value, tuple) else value


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(AuditOptions) if f.name != "explicit")


def _as_list(name: str, value: Any, hint: str = "give each value once") -> list[Any]:
    if isinstance(value, str):
        items = [item.strip() for item in value.replace(";", ",").split(",")]
        items = [item for item in items if item]
    elif isinstance(value, (list, tuple)):
        items = list(value[: MAX_LIST_ITEMS + 1])
    else:
        raise OptionsError(f"option {name!r} must be a comma-separated list, got {shown(value)}")
    if len(items) > MAX_LIST_ITEMS:
        raise OptionsError(
            f"option {name!r} has more than {MAX_LIST_ITEMS} values; {hint}",
            code="too_many_values",
        )
    return items


_PROPORTIONS_HINT = f"give at most {MAX_PROPORTIONS} distinct shares in (0, 1], e.g. 0.1,0.25,0.5,1"


def _check_proportion_count(count: int) -> None:
    if count > MAX_PROPORTIONS:
        raise OptionsError(
            f"option 'proportions' has {count} distinct shares, over the limit of {MAX_PROPORTIONS} (every "
            f"share reruns every attack for every repeat); {_PROPORTIONS_HINT}",
            code="too_many_values",
        )


def _parse_proportions(value: Any) -> tuple[float, ...]:
    items = _as_list("proportions", value, _PROPORTIONS_HINT)
    if not items:
        raise OptionsError("option 'proportions' is empty: give shares in (0, 1], e.g. 0.1,0.5,1")
    numbers = []
    for item in items:
        try:
            numbers.append(float(item))
        except (TypeError, ValueError, OverflowError):
            raise OptionsError(
                f"option 'proportions' has {shown(item)}, not a number: give shares in (0, 1], e.g. 0.1,0.5,1"
            ) from None
    # The replaced product spoke in percentages (10, 20, ..., 100): accept them when every value is one.
    if all(1 < number <= 100 for number in numbers):
        numbers = [number / 100.0 for number in numbers]
    result = []
    for item, number in zip(items, numbers, strict=True):
        if not (0 < number <= 1):
            raise OptionsError(
                f"option 'proportions' has {shown(item)}: each share must be in (0, 1] (or all in percent)"
            )
        result.append(round(number, 6))
    distinct = sorted(set(result))
    _check_proportion_count(len(distinct))
    return tuple(distinct)


def _parse_attack_models(value: Any) -> tuple[str, ...]:
    items = [str(item).strip().lower() for item in _as_list("attack_models", value)]
    if not items:
        raise OptionsError(f"option 'attack_models' is empty: choose from {', '.join(attack_names())}")
    unknown = [item for item in items if item not in attack_names()]
    if unknown:
        raise OptionsError(
            f"option 'attack_models' has unknown model {shown(unknown[0])}: choose from {', '.join(attack_names())}"
        )
    return tuple(dict.fromkeys(items))


def _parse_int(name: str, value: Any, low: int, high: int, why: str = "") -> int:
    """An integer in [low, high]; ``why`` (e.g. " (each repeat reruns every attack)") explains the bound."""
    if isinstance(value, bool):
        raise OptionsError(f"option {name!r} must be an integer from {low} to {high}, got {shown(value)}")
    try:
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip()
            if len(text) > 30:  # int() of thousands of digits is slow, and over 4,300 raises
                raise ValueError(text)
            number = int(text)
    except (TypeError, ValueError, OverflowError):
        raise OptionsError(
            f"option {name!r} must be an integer from {low} to {high}, got {shown(value)}"
        ) from None
    if not low <= number <= high:
        limit = f"over the limit of {high}" if number > high else f"under the minimum of {low}"
        raise OptionsError(
            f"option {name!r} is {shown(number)}, {limit}{why}; give an integer from {low} to {high}"
        )
    return number


def _parse_float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise OptionsError(f"option {name!r} must be a number from {low} to {high}, got {shown(value)}")
    try:
        number = float(value if not isinstance(value, str) or len(value) <= 100 else "not a number")
    except (TypeError, ValueError, OverflowError):
        raise OptionsError(
            f"option {name!r} must be a number from {low} to {high}, got {shown(value)}"
        ) from None
    if not (low <= number <= high):
        raise OptionsError(f"option {name!r} must be between {low} and {high}, got {shown(value)}")
    return number


def _parse_reference_models(value: Any) -> int:
    number = _parse_int(
        "reference_models",
        value,
        MIN_REFERENCE_MODELS,
        MAX_REFERENCE_MODELS,
        " (each one retrains the target model once, or once per repeat when they cannot be shared)",
    )
    if number % 2:
        raise OptionsError(
            f"option 'reference_models' must be even (each record is in half of them), got {number}; give "
            f"an even number from {MIN_REFERENCE_MODELS} to {MAX_REFERENCE_MODELS}"
        )
    return number


def _parse_device(value: Any) -> str:
    device = str(value).strip().lower()
    if device not in DEVICES:
        raise OptionsError(f"option 'device' must be one of {', '.join(DEVICES)}, got {shown(value)}")
    return device


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _parse_bool(name: str, value: Any) -> bool:
    """``true`` / ``false`` as JSON gives them, or as text from a header or flag (1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise OptionsError(f"option {name!r} must be true or false, got {shown(value)}")


def _parse_what_if(value: Any) -> bool | None:
    """``true`` / ``false``, or ``auto`` (the default: run it where the reference attacks run)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:  # every spelling allow_swapped takes, the JSON numbers 1 and 0 included
        return _parse_bool("what_if", value)
    except OptionsError:
        raise OptionsError(f"option 'what_if' must be true, false or auto, got {shown(value)}") from None


def _parse_label_column(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_RECIPE_EXAMPLE = '{"estimator": "XGBClassifier", "params": {"max_depth": 4}}'
MAX_RECIPE_PARAMS = 100


def _parse_classes(value: Any) -> tuple[str | int, ...]:
    """Class names, in the order of the model's class indices: distinct text or integers, at least two."""
    items = _as_list("classes", value, "list each class of the model once")
    if isinstance(value, str):
        items = [int(item) if re.fullmatch(r"-?\d{1,18}", item) else item for item in items]
    if len(items) < 2:
        raise OptionsError(
            "option 'classes' needs at least two class names, in the order of the model's classes"
        )
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or (isinstance(item, str) and not item):
            raise OptionsError(
                f"option 'classes' has {shown(item)}: each class is a label text or an integer"
            )
    if len(set(items)) != len(items):
        raise OptionsError("option 'classes' names a class twice; list each class of the model once")
    return tuple(items)


def _plain_parameter(name: str, value: Any, depth: int = 0) -> Any:
    finite = not isinstance(value, float) or math.isfinite(value)
    if finite and (value is None or isinstance(value, (bool, int, float, str))):
        return value
    if isinstance(value, (list, tuple)) and depth < 2 and len(value) <= MAX_LIST_ITEMS:
        return tuple(_plain_parameter(name, item, depth + 1) for item in value)
    raise OptionsError(
        f"option 'reference_recipe' gives {shown(name)} a value that is not a finite number, text, true/false, "
        f"null or short list; e.g. {_RECIPE_EXAMPLE}"
    )


def _parse_reference_recipe(value: Any) -> ReferenceRecipe:
    """``{"estimator": name, "params": {...}}``, its JSON text, or a bare class name (no parameters)."""
    if isinstance(value, str):
        value = (
            load_json_config(value, "option 'reference_recipe'")
            if value.lstrip()[:1] == "{"
            else {"estimator": value}
        )
    if not isinstance(value, Mapping) or set(value) - {"estimator", "params"} or "estimator" not in value:
        raise OptionsError(f"option 'reference_recipe' must be an object like {_RECIPE_EXAMPLE}")
    estimator, params = value["estimator"], value.get("params") or {}
    if not isinstance(estimator, str) or not _CLASS_NAME.match(estimator) or len(estimator) > 200:
        raise OptionsError(
            f"option 'reference_recipe' names {shown(estimator)}, not a class name such as XGBClassifier"
        )
    names_ok = isinstance(params, Mapping) and len(params) <= MAX_RECIPE_PARAMS
    if not names_ok or not all(isinstance(n, str) and re.fullmatch(r"[A-Za-z_]\w{0,100}", n) for n in params):
        raise OptionsError(
            f"option 'reference_recipe' needs params as an object of parameter names, e.g. {_RECIPE_EXAMPLE}"
        )
    return ReferenceRecipe(estimator, tuple(sorted((n, _plain_parameter(n, v)) for n, v in params.items())))


_PARSERS = {
    "proportions": _parse_proportions,
    "attack_models": _parse_attack_models,
    "repeats": lambda v: _parse_int("repeats", v, 1, MAX_REPEATS, " (each repeat reruns every attack)"),
    "seed": lambda v: _parse_int("seed", v, 0, 2**32 - 1),
    "device": _parse_device,
    "label_column": _parse_label_column,
    "eval_fraction": lambda v: _parse_float("eval_fraction", v, 0.1, 0.5),
    "reference_models": _parse_reference_models,
    "allow_swapped": lambda v: _parse_bool("allow_swapped", v),
    "what_if": _parse_what_if,
    "utility_budget": lambda v: _parse_float("utility_budget", v, 0.0, 50.0),
    "boundary_queries": lambda v: _parse_int(
        "boundary_queries", v, 1, MAX_BOUNDARY_QUERIES, " (each one queries the target once more per row)"
    ),
    "classes": _parse_classes,
    "reference_recipe": _parse_reference_recipe,
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
            raise OptionsError(
                f"unknown option {shown(str(raw_name))}: valid options are {', '.join(OPTION_NAMES)}"
            )
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
            raise OptionsError(f"custom attribute {shown(pair.strip())} is not of the form key=value")
        result[key.strip()] = value.strip()
    return result


# --------------------------------------------------------------------------------------------------
# JSON text that carries options
# --------------------------------------------------------------------------------------------------

# The characters that matter for nesting depth: brackets, and quotes / backslashes to skip strings.
