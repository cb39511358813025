"""ONNX models (issue #11): converted with skl2onnx (ZipMap or not, label-only) or exported from PyTorch,
audited as bundles through the sandbox, and hostile files refused before onnxruntime sees them."""

from __future__ import annotations

import copy
import io
import zipfile

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from builders import CHEAPEST, adult_frame, needs_adult, raised, split_fit
from mia_robustness import audit, audit_estimator
from mia_robustness.errors import DataError, LimitError, ModelError, UnsafeModelError
from mia_robustness.loading import load_model, settle_scores

onnx = pytest.importorskip("onnx")
skl2onnx = pytest.importorskip("skl2onnx")
pytestmark = needs_adult


@pytest.fixture(scope="module")
def adult_pipeline():
    """(pipeline, members, non_members): a 30-tree forest behind one-hot encoding, 600 Adult rows a side."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = adult_frame(1200, seed=0)
    features = frame.drop(columns="income")
    categorical = list(features.select_dtypes(exclude="number").columns)
    numeric = [c for c in features.columns if c not in categorical]
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), categorical), ("num", StandardScaler(), numeric)]
    )
    pipeline = Pipeline([("prep", prep), ("clf", RandomForestClassifier(30, random_state=0))])
    return split_fit(frame, pipeline, label="income")


@pytest.fixture(scope="module")
def converted(adult_pipeline):
    """skl2onnx's conversions of the pipeline (per-column inputs): ``zipmap`` and ``tensor`` outputs."""
    pipeline, members, _ = adult_pipeline
    sample = members.drop(columns="income").iloc[:1]
    return {
        "zipmap": skl2onnx.to_onnx(pipeline, sample),
        "tensor": skl2onnx.to_onnx(pipeline, sample, options={"zipmap": False}),
    }


def onnx_bundle(folder, model, members, non_members, config=None):
    """A folder bundle holding ``model`` (an onnx ModelProto, or bytes) as model.onnx."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    members.to_csv(folder / "train.csv", index=False)
    non_members.to_csv(folder / "subject.csv", index=False)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def threshold_auc(report) -> float:
    return next(row.mean["auc"] for row in report.results if row.attack_model == "threshold")


# ---- audited end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["zipmap", "tensor"])
def test_a_converted_pipeline_audits_in_the_sandbox_like_the_original(
    tmp_path, adult_pipeline, converted, output
):
    pipeline, members, non_members = adult_pipeline
    bundle = onnx_bundle(tmp_path / "bundle", converted[output], members, non_members)
    options = {**CHEAPEST, "attack_models": "threshold,lira", "what_if": "true"}
    report = audit(bundle, options)  # the sandbox: the default
    assert report.target.model_class == "OnnxProbabilityClassifier"
    # onnxruntime ran in the confined child: seccomp and (where the kernel has it) Landlock in place.
    assert report.containment["sandbox"] is True and report.containment["seccomp"] is True
    # ONNX holds no recipe: lira is left out with a warning that says how to run it, not an error.
    assert {row.attack_model for row in report.results} == {"threshold"}
    assert any("reference_recipe" in warning for warning in report.warnings)
    assert report.remediation.status == "skipped" and "reference_recipe" in report.remediation.skipped

    original = audit_estimator(pipeline, members, non_members, **CHEAPEST)
    assert abs(threshold_auc(report) - threshold_auc(original)) <= 0.01
    # At least the loss signal's own AUC over every row, with no attack training at all, less 0.03.
    rows = pd.concat([members, non_members], ignore_index=True)
    true_class = np.searchsorted(pipeline.classes_, rows["income"])
    loss = -np.log(
        np.clip(
            pipeline.predict_proba(rows.drop(columns="income"))[np.arange(len(rows)), true_class], 1e-12, 1
        )
    )
    is_member = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    assert threshold_auc(report) >= roc_auc_score(is_member, -loss) - 0.03


def test_a_label_only_graph_predicts_and_gives_no_scores(tmp_path, adult_pipeline, converted):
    pipeline, members, non_members = adult_pipeline
    graph = copy.deepcopy(converted["tensor"])
    del graph.graph.output[1]  # keep the label output only
    path = tmp_path / "labels.onnx"
    path.write_bytes(graph.SerializeToString())
    model = settle_scores(load_model(path).estimator, members)
    assert type(model).__name__ == "OnnxLabelClassifier"
    assert not hasattr(model, "predict_proba") and not hasattr(model, "decision_function")
    assert list(model.classes_) == list(pipeline.classes_)
    assert list(model.feature_names_in_) == list(members.columns.drop("income"))
    rows = non_members.drop(columns="income")
    agree = (model.predict(rows) == pipeline.predict(rows)).mean()
    assert agree >= 0.99  # float32 in the graph: a split exactly at a threshold may go the other way
    # The graph names its classes: a classes option that names others is refused, the same ones pass.
    assert load_model(
        path, classes=tuple(reversed(pipeline.classes_.tolist()))
    ).estimator.classes_.tolist() == list(pipeline.classes_)
    error = raised(ModelError, "bad_classes", load_model, path, classes=("no", "yes"))
    assert "'no', 'yes'" in error.message and ">50K" not in error.message


def test_a_pytorch_export_gives_margins_or_probabilities_by_its_values(tmp_path, adult_pipeline):
    torch = pytest.importorskip("torch")
    _, members, non_members = adult_pipeline
    numeric = [c for c in members.columns if c != "income" and pd.api.types.is_numeric_dtype(members[c])]
    x = torch.tensor(members[numeric].to_numpy(np.float32))
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor((members["income"] == ">50K").to_numpy().astype(np.int64))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(len(numeric), 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    mean, std = members[numeric].mean().to_numpy(), members[numeric].std().to_numpy()

    class Scaled(torch.nn.Module):
        def __init__(self, softmax: bool):
            super().__init__()
            self.softmax, self.net = softmax, net
            self.shift, self.scale = (
                torch.tensor(mean, dtype=torch.float32),
                torch.tensor(std, dtype=torch.float32),
            )

        def forward(self, rows):
            logits = self.net((rows - self.shift) / self.scale)
            return torch.softmax(logits, dim=1) if self.softmax else logits

    tables = {"members": members[[*numeric, "income"]], "non_members": non_members[[*numeric, "income"]]}
    config = {"classes": ["<=50K", ">50K"]}
    kinds = {}
    for softmax in (False, True):
        buffer = io.BytesIO()
        torch.onnx.export(
            Scaled(softmax), (torch.zeros(1, len(numeric)),), buffer, dynamo=False,
            input_names=["rows"], output_names=["scores"], dynamic_axes={"rows": {0: "n"}, "scores": {0: "n"}},
        )  # fmt: skip
        path = tmp_path / f"net{softmax}.onnx"
        path.write_bytes(buffer.getvalue())
        model = settle_scores(load_model(path, classes=config["classes"]).estimator, tables["members"])
        kinds[softmax] = type(model).__name__
        assert model.n_features_in_ == len(numeric)
        if not softmax:
            with torch.no_grad():
                logits = Scaled(False)(torch.tensor(non_members[numeric].to_numpy(np.float32))).numpy()
            margins = model.decision_function(non_members[numeric])
            np.testing.assert_allclose(margins, logits[:, 1] - logits[:, 0], rtol=1e-4, atol=1e-4)
    assert kinds == {False: "OnnxMarginClassifier", True: "OnnxProbabilityClassifier"}
    bundle = onnx_bundle(tmp_path / "bundle", path.read_bytes(), *tables.values(), config=config)
    report = audit(bundle, CHEAPEST, sandbox=False)
    assert list(report.target.classes) == config["classes"]
    assert 0.4 < threshold_auc(report) < 0.7  # a small network on numeric columns: little to find

    # An argmax export answers with class positions only: label-only, positions named by the classes option.
    class Argmax(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scores = Scaled(False)

        def forward(self, rows):
            return torch.argmax(self.scores(rows), dim=1)

    buffer = io.BytesIO()
    torch.onnx.export(
        Argmax(), (torch.zeros(1, len(numeric)),), buffer, dynamo=False,
        input_names=["rows"], output_names=["label"], dynamic_axes={"rows": {0: "n"}, "label": {0: "n"}},
    )  # fmt: skip
    path.write_bytes(buffer.getvalue())
    model = load_model(path, classes=tuple(config["classes"])).estimator
    assert type(model).__name__ == "OnnxLabelClassifier"
    with torch.no_grad():
        positions = Scaled(False)(torch.tensor(non_members[numeric].to_numpy(np.float32))).argmax(1).numpy()
    assert list(model.predict(non_members[numeric])) == [config["classes"][i] for i in positions]


# ---- inputs ---------------------------------------------------------------------------------------------


def test_inputs_the_tables_cannot_feed_get_clear_errors(tmp_path, adult_pipeline, converted):
    _, members, non_members = adult_pipeline
    path = tmp_path / "model.onnx"
    path.write_bytes(converted["tensor"].SerializeToString())
    # A column both tables lack is counted, never named (its name is the model file's text).
    bundle = onnx_bundle(
        tmp_path / "b", converted["tensor"], members.drop(columns="age"), non_members.drop(columns="age")
    )
    error = raised(DataError, "feature_mismatch", audit, bundle, CHEAPEST, sandbox=False)
    assert "1 in neither table" in error.message and "age" not in error.message
    # Text where a numeric input is: the table's own column is named.
    model = load_model(path).estimator
    rows = members.drop(columns="income").assign(age="old")
    error = raised(DataError, "model_rejected_data", model.predict_proba, rows)
    assert "'age'" in error.message

    numeric = members.select_dtypes("number")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    single = skl2onnx.to_onnx(
        make_pipeline(StandardScaler(), LogisticRegression()).fit(numeric.to_numpy(), members["income"]),
        numeric.to_numpy(np.float32)[:1],
    )
    path.write_bytes(single.SerializeToString())
    model = load_model(path).estimator
    assert model.n_features_in_ == numeric.shape[1] and not hasattr(model, "feature_names_in_")
    assert model.predict_proba(numeric.to_numpy()).shape == (len(numeric), 2)
    raised(DataError, "feature_mismatch", model.predict_proba, numeric.to_numpy()[:, :3])
    # A 3-D input is named by its position only.
    from onnx import helper

    cube = helper.make_graph(
        [helper.make_node("ReduceSum", ["cube_input", "axis"], ["sums"], keepdims=0), helper.make_node("Softmax", ["sums"], ["scores"])],
        "cube",
        [helper.make_tensor_value_info("cube_input", onnx.TensorProto.FLOAT, ["n", 3, 2])],
        [helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("axis", onnx.TensorProto.INT64, [1], [2])],
    )  # fmt: skip
    path.write_bytes(helper.make_model(cube, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    error = raised(ModelError, "unsupported_model", load_model, path)
    assert "input 1 of the ONNX graph's 1" in error.message and "3 axes" in error.message
    assert "cube_input" not in error.message


# ---- hostile files ----------------------------------------------------------------------------------------


@pytest.fixture()
def no_session(monkeypatch):
    """Fail the test if an onnxruntime session is made: refusals must come before onnxruntime reads."""
    import onnxruntime

    def refuse(*args, **kwargs):
        raise AssertionError("onnxruntime was given a file the checks should have refused")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


def _external(tensor, location: str) -> None:
    """Point ``tensor``'s data at ``location`` (as onnx.save_model(save_as_external_data=True) would)."""
    for field in ("raw_data", "float_data", "int64_data", "int32_data", "double_data"):
        tensor.ClearField(field)
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _constant_node(location: str, name: str):
    from onnx import helper

    tensor = helper.make_tensor(name, onnx.TensorProto.FLOAT, [4], [0.0] * 4)
    _external(tensor, location)
    return helper.make_node("Constant", [], [name], value=tensor)


def _hostile_variants(graph):
    from onnx import helper

    variants = {}
    for location in ("/etc/passwd", "train.csv", "../members/train.csv"):
        model = copy.deepcopy(graph)
        _external(model.graph.initializer[0], location)
        variants[f"initializer at {location}"] = model
    model = copy.deepcopy(graph)
    branch = helper.make_graph(
        [_constant_node("/etc/passwd", "c")],
        "branch",
        [],
        [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [4])],
    )
    cond = helper.make_tensor("cond", onnx.TensorProto.BOOL, [], [True])
    model.graph.node.extend(
        [helper.make_node("Constant", [], ["cond"], value=cond), helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch)]
    )  # fmt: skip
    variants["constant inside an If subgraph"] = model
    model = copy.deepcopy(graph)
    model.functions.append(
        helper.make_function("", "Helper", [], ["c"], [_constant_node("/etc/passwd", "c")], [helper.make_opsetid("", 17)])
    )  # fmt: skip
    variants["constant in a function body"] = model
    return variants


def test_external_data_anywhere_is_refused_before_onnxruntime_reads(tmp_path, converted, no_session):
    for what, model in _hostile_variants(converted["tensor"]).items():
        path = tmp_path / "model.onnx"
        path.write_bytes(model.SerializeToString())
        (tmp_path / "train.csv").write_text("secret,beside,the,model\n")
        error = raised(UnsafeModelError, "unsafe_model", load_model, path)
        assert "external data" in error.message, what
        assert "passwd" not in error.message and "train.csv" not in error.message, what


def test_custom_operator_domains_are_refused(tmp_path, converted, no_session):
    from onnx import helper

    custom_node = copy.deepcopy(converted["tensor"])
    custom_node.graph.node[0].domain = "com.example"
    custom_set = copy.deepcopy(converted["tensor"])
    custom_set.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    custom_function = copy.deepcopy(converted["tensor"])
    custom_function.functions.append(
        helper.make_function("my.ops", "Helper", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])], [helper.make_opsetid("", 17)])
    )  # fmt: skip
    for model, found in (
        (custom_node, "1 operator"),
        (custom_set, "1 operator set import"),
        (custom_function, "1 model-local function"),
    ):
        path = tmp_path / "model.onnx"
        path.write_bytes(model.SerializeToString())
        error = raised(UnsafeModelError, "unsafe_model", load_model, path)
        assert found in error.message and "custom" in error.message
        assert (
            "example" not in error.message
            and "microsoft" not in error.message
            and "my.ops" not in error.message
        )


def test_files_that_are_no_onnx_model_are_refused_clearly(tmp_path, adult_pipeline, converted):
    path = tmp_path / "model.onnx"
    joblib.dump(adult_pipeline[0], path)
    assert "pickle" in raised(ModelError, "corrupt_model", load_model, path).message
    path.write_text("age,income\n39,<=50K\n50,>50K\n")
    assert "CSV" in raised(ModelError, "corrupt_model", load_model, path).message
    data = converted["zipmap"].SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    assert "ONNX" in raised(ModelError, "corrupt_model", load_model, path).message
    path.write_bytes(data)
    raised(LimitError, "model_too_large", load_model, path, max_bytes=len(data) - 1)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", "{}")
    assert "zip archive" in raised(ModelError, "corrupt_model", load_model, path).message
    # Found by parsing too: an ONNX model named as a pickle is said to be one.
    pickle_name = tmp_path / "model.pkl"
    pickle_name.write_bytes(data)
    assert "an ONNX model" in raised(ModelError, "corrupt_model", load_model, pickle_name).message


def test_the_sandbox_refuses_external_data_to_etc_passwd(tmp_path, adult_pipeline, converted):
    _, members, non_members = adult_pipeline
    model = copy.deepcopy(converted["zipmap"])
    _external(model.graph.initializer[0], "/etc/passwd")
    bundle = onnx_bundle(tmp_path / "bundle", model, members, non_members)
    error = raised(UnsafeModelError, "unsafe_model", audit, bundle, CHEAPEST)
    assert "passwd" not in error.message


# ---- margins and labels only, audited (with the output kinds of #11's kinds lane) ------------------------


def _has_output_kinds() -> bool:
    from mia_robustness import target

    return hasattr(target, "output_kind")


needs_output_kinds = pytest.mark.skipif(
    not _has_output_kinds(), reason="the engine has no margin or label-only targets yet (output kinds)"
)


def _evaluation_auc(members, non_members, score: np.ndarray) -> float:
    """AUC of a no-training per-row score on the audit's first evaluation rows (seed 0, eval_fraction 0.3)."""
    from mia_robustness.sweep import split_for_repeat

    is_member = np.r_[np.ones(len(members)), np.zeros(len(non_members))].astype(np.int8)
    evaluation = split_for_repeat(is_member, 0.3, 0, 0).evaluation
    return roc_auc_score(is_member[evaluation], score[evaluation])


@needs_output_kinds
def test_margin_and_label_only_graphs_are_audited_in_the_sandbox(tmp_path, adult_pipeline, converted):
    from sklearn.base import clone
    from sklearn.svm import LinearSVC

    forest, members, non_members = adult_pipeline
    rows = pd.concat([members, non_members], ignore_index=True)
    features, labels = rows.drop(columns="income"), rows["income"].to_numpy()
    options = {"attack_models": "threshold", "repeats": 1, "proportions": "1"}

    labels_only = copy.deepcopy(converted["tensor"])
    del labels_only.graph.output[1]
    report = audit(
        onnx_bundle(tmp_path / "labels", labels_only, members, non_members),
        {**options, "attack_models": "gap"},
    )
    assert report.target.output_kind == "labels"
    correct = (forest.predict(features) == labels).astype(float)
    gap = next(row.mean["auc"] for row in report.results if row.attack_model == "gap")
    assert gap >= _evaluation_auc(members, non_members, correct) - 0.03

    svm = clone(forest).set_params(clf=LinearSVC()).fit(members.drop(columns="income"), members["income"])
    # skl2onnx gives a LinearSVC the scores [-margin, margin] (raw_scores: it has no probabilities).
    graph = skl2onnx.to_onnx(
        svm, members.drop(columns="income").iloc[:1], options={LinearSVC: {"raw_scores": True}}
    )
    report = audit(onnx_bundle(tmp_path / "margins", graph, members, non_members), options)
    assert report.target.output_kind == "margins"
    margin = svm.decision_function(features) * np.where(labels == svm.classes_[1], 1, -1)
    assert threshold_auc(report) >= _evaluation_auc(members, non_members, margin) - 0.03
