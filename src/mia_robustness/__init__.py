"""mia-robustness: how easily can an attacker tell whether a record was in a classifier's training data?"""

__version__ = "0.1.0"

from .audit import audit  # noqa: E402
from .errors import MiaError  # noqa: E402
from .options import AuditOptions  # noqa: E402
from .report import Report, render  # noqa: E402

__all__ = ["AuditOptions", "MiaError", "Report", "audit", "render", "__version__"]
