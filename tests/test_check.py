"""ovserve-check: a config.json checked offline as the server loads it (every rule's message, the same as a real
server's), --json, and pipelines drawn as SVG by the checker and by a running server's REST route."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import models
import numpy as np
import openvino as ov
import pytest
from conftest import NODES, RunningServer
from openvino import opset13 as ops
from test_custom_nodes import pipeline_config, save_models
from test_pipeline_graphs import CASES, MODELS, node, pipeline

from ovserve import check

ROOT = Path(__file__).parent.parent


def run_check(repository: Path, document: dict[str, Any], *args: str) -> tuple[int, list[str]]:
    """ovserve-check in this process on `document` written as repository/config.json: (exit status, lines)."""
    path = models.write_config(repository, document)
    out = repository / "check-output.txt"
    with open(out, "w") as stream:
        saved, sys.stdout = sys.stdout, stream
        try:
            code = check.main([str(path), *args])
        finally:
            sys.stdout = saved
    return code, out.read_text().splitlines()


def problems(repository: Path, document: dict[str, Any]) -> list[str]:
    code, lines = run_check(repository, document)
    assert (code == 0) == (len(lines) == 1 or all(line.startswith("note: ") for line in lines[:-1])), lines
    return [line for line in lines[:-1] if not line.startswith("note: ")]


def model(name: str, base_path: str | None = None, **settings: Any) -> dict[str, Any]:
    return {"config": {"name": name, "base_path": base_path or name, **settings}}


class _Prefix(str):
    """A line expected to start with this text (the rest is OpenVINO's own words)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(str(self))

    __hash__ = str.__hash__


# --- the file and its schema ---------------------------------------------------------------------------------------


def test_a_config_that_would_serve_exits_0(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_models(repository)
    shutil.copy(NODES / "python_nodes.py", repository / "my_nodes.py")
    monkeypatch.syspath_prepend(str(NODES))
    code, lines = run_check(repository, pipeline_config("my_nodes.py:CropNode", "python_nodes:ArgMaxNode"))
    assert code == 0 and lines == ["OK: 2 model(s) and 1 pipeline(s) would serve"]


def test_a_schema_error_is_one_line_with_its_json_path(repository: Path) -> None:
    document = {"model_config_list": [{"config": {"name": "m", "base_path": "m", "shapes": "(1,4)"}}]}
    code, lines = run_check(repository, document)
    assert code == 1
    assert lines[0].startswith(f'config: {repository}/config.json: model_config_list[0].config: unknown key "shapes"')
    assert "allowed: allow_cache, base_path" in lines[0]
    assert lines[1:] == ["1 problem(s); 0 model(s) and 0 pipeline(s) would serve"]


def test_a_file_that_is_not_json_or_not_there(repository: Path) -> None:
    (repository / "config.json").write_text('{"model_config_list": [}')
    assert check.main([str(repository / "config.json")]) == 1
    report = check_report(repository / "config.json")
    assert str(report.problems[0]).startswith(f"config: The file is not valid json: {repository}/config.json: ")
    report = check_report(repository / "nothing.json")
    assert str(report.problems[0]).startswith("config: Configuration file not found or cannot open: ")


def check_report(path: Path) -> check.Report:
    return asyncio.run(check.check(path))


def test_names_taken_twice_ignored_entries_and_metric_names(repository: Path) -> None:
    models.save(models.add_mul(), repository, "scale")
    one = pipeline("scale", ["x"], [node("a", "scale", {"x": "request.x"}, {"y": "y"})], {"y": "a.y"})
    document = {
        "model_config_list": [model("scale"), model("scale")],
        "pipeline_config_list": [one],
        "mediapipe_config_list": [{"name": "graph"}],
        "monitoring": {"metrics": {"enable": True, "metrics_list": ["ovms_requests_success", "ovms_nothing"]}},
    }
    assert problems(repository, document) == [
        'config: model_config_list[1]: model name "scale" is already occupied; entry ignored',
        "config: pipeline_config_list[0]: Pipeline has the same name as model - scale; pipeline ignored",
        "config: mediapipe_config_list: not supported by ovserve; entries ignored",
        "config: monitoring.metrics.metrics_list: Invalid name in metrics_list: ovms_nothing",
    ]


# --- models -------------------------------------------------------------------------------------------------------


def test_every_model_rule(repository: Path) -> None:
    for name, build in {"scale": models.add_mul, "plain": models.add_mul, "pair": models.pair,
                        "cls": models.classifier}.items():  # fmt: skip
        models.save(build(), repository, name)
    models.save(models.add_mul(shape=()), repository, "scalar")
    constant = ops.relu(ops.constant(np.ones((1, 4), np.float32)))
    models.save(ov.Model([constant], [], "no_inputs"), repository, "no_inputs")
    models.save(models.add_mul(add=2.0), repository, "scale", 2)
    (repository / "empty").mkdir()
    (repository / "nofile" / "1").mkdir(parents=True)
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    (repository / "scale" / "3").mkdir()  # newest version, no model file: latest falls back to version 2
    document = {
        "model_config_list": [
            model("scale"),
            model("missing", "nowhere/models"),
            model("empty"),
            model("nofile"),
            model("broken"),
            model("typo", "pair", shape={"q": "(1,4)"}),
            model("anonymous", "pair", shape="(1,4)"),
            model("layout", "pair", layout={"w": "NC"}),
            model("rank", "plain", layout="NCHW"),
            model("reshape", "cls", shape="(1,3,5,5)"),  # its Reshape takes 48 values
            model("values", "plain", batch_size=0, stateful=True),
            model("anonymous_layout", "pair", layout="NC"),
            model("scalar", batch_size="auto"),
            model("no_n", "plain", batch_size=2, layout="C..."),
            model("no_inputs"),
        ]
    }
    root = repository
    assert problems(repository, document) == [
        "model scale version 3: File not found or cannot open: no model file (.xml+.bin, .onnx, ...) in "
        f"{root}/scale/3",
        f"model missing: The provided base path is invalid or doesn't exists: {root}/nowhere/models",
        f"model empty: no version directories in {root}/empty; expected numbered version folders holding the model: "
        f"{root}/empty/1/model.xml with {root}/empty/1/model.bin, or {root}/empty/1/model.onnx",
        "model nofile version 1: File not found or cannot open: no model file (.xml+.bin, .onnx, ...) in "
        f"{root}/nofile/1",
        _Prefix(f"model broken version 1: File not found or cannot open: {root}/broken/1/model.onnx: "),
        "model typo version 1: Shape from config not found in model: q; the model's inputs: x, z",
        "model anonymous version 1: Anonymous fixed shape is invalid for models with multiple inputs",
        "model layout version 1: Layout from config not found in model: w; the model's inputs: x, z; outputs: y",
        _Prefix("model rank version 1: Layout incompatible with given shape: x NCHW: "),
        _Prefix("model reshape version 1: Model could not be reshaped with requested shape: "),
        "model values: model_config_list[10].config.batch_size: batch_size must be positive, got 0",
        "model anonymous_layout version 1: Anonymous fixed layout is invalid for models with multiple inputs",
        "model scalar version 1: Batching set to AUTO but model contains scalar tensor",
        "model no_n version 1: Error while loading a model: batch_size is set but no input has N in its layout: x C...",
        "model no_inputs version 1: Cannot load model with no inputs",
    ]


def test_the_versions_read_are_the_ones_a_pipeline_uses(repository: Path) -> None:
    """latest{1} over a broken version 2 serves version 1, which pipelines then validate against (as the server)."""
    models.save(models.add_mul(shape=(1, 4)), repository, "m", 1)
    models.save(models.add_mul(shape=(1, 4)), repository, "m", 2)
    (repository / "m" / "2" / "model.bin").unlink()
    uses = pipeline("p", ["x"], [node("a", "m", {"x": "request.x"}, {"y": "y"})], {"y": "a.y"})
    pinned = pipeline("pinned", ["x"], [node("a", "m", {"x": "request.x"}, {"y": "y"}, version=2)], {"y": "a.y"})
    found = problems(repository, {"model_config_list": [model("m")], "pipeline_config_list": [uses, pinned]})
    assert found == [
        f"model m version 2: File not found or cannot open: no model file (.xml+.bin, .onnx, ...) in {repository}/m/2",
        "pipeline pinned: Pipeline definition has reference to missing model - pinned: node a uses m version 2",
    ]


def test_an_s3_model_is_checked_for_its_syntax_only_and_said_so(repository: Path) -> None:
    models.save(models.add_mul(), repository, "scale")
    uses = pipeline("p", ["x"], [node("a", "remote", {"x": "request.x"}, {"y": "y"})], {"y": "a.y"})
    document = {"model_config_list": [model("remote", "s3://bucket/models/remote"), model("bad", "s3:///x")],
                "pipeline_config_list": [uses]}  # fmt: skip
    code, lines = run_check(repository, document)
    assert lines == [
        'model bad: model_config_list[1].config.base_path: "s3:///x" names no bucket; expected s3://bucket/path',
        "note: model remote: s3://bucket/models/remote: only its syntax is checked (--s3 lists and reads it)",
        "note: pipeline p: not validated: node a uses model remote, which was not read (s3://); check again with --s3",
        "1 problem(s); 0 model(s) and 0 pipeline(s) would serve",
    ]
    assert code == 1


# --- custom node libraries ----------------------------------------------------------------------------------------


def test_library_rules(repository: Path, libraries: dict[str, Path]) -> None:
    save_models(repository)
    (repository / "broken.py").write_text("import nothing_like_this\n")
    cases = {
        "missing": (str(repository / "nowhere.so"), {}),
        "incomplete": (str(libraries["incomplete"]), {}),
        "python": ("broken.py:Node", {}),
        "init": (str(libraries["crop"]), {"fail_initialize": "1"}),
        "metadata": (str(libraries["crop"]), {"mode": "fail_metadata"}),
    }
    document: dict[str, Any] = {"model_config_list": pipeline_config("", "")["model_config_list"]}
    document["custom_node_library_config_list"] = [{"name": "argmax_lib", "base_path": str(libraries["argmax"])}]
    document["pipeline_config_list"] = []
    for name, (location, params) in cases.items():
        document["custom_node_library_config_list"].append({"name": f"{name}_lib", "base_path": location})
        one = pipeline_config(location, str(libraries["argmax"]), **params)["pipeline_config_list"][0]
        one["name"] = name
        one["nodes"][1]["library_name"] = f"{name}_lib"
        document["pipeline_config_list"].append(one)
    found = problems(repository, document)
    assert found == [
        _Prefix(f"library missing_lib: Custom node library failed to open - missing_lib: {repository}/nowhere.so: "),
        _Prefix("library incomplete_lib: Custom node library failed to load symbol - incomplete_lib ("),
        _Prefix("library python_lib: Custom node library failed to open - python_lib ("),
        _Prefix("pipeline missing: Pipeline refers to incorrect library - missing: node crop uses missing_lib (Custom "
                "node library failed to open - missing_lib: "),
        _Prefix("pipeline incomplete: Pipeline refers to incorrect library - incomplete: node crop uses incomplete_lib "
                "(Custom node library failed to load symbol - incomplete_lib ("),
        _Prefix("pipeline python: Pipeline refers to incorrect library - python: node crop uses python_lib (Custom "
                "node library failed to open - python_lib ("),
        "pipeline init: Failure during custom node library initialization - node crop (library init_lib): initialize "
        "returned 3",
        "pipeline metadata: Custom node failed on metadata call - node crop (library metadata_lib): getInputsInfo "
        "returned 5",
    ]  # fmt: skip
    assert "ModuleNotFoundError" in found[2]


# --- pipelines: every validation rule of docs/pipelines.md#load-time-rules, with the server's messages
# ---------------------------------------


def test_every_pipeline_rule_in_the_servers_words(repository: Path) -> None:
    """The validation table the server is tested with (test_pipeline_graphs.CASES), one pipeline per case."""
    for name, build in MODELS.items():
        models.save(build(), repository, name)
    models.save(models.add_mul(), repository, "auto")
    configs = [model(name) for name in MODELS] + [model("auto", batch_size="auto")]
    pipelines = []
    for k, (_, nodes, outputs, extra, _) in enumerate(CASES):
        pipelines.append(pipeline(f"p{k}", ["x"], nodes, outputs, **extra))
    found = problems(repository, {"model_config_list": configs, "pipeline_config_list": pipelines})
    assert len(found) == len(CASES)
    for k, (case, _, _, _, message) in enumerate(CASES):
        expected = message.replace("- p:", f"- p{k}:").replace("pipeline p ", f"pipeline p{k} ")
        assert found[k].startswith(f"pipeline p{k}: {expected}"), (case, found[k])


# --- five mistakes at once, and the same words from a real server -------------------------------------------------


def five_mistakes(repository: Path) -> dict[str, Any]:
    for name in ("scale", "rep3", "sum3", "pair"):
        models.save(MODELS[name](), repository, name)
    (repository / "rep3" / "2").mkdir()  # a version folder copied without its model
    return {
        "model_config_list": [
            model("classifier", "modles/classifier"),  # 1: a typo in the base path
            model("scale", shape={"input": "(1,4)"}),  # 2: the input is called x
            model("rep3"),  # 3: version 2 has no model file
            model("sum3"),
            model("pair"),
        ],
        "pipeline_config_list": [
            pipeline(  # 4: rep3 gives 3 crops, not 2
                "sums",
                ["x"],
                [
                    node("split", "rep3", {"x": "request.x"}, {"c": "crops"}, demultiply_count=2),
                    node("add", "sum3", {"x": "split.c"}, {"y": "y"}, gather_from_node="split"),
                ],
                {"y": "add.y"},
            ),
            pipeline(  # 5: z from a pipeline input that is not declared
                "pairs", ["x"], [node("a", "pair", {"x": "request.x", "z": "request.zz"}, {"y": "y"})], {"y": "a.y"}
            ),
            pipeline(
                "fine", ["x"], [node("a", "pair", {"x": "request.x", "z": "request.x"}, {"y": "y"})], {"y": "a.y"}
            ),
        ],
    }


FIVE = [
    "model classifier: The provided base path is invalid or doesn't exists: {root}/modles/classifier",
    "model scale version 1: Shape from config not found in model: input; the model's inputs: x",
    "model rep3 version 2: File not found or cannot open: no model file (.xml+.bin, .onnx, ...) in {root}/rep3/2",
    "pipeline sums: Demultiplication count does not match tensor first dimension - split output c: demultiply_count 2, "
    "first dimension 3",
    "pipeline pairs: Pipeline definition has reference to missing data source - a input z takes request.zz, not a "
    "pipeline input",
]


def test_five_mistakes_one_line_each_as_a_real_server_reports_them(repository: Path) -> None:
    document = five_mistakes(repository)
    code, lines = run_check(repository, document)
    expected = [line.format(root=repository) for line in FIVE]
    assert code == 1
    assert lines == [*expected, "5 problem(s); 3 model(s) and 1 pipeline(s) would serve"]
    server = RunningServer(repository / "config.json")
    try:
        manager = server.server.manager
        said = [
            f"model classifier: {manager.models['classifier'].error}",
            f"model scale version 1: {manager.models['scale'].versions[1].message}",
            f"model rep3 version 2: {manager.models['rep3'].versions[2].message}",
            f"pipeline sums: {manager.pipelines['sums'].error}",
            f"pipeline pairs: {manager.pipelines['pairs'].error}",
        ]
        assert said == expected
        assert manager.pipelines["fine"].definition is not None
    finally:
        server.stop()


def test_json_for_ci_and_the_module_entry_point(repository: Path) -> None:
    models.write_config(repository, five_mistakes(repository))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "ovserve.check", str(repository / "config.json"), "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False and len(report["problems"]) == 5
    assert report["problems"][0] == {
        "kind": "model", "name": "classifier", "version": None,
        "message": f"The provided base path is invalid or doesn't exists: {repository}/modles/classifier",
    }  # fmt: skip
    assert report["problems"][2]["version"] == 2 and report["problems"][3]["name"] == "sums"
    rep3 = {"inputs": {"x": {"datatype": "FP32", "shape": [1, 4]}},
            "outputs": {"crops": {"datatype": "FP32", "shape": [3, 1, 4]}}}  # fmt: skip
    assert report["models"]["rep3"] == {"1": rep3}
    assert report["pipelines"]["fine"] == {
        "ok": True,
        "inputs": {"x": {"datatype": "FP32", "shape": [1, 4]}},
        "outputs": {"y": {"datatype": "FP32", "shape": [1, 4]}},
    }


# --- pictures -------------------------------------------------------------------------------------------------------


def svg_texts(svg: bytes) -> list[str]:
    """Every text of an SVG document (which must parse as XML)."""
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def demultiplexing_config(repository: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    save_models(repository)
    shutil.copy(NODES / "python_nodes.py", repository / "my_nodes.py")
    monkeypatch.syspath_prepend(str(NODES))
    document = pipeline_config("my_nodes.py:CropNode", "python_nodes:ArgMaxNode")
    pipelines = document["pipeline_config_list"]
    pipelines.append(pipeline("entry", ["image"], [node("classify", "classifier", {"crop": "request.image"},
                              {"scores": "scores"})], {"scores": "classify.scores"}, demultiply_count=-1))  # fmt: skip
    return document


def check_picture(texts: list[str]) -> None:
    """The realistic pipeline of test_custom_nodes: every node, its model or library, the connections' data items,
    the dynamic demultiplexer and the gathers, and the inputs' and outputs' metadata."""
    for text in ("pipeline find_and_classify", "request", "response", "detect", "crop", "classify", "decide",
                 "model detector", "model classifier", "library crop_lib", "library argmax_lib",
                 "image: FP32 (1,1,8,8)", "labels: I32 (-1,1)", "scores: FP32 (-1,1,10)",
                 "crops: FP32 (-1,1,-1,4,4)", "box_scores: FP32 (-1,1,1)",
                 "image", "boxes", "crop", "scores", "labels", "box → box_scores", "crop → crops",
                 "demultiplexer: dynamic count", "gathers from crop", "gather"):  # fmt: skip
        assert text in texts, (text, texts)


def test_graph_draws_every_pipeline_into_one_svg(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = demultiplexing_config(repository, monkeypatch)
    document["pipeline_config_list"].append(
        pipeline("broken", ["x"], [node("a", "classifier", {"crop": "elsewhere.x"}, {"y": "scores"})], {"y": "a.y"})
    )
    out = repository / "pipelines.svg"
    code, lines = run_check(repository, document, "--graph", str(out))
    assert code == 1 and lines[0].startswith("pipeline broken: Pipeline definition has reference to missing node")
    texts = svg_texts(out.read_bytes())
    check_picture(texts)
    assert "pipeline entry" in texts and "demultiplexer: dynamic count" in texts
    assert "gathers from request" in texts  # the response gathers the request's demultiplexer
    assert "scores: FP32 (-1,1,10)" in texts
    assert "pipeline broken" in texts and "elsewhere" in texts and "no such node" in texts
    assert any(t.startswith("fails validation: Pipeline definition has reference to missing node") for t in texts)


def test_graph_without_graphviz_says_how_to_get_it(
    repository: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    document = demultiplexing_config(repository, monkeypatch)
    monkeypatch.setenv("PATH", str(repository / "no-programs-here"))
    path = models.write_config(repository, document)
    code = check.main([str(path), "--graph", str(repository / "out.svg")])
    assert code == 2 and not (repository / "out.svg").exists()
    assert capsys.readouterr().err == (
        "ovserve-check: error: Graphviz's dot program was not found: install Graphviz to draw pipeline graphs "
        "(Debian and Ubuntu: apt-get install graphviz)\n"
    )


def test_a_running_server_draws_its_pipelines(repository: Path, serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(demultiplexing_config(repository, monkeypatch))
    status, headers, body = server.http("GET", "/v1/pipelines/find_and_classify/graph.svg")
    assert status == 200 and headers["content-type"] == "image/svg+xml"
    check_picture(svg_texts(body))
    status, _, body = server.http("GET", "/v1/pipelines/nothing/graph.svg")
    assert status == 404
    assert json.loads(body) == {"error": "Pipeline with requested name is not found - nothing"}
    status, _, body = server.http("GET", "/v1/pipelines/classifier/graph.svg")  # a model, not a pipeline
    assert status == 404
    monkeypatch.setenv("PATH", str(repository / "no-programs-here"))
    status, _, body = server.http("GET", "/v1/pipelines/find_and_classify/graph.svg")
    assert status == 501
    assert json.loads(body)["error"].startswith(
        "Pipeline graphs cannot be drawn here - Graphviz's dot program was not found: install Graphviz to draw "
        "pipeline graphs (Debian and Ubuntu: apt-get install graphviz)"
    )


def test_names_are_drawn_as_written(repository: Path) -> None:
    """Names holding XML's and DOT's special characters (< & " and backslash escapes such as \\N) come out verbatim."""
    odd = 'a<b>&"c\\N'
    item = 'y\\l"'
    nodes = [node(odd, "m", {"x": "request.in \\n"}, {item: "y"})]
    document = {
        "model_config_list": [model("m")],
        "pipeline_config_list": [pipeline('p<&>"\\G', ["in \\n"], nodes, {"o": f"{odd}.{item}"})],
    }
    models.save(models.add_mul(), repository, "m")
    out = repository / "odd.svg"
    code, lines = run_check(repository, document, "--graph", str(out))
    texts = svg_texts(out.read_bytes())
    assert code == 0, lines
    for text in ('pipeline p<&>"\\G', odd, "in \\n → x", "in \\n: FP32 (1,4)", f"{item} → o", "o: FP32 (1,4)"):
        assert text in texts, (text, texts)
