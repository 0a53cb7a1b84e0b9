"""Triton's statistics and repository index with tritonclient over gRPC and HTTP: counters kept with metrics off,
every version and pipeline with its state and reason, the messages' field numbers as Triton's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import RunningServer
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.utils import InferenceServerException

from ovserve._proto import grpc_predict_v2_pb2 as ours

IMG = (1, 3, 4, 4)


@pytest.fixture
def server(repository: Path) -> Any:
    """The guide's model and pipeline, with metrics off (statistics must not need them); a model whose base path is
    missing, one whose version folder holds no model, and a pipeline that fails validation."""
    models.save(models.classifier(), repository, "resnet")
    (repository / "empty" / "1").mkdir(parents=True)
    document = models.seed_config()
    document["model_config_list"] += [
        {"config": {"name": "absent", "base_path": "absent"}},
        {"config": {"name": "empty", "base_path": "empty"}},
    ]
    broken = json.loads(json.dumps(document["pipeline_config_list"][0]))
    broken["name"], broken["nodes"][0]["model_name"] = "brokenDAG", "nowhere"
    document["pipeline_config_list"].append(broken)
    running = RunningServer(models.write_config(repository, document), metrics=())
    yield running
    running.stop()


def _infer(client: Any, module: Any, name: str, images: np.ndarray) -> Any:
    tensor = module.InferInput("0", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return client.infer(name, [tensor])


def _counts(stat: dict[str, Any]) -> dict[str, int]:
    """A model_stat's counts: each duration's count, inference and execution counts (JSON of either client)."""
    counts = {k: int(v.get("count", 0)) for k, v in stat["inference_stats"].items()}
    return {
        **counts,
        "inference": int(stat.get("inference_count", 0)),
        "execution": int(stat.get("execution_count", 0)),
    }


def test_statistics_count_requests_runs_and_durations_over_grpc_and_http(server: RunningServer) -> None:
    assert not server.server.metrics.enabled
    grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    http_client = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    before_ms = time.time_ns() // 1_000_000
    images = np.random.default_rng(0).random((1, *IMG), dtype=np.float32)[0]
    for _ in range(2):
        _infer(grpc_client, grpcclient, "resnet", images)
    _infer(http_client, httpclient, "resnet", images)
    with pytest.raises(InferenceServerException):
        _infer(grpc_client, grpcclient, "resnet", np.zeros((1, 3, 4, 5), np.float32))  # wrong shape: a failure
    _infer(grpc_client, grpcclient, "resnet50DAG", np.zeros((3, *IMG), np.float32))  # three runs of resnet
    after_ms = time.time_ns() // 1_000_000

    message = grpc_client.get_inference_statistics("resnet")  # Triton's own message type
    assert isinstance(message, triton_pb2.ModelStatisticsResponse)
    (stat,) = message.model_stats
    assert (stat.name, stat.version) == ("resnet", "1")
    assert before_ms <= stat.last_inference <= after_ms
    stats = stat.inference_stats
    assert (stats.success.count, stats.fail.count, stats.compute_input.count) == (3, 1, 3)
    # Runs of the model, the pipeline's three included: each waited for an infer request and computed.
    assert (stat.execution_count, stat.inference_count, stats.queue.count, stats.compute_infer.count) == (6, 6, 6, 6)
    assert stats.success.ns >= stats.compute_input.ns > 0 and stats.compute_infer.ns > 0 and stats.fail.ns > 0
    assert [(b.batch_size, b.compute_infer.count) for b in stat.batch_stats] == [(1, 6)]

    by_http = http_client.get_inference_statistics("resnet")["model_stats"]
    assert [(s["name"], s["version"]) for s in by_http] == [("resnet", "1")]
    as_json = grpc_client.get_inference_statistics("resnet", as_json=True)["model_stats"][0]
    assert _counts(by_http[0]) == _counts(as_json)
    assert by_http[0]["last_inference"] == stat.last_inference
    assert by_http[0]["inference_stats"]["compute_infer"]["ns"] == stats.compute_infer.ns

    (dag,) = http_client.get_inference_statistics("resnet50DAG")["model_stats"]
    assert (dag["version"], _counts(dag)["success"], dag["execution_count"]) == ("1", 1, 1)
    assert dag["inference_stats"]["compute_infer"]["count"] == 1 and dag["inference_stats"]["queue"]["count"] == 0

    # Everything serving: the model's version and the pipeline, not what failed.
    listed = [(s.name, s.version) for s in grpc_client.get_inference_statistics().model_stats]
    assert listed == [("resnet", "1"), ("resnet50DAG", "1")]
    assert [(s["name"], s["version"]) for s in http_client.get_inference_statistics()["model_stats"]] == listed
    status, _, body = server.http("GET", "/v2/models/resnet/versions/1/stats")
    assert status == 200 and _counts(json.loads(body)["model_stats"][0]) == _counts(by_http[0])
    grpc_client.close()
    http_client.close()


def test_statistics_of_what_does_not_serve_are_refused(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    for name, version, code, text in (
        ("nope", "", "StatusCode.NOT_FOUND", "Model with requested name is not found - nope"),
        ("resnet", "2", "StatusCode.NOT_FOUND", "Model with requested version is not found - model resnet version 2"),
        ("resnet", "x", "StatusCode.INVALID_ARGUMENT", "invalid model version format in request - version: x"),
        ("brokenDAG", "", "StatusCode.UNAVAILABLE", "Pipeline is not loaded yet - pipeline brokenDAG"),
    ):
        with pytest.raises(InferenceServerException) as info:
            client.get_inference_statistics(name, version)
        assert (str(info.value.status()), info.value.message()) == (code, text)
    assert client.get_inference_statistics("empty").model_stats == []  # known, nothing serving
    client.close()
    for path, status_code, text in (
        ("/v2/models/nope/stats", 404, "Model with requested name is not found - nope"),
        (
            "/v2/models/resnet/versions/2/stats",
            404,
            "Model with requested version is not found - model resnet version 2",
        ),
    ):
        status, _, body = server.http("GET", path)
        assert (status, json.loads(body)) == (status_code, {"error": text})


def test_repository_index_lists_models_versions_and_pipelines_with_states(server: RunningServer) -> None:
    grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    http_client = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    index = grpc_client.get_model_repository_index()
    assert isinstance(index, triton_pb2.RepositoryIndexResponse)
    rows = [(m.name, m.version, m.state) for m in index.models]
    assert rows == [
        ("absent", "", "UNAVAILABLE"),
        ("brokenDAG", "1", "UNAVAILABLE"),
        ("empty", "1", "UNAVAILABLE"),
        ("resnet", "1", "READY"),
        ("resnet50DAG", "1", "READY"),
    ]
    reasons = {m.name: m.reason for m in index.models}
    assert "The provided base path is invalid or doesn't exists" in reasons["absent"]
    assert "no model file" in reasons["empty"]
    assert "nowhere" in reasons["brokenDAG"]
    assert reasons["resnet"] == reasons["resnet50DAG"] == ""

    by_http = http_client.get_model_repository_index()
    assert [(m["name"], m.get("version", ""), m["state"], m["reason"]) for m in by_http] == [
        (m.name, m.version, m.state, m.reason) for m in index.models
    ]
    assert "version" not in by_http[0]  # a model without any version has none
    call = server.channel.unary_unary(  # tritonclient does not send "ready": Triton's own message, by hand
        "/inference.GRPCInferenceService/RepositoryIndex",
        request_serializer=triton_pb2.RepositoryIndexRequest.SerializeToString,
        response_deserializer=triton_pb2.RepositoryIndexResponse.FromString,
    )
    ready = [(m.name, m.version) for m in call(triton_pb2.RepositoryIndexRequest(ready=True), timeout=10).models]
    assert ready == [("resnet", "1"), ("resnet50DAG", "1")]
    status, _, body = server.http("POST", "/v2/repository/index", '{"ready": true}')
    assert status == 200 and [(m["name"], m["version"]) for m in json.loads(body)] == ready
    grpc_client.close()
    http_client.close()


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ('{"ready": "yes"}', 'Could not parse request parameters - ready must be true or false, not "yes"'),
        ("[true]", "Request body should be JSON object"),
    ],
)
def test_repository_index_bodies_that_are_wrong(server: RunningServer, body: str, text: str) -> None:
    status, _, answer = server.http("POST", "/v2/repository/index", body)
    assert (status, json.loads(answer)) == (400, {"error": text})


def _fields(descriptor: Any) -> dict[str, tuple[Any, ...]]:
    return {
        f.name: (f.number, f.type, f.label, f.message_type.name if f.message_type else "") for f in descriptor.fields
    }


@pytest.mark.parametrize(
    "message",
    [
        "ModelStatisticsRequest", "ModelStatisticsResponse", "ModelStatistics", "StatisticDuration", "InferStatistics",
        "InferResponseStatistics", "InferBatchStatistics", "MemoryUsage", "RepositoryIndexRequest",
        "RepositoryIndexResponse",
    ],
)  # fmt: skip
def test_messages_have_tritons_field_numbers_and_types(message: str) -> None:
    mine, theirs = getattr(ours, message).DESCRIPTOR, getattr(triton_pb2, message).DESCRIPTOR
    assert _fields(mine) == _fields(theirs)
    for nested in theirs.nested_types:
        assert _fields(mine.nested_types_by_name[nested.name]) == _fields(nested)


def test_rpcs_have_tritons_methods() -> None:
    mine = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for name in ("ModelStatistics", "RepositoryIndex"):
        ours_method, triton_method = mine.methods_by_name[name], theirs.methods_by_name[name]
        assert ours_method.input_type.full_name == triton_method.input_type.full_name
        assert ours_method.output_type.full_name == triton_method.output_type.full_name
    assert grpc.StatusCode.UNIMPLEMENTED  # RepositoryModelLoad stays unimplemented (tests/test_errors.py)
