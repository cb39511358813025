"""The allowlist: which globals a model file may name, and what each resolves to.

This is the part a security reviewer reads, and the part a new scikit-learn (or numpy, scipy, joblib)
release may change; the package docstring says in words what is admitted. Here are the tables and the one
function that applies them, :func:`_resolve`: a (module, name) pair becomes the admitted object or raises
:class:`_Disallowed`. Names are checked before any module is imported, so refusing never imports a new
module outside scikit-learn's allowed subpackages; for scikit-learn the *resolved* object's
``__module__`` is checked, so names re-exported from elsewhere are refused. The unpicklers
(:mod:`.unpickle`) and the skops check (:mod:`.skops_files`) apply it, and :func:`is_allowed` answers the
same question for the reference models' recipe. Nothing here reads a file or unpickles.

On a new release, look at:

* :data:`_SKLEARN_DENIED`: new modules with I/O, test helpers or process-wide configuration;
* :data:`_SKLEARN_FUNCTION_MODULES`: where score functions, scorer metrics and kernels live;
* :data:`_EXACT`: numpy's and scipy's reconstruction and random-state pickling helpers (their modules
  move: ``numpy.core`` became ``numpy._core``);
* :data:`NUMPY_UFUNCS`: the ufuncs a ``FunctionTransformer`` may hold;
* :data:`BOOSTING_CLASSES`: where XGBoost, LightGBM and CatBoost define their classifier wrappers and
  boosters (disassemble a fresh pickle of each with ``pickletools``: it names exactly these globals).
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
from typing import Any

from ..errors import ModelError, UnsafeModelError
from .messages import _FIX_HINT, _clean, _shown

#: numpy ufuncs a ``FunctionTransformer`` may name as ``func`` / ``inverse_func``: elementwise, no I/O.
NUMPY_UFUNCS = frozenset(
    {
        "log",
        "log1p",
        "log2",
        "log10",
        "exp",
        "expm1",
        "exp2",
        "sqrt",
        "cbrt",
        "square",
        "absolute",
        "fabs",
        "sign",
        "negative",
        "reciprocal",
        "tanh",
        "arcsinh",
        "sinh",
        "cosh",
        "arctan",
        "rint",
        "floor",
        "ceil",
        "trunc",
        "isnan",
        "isfinite",
    }
)


# Exact (module, name) pairs outside scikit-learn. Their modules are trusted, so getattr (which may go
# through a module __getattr__ shim such as numpy.core's) is used to resolve them.
_EXACT = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.ma", "MaskedArray"),
        ("numpy.ma.core", "MaskedArray"),
        ("numpy.ma.core", "_mareconstruct"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random.mtrand", "RandomState"),
        ("numpy.random._generator", "Generator"),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pcg64", "PCG64DXSM"),
        ("numpy.random._philox", "Philox"),
        ("numpy.random._sfc64", "SFC64"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("scipy.interpolate._bsplines", "BSpline"),
        ("scipy._lib.array_api_compat.numpy._aliases", "asarray"),  # BSpline keeps it as _asarray
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("copyreg", "_reconstructor"),
        ("copyreg", "__newobj__"),
        ("copyreg", "__newobj_ex__"),
    }
)

_BUILTINS = frozenset(
    {
        "set",
        "frozenset",
        "slice",
        "range",
        "complex",
        "bytearray",
        "bytes",
        "int",
        "float",
        "str",
        "bool",
        "list",
        "dict",
        "tuple",
        "object",
    }
)

# Modules (and their submodules) of scikit-learn whose classes and functions are never admitted.
_SKLEARN_DENIED = (
    "sklearn.utils._testing",
    "sklearn.utils.estimator_checks",
    "sklearn.utils._test_common",
    "sklearn.utils._mocking",
    "sklearn.utils.parallel",
    "sklearn.utils._joblib",
    "sklearn.utils.fixes",
    "sklearn.utils.deprecation",
    "sklearn.utils._show_versions",
    "sklearn.utils.discovery",
    "sklearn.utils._optional_dependencies",
    "sklearn.externals",
    "sklearn.datasets",
    "sklearn._config",
    "sklearn._build_utils",
    "sklearn.__check_build",
    "sklearn._min_dependencies",
    "sklearn._distributor_init",
    "sklearn.conftest",
    "sklearn.experimental",
    "sklearn.callback",
    "sklearn.tree._export",
)

# Modules whose public functions an estimator may hold (score functions, scorer metrics, kernels).
_SKLEARN_FUNCTION_MODULES = {
    "sklearn.feature_selection._univariate_selection": None,
    "sklearn.feature_selection._mutual_info": None,
    "sklearn.metrics._classification": None,
    "sklearn.metrics._ranking": None,
    "sklearn.metrics._regression": None,
    "sklearn.metrics.pairwise": frozenset(
        {
            "linear_kernel",
            "polynomial_kernel",
            "rbf_kernel",
            "sigmoid_kernel",
            "laplacian_kernel",
            "chi2_kernel",
            "additive_chi2_kernel",
            "cosine_similarity",
            "euclidean_distances",
            "manhattan_distances",
            "cosine_distances",
        }
    ),
}

# The boosting libraries: their scikit-learn classifier wrappers, and the booster classes whose own
# ``__setstate__`` hands the saved model bytes to the library's C++ loader (nothing else of theirs: no
# callbacks, no DMatrix, no Dataset, no regressors or rankers). Each pair is checked by name before its
# module is imported, and the resolved object must be a class defined in that very module.
BOOSTING_CLASSES = frozenset(
    {
        ("xgboost.sklearn", "XGBClassifier"),
        ("xgboost.core", "Booster"),
        ("lightgbm.sklearn", "LGBMClassifier"),
        ("lightgbm.basic", "Booster"),
        ("catboost.core", "CatBoostClassifier"),
    }
)

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Disallowed(Exception):
    """Internal: a global the allowlist does not admit."""


def _sklearn_module_denied(module: str) -> bool:
    parts = module.split(".")
    if any(part == "tests" or part.startswith("test_") or part == "conftest" for part in parts):
        return True
    return any(module == denied or module.startswith(denied + ".") for denied in _SKLEARN_DENIED)


def _import(module: str) -> types.ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if module.startswith("sklearn"):
            import sklearn

            raise ModelError(
                f"the model file refers to the module {_clean(module)}, which scikit-learn "
                f"{sklearn.__version__} does not have; it was probably saved with another scikit-learn "
                f"version. Re-save it with scikit-learn {sklearn.__version__}.",
                code="incompatible_model",
            ) from None
        raise _Disallowed from exc


def _safe_ufunc_reconstruct(module: str, name: str) -> Any:
    """numpy 1.x pickles ufuncs as ``_ufunc_reconstruct(module, name)``, an import of any module."""
    if not (isinstance(module, str) and module == "numpy" and isinstance(name, str) and name in NUMPY_UFUNCS):
        raise UnsafeModelError(
            f"the model file refers to {_shown(module)}.{_shown(name)} (as a numpy ufunc), which is not "
            f"allowed: {_FIX_HINT}",
            code="unsafe_model",
        )
    import numpy

    return getattr(numpy, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles store bytes as ``_codecs.encode(text, "latin1")``; admit only that codec."""
    if not (isinstance(encoding, str) and encoding in ("latin1", "latin-1") and isinstance(text, str)):
        raise UnsafeModelError(
            f"the model file uses _codecs.encode with codec {_shown(encoding)}; only latin1 is allowed: "
            f"{_FIX_HINT}",
            code="unsafe_model",
        )
    return text.encode("latin1")


def _resolve(module: str, name: str) -> Any:
    """The object ``module.name`` if the allowlist admits it, else raise :class:`_Disallowed`.

    Names are checked before any module is imported, so refusing never imports a new module outside
    scikit-learn's allowed subpackages.
    """
    if not (isinstance(module, str) and isinstance(name, str)):
        raise _Disallowed
    if not _MODULE_NAME.match(module) or not _NAME.match(name):  # no dotted names: no Class.method
        raise _Disallowed
    if module == "builtins":
        if name in _BUILTINS:
            import builtins

            return getattr(builtins, name)
        raise _Disallowed
    if (module, name) in _EXACT:
        return getattr(_import(module), name)
    if module in ("numpy.core", "numpy._core") and name == "_ufunc_reconstruct":
        return _safe_ufunc_reconstruct
    if (module, name) == ("_codecs", "encode"):
        return _latin1_encode
    if module == "joblib.numpy_pickle" and name == "NumpyArrayWrapper":
        # joblib's own class: the unpicklers put in its place a subclass that checks its fields before it
        # reads an array (unpickle._safe_array_wrapper)
        return getattr(_import(module), name)
    if module in ("numpy", "numpy.dtypes"):
        import numpy

        obj = vars(_import(module)).get(name)
        if isinstance(obj, type) and issubclass(obj, (numpy.generic, numpy.dtype)):
            return obj
        if module == "numpy" and name in NUMPY_UFUNCS and isinstance(obj, numpy.ufunc):
            return obj
        raise _Disallowed
    if module == "scipy.sparse" or module.startswith("scipy.sparse."):
        import scipy.sparse

        obj = vars(_import(module)).get(name)
        if isinstance(obj, type) and issubclass(obj, (scipy.sparse.spmatrix, scipy.sparse.sparray)):
            return obj
        raise _Disallowed
    if module == "sklearn" or module.startswith("sklearn."):
        return _resolve_sklearn(module, name)
    if (module, name) in BOOSTING_CLASSES:
        obj = vars(_import(module)).get(name)
        if isinstance(obj, type) and obj.__module__ == module and obj.__name__ == name:
            return obj
    raise _Disallowed


def _resolve_sklearn(module: str, name: str) -> Any:
    if _sklearn_module_denied(module):
        raise _Disallowed
    # vars(), not getattr: a module-level __getattr__ (sklearn's lazy submodule loader) must not run.
    obj = vars(_import(module)).get(name)
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str) or not owner.startswith("sklearn.") or _sklearn_module_denied(owner):
        raise _Disallowed  # a module, a constant, or something re-exported from outside scikit-learn
    if isinstance(obj, type):
        return obj
    if not callable(obj) or getattr(obj, "__name__", None) != name:
        raise _Disallowed
    # Cython's pickling helpers rebuild the extension type of their own module from checked state.
    if name == "newObj" or name.startswith("__pyx_unpickle_"):
        return obj
    if inspect.isfunction(obj) and not name.startswith("_") and owner in _SKLEARN_FUNCTION_MODULES:
        names = _SKLEARN_FUNCTION_MODULES[owner]
        if names is None or name in names:
            return obj
    raise _Disallowed


def is_allowed(module: str, name: str) -> bool:
    """Whether the allowlist admits the global ``module.name`` (imports allowed scikit-learn modules)."""
    try:
        _resolve(module, name)
    except (_Disallowed, ModelError):
        return False
    return True
