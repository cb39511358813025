"""The report's settings as what reproduces it: a ``mia-robustness audit`` command line and ``config.json``.

Only options a user passes back are written: not values resolved at run time (the ``resolved`` section,
and in reports before schema 1.1 the ``resolved_*`` keys of ``settings``), nor nested objects.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

NOT_OPTIONS = {"resolved_device"}  # settings keys of old reports that report a result, not an option
# Options whose CLI flag is a switch pair (``--what-if`` / ``--no-what-if``), not ``--name value``.
SWITCHES = {"what_if"}


def is_option(key: str, value: Any) -> bool:
    """Whether a ``settings`` entry is an option a user passes back (not a run-time result)."""
    return key not in NOT_OPTIONS and not key.startswith("resolved_") and not isinstance(value, Mapping)


def run_time_values(settings: Mapping[str, Any], resolved: Any) -> list[tuple[str, Any]]:
    """``(name, value)`` of what was resolved at run time, named as schema 1.0 named it (``resolved_device``).

    Reads ``settings`` entries that are not options (old reports) and the ``resolved`` section (new ones).
    """
    found = [(str(k), v) for k, v in settings.items() if not is_option(str(k), v)]
    if isinstance(resolved, Mapping):
        found += [(f"resolved_{k}", v) for k, v in resolved.items()]
    return found


def cli_command(settings: Mapping[str, Any], bundle: str = "BUNDLE", multiline: bool = False) -> str:
    """The ``mia-robustness audit`` command line that reproduces ``settings``.

    Parameters
    ----------
    settings:
        The report's ``settings`` (option name -> value); run-time results (``resolved_*`` keys of old
        reports) and unset (``None``) options are left out; a switch (:data:`SWITCHES`) is written as
        ``--name`` or ``--no-name``.
    bundle:
        What to write for the bundle's path.
    multiline:
        One flag per line with shell continuations, for display.

    Returns the shell-quoted command (not HTML-escaped).
    """
    words = [["mia-robustness", "audit", bundle]]
    for key, value in settings.items():
        if value is None or not is_option(str(key), value):
            continue
        flag = f"--{str(key).replace('_', '-')}"
        if key in SWITCHES and isinstance(value, bool):
            words.append([flag if value else f"--no-{flag[2:]}"])
            continue
        if isinstance(value, (list, tuple)):
            text = ",".join(_option_value(v) for v in value)
        else:
            text = _option_value(value)
        words.append([flag, text])
    lines = [" ".join(shlex.quote(word) for word in group) for group in words]
    return " \\\n  ".join(lines) if multiline else " ".join(lines)


def settings_json(settings: Mapping[str, Any]) -> str:
    """The options as a JSON object, one option per line (lists kept on their line)."""
    items = [(str(k), v) for k, v in settings.items() if is_option(str(k), v)]
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in items)
    return "{\n" + body + "\n}" if items else "{}"


def _option_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)
