"""ONNX files: checked with ``onnx`` before onnxruntime sees a byte, then run on the CPU only.

An ``.onnx`` file is a protobuf message, not a program, but onnxruntime can be told by the file itself to
read other files (a tensor whose data is *external*: a path that the runtime opens, relative to the model or
absolute) and to run code from elsewhere (a node in a custom operator domain, which needs a library
registered for it). So before a session is made, the parsed model is walked whole, every message at every
depth (initializers, sparse initializers, ``Constant`` nodes and tensor attributes, the subgraphs of
``If`` / ``Loop`` / ``Scan``, model-local function bodies, training information), and refused when:

* any tensor keeps its data outside the file (``data_location == EXTERNAL`` or ``external_data`` entries);
* any node, opset import or model-local function names a domain other than ONNX's own (``""``,
  ``ai.onnx``, ``ai.onnx.ml``): no custom operators, no onnxruntime contrib or EP-context nodes;
* the file is larger than the model-size budget, or is no ONNX model at all (a pickle, a zip archive,
  text), or fails ``onnx.checker``.

The session is then made from the checked message, re-serialised (what onnxruntime parses is exactly what
was checked, never the upload's own bytes, and without metadata, where onnxruntime can find session
settings), with the CPU execution provider only, no custom-op library, no optimised copy written, and one
thread. Refusals never repeat text from the file: operators, domains and names are counted or given by
position. :mod:`.onnx_model` turns the session into an estimator-like adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import LimitError, ModelError, UnsafeModelError
from .budget import _size
from .messages import HEAD_BYTES, _corrupt, _name, looks_like
from .onnx_model import OnnxInput, OnnxOutputs, build_adapter

ONNX_SUFFIX = ".onnx"
#: Operator domains of the ONNX standard; any other names operators whose code is not in the file.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
#: Threads of the onnxruntime session: tabular rows are cheap to score, and the audit's own workers
#: (the sweep, the reference fits) are what should use the cores.
SESSION_THREADS = 1

_SAVE_HINT = (
    "convert the fitted model with skl2onnx (to_onnx) or export it with torch.onnx.export into one "
    "self-contained file"
)


def load_onnx(path: Path, *, max_bytes: int | None, classes: list[Any] | None = None) -> Any:
    """Check the ONNX file at ``path`` and return its estimator-like adapter (:mod:`.onnx_model`; a graph
    with class scores is taken as giving probabilities until :func:`.onnx_model.settle_scores` has seen
    table rows).

    Parameters
    ----------
    path:
        The model file (any name; the content decides).
    max_bytes:
        Largest file size accepted (``None``: no limit besides protobuf's own 2 GiB).
    classes:
        The class labels in output order from ``config.json``, used when the graph names none.

    Raises
    ------
    UnsafeModelError
        ``unsafe_model``: external data or custom operator domains.
    ModelError
        ``corrupt_model``: not an ONNX model, unreadable, truncated, or invalid; ``unsupported_model``: a
        graph whose inputs or outputs the audit cannot use.
    LimitError
        ``model_too_large``: more than ``max_bytes``.
    """
    data = _read(path, max_bytes)
    _refuse_other_formats(path, data[:HEAD_BYTES])
    model = _parse(path, data)
    _refuse_outside_references(path, model)
    _check_valid(path, model)
    session = _session(path, model)
    inputs = tuple(OnnxInput.of(arg) for arg in session.get_inputs())
    outputs = OnnxOutputs.of(session.get_outputs(), _graph_classes(model))
    return build_adapter(session, inputs, outputs, file_name=_name(path), config_classes=classes)


def _read(path: Path, max_bytes: int | None) -> bytes:
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise LimitError(
            f"{_name(path)} is {_size(size)}, more than the allowed model size ({_size(max_bytes)}); use a "
            "smaller model or raise the limit",
            code="model_too_large",
        )
    if size == 0:
        raise ModelError(f"{_name(path)} is empty; {_SAVE_HINT}", code="corrupt_model")
    return path.read_bytes()


# A pickle starts with PROTO (protocol 2 and later), joblib's compressed files with their compressor's
# magic; an ONNX model starts with a protobuf field tag, never with these.
_PICKLE_HEADS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_COMPRESSED_HEADS = (
    b"ZF",
    b"\x78\x01",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"\x5d\x00\x00",
)


def _refuse_other_formats(path: Path, head: bytes) -> None:
    """A pickle, an archive or text named ``.onnx`` is said to be what it is, before any parsing."""
    what = None
    if head.startswith(_PICKLE_HEADS):
        what = "a Python pickle (joblib.dump / pickle.dump)"
    elif head.startswith(_COMPRESSED_HEADS):
        what = "a compressed file (a joblib dump?)"
    else:
        what = looks_like(head, specific_only=False)
    if what is None:
        return
    pickled = "pickle" in what or "joblib" in what
    fix = (
        "name it model.pkl or model.joblib to audit it as a pickle, or " + _SAVE_HINT
        if pickled
        else _SAVE_HINT
    )
    raise ModelError(f"{_name(path)} is not an ONNX model: it looks like {what}; {fix}", code="corrupt_model")


def _parse(path: Path, data: bytes) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _corrupt(path, exc, "reading it as an ONNX model", _SAVE_HINT) from None
    # Protobuf reads many byte strings as some message: a model has a format version, a graph with at
    # least one node and one output, and operator sets.
    graph = model.graph if model.HasField("graph") else None
    if model.ir_version <= 0 or graph is None or not graph.node or not graph.output or not model.opset_import:
        raise ModelError(
            f"{_name(path)} is not an ONNX model (no graph of operators with outputs: damaged, truncated or "
            f"another kind of file); {_SAVE_HINT}",
            code="corrupt_model",
        )
    return model


def is_onnx_file(path: Path) -> bool:
    """Whether the file at ``path`` (any name) parses as an ONNX model: to say so when it was named as
    another kind. Nothing in it is run or checked beyond the parse."""
    try:
        _parse(path, path.read_bytes())
    except (ModelError, OSError):
        return False
    return True


def _all_messages(root: Any):
    """Every protobuf message inside ``root`` (itself included), depth first, without recursion."""
    from google.protobuf.descriptor import FieldDescriptor

    stack = [root]
    while stack:
        message = stack.pop()
        yield message
        for field, value in message.ListFields():
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            # newer protobuf releases say is_repeated (and dropped the label); older ones have only the label
            repeated = (
                field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
            )
            if repeated:
                stack.extend(value)
            else:
                stack.append(value)


def _refuse_outside_references(path: Path, model: Any) -> None:
    """Refuse external data anywhere and operators, opsets or functions outside :data:`STANDARD_DOMAINS`."""
    import onnx

    external = custom_nodes = custom_sets = custom_functions = 0
    for message in _all_messages(model):
        if isinstance(message, onnx.TensorProto):
            if message.data_location == onnx.TensorProto.EXTERNAL or len(message.external_data):
                external += 1
        elif isinstance(message, onnx.NodeProto):
            custom_nodes += message.domain not in STANDARD_DOMAINS
        elif isinstance(message, onnx.OperatorSetIdProto):
            custom_sets += message.domain not in STANDARD_DOMAINS
        elif isinstance(message, onnx.FunctionProto):
            custom_functions += message.domain not in STANDARD_DOMAINS
    if external:
        raise UnsafeModelError(
            f"{_name(path)} keeps the data of {_count(external, 'tensor')} in other files (external data), "
            "which the audit never reads: a model file may not make the runtime open files outside it. "
            "Save the model as one file with its weights inside (onnx.save_model(model, path, "
            "save_as_external_data=False))",
            code="unsafe_model",
        )
    if custom_nodes or custom_sets or custom_functions:
        parts = [
            _count(custom_nodes, "operator"),
            _count(custom_sets, "operator set import"),
            _count(custom_functions, "model-local function"),
        ]
        found = ", ".join(part for part in parts if not part.startswith("0 "))
        raise UnsafeModelError(
            f"{_name(path)} uses a domain other than ONNX's own (ai.onnx, ai.onnx.ml) in {found}: custom "
            "operators need code from outside the file, which the audit never loads. Export the model with "
            "standard operators only (skl2onnx's and torch.onnx.export's defaults)",
            code="unsafe_model",
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _check_valid(path: Path, model: Any) -> None:
    import onnx

    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise _corrupt(path, exc, "checking the ONNX graph", _SAVE_HINT) from None


def _session(path: Path, model: Any) -> Any:
    """An onnxruntime session on the checked model: CPU only, one thread, nothing read or written but it."""
    import onnxruntime

    model.ClearField("metadata_props")  # onnxruntime can read session settings from here
    # Errors only, from the runtime's own logger too: its warnings quote the file's node names. (The one
    # warning it prints on import, that Landlock denies its search for GPUs under /sys/bus/pci, stays in the
    # child's log: a CPU session needs no device.)
    onnxruntime.set_default_logger_severity(3)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = SESSION_THREADS
    options.inter_op_num_threads = SESSION_THREADS
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: warnings would quote the file's node names
    options.enable_profiling = False
    options.optimized_model_filepath = ""
    for key, value in (
        ("session.load_model_format", "ONNX"),
        ("session.intra_op.allow_spinning", "0"),
        ("session.inter_op.allow_spinning", "0"),
        ("session.disable_cpu_ep_fallback", "0"),
    ):
        options.add_session_config_entry(key, value)
    try:
        return onnxruntime.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors quote the file's names: class only
        raise _corrupt(path, exc, "preparing the ONNX graph to run", _SAVE_HINT) from None


# Where a converted classifier names its classes, in the order of its score columns.
_CLASS_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s")


def _graph_classes(model: Any) -> list[Any] | None:
    """The class labels in score order, from ZipMap (the last word) or the classifier node; ``None`` when
    the graph names none or its nodes disagree."""
    import onnx

    found: list[tuple[bool, list[Any]]] = []
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name not in _CLASS_ATTRIBUTES:
                continue
            values = onnx.helper.get_attribute_value(attribute)
            labels = [v.decode("utf-8", "replace") if isinstance(v, bytes) else int(v) for v in values]
            if labels:
                found.append((node.op_type == "ZipMap" and node.domain == "ai.onnx.ml", labels))
    zipmaps = [labels for is_zipmap, labels in found if is_zipmap]
    if zipmaps:
        return zipmaps[-1]
    distinct = {tuple(labels) for _, labels in found}
    return list(distinct.pop()) if len(distinct) == 1 else None
