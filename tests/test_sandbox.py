"""Containment: attacker code run on purpose inside the sandbox child reaches nothing, and the audit answers
with a clean error whatever the child does (crash, spin, lie, exhaust memory).

The probe is a test-only hook of :class:`~mia_robustness.sandbox.session.SandboxedModel`: source code the
child runs right after confining itself, where a model that beat the loader's allowlist would run.
"""

from __future__ import annotations

import json
import os
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from builders import CHEAPEST, REPO_ROOT, noisy_numeric_frame, split_fit, write_bundle
from mia_robustness import audit
from mia_robustness.cli import main as cli_main
from mia_robustness.errors import DataError, LimitError, MiaError, ModelError
from mia_robustness.sandbox.confine import nobody_cannot_run_python
from mia_robustness.sandbox.session import Deadline, SandboxedModel
from mia_robustness.sandbox.stage import ModelFiles

SAMPLE = REPO_ROOT / "sample_input"
SAMPLE_FILES = ModelFiles(SAMPLE / "model.joblib", SAMPLE / "train.csv", SAMPLE / "subject.csv")
LIMIT_MB = 2048


def run_probe(tmp_path: Path, source: str, *, seconds: float | None = 60, memory_mb: int = LIMIT_MB) -> dict:
    """Run ``source`` inside a sandbox child and return what it put in ``result``."""
    model = SandboxedModel(
        SAMPLE_FILES,
        work_parent=tmp_path,
        threads=1,
        address_space_mb=memory_mb,
        deadline=Deadline(seconds),
        progress=lambda *args: None,
        _test_probe=textwrap.dedent(source),
    )
    try:
        return model.probe()
    finally:
        model.close()


ATTEMPT = """
import os, signal, socket, subprocess
def attempt(name, action):
    try:
        result[name] = ["allowed", repr(action())[:80]]
    except BaseException as error:
        result[name] = ["denied", type(error).__name__]
"""


def test_attacker_code_in_the_child_cannot_exec_connect_write_read_or_signal(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("the parent's secret")
    secret.chmod(0o644)
    marker = outside / "marker"
    result = run_probe(
        tmp_path,
        ATTEMPT
        + f"""
result["system"] = os.system("touch {marker}")  # the C library's status 127: the shell never started
attempt("subprocess", lambda: subprocess.run(["/bin/sh", "-c", "touch {marker}"]))
attempt("execv", lambda: os.execv("/bin/sh", ["sh", "-c", "touch {marker}"]))
def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid
attempt("fork", fork)
attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
attempt("write_outside", lambda: open("{outside}/written", "w").write("x"))
attempt("write_tmp", lambda: open("/tmp/mia-sandbox-escape-test", "w").write("x"))
attempt("read_secret", lambda: open("{secret}").read())
attempt("read_parent_environ", lambda: open(f"/proc/{{os.getppid()}}/environ", "rb").read())
attempt("signal_parent", lambda: os.kill(os.getppid(), 0))
attempt("write_inside", lambda: (work / "scratch.txt").write_text("fine"))
result["environment"] = sorted(os.environ)
""",
    )
    assert result["system"] != 0
    for name in ("subprocess", "execv", "fork", "socket", "unix_socket"):
        assert result[name][0] == "denied", (name, result[name])
    for name in ("write_outside", "write_tmp", "read_secret", "read_parent_environ", "signal_parent"):
        assert result[name][0] == "denied", (name, result[name])
    assert result["write_inside"][0] == "allowed"
    assert not marker.exists() and not (outside / "written").exists()
    assert not Path("/tmp/mia-sandbox-escape-test").exists()
    assert not any(name.startswith(("AWS_", "MIA_")) for name in result["environment"])


def test_memory_above_the_limit_fails_inside_the_child(tmp_path):
    result = run_probe(
        tmp_path,
        ATTEMPT + f"attempt('allocate', lambda: len(bytearray({LIMIT_MB + 256} * 2**20)))\n",
    )
    assert result["allocate"] == ["denied", "MemoryError"]


def test_child_runs_as_nobody_where_the_parent_is_root(tmp_path):
    result = run_probe(tmp_path, "import os\nresult['uid'] = os.geteuid()\n")
    if os.geteuid() == 0 and nobody_cannot_run_python() is None:
        assert result["uid"] != 0
    elif os.geteuid() == 0:
        pytest.skip(
            f"nobody cannot read this Python installation ({nobody_cannot_run_python()}): the child stays root"
        )
    else:
        assert result["uid"] == os.geteuid()


def test_a_crash_in_the_child_is_a_clean_error(tmp_path):
    with pytest.raises(ModelError) as caught:
        run_probe(tmp_path, "import ctypes\nctypes.string_at(0)\n")
    assert caught.value.code == "model_crashed"
    assert "signal" in caught.value.message


def test_a_spinning_child_is_stopped_at_the_deadline_naming_the_stage(tmp_path):
    with pytest.raises(LimitError) as caught:
        run_probe(tmp_path, "while True:\n    pass\n", seconds=3)
    assert caught.value.code == "audit_timeout"
    assert "during loading" in caught.value.message
    assert not list(tmp_path.glob("mia-sandbox-*")), "the child's folder is removed"


def framed(header: dict) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    "forged",
    [
        b"\xff\xff\xff\xff",  # a header length over the limit
        b"\x00\x00\x00\x05[1,2]",  # not an object
        framed({"kind": "probe", "arrays": [{"name": "x", "dtype": "|O", "shape": [9]}]}) + b"\x00" * 72,
        framed({"kind": "probe", "arrays": [{"name": "x", "dtype": "<f8", "shape": [2**39]}]}),
        framed({"kind": "probe", "result": {}, "arrays": [{"name": "x", "dtype": "<f8", "shape": [-1]}]}),
    ],
    ids=["huge-header", "not-an-object", "object-dtype", "huge-array", "negative-shape"],
)
def test_a_lying_child_cannot_make_the_parent_parse_hostile_messages(tmp_path, forged):
    with pytest.raises(ModelError) as caught:
        run_probe(tmp_path, f"answers.write({forged!r})\nanswers.flush()\nimport time\ntime.sleep(30)\n")
    assert caught.value.code == "model_protocol_violation"


def test_text_raised_inside_model_code_never_reaches_the_user(tmp_path):
    """Finding 2: a FunctionTransformer whose kw_args hold a function makes numpy print the function's
    repr, address included; every audit child would share it. Only the exception class may travel."""
    pipeline = Pipeline(
        [
            ("log", FunctionTransformer(np.abs)),
            ("forest", RandomForestClassifier(n_estimators=5, random_state=0)),
        ]
    )
    model, members, non_members = split_fit(noisy_numeric_frame(400, seed=1), pipeline)
    model.steps[0][1].kw_args = {"dtype": accuracy_score}
    bundle = write_bundle(tmp_path, model, members, non_members)
    with pytest.raises(MiaError) as caught:
        audit(bundle, CHEAPEST)
    message = caught.value.message
    assert caught.value.code in ("model_rejected_data", "predict_failed")
    assert "0x" not in message and "accuracy_score" not in message and "<function" not in message
    assert "TypeError" in message


def test_cli_timeout_names_the_stage(tmp_path, capsys):
    forest = RandomForestClassifier(n_estimators=20, random_state=0)
    bundle = write_bundle(tmp_path, *split_fit(noisy_numeric_frame(1000, seed=2), forest))
    status = cli_main(["audit", str(bundle), "--timeout", "1", "-q", "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "time limit of 1 s" in err and "stopped during" in err
    assert not (tmp_path / "r.json").exists()


def test_sandboxed_and_in_process_audits_give_the_same_figures(tmp_path):
    forest = RandomForestClassifier(n_estimators=10, random_state=0)
    bundle = write_bundle(tmp_path, *split_fit(noisy_numeric_frame(600, seed=3), forest))
    options = {
        "attack_models": "threshold,rf,lira,rmia",
        "repeats": 1,
        "proportions": "0.5,1",
        "reference_models": 2,
    }
    contained = audit(bundle, options).to_dict()
    trusted = audit(bundle, options, sandbox=False).to_dict()
    assert contained.pop("containment")["sandbox"] is True
    assert trusted.pop("containment") == {"sandbox": False}
    for report in (contained, trusted):
        report.pop("timings")
    assert contained == trusted


def test_model_files_are_only_opened_inside_the_child(tmp_path, monkeypatch):
    """The audit process never unpickles: with the loader broken here, a sandboxed audit still works."""
    import mia_robustness.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("the parent loaded a model")

    monkeypatch.setattr(loading, "load_model", refuse)
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    bundle = write_bundle(tmp_path, *split_fit(noisy_numeric_frame(400, seed=4), forest))
    report = audit(bundle, CHEAPEST)
    assert report.containment["sandbox"] is True and report.containment["seccomp"] is True


@pytest.mark.parametrize(
    "named", ["ServerBusyError", "AuditCrashedError", "PayloadTooLargeError", "UnsupportedMediaError"]
)
def test_a_lying_childs_error_cannot_pass_for_the_servers_own(tmp_path, named):
    """The child runs the model: its refusal may name only a 400 class, never the server's 503/500 (which
    tell a client to retry, or blame the server) nor a 413/415 about the upload."""
    forged = framed({"kind": "error", "class": named, "code": "bad_model", "message": "the model is wrong"})
    with pytest.raises(MiaError) as caught:
        run_probe(tmp_path, f"answers.write({forged!r})\nanswers.flush()\n")
    assert type(caught.value) is ModelError and caught.value.http_status == 400
    real = framed({"kind": "error", "class": "DataError", "code": "too_few_rows", "message": "too few rows"})
    with pytest.raises(MiaError) as caught:
        run_probe(tmp_path, f"answers.write({real!r})\nanswers.flush()\n")
    assert type(caught.value) is DataError and caught.value.code == "too_few_rows"
