"""Status with reasons (issue 13): TF Serving's error_message of a failed row says why, over gRPC and REST (ovmsclient
and plain HTTP); a model whose base path is missing is listed with its failure; rows that serve stay as OVMS's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import ovmsclient
import pytest
import requests
from conftest import RunningServer, rpc_error

LOADING, AVAILABLE = 20, 30


@pytest.fixture
def server(repository: Path, serve: Any) -> RunningServer:
    """Model m serves; `nowhere` has no base path; `broken` has a version without a model file; pipeline p uses a
    model that is not configured."""
    models.save(models.add_mul(), repository, "m")
    (repository / "broken" / "1").mkdir(parents=True)
    node = {"name": "n", "type": "DL model", "model_name": "absent", "inputs": [{"x": {"node_name": "request",
            "data_item": "x"}}], "outputs": [{"data_item": "y", "alias": "y"}]}  # fmt: skip
    running: RunningServer = serve({
        "model_config_list": [{"config": {"name": n, "base_path": n}} for n in ("m", "nowhere", "broken")],
        "pipeline_config_list": [{"name": "p", "inputs": ["x"], "nodes": [node],
                                  "outputs": [{"y": {"node_name": "n", "data_item": "y"}}]}],
    })  # fmt: skip
    return running


def rest_rows(server: RunningServer, name: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{server.url}/v1/models/{name}", timeout=30)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["model_version_status"]
    return rows


def grpc_rows(server: RunningServer, name: str) -> list[tuple[int, int, int, str]]:
    rows = server.status(name).model_version_status
    return [(r.version, r.state, r.status.error_code, r.status.error_message) for r in rows]


def test_a_missing_base_path_is_listed_with_its_failure(repository: Path, server: RunningServer) -> None:
    reason = f"The provided base path is invalid or doesn't exists: {repository / 'nowhere'}"
    assert grpc_rows(server, "nowhere") == [(0, LOADING, 2, f"UNKNOWN - {reason}")]  # 2: UNKNOWN
    status = {"error_code": "UNKNOWN", "error_message": f"UNKNOWN - {reason}"}
    assert rest_rows(server, "nowhere") == [{"version": "0", "state": "LOADING", "status": status}]
    client = ovmsclient.make_grpc_client(f"127.0.0.1:{server.port}")
    assert client.get_model_status(model_name="nowhere") == {
        0: {"state": "LOADING", "error_code": 2, "error_message": f"UNKNOWN - {reason}"}
    }
    error = rpc_error(lambda: server.status("nowhere", version=1))  # a version asked for: not found, and why
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Model with requested version is not found - model nowhere version 1: {reason}"
    config = json.loads(server.http("GET", "/v1/config")[2])
    assert config["nowhere"]["model_version_status"][0]["status"]["error_message"] == f"UNKNOWN - {reason}"


def test_a_version_that_failed_to_load_says_why(repository: Path, server: RunningServer) -> None:
    reason = f"File not found or cannot open: no model file (.xml+.bin, .onnx, ...) in {repository / 'broken' / '1'}"
    assert grpc_rows(server, "broken") == [(1, LOADING, 2, f"UNKNOWN - {reason}")]
    assert rest_rows(server, "broken")[0]["status"] == {"error_code": "UNKNOWN", "error_message": f"UNKNOWN - {reason}"}


def test_a_pipeline_that_failed_validation_says_why(server: RunningServer) -> None:
    reason = "Pipeline definition has reference to missing model - p: node n uses absent"
    expected = f"FAILED_PRECONDITION - {reason}"
    assert grpc_rows(server, "p") == [(1, LOADING, 9, expected)]  # 9: FAILED_PRECONDITION
    assert rest_rows(server, "p") == [
        {"version": "1", "state": "LOADING", "status": {"error_code": "FAILED_PRECONDITION", "error_message": expected}}
    ]
    error = rpc_error(lambda: server.predict("p", {"x": np.ones((1, 4), np.float32)}))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and reason in (error.details() or "")


def test_what_serves_and_kserve_readiness_stay_as_ovms(server: RunningServer) -> None:
    assert grpc_rows(server, "m") == [(1, AVAILABLE, 0, "OK")]
    assert rest_rows(server, "m") == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": "OK"}}
    ]
    assert requests.get(f"{server.url}/v2/models/m/ready", timeout=30).status_code == 200
    answers = {  # not ready: the answers they gave before, no reason added
        "p": "Model with requested version is not loaded yet - p",
        "broken": "Model with requested version is not found - model broken",
        "nowhere": "Model with requested version is not found - model nowhere",
    }
    for name, text in answers.items():
        answer = requests.get(f"{server.url}/v2/models/{name}/ready", timeout=30)
        assert (answer.status_code, answer.json()) == (404, {"error": text})
