"""Custom nodes, C (compiled with gcc here) and Python, in the pipeline detector -> crops -> classifier -> arg-max."""

from __future__ import annotations

import ctypes
import gc
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import configs
import grpc
import models
import numpy as np
import pytest
from conftest import NODES, RunningServer, config_states, rpc_error

from ovserve import pipeline_run
from ovserve._proto.tensorflow.core.framework import types_pb2

THRESHOLD = 0.5


def counters(library: Path) -> tuple[int, int]:
    """(blocks the library gave and ovserve did not release yet, managers not yet deinitialized)."""
    gc.collect()
    dll = ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)  # the same handle ovserve holds: same counters
    dll.test_live_allocations.restype = dll.test_live_managers.restype = ctypes.c_long
    return dll.test_live_allocations(), dll.test_live_managers()


def pipeline_config(crop: str, argmax: str, **crop_params: str) -> dict[str, Any]:
    """request -> detect (boxes) -> crop (custom, dynamic demultiplexer) -> classify per crop -> decide (custom,
    gathers the crops' scores) -> response, plus outputs taken from the demultiplexer and the gathered scores."""
    params = {"threshold": str(THRESHOLD), "crop_height": "4", "crop_width": "4", **crop_params}
    return {
        "model_config_list": [
            {"config": {"name": "detector", "base_path": "detector", "plugin_config": models.F32}},
            {"config": {"name": "classifier", "base_path": "classifier", "plugin_config": models.F32}},
        ],
        "custom_node_library_config_list": [
            {"name": "crop_lib", "base_path": crop},
            {"name": "argmax_lib", "base_path": argmax},
        ],
        "pipeline_config_list": [
            {
                "name": "find_and_classify",
                "inputs": ["image"],
                "nodes": [
                    {
                        "name": "detect",
                        "model_name": "detector",
                        "type": "DL model",
                        "inputs": [{"image": {"node_name": "request", "data_item": "image"}}],
                        "outputs": [{"data_item": "boxes", "alias": "boxes"}],
                    },
                    {
                        "name": "crop",
                        "library_name": "crop_lib",
                        "type": "custom",
                        "demultiply_count": -1,
                        "params": params,
                        "inputs": [
                            {"image": {"node_name": "request", "data_item": "image"}},
                            {"boxes": {"node_name": "detect", "data_item": "boxes"}},
                        ],
                        "outputs": [{"data_item": "crops", "alias": "crop"}, {"data_item": "scores", "alias": "box"}],
                    },
                    {
                        "name": "classify",
                        "model_name": "classifier",
                        "type": "DL model",
                        "inputs": [{"crop": {"node_name": "crop", "data_item": "crop"}}],
                        "outputs": [{"data_item": "scores", "alias": "scores"}],
                    },
                    {
                        "name": "decide",
                        "library_name": "argmax_lib",
                        "type": "custom",
                        "gather_from_node": "crop",
                        "inputs": [{"scores": {"node_name": "classify", "data_item": "scores"}}],
                        "outputs": [{"data_item": "labels", "alias": "labels"}],
                    },
                ],
                "outputs": [
                    {"labels": {"node_name": "decide", "data_item": "labels"}},
                    {"scores": {"node_name": "classify", "data_item": "scores"}},
                    {"crops": {"node_name": "crop", "data_item": "crop"}},
                    {"box_scores": {"node_name": "crop", "data_item": "box"}},
                ],
            }
        ],
    }


def save_models(repository: Path) -> None:
    models.save(models.detector(), repository, "detector")
    models.save(models.classifier(in_name="crop", out_name="scores", image=(1, 1, 4, 4)), repository, "classifier")


def image_with(bright: list[bool], seed: int) -> np.ndarray:
    """An 8x8 image whose four 4x4 tiles have means well above (True) or below (False) the threshold."""
    rng = np.random.default_rng(seed)
    image = np.empty((1, 1, 8, 8), np.float32)
    for tile, on in enumerate(bright):
        y, x = 4 * (tile // 2), 4 * (tile % 2)
        image[0, 0, y : y + 4, x : x + 4] = rng.uniform(0.7, 1.0, (4, 4)) if on else rng.uniform(0.0, 0.3, (4, 4))
    return image


def by_hand(image: np.ndarray) -> dict[str, np.ndarray]:
    """The pipeline's answer computed in numpy: boxes, threshold, crops, classifier per crop, arg-max."""
    boxes = models.reference_detector(image)[0]
    kept = boxes[boxes[:, 0] > THRESHOLD]
    crops = np.stack([image[:, :, int(y) : int(y) + 4, int(x) : int(x) + 4] for _, y, x in kept])
    scores = models.reference_classifier(crops)
    return {
        "crops": crops,
        "box_scores": kept[:, :1].reshape(-1, 1, 1),
        "scores": scores,
        "labels": scores.argmax(axis=2).astype(np.int32),
    }


Locations = Callable[[Path], tuple[str, str]]


def c_nodes(libraries: dict[str, Path]) -> Locations:
    return lambda repository: (str(libraries["crop"]), str(libraries["argmax"]))


def python_nodes(monkeypatch: pytest.MonkeyPatch) -> Locations:
    def place(repository: Path) -> tuple[str, str]:
        shutil.copy(NODES / "python_nodes.py", repository / "my_nodes.py")
        monkeypatch.syspath_prepend(str(NODES))
        return "my_nodes.py:CropNode", "python_nodes:ArgMaxNode"  # a file beside config.json, and a module

    return place


@pytest.fixture(params=["c", "python"])
def nodes(request: pytest.FixtureRequest, libraries: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Locations:
    return c_nodes(libraries) if request.param == "c" else python_nodes(monkeypatch)


DT_FLOAT, DT_INT32 = types_pb2.DataType.DT_FLOAT, types_pb2.DataType.DT_INT32


def test_metadata_of_the_realistic_pipeline(repository: Path, serve: Any, nodes: Locations) -> None:
    save_models(repository)
    server = serve(pipeline_config(*nodes(repository)))
    inputs, outputs = server.metadata("find_and_classify")
    assert inputs == {"image": ([1, 1, 8, 8], DT_FLOAT)}  # detector (1,1,8,8) intersected with crop (1,-1,-1,-1)
    assert outputs == {
        "labels": ([-1, 1], DT_INT32),
        "scores": ([-1, 1, 10], DT_FLOAT),
        "crops": ([-1, 1, -1, 4, 4], DT_FLOAT),
        "box_scores": ([-1, 1, 1], DT_FLOAT),
    }


@pytest.mark.parametrize("bright", [[True, False, False, False], [True, True, False, True], [True] * 4])
def test_detect_crop_classify_decide_equals_numpy(
    repository: Path, serve: Any, nodes: Locations, bright: list[bool]
) -> None:
    save_models(repository)
    server = serve(pipeline_config(*nodes(repository)))
    for seed in range(3):
        image = image_with(bright, seed)
        result = server.predict("find_and_classify", {"image": image})
        expected = by_hand(image)
        assert result["labels"].shape == (sum(bright), 1)
        np.testing.assert_array_equal(result["labels"], expected["labels"])
        np.testing.assert_allclose(result["scores"], expected["scores"], rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(result["crops"], expected["crops"])
        np.testing.assert_allclose(result["box_scores"], expected["box_scores"], rtol=1e-6)  # OpenVINO avg_pool


def test_no_boxes_aborts_as_ovms_does(repository: Path, serve: Any, nodes: Locations) -> None:
    save_models(repository)
    crop, argmax = nodes(repository)
    server = serve(pipeline_config(crop, argmax))
    error = rpc_error(lambda: server.predict("find_and_classify", {"image": image_with([False] * 4, 0)}))
    assert error.code() == grpc.StatusCode.ABORTED
    assert error.details() == (
        "Pipeline execution aborted due to no content from custom node - node crop produced 0 branches"
    )
    body_json = json.dumps({"inputs": {"image": image_with([False] * 4, 0).tolist()}})
    status, _, body = server.http("POST", "/v1/models/find_and_classify:predict", body_json)
    assert status == 204 and body == b""
    if crop.endswith(".so"):  # the empty crops went back to the library too
        assert counters(Path(crop))[0] == 0


def test_c_outputs_are_released_and_managers_deinitialized(
    repository: Path, serve: Any, libraries: dict[str, Path]
) -> None:
    save_models(repository)
    server = serve(pipeline_config(str(libraries["crop"]), str(libraries["argmax"])))
    assert counters(libraries["crop"]) == (0, 1) and counters(libraries["argmax"]) == (0, 1)
    images = [image_with([True, True, False, True], seed) for seed in range(5)]
    assert all(server.predict("find_and_classify", {"image": i})["labels"].shape == (3, 1) for i in images)
    assert counters(libraries["crop"])[0] == 0  # every crop buffer went back through the library's release()
    node = server.server.manager.pipelines["find_and_classify"].definition.custom_nodes[0]
    document = pipeline_config(str(libraries["crop"]), str(libraries["argmax"]))
    document["model_config_list"].append({"config": {"name": "other", "base_path": "other"}})
    models.save(models.add_mul(), repository, "other")
    models.write_config(repository, document)
    assert server.http("POST", "/v1/config/reload")[0] == 201  # models changed: the pipeline is rebuilt ...
    rebuilt = server.server.manager.pipelines["find_and_classify"].definition
    assert node in rebuilt.custom_nodes and counters(libraries["crop"]) == (0, 1)  # ... on the same node instances
    document["pipeline_config_list"] = []
    models.write_config(repository, document)
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert counters(libraries["crop"]) == (0, 0) and counters(libraries["argmax"]) == (0, 0)  # deinitialized


def test_a_response_holding_library_memory_defers_deinitialize(
    repository: Path, serve: Any, libraries: dict[str, Path]
) -> None:
    save_models(repository)
    server = serve(pipeline_config(str(libraries["crop"]), str(libraries["argmax"])))
    definition = server.server.manager.pipelines["find_and_classify"].definition
    image = image_with([True] * 4, 1)
    outputs = server.call(pipeline_run.run(definition, {"image": image}, server.server.manager.model_version_now))
    assert counters(libraries["crop"])[0] == 0  # crops were gathered (copied once) into the response
    assert counters(libraries["argmax"])[0] == 1  # the labels go to the response without a copy
    definition.retire()
    assert counters(libraries["crop"]) == (0, 0)
    assert counters(libraries["argmax"]) == (1, 1)  # the node waits for its memory to come back
    np.testing.assert_array_equal(outputs["labels"], by_hand(image)["labels"])
    del outputs
    assert counters(libraries["argmax"]) == (0, 0)


def statuses(server: RunningServer, name: str) -> tuple[str, str]:
    entry = server.server.manager.pipelines[name]
    return entry.status().state, entry.error


@pytest.mark.parametrize(
    ("library", "params", "message"),
    [
        ("missing", {}, "Pipeline refers to incorrect library - find_and_classify: node crop uses crop_lib "
                        "(Custom node library failed to open - crop_lib: "),
        ("incomplete", {}, "Pipeline refers to incorrect library - find_and_classify: node crop uses crop_lib "
                           "(Custom node library failed to load symbol - crop_lib ("),
        ("crop", {"fail_initialize": "1"}, "Failure during custom node library initialization - node crop "
                                           "(library crop_lib): initialize returned 3"),
        ("crop", {"mode": "fail_metadata"}, "Custom node failed on metadata call - node crop (library crop_lib): "
                                            "getInputsInfo returned 5"),
    ],
)  # fmt: skip
def test_library_load_errors_leave_the_rest_serving(
    repository: Path, serve: Any, libraries: dict[str, Path], library: str, params: dict[str, str], message: str
) -> None:
    save_models(repository)
    path = libraries.get(library, repository / "nowhere.so")
    document = pipeline_config(str(path), str(libraries["argmax"]), **params)
    server = serve(document)
    state, error = statuses(server, "find_and_classify")
    assert state == "LOADING" and error.startswith(message), error
    assert "failed to load symbol" not in message or error.endswith("getOutputsInfo)")
    error_rpc = rpc_error(lambda: server.predict("find_and_classify", {"image": image_with([True] * 4, 0)}))
    assert error_rpc.code() == grpc.StatusCode.UNAVAILABLE
    assert server.predict("detector", {"image": image_with([True] * 4, 0)})["boxes"].shape == (1, 4, 3)
    assert counters(libraries["argmax"])[1] == 0  # the other node's manager was let go with the failed pipeline
    if library == "crop":
        assert counters(libraries["crop"]) == (0, 0)


def test_metadata_calls_fail_in_the_validation_order_of_the_nodes(
    repository: Path, serve: Any, libraries: dict[str, Path]
) -> None:
    """Spec docs/pipelines.md#load-time-rules: initialize runs for every custom node first (step 2); the metadata calls
    are node checks (step 3), made in the order of the nodes. A node before the custom one that uses a missing model is
    reported first (the failed metadata call was reported at step 2)."""
    save_models(repository)
    document = pipeline_config(str(libraries["crop"]), str(libraries["argmax"]), mode="fail_metadata")
    document["pipeline_config_list"][0]["nodes"][0]["model_name"] = "nothing"
    server = serve(document)
    state, error = statuses(server, "find_and_classify")
    assert state == "LOADING"
    assert error == "Pipeline definition has reference to missing model - find_and_classify: node detect uses nothing"
    assert counters(libraries["crop"]) == (0, 0) and counters(libraries["argmax"]) == (0, 0)


REFUSING_DECIDE = """
class Refuse:
    def __init__(self, params):
        pass

    def inputs_info(self):
        return {"scores": ((-1, 1, -1), "float32")}

    def outputs_info(self):
        return {"labels": ((-1, 1), "int32")}

    def execute(self, inputs):
        raise ValueError("no decision")
"""


def test_a_failed_request_gives_library_memory_back_at_once(
    repository: Path, serve: Any, libraries: dict[str, Path]
) -> None:
    """The crops a C node gave are released when a request failing downstream of it ends, and a retired pipeline
    deinitializes then: they were held in a reference cycle (the run's tasks, their exception, its traceback's
    frames, the run) until Python's cyclic collector happened to run."""
    save_models(repository)
    (repository / "refuse.py").write_text(REFUSING_DECIDE)
    document = pipeline_config(str(libraries["crop"]), "refuse.py:Refuse")
    document["pipeline_config_list"][0]["outputs"] = [{"labels": {"node_name": "decide", "data_item": "labels"}}]
    server = serve(document)
    dll = ctypes.CDLL(str(libraries["crop"]), mode=ctypes.RTLD_LOCAL)
    dll.test_live_allocations.restype = dll.test_live_managers.restype = ctypes.c_long
    gc.collect()
    gc.disable()
    try:
        for seed in range(3):
            image = image_with([True] * 4, seed)
            error = rpc_error(lambda: server.predict("find_and_classify", {"image": image}))  # noqa: B023
            assert error.details().endswith("no decision")
            assert dll.test_live_allocations() == 0
        definition = server.server.manager.pipelines["find_and_classify"].definition
        definition.retire()
        assert (dll.test_live_allocations(), dll.test_live_managers()) == (0, 0)
    finally:
        gc.enable()


def test_a_library_that_keeps_failing_changes_nothing_on_reload(
    repository: Path, serve: Any, libraries: dict[str, Path]
) -> None:
    """A library entry that fails to open is tried again on every reload (and poll), but failing as before is no
    change: the reload answers 200 and no pipeline is rebuilt (it answered 201 and rebuilt them all each time)."""
    save_models(repository)
    later = repository / "later.so"
    document = pipeline_config(str(later), str(libraries["argmax"]))
    document["pipeline_config_list"].append(
        {
            "name": "boxes",
            "inputs": ["image"],
            "nodes": [document["pipeline_config_list"][0]["nodes"][0]],
            "outputs": [{"boxes": {"node_name": "detect", "data_item": "boxes"}}],
        }
    )
    server = serve(document)
    manager = server.server.manager
    assert statuses(server, "find_and_classify")[0] == "LOADING"
    serving = manager.pipelines["boxes"].definition
    for _ in range(2):
        assert server.http("POST", "/v1/config/reload")[0] == 200
    assert manager.pipelines["boxes"].definition is serving
    shutil.copy(libraries["crop"], later)  # the library appears: the next reload opens it
    assert server.http("POST", "/v1/config/reload")[0] == 201
    image = image_with([True, False, True, True], 2)
    labels = server.predict("find_and_classify", {"image": image})["labels"]
    np.testing.assert_array_equal(labels, by_hand(image)["labels"])


@pytest.mark.parametrize(
    ("mode", "code", "message"),
    [
        ("fail", grpc.StatusCode.INTERNAL,
         "Custom node failed during execution - node crop (library crop_lib): execute returned 1"),
        ("null_outputs", grpc.StatusCode.INTERNAL,
         "Custom node library has returned corrupted outputs handle - node crop (library crop_lib)"),
        ("no_name", grpc.StatusCode.INTERNAL, "Custom node output is missing name - node crop (library crop_lib)"),
        ("bad_name", grpc.StatusCode.INTERNAL,  # not UTF-8: the name shows escaped
         "Custom node output is missing - node crop did not produce crops; it gave cr\\xffps, scores"),
        ("bad_size", grpc.StatusCode.INTERNAL,
         "Custom node output has invalid content size - node crop (library crop_lib): output crops of shape "
         "(4, 1, 1, 4, 4) and precision FP32 needs 256 bytes; the library gave 260"),
    ],
)  # fmt: skip
def test_c_execution_errors_name_the_node_and_leak_nothing(
    repository: Path, serve: Any, libraries: dict[str, Path], mode: str, code: grpc.StatusCode, message: str
) -> None:
    save_models(repository)
    server = serve(pipeline_config(str(libraries["crop"]), str(libraries["argmax"]), mode=mode))
    error = rpc_error(lambda: server.predict("find_and_classify", {"image": image_with([True] * 4, 0)}))
    assert (error.code(), error.details()) == (code, message)
    assert counters(libraries["crop"])[0] == 0


def test_a_box_off_the_image(repository: Path, serve: Any, nodes: Locations) -> None:
    """The C node fails (INTERNAL); the Python node raises ValueError, which says the input is wrong (400)."""
    save_models(repository)
    crop, argmax = nodes(repository)
    server = serve(pipeline_config(crop, argmax, shift="2"))
    error = rpc_error(lambda: server.predict("find_and_classify", {"image": image_with([True] * 4, 0)}))
    if crop.endswith(".so"):
        assert (error.code(), error.details()) == (
            grpc.StatusCode.INTERNAL,
            "Custom node failed during execution - node crop (library crop_lib): execute returned 4",
        )
    else:
        assert (error.code(), error.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Custom node failed during execution - node crop (library crop_lib): a box is off the 8x8 image",
        )


def readme_example() -> tuple[str, dict[str, Any]]:
    """The Python custom node example of docs/pipelines.md: its nodes.py and its config.json fragment."""
    text = (Path(__file__).parent.parent / "docs" / "pipelines.md").read_text(encoding="utf-8")
    section = text[text.index("### Python custom nodes") :]
    code = section[section.index("```python\n") + 10 :]
    fragment = section[section.index("```json\n") + 8 :]
    return code[: code.index("```")], json.loads("{" + fragment[: fragment.index("```")] + "}")


def test_the_docs_python_node_example_serves(repository: Path, serve: Any) -> None:
    code, document = readme_example()
    (repository / "nodes.py").write_text(code)
    document["pipeline_config_list"][0]["nodes"][1]["params"]["size"] = "4"  # the example's 224, made tiny
    entries = [{"name": n, "base_path": n, "plugin_config": models.F32} for n in ("detector", "classifier")]
    document["model_config_list"] = [{"config": entry} for entry in entries]
    models.save(models.detector(channels=3), repository, "detector")
    models.save(models.classifier(image=(1, 3, 4, 4)), repository, "classifier")
    server = serve(document)
    rng = np.random.default_rng(5)
    image = rng.uniform(0, 0.3, (1, 3, 8, 8)).astype(np.float32)
    image[:, :, 4:, :4] += 0.6  # one bright tile: one box
    image[:, :, :4, 4:] += 0.6  # and another
    scores = server.predict("find_and_classify", {"image": image})["scores"]
    crops = np.stack([image[:, :, :4, 4:], image[:, :, 4:, :4]])
    np.testing.assert_allclose(scores, models.reference_classifier(crops), rtol=1e-5, atol=1e-4)


def test_a_fixed_count_on_a_custom_node(repository: Path, serve: Any, libraries: dict[str, Path]) -> None:
    save_models(repository)
    document = pipeline_config(str(libraries["crop"]), str(libraries["argmax"]))
    document["pipeline_config_list"][0]["nodes"][1]["demultiply_count"] = 4
    server = serve(document)
    assert server.metadata("find_and_classify")[1]["scores"] == ([4, 1, 10], DT_FLOAT)
    image = image_with([True] * 4, 3)
    labels = server.predict("find_and_classify", {"image": image})["labels"]
    np.testing.assert_array_equal(labels, by_hand(image)["labels"])
    error = rpc_error(lambda: server.predict("find_and_classify", {"image": image_with([True, False, True, True], 3)}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "Wrong dimension size. Should match demultiply count - node crop: crop has first dimension 3, "
        "demultiply_count is 4"
    )


def test_kserve_clients_drive_the_custom_pipeline(repository: Path, serve: Any, libraries: dict[str, Path]) -> None:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    save_models(repository)
    server = serve(pipeline_config(str(libraries["crop"]), str(libraries["argmax"])))
    image = image_with([True, False, True, True], 7)
    expected = by_hand(image)
    for module, url in ((triton_grpc, f"127.0.0.1:{server.port}"), (triton_http, f"127.0.0.1:{server.rest_port}")):
        client = module.InferenceServerClient(url)
        assert client.is_model_ready("find_and_classify")
        tensor = module.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        result = client.infer("find_and_classify", [tensor])
        np.testing.assert_array_equal(result.as_numpy("labels"), expected["labels"])
        np.testing.assert_allclose(result.as_numpy("scores"), expected["scores"], rtol=1e-5, atol=1e-4)
        client.close()


CHECK_NODE = '''
import threading, time
import numpy as np

class Check:
    """Per image: fails for an image whose mean is above `limit`, after the other branches have started; the
    others take a while, so a request that failed must still wait for them."""
    lock = threading.Lock()
    started = finished = 0

    def __init__(self, params):
        self.limit = float(params["limit"])

    def inputs_info(self):
        return {"x": ((1, 4), "float32")}

    def outputs_info(self):
        return {"y": ((1, 4), "float32")}

    def execute(self, inputs):
        with Check.lock:
            Check.started += 1
        try:
            x = inputs["x"]
            if x.mean() > self.limit:
                time.sleep(0.05)
                raise ValueError(f"mean {x.mean():g} is above {self.limit:g}")
            time.sleep(0.3)
            return {"y": x * 2}
        finally:
            with Check.lock:
                Check.finished += 1
'''


def test_the_first_error_names_the_branch_and_waits_for_running_nodes(repository: Path, serve: Any) -> None:
    (repository / "check.py").write_text(CHECK_NODE)
    document = {
        "model_config_list": [],
        "custom_node_library_config_list": [{"name": "checks", "base_path": "check.py:Check"}],
        "pipeline_config_list": [
            {
                "name": "checked",
                "inputs": ["x"],
                "demultiply_count": -1,
                "nodes": [
                    {
                        "name": "check",
                        "type": "custom",
                        "library_name": "checks",
                        "params": {"limit": "10"},
                        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
                        "outputs": [{"data_item": "y", "alias": "y"}],
                    }
                ],
                "outputs": [{"y": {"node_name": "check", "data_item": "y"}}],
            }
        ],
    }
    server = serve(document)
    x = np.zeros((4, 1, 4), np.float32)
    np.testing.assert_array_equal(server.predict("checked", {"x": x + 1})["y"], (x + 1) * 2)
    x[2] = 50
    error = rpc_error(lambda: server.predict("checked", {"x": x}))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Custom node failed during execution - node check (library checks): mean 50 is above 10; branch 2",
    )
    check = server.server.manager.pipelines["checked"].definition.custom_nodes[0]._instance._object
    assert type(check).started == type(check).finished == 8  # the three slow branches ended before the answer


SLOW_NODE = '''
import time
from pathlib import Path

class Slow:
    """A constructor that takes its time (a node loading a vocabulary, say): it waits for the test's go-ahead."""

    def __init__(self, params):
        Path(params["started"]).touch()
        deadline = time.monotonic() + 20
        while not Path(params["go"]).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("no go-ahead: the server was not answering meanwhile")
            time.sleep(0.01)

    def inputs_info(self):
        return {"x": ((1, 4), "float32")}

    def outputs_info(self):
        return {"y": ((1, 4), "float32")}

    def execute(self, inputs):
        return {"y": inputs["x"]}
'''


def test_a_slow_node_constructor_does_not_hold_the_server(repository: Path, serve: Any) -> None:
    save_models(repository)
    (repository / "slow.py").write_text(SLOW_NODE)
    server = serve({"model_config_list": [{"config": {"name": "detector", "base_path": "detector"}}]})
    started, go = repository / "started", repository / "go"
    output = {"y": {"node_name": "s", "data_item": "y"}}
    node = {
        "name": "s",
        "type": "custom",
        "library_name": "slow",
        "params": {"started": str(started), "go": str(go)},
        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
        "outputs": [{"data_item": "y", "alias": "y"}],
    }
    document = {
        "model_config_list": [{"config": {"name": "detector", "base_path": "detector"}}],
        "custom_node_library_config_list": [{"name": "slow", "base_path": "slow.py:Slow"}],
        "pipeline_config_list": [{"name": "slowly", "inputs": ["x"], "nodes": [node], "outputs": [output]}],
    }
    models.write_config(repository, document)
    reload = threading.Thread(target=lambda: server.http("POST", "/v1/config/reload"))
    reload.start()
    while not started.exists():
        time.sleep(0.01)
    # The node is being built now; the server answers meanwhile (were its loop blocked, this would wait for the
    # constructor, which waits for this answer, until the constructor gives up and the pipeline fails).
    assert server.status("detector").model_version_status[0].state == 30  # AVAILABLE
    go.touch()
    reload.join(30)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(server.predict("slowly", {"x": x})["y"], x)


IMAGE_NODE = '''
import numpy as np

class Pixels:
    """Shows what an image input of a custom node received (spec 5.5: decoded at its own size)."""

    def __init__(self, params):
        pass

    def inputs_info(self):
        return {"image": ((1, -1, -1, 3), "uint8")}

    def outputs_info(self):
        return {"pixels": ((1, -1, -1, 3), "float32")}

    def execute(self, inputs):
        return {"pixels": inputs["image"].astype(np.float32)}
'''


def test_an_image_input_of_a_custom_node_is_decoded_at_its_own_size(repository: Path, serve: Any) -> None:
    import io

    from PIL import Image

    from ovserve._proto.tensorflow.core.framework import tensor_pb2
    from ovserve._proto.tensorflow_serving.apis import predict_pb2
    from ovserve.tfs import make_ndarray

    (repository / "pixels.py").write_text(IMAGE_NODE)
    node = {
        "name": "show",
        "type": "custom",
        "library_name": "pixels",
        "inputs": [{"image": {"node_name": "request", "data_item": "image"}}],
        "outputs": [{"data_item": "pixels", "alias": "pixels"}],
    }
    output = {"pixels": {"node_name": "show", "data_item": "pixels"}}
    server = serve(
        {
            "model_config_list": [],
            "custom_node_library_config_list": [{"name": "pixels", "base_path": "pixels.py:Pixels"}],
            "pipeline_config_list": [{"name": "show", "inputs": ["image"], "nodes": [node], "outputs": [output]}],
        }
    )
    picture = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(picture).save(png, "PNG")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "show"
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[png.getvalue()])
    proto.tensor_shape.dim.add(size=1)
    request.inputs["image"].CopyFrom(proto)
    pixels = make_ndarray(server.predict_raw(request).outputs["pixels"])
    np.testing.assert_array_equal(pixels, picture[np.newaxis, :, :, ::-1].astype(np.float32))  # BGR, as OVMS


CLOSING_NODE = """
import numpy as np

class Shift:
    \"\"\"Image pixels plus `add`; refuses to run once closed (a C library's manager would be freed by then).\"\"\"

    def __init__(self, params):
        self.add, self.closed = float(params["add"]), False

    def inputs_info(self):
        return {"image": ((1, -1, -1, 3), "uint8")}

    def outputs_info(self):
        return {"pixels": ((1, -1, -1, 3), "float32")}

    def execute(self, inputs):
        if self.closed:
            raise RuntimeError("execute after close")
        return {"pixels": inputs["image"].astype(np.float32) + self.add}

    def close(self):
        self.closed = True
"""


@pytest.mark.parametrize("change", ["removed", "changed"])
def test_a_pipeline_retired_between_lookup_and_run_serves_the_request_on_the_old_definition(
    repository: Path, serve: Any, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A request looks its pipeline up, then its images decode in a worker thread; a reload meanwhile retires that
    definition. It closed its nodes then, no request running on it, and the request ran on the closed node (for a C
    library: execute on a deinitialized manager). Now the request holds the definition from its lookup (a lease):
    it is served to the end on the old definition, whose nodes close after it; the next request gets the definition
    that replaced it, or "Pipeline is retired"."""
    import io

    from PIL import Image

    from ovserve import images
    from ovserve._proto.tensorflow.core.framework import tensor_pb2
    from ovserve._proto.tensorflow_serving.apis import predict_pb2
    from ovserve.tfs import make_ndarray

    (repository / "shift.py").write_text(CLOSING_NODE)
    node = configs.node("show", {"image": "request.image"}, ["pixels"], library="shift", params={"add": "0"})
    show = configs.pipeline("show", ["image"], [node], {"pixels": "show.pixels"})
    document = configs.document(pipelines=[show], libraries={"shift": "shift.py:Shift"})
    server = serve(document)
    decoding, go = threading.Event(), threading.Event()
    decode = images.PendingImages._decode_all

    def paused(self: Any, limits: Any) -> Any:  # the decode of this request's images waits for the reload
        decoding.set()
        assert go.wait(30)
        return decode(self, limits)

    monkeypatch.setattr(images, "INLINE_DECODE_BYTES", 0)
    monkeypatch.setattr(images.PendingImages, "_decode_all", paused)
    picture = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(picture).save(png, "PNG")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "show"
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[png.getvalue()])
    proto.tensor_shape.dim.add(size=1)
    request.inputs["image"].CopyFrom(proto)
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(make_ndarray(server.predict_raw(request).outputs["pixels"]))
        except grpc.RpcError as e:
            outcome.append(e)

    thread = threading.Thread(target=call)
    thread.start()
    assert decoding.wait(30)
    old = server.server.manager.pipelines["show"].definition
    if change == "removed":
        document["pipeline_config_list"] = []
    else:
        node["params"] = {"add": "1"}
    models.write_config(repository, document)
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert old.custom_nodes  # retired, held by the request: its node stays open
    go.set()
    thread.join(30)
    expected = picture[np.newaxis, :, :, ::-1].astype(np.float32)
    np.testing.assert_array_equal(outcome[0], expected)  # the old definition's node (add 0), not closed under it
    assert old.custom_nodes == []  # let go once the request ended
    monkeypatch.undo()
    outcome.clear()
    call()
    if change == "removed":
        assert isinstance(outcome[0], grpc.RpcError)
        assert (outcome[0].code(), outcome[0].details()) == (
            grpc.StatusCode.NOT_FOUND,
            "Pipeline is retired - pipeline show",
        )
    else:
        np.testing.assert_array_equal(outcome[0], expected + 1)


FAILING_CLOSE = """
class Echo:
    def __init__(self, params):
        pass

    def inputs_info(self):
        return {"x": ((1, 4), "float32")}

    def outputs_info(self):
        return {"y": ((1, 4), "float32")}

    def execute(self, inputs):
        return {"y": inputs["x"]}

    def close(self):
        raise RuntimeError("close failed")
"""


def test_a_python_node_whose_close_raises_stops_neither_a_reload_nor_the_server(
    repository: Path, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """What close() raises is logged, as a C library's deinitialize result is (docs/pipelines.md#c-abi); it escaped the
    reload half-way (500, the removed pipelines still AVAILABLE, the new one missing) and the server's stop."""
    (repository / "echo.py").write_text(FAILING_CLOSE)
    node = configs.node("e", {"x": "request.x"}, ["y"], library="echo")
    first = configs.pipeline("first", ["x"], [node], {"y": "e.y"})
    document = configs.document(pipelines=[first, {**first, "name": "second"}], libraries={"echo": "echo.py:Echo"})
    server = serve(document)
    document["pipeline_config_list"] = [{**first, "name": "third"}]
    models.write_config(repository, document)
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert config_states(server) == {"first": ["END"], "second": ["END"], "third": ["AVAILABLE"]}
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(server.predict("third", {"x": x})["y"], x)
    assert "custom node e (library echo): close() failed" in caplog.text


RACE_NODES = """
import threading, time
import numpy as np

BARRIER = threading.Barrier(2)
STATE = {"delay": 0.0, "shard_runs": 0}


class Fails:
    def __init__(self, params):
        pass

    def inputs_info(self):
        return {"x": ((1, 4), "float32")}

    def outputs_info(self):
        return {"y": ((1, 4), "float32")}

    def execute(self, inputs):
        BARRIER.wait(5)
        raise ValueError("no")


class Splits(Fails):
    \"\"\"Two shards, returned a little after Fails fails (STATE["delay"] later).\"\"\"

    def outputs_info(self):
        return {"y": ((2, 1, 4), "float32")}

    def execute(self, inputs):
        BARRIER.wait(5)
        if STATE["delay"]:
            time.sleep(STATE["delay"])
        return {"y": np.stack([inputs["x"]] * 2)}


class Shard(Fails):
    def execute(self, inputs):
        STATE["shard_runs"] += 1
        time.sleep(0.002)
        return {"y": inputs["x"]}
"""


def test_a_failed_request_ends_with_every_task_it_started_and_starts_no_node_after(
    repository: Path, serve: Any
) -> None:
    """One node fails while a demultiplexer beside it returns: the branches' gathering tasks (asyncio.gather's, not
    tracked by the run) outlived the failed request and sometimes started the shard nodes after it had answered,
    on nodes that a retirement may close then. Now a failed request cancels and awaits all its tasks."""
    import asyncio
    import sys

    (repository / "race.py").write_text(RACE_NODES)

    def custom(name: str, source: str, **extra: Any) -> dict[str, Any]:
        return configs.node(name.lower(), {"x": source}, ["y"], library=name, **extra)

    nodes = [
        custom("Fails", "request.x"),
        custom("Splits", "request.x", demultiply_count=-1),
        custom("Shard", "splits.y"),
    ]
    race = configs.pipeline("race", ["x"], nodes, {"f": "fails.y", "s": "shard.y"})
    libraries = {n: f"race.py:{n}" for n in ("Fails", "Splits", "Shard")}
    server = serve(configs.document(pipelines=[race], libraries=libraries))
    state = next(m for k, m in sys.modules.items() if k.endswith("_race")).STATE
    manager = server.server.manager
    definition = manager.pipelines["race"].definition

    async def once() -> tuple[int, int, int]:
        with pytest.raises(Exception, match="no"):
            await pipeline_run.run(definition, {"x": np.ones((1, 4), np.float32)}, manager.model_version_now)
        runs = state["shard_runs"]  # at the answer, with the tasks of the run still there:
        tasks = sum(getattr(t.get_coro(), "__qualname__", "").startswith("_Run.") for t in asyncio.all_tasks())
        await asyncio.sleep(0.005)
        return tasks, runs, state["shard_runs"]

    late = lingering = 0
    for i in range(200):
        state["delay"] = (i % 50) * 10e-6
        tasks, at_answer, later = server.call(once())
        lingering += tasks != 0
        late += later != at_answer
    assert (lingering, late) == (0, 0)
