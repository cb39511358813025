"""mia-robustness: how easily can an attacker tell whether a record was in a classifier's training data?"""

__version__ = "0.1.0"

from .bundle_audit import audit  # noqa: E402
from .engine import audit_estimator  # noqa: E402
from .errors import MiaError  # noqa: E402
from .options import AuditOptions  # noqa: E402
from .report import Report, render  # noqa: E402

__all__ = ["AuditOptions", "MiaError", "Report", "audit", "audit_estimator", "render", "__version__"]
