"""The messages between the audit and its sandbox child: JSON headers and raw numeric arrays, no pickle.

A message on the wire is a 4-byte big-endian header length, the header (UTF-8 JSON object), then the
bytes of each array the header's ``arrays`` list declares (``{"name", "dtype", "shape"}``), in C order.

The child may be running a hostile model's code, so everything it sends is parsed as untrusted input:
the header has a size cap, arrays only numeric dtypes of the declared shape with a total byte cap, and
strings are stripped of control characters and cut to length (:func:`clean_text`) before any reaches a
user. Nothing it sends is ever unpickled or evaluated.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

MAX_HEADER_BYTES = 4 * 1024**2
# Numeric dtypes an array may have on the wire (little-endian, as both ends are this machine).
WIRE_DTYPES = frozenset({"<f8", "<f4", "<i8", "<i4", "|i1", "|u1", "|b1"})
MAX_ARRAY_DIMENSIONS = 2
_LENGTH = struct.Struct(">I")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


class ProtocolError(Exception):
    """A message that does not follow the protocol (a crashed or hostile child)."""


def clean_text(value: Any, limit: int = 1000) -> str:
    """``value`` as text a terminal or a page can show safely: control characters (ANSI escapes,
    newlines, bidirectional overrides) become one space each run, and the length is capped."""
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_message(stream: BinaryIO, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] = {}) -> None:  # noqa: B006 - read only
    """Send one message: ``header`` (JSON-able) and named numeric ``arrays``."""
    parts = []
    declared = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        array = array.astype(dtype, copy=False)
        if dtype.str not in WIRE_DTYPES:
            raise ProtocolError(f"array {name} has dtype {dtype.str}, which the protocol does not carry")
        declared.append({"name": name, "dtype": dtype.str, "shape": list(array.shape)})
        parts.append(array.tobytes())
    body = json.dumps({**header, "arrays": declared}, allow_nan=True).encode("utf-8")
    stream.write(_LENGTH.pack(len(body)) + body)
    for part in parts:
        stream.write(part)
    stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    chunks = []
    left = size
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(stream: BinaryIO, max_array_bytes: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Receive one message; returns its header and its arrays by name.

    Raises
    ------
    EOFError
        The channel closed before a message began (or in the middle of one).
    ProtocolError
        The message is malformed or over a limit: header over :data:`MAX_HEADER_BYTES`, arrays over
        ``max_array_bytes`` in all, a dtype outside :data:`WIRE_DTYPES`.
    """
    (length,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"a message header of {length} bytes is over the limit")
    try:
        header = json.loads(_read_exactly(stream, length).decode("utf-8"))
    except (ValueError, RecursionError):
        raise ProtocolError("a message header is not valid JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise ProtocolError("a message header is not a JSON object with an arrays list")
    arrays: dict[str, np.ndarray] = {}
    budget = max_array_bytes
    for spec in header.pop("arrays", []):
        name, dtype, shape = _array_spec(spec)
        size = (
            int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if shape
            else np.dtype(dtype).itemsize
        )
        if size > budget:
            raise ProtocolError("the arrays of a message are larger than the audit can hold")
        budget -= size
        arrays[name] = np.frombuffer(_read_exactly(stream, size), dtype=dtype).reshape(shape)
    return header, arrays


def _array_spec(spec: Any) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(spec, dict):
        raise ProtocolError("an array declaration is not an object")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or dtype not in WIRE_DTYPES or not isinstance(shape, list):
        raise ProtocolError("an array declaration lacks a name, a numeric dtype or a shape")
    if len(shape) > MAX_ARRAY_DIMENSIONS or not all(type(n) is int and 0 <= n < 2**40 for n in shape):
        raise ProtocolError("an array declaration has an impossible shape")
    return name, dtype, tuple(shape)


def expect(header: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``header[key]``, which must be an instance of ``kind`` (``bool`` never passes for ``int``)."""
    value = header.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(f"message field {key!r} is missing or of the wrong type")
    return value
