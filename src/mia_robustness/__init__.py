"""mia-robustness: how easily can an attacker tell whether a record was in a classifier's training data?

The public names are loaded on first use (PEP 562), so that importing one submodule (the sandbox child
imports only the model stage) does not import the whole package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "audit": "bundle_audit",
    "audit_estimator": "engine",
    "check_bundle": "bundle_check",
    "make_bundle": "bundle_check",
    "MiaError": "errors",
    "AuditOptions": "options",
    "Report": "report",
    "render": "report",
}

if TYPE_CHECKING:
    from .bundle_audit import audit
    from .bundle_check import check_bundle, make_bundle
    from .engine import audit_estimator
    from .errors import MiaError
    from .options import AuditOptions
    from .report import Report, render

__all__ = [
    "AuditOptions",
    "MiaError",
    "Report",
    "audit",
    "audit_estimator",
    "check_bundle",
    "make_bundle",
    "render",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
