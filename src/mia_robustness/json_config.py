"""JSON text that carries options (a bundle's ``config.json``, a training job's ``hyperparameters.json`` and
``resourceconfig.json``, a header), parsed with bounds.

:func:`load_json_config` bounds size, nesting depth and number length before :mod:`json` sees the text, and
answers every problem with a 4xx error instead of a ``RecursionError`` or ``ValueError``. Its messages, and
every other that quotes a user's value, go through :func:`shown` (cut short, escaped).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import InputError, OptionsError

# load_json_config's limits. Options need an object holding lists (depth 2) of short numbers.
MAX_JSON_CONFIG_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
MAX_JSON_NUMBER_CHARS = 100


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as an error message may quote it: ``repr`` (which escapes control, bidi and other
    unprintable characters), cut to ``limit`` characters; huge integers and long lists are described,
    never spelled out (``repr`` of an integer over 4,300 digits would itself raise)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, (list, tuple, set, frozenset, dict)) and len(value) > 10:
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # cut before repr, so a long string is never copied whole
        text = repr(value)
        return text[: limit + 2] + "..."
    try:
        text = repr(value)
    except Exception:  # a huge integer inside a short list, a broken __repr__
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit] + "..."


def shown_names(names, most: int = 5) -> str:
    """Column names for a message: the first ``most``, each cut short and escaped."""
    names = list(names)
    text = ", ".join(shown(str(n), 40) for n in names[:most])
    return text + (", ..." if len(names) > most else "")


_JSON_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def _json_depth_over(text: str, limit: int) -> bool:
    """Whether ``text`` nests arrays/objects deeper than ``limit`` (brackets inside strings ignored).

    Linear in the text and without recursion, so it runs before :mod:`json` would recurse.
    """
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _JSON_STRUCTURE.finditer(text):
        char, position = match.group(), match.start()
        if in_string:
            if position == escaped_at:
                continue
            if char == "\\":
                escaped_at = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def load_json_config(
    data: str | bytes | bytearray,
    what: str = "config.json",
    *,
    error: type[InputError] = OptionsError,
    code: str = "bad_config",
    max_bytes: int = MAX_JSON_CONFIG_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    max_number_chars: int = MAX_JSON_NUMBER_CHARS,
) -> dict[str, Any]:
    """Parse untrusted JSON text that must be an object of option names to values, within limits.

    Parameters
    ----------
    data:
        The JSON text, as bytes (UTF-8, a BOM allowed) or str.
    what:
        What the text is, for messages (``"config.json"``, ``"hyperparameters.json"``, a header name).
    error, code:
        The error class (any 4xx :class:`~mia_robustness.errors.InputError`) and code raised for every
        problem, so each shell keeps its own (a bundle: ``BundleError`` / ``bad_config``).
    max_bytes, max_depth, max_number_chars:
        At most this many bytes (UTF-8), this much nesting of arrays and objects (1 = a flat object), and
        this many characters in one number literal.

    Returns
    -------
    The object as a dict. Refused, each with a message saying what is wrong and how to fix it: text over
    ``max_bytes``, not UTF-8, not JSON, nested deeper than ``max_depth`` (checked before parsing, so
    no ``RecursionError``), a number longer than ``max_number_chars`` (no ``ValueError`` from Python's
    4,300-digit integer limit, no slow conversion), ``NaN`` / ``Infinity`` (not JSON), a key given
    twice, and anything but an object at the top level.
    """
    # A str has at least as many UTF-8 bytes as characters: only encode one that might fit.
    if isinstance(data, str) and len(data) <= max_bytes:
        size = len(data.encode("utf-8", "surrogatepass"))
    else:
        size = len(data)
    if size > max_bytes:
        raise error(
            f"{what} is larger than {max_bytes // 1024} KiB; it should hold only audit options, e.g. "
            '{"repeats": 1}',
            code=code,
        )
    if isinstance(data, str):
        text = data.removeprefix("\ufeff")
    else:
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise error(
                f"{what} is not UTF-8 text (byte {exc.start} is not valid); save it as UTF-8 JSON", code=code
            ) from None
    if _json_depth_over(text, max_depth):
        raise error(
            f"{what} nests arrays or objects more than {max_depth} levels deep; options need only an "
            'object of names to values or lists, e.g. {"proportions": [0.5, 1]}',
            code=code,
        )

    def number(literal: str, convert):
        if len(literal) > max_number_chars:
            raise error(
                f"{what} holds a number of {len(literal)} characters, more than the {max_number_chars} "
                "allowed; no option needs one that long",
                code=code,
            )
        return convert(literal)

    def constant(name: str):
        raise error(f"{what} holds {name}, which is not a JSON number; give a plain number", code=code)

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise error(f"{what} sets {shown(key)} more than once; keep one of them", code=code)
            result[key] = value
        return result

    try:
        value = json.loads(
            text,
            parse_int=lambda literal: number(literal, int),
            parse_float=lambda literal: number(literal, float),
            parse_constant=constant,
            object_pairs_hook=unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise error(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); write it as an "
            'object of option names to values, e.g. {"repeats": 1}',
            code=code,
        ) from None
    except (RecursionError, ValueError, OverflowError) as exc:  # second guards behind the checks above
        raise error(
            f"{what} cannot be parsed ({type(exc).__name__}); write it as a flat object of option names to "
            'values, e.g. {"repeats": 1}',
            code=code,
        ) from None
    if not isinstance(value, dict):
        raise error(
            f'{what} must be a JSON object of option names to values, e.g. {{"repeats": 1}}, not a '
            f"{type(value).__name__}",
            code=code,
        )
    return value
