"""The HTTP server itself: routing, methods, CORS, error bodies, the config API and /metrics."""

from __future__ import annotations

import json
import socket

import numpy as np
from conftest import RunningServer
from prometheus_client.parser import text_string_to_metric_families


def test_unknown_path_wrong_method_and_options(seed_server: RunningServer) -> None:
    status, headers, body = seed_server.http("GET", "/nothing/here")
    assert (status, json.loads(body)) == (400, {"error": "Invalid request URL - /nothing/here"})
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    status, _, body = seed_server.http("DELETE", "/v1/config")
    assert status == 406 and json.loads(body)["error"].startswith("Unsupported method")
    status, _, body = seed_server.http("POST", "/v1/config")
    assert status == 406
    status, _, body = seed_server.http("OPTIONS", "/v1/models/resnet")
    assert (status, body) == (200, b"")
    status, _, body = seed_server.http("GET", "/v1/models/../etc/passwd")
    assert status == 400 and "base path is invalid" in json.loads(body)["error"]


def test_config_lists_every_servable_in_ovms_layout(seed_server: RunningServer) -> None:
    status, _, body = seed_server.http("GET", "/v1/config")
    assert status == 200
    text = body.decode()
    assert text.startswith('{\n"resnet" : \n{\n "model_version_status": [')
    document = json.loads(text)
    assert sorted(document) == ["resnet", "resnet50DAG"]
    assert document["resnet"]["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": "OK"}}
    ]


def _samples(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics; prometheus_client's parser names counter samples `<family>_total`."""
    status, headers, body = server.http("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_metrics_count_requests_inference_and_pipeline_nodes(seed_server: RunningServer) -> None:
    before = _samples(seed_server)
    success = ("ovms_requests_success_total", frozenset({"api": "TensorFlowServing", "interface": "gRPC",
               "method": "Predict", "name": "resnet50DAG", "version": "1"}.items()))  # fmt: skip
    assert before[success] == 0  # created at load, as OVMS does
    images = np.random.default_rng(0).random((3, 1, 3, 4, 4), dtype=np.float32)
    seed_server.predict("resnet50DAG", {"0": images})
    seed_server.predict("resnet50DAG", {"0": images[:2]})
    seed_server.predict("resnet", {"0": images[0]})
    after = _samples(seed_server)
    assert after[success] == 2
    model_from_pipeline = ("ovms_requests_success_total", frozenset({"api": "TensorFlowServing", "interface": "gRPC",
                           "method": "Predict", "name": "resnet", "version": "1"}.items()))  # fmt: skip
    assert after[model_from_pipeline] - before[model_from_pipeline] == 5 + 1  # 5 pipeline branches + 1 direct
    inference = ("ovms_inference_time_us_count", frozenset({"name": "resnet", "version": "1"}.items()))
    assert after[inference] - before.get(inference, 0) == 6
    request_time = ("ovms_request_time_us_count", frozenset({"interface": "gRPC", "name": "resnet50DAG",
                    "version": "1"}.items()))  # fmt: skip
    assert after[request_time] == 2
    branches = ("ovserve_pipeline_node_branches_total", frozenset({"name": "resnet50DAG", "node": "request"}.items()))
    assert after[branches] == 5
    node = ("ovserve_pipeline_node_executions_total",
            frozenset({"name": "resnet50DAG", "node": "resnetNode", "status": "success"}.items()))  # fmt: skip
    assert after[node] == 5
    active = ("ovms_current_requests", frozenset({"name": "resnet", "version": "1"}.items()))
    assert after[active] == 0


def test_http_socket_sends_small_responses_without_delay(seed_server: RunningServer) -> None:
    """Without TCP_NODELAY (inherited by accepted connections) every keep-alive reply waits ~40 ms for an ACK."""
    http = seed_server.server.http
    assert http is not None
    assert http.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _raw_exchange(server: RunningServer, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """One request written as is on a fresh socket, read until the server closes: status line, headers, body."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status_line.encode(), headers, body


def test_responses_carry_a_content_length_that_http_1_0_clients_read(seed_server: RunningServer) -> None:
    """Chunked framing (uvicorn's default without a length) is unreadable to an HTTP/1.0 client such as ab."""
    for path, status in [("/v2/models/resnet", b"200"), ("/v1/models/nope", b"404"), ("/v2/health/live", b"200")]:
        line, headers, body = _raw_exchange(seed_server, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        assert line.split()[1] == status, path
        assert "transfer-encoding" not in headers, path
        assert headers["content-length"] == str(len(body)), path
        if body:
            json.loads(body)


def test_no_content_answer_keeps_the_connection(seed_server: RunningServer) -> None:
    """A demultiplexer with no branches answers 204 (docs/pipelines.md#runtime): no body and no length, and the
    keep-alive connection serves the next request (a 204 with the error body made uvicorn raise and drop the
    connection)."""
    body = json.dumps({"inputs": [{"name": "0", "shape": [0, 1, 3, 4, 4], "datatype": "FP32", "data": []}]})
    request = f"POST /v2/models/resnet50DAG/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    next_request = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    line, headers, rest = _raw_exchange(seed_server, (request + next_request).encode())
    assert line.split()[1] == b"204"
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest
