"""What loading says about a model file: errors that never repeat text that came from the file.

A file that fails to load is reported with the exception's class only (the exception itself is logged at
debug level on ``mia_robustness.loading``), refused global names are stripped of control characters and
shortened, and the scikit-learn version a model was saved with is returned only when it looks like a
version.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..errors import ModelError, UnsafeModelError
from ..json_config import shown_names
from ..target import canonical_label

_LOG = logging.getLogger("mia_robustness.loading")


_FIX_HINT = (
    "only scikit-learn estimators, numpy and scipy data are. If you trust this "
    "file, load it where you trust it and re-save the estimator with skops (skops.io.dump) or with "
    "joblib.dump after replacing custom classes and functions with scikit-learn ones."
)


# What a saved version looks like ("1.5.2", "1.6.dev0", "1.4.1.post1", "1.3+local"); anything else is
# text from the file that must not reach a terminal.
_VERSION = re.compile(r"[0-9A-Za-z.+\-_]{1,40}")

# C0 and C1 controls (ANSI escapes, newlines), zero-width and bidirectional-override characters.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _clean(text: str, limit: int = 100) -> str:
    """``text`` that came from a model file, safe to show: control characters removed, ``limit`` long at most."""
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any) -> str:
    """A value from a model file for a message: cleaned if it is text, else only its type's name."""
    return _clean(value) if isinstance(value, str) else f"a {_clean(type(value).__name__)}"


def _version_or_none(value: Any) -> str | None:
    """``value`` if it looks like a version string, else ``None`` (it came from the file)."""
    return value if isinstance(value, str) and _VERSION.fullmatch(value) else None


def _unsafe(name: str, what: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"{name} {what}, which no saved scikit-learn model does: the file was crafted or damaged, and it "
        "was refused before that was built. Re-save the fitted estimator with joblib.dump or skops.io.dump",
        code="unsafe_model",
    )


def _name(path: Path) -> str:
    """The file's name for messages (a bundle member's name comes from the uploader too)."""
    return _clean(path.name)


def _refusal(path: Path, refused: list[str]) -> UnsafeModelError:
    shown = [_clean(label) for label in refused[:20]]
    what = ", ".join(shown) + (f" and {len(refused) - len(shown)} more" if len(refused) > len(shown) else "")
    noun = "which is" if len(refused) == 1 else "which are"
    hint = _FIX_HINT
    if any(label.startswith("scipy.stats.") for label in shown):
        hint = (
            "a fitted RandomizedSearchCV keeps scipy.stats distributions: save its best_estimator_ instead; "
            + hint
        )
    return UnsafeModelError(
        f"{_name(path)} refers to {what}, {noun} not allowed in a model file: {hint}", code="unsafe_model"
    )


_SAVE_PICKLE = "save the fitted classifier with joblib.dump, pickle.dump or skops.io.dump"


def _corrupt(path: Path, exc: BaseException, stage: str, fix: str = _SAVE_PICKLE) -> ModelError:
    """A file that failed to load, named by the exception's class only: its text may come from the file
    (a ``__setstate__`` raising attacker-chosen words, a repr with a memory address). The exception is
    logged at debug level for whoever runs the tool. ``fix`` says how to save one that loads (a native
    booster file or an ONNX graph is saved otherwise than a pickle)."""
    _LOG.debug("model file %r could not be read (%s)", path.name, stage, exc_info=exc)
    kind = _clean(type(exc).__name__, 60)
    return ModelError(
        f"{_name(path)} is not a readable model file ({kind} while {stage}); {fix} and upload that file "
        "unchanged",
        code="corrupt_model",
    )


# How a file that is no model file at all looks, from its first bytes (checked in this order).
_PYTHON_LINE = re.compile(
    r"^(import [A-Za-z_]|from [\w.]+ import |def \w+\(|class \w+[(:]|#!.*python|if __name__)", re.M
)
HEAD_BYTES = 4096


def looks_like(head: bytes, *, specific_only: bool) -> str | None:
    """What a file that failed to load looks like instead, from its first bytes (:data:`HEAD_BYTES`):
    "a zip archive", "a PDF document", "an HTML page", "XML", "JSON text", "Python source code",
    "a CSV table", "plain text", or ``None`` (binary, or nothing recognisable).

    ``specific_only`` leaves out "plain text": an old (protocol 0) pickle is plain text too, and its own
    error (a refused global) is the one to give.
    """
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the head
            return None
        text = head[: exc.start].decode("utf-8-sig")
    if not text.strip() or any(not (c.isprintable() or c in "\t\r\n") for c in text):
        return None
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html")) or (start.startswith("<") and "<html" in start):
        return "an HTML page"
    if start.startswith("<?xml"):
        return "XML"
    if start.startswith(("{", "[")):
        return "JSON text"
    if _PYTHON_LINE.search(text):
        return "Python source code"
    lines = [line for line in text.splitlines()[:5] if line.strip()]
    commas = {line.count(",") for line in (lines[:-1] if len(lines) > 2 else lines)}
    if len(lines) >= 2 and len(commas) == 1 and commas != {0}:
        return "a CSV table"
    return None if specific_only else "plain text"


def _not_a_model_file(path: Path, what: str) -> ModelError:
    return ModelError(
        f"{_name(path)} is not a saved model: it looks like {what}. Save the fitted classifier with "
        "joblib.dump or skops.io.dump and use the file it writes",
        code="corrupt_model",
    )


def refuse_other_classes(file_name: str, own: Any, configured: tuple | list | None) -> None:
    """Refuse a ``classes`` option that names other classes than a model file that carries its own (a
    pickle's or skops file's ``classes_``, an ONNX graph's class labels); the same classes in any order are
    accepted, since nothing is then taken from the option.

    The option is for files that know their classes only as ``0..K-1``. A file that names its own uses
    those, so an option that disagrees is a mistaken belief about the model, refused rather than silently
    dropped. ``1``, ``1.0`` and ``"1"`` are the same class. The message quotes only the option's values (the
    user's own text), never the file's classes, which it only counts.

    Raises
    ------
    ModelError
        ``bad_classes``.
    """
    if configured is None:
        return
    own_text = {canonical_label(c) for c in list(own)}
    unknown = [c for c in configured if canonical_label(c) not in own_text]
    if not unknown and len(configured) == len(own_text):
        return
    what = (
        f"names {shown_names(unknown)}, which {file_name} does not have"
        if unknown
        else f"lists {len(configured)} classes but {file_name} has {len(own_text)}"
    )
    raise ModelError(
        f"the classes option (config.json / --classes) {what}. {file_name} carries its own classes and the "
        "audit uses those; the option is only for files that know their classes as 0, 1, ... (a native "
        "booster, an ONNX graph that names none). Remove it, or list the model's own classes",
        code="bad_classes",
    )
