"""Run audits on SageMaker from Python: upload bundles, start the jobs, wait, download the reports.

The shell for the container's SageMaker contract, seen from the user's side: it packs and uploads
bundles, starts batch transforms, training jobs or asynchronous invocations with the contract's settings
(network isolation on), and brings the reports back. It never opens a model.

>>> from mia_robustness import sagemaker
>>> where = sagemaker.Where(image="<account>.dkr.ecr.<region>.amazonaws.com/mia-robustness", role="arn:...")
>>> results = sagemaker.audit(["bundle.zip"], "batch", where, "s3://bucket/audits", "reports")  # doctest: +SKIP
>>> results[0].report["summary"]["risk_level"]  # doctest: +SKIP
"""

from __future__ import annotations

from .aws import make_session
from .client import Run, delete_endpoint, find_run, submit, wait
from .contract import MODES, Where
from .reports import Result, audit, collect, finish

__all__ = [
    "MODES",
    "Result",
    "Run",
    "Where",
    "audit",
    "collect",
    "delete_endpoint",
    "finish",
    "find_run",
    "make_session",
    "submit",
    "wait",
]
