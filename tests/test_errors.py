"""errors.py: the class line sets code and status; error_class turns a class name from another process
back into its class, and nothing else."""

from __future__ import annotations

import pytest

from mia_robustness import errors
from mia_robustness.errors import DataError, InputError, LimitError, MiaError, ModelError, error_class
from mia_robustness.serving.child import Refused
from mia_robustness.serving.runner import _rebuild_error


def _package_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("mia_robustness"):
            found.append(sub)
        found += _package_subclasses(sub)
    return found


SUBCLASSES = _package_subclasses(MiaError)


def test_every_error_class_of_the_package_lives_in_errors_py():
    assert len(SUBCLASSES) >= 15
    assert {cls.__module__ for cls in SUBCLASSES} == {"mia_robustness.errors"}


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda cls: cls.__name__)
def test_every_subclass_round_trips_by_name(cls):
    assert error_class(cls.__name__) is cls
    assert error_class(cls.__name__, default=ModelError) is cls
    rebuilt = error_class(cls.__name__)("what went wrong", code="some_code")
    assert type(rebuilt) is cls and rebuilt.code == "some_code" and rebuilt.message == "what went wrong"


@pytest.mark.parametrize(
    "name",
    ["NoSuchError", "MiaError", "Exception", "OSError", "annotations", "error_class", "__builtins__", "", None, 42,
     ["DataError"], b"DataError", "dataerror"],
)  # fmt: skip
def test_any_other_name_gives_the_default_never_another_class(name):
    assert error_class(name) is MiaError
    assert error_class(name, default=ModelError) is ModelError


def test_the_class_line_sets_code_and_status_and_subclasses_inherit_them():
    assert (InputError.default_code, InputError.http_status) == ("bad_input", 400)
    assert (DataError.default_code, DataError.http_status) == ("bad_data", 400)
    assert (errors.PayloadTooLargeError.default_code, errors.PayloadTooLargeError.http_status) == (
        "payload_too_large",
        413,
    )
    assert issubclass(errors.PayloadTooLargeError, LimitError)
    assert (errors.ServerBusyError.default_code, errors.ServerBusyError.http_status) == ("server_busy", 503)
    assert (MiaError.default_code, MiaError.http_status) == ("internal_error", 500)
    assert DataError("rows do not fit").to_dict() == {"error": "bad_data", "error-message": "rows do not fit"}


def test_the_server_rebuilds_a_childs_refusal_with_its_class_and_status():
    rebuilt = _rebuild_error(Refused("UnsupportedMediaError", "unsupported_media_type", "send a zip"))
    assert type(rebuilt) is errors.UnsupportedMediaError and rebuilt.http_status == 415
    assert (rebuilt.code, rebuilt.message) == ("unsupported_media_type", "send a zip")
    unknown = _rebuild_error(Refused("SystemExit", "bad", "no"))
    assert type(unknown) is MiaError and unknown.http_status == 500


@pytest.mark.parametrize(
    "name", ["ServerBusyError", "ShuttingDownError", "AuditCrashedError", "ServerTimeoutError"]
)
def test_base_bounds_what_a_name_can_choose(name):
    """A child that may lie (the sandbox's) names only a class under ``base``; the server's own 5xx classes
    give the default."""
    assert error_class(name, default=ModelError, base=InputError) is ModelError
    assert error_class("DataError", default=ModelError, base=InputError) is DataError
    assert error_class(name) is getattr(errors, name)
