"""The hardened unpicklers: ``.pkl`` / ``.pickle`` / ``.joblib`` files without running code they bring.

A pickle is a program: every global it names is imported and may be called with arguments the file
chooses, so ``pickle.load`` and ``joblib.load`` run whatever an uploaded model file says. The file's kind
is found by content (plain pickle, joblib's format, compressed with zlib, gzip, bz2, lzma or xz, through
joblib's own detection) and it is read with one of two unpicklers that share :class:`.gate._Gate`: the
pure-Python ``pickle._Unpickler`` (its opcodes can be checked one by one) and joblib's
``NumpyUnpickler``. Both send every global to the allowlist, refuse persistent ids, and check every
call and ``BUILD`` before it runs and what it built after. joblib's ``NumpyArrayWrapper`` is replaced by
a subclass that checks its fields before reading and reads object arrays' nested pickle through the same
gate; memory-mapped arrays and joblib's pre-0.10 format (it reads companion files with
``numpy.load(allow_pickle=True)``) are refused. Reads stop at ``max_bytes`` after decompression
(:class:`_LimitedReader`).
"""

from __future__ import annotations

import _compat_pickle
import pickle
from pathlib import Path
from typing import Any

from ..errors import LimitError, MiaError, ModelError
from .gate import _Gate, _Refused
from .messages import _corrupt, _name, _refusal
from .policy import _Disallowed


def _python3_names(proto: int, module: str, name: str) -> tuple[str, str]:
    """Protocols 0-2 write Python 2 names (``__builtin__``, ``copy_reg``); map them as pickle does."""
    if proto < 3 and isinstance(module, str) and isinstance(name, str):
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        return _compat_pickle.IMPORT_MAPPING.get(module, module), name
    return module, name


def _make_unpicklers() -> tuple[type, type]:
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class GateMixin:
        """What both unpicklers share: globals through the gate, no persistent ids, every call and
        ``BUILD`` checked before it runs and its result after, containers filled only when they are
        containers."""

        _gate: _Gate
        stack: list[Any]

        def find_class(self, module: str, name: str) -> Any:
            found = self._gate.find_class(*_python3_names(self.proto, module, name))
            return _safe_array_wrapper() if found is NumpyArrayWrapper else found

        def persistent_load(self, pid: Any) -> Any:
            raise pickle.UnpicklingError("persistent ids are not allowed in a model file")

        def gated_build(self, build: Any) -> None:
            inst = self.stack[-2]
            self._gate.check_build(inst, self.stack[-1])
            if isinstance(inst, _Refused) or inst is _Refused:
                self.stack.pop()
                return
            build(self)
            self._gate.check_built(inst)
            if self.stack[-1] is not inst:  # joblib replaced its array wrapper by the array it read
                self._gate.check_built(self.stack[-1])

        def load_reduce(self) -> None:
            stack = self.stack
            args = stack.pop()
            func = stack[-1]
            self._gate.check_call(func, args)
            stack[-1] = self._gate.check_built(func(*args))

        def load_newobj(self) -> None:
            args = self.stack.pop()
            cls = self.stack.pop()
            self._gate.check_call(cls, args)
            self.append(self._gate.check_built(cls.__new__(cls, *args)))

        def load_newobj_ex(self) -> None:
            kwargs = self.stack.pop()
            args = self.stack.pop()
            cls = self.stack.pop()
            self._gate.check_call(cls, args, kwargs)
            self.append(self._gate.check_built(cls.__new__(cls, *args, **kwargs)))

        def _instantiate(self, klass: Any, args: list[Any]) -> None:  # INST and OBJ
            args = tuple(args)
            self._gate.check_call(klass, args)
            if args or not isinstance(klass, type) or hasattr(klass, "__getinitargs__"):
                value = klass(*args)
            else:
                value = klass.__new__(klass)
            self.append(self._gate.check_built(value))

        def load_setitem(self) -> None:
            value = self.stack.pop()
            key = self.stack.pop()
            if self._gate.check_fill(self.stack[-1], dict, "SETITEM"):
                self.stack[-1][key] = value

        def load_setitems(self) -> None:
            items = self.pop_mark()
            target = self.stack[-1]
            if self._gate.check_fill(target, dict, "SETITEMS"):
                for index in range(0, len(items), 2):
                    target[items[index]] = items[index + 1]

        def load_append(self) -> None:
            value = self.stack.pop()
            if self._gate.check_fill(self.stack[-1], list, "APPEND"):
                self.stack[-1].append(value)

        def load_appends(self) -> None:
            items = self.pop_mark()
            if self._gate.check_fill(self.stack[-1], list, "APPENDS"):
                self.stack[-1].extend(items)

        def load_additems(self) -> None:
            items = self.pop_mark()
            if self._gate.check_fill(self.stack[-1], set, "ADDITEMS"):
                self.stack[-1].update(items)

    def gated_dispatch(base: dict[int, Any], build: Any) -> dict[int, Any]:
        dispatch = base.copy()
        dispatch[pickle.BUILD[0]] = build
        for opcode, method in (
            (pickle.REDUCE, GateMixin.load_reduce),
            (pickle.NEWOBJ, GateMixin.load_newobj),
            (pickle.NEWOBJ_EX, GateMixin.load_newobj_ex),
            (pickle.SETITEM, GateMixin.load_setitem),
            (pickle.SETITEMS, GateMixin.load_setitems),
            (pickle.APPEND, GateMixin.load_append),
            (pickle.APPENDS, GateMixin.load_appends),
            (pickle.ADDITEMS, GateMixin.load_additems),
        ):
            dispatch[opcode[0]] = method
        return dispatch

    class HardenedUnpickler(
        GateMixin, pickle._Unpickler
    ):  # the pure-Python unpickler: its opcodes can be checked one by one
        def __init__(self, file: Any, gate: _Gate) -> None:
            super().__init__(file)
            self._gate = gate

        def load_build(self) -> None:
            self.gated_build(pickle._Unpickler.load_build)

        dispatch = gated_dispatch(pickle._Unpickler.dispatch, load_build)

    class HardenedNumpyUnpickler(GateMixin, NumpyUnpickler):
        def __init__(self, file: Any, gate: _Gate) -> None:
            super().__init__("", file, ensure_native_byte_order=True, mmap_mode=None)
            self._gate = gate

        def load_build(self) -> None:
            self.gated_build(NumpyUnpickler.load_build)  # replaces NumpyArrayWrapper by the array it reads

        dispatch = gated_dispatch(NumpyUnpickler.dispatch, load_build)

    return HardenedUnpickler, HardenedNumpyUnpickler


_UNPICKLERS: tuple[type, type] | None = None
_ARRAY_WRAPPER: type | None = None


def _unpicklers() -> tuple[type, type]:
    global _UNPICKLERS
    if _UNPICKLERS is None:
        _UNPICKLERS = _make_unpicklers()
    return _UNPICKLERS


def _safe_array_wrapper() -> type:
    """joblib's NumpyArrayWrapper, its fields checked before it reads, object arrays' nested pickle read
    through the same gate."""
    global _ARRAY_WRAPPER
    if _ARRAY_WRAPPER is None:
        from joblib.numpy_pickle import NumpyArrayWrapper
        from joblib.numpy_pickle_utils import _ensure_native_byte_order

        class SafeNumpyArrayWrapper(NumpyArrayWrapper):
            def read_array(self, unpickler: Any, ensure_native_byte_order: bool) -> Any:
                unpickler._gate.check_wrapper(self)
                if not self.dtype.hasobject:
                    return super().read_array(unpickler, ensure_native_byte_order)
                # joblib's own code reads this nested stream with a plain Unpickler whose opcodes are
                # unchecked; ours checks them and shares the outer file's gate and budget.
                inner = _unpicklers()[0](unpickler.file_handle, unpickler._gate)
                array = inner.load()
                return _ensure_native_byte_order(array) if ensure_native_byte_order else array

            def read_mmap(self, unpickler: Any) -> Any:
                raise pickle.UnpicklingError("memory-mapped arrays are not supported")

        _ARRAY_WRAPPER = SafeNumpyArrayWrapper
    return _ARRAY_WRAPPER


class _LimitedReader:
    """File-like view that refuses to read more than ``limit`` bytes (decompression bombs)."""

    def __init__(self, raw: Any, limit: int | None, name: str) -> None:
        self._raw = raw
        self._left = limit
        self._name = name

    def _take(self, data: bytes) -> bytes:
        if self._left is not None:
            self._left -= len(data)
            if self._left < 0:
                raise LimitError(
                    f"{self._name} expands to more than the allowed model size when read; "
                    "use a smaller model or raise the limit",
                    code="model_too_large",
                )
        return data

    def _cap(self, size: int) -> int:
        if self._left is None:
            return size
        return self._left + 1 if size is None or size < 0 or size > self._left + 1 else size

    def read(self, size: int = -1) -> bytes:
        return self._take(self._raw.read(self._cap(size)))

    def readline(self, size: int = -1) -> bytes:
        return self._take(self._raw.readline(self._cap(size)))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def peek(self, size: int = 0) -> bytes:
        return self._raw.peek(size)


def _load_pickle(path: Path, max_bytes: int | None) -> tuple[Any, list[tuple[Any, str]]]:
    """The object a pickle or joblib file holds, and the (object, saved scikit-learn version) pairs noted
    from its ``BUILD`` states before scikit-learn removed them."""
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    gate = _Gate(_name(path), max_bytes)
    with open(path, "rb") as handle:
        try:
            with _validate_fileobject_and_memmap(handle, str(path), None) as (fileobj, _):
                if isinstance(fileobj, str):  # joblib < 0.10 "zfile" format: arrays in companion files
                    raise ModelError(
                        f"{_name(path)} was saved by joblib older than 0.10, a format that is not supported; "
                        "re-save it with a current joblib.dump",
                        code="unsupported_model_format",
                    )
                unpickler = _unpicklers()[1](_LimitedReader(fileobj, max_bytes, _name(path)), gate)
                model = unpickler.load()
        except MiaError:
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise
        except _Disallowed:
            raise _refusal(path, gate.refused) from None
        except MemoryError:
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise LimitError(
                f"{_name(path)} needs more memory than is available to load", code="model_too_large"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any failure of a hostile stream is a bad file, not a crash
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise _corrupt(path, exc, "unpickling") from None
    if gate.refused:
        raise _refusal(path, gate.refused)
    return model, gate.versions
