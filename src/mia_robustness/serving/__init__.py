"""The SageMaker serving shell: ``serve`` runs an HTTP server answering ``/ping`` and ``/invocations``.

Kept free of imports so that the audit children (which import :mod:`.child`) load no Flask or gunicorn.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``serve`` executable (see :func:`mia_robustness.serving.server.main`)."""
    from .server import main as serve

    return serve(argv)
