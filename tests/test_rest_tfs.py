"""TF Serving's REST API on a real server: status, metadata, predict in row and column formats, number formatting,
and every documented error, over plain HTTP and with ovmsclient's REST client."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import openvino as ov
import ovmsclient
import pytest
from conftest import RunningServer
from openvino import opset13 as ops

from ovserve import tfs
from ovserve.errors import ServingError
from ovserve.tensors import TensorSpec

IMAGE = (1, 3, 4, 4)


def _named(node: Any, name: str) -> Any:
    node.output(0).get_tensor().set_names({name})
    return node


def pair_model() -> ov.Model:
    """Two inputs a, b of shape [-1, 3] and two outputs: sum = a + b, prod = a * b."""
    a = _named(ops.parameter([-1, 3], np.float32, name="a"), "a")
    b = _named(ops.parameter([-1, 3], np.float32, name="b"), "b")
    return ov.Model([_named(ops.add(a, b), "sum"), _named(ops.multiply(a, b), "prod")], [a, b], "pair")


def mixed_model() -> ov.Model:
    """x [-1, 2] → y = x + 0 ([N, 2]) and total = sum of all elements (a scalar)."""
    x = _named(ops.parameter([-1, 2], np.float32, name="x"), "x")
    y = _named(ops.add(x, ops.constant(np.float32(0))), "y")
    total = _named(ops.reduce_sum(x, ops.constant(np.array([0, 1], np.int64)), keep_dims=False), "total")
    return ov.Model([y, total], [x], "mixed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the module: the guide's resnet + resnet50DAG, and small models for formats and precisions."""
    repository: Path = tmp_path_factory.mktemp("rest_tfs")
    models.save(models.classifier(), repository, "resnet")
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    extra = {
        "identity": (models.add_mul(shape=(1, 8), add=0.0, mul=1.0), f32),
        "double": (models.add_mul(shape=(1, 4), add=0.0, mul=1.0, dtype=np.float64), f32),
        "ints": (models.add_mul(shape=(1, 4), add=1, mul=2, dtype=np.int32), {}),
        "half": (models.add_mul(shape=(1, 4), dtype=np.float16), {}),
        "pair": (pair_model(), f32),
        "mixed": (mixed_model(), f32),
    }
    document = models.seed_config()
    for name, (model, plugin) in extra.items():
        models.save(model, repository, name)
        document["model_config_list"].append({"config": {"name": name, "base_path": name, "plugin_config": plugin}})
    running = RunningServer(models.write_config(repository, document))
    yield running
    running.stop()


def call(server: RunningServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request; a non-bytes body is sent as JSON; the answer is parsed JSON (NaN/Infinity allowed)."""
    data = body if body is None or isinstance(body, (bytes, str)) else json.dumps(body)
    status, headers, text = server.http(method, path, data)
    assert headers["content-type"] == "application/json"
    return status, json.loads(text)


def error(server: RunningServer, method: str, path: str, body: Any = None) -> tuple[int, str]:
    status, document = call(server, method, path, body)
    assert set(document) == {"error"}, document
    return status, document["error"]


def predict(server: RunningServer, name: str, body: Any, version: str = "") -> Any:
    status, document = call(server, "POST", f"/v1/models/{name}{version}:predict", body)
    assert status == 200, document
    return document


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, *IMAGE)).astype(np.float32)


def close(actual: Any, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float32), expected, rtol=1e-4, atol=1e-2)


# --- status and metadata -----------------------------------------------------------------------------------


def test_status_json_as_ovms_prints_it(server: RunningServer) -> None:
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": "OK"}}]}  # fmt: skip
    for path in ("resnet", "resnet/versions/1", "resnet/versions/0", "resnet/labels/stable", "%72esnet", "resnet50DAG"):
        status, _, body = server.http("GET", f"/v1/models/{path}")
        assert (status, json.loads(body)) == (200, expected), path
        assert body.startswith(b'{\n "model_version_status": [\n  {\n   "version": "1",'), body


def test_metadata_json_with_the_signature_any(server: RunningServer) -> None:
    for path in ("resnet50DAG/metadata", "resnet50DAG/versions/1/metadata", "resnet50DAG/labels/x/metadata"):
        status, document = call(server, "GET", f"/v1/models/{path}")
        assert status == 200
        assert document["modelSpec"] == {"name": "resnet50DAG", "signatureName": "", "version": "1"}
        signature_def = document["metadata"]["signature_def"]
        assert signature_def["@type"] == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
        serving = signature_def["signatureDef"]["serving_default"]
        assert serving["methodName"] == "" and serving["defaults"] == {}
        dims = [{"size": str(d), "name": ""} for d in (-1, 1, 3, 4, 4)]
        assert serving["inputs"] == {"0": {"name": "0", "dtype": "DT_FLOAT",
                                     "tensorShape": {"dim": dims, "unknownRank": False}}}  # fmt: skip
        assert serving["outputs"]["1463"]["tensorShape"]["dim"] == [{"size": s, "name": ""} for s in ("-1", "1", "10")]
    status, _, body = server.http("GET", "/v1/models/resnet/metadata")
    assert status == 200 and body.startswith(b'{\n "modelSpec": {\n  "name": "resnet",')
    assert json.loads(body)["modelSpec"]["version"] == "1"


def test_ovmsclient_status_and_metadata(server: RunningServer) -> None:
    client = ovmsclient.make_http_client(f"127.0.0.1:{server.rest_port}")
    assert client.get_model_status(model_name="resnet") == {
        1: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"}
    }
    metadata = client.get_model_metadata(model_name="resnet50DAG")
    assert metadata == {
        "model_version": 1,
        "inputs": {"0": {"shape": [-1, 1, 3, 4, 4], "dtype": "DT_FLOAT"}},
        "outputs": {"1463": {"shape": [-1, 1, 10], "dtype": "DT_FLOAT"}},
    }
    pair = client.get_model_metadata(model_name="pair", model_version=1)
    assert pair["inputs"] == {
        "a": {"shape": [-1, 3], "dtype": "DT_FLOAT"},
        "b": {"shape": [-1, 3], "dtype": "DT_FLOAT"},
    }
    with pytest.raises(ovmsclient.ModelNotFoundError, match="Model with requested name is not found"):
        client.get_model_status(model_name="nope")


# --- predict -----------------------------------------------------------------------------------------------


def test_predict_model_in_every_format(server: RunningServer) -> None:
    image = images(1)
    expected = models.reference_classifier(image)[0]  # (1, 10), what the batch-1 model answers
    grpc = server.predict("resnet", {"0": image[0]})["1463"]
    np.testing.assert_allclose(grpc, expected, rtol=1e-4, atol=1e-2)
    row_nonamed = predict(server, "resnet", {"instances": image[0].tolist()})
    row_named = predict(server, "resnet", {"instances": [{"0": image[0, 0].tolist()}]}, "/versions/1")
    column_named = predict(server, "resnet", {"inputs": {"0": image[0].tolist()}, "signature_name": "x"})
    column_nonamed = predict(server, "resnet", {"inputs": image[0].tolist()}, "/labels/any")
    assert set(row_nonamed) == set(row_named) == {"predictions"}
    assert set(column_named) == set(column_nonamed) == {"outputs"}
    for document in (row_nonamed, row_named, column_named, column_nonamed):
        value = next(iter(document.values()))
        close(value, expected)
        np.testing.assert_allclose(np.asarray(value, np.float32), grpc, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_predict_demultiplexing_pipeline(server: RunningServer, n: int) -> None:
    batch = images(n, seed=n)
    expected = models.reference_classifier(batch)  # (n, 1, 10)
    grpc = server.predict("resnet50DAG", {"0": batch})["1463"]
    rows = predict(server, "resnet50DAG", {"instances": [{"0": image.tolist()} for image in batch]})["predictions"]
    nonamed = predict(server, "resnet50DAG", {"instances": batch.tolist()})["predictions"]
    columns = predict(server, "resnet50DAG", {"inputs": {"0": batch.tolist()}})["outputs"]
    for value in (rows, nonamed, columns):
        assert np.asarray(value).shape == (n, 1, 10)
        close(value, expected)
        np.testing.assert_allclose(np.asarray(value, np.float32), grpc, rtol=1e-6)


def test_ovmsclient_predict(server: RunningServer) -> None:
    client = ovmsclient.make_http_client(f"127.0.0.1:{server.rest_port}")
    for n in (1, 4):
        batch = images(n, seed=10 + n)
        scores = client.predict(inputs={"0": batch}, model_name="resnet50DAG")
        close(scores, models.reference_classifier(batch))
    image = images(1)[0]
    close(
        client.predict(inputs={"0": image}, model_name="resnet", model_version=1),
        models.reference_classifier(image[None])[0],
    )
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.full((2, 3), 0.5, np.float32)
    outputs = client.predict(inputs={"a": a, "b": b}, model_name="pair")
    np.testing.assert_allclose(outputs["sum"], a + b)
    np.testing.assert_allclose(outputs["prod"], a * b)
    with pytest.raises(ovmsclient.ModelNotFoundError):
        client.predict(inputs={"0": image}, model_name="nope")
    with pytest.raises(ovmsclient.InvalidInputError, match="Invalid input shape"):
        client.predict(inputs={"0": images(1)[:, :, :2]}, model_name="resnet50DAG")


def test_predict_two_inputs_two_outputs(server: RunningServer) -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    b = np.array([[0.5, 0.25, 2], [1, -1, 10]], np.float32)
    rows = predict(server, "pair", {"instances": [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(2)]})
    assert rows == {"predictions": [{"prod": (a[i] * b[i]).tolist(), "sum": (a[i] + b[i]).tolist()} for i in range(2)]}
    columns = predict(server, "pair", {"inputs": {"a": a.tolist(), "b": b.tolist()}})
    assert columns == {"outputs": {"prod": (a * b).tolist(), "sum": (a + b).tolist()}}
    grpc = server.predict("pair", {"a": a, "b": b})
    assert columns["outputs"] == {name: value.tolist() for name, value in grpc.items()}


def test_number_formatting_follows_tf_serving(server: RunningServer) -> None:
    values = [0.1, 1 / 3, 1e-7, 1.0, 3.4028234663852886e38, 123456789.0, float("nan"), float("-inf")]
    status, _, body = server.http("POST", "/v1/models/identity:predict", json.dumps({"instances": [values]}))
    assert status == 200
    (row,) = json.loads(body)["predictions"]
    expected = [0.1, 0.333333343, 1e-07, 1.0, 3.40282347e38, 123456792.0]  # TF Serving's %g / %.9g texts
    assert row[:6] == expected
    assert math.isnan(row[6]) and row[7] == -math.inf
    for text in (b"[0.1,0.333333343,1e-07,1.0,3.40282347e+38,123456792.0,NaN,-Infinity]",):
        assert text in body
    # FP64 outputs keep every digit (OpenVINO's CPU computes FP64 models in FP32: send values FP32 holds exactly)
    doubles = [float(np.float32(0.1)), float(np.float32(1 / 3)), 2.0**100, 2.0]
    assert predict(server, "double", {"inputs": [doubles]}) == {"outputs": [doubles]}
    ints = predict(server, "ints", {"inputs": [[1.7, 2, -3, 4]]})  # JSON numbers are cast to the input's I32
    assert ints == {"outputs": [[4, 6, -4, 10]]}
    assert b"[[4,6,-4,10]]" in server.http("POST", "/v1/models/ints:predict", '{"instances": [[1, 2, -3, 4]]}')[2]


def test_float32_text_rule_on_chosen_and_random_values() -> None:
    chosen = np.array([0.1, 1 / 3, 1e-7, 1.0, 9e6, 3e-5, 16777216.0, 1e10, 3.4028235e38, 1e-45, 99999.95], np.float32)
    assert tfs.json_floats(chosen).tolist() == [
        0.1, 0.333333343, 1e-07, 1.0, 9e6, 3e-05, 16777216.0, 1e10, 3.40282347e38, 1.4013e-45, 99999.9531,
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(20000).astype(np.float32) * np.float32(10.0) ** rng.integers(-30, 30, 20000),
        (rng.integers(-10**6, 10**6, 20000) / 10.0 ** rng.integers(0, 9, 20000)).astype(np.float32),
    ])  # fmt: skip
    reference = [float(f"{v:.6g}") if np.float32(f"{v:.6g}") == v else float(f"{v:.9g}") for v in values.tolist()]
    assert tfs.json_floats(values).tolist() == reference
    special = tfs.json_floats(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32))
    assert math.isnan(special[0]) and special[1:].tolist() == [math.inf, -math.inf, 0.0, -0.0]


def test_binary_and_string_values_become_bytes() -> None:
    specs = {"img": TensorSpec("img", np.dtype(object), (-1,))}  # a STRING input takes the bytes as they are
    decoder = tfs.RestPredict(b'{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ"}]}')
    (array,) = decoder(specs).values()
    assert array.dtype == object and array.tolist() == [b"hello", b"world"]
    column = tfs.RestPredict(b'{"inputs": {"img": {"b64": "aGVsbG8="}}}')(specs)["img"]
    assert column.shape == (1,) and column[0] == b"hello"
    # Plain strings for a U8 input of rank 2: packed, zero padded, one row per string (docs/apis.md#strings-2d).
    text = tfs.RestPredict(b'{"inputs": ["ab", "c"]}')({"t": TensorSpec("t", np.dtype(np.uint8), (-1, -1))})["t"]
    assert text.dtype == np.uint8 and text.tolist() == [[97, 98, 0], [99, 0, 0]]
    with pytest.raises(ServingError, match="Could not parse instance content"):
        tfs.RestPredict(b'{"instances": ["ab"]}')({"img": TensorSpec("img", np.dtype(np.float32), (-1, 4, 4, 3))})


# --- errors ------------------------------------------------------------------------------------------------

NAMED_IMAGE = {"0": np.zeros(IMAGE[1:]).tolist()}
ERRORS = [
    ("POST", "/v1/models/resnet:predict", "[1, 2]", 400, "Request body should be JSON object"),
    ("POST", "/v1/models/resnet:predict", {"instances": [1], "inputs": {}}, 400,
     "Invalid JSON structure. Could not detect row or column format"),
    ("POST", "/v1/models/resnet:predict", {"signature_name": "x"}, 400,
     "Invalid JSON structure. Could not detect row or column format"),
    ("POST", "/v1/models/resnet:predict", {"instances": 5}, 400,
     "Invalid JSON structure. Nonamed instance is not an array."),
    ("POST", "/v1/models/resnet:predict", {"instances": []}, 400,
     "Invalid JSON structure. Missing instances in row format"),
    ("POST", "/v1/models/resnet:predict", {"instances": [NAMED_IMAGE, 5]}, 400,
     "Invalid JSON structure. One of named instances is not a JSON object."),
    ("POST", "/v1/models/resnet:predict", {"instances": [None]}, 400,
     "Could not detect neither named or nonamed format"),
    ("POST", "/v1/models/resnet:predict", {"instances": [[[1, 2], [3]]]}, 400,
     "Could not parse instance content. Not valid ndarray detected"),
    ("POST", "/v1/models/resnet:predict", {"instances": [{"0": [[1, 2], [3]]}]}, 400,
     "Could not parse instance content. Not valid ndarray detected"),
    ("POST", "/v1/models/resnet:predict", {"instances": [{}]}, 400,
     "Could not parse instance content. Not valid ndarray detected"),
    ("POST", "/v1/models/resnet:predict", {"inputs": {"0": [[1, 2], [3, [4]]]}}, 400,
     "Could not parse input content. Not valid ndarray detected"),
    ("POST", "/v1/models/resnet:predict", {"inputs": {"0": []}}, 400,
     "Could not parse input content. Not valid ndarray detected"),
    ("POST", "/v1/models/resnet:predict", {"inputs": {"0": [["a"]]}}, 400,
     "Could not parse input content. Not valid ndarray detected"),
    ("POST", "/v1/models/resnet:predict", {"inputs": {"0": [[True]]}}, 400,
     "Could not parse input content. Not valid ndarray detected"),
    ("POST", "/v1/models/ints:predict", {"inputs": {"x": [[1, True, 3, 4]]}}, 400,  # numpy would read 1
     "Could not parse input content. Not valid ndarray detected - input x: booleans among numbers"),
    ("POST", "/v1/models/identity:predict", {"instances": [[0.5, 1, 2, 3, 4, 5, 6, False]]}, 400,
     "Could not parse instance content. Not valid ndarray detected - input x: booleans among numbers"),
    ("POST", "/v1/models/resnet:predict", {"inputs": 5}, 400,
     "Invalid JSON structure. One of inputs is not a JSON object."),
    ("POST", "/v1/models/resnet:predict", {"inputs": {}}, 400, "Invalid JSON structure, missing inputs"),
    ("POST", "/v1/models/resnet:predict", {"inputs": {"x": [1, 2]}}, 400,
     "Missing input with specific name - Required input: 0"),
    ("POST", "/v1/models/resnet:predict", {"inputs": {"0": [[1.0]], "x": [1]}}, 400,
     "Invalid number of inputs - Expected: 1; Actual: 2"),
    ("POST", "/v1/models/resnet:predict", {"inputs": np.zeros((1, 3, 4, 5)).tolist()}, 400,
     "Invalid input shape - Expected: (1,3,4,4); Actual: (1,3,4,5); input name: 0"),
    ("POST", "/v1/models/pair:predict", {"instances": [{"a": [1, 2, 3], "b": [1, 2, 3]}, {"a": [1, 2, 3]}]}, 400,
     "Invalid JSON structure. Request inputs have different batch sizes"),
    ("POST", "/v1/models/pair:predict", {"instances": [[1, 2, 3]]}, 400,
     "Inputs inside buffer does not match expected format."),
    ("POST", "/v1/models/pair:predict", {"inputs": [[1, 2, 3]]}, 400,
     "Inputs inside buffer does not match expected format."),
    ("POST", "/v1/models/half:predict", {"inputs": [[1, 2, 3, 4]]}, 400,
     "Could not parse input content. Unsupported data precision detected"),
    ("POST", "/v1/models/mixed:predict", {"instances": [[1, 2]]}, 500,
     "Response parsing to JSON error - Tensor name: total has no shape information"),
    ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404, "Model with requested name is not found"),
    ("POST", "/v1/models/resnet/versions/7:predict", {"instances": [1]}, 404,
     "Model with requested version is not found"),
    ("POST", "/v1/models/resnet/versions/99999999999999999999:predict", {"instances": [1]}, 404,
     "Model with requested version is not found"),
    ("GET", "/v1/models/resnet/versions/99999999999999999999", None, 404, "Model with requested version is not found"),
    ("GET", "/v1/models/resnet/versions/99999999999999999999/metadata", None, 404,
     "Model with requested version is not found"),
    ("GET", "/v1/models/resnet/versions/3", None, 404, "Model with requested version is not found"),
    ("GET", "/v1/models/nope", None, 404, "Model with requested name is not found"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Model with requested name is not found"),
    ("GET", "/v1/models/resnet/versions/x", None, 400, "Invalid request URL"),
    ("GET", "/v1/models/resnet:predict", None, 406, "Unsupported method"),
    ("POST", "/v1/models/resnet", "{}", 406, "Unsupported method"),
    ("POST", "/v1/models/resnet/metadata", "{}", 406, "Unsupported method"),
    ("PUT", "/v1/models/resnet:predict", "{}", 406, "Unsupported method"),
    ("POST", "/v1/models/resnet:classify", "{}", 404, "Requested REST resource not found"),
    ("POST", "/v1/models/resnet/versions/1:regress", "{}", 404, "Requested REST resource not found"),
    ("POST", "/v1/models/resnet:predict", "{", 412,
     "The file is not valid json - Error: Expecting property name enclosed in double quotes Offset: 1"),
    ("POST", "/v1/models/resnet:predict", '{"instances": [1,]}', 412,
     "The file is not valid json - Error: Expecting value Offset: 17"),
    ("POST", "/v1/models/resnet:predict", "", 412, "The file is not valid json - Error: Expecting value Offset: 0"),
    ("POST", "/v1/models/resnet:predict", b'{"a": "\xff"}', 412,
     "The file is not valid json - Error: Invalid encoding in string. Offset: 7"),
    ("POST", "/v1/models/resnet:predict", '{"x": ' + "[" * 100 + "]" * 100 + "}", 400,
     "JSON nesting depth exceeds the allowed limit"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "code", "message"), ERRORS)
def test_documented_errors(server: RunningServer, method: str, path: str, body: Any, code: int, message: str) -> None:
    status, text = error(server, method, path, body)
    assert (status, text[: len(message)]) == (code, message), text


def test_nesting_limit_is_one_hundred_levels(server: RunningServer) -> None:
    deepest = '{"x": ' + "[" * 99 + "]" * 99 + ', "s": "[[[[\\"[[[["}'  # 100 levels; brackets in strings ignored
    assert tfs.json_depth(deepest.encode()) == 100
    status, text = error(server, "POST", "/v1/models/resnet:predict", deepest)
    assert (status, text) == (400, "Invalid JSON structure. Could not detect row or column format")
    too_many_dims = '{"instances": ' + "[" * 99 + "1" + "]" * 99 + "}"  # 100 levels, but numpy stops at 64 dims
    status, text = error(server, "POST", "/v1/models/resnet:predict", too_many_dims)
    assert (status, text[:60]) == (400, "Could not parse instance content. Not valid ndarray detected")


def test_column_format_keeps_outputs_of_any_rank(server: RunningServer) -> None:
    document = predict(server, "mixed", {"inputs": [[1.5, 2.0], [3.0, 4.0]]})
    assert document == {"outputs": {"total": 10.5, "y": [[1.5, 2.0], [3.0, 4.0]]}}
