"""Hostile model files built by hand, each thrown at the real ``load_model``.

Forged object pointers (an object array filled from raw bytes: each element is whatever lies at that
address), tiny files that ask for gigabytes, a post-load check that stopped early, and text from the file
reaching a terminal. Payloads that crash or exhaust the process on an unprotected loader are loaded in a
forked child, so a segfault or a runaway allocation fails the test instead of killing pytest; the child
also measures the load's time and peak memory.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import signal
import struct
import time
import warnings
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from builders import wait_until
from mia_robustness.errors import LimitError, MiaError, ModelError, UnsafeModelError
from mia_robustness.loading import load_model, structure

# ---------------------------------------------------------------------------------------------------
# Writing pickles opcode by opcode

PROTO = b"\x80\x04"
MARK, STOP, TUPLE, TUPLE1, TUPLE2, TUPLE3 = b"(", b".", b"t", b"\x85", b"\x86", b"\x87"
REDUCE, BUILD, NEWOBJ, EMPTY_TUPLE, EMPTY_DICT, EMPTY_LIST = b"R", b"b", b"\x81", b")", b"}", b"]"
SETITEMS, APPENDS, NONE, TRUE, FALSE = b"u", b"e", b"N", b"\x88", b"\x89"


def glob(module: str, name: str) -> bytes:
    """GLOBAL: push ``module.name`` (through the loader's gate)."""
    return f"c{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    data = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def raw(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def num(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def call(func: bytes, *args: bytes) -> bytes:
    return func + tup(*args) + REDUCE


def dtype_with_flags(code: str, state_tail: bytes) -> bytes:
    """``numpy.dtype(code, False, True)`` then BUILD with a hand-written state: what a pickled dtype is."""
    return call(glob("numpy", "dtype"), text(code), FALSE, TRUE) + tup(num(3), text("|"), state_tail) + BUILD


def forged_object_dtype() -> bytes:
    """An object dtype whose flags (0) deny it holds objects, so numpy takes raw bytes as its pointers."""
    return dtype_with_flags("O8", NONE + NONE + NONE + num(-1) + num(-1) + num(0))


def object_dtype() -> bytes:
    return dtype_with_flags("O8", NONE + NONE + NONE + num(-1) + num(-1) + num(63))


def int_dtype() -> bytes:
    return (
        call(glob("numpy", "dtype"), text("i8"), FALSE, TRUE)
        + tup(num(3), text("<"), NONE + NONE + NONE + num(-1) + num(-1) + num(0))
        + BUILD
    )


def reconstructed_array(dtype: bytes, shape: int, data: bytes) -> bytes:
    """``_reconstruct(ndarray, (0,), 'b')`` then ``__setstate__((1, (shape,), dtype, False, data))``."""
    empty = call(
        glob("numpy._core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), num(0) + TUPLE1, text("b")
    )
    return empty + tup(num(1), num(shape) + TUPLE1, dtype, FALSE, data) + BUILD


POINTER = b"\x41" * 8  # an address nothing is mapped at: dereferencing it segfaults

# ---------------------------------------------------------------------------------------------------
# Loading in a forked child


def _vm_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def load_in_child(path: Path, *, timeout: float = 30.0, headroom: int = 1536 * 2**20) -> dict:
    """``load_model(path)`` in a forked child: its outcome, seconds and peak-RSS growth in MB.

    The child's address space is capped at ``headroom`` bytes above what it has, so an unprotected
    loader fails there with MemoryError rather than taking gigabytes of a shared machine.
    """
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork to load hostile files in a child process")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            if _vm_size():
                _, hard = resource.getrlimit(resource.RLIMIT_AS)
                cap = _vm_size() + headroom
                resource.setrlimit(
                    resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard)
                )
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            try:
                load_model(path)
                result = {"outcome": "loaded", "code": None, "message": ""}
            except MiaError as exc:
                result = {"outcome": type(exc).__name__, "code": exc.code, "message": exc.message}
            except BaseException as exc:  # noqa: BLE001 - reported to the parent as a failure
                result = {"outcome": f"raised {type(exc).__name__}", "code": None, "message": repr(exc)[:300]}
            result["seconds"] = time.perf_counter() - start
            result["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)

    def exit_status() -> tuple[int] | None:  # a tuple: a status of 0 must count as done
        done, status = os.waitpid(pid, os.WNOHANG)
        return (status,) if done else None

    try:
        try:
            (status,) = wait_until(exit_status, timeout, interval=0.01, what=f"loading {path.name}")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"loading {path.name} still ran after {timeout:.0f} s")
        with os.fdopen(read_end, "rb") as pipe:
            read_end = -1
            data = pipe.read()
    finally:
        if read_end != -1:
            os.close(read_end)
    if os.WIFSIGNALED(status):
        pytest.fail(f"loading {path.name} crashed the process (signal {os.WTERMSIG(status)})")
    return json.loads(data)


def assert_refused_fast(result: dict, *, kind: str, code: str, words: str) -> None:
    assert result["outcome"] == kind, result
    assert result["code"] == code, result
    assert words in result["message"], result
    assert result["seconds"] < 1.0, result
    assert result["rss_growth_mb"] < 100, result


# ---------------------------------------------------------------------------------------------------
# skops files by hand

SKOPS_PROTOCOL = 2


def json_node(value) -> dict:
    return {
        "__class__": "str",
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(value),
    }


def tuple_node(*items: dict) -> dict:
    return {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": list(items)}


def write_skops(path: Path, schema: dict, files: dict[str, bytes] | None = None) -> Path:
    schema = {**schema, "protocol": SKOPS_PROTOCOL, "_skops_version": "0.16.0"}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", json.dumps(schema))
        for name, data in (files or {}).items():
            archive.writestr(name, data)
    return path


def skops_with_attribute(
    path: Path, model, name: str, node: dict, files: dict[str, bytes] | None = None
) -> Path:
    """A real skops file of ``model`` with one more attribute, ``name``, written as ``node``."""
    sio.dump(model, path)
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
        members = {member: archive.read(member) for member in archive.namelist() if member != "schema.json"}
    attributes = schema["content"]
    attributes["content"][name] = node
    attributes["key_types"]["content"].append(dict(attributes["key_types"]["content"][0]))
    schema.pop("protocol"), schema.pop("_skops_version")
    return write_skops(path, schema, {**members, **(files or {})})


def fitted_logistic() -> LogisticRegression:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3))
    return LogisticRegression().fit(features, (features[:, 0] > 0).astype(int))


# ---------------------------------------------------------------------------------------------------
# 1. Forged object pointers: no object array is ever filled from raw bytes

FORGED = {
    # numpy.ndarray((1,), 'O', b'AAAAAAAA'): the red team's 28-byte segfault
    "ndarray_object_from_bytes": call(glob("numpy", "ndarray"), num(1) + TUPLE1, text("O"), raw(POINTER))
    + STOP,
    # a dtype whose flags hide that it holds objects, filled by ndarray.__setstate__ from bytes
    "setstate_with_forged_dtype": PROTO + reconstructed_array(forged_object_dtype(), 1, raw(POINTER)) + STOP,
    # the same dtype through protocol 5's _frombuffer
    "frombuffer_with_forged_dtype": PROTO
    + call(
        glob("numpy._core.numeric", "_frombuffer"),
        raw(POINTER),
        forged_object_dtype(),
        num(1) + TUPLE1,
        text("C"),
    )
    + STOP,
    # a structured dtype whose object field is denied by its flags, shown with str() (which reads it)
    "structured_dtype_hiding_an_object_field": PROTO
    + call(
        glob("builtins", "str"),
        reconstructed_array(
            dtype_with_flags(
                "V8",
                NONE
                + tup(text("a"))
                + EMPTY_DICT
                + text("a")
                + tup(object_dtype(), num(0))
                + b"s"
                + num(8)
                + num(1)
                + num(0),
            ),
            1,
            raw(POINTER),
        ),
    )
    + STOP,
    # object field overlapping an int field: writing the int writes the pointer
    "overlapping_object_field": PROTO
    + reconstructed_array(
        dtype_with_flags(
            "V16",
            NONE
            + tup(text("a"), text("b"))
            + EMPTY_DICT
            + MARK
            + text("a")
            + tup(object_dtype(), num(0))
            + text("b")
            + tup(int_dtype(), num(0))
            + SETITEMS
            + num(16)
            + num(1)
            + num(27),
        ),
        1,
        EMPTY_LIST + MARK + tup(NONE, num(0x41414141)) + APPENDS,
    )
    + STOP,
    # the same call as cls.__new__(cls, **kwargs) through NEWOBJ_EX
    "ndarray_through_newobj_ex": PROTO
    + glob("numpy", "ndarray")
    + EMPTY_TUPLE
    + EMPTY_DICT
    + MARK
    + text("shape")
    + num(1)
    + TUPLE1
    + text("dtype")
    + text("O")
    + text("buffer")
    + raw(POINTER)
    + SETITEMS
    + b"\x92"
    + STOP,
    # a list one element short leaves an uninitialised pointer in the array
    "object_array_from_a_short_list": PROTO
    + reconstructed_array(object_dtype(), 4, EMPTY_LIST + MARK + num(1) + APPENDS)
    + STOP,
}


def joblib_wrapper_with_forged_dtype() -> bytes:
    """joblib's format: a NumpyArrayWrapper whose raw bytes follow its BUILD; its dtype is the forged one."""
    state = (
        EMPTY_DICT
        + MARK
        + text("subclass")
        + glob("numpy", "ndarray")
        + text("shape")
        + num(1)
        + TUPLE1
        + text("order")
        + text("C")
        + text("dtype")
        + forged_object_dtype()
        + text("allow_mmap")
        + FALSE
        + text("numpy_array_alignment_bytes")
        + NONE
        + SETITEMS
    )
    return (
        PROTO
        + glob("joblib.numpy_pickle", "NumpyArrayWrapper")
        + EMPTY_TUPLE
        + NEWOBJ
        + state
        + BUILD
        + POINTER
        + STOP
    )


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_pointers_in_pickles_are_refused(tmp_path, name):
    path = tmp_path / "model.pkl"
    path.write_bytes(FORGED[name])
    result = load_in_child(path)
    assert result["outcome"] == "UnsafeModelError", result
    assert result["code"] == "unsafe_model"
    assert "model.pkl" in result["message"] and "joblib.dump" in result["message"]


def test_forged_pointers_in_a_joblib_array_wrapper_are_refused(tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(joblib_wrapper_with_forged_dtype())
    result = load_in_child(path)
    assert result["outcome"] == "UnsafeModelError", result


def _ndarray_args_node(shape_node: dict) -> dict:
    buffer = {
        "__class__": "bytes",
        "__module__": "builtins",
        "__loader__": "BytesNode",
        "file": "pointer.bin",
    }
    return tuple_node(shape_node, json_node("O"), buffer)


@pytest.mark.parametrize("loader", ["ConstructorFromReduceNode", "LossNode"])
def test_forged_pointers_in_skops_constructor_nodes_are_refused(tmp_path, loader):
    args = _ndarray_args_node(tuple_node(json_node(1)))
    node = {"__class__": "ndarray", "__module__": "numpy", "__loader__": loader}
    if loader == "LossNode":
        node |= {"__reduce__": {"args": args}, "content": tuple_node()}
    else:
        node["content"] = args
    path = write_skops(tmp_path / "model.skops", node, {"pointer.bin": POINTER})
    result = load_in_child(path)
    assert result["outcome"] == "UnsafeModelError", result
    assert "numpy.ndarray" in result["message"]


def test_object_arrays_saved_the_legitimate_way_still_load(tmp_path):
    """numpy pickles object arrays as a list of their objects; those, and numbers in every layout the
    formats use, must keep loading."""
    rng = np.random.default_rng(1)
    model = fitted_logistic()
    model.labels_ = np.array(["yes", "no", None], dtype=object)
    model.records_ = np.array([(1, "a"), (2, ("b", 3))], dtype=[("x", "i8"), ("y", "O")])  # an object field
    model.masked_ = np.ma.MaskedArray(rng.normal(size=4), mask=[False, True, False, False])
    model.columns_ = np.asfortranarray(rng.normal(size=(3, 4)))  # protocol 5: _frombuffer, order F
    model.rows_ = rng.normal(size=(4, 3)).T  # protocol 5: _frombuffer, order K with an axis order
    for how in ("pickle2", "pickle4", "pickle5", "joblib"):
        path = tmp_path / f"model_{how}.pkl"
        if how == "joblib":
            joblib.dump(model, path)
        else:
            path.write_bytes(pickle.dumps(model, protocol=int(how[-1])))
        loaded = load_model(path).estimator
        assert list(loaded.labels_) == ["yes", "no", None]
        assert loaded.records_.tolist() == model.records_.tolist()
        np.testing.assert_array_equal(loaded.masked_.mask, model.masked_.mask)
        np.testing.assert_array_equal(loaded.columns_, model.columns_)
        np.testing.assert_array_equal(loaded.rows_, model.rows_)
    for_skops = fitted_logistic()
    for_skops.labels_, for_skops.masked_ = model.labels_, model.masked_
    sio.dump(for_skops, tmp_path / "model.skops")
    loaded = load_model(tmp_path / "model.skops").estimator
    assert list(loaded.labels_) == ["yes", "no", None]
    np.testing.assert_array_equal(loaded.masked_.mask, model.masked_.mask)


def test_numpy_shared_dtypes_cannot_be_rewritten(tmp_path):
    # dtype('i8', False, False) is numpy's own int64; BUILD on it would change every int64 array
    payload = PROTO + call(glob("numpy", "dtype"), text("i8"), FALSE, FALSE)
    payload += tup(num(3), text(">"), NONE + NONE + NONE + num(-1) + num(-1) + num(0)) + BUILD + STOP
    path = tmp_path / "model.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafeModelError, match="built-in dtype"):
        load_model(path)
    assert np.dtype("i8").byteorder == "=" and np.arange(3).sum() == 3


def test_setitems_only_fill_dicts(tmp_path):
    # SETITEMS on an array would call ndarray.__setitem__ with the file's keys and values
    array = call(glob("numpy", "ndarray"), num(4) + TUPLE1, text("u1"))
    path = tmp_path / "model.pkl"
    path.write_bytes(PROTO + array + MARK + num(0) + num(7) + SETITEMS + STOP)
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert info.value.code == "corrupt_model"


# ---------------------------------------------------------------------------------------------------
# 2. The check after loading fails closed and sees everything


def _hidden_reader() -> CountVectorizer:
    return CountVectorizer(input="filename")


def _damaged_tree() -> DecisionTreeClassifier:
    features = np.random.default_rng(0).random((50, 3))
    tree = DecisionTreeClassifier(random_state=0).fit(features, (features[:, 0] > 0.5).astype(int))
    state = tree.tree_.__getstate__()
    state["nodes"]["left_child"][0] = 10**6
    tree.tree_.__setstate__(state)
    return tree


def _masked_objects(value):
    return np.ma.MaskedArray(np.array([value, 1], dtype=object), mask=[True, False])


HIDING_PLACES = {
    "after_300k_numbers": lambda value: [value, *range(300_000)],
    "dict_key": lambda value: {(value, "key"): 1},
    "sparse_matrix_attribute": lambda value: _with_attribute(sp.csr_matrix(np.eye(2)), value),
    "slice": lambda value: slice(value, None),
}


def _with_attribute(obj, value):
    obj.notes = value
    return obj


@pytest.mark.parametrize("hidden", ["reader", "damaged_tree"])
@pytest.mark.parametrize("place", sorted(HIDING_PLACES))
def test_nothing_hides_from_the_check_after_loading(tmp_path, place, hidden):
    model = fitted_logistic()
    model.notes_ = HIDING_PLACES[place](_hidden_reader() if hidden == "reader" else _damaged_tree())
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    with pytest.raises(ModelError) as info:
        load_model(path)
    if hidden == "reader":
        assert info.value.code == "unsafe_model" and "input='filename'" in info.value.message
    else:
        assert info.value.code == "corrupt_model" and "tree structure is damaged" in info.value.message


def test_masked_object_arrays_are_checked_masked_elements_too(tmp_path):
    model = fitted_logistic()
    model.notes_ = _masked_objects(_hidden_reader())
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    with pytest.raises(UnsafeModelError, match="input='filename'"):
        load_model(path)


def test_a_model_too_large_to_check_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(structure, "_MAX_CHECKED_OBJECTS", 1_000)
    model = fitted_logistic()
    model.notes_ = [(index,) for index in range(2_000)]
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    with pytest.raises(LimitError) as info:
        load_model(path)
    assert info.value.code == "model_too_large" and "too many to check" in info.value.message


def test_a_large_forest_passes_the_check(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 5))
    labels = (features[:, 0] + rng.normal(size=400) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=300, max_depth=6, random_state=0).fit(features, labels)
    for how in ("joblib", "skops"):
        path = tmp_path / f"forest.{how}"
        joblib.dump(forest, path) if how == "joblib" else sio.dump(forest, path)
        loaded = load_model(path).estimator
        np.testing.assert_array_equal(loaded.predict_proba(features), forest.predict_proba(features))


# ---------------------------------------------------------------------------------------------------
# 3. Tiny files, huge memory: memory is counted as it is built

THREE_GIB = 3 * 2**30

MEMORY_BOMBS = {
    # the red team's 32-byte pickle: bytearray(3 GiB)
    "bytearray_of_an_int": (
        PROTO + call(glob("builtins", "bytearray"), num(THREE_GIB)) + STOP,
        "unsafe",
        "integer size",
    ),
    "bytes_of_an_int": (
        PROTO + call(glob("builtins", "bytes"), num(THREE_GIB)) + STOP,
        "unsafe",
        "integer size",
    ),
    # the same through protocol 0's INST, NEWOBJ (cls.__new__) and copyreg's reconstructor (base.__new__)
    "bytearray_through_inst": (
        MARK + f"I{THREE_GIB}\nibuiltins\nbytearray\n.".encode(),
        "unsafe",
        "integer size",
    ),
    "bytes_through_newobj": (
        PROTO + glob("builtins", "bytes") + tup(num(THREE_GIB)) + NEWOBJ + STOP,
        "unsafe",
        "integer size",
    ),
    "bytes_through_copyreg": (
        PROTO
        + call(
            glob("copyreg", "_reconstructor"),
            glob("builtins", "bytes"),
            glob("builtins", "bytes"),
            num(THREE_GIB),
        )
        + STOP,
        "unsafe",
        "integer size",
    ),
    # the red team's 61-byte pickle: set() over a zero-stride view posing as 10^12 elements
    "set_of_zero_stride_array": (
        PROTO
        + call(
            glob("builtins", "set"),
            call(
                glob("numpy", "ndarray"), num(10**12) + TUPLE1, text("u1"), raw(b"x"), num(0), num(0) + TUPLE1
            ),
        )
        + STOP,
        "unsafe",
        "strided view",
    ),
    "set_of_a_huge_range": (
        PROTO + call(glob("builtins", "set"), call(glob("builtins", "range"), num(10**12))) + STOP,
        "limit",
        "allowed model size",
    ),
    "empty_array_of_10_gib": (
        PROTO
        + call(
            glob("numpy._core.multiarray", "_reconstruct"),
            glob("numpy", "ndarray"),
            num(10 * 2**30) + TUPLE1,
            text("b"),
        )
        + STOP,
        "limit",
        "allowed model size",
    ),
    "empty_array_of_10_gib_numpy1_names": (
        PROTO
        + call(
            glob("numpy.core.multiarray", "_reconstruct"),
            glob("numpy", "ndarray"),
            num(10 * 2**30) + TUPLE1,
            text("b"),
        )
        + STOP,
        "limit",
        "allowed model size",
    ),
    "shape_that_overflows": (
        PROTO + call(glob("numpy", "ndarray"), num(2**40) + num(2**40) + TUPLE2, text("u1")) + STOP,
        "unsafe",
        "overflows",
    ),
    # a list of 1000 references to a list of 1000 references to 1000 ints: a few KiB of pickle, 10^9
    # elements once numpy expands it
    "masked_array_of_shared_nested_lists": (
        PROTO
        + EMPTY_LIST
        + b"\x94"
        + MARK
        + num(0) * 1000
        + APPENDS
        + EMPTY_LIST
        + b"\x94"
        + MARK
        + b"h\x00" * 1000
        + APPENDS
        + b"\x94"
        + glob("numpy.ma", "MaskedArray")
        + EMPTY_LIST
        + MARK
        + b"h\x01" * 1000
        + APPENDS
        + TUPLE1
        + REDUCE
        + STOP,
        "limit",
        "allowed model size",
    ),
    "str_of_an_object": (
        PROTO
        + call(glob("builtins", "str"), call(glob("numpy", "ndarray"), num(10) + TUPLE1, text("u1")))
        + STOP,
        "unsafe",
        "str()",
    ),
}

OUTCOMES = {"unsafe": ("UnsafeModelError", "unsafe_model"), "limit": ("LimitError", "model_too_large")}


@pytest.mark.parametrize("name", sorted(MEMORY_BOMBS))
def test_tiny_pickles_cannot_build_gigabytes(tmp_path, name):
    payload, outcome, words = MEMORY_BOMBS[name]
    path = tmp_path / "model.pkl"
    path.write_bytes(payload)
    kind, code = OUTCOMES[outcome]
    assert_refused_fast(load_in_child(path), kind=kind, code=code, words=words)


def test_joblib_array_wrapper_cannot_ask_for_gigabytes(tmp_path):
    wrapper = joblib_wrapper_with_forged_dtype().replace(forged_object_dtype(), int_dtype())
    wrapper = wrapper.replace(num(1) + TUPLE1, num(2**40) + TUPLE1, 1)
    path = tmp_path / "model.joblib"
    path.write_bytes(wrapper)
    assert_refused_fast(
        load_in_child(path), kind="LimitError", code="model_too_large", words="allowed model size"
    )


def _skops_bytearray_bomb(path: Path) -> Path:
    """The red team's 475-byte skops file: bytearray(3.4 GB) from a constructor node."""
    node = {
        "__class__": "bytearray",
        "__module__": "builtins",
        "__loader__": "ConstructorFromReduceNode",
        "content": tuple_node(json_node(3_400_000_000)),
    }
    return write_skops(path, node)


def _skops_seed_pool_bomb(path: Path) -> Path:
    """numpy's SeedSequence(pool_size=n) allocates and mixes n words."""
    generator = np.random.default_rng(0)
    sio.dump(generator, path)
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
    schema["content"]["seed_seq"]["content"]["pool_size"] = json_node(1_000_000_000)
    schema.pop("protocol"), schema.pop("_skops_version")
    return write_skops(path, schema)


def _skops_npy_header_bomb(path: Path) -> Path:
    """An .npy member whose header claims 3 GiB it does not hold."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (THREE_GIB,)}
    )
    node = {
        "__class__": "ndarray",
        "__module__": "numpy",
        "__loader__": "NdArrayNode",
        "type": "numpy",
        "file": "a.npy",
    }
    return write_skops(path, node, {"a.npy": header.getvalue()})


def _skops_list_as_ndarray(path: Path) -> Path:
    """A ListNode naming numpy.ndarray as its class: skops calls numpy.ndarray([3 GiB])."""
    node = {
        "__class__": "ndarray",
        "__module__": "numpy",
        "__loader__": "ListNode",
        "content": [json_node(THREE_GIB)],
    }
    return write_skops(path, node)


SKOPS_BOMBS = {
    "bytearray_constructor": (_skops_bytearray_bomb, "UnsafeModelError", "builtins.bytearray"),
    "seed_pool": (_skops_seed_pool_bomb, "UnsafeModelError", "seed pool"),
    "npy_header": (_skops_npy_header_bomb, "ModelError", "ValueError"),
    "list_node_as_ndarray": (_skops_list_as_ndarray, "UnsafeModelError", "numpy.ndarray"),
}


@pytest.mark.parametrize("name", sorted(SKOPS_BOMBS))
def test_tiny_skops_files_cannot_build_gigabytes(tmp_path, name):
    build, kind, words = SKOPS_BOMBS[name]
    path = build(tmp_path / "model.skops")
    assert path.stat().st_size < 2_000
    result = load_in_child(path)
    assert result["outcome"] == kind, result
    assert words in result["message"], result
    assert result["seconds"] < 1.0 and result["rss_growth_mb"] < 100, result


def test_skops_byte_members_are_charged_each_time_they_are_read(tmp_path):
    # every BytesNode reads its member again: 200 nodes on one 1 MiB member build 200 MiB
    nodes = [
        {"__class__": "bytes", "__module__": "builtins", "__loader__": "BytesNode", "file": "b.bin"}
    ] * 200
    schema = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": nodes}
    path = write_skops(tmp_path / "model.skops", schema, {"b.bin": bytes(2**20)})
    with pytest.raises(LimitError):
        load_model(path, max_bytes=100 * 2**20)


# ---------------------------------------------------------------------------------------------------
# 4. and 5. Text from the file never reaches a terminal

ESCAPE = "\x1b[2J\x1b[31m"


def test_saved_version_that_is_not_a_version_is_none(tmp_path):
    model = fitted_logistic()
    raw_pickle = pickle.dumps(model)
    current = sklearn.__version__.encode()
    assert raw_pickle.count(current) == 1 and len(current) >= 4
    hostile = (b"\x1b[" + b"2" * (len(current) - 4) + b"J\n")[: len(current)]  # same length keeps it valid
    path = tmp_path / "model.pkl"
    path.write_bytes(raw_pickle.replace(current, hostile))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(path)
    assert loaded.saved_version is None
    assert not any("\x1b" in str(warning.message) for warning in caught)


def test_skops_saved_version_that_is_not_a_version_is_none(tmp_path):
    path = tmp_path / "model.skops"
    sio.dump(fitted_logistic(), path)
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
        members = {member: archive.read(member) for member in archive.namelist() if member != "schema.json"}
    schema["content"]["content"]["_sklearn_version"]["content"] = json.dumps(ESCAPE + "\nHACKED")
    schema.pop("protocol"), schema.pop("_skops_version")
    write_skops(path, schema, members)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_model(path).saved_version is None


def test_exception_text_from_the_file_is_not_repeated(tmp_path):
    # numpy.dtype("<text>") raises TypeError quoting the text
    path = tmp_path / "model.pkl"
    path.write_bytes(PROTO + call(glob("numpy", "dtype"), text(f"{ESCAPE}EVIL\nat 0x7ffd0000")) + STOP)
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = info.value.message
    assert info.value.code == "corrupt_model"
    assert "TypeError while unpickling" in message and "joblib.dump" in message
    assert "EVIL" not in message and "0x7ffd" not in message and "\x1b" not in message


def test_refused_global_names_are_cleaned_and_shortened(tmp_path):
    module, name = f"os{ESCAPE}\nfake", "system" + "x" * 500
    payload = PROTO + text(module) + text(name) + b"\x93" + STOP  # STACK_GLOBAL takes any text
    path = tmp_path / "model.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafeModelError) as info:
        load_model(path)
    message = info.value.message
    assert "os[2J[31mfake.system" in message
    assert "\x1b" not in message and "\n" not in message and "x" * 200 not in message


def test_refused_skops_type_names_are_cleaned(tmp_path):
    node = {"__class__": f"Evil{ESCAPE}\nClass", "__module__": "evil", "__loader__": "ObjectNode"}
    path = write_skops(tmp_path / "model.skops", node)
    with pytest.raises(UnsafeModelError) as info:
        load_model(path)
    assert "evil.Evil" in info.value.message and "\x1b" not in info.value.message


def test_a_bundle_member_name_with_escapes_is_cleaned(tmp_path):
    path = tmp_path / f"model{ESCAPE}.pkl"
    path.write_bytes(b"not a pickle at all\n")
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert "\x1b" not in info.value.message and "model[2J[31m.pkl" in info.value.message
