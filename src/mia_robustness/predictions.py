"""The ``predictions`` section of ``config.json``: a bundle that holds the target's outputs instead of a model.

A user whose model cannot leave its home (a Keras or PyTorch model, a vendor API, a model behind a
firewall) writes the model's outputs for every row as columns of the members and non-members tables and
names them here. Three kinds, as a model can answer in three ways::

    {"predictions": {"kind": "probabilities", "columns": {"<=50K": "p_low", ">50K": "p_high"}}}
    {"predictions": {"kind": "margins", "columns": {"a": "m_a", "b": "m_b", "c": "m_c"}}}
    {"predictions": {"kind": "margins", "column": "margin", "classes": ["no", "yes"]}}
    {"predictions": {"kind": "labels", "column": "predicted", "classes": ["no", "yes"]}}

``columns`` maps each class, in the model's class order (its ``classes_``), to the column holding the
model's output for it; a binary model's single decision-function column is ``column`` with the two
``classes`` (a positive margin means the second). :func:`predictions_spec` is the one parser (in the way
of ``options.py``: every problem a :class:`~mia_robustness.errors.BundleError` that says how to fix it);
:class:`PredictionsSpec` the frozen object the audit is given. Checking the columns against the tables is
the audit's (``supplied.py``), which reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import BundleError
from .json_config import shown

PREDICTIONS_KEY = "predictions"
KINDS = ("probabilities", "margins", "labels")
MAX_CLASSES = 1000
MAX_COLUMN_NAME_CHARS = 1000
_KEYS = ("kind", "columns", "column", "classes")
_EXAMPLE = '{"predictions": {"kind": "probabilities", "columns": {"no": "p_no", "yes": "p_yes"}}}'
CODE = "bad_predictions_config"


@dataclass(frozen=True)
class PredictionsSpec:
    """Where the target's supplied outputs are.

    Attributes
    ----------
    kind:
        ``probabilities`` (one column per class, rows summing to 1), ``margins`` (``decision_function``:
        one column per class, or one column for two classes) or ``labels`` (the predicted class).
    classes:
        ``(n_classes,)`` the classes in the model's order, as ``config.json`` spells them (text, or
        integers in ``classes``).
    columns:
        The output columns: one per class, in the order of ``classes``, or a single column (``labels``,
        and ``margins`` of a binary model).
    """

    kind: str
    classes: tuple[str | int, ...]
    columns: tuple[str, ...]


def _fail(message: str) -> BundleError:
    return BundleError(f"config.json's predictions {message}", code=CODE)


def _column_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{where} must be a column name (text), got {shown(value)}")
    if len(value) > MAX_COLUMN_NAME_CHARS:
        raise _fail(
            f"{where} is a name of {len(value)} characters; column names are at most {MAX_COLUMN_NAME_CHARS}"
        )
    return value


def _class_count(count: int, what: str) -> None:
    if count < 2:
        raise _fail(f"{what} {count} class{'' if count == 1 else 'es'}; a classifier has at least two")
    if count > MAX_CLASSES:
        raise _fail(f"{what} {count} classes, over the limit of {MAX_CLASSES}")


def _distinct_classes(classes: list[str | int], where: str) -> None:
    """No class twice, also not as ``1`` and ``"1"`` (labels read from a table match either)."""
    seen: dict[str, str | int] = {}
    for value in classes:
        key = str(value).strip()
        if key in seen:
            raise _fail(f"{where} names class {shown(value)} more than once; name each class once")
        seen[key] = value


def _columns_map(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, dict):
        raise _fail(f'"columns" must map each class to its column, e.g. {_EXAMPLE}; got {shown(value)}')
    _class_count(len(value), '"columns" names')
    classes = list(value)
    _distinct_classes(classes, '"columns"')
    columns = tuple(
        _column_name(column, f"the column of class {shown(name)}") for name, column in value.items()
    )
    repeated = [column for i, column in enumerate(columns) if column in columns[:i]]
    if repeated:
        raise _fail(f"name column {shown(repeated[0])} for two classes; each class needs a column of its own")
    return tuple(classes), columns


def _classes_list(value: Any) -> tuple[str | int, ...]:
    if not isinstance(value, list):
        raise _fail(
            f'"classes" must be a list of the model\'s classes in its order, e.g. ["no", "yes"]; got {shown(value)}'
        )
    _class_count(len(value), '"classes" lists')
    for item in value:
        if (
            isinstance(item, bool)
            or not isinstance(item, (str, int))
            or (isinstance(item, str) and not item.strip())
        ):
            raise _fail(f'"classes" must hold class names (text or integers), got {shown(item)}')
    _distinct_classes(value, '"classes"')
    return tuple(value)


def predictions_spec(section: Any) -> PredictionsSpec:
    """Parse ``config.json``'s ``predictions`` value into a :class:`PredictionsSpec`.

    Raises :class:`~mia_robustness.errors.BundleError` (code ``bad_predictions_config``) for anything but
    an object with a known ``kind`` and, for it, ``columns`` (one per class) or ``column`` with ``classes``.
    """
    if not isinstance(section, dict):
        raise _fail(f"must be an object naming the output columns, e.g. {_EXAMPLE}; got {shown(section)}")
    unknown = [key for key in section if key not in _KEYS]
    if unknown:
        raise _fail(f"has unknown key {shown(unknown[0])}; its keys are {', '.join(_KEYS)}")
    kind = section.get("kind")
    if kind not in KINDS:
        raise _fail(f'"kind" must be one of {", ".join(KINDS)}, got {shown(kind)}')
    has_map, has_one = "columns" in section, "column" in section
    if kind == "probabilities" and (has_one or "classes" in section or not has_map):
        raise _fail(f'of kind probabilities name one column per class in "columns", e.g. {_EXAMPLE}')
    if kind == "labels" and (has_map or not has_one or "classes" not in section):
        raise _fail(
            'of kind labels name the predicted-label column in "column" and the model\'s classes in "classes", '
            'e.g. {"kind": "labels", "column": "predicted", "classes": ["no", "yes"]}'
        )
    if kind == "margins" and has_map == has_one:
        raise _fail(
            'of kind margins name one column per class in "columns", or (a binary model\'s single '
            'decision_function column) "column" with its two "classes"'
        )
    if has_map:
        if "classes" in section:
            raise _fail('give the classes as the keys of "columns", not also in "classes"')
        classes, columns = _columns_map(section["columns"])
    else:
        classes = _classes_list(section.get("classes"))
        columns = (_column_name(section["column"], '"column"'),)
        if kind == "margins" and len(classes) != 2:
            raise _fail(
                f'of kind margins with one "column" are a binary model\'s: give its two "classes", not {len(classes)} '
                '(a model of more classes has a margin column per class: name them in "columns")'
            )
    return PredictionsSpec(kind=kind, classes=classes, columns=columns)
