"""Load a classifier from a model file without running code the file brings with it.

A pickle is a program: every global it names is imported and may be called with arguments the file
chooses. ``pickle.load`` and ``joblib.load`` therefore run whatever an uploaded model file says. This
package loads ``.pkl`` / ``.pickle`` / ``.joblib`` files (kind found by content: plain pickle, joblib's
format, compressed with zlib, gzip, bz2, lzma or xz) with an unpickler whose ``find_class`` admits only
an allowlist, ``.skops`` files (zip archives, also found by content) with ``skops.io.load`` after every
type the file names has passed the same allowlist, and the boosting libraries' native files (XGBoost JSON /
UBJ, LightGBM text, CatBoost ``.cbm``; :mod:`.boosters`), which hold no code, with the library's own loader.

Admitted (everything else is refused before it is imported or called):

* scikit-learn: classes defined in ``sklearn`` modules (the *resolved* object's ``__module__`` is checked,
  so names re-exported from elsewhere are refused); no class or function from test helpers, ``datasets``
  (file and network I/O), ``externals``, ``utils.parallel`` / ``_joblib`` / ``fixes`` / ``deprecation`` /
  ``_testing`` / ``_mocking`` / ``discovery``, ``callback`` (sockets), ``_config``, ``experimental``,
  ``tree._export`` (writes files). Functions only where estimators store them: Cython pickling helpers
  (``__pyx_unpickle_*``, ``newObj``), score functions of ``feature_selection`` and the metric functions
  of ``metrics._classification`` / ``_ranking`` / ``_regression`` (for scorers), a few kernels.
* numpy: array, dtype, scalar and masked-array reconstruction, scalar types (``numpy.float64``), the
  ``RandomState`` / ``Generator`` / bit-generator pickling helpers, and the elementwise ufuncs in
  :data:`NUMPY_UFUNCS` (for ``FunctionTransformer(func=numpy.log1p)``). Never ``numpy.load`` (it
  unpickles) nor any other numpy function.
* scipy: sparse matrix / array classes and ``interpolate.BSpline`` (``SplineTransformer``). Not
  ``scipy.stats`` frozen distributions (their ``__setstate__`` runs ``exec``): save
  ``search.best_estimator_`` rather than a ``RandomizedSearchCV`` holding them.
* builtins containers and scalars (``set``, ``frozenset``, ``slice``, ``range``, ``complex``, ``bytearray``,
  ``int``, ``float``, ``str``, ``bytes``, ``bool``, ``list``, ``dict``, ``tuple``, ``object``),
  ``collections.OrderedDict`` / ``defaultdict``, ``copyreg``'s object-rebuilding helpers (whose class
  arguments must themselves pass the gate), joblib's ``NumpyArrayWrapper``.
* XGBoost, LightGBM and CatBoost: their classifier wrappers (``XGBClassifier``, ``LGBMClassifier``,
  ``CatBoostClassifier``) and the booster classes their pickles rebuild (``xgboost.core.Booster``,
  ``lightgbm.basic.Booster``), nothing else of theirs (:data:`.policy.BOOSTING_CLASSES`). The booster state
  arrives as bytes (XGBoost: a bytearray, LightGBM: the model text, CatBoost: bytes; the gate refuses any
  other type before ``BUILD``) and is rebuilt by the library's own C++ loader, as for a native file.
* Not pandas (no common scikit-learn estimator stores pandas objects), not joblib's pre-0.10
  ``NDArrayWrapper`` format (it reads companion files with ``numpy.load(allow_pickle=True)``), no dotted
  names (``Class.method``).

Also refused: the ``BUILD`` opcode on a class, function or module, or on one of numpy's shared built-in
dtypes (it would change scikit-learn or numpy itself for every later audit in the process), ``SETITEM`` /
``APPEND`` / ``ADDITEMS`` on anything but a dict, list or set, and text vectorizers that read files named
by the data (``input="filename"`` / ``"file"``).

Admitted code fed hostile data is checked as well: no array of Python objects is ever made from raw
bytes, memory is counted as it is built (one budget of ``max_bytes`` for the whole load), skops files are
checked from their schema before skops builds anything, and after loading every object reachable from the
model is checked. Errors never repeat text that came from the file.

The parts, each with its own account:

* :mod:`.policy`: the allowlist itself (the tables behind the list above) and :func:`is_allowed`.
* :mod:`.unpickle`: the hardened unpicklers for pickle and joblib files.
* :mod:`.gate`: what admitted code may be called on to build for a pickle, checked before it runs.
* :mod:`.budget`: the load's memory budget, and the dtype, shape and size checks shared with skops.
* :mod:`.skops_files`: skops files, checked from their schema.
* :mod:`.boosters`: the boosting libraries' native files, found by content.
* :mod:`.structure`: the check after loading (trees, histogram-boosting predictors, vectorizer input).
* :mod:`.messages`: errors and file text safe to show.
* :mod:`.onnx_files`: ``.onnx`` files, checked with ``onnx`` (no external data, no custom operator
  domains) before an onnxruntime session on the CPU is made from them; :mod:`.onnx_model`, the adapter
  that gives the session ``classes_`` and ``predict_proba`` / ``decision_function`` / ``predict``.
* here: :func:`load_model`, which picks the loader by content, runs the check after loading and returns
  a :class:`LoadedModel`.

Not protected: admitted scikit-learn code fed hostile state, and the boosting libraries' C++ loaders fed
a crafted model (they check their formats, but are not hardened against every forgery). A crafted but well-typed ``Tree`` or
``KDTree`` (child or index arrays out of range; trees are checked after loading, ``KDTree`` is not) can
crash the process or read out of bounds in native code, and slow calls can exhaust time. Run audits of
untrusted models in a separate process with memory and time limits (the server does).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MiaError, ModelError
from ..target import model_classes
from .boosters import NATIVE_SUFFIXES, load_native, native_kind, one_thread_each, restore_feature_count
from .messages import (
    HEAD_BYTES,
    _clean,
    _corrupt,
    _name,
    _not_a_model_file,
    _version_or_none,
    looks_like,
    refuse_other_classes,
)
from .onnx_files import ONNX_SUFFIX, is_onnx_file, load_onnx
from .onnx_model import settle_scores
from .policy import NUMPY_UFUNCS, is_allowed
from .skops_files import _load_skops
from .structure import _check_loaded
from .unpickle import _load_pickle

__all__ = [
    "DEFAULT_MAX_MODEL_BYTES",
    "MODEL_SUFFIXES",
    "NUMPY_UFUNCS",
    "LoadedModel",
    "is_allowed",
    "load_model",
    "settle_scores",
]

MODEL_SUFFIXES = (".pkl", ".pickle", ".joblib", ".skops", ONNX_SUFFIX, *NATIVE_SUFFIXES)

#: Largest number of bytes a model file may expand to when read (after decompression), and, counted
#: separately, largest number of bytes of arrays, buffers and containers loading it may build.
DEFAULT_MAX_MODEL_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load_model` returns.

    Attributes
    ----------
    estimator:
        The loaded classifier; it has ``predict_proba``, ``decision_function`` or ``predict``.
    saved_version:
        The scikit-learn version the model was saved with, or ``None`` when unknown or not a version.
        scikit-learn writes ``_sklearn_version`` into each estimator's saved state and removes it when
        loading, so the loaders note it as they go; the top-level estimator is consulted first, then, for
        a ``Pipeline``, its steps in order. The value comes from the file, so it is kept only if it looks
        like a version (``1.5.2``, ``1.6.dev0``): never text with escape sequences or newlines for a
        terminal.
    """

    estimator: Any
    saved_version: str | None


def load_model(
    path: Path, *, max_bytes: int | None = DEFAULT_MAX_MODEL_BYTES, classes: tuple | None = None
) -> LoadedModel:
    """Load a classifier from a model file, refusing any code the allowlist does not admit.

    Parameters
    ----------
    path:
        A ``.pkl`` / ``.pickle`` / ``.joblib`` file (plain pickle or joblib format, compressed or not) or
        a ``.skops`` file, or a native file of XGBoost (JSON, UBJSON), LightGBM (text) or CatBoost
        (``.cbm``). The format is found from the content, not the name; a file named as a native one
        (:data:`NATIVE_SUFFIXES`) that holds none is refused, never unpickled. An ``.onnx`` file (refused
        clearly when its content is a pickle, an archive or text) is checked and run by :mod:`.onnx_files`.
    classes:
        For a native booster file, the names of its classes ``0..K-1`` in order, and for an ONNX graph
        that names none, its classes in output order (``config.json``'s ``classes``); ``None`` keeps the
        indices. Pickles, skops files and ONNX graphs that name their classes keep their own; a
        ``classes`` that names other classes than theirs is refused (``bad_classes``).
    max_bytes:
        Most bytes the file may expand to when read (after decompression), and, separately, most bytes
        of arrays, buffers and containers its loading may build; ``None`` for no limit.

    Returns
    -------
    The estimator (it has ``predict_proba``, ``decision_function`` or ``predict``) and the scikit-learn version it was saved with, as a
    :class:`LoadedModel`.

    Raises
    ------
    UnsafeModelError
        ``unsafe_model``: the file names globals outside the allowlist (named in the message), or asks
        admitted code to build what no saved model does (an object array from raw bytes, a forged dtype,
        a strided view, bytes of an integer size); nothing it refers to was imported or run, nothing
        it asked for was built.
    ModelError
        ``missing_model``, ``corrupt_model`` (unreadable, truncated, not a pickle, a damaged tree),
        ``unsupported_model_format``, ``incompatible_model`` (saved with a scikit-learn that had other
        modules), ``not_a_classifier`` (a regressor, clusterer or transformer, or none of ``predict_proba``,
        ``decision_function``, ``predict``), ``bad_classes`` (``classes`` names other classes than the
        file's own).
    LimitError
        ``model_too_large``: more than ``max_bytes`` when read or built, more memory than is available,
        or more objects than the check after loading visits.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"model file {_name(path)} does not exist or is not a file; add it to the bundle",
            code="missing_model",
        )
    if path.suffix.lower() == ONNX_SUFFIX:
        return LoadedModel(load_onnx(path, max_bytes=max_bytes, classes=classes), None)
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    if not head:
        raise ModelError(
            f"{_name(path)} is empty; save the fitted classifier into it with joblib.dump",
            code="corrupt_model",
        )
    native = native_kind(head)
    if native is not None:
        return LoadedModel(load_native(path, native, max_bytes, classes), None)
    if path.suffix.lower() in NATIVE_SUFFIXES:
        raise _not_native(path, head)
    head = head[:4]
    is_zip = head == b"PK\x03\x04"  # skops files are zip archives; pickles never start like that
    try:
        model, noted = _load_skops(path, max_bytes) if is_zip else _load_pickle(path, max_bytes)
    except ModelError as error:
        # A file that is no pickle at all (a script, a table, a web page saved as model.pkl) fails as a
        # pickle would; say what it looks like instead, never what it holds.
        if error.code not in ("unsafe_model", "corrupt_model"):
            raise
        with open(path, "rb") as handle:
            what = looks_like(handle.read(HEAD_BYTES), specific_only=error.code == "unsafe_model")
        if what is None and error.code == "corrupt_model" and is_onnx_file(path):
            what = "an ONNX model (name it model.onnx to audit it as one)"
        if what is None or (is_zip and what == "a zip archive" and _is_skops_archive(path)):
            raise
        raise _not_a_model_file(path, what) from None
    try:
        _check_loaded(path, model)
        restore_feature_count(model)
        one_thread_each(model)
        answers = any(hasattr(model, method) for method in _ANSWERS) and _is_classifier_like(model)
    except MiaError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile state in admitted classes fails here, not later
        raise _corrupt(path, exc, "checking the loaded model") from None
    if not answers:
        raise _not_a_classifier(path, model)
    if classes is not None:
        refuse_other_classes(_name(path), model_classes(model), classes)
    return LoadedModel(model, _saved_version(model, noted))


def _not_native(path: Path, head: bytes) -> ModelError:
    """A file named as a native booster model that holds none: refused, never read as a pickle."""
    # a pickle's protocol opcode, or the gzip / bz2 / xz / zlib headers of a compressed joblib file
    pickled = head[:1] == b"\x80" or head[:2] in (
        b"\x1f\x8b",
        b"BZ",
        b"\xfd7",
        b"x\x9c",
        b"x\x01",
        b"x\xda",
        b"x^",
    )
    what = "a pickle" if pickled else (looks_like(head, specific_only=False) or "binary data")
    return ModelError(
        f"{_name(path)} is named as a native XGBoost, LightGBM or CatBoost model but is not one (it looks like "
        f"{what}); save the booster with its own save_model, or a pickle with a .pkl / .joblib name",
        code="corrupt_model",
    )


def _saved_version(model: Any, noted: list[tuple[Any, str]]) -> str | None:
    """The scikit-learn version ``model`` was saved with (see :attr:`LoadedModel.saved_version`).

    Parameters
    ----------
    model:
        The loaded object.
    noted:
        (object, version) pairs the loader noted before scikit-learn removed them (a later pair for the
        same object wins). An object without one is looked up in its own attributes, where classes
        that do not remove the version keep it.
    """
    by_object = {id(obj): version for obj, version in noted}  # ``noted`` keeps the objects alive
    candidates = [model]
    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        candidates += [step[1] for step in steps if isinstance(step, tuple) and len(step) == 2]
    for candidate in candidates:
        version = by_object.get(id(candidate))
        if version is None:
            attributes = getattr(candidate, "__dict__", None)
            version = attributes.get("_sklearn_version") if isinstance(attributes, dict) else None
        if isinstance(version, str):
            return _version_or_none(version)
    return None


#: The methods a target may answer with (``target.OUTPUT_KINDS``): one of them is enough.
_ANSWERS = ("predict_proba", "decision_function", "predict")


def _is_classifier_like(model: Any) -> bool:
    """Not a regressor, clusterer or transformer (by scikit-learn's tags; see :func:`_role`)."""
    return _role(model) is None


def _not_a_classifier(path: Path, model: Any) -> ModelError:
    """Why ``model`` is no classifier; for a pipeline, its last step named by position and class
    (the step's own name is text from the file, so it is not shown)."""
    steps = getattr(model, "steps", None)
    final = model
    where = ""
    if isinstance(steps, list) and steps and isinstance(steps[-1], tuple) and len(steps[-1]) == 2:
        final = steps[-1][1]
        where = f"a {_clean(type(model).__name__)} whose last step (step {len(steps)} of {len(steps)}) is "
    name = type(final).__name__
    if isinstance(final, str) or final is None:  # "passthrough" / None: the pipeline ends without a model
        what = "no estimator at all (passthrough)"
    else:
        what = f"a {_clean(name)}, " + (_role(final) or "which has none of " + ", ".join(_ANSWERS))
    return ModelError(
        f"{_name(path)} holds {where or ''}{what}; the audit needs a fitted classifier that gives class "
        "probabilities (predict_proba), margins (decision_function) or labels (predict)"
        + ("; make a classifier the pipeline's last step" if where else ""),
        code="not_a_classifier",
    )


def _role(estimator: Any) -> str | None:
    """What an estimator that is no classifier is, by scikit-learn's estimator type and its methods
    (``None``: it may be a classifier)."""
    from sklearn.base import is_clusterer, is_regressor

    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps and isinstance(steps[-1], tuple) and len(steps[-1]) == 2:
        estimator = steps[-1][1]
    if isinstance(estimator, str) or estimator is None:
        return "no estimator at all (passthrough)"
    try:  # the estimator's own tags: admitted scikit-learn code, but guarded like any call on a loaded model
        regressor, clusterer = is_regressor(estimator), is_clusterer(estimator)
    except Exception:  # noqa: BLE001 - hostile state: fall back to the methods it has
        regressor = clusterer = False
    if regressor:
        return "a regressor, not a classifier"
    if clusterer:
        return "a clusterer, not a classifier"
    if hasattr(estimator, "transform") and not any(hasattr(estimator, m) for m in _ANSWERS):
        return "a transformer, not a classifier"
    return None


def _is_skops_archive(path: Path) -> bool:
    """Whether a zip file has the ``schema.json`` every skops file has (then the skops error stands)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "schema.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
