"""max_queue_size: requests beyond the limit of those waiting for a model version's infer requests are refused at
once (gRPC RESOURCE_EXHAUSTED, HTTP 429) with a message naming the model, version and limit; the others are served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import openvino as ov
import openvino.opset13 as ops
from conftest import RunningServer

from ovserve import tfs
from ovserve._proto.tensorflow_serving.apis import predict_pb2

WIDTH = 256


def slow_identity(layers: int = 600) -> ov.Model:
    """x (1, WIDTH) through `layers` identity matmuls: y = x, after some milliseconds of work."""
    x = ops.parameter([1, WIDTH], np.float32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    eye = ops.constant(np.eye(WIDTH, dtype=np.float32))
    y = x
    for _ in range(layers):
        y = ops.matmul(y, eye, False, False)
    y.output(0).get_tensor().set_names({"y"})
    return ov.Model([y], [x], "slow_identity")


def burst(server: RunningServer, count: int) -> list[Any]:
    """`count` Predict calls sent at once; each one's outputs["y"] as an array, or its grpc.RpcError."""
    x = np.arange(WIDTH, dtype=np.float32).reshape(1, WIDTH) % 16
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tfs.make_tensor_proto(x))
    call = server.channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    futures = [call.future(request, timeout=60) for _ in range(count)]
    outcomes: list[Any] = []
    for future in futures:
        try:
            outcomes.append(tfs.make_ndarray(future.result().outputs["y"]))
        except grpc.RpcError as e:
            outcomes.append(e)
    for outcome in outcomes:
        if isinstance(outcome, np.ndarray):
            np.testing.assert_array_equal(outcome, x)
    return outcomes


def serve_slow(repository: Path, serve: Any, **config: Any) -> RunningServer:
    models.save(slow_identity(), repository, "m")
    server: RunningServer = serve(
        {"model_config_list": [{"config": {"name": "m", "base_path": "m", "nireq": 1, **config}}]}
    )
    return server


def test_requests_past_the_queue_limit_are_refused_at_once(repository: Path, serve: Any) -> None:
    server = serve_slow(repository, serve, max_queue_size=1)
    outcomes = burst(server, 24)
    refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    served = [o for o in outcomes if isinstance(o, np.ndarray)]
    assert served and refused, outcomes  # the one running and the one waiting are served, later arrivals not
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == "Model queue is full - model m version 1: 1 requests already wait (max_queue_size)"
    metrics = server.http("GET", "/metrics")[2].decode()
    assert f'ovserve_requests_refused{{name="m",version="1"}} {len(refused)}' in metrics
    body = '{"instances": [[' + ", ".join(["1"] * WIDTH) + "]]}"
    assert server.http("POST", "/v1/models/m:predict", body)[0] == 200  # idle again: served


def test_without_a_limit_every_request_waits_its_turn(repository: Path, serve: Any) -> None:
    server = serve_slow(repository, serve)
    outcomes = burst(server, 24)
    assert all(isinstance(o, np.ndarray) for o in outcomes), [o for o in outcomes if not isinstance(o, np.ndarray)]


def test_the_queue_limit_is_a_config_key_and_a_flag(tmp_path: Path) -> None:
    from ovserve.cli import build, parser
    from ovserve.config import parse_config

    config = parse_config(
        {"model_config_list": [{"config": {"name": "m", "base_path": "m", "max_queue_size": 8}}]}, tmp_path
    )
    assert config.models[0].max_queue_size == 8
    args = parser().parse_args(
        ["--model_name", "m", "--model_path", str(tmp_path), "--port", "9000", "--max_queue_size", "3"]
    )
    assert build(args)[0].models[0].max_queue_size == 3
