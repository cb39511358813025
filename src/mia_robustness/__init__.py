"""mia-robustness: how easily can an attacker tell whether a record was in a classifier's training data?"""

from .bundle_audit import audit
from .engine import audit_estimator
from .errors import MiaError
from .options import AuditOptions
from .report import Report, render
from .version import __version__

__all__ = ["AuditOptions", "MiaError", "Report", "audit", "audit_estimator", "render", "__version__"]
