"""Every client mistake gets its gRPC code and OVMS message; broken models/pipelines do not stop the others."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import models
import numpy as np
import pytest
from conftest import RunningServer, rpc_error

from ovserve._proto.tensorflow_serving.apis import get_model_status_pb2, predict_pb2
from ovserve.tensors import element_count
from ovserve.tfs import make_tensor_proto

IMG = (1, 3, 4, 4)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def images(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return np.zeros(shape, dtype)


CASES = [
    (
        "nope",
        {"0": images(1, *IMG)},
        None,
        grpc.StatusCode.NOT_FOUND,
        "Pipeline with requested name is not found - nope",
    ),
    (
        "resnet",
        {"0": images(*IMG)},
        7,
        grpc.StatusCode.NOT_FOUND,
        "Model with requested version is not found - model resnet version 7",
    ),
    ("resnet", {}, None, INVALID, "Invalid number of inputs - Expected: 1; Actual: 0"),
    (
        "resnet",
        {"0": images(*IMG), "1": images(*IMG)},
        None,
        INVALID,
        "Invalid number of inputs - Expected: 1; Actual: 2",
    ),
    ("resnet", {"x": images(*IMG)}, None, INVALID, "Missing input with specific name - Required input: 0"),
    (
        "resnet",
        {"0": images(*IMG, dtype=np.int32)},
        None,
        INVALID,
        "Invalid input precision - Expected: FP32; Actual: I32; input name: 0",
    ),
    (
        "resnet",
        {"0": images(1, 3, 4)},
        None,
        INVALID,
        "Invalid number of shape dimensions - Expected: (1,3,4,4); Actual: (1,3,4); input name: 0",
    ),
    (
        "resnet",
        {"0": images(2, 3, 4, 4)},
        None,
        INVALID,
        "Invalid input batch size - Expected: 1; Actual: 2; input name: 0",
    ),
    (
        "resnet",
        {"0": images(1, 3, 4, 5)},
        None,
        INVALID,
        "Invalid input shape - Expected: (1,3,4,4); Actual: (1,3,4,5); input name: 0",
    ),
    (
        "resnet50DAG",
        {"0": images(2, 2, 3, 4, 4)},
        None,
        INVALID,
        "Invalid input shape - Expected: (-1,1,3,4,4); Actual: (2,2,3,4,4); input name: 0",
    ),
    (
        "resnet50DAG",
        {"0": images(0, 1, 3, 4, 4)},
        None,
        grpc.StatusCode.ABORTED,
        "Pipeline execution aborted due to no content from custom node"
        " - pipeline input demultiplexer produced 0 branches",
    ),
    (
        "resnet50DAG",
        {"0": images(10001, 1, 3, 4, 4)},
        None,
        INVALID,
        "Too large dynamic demultiplication requested. - pipeline input demultiplexer: 10001 branches, at most 10000",
    ),
]


@pytest.mark.parametrize(("name", "inputs", "version", "code", "message"), CASES)
def test_predict_errors(
    seed_server: RunningServer, name: str, inputs: dict[str, np.ndarray], version: int | None, code: grpc.StatusCode,
    message: str,
) -> None:  # fmt: skip
    error = rpc_error(lambda: seed_server.predict(name, inputs, version))
    assert (error.code(), error.details()) == (code, message)


def test_content_size_and_negative_dims(seed_server: RunningServer) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    proto = make_tensor_proto(images(*IMG))
    proto.tensor_content = proto.tensor_content[:-4]
    request.inputs["0"].CopyFrom(proto)
    error = rpc_error(lambda: seed_server.predict_raw(request))
    assert error.code() == INVALID
    assert (
        error.details()
        == "Invalid content size of tensor proto - Expected: 192 bytes; Actual: 188 bytes; input name: 0"
    )
    request.inputs["0"].tensor_shape.dim[1].size = -3
    error = rpc_error(lambda: seed_server.predict_raw(request))
    assert error.details() == (
        "Invalid input shape - Negative or zero dimension size is not acceptable: (1,-3,4,4); input name: 0"
    )


def test_declared_precision_and_shape_come_before_the_content(seed_server: RunningServer) -> None:
    """OVMS's order (docs/apis.md#tfs-grpc step 2): precision, rank, batch and shape as declared, then the content
    size."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.inputs["0"].CopyFrom(make_tensor_proto(images(*IMG)))  # 192 bytes, right for (1,3,4,4)
    request.inputs["0"].tensor_shape.dim[0].size = 2
    error = rpc_error(lambda: seed_server.predict_raw(request))
    assert error.details() == "Invalid input batch size - Expected: 1; Actual: 2; input name: 0"
    request.inputs["0"].tensor_shape.dim[0].size = 1
    request.inputs["0"].dtype = make_tensor_proto(images(1, dtype=np.float64)).dtype
    error = rpc_error(lambda: seed_server.predict_raw(request))
    assert error.details() == "Invalid input precision - Expected: FP32; Actual: FP64; input name: 0"


def test_shape_beyond_int64_elements(seed_server: RunningServer) -> None:
    """An element count that wraps int64 to 0 matches an empty content: the shape itself is refused."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet50DAG"
    request.inputs["0"].CopyFrom(make_tensor_proto(images(0, *IMG)))
    request.inputs["0"].tensor_shape.dim[0].size = 2**62
    error = rpc_error(lambda: seed_server.predict_raw(request))
    assert (error.code(), error.details()) == (
        INVALID,
        "Invalid input shape - Element count of (4611686018427387904,1,3,4,4) exceeds int64; input name: 0",
    )


def test_typed_value_fields_are_accepted_too(seed_server: RunningServer) -> None:
    """OVMS reads only tensor_content for FP32; ovserve also takes float_val (what small TF protos carry)."""
    x = np.arange(48, dtype=np.float32).reshape(IMG)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    proto = make_tensor_proto(x)
    proto.ClearField("tensor_content")
    proto.float_val.extend(x.ravel().tolist())
    request.inputs["0"].CopyFrom(proto)
    out = seed_server.predict_raw(request).outputs["1463"]
    expected = seed_server.predict("resnet", {"0": x})["1463"]
    assert np.frombuffer(out.tensor_content, np.float32).tolist() == expected.ravel().tolist()


def test_metadata_and_status_errors(seed_server: RunningServer) -> None:
    error = rpc_error(lambda: seed_server.metadata("resnet", fields=("other",)))
    assert error.code() == INVALID and error.details().startswith("Invalid signature name")
    error = rpc_error(lambda: seed_server.metadata("nope"))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Model with requested name is not found - nope",
    )
    error = rpc_error(lambda: seed_server.status("nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details().startswith(
        "Model with requested name is not found"
    )
    error = rpc_error(lambda: seed_server.status("resnet", 3))
    assert error.details().startswith("Model with requested version is not found")
    empty = get_model_status_pb2.GetModelStatusRequest()
    call = seed_server.channel.unary_unary(
        "/tensorflow.serving.PredictionService/Classify", request_serializer=type(empty).SerializeToString
    )
    error = rpc_error(lambda: call(empty, timeout=10))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unimplemented_rpcs_log_no_error(seed_server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    """Classify, Regress, MultiInference and Triton-only KServe calls answer UNIMPLEMENTED without a traceback."""
    empty = get_model_status_pb2.GetModelStatusRequest()
    for method in (
        "/tensorflow.serving.PredictionService/Classify",
        "/tensorflow.serving.PredictionService/Regress",
        "/tensorflow.serving.PredictionService/MultiInference",
        "/inference.GRPCInferenceService/RepositoryModelLoad",
    ):
        call = seed_server.channel.unary_unary(method, request_serializer=type(empty).SerializeToString)
        error = rpc_error(lambda: call(empty, timeout=10))  # noqa: B023 (called at once)
        assert (error.code(), error.details()) == (grpc.StatusCode.UNIMPLEMENTED, "Functionality not implemented")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_bytes_that_are_no_message_are_invalid_argument(
    seed_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A body that does not parse as the rpc's message is the client's mistake: no traceback, no UNKNOWN."""
    garbage = b"\xff\xff\xff"
    for method in ("/tensorflow.serving.PredictionService/Predict", "/inference.GRPCInferenceService/ModelInfer"):
        call = seed_server.channel.unary_unary(method)
        error = rpc_error(lambda: call(garbage, timeout=10))  # noqa: B023 (called at once)
        assert error.code() == INVALID, method
        assert error.details().startswith("Request message could not be parsed - Error parsing message"), method
    stream = seed_server.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    error = rpc_error(lambda: list(stream(iter([garbage]), timeout=10)))
    assert error.code() == INVALID
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_status_of_model_and_pipeline(seed_server: RunningServer) -> None:
    (row,) = seed_server.status("resnet").model_version_status
    assert (row.version, row.state, row.status.error_code, row.status.error_message) == (1, 30, 0, "OK")
    (row,) = seed_server.status("resnet50DAG").model_version_status
    assert (row.version, row.state) == (1, 30)


def test_broken_entries_do_not_stop_the_others(repository: Path, serve: object) -> None:
    models.save(models.classifier(), repository, "resnet")
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / "model.xml").write_text("<not a model")
    (repository / "broken" / "1" / "model.bin").write_bytes(b"")
    document = models.seed_config()
    document["model_config_list"] += [
        {"config": {"name": "broken", "base_path": "broken"}},
        {"config": {"name": "nowhere", "base_path": "does/not/exist"}},
    ]
    bad_pipeline = models.seed_config(model="broken", pipeline="brokenDAG")["pipeline_config_list"][0]
    document["pipeline_config_list"].append(bad_pipeline)
    server: RunningServer = serve(document)  # type: ignore[operator]
    assert server.predict("resnet50DAG", {"0": images(2, 1, *IMG[1:])})["1463"].shape == (2, 1, 10)
    (row,) = server.status("broken").model_version_status
    assert (row.state, row.status.error_code) == (20, 2)  # LOADING, UNKNOWN
    assert row.status.error_message.startswith("UNKNOWN - File not found or cannot open: ")  # and why (not in OVMS)
    (row,) = server.status("nowhere").model_version_status  # OVMS: no row; ovserve: version 0 and why
    assert (row.version, row.state, row.status.error_code) == (0, 20, 2)
    assert row.status.error_message.startswith("UNKNOWN - The provided base path is invalid or doesn't exists: ")
    (row,) = server.status("brokenDAG").model_version_status
    assert (row.state, row.status.error_message.partition(" - ")[0]) == (20, "FAILED_PRECONDITION")
    error = rpc_error(lambda: server.predict("brokenDAG", {"0": images(1, 1, *IMG[1:])}))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith(
        "Pipeline is not loaded yet - pipeline brokenDAG: Pipeline definition has reference"
    )
    error = rpc_error(lambda: server.predict("broken", {"0": images(*IMG)}))
    # its only version failed: no default version (docs/configuration.md#versions)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Model with requested version is not found - model broken",
    )


@pytest.mark.parametrize(
    "shape", [(), (0, 5), (1, 3, 224, 224), (2**62, 4), (2**63 - 1, 3), (3037000500, 3037000500), (2**32, 2**32, 7)]
)
def test_element_count_is_numpys_int64_product(shape: tuple[int, ...]) -> None:
    """Error messages show the element count of a declared shape as they always did, wrapped past int64."""
    assert element_count(shape) == int(np.prod(shape, dtype=np.int64))
