"""KServe v2 over gRPC and REST with Triton's own clients (tritonclient) and its protobuf messages: health,
metadata, readiness, ModelConfig, inference on a model and on the demultiplexing pipeline, raw and typed contents,
the REST binary data extension, and every client mistake with its code and text."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import models
import numpy as np
import openvino as ov
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import RunningServer, rpc_error
from openvino import opset13 as ops
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.utils import InferenceServerException

import ovserve
import ovserve.grpc_kserve  # importable beside tritonclient: its messages live in ovserve's own descriptor pool

IMG = (1, 3, 4, 4)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 3, 4, 4), dtype=np.float32)


def _grpc(server: RunningServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")


def _http(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")


def _rpc(server: RunningServer, method: str, request: Any, response: Any) -> Any:
    """A KServe call with Triton's own generated messages (so the wire format is checked against Triton's proto)."""
    call = server.channel.unary_unary(
        f"/inference.GRPCInferenceService/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=response.FromString,
    )
    return call(request, timeout=60)


def _infer(server: RunningServer, request: triton_pb2.ModelInferRequest) -> triton_pb2.ModelInferResponse:
    return _rpc(server, "ModelInfer", request, triton_pb2.ModelInferResponse)


def _request(name: str, array: np.ndarray, datatype: str = "FP32", input_name: str = "0", version: str = "") -> Any:
    request = triton_pb2.ModelInferRequest(model_name=name, model_version=version)
    request.inputs.add(name=input_name, datatype=datatype, shape=array.shape)
    request.raw_input_contents.append(array.tobytes())
    return request


def _two_outputs() -> ov.Model:
    """x (1,4) FP32 → a = x + 1 and b = x * 2."""
    x = ops.parameter([1, 4], np.float32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    a = ops.add(x, ops.constant(np.float32(1)))
    a.output(0).get_tensor().set_names({"a"})
    b = ops.multiply(x, ops.constant(np.float32(2)))
    b.output(0).get_tensor().set_names({"b"})
    return ov.Model([a, b], [x], "two_outputs")


def _echo() -> ov.Model:
    """A string model (BYTES over KServe): the input is the output."""
    text = ops.parameter([-1], ov.Type.string, name="text")
    text.output(0).get_tensor().set_names({"text"})
    return ov.Model([text.output(0)], [text], "echo")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the whole file (the tests only read): the guide's model 'resnet' and pipeline 'resnet50DAG',
    an FP16 model, an INT32 model, a two-output model and a string model."""
    repository = tmp_path_factory.mktemp("kserve")
    models.save(models.classifier(), repository, "resnet")
    models.save(models.add_mul(dtype=np.float16), repository, "half")
    models.save(models.add_mul(dtype=np.int32), repository, "ints")
    models.save(_two_outputs(), repository, "two")
    models.save(_echo(), repository, "echo")
    document = models.seed_config()
    document["model_config_list"] += [
        {"config": {"name": name, "base_path": name}} for name in ("half", "ints", "two", "echo")
    ]
    running = RunningServer(models.write_config(repository, document))
    yield running
    running.stop()


def _success_count(server: RunningServer, interface: str, name: str) -> int:
    _, _, body = server.http("GET", "/metrics")
    found = re.search(
        rf'ovms_requests_success{{api="KServe",interface="{interface}",method="ModelInfer",name="{name}",'
        r'version="1"} (\d+)',
        body.decode(),
    )
    assert found is not None
    return int(found.group(1))


# --- gRPC --------------------------------------------------------------------------------------------------


def test_grpc_health_metadata_readiness_and_config(server: RunningServer) -> None:
    client = _grpc(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata(as_json=True) == {"name": "OpenVINO Model Server", "version": ovserve.__version__}
    model = {
        "name": "resnet",
        "versions": ["1"],
        "platform": "OpenVINO",
        "inputs": [{"name": "0", "datatype": "FP32", "shape": ["1", "3", "4", "4"]}],
        "outputs": [{"name": "1463", "datatype": "FP32", "shape": ["1", "10"]}],
    }
    assert client.get_model_metadata("resnet", as_json=True) == model
    assert client.get_model_metadata("resnet", "1", as_json=True) == model
    pipeline = client.get_model_metadata("resnet50DAG", as_json=True)
    assert pipeline["versions"] == ["1"]
    assert pipeline["inputs"] == [{"name": "0", "datatype": "FP32", "shape": ["-1", "1", "3", "4", "4"]}]
    assert pipeline["outputs"] == [{"name": "1463", "datatype": "FP32", "shape": ["-1", "1", "10"]}]
    assert client.get_model_metadata("resnet50DAG", "not a number", as_json=True) == pipeline  # pipelines ignore it
    assert client.is_model_ready("resnet") and client.is_model_ready("resnet", "1")
    assert client.is_model_ready("resnet50DAG")

    config = client.get_model_config("resnet50DAG").config  # decoded with Triton's own model_config.proto
    assert (config.name, config.platform, config.max_batch_size) == ("resnet50DAG", "openvino", 0)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("0", 11, [-1, 1, 3, 4, 4])]  # FP32
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("1463", 11, [-1, 1, 10])]

    def failure(call: Callable[[], Any]) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as info:
            call()
        return str(info.value.status()), str(info.value.message())

    assert failure(lambda: client.get_model_metadata("nope")) == (
        "StatusCode.NOT_FOUND",
        "Model with requested name is not found - nope",
    )
    assert failure(lambda: client.is_model_ready("resnet", "7")) == (
        "StatusCode.NOT_FOUND",
        "Model with requested version is not found - model resnet version 7",
    )
    assert failure(lambda: client.get_model_metadata("resnet", "1.0")) == (
        "StatusCode.INVALID_ARGUMENT",
        "invalid model version format in request - version: 1.0",
    )
    assert failure(lambda: client.load_model("resnet")) == (
        "StatusCode.UNIMPLEMENTED",
        "Functionality not implemented",
    )


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_grpc_infer_pipeline_and_model(server: RunningServer, batch: int) -> None:
    client = _grpc(server)
    images = _images(batch, seed=batch)
    before = _success_count(server, "gRPC", "resnet50DAG")
    data = grpcclient.InferInput("0", list(images.shape), "FP32")
    data.set_data_from_numpy(images)  # raw_input_contents
    result = client.infer("resnet50DAG", [data], request_id=f"r{batch}")
    np.testing.assert_allclose(result.as_numpy("1463"), models.reference_classifier(images), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("resnet50DAG", "1", f"r{batch}")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("1463", "FP32", [batch, 1, 10])]
    assert _success_count(server, "gRPC", "resnet50DAG") == before + 1

    one = grpcclient.InferInput("0", list(IMG), "FP32")
    one.set_data_from_numpy(images[0])
    result = client.infer("resnet", [one], model_version="1")
    expected = models.reference_classifier(images[:1]).reshape(1, 10)
    np.testing.assert_allclose(result.as_numpy("1463"), expected, rtol=1e-5, atol=1e-5)


def test_grpc_typed_contents_fp16_and_int32(server: RunningServer) -> None:
    images = _images(2)
    request = triton_pb2.ModelInferRequest(model_name="resnet50DAG", id="typed")
    tensor = request.inputs.add(name="0", datatype="FP32", shape=images.shape)
    tensor.contents.fp32_contents.extend(images.ravel().tolist())
    response = _infer(server, request)
    assert response.id == "typed" and response.model_version == "1"
    output = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 1, 10)
    np.testing.assert_allclose(output, models.reference_classifier(images), rtol=1e-5, atol=1e-5)

    ints = np.array([[1, -2, 3, 40]], np.int32)
    request = triton_pb2.ModelInferRequest(model_name="ints")
    request.inputs.add(name="x", datatype="INT32", shape=[1, 4]).contents.int_contents.extend(ints.ravel().tolist())
    response = _infer(server, request)
    assert (response.outputs[0].datatype, list(response.outputs[0].shape)) == ("INT32", [1, 4])
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.int32), [4, -2, 8, 82])

    half = np.array([[0.5, 1.5, -3.0, 2.0]], np.float16)
    response = _infer(server, _request("half", half, "FP16", "x"))  # FP16 travels raw only
    assert response.outputs[0].datatype == "FP16"
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float16), (half.ravel() + 1) * 2)
    request = triton_pb2.ModelInferRequest(model_name="half")
    request.inputs.add(name="x", datatype="FP16", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
    error = rpc_error(lambda: _infer(server, request))
    assert (error.code(), error.details()) == (
        INVALID,
        "Invalid number of values in tensor proto container - Expected: 4 values; Actual: 0 values; input name: x",
    )


def _both(request: Any) -> Any:
    request.inputs[0].contents.fp32_contents.append(1.0)
    return request


def _raw_count(request: Any) -> Any:
    request.raw_input_contents.append(b"")
    return request


def _values(request: Any) -> Any:
    del request.raw_input_contents[:]
    request.inputs[0].contents.fp32_contents.extend([0.0] * 5)
    return request


def _no_inputs(request: Any) -> Any:
    del request.inputs[:]
    del request.raw_input_contents[:]
    return request


def _short(request: Any) -> Any:
    request.raw_input_contents[0] = request.raw_input_contents[0][:-2]
    return request


def _negative(request: Any) -> Any:
    request.inputs[0].shape[0] = -1
    return request


def _overflowing(request: Any) -> Any:
    """A shape whose element count wraps int64 to 0, with an empty buffer that this wrapped count matches."""
    request.inputs[0].shape[0] = 2**62
    request.raw_input_contents[0] = b""
    return request


GRPC_ERRORS = [
    ("nope", "", IMG, "FP32", None, NOT_FOUND, "Model with requested name is not found - nope"),
    ("resnet", "7", IMG, "FP32", None, NOT_FOUND, "Model with requested version is not found - model resnet version 7"),
    ("resnet", "v1", IMG, "FP32", None, INVALID, "invalid model version format in request - version: v1"),
    ("resnet50DAG", "-1", (1, *IMG), "FP32", None, INVALID, "invalid model version format in request - version: -1"),
    (
        "resnet",
        "",
        (1, 3, 4, 5),
        "FP32",
        None,
        INVALID,
        "Invalid input shape - Expected: (1,3,4,4); Actual: (1,3,4,5); input name: 0",
    ),
    (
        "resnet",
        "",
        (1, 3, 4),
        "FP32",
        None,
        INVALID,
        "Invalid number of shape dimensions - Expected: (1,3,4,4); Actual: (1,3,4); input name: 0",
    ),
    (
        "resnet50DAG",
        "",
        (2, 2, 3, 4, 4),
        "FP32",
        None,
        INVALID,
        "Invalid input shape - Expected: (-1,1,3,4,4); Actual: (2,2,3,4,4); input name: 0",
    ),
    (
        "resnet",
        "",
        IMG,
        "INT32",
        None,
        INVALID,
        "Invalid input precision - Expected: FP32; Actual: INT32; input name: 0",
    ),
    ("resnet", "", IMG, "FP32", _no_inputs, INVALID, "Invalid number of inputs - Expected: 1; Actual: 0"),
    (
        "resnet",
        "",
        IMG,
        "FP32",
        _both,
        INVALID,
        "Passing buffers both in ModelInferRequest::InferInputTensor::contents and in "
        "ModelInferRequest::raw_input_contents is not allowed - Passing buffers both in InferInputTensor contents "
        "and in raw_input_contents is not allowed. Detected buffer in InferInputTensor contents for input: 0",
    ),
    (
        "resnet",
        "",
        IMG,
        "FP32",
        _raw_count,
        INVALID,
        "Passing buffers both in ModelInferRequest::InferInputTensor::contents and in "
        "ModelInferRequest::raw_input_contents is not allowed - Size of raw_input_contents: 2 is different than "
        "number of inputs: 1",
    ),
    (
        "resnet",
        "",
        IMG,
        "FP32",
        _short,
        INVALID,
        "Invalid content size of tensor proto - Expected: 192 bytes; Actual: 190 bytes; input name: 0",
    ),
    (
        "resnet",
        "",
        IMG,
        "FP32",
        _values,
        INVALID,
        "Invalid number of values in tensor proto container - Expected: 48 values; Actual: 5 values; input name: 0",
    ),
    (
        "resnet",
        "",
        IMG,
        "FP32",
        _negative,
        INVALID,
        "Invalid input shape - Negative or zero dimension size is not acceptable: (-1,3,4,4); input name: 0",
    ),
    (
        "resnet50DAG",
        "",
        (1, *IMG),
        "FP32",
        _overflowing,
        INVALID,
        "Invalid input shape - Element count of (4611686018427387904,1,3,4,4) exceeds int64; input name: 0",
    ),
]


@pytest.mark.parametrize(("name", "version", "shape", "datatype", "change", "code", "message"), GRPC_ERRORS)
def test_grpc_infer_errors(
    server: RunningServer,
    name: str,
    version: str,
    shape: tuple[int, ...],
    datatype: str,
    change: Callable[[Any], Any] | None,
    code: grpc.StatusCode,
    message: str,
) -> None:
    array = np.zeros(shape, np.float32 if datatype == "FP32" else np.int32)
    request = _request(name, array, datatype, version=version)
    if change is not None:
        request = change(request)
    error = rpc_error(lambda: _infer(server, request))
    assert (error.code(), error.details()) == (code, message)


def test_grpc_stream_infer_answers_not_found(server: RunningServer) -> None:
    call = server.channel.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer",
        request_serializer=triton_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=triton_pb2.ModelStreamInferResponse.FromString,
    )
    responses = call(iter([_request("resnet", np.zeros(IMG, np.float32))]), timeout=60)
    error = rpc_error(lambda: list(responses))
    assert (error.code(), error.details()) == (
        NOT_FOUND,
        "Mediapipe graph definition with requested name is not found - resnet",
    )


def test_bytes_round_trip_through_a_string_model(server: RunningServer) -> None:
    words = np.array([b"ab", b"", "\u00e9t\u00e9".encode()], dtype=object)
    data = grpcclient.InferInput("text", [3], "BYTES")
    data.set_data_from_numpy(words)
    result = _grpc(server).infer("echo", [data])
    assert list(result.as_numpy("text")) == list(words)
    data = httpclient.InferInput("text", [3], "BYTES")
    data.set_data_from_numpy(words, binary_data=True)
    output = httpclient.InferRequestedOutput("text", binary_data=True)
    result = _http(server).infer("echo", [data], outputs=[output])
    assert list(result.as_numpy("text")) == list(words)


def test_bytes_buffers_are_checked(server: RunningServer) -> None:
    request = triton_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(b"\x02\x00\x00\x00ab\x05\x00\x00\x00c")
    error = rpc_error(lambda: _infer(server, request))
    assert (error.code(), error.details()) == (
        INVALID,
        "Invalid content size of tensor proto - Batch length metadata exceeded buffer size, buffer size: 11, "
        "batch length: 5; input name: text",
    )
    request.raw_input_contents[0] = b"\x02\x00\x00\x00ab"
    error = rpc_error(lambda: _infer(server, request))
    assert (error.code(), error.details()) == (
        INVALID,
        "Invalid number of values in tensor proto container - Expected: 2 values; Actual: 1 values; input name: text",
    )
    head = b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES"}]}'
    status, _, body = server.http(
        "POST", "/v2/models/echo/infer", head + b"\x09\x00", {"Inference-Header-Content-Length": str(len(head))}
    )
    assert (status, json.loads(body)["error"]) == (
        400,
        "Inputs inside buffer does not match expected format. - Processed bytes: 0 do not equal to buffer size: 2; "
        "input name: text",
    )


# --- REST --------------------------------------------------------------------------------------------------


def test_http_health_metadata_readiness_and_config(server: RunningServer) -> None:
    client = _http(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata() == {"name": "OpenVINO Model Server", "version": ovserve.__version__}
    model = {
        "name": "resnet",
        "versions": ["1"],
        "platform": "OpenVINO",
        "inputs": [{"name": "0", "datatype": "FP32", "shape": [1, 3, 4, 4]}],
        "outputs": [{"name": "1463", "datatype": "FP32", "shape": [1, 10]}],
    }
    assert client.get_model_metadata("resnet") == model
    assert client.get_model_metadata("resnet", "1") == model
    pipeline = client.get_model_metadata("resnet50DAG")
    assert (pipeline["versions"], pipeline["inputs"][0]["shape"]) == (["1"], [-1, 1, 3, 4, 4])
    assert (
        client.is_model_ready("resnet")
        and client.is_model_ready("resnet50DAG")
        and client.is_model_ready("resnet", "1")
    )
    assert not client.is_model_ready("resnet", "7") and not client.is_model_ready("nope")
    config = client.get_model_config("resnet50DAG")
    assert config["input"] == [{"name": "0", "data_type": "TYPE_FP32", "dims": [-1, 1, 3, 4, 4]}]
    assert config["output"] == [{"name": "1463", "data_type": "TYPE_FP32", "dims": [-1, 1, 10]}]

    assert server.http("GET", "/v2")[::2] == (200, b'{"name":"OpenVINO Model Server","version":"0.1.0"}')
    assert server.http("GET", "/v2/health/live")[::2] == (200, b"")
    assert server.http("GET", "/v2/health/ready")[::2] == (200, b"")
    assert server.http("GET", "/v2/models/resnet/")[::2] == (
        200,
        json.dumps(model, separators=(",", ":")).encode(),
    )
    assert server.http("GET", "/v2/models/resnet/versions/1/ready")[::2] == (200, b"")
    for path, status, message in [
        ("/v2/models/nope/ready", 404, "Model with requested name is not found - nope"),
        (
            "/v2/models/resnet/versions/7/ready",
            404,
            "Model with requested version is not found - model resnet version 7",
        ),
        ("/v2/models/nope", 404, "Model with requested name is not found - nope"),
        ("/v2/models/resnet/versions/x1", 400, "Invalid request URL - /v2/models/resnet/versions/x1"),
    ]:
        got, _, body = server.http("GET", path)
        assert (got, json.loads(body)) == (status, {"error": message}), path


def test_http_metadata_carries_the_models_rt_info(repository: Any, serve: Any) -> None:
    """IR rt_info under model_info (labels, model_type, nested sections) is appended to the REST metadata as text."""
    model = models.add_mul()
    model.set_rt_info("detection", ["model_info", "model_type"])
    model.set_rt_info("0.5", ["model_info", "confidence_threshold"])
    model.set_rt_info("cat dog", ["model_info", "labels"])
    model.set_rt_info("1", ["model_info", "nested", "inner"])
    model.set_rt_info("other", ["conversion_parameters", "framework"])  # not model_info: not reported
    models.save(model, repository, "labelled")
    models.save(models.add_mul(), repository, "plain")
    server = serve({"model_config_list": [{"config": {"name": n, "base_path": n}} for n in ("labelled", "plain")]})
    status, _, body = server.http("GET", "/v2/models/labelled")
    assert status == 200
    assert json.loads(body)["rt_info"] == {
        "model_info": {
            "confidence_threshold": "0.5",
            "labels": "cat dog",
            "model_type": "detection",
            "nested": {"inner": "1"},
        }
    }
    status, _, body = server.http("GET", "/v2/models/plain")
    assert status == 200 and "rt_info" not in json.loads(body)


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_http_infer_pipeline_json_and_binary(
    server: RunningServer, batch: int, binary_in: bool, binary_out: bool
) -> None:
    client = _http(server)
    images = _images(batch, seed=batch)
    data = httpclient.InferInput("0", list(images.shape), "FP32")
    data.set_data_from_numpy(images, binary_data=binary_in)
    output = httpclient.InferRequestedOutput("1463", binary_data=binary_out)
    result = client.infer("resnet50DAG", [data], outputs=[output], request_id="rest")
    np.testing.assert_allclose(result.as_numpy("1463"), models.reference_classifier(images), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("resnet50DAG", "1", "rest")
    (described,) = response["outputs"]
    assert (described["name"], described["shape"], described["datatype"]) == ("1463", [batch, 1, 10], "FP32")
    assert ("parameters" in described, "data" in described) == (binary_out, not binary_out)


def test_http_fp32_data_beyond_float32_is_infinite(server: RunningServer) -> None:
    """1e39 is a JSON number an FP32 input reads as infinity (no overflow warning, which the tests make an error)."""
    body = _body(_input(data=[1e39] + [0.0] * 47))
    status, _, raw = server.http("POST", "/v2/models/resnet/infer", body)
    assert status == 200, raw
    assert not np.isfinite(json.loads(raw)["outputs"][0]["data"]).any()


def test_http_json_body_and_response(server: RunningServer) -> None:
    images = _images(1)
    before = _success_count(server, "REST", "resnet")
    body = {
        "id": "json",
        "inputs": [{"name": "0", "shape": list(IMG), "datatype": "FP32", "data": images.reshape(IMG).tolist()}],
    }
    status, headers, raw = server.http("POST", "/v2/models/resnet/versions/1/infer", json.dumps(body))
    assert status == 200 and headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in headers
    expected = models.reference_classifier(images).reshape(1, 10)
    document = json.loads(raw)
    assert document == {
        "model_name": "resnet",
        "model_version": "1",
        "id": "json",
        "outputs": [{"name": "1463", "shape": [1, 10], "datatype": "FP32", "data": document["outputs"][0]["data"]}],
    }
    np.testing.assert_allclose(document["outputs"][0]["data"], expected.ravel(), rtol=1e-5, atol=1e-5)
    assert _success_count(server, "REST", "resnet") == before + 1
    # No outputs listed: binary_data_output covers every output (tritonclient sends it so).
    body["parameters"] = {"binary_data_output": True}
    status, headers, raw = server.http("POST", "/v2/models/resnet/infer", json.dumps(body))
    length = int(headers["inference-header-content-length"])
    assert json.loads(raw[:length])["outputs"][0]["parameters"] == {"binary_data_size": 40}
    np.testing.assert_allclose(np.frombuffer(raw[length:], np.float32), expected.ravel(), rtol=1e-5, atol=1e-5)


def test_http_every_listed_output_can_be_binary(server: RunningServer) -> None:
    x = np.array([[1, 2, 3, 4]], np.float32)
    header = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
            "outputs": [{"name": "b", "parameters": {"binary_data": True}}, {"name": "a"}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    status, headers, raw = server.http(
        "POST", "/v2/models/two/infer", header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 200
    length = int(headers["inference-header-content-length"])
    outputs = json.loads(raw[:length])["outputs"]
    assert [(o["name"], o["parameters"]) for o in outputs] == [
        ("a", {"binary_data_size": 16}),
        ("b", {"binary_data_size": 16}),
    ]
    np.testing.assert_array_equal(np.frombuffer(raw[length:], np.float32), np.concatenate([x + 1, x * 2]).ravel())

    half = np.array([[0.5, 1.5, -3.0, 2.0]], np.float16)
    client = _http(server)
    data = httpclient.InferInput("x", [1, 4], "FP16")
    data.set_data_from_numpy(half, binary_data=True)
    result = client.infer("half", [data], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])
    np.testing.assert_array_equal(result.as_numpy("y"), (half + 1) * 2)
    with pytest.raises(InferenceServerException) as info:
        client.infer("half", [data], outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
    assert (info.value.status(), info.value.message()) == (
        "400",
        "Could not parse input content. Unsupported data precision detected - Unsupported precisionFP16",
    )


def _input(**fields: Any) -> dict[str, Any]:
    """An input of the classifier; a field given as None is left out."""
    merged = {"name": "0", "shape": list(IMG), "datatype": "FP32", "data": [0.0] * 48, **fields}
    return {key: value for key, value in merged.items() if value is not None}


def _body(*inputs: dict[str, Any], **fields: Any) -> str:
    return json.dumps({"inputs": list(inputs), **fields})


ZEROS = np.zeros(IMG, np.float32).tobytes()
HEAD = _body(_input(data=None, parameters={"binary_data_size": 192}))
HTTP_ERRORS: list[tuple[str, str, str | bytes, dict[str, str], int, str]] = [
    ("POST", "/v2/models/nope/infer", _body(_input()), {}, 404, "Model with requested name is not found - nope"),
    (
        "POST",
        "/v2/models/resnet/versions/7/infer",
        _body(_input()),
        {},
        404,
        "Model with requested version is not found - model resnet version 7",
    ),
    (
        "POST",
        "/v2/models/resnet/versions/v7/infer",
        _body(_input()),
        {},
        400,
        "Invalid request URL - /v2/models/resnet/versions/v7/infer",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        '{"inputs": [',
        {},
        412,
        "The file is not valid json - Error: Expecting value Offset: 12",
    ),
    ("POST", "/v2/models/resnet/infer", "[1]", {}, 400, "Request body should be JSON object"),
    ("POST", "/v2/models/resnet/infer", '{"inputs": []}', {}, 400, "Invalid JSON structure, missing inputs"),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(), parameters={"timeout": 1.5}),
        {},
        400,
        "Could not parse request parameters - parameter timeout: 1.5",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(shape=[1, 3, 4, 5], data=[0.0] * 60)),
        {},
        400,
        "Invalid input shape - Expected: (1,3,4,4); Actual: (1,3,4,5); input name: 0",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(datatype="INT32", data=[0] * 48)),
        {},
        400,
        "Invalid input precision - Expected: FP32; Actual: INT32; input name: 0",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(data=[[0.0] * 5])),
        {},
        400,
        "Invalid number of values in tensor proto container - Expected: 48 values; Actual: 5 values; input name: 0",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(data=["a"] * 48)),
        {},
        400,
        "Could not parse input content. Not valid ndarray detected - data does not hold FP32 values; input name: 0",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(data=[[0.0], [0.0, 0.0]])),
        {},
        400,
        "Could not parse input content. Not valid ndarray detected - data does not hold FP32 values; input name: 0",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(datatype="FP8")),
        {},
        400,
        "Could not parse input content. Unsupported data precision detected - datatype: FP8; input name: 0",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(datatype="FP16")),
        {},
        400,
        "Could not parse input content. Not valid ndarray detected - FP16 is accepted only as binary data; "
        "input name: 0",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        HEAD.encode() + ZEROS,
        {"Inference-Header-Content-Length": "many"},
        400,
        "Inference-Header-Content-Length header is invalid and couldn't be parsed - many",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        HEAD.encode() + ZEROS,
        {"Inference-Header-Content-Length": "9999"},
        400,
        f"Inference-Header-Content-Length header exceeds actual payload length - header: 9999; payload: "
        f"{len(HEAD) + 192} bytes",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        HEAD.encode() + ZEROS[:100],
        {"Inference-Header-Content-Length": str(len(HEAD))},
        400,
        "Received buffer size is smaller than binary_data_size parameter indicates - input name: 0; needed: 192 "
        "bytes; binary part: 100 bytes",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(parameters={"binary_data_size": 192})).encode() + ZEROS,
        {"Inference-Header-Content-Length": str(len(_body(_input(parameters={"binary_data_size": 192}))))},
        400,
        "Request contains values both in binary data and in content value - input name: 0",
    ),
    (
        "POST",
        "/v2/models/resnet/infer",
        HEAD.replace("192", '"192"').encode() + ZEROS,
        {"Inference-Header-Content-Length": str(len(HEAD) + 2)},
        400,
        "binary_data_size parameter is invalid and cannot be parsed - input name: 0",
    ),
    ("GET", "/v2/models/resnet/infer", "", {}, 406, "Unsupported method - GET /v2/models/resnet/infer"),
    ("POST", "/v2/health/live", "", {}, 406, "Unsupported method - POST /v2/health/live"),
    ("POST", "/v2/models/resnet", "", {}, 406, "Unsupported method - POST /v2/models/resnet"),
    (  # a JSON boolean among numbers is no number (numpy would read it as 1)
        "POST",
        "/v2/models/resnet/infer",
        _body(_input(data=[True] + [0.0] * 47)),
        {},
        400,
        "Could not parse input content. Not valid ndarray detected - data does not hold FP32 values; input name: 0",
    ),
    (
        "POST",
        "/v2/models/ints/infer",
        _body(_input(name="x", shape=[1, 4], datatype="INT32", data=[[1, 2], [3, False]])),
        {},
        400,
        "Could not parse input content. Not valid ndarray detected - data does not hold INT32 values; input name: x",
    ),
    (  # the element count wraps int64 to 0, which the empty data matches: a shape no data can fill
        "POST",
        "/v2/models/resnet50DAG/infer",
        _body(_input(shape=[2**62, *IMG], data=[])),
        {},
        400,
        "Invalid input shape - Element count of (4611686018427387904,1,3,4,4) exceeds int64; input name: 0",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "message"), HTTP_ERRORS)
def test_http_errors(
    server: RunningServer,
    method: str,
    path: str,
    body: str | bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    got, _, raw = server.http(method, path, body, headers)
    assert (got, json.loads(raw)) == (status, {"error": message})


def test_http_binary_input_with_its_size_and_without(server: RunningServer) -> None:
    images = _images(1)
    expected = models.reference_classifier(images).reshape(1, 10)
    for head in (HEAD, _body(_input(data=None))):
        status, _, raw = server.http(
            "POST",
            "/v2/models/resnet/infer",
            head.encode() + images.tobytes(),
            {"inference-header-content-length": str(len(head))},
        )
        assert status == 200
        np.testing.assert_allclose(json.loads(raw)["outputs"][0]["data"], expected.ravel(), rtol=1e-5, atol=1e-5)
