"""skops files: checked from their schema before ``skops.io.load`` builds anything.

A ``.skops`` file is a zip archive (found by content) whose ``schema.json`` names every type it holds;
each must pass the same allowlist as a pickle's globals (:mod:`.policy`), and so must every type skops
itself calls untrusted. Then :class:`_SkopsCheck` walks the schema: numpy, builtin and sparse objects
only through the node skops itself writes for them (never an object or constructor node called with the
file's arguments), object arrays only from skops' list of items, arrays sized from their ``.npy``
headers (plain numbers only, never more than the data present), bytes and arrays charged to the load's
memory budget (:mod:`.budget`), ids shared by nodes naming one and the same node.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LimitError, MiaError, ModelError, UnsafeModelError
from .budget import _MAX_INTP, _Budget, _range_length, _raw_safe, _shape
from .messages import _clean, _corrupt, _name, _refusal, _unsafe, _version_or_none
from .policy import _Disallowed, _resolve, is_allowed


def _skops_types(node: Any, found: set[tuple[str, str]], depth: int = 0) -> None:
    """Every (module, class-or-function) pair a skops schema names."""
    if depth > 200:
        raise ModelError("the skops file's schema is nested too deeply", code="corrupt_model")
    if isinstance(node, dict):
        module, name = node.get("__module__"), node.get("__class__")
        if module is not None or name is not None:
            found.add((str(module), str(name)))
        for value in node.values():
            _skops_types(value, found, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _skops_types(value, found, depth + 1)


def _skops_type_allowed(module: str, name: str) -> bool:
    if module == "builtins" and name == "NoneType":
        return True
    return is_allowed(module, name)


def _npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of a ``.npy`` stream, read without reading the data."""
    from numpy.lib import format as npy

    version = npy.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(handle)
    else:
        shape, _, dtype = npy._read_array_header(handle, version)
    return _shape(shape), dtype, handle.tell()


# Dict key types a skops DictNode may rebuild keys with (JSON keys are text: int("3"), numpy.int64("3")).
_SKOPS_KEY_TYPES = (str, int, float, bool, complex, np.number, np.bool_, np.str_, np.bytes_)
# Classes that only their own skops node may build: an ObjectNode making one calls its __new__ and
# __setstate__ with state skops never writes for it.
_SKOPS_DATA_TYPES = (np.ndarray, np.generic, np.dtype, bytes, bytearray, str, range, list, tuple, set)
_SKOPS_DATA_TYPES += (frozenset, dict, int, float, complex, slice)


class _SkopsCheck:
    """Checks a skops schema before skops builds anything from it.

    Every node may build only the classes skops writes that node for (an ``NdArrayNode`` an array from a
    ``.npy`` file, a ``ListNode`` a list, ...), so numpy, builtin and sparse objects come only from their
    own nodes, never from a constructor node called with the file's arguments. Arrays are sized from
    their ``.npy`` headers (never objects, never more than the data present), and every array, buffer and
    container is charged to the load's budget.

    skops builds the first node it meets with a given ``__id__`` and reuses it for later nodes with that
    id (a legitimate file repeats an object's node, with ids of temporaries inside that differ). So every
    node is checked, a reference is checked against every node with its id, sizes take the largest of
    them, and values read from them must agree.

    Parameters
    ----------
    name:
        The file's name, cleaned, for messages.
    archive:
        The open skops zip archive.
    budget:
        The load's memory budget.
    """

    def __init__(self, name: str, archive: zipfile.ZipFile, budget: _Budget) -> None:
        self.name = name
        self.archive = archive
        self.budget = budget
        self.occurrences: dict[Any, list[dict[str, Any]]] = {}
        self.charged: dict[Any, int] = {}
        self.headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.sizes: dict[int, int] = {}
        self.path: set[int] = set()

    def unsafe(self, what: str) -> UnsafeModelError:
        return _unsafe(self.name, what)

    def run(self, schema: Any) -> None:
        nodes: list[dict[str, Any]] = []
        todo = [schema]
        while todo:
            item = todo.pop()
            if isinstance(item, dict):
                if isinstance(item.get("__loader__"), str) and self._distinct(item):
                    nodes.append(item)
                todo.extend(item.values())
            elif isinstance(item, list):
                todo.extend(item)
        self.budget.examine(len(nodes))
        for node in nodes:
            self._check(node)

    def _distinct(self, node: dict[str, Any]) -> bool:
        """Note ``node`` under its id; whether it is one to check (not a reference, not a repeat)."""
        node_id = node.get("__id__")
        if node["__loader__"] == "CachedNode":
            return False
        if not node_id:
            return True
        known = self.occurrences.setdefault(node_id, [])
        self.budget.examine(len(known))
        if any(other == node for other in known):
            return False
        known.append(node)
        return True

    def _candidates(self, node: Any) -> list[dict[str, Any]]:
        """The nodes skops may build for ``node``: every node with its id, if it has one."""
        if not isinstance(node, dict):
            raise ValueError("a skops node that is not an object")
        node_id = node.get("__id__")
        return self.occurrences.get(node_id) or [node] if node_id else [node]

    def _charge(self, node: dict[str, Any], nbytes: int, what: str) -> None:
        """Charge what ``node`` builds once per id (skops builds an id once), the most any node with it asks."""
        node_id = node.get("__id__")
        key = ("id", node_id) if node_id else ("node", id(node))
        before = self.charged.get(key, 0)
        if nbytes > before:
            self.charged[key] = nbytes
            self.budget.charge(nbytes - before, what)

    def _class(self, node: dict[str, Any]) -> Any:
        with contextlib.suppress(_Disallowed, ModelError):
            return _resolve(str(node.get("__module__")), str(node.get("__class__")))
        return None

    def _label(self, node: dict[str, Any]) -> str:
        return _clean(f"{node.get('__module__')}.{node.get('__class__')}")

    def _check(self, node: dict[str, Any]) -> None:
        loader = node["__loader__"]
        if loader in ("TypeNode", "FunctionNode", "JsonNode", "SliceNode", "DefaultDictNode"):
            return  # references to admitted names, JSON values, or a dict checked as its own node
        checks = {
            "NdArrayNode": self._ndarray,
            "DTypeNode": self._dtype,
            "MaskedArrayNode": self._masked,
            "ObjectNode": self._object,
            "ConstructorFromReduceNode": self._constructor,
            "TreeNode": self._tree,
            "LossNode": self._loss,
            "ListNode": lambda node, cls: self._container(node, cls, list),
            "TupleNode": lambda node, cls: self._container(node, cls, tuple),
            "SetNode": lambda node, cls: self._container(node, cls, (set, frozenset)),
            "DictNode": self._dict,
            "BytesNode": lambda node, cls: self._bytes(node, 1),
            "BytearrayNode": lambda node, cls: self._bytes(node, 9),  # built through a list of ints
            "SparseMatrixNode": self._sparse,
            "RandomStateNode": lambda node, cls: self._is(node, cls, np.random.RandomState),
            "RandomGeneratorNode": self._generator,
        }
        if loader not in checks:
            raise self.unsafe(f"uses the skops node type {_clean(loader)}, which is not loaded here")
        checks[loader](node, self._class(node))

    def _is(self, node: dict[str, Any], cls: Any, base: type | tuple[type, ...]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise self.unsafe(f"builds {self._label(node)} through a skops {_clean(node['__loader__'])}")

    def _member(self, member: Any) -> zipfile.ZipInfo:
        if not isinstance(member, str):
            raise ValueError("a skops node without a file name")
        return self.archive.getinfo(member)

    def _npy(self, member: Any) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of an ``.npy`` member from its header: plain numbers, and no more data than
        the member holds."""
        info = self._member(member)
        if member not in self.headers:
            with self.archive.open(info) as handle:
                shape, dtype, header = _npy_header(handle)
            self._raw_array(shape, dtype, info.file_size - header)
            self.headers[member] = (shape, dtype)
        return self.headers[member]

    def _raw_array(self, shape: tuple[int, ...], dtype: np.dtype, available: int) -> None:
        if not _raw_safe(dtype):
            raise self.unsafe("stores an array of Python objects as raw bytes")
        nbytes = math.prod(shape) * max(dtype.itemsize, 1)
        if nbytes > _MAX_INTP:
            raise self.unsafe("asks for an array whose size overflows")
        if math.prod(shape) * dtype.itemsize > available:
            raise ValueError("an array whose data is shorter than its header says")

    def _ndarray(self, node: dict[str, Any], cls: Any) -> None:
        kind = node.get("type")
        if kind == "numpy":
            shape, dtype = self._npy(node.get("file"))
            if cls is not np.ndarray and not (isinstance(cls, type) and dtype.type is cls):
                raise self.unsafe(f"builds {self._label(node)} from an array of another type")
            count = math.prod(shape)
            read = self._member(node.get("file")).file_size
            self._charge(node, read + count * max(dtype.itemsize, 1), f"an array of {count:,} elements")
        elif kind == "json":
            self._is(node, cls, np.ndarray)
            if not isinstance(node.get("content"), list):
                raise ValueError("an object array without items")
            self._charge(node, self._nested(node), "an array of Python objects")

    def _dtype(self, node: dict[str, Any], cls: Any) -> None:
        for content in self._candidates(node.get("content")):
            if content.get("__loader__") != "NdArrayNode" or content.get("type") != "numpy":
                raise self.unsafe("builds a dtype from something other than an array header")

    def _masked(self, node: dict[str, Any], cls: Any) -> None:
        content = node.get("content")
        if not isinstance(content, dict):
            raise ValueError("a masked array without content")
        for part in ("data", "mask"):
            if any(item.get("__loader__") != "NdArrayNode" for item in self._candidates(content.get(part))):
                raise self.unsafe("builds a masked array from something other than arrays")

    def _object(self, node: dict[str, Any], cls: Any) -> None:
        if not isinstance(cls, type) or issubclass(cls, _SKOPS_DATA_TYPES):
            raise self.unsafe(f"builds {self._label(node)} through a skops ObjectNode")

    def _constructor(self, node: dict[str, Any], cls: Any) -> None:
        """``cls(*args)``: skops writes it only for a few builtins (a range, a frozenset, a complex)."""
        if cls not in (range, frozenset, complex):
            raise self.unsafe(f"calls {self._label(node)} with arguments from the file")
        content = node.get("content")
        if cls is range:
            args = self._static(content)
            if not (isinstance(args, list) and all(type(arg) is int for arg in args)):
                raise self.unsafe("builds a range from something other than integers")
            with contextlib.suppress(TypeError, ValueError):
                self._charge(node, _range_length(range(*args)) * 8, "a range")
        else:
            self._charge(node, self._nested(content) * 8, f"a {cls.__name__}")

    def _tree(self, node: dict[str, Any], cls: Any) -> None:
        reduce = node.get("__reduce__")
        args = reduce.get("args") if isinstance(reduce, dict) else None
        values = self._static(args)
        outputs = values[2] if isinstance(values, list) and len(values) == 3 else None
        outputs = max(outputs, 0) if type(outputs) is int else 0
        self._charge(node, outputs * 16 + self._nested(args), "a decision tree's outputs")

    def _loss(self, node: dict[str, Any], cls: Any) -> None:
        """A loss is built by calling its class (the node's own class) with the file's arguments."""
        if not (isinstance(cls, type) and cls.__module__.startswith("sklearn.")):
            raise self.unsafe(f"calls {self._label(node)} with arguments from the file")
        reduce = node.get("__reduce__")
        self._charge(node, self._nested(reduce.get("args") if isinstance(reduce, dict) else None), "a loss")

    def _container(self, node: dict[str, Any], cls: Any, base: type | tuple[type, ...]) -> None:
        self._is(node, cls, base)
        self._charge(node, self._nested(node), f"a {_clean(str(node.get('__class__')))}")

    def _dict(self, node: dict[str, Any], cls: Any) -> None:
        self._is(node, cls, dict)
        for key_types in self._candidates(node.get("key_types")):
            entries = key_types.get("content")
            if key_types.get("__loader__") != "ListNode" or not isinstance(entries, list):
                raise ValueError("a dict without key types")
            for entry in entries:
                for candidate in self._candidates(entry):
                    key_type = self._class(candidate)
                    if candidate.get("__loader__") != "TypeNode" or not (
                        isinstance(key_type, type) and issubclass(key_type, _SKOPS_KEY_TYPES)
                    ):
                        raise self.unsafe(f"rebuilds dict keys with {self._label(candidate)}")
        self._charge(node, self._nested(node), "a dict")

    def _bytes(self, node: dict[str, Any], factor: int) -> None:
        size = self._member(node.get("file")).file_size
        self._charge(node, size * (1 + factor), "a bytes object")

    def _sparse(self, node: dict[str, Any], cls: Any) -> None:
        """``scipy.sparse.load_npz`` of a member: plain-number arrays, charged, and the index its shape
        asks for."""
        import scipy.sparse

        self._is(node, cls, (scipy.sparse.spmatrix, scipy.sparse.sparray))
        info = self._member(node.get("file"))
        total = info.file_size
        with zipfile.ZipFile(io.BytesIO(self.archive.read(info))) as inner:
            for entry in inner.infolist():
                with inner.open(entry) as handle:
                    shape, dtype, header = _npy_header(handle)
                    self._raw_array(shape, dtype, entry.file_size - header)
                    total += math.prod(shape) * max(dtype.itemsize, 1)
                    if entry.filename == "shape.npy" and dtype.kind in "iu" and math.prod(shape) <= 2:
                        dims = np.frombuffer(handle.read(math.prod(shape) * dtype.itemsize), dtype=dtype)
                        total += (sum(_shape(dims.tolist())) + 2) * 8  # index pointers, one per row or column
        self._charge(node, total, "a sparse matrix")

    def _generator(self, node: dict[str, Any], cls: Any) -> None:
        """numpy's ``SeedSequence(pool_size=n)`` allocates and mixes ``n`` words."""
        self._is(node, cls, np.random.Generator)
        content = node.get("content")
        for seed in self._candidates(content.get("seed_seq") if isinstance(content, dict) else None):
            entries = seed.get("content")
            if isinstance(entries, dict) and "pool_size" in entries:
                pool = self._static(entries["pool_size"])
                if type(pool) is not int or not 0 <= pool <= 2**16:
                    raise self.unsafe("asks for a random seed pool of a size numpy never saves")
                self._charge(seed, pool * 4, "a random seed pool")

    def _static(self, node: Any, depth: int = 0) -> Any:
        """What a node of JSON values, lists and tuples holds (``None`` for anything else); nodes sharing
        its id must hold the same."""
        values = [self._static_one(candidate, depth) for candidate in self._candidates(node)]
        if any(value != values[0] for value in values[1:]):
            raise self.unsafe("gives two different values the same id")
        return values[0]

    def _static_one(self, node: dict[str, Any], depth: int) -> Any:
        loader, content = node.get("__loader__"), node.get("content")
        if loader == "JsonNode" and isinstance(content, str):
            return json.loads(content)
        if loader in ("ListNode", "TupleNode") and isinstance(content, list) and depth < 50:
            return [self._static(item, depth + 1) for item in content]
        return None

    def _nested(self, node: Any, depth: int = 0) -> int:
        """Bytes a node takes when built and expanded all the way down (``numpy.array`` of nested lists):
        a node reached twice counts twice but is sized once; of nodes sharing an id, the largest."""
        if node is None:
            return 0
        if depth > 400:
            raise ValueError("skops nodes nested too deeply")
        return max(self._nested_one(candidate, depth) for candidate in self._candidates(node))

    def _nested_one(self, node: dict[str, Any], depth: int) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.path:
            raise self.unsafe("holds a container that contains itself")
        loader, content = node.get("__loader__"), node.get("content")
        self.path.add(key)
        if loader in ("ListNode", "TupleNode", "SetNode") or (
            loader == "NdArrayNode" and node.get("type") == "json"
        ):
            items = content if isinstance(content, list) else []
            self.budget.examine(len(items))
            size = 8 * len(items) + sum(self._nested(item, depth + 1) for item in items)
        elif loader == "DictNode":
            items = list(content.values()) if isinstance(content, dict) else []
            self.budget.examine(len(items))
            size = 16 * len(items) + sum(self._nested(item, depth + 1) for item in items)
        elif loader == "NdArrayNode" and node.get("type") == "numpy":
            shape, dtype = self._npy(node.get("file"))
            size = math.prod(shape) * max(dtype.itemsize, 8)
        elif loader == "JsonNode":
            size = len(content) if isinstance(content, str) else 0
        elif loader in ("BytesNode", "BytearrayNode"):
            size = self._member(node.get("file")).file_size
        else:
            size = 0  # objects are referenced, not expanded
        self.path.discard(key)
        self.sizes[key] = size
        return size


def _load_skops(path: Path, max_bytes: int | None) -> tuple[Any, list[tuple[Any, str]]]:
    """The object a skops file holds, and the (object, saved scikit-learn version) pair of its top-level
    object when the schema has one that looks like a version."""
    import skops.io as sio

    budget = _Budget(max_bytes, _name(path))
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("schema.json")
            total = sum(member.file_size for member in archive.infolist())
            if max_bytes is not None and total > max_bytes:
                raise LimitError(
                    f"{_name(path)} expands to more than the allowed model size", code="model_too_large"
                )
            budget.charge(
                info.file_size * 8, "the skops file's schema"
            )  # parsed JSON takes several times its text
            schema = json.loads(archive.read(info))
            found: set[tuple[str, str]] = set()
            _skops_types(schema, found)
            refused = sorted(
                f"{module}.{name}" for module, name in found if not _skops_type_allowed(module, name)
            )
            if refused:
                raise _refusal(path, refused)
            _SkopsCheck(_name(path), archive, budget).run(schema)
    except MiaError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc, "reading the skops archive") from None
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc, "reading the skops archive") from None
    for label in untrusted:
        module, _, name = label.rpartition(".")
        if not _skops_type_allowed(module, name) and label not in refused:
            refused.append(label)
    if refused:
        raise _refusal(path, refused)
    try:
        model = sio.load(path, trusted=untrusted)
    except MiaError:
        raise
    except MemoryError:
        raise LimitError(
            f"{_name(path)} needs more memory than is available to load", code="model_too_large"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc, "loading the skops file") from None
    version = _skops_saved_version(schema)
    return model, [] if version is None else [(model, version)]


def _skops_saved_version(schema: Any) -> str | None:
    """The ``_sklearn_version`` stored in the top-level object's state of a skops schema, if it looks like a
    version (it is text from the file)."""
    content = schema.get("content") if isinstance(schema, dict) else None
    if isinstance(content, dict):
        content = content.get("content", content)
        entry = content.get("_sklearn_version") if isinstance(content, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            with contextlib.suppress(ValueError):
                return _version_or_none(json.loads(entry["content"]))  # a JsonNode holds the value's JSON
    return None
