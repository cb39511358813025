"""Spare sandbox children (sandbox/spare.py): started ahead of an audit, never outliving the one that took them."""

from __future__ import annotations

import subprocess
import tempfile
import time

import pytest

from builders import REPO_ROOT
from mia_robustness.sandbox.session import Deadline, SandboxedModel
from mia_robustness.sandbox.spare import SpareChild
from mia_robustness.sandbox.stage import ModelFiles

SAMPLE = REPO_ROOT / "sample_input"
SAMPLE_FILES = ModelFiles(SAMPLE / "model.joblib", SAMPLE / "train.csv", SAMPLE / "subject.csv")


def _exited(process: subprocess.Popen, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            return True
        time.sleep(0.05)
    return False


def _open(files: ModelFiles, folder, spare: SpareChild) -> SandboxedModel:
    """A one-thread sandboxed model of ``files`` under ``folder``, offered ``spare``."""
    return SandboxedModel(
        files,
        work_parent=folder,
        threads=1,
        address_space_mb=2048,
        deadline=Deadline(60),
        progress=lambda *args: None,
        spare=spare,
    )


def test_a_spare_taken_by_an_audit_that_fails_before_its_request_is_stopped(tmp_path):
    spare = SpareChild.start(threads=1, work_parent=tmp_path)
    missing = ModelFiles(tmp_path / "gone.joblib", tmp_path / "gone.csv", tmp_path / "gone2.csv")
    try:
        with pytest.raises(OSError):
            _open(missing, tmp_path, spare)
        assert _exited(spare.process, 10), "the spare outlived the audit that took it"
        assert not spare.folder.exists()
    finally:
        if spare.process.poll() is None:
            spare.discard()


def test_a_spare_killed_while_waiting_is_replaced_by_a_fresh_child(tmp_path):
    spare = SpareChild.start(threads=1, work_parent=tmp_path)
    spare.process.kill()
    spare.process.wait()
    model = _open(SAMPLE_FILES, tmp_path, spare)
    try:
        assert model.process.pid != spare.process.pid
        assert model.folder != spare.folder and not spare.folder.exists()
        assert model.containment["sandbox"] is True
    finally:
        model.close()
    assert not model.folder.exists()


def test_a_worker_exiting_while_its_next_spare_starts_leaves_no_spare(tmp_path, monkeypatch):
    """The worker's exit (atexit: cluster._discard_spare) right after an audit's children were stopped
    (cluster._replace_spare, which starts the next spare in a thread) ends that spare too."""
    from mia_robustness.sandbox import cluster

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # mkdtemp reads TMPDIR again
    cluster._replace_spare()
    cluster._discard_spare()
    time.sleep(2)  # the starting thread, had it been left running, has set the spare by now
    left = cluster._take_spare()
    if left is not None:
        left.discard()
    assert left is None, "a spare started as the worker exited outlived it"
    assert list(tmp_path.glob("mia-sandbox-*")) == []
