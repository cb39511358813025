"""Property-based fuzzing of everything a caller controls, from the engine to the HTTP server.

Properties:

* the engine: ``audit(bytes)`` of arbitrary bytes or of a real bundle with bytes flipped, inserted,
  deleted or cut off either succeeds or raises a :class:`MiaError` with a 4xx status, never another
  exception, and leaves nothing in its working folder (in-process, and through the sandbox child with
  the model or a table mutated); option strings (the custom-attributes header) raise only
  :class:`OptionsError`;
* the server (a real `./serve`): arbitrary bodies, mutated bundles, custom-attributes, Content-Type and
  Accept headers are never answered 500, and every error is a JSON body with ``error`` and
  ``error-message``.

The archive extractor alone is fuzzed in test_archive.py. Examples are derandomized (the same on every
run, no example database) and few enough that the module runs in well under a minute.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from builders import (
    CHEAPEST,
    archive_bytes,
    as_header,
    folder_files,
    noisy_numeric_frame,
    split_fit,
    write_bundle,
)
from mia_robustness import audit
from mia_robustness.errors import MiaError, OptionsError
from mia_robustness.options import AuditOptions, options_from_mapping, parse_key_value_pairs
from serving_helpers import ATTRIBUTES

CHEAPEST_HEADER = as_header(CHEAPEST)
NOT_AN_ARCHIVE = b"x0,label\n1,0\n" * 8

FUZZ = {
    "deadline": None,
    "derandomize": True,  # the same examples on every run, so CI results are reproducible
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


KINDS = ("zip", "tar", "tar.gz")


def _make_members() -> dict[str, bytes]:
    """The files of a small real bundle (110 rows per side) with a cheap config.json.

    The model is a logistic regression: flipped bytes in a decision tree's node arrays can make its
    native ``predict`` read out of bounds, which loading.py documents as not protected in-process (the
    server runs audits in a child process for that reason); fuzzing it here could crash the test run.
    """
    frame = noisy_numeric_frame(220, n_features=3, seed=7)
    model, members, non_members = split_fit(frame, LogisticRegression(max_iter=200))
    config = {"attack_models": ["threshold"], "repeats": 1, "proportions": [1.0]}  # CHEAPEST as JSON values
    with tempfile.TemporaryDirectory() as scratch:
        return folder_files(write_bundle(Path(scratch), model, members, non_members, config=config))


MEMBERS = _make_members()
BASES = {kind: archive_bytes(MEMBERS, kind) for kind in KINDS}
#: The files the sandbox child opens: the model and the two tables (not config.json).
CHILD_FILES = sorted(name for name in MEMBERS if name != "config.json")


def _edit(draw, original: bytes) -> bytes:
    """``original`` with 1-4 edits: flip a bit, overwrite a run, insert bytes, delete a run, truncate.

    Positions are drawn as fractions of the length, so edits land all over the file rather than
    clustering at its start.
    """
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        edit = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]))
        at = min(int(draw(st.floats(0, 1, exclude_max=True)) * len(data)), len(data) - 1)
        if edit == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "overwrite":
            run = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(run)] = run
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


@st.composite
def mutated_bundles(draw, child_files_only: bool = False) -> bytes:
    """A real bundle, edited either as archive bytes (the extractor's side) or in one of its files and
    then packed into a valid archive (the model loader's, the table reader's and the config's side).

    With ``child_files_only``, only a file the sandbox child reads (the model or a table) is edited: the
    archive and config.json are read by the parent, the same code with or without a sandbox."""
    kind = draw(st.sampled_from(KINDS))
    if child_files_only:
        name = draw(st.sampled_from(CHILD_FILES))
    elif draw(st.sampled_from(["archive", "member", "member"])) == "archive":
        return _edit(draw, BASES[kind])
    else:
        name = draw(st.sampled_from(sorted(MEMBERS)))
    return archive_bytes({**MEMBERS, name: _edit(draw, MEMBERS[name])}, kind)


arbitrary_bodies = st.tuples(
    st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08\x00", b"BZh9", b"\xfd7zXZ\x00"]),
    st.binary(max_size=2048),
).map(lambda parts: parts[0] + parts[1])

# Header values an HTTP client can send: one line of latin-1 text (control characters included).
header_text = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters="\r\n"), max_size=80
).map(str.strip)
option_names = st.sampled_from(sorted(AuditOptions.__dataclass_fields__) + ["", "attack_modles", "x"])
attribute_headers = st.one_of(
    header_text,
    st.lists(st.tuples(option_names, header_text), max_size=5).map(
        lambda pairs: ";".join(f"{key}={value}" for key, value in pairs)
    ),
)
media_types = st.one_of(
    header_text,
    st.sampled_from(["application/zip", "application/x-tar", "text/csv", "*/*", "application/json"]).flatmap(
        lambda media: header_text.map(lambda params: f"{media};{params}")
    ),
)


# --------------------------------------------------------------------------------------------------
# The engine, in-process
# --------------------------------------------------------------------------------------------------


def _audit_only_raises_input_errors(body: bytes, sandbox: bool = True) -> None:
    with tempfile.TemporaryDirectory() as work:
        try:
            report = audit(body, overrides=CHEAPEST, workdir=work, workers=1, sandbox=sandbox)
        except MiaError as error:
            assert 400 <= error.http_status < 500, (type(error).__name__, error.code, error.message)
            assert error.code and error.message
            event(f"refused: {error.code}")  # shown by pytest --hypothesis-show-statistics
        else:
            assert report.to_dict()["data"]["rows_per_side"] > 0
            event("audited")
        assert list(Path(work).iterdir()) == [], "the audit left files in its working folder"


def test_the_unmutated_bases_audit_cleanly():
    for body in BASES.values():
        report = audit(body, overrides=CHEAPEST, workers=1)
        assert report.data.rows_per_side == 110


# The parent's side (extractor, config, the checks before and after the child) is the same code with or
# without a sandbox, so most mutated bundles go through the in-process audit (a fraction of a second
# each, where a sandbox child's start is one to three seconds): the model loader and the table reader are
# the hardened ones in both. The model is a logistic regression, safe to load mutated in-process (above).
@settings(max_examples=100, **FUZZ)
@given(body=mutated_bundles())
def test_engine_mutated_bundles_only_raise_input_errors(body: bytes) -> None:
    _audit_only_raises_input_errors(body, sandbox=False)


# Through the sandbox child (the default path), only files the child reads are mutated, so every example
# starts one and reaches its loader: 15 cover as many child-side cases as the 40 mixed ones this test
# used to run (in which about 45% never got past the parent).
@settings(max_examples=15, **FUZZ)
@given(body=mutated_bundles(child_files_only=True))
def test_engine_mutated_child_files_only_raise_input_errors_through_the_sandbox(body: bytes) -> None:
    _audit_only_raises_input_errors(body)


@settings(max_examples=100, **FUZZ)
@given(body=arbitrary_bodies)
def test_engine_arbitrary_bytes_only_raise_input_errors(body: bytes) -> None:
    _audit_only_raises_input_errors(body)


@settings(max_examples=300, **FUZZ)
@given(text=attribute_headers)
def test_option_strings_only_raise_options_errors(text: str) -> None:
    try:
        options_from_mapping(parse_key_value_pairs(text))
    except OptionsError as error:
        assert error.http_status == 400 and error.message


# --------------------------------------------------------------------------------------------------
# The server, over HTTP
# --------------------------------------------------------------------------------------------------


def _never_500_always_json(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code == 200:
        event("answered 200")
        return
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        response.status_code,
        response.headers.get("Content-Type"),
        response.text[:300],
    )
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("error-message"), str) and body["error-message"], body
    assert "Traceback" not in body["error-message"]
    event(f"answered {response.status_code} {body['error']}")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux for the server fixture")
@settings(max_examples=20, **FUZZ)  # each a sandboxed audit, like the engine's 15 above
@given(body=mutated_bundles())
def test_server_mutated_bundles_never_500(server, body: bytes) -> None:
    _never_500_always_json(
        server.invoke(body, attributes=CHEAPEST_HEADER, **{"Content-Type": "application/zip"})
    )


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux for the server fixture")
@settings(max_examples=15, **FUZZ)
@given(body=arbitrary_bodies)
def test_server_arbitrary_bodies_never_500(server, body: bytes) -> None:
    _never_500_always_json(
        server.invoke(body, attributes=CHEAPEST_HEADER, **{"Content-Type": "application/octet-stream"})
    )


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux for the server fixture")
@settings(max_examples=30, **FUZZ)
@given(attributes=attribute_headers, content_type=media_types, accept=st.one_of(st.none(), media_types))
def test_server_arbitrary_headers_never_500(
    server, attributes: str, content_type: str, accept: str | None
) -> None:
    # Not an archive: whatever the headers say, no audit runs, so a header that happens to be a valid
    # but expensive option (repeats=9999) costs nothing.
    headers = {ATTRIBUTES: attributes, "Content-Type": content_type}
    if accept is not None:
        headers["Accept"] = accept
    response = requests.post(f"{server.url}/invocations", data=NOT_AN_ARCHIVE, headers=headers, timeout=60)
    _never_500_always_json(response)
    assert response.status_code != 200


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux for the server fixture")
def test_server_is_healthy_and_clean_after_fuzzing(server):
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert server.leftovers() == []
    assert server.invoke(BASES["zip"], attributes=CHEAPEST_HEADER).status_code == 200
