"""Logs that explain failures (issue 13): each failed request once, with its door, target, node and branch; client
mistakes at INFO and rate limited; server failures at ERROR with the traceback; DEBUG, the access log and JSON."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import pytest
import requests
from conftest import RunningServer, free_port, raw_exchange, rpc_error

from ovserve import cli
from ovserve.logs import FIELDS

ROOT = Path(__file__).parent.parent

NODES = '''
import numpy as np


class Split:
    """x (1,4) -> three branches: x, 2x, 3x."""

    def __init__(self, params):
        pass

    def inputs_info(self):
        return {"x": ((1, 4), "float32")}

    def outputs_info(self):
        return {"parts": ((-1, 1, 4), "float32")}

    def execute(self, inputs):
        x = inputs["x"]
        return {"parts": np.stack([x, 2 * x, 3 * x])}


class Double:
    """A node with a bug: the branch whose first value is 2 names a variable that does not exist."""

    def __init__(self, params):
        pass

    def inputs_info(self):
        return {"x": ((1, 4), "float32")}

    def outputs_info(self):
        return {"y": ((1, 4), "float32")}

    def execute(self, inputs):
        x = inputs["x"]
        if x[0, 0] == 2:
            return {"y": x * factor}
        return {"y": 2 * x}
'''


BUG_LINE = NODES.splitlines().index('            return {"y": x * factor}') + 1


def config(repository: Path) -> dict[str, Any]:
    """Model m (add_mul) and pipeline p: Split demultiplexes, Double (with a bug in branch 1) runs per branch."""
    models.save(models.add_mul(), repository, "m")
    (repository / "dbl.py").write_text(NODES)
    split = {
        "name": "split",
        "type": "custom",
        "library_name": "split",
        "demultiply_count": -1,
        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
        "outputs": [{"data_item": "parts", "alias": "parts"}],
    }
    double = {
        "name": "n_dbl",
        "type": "custom",
        "library_name": "dbl",
        "inputs": [{"x": {"node_name": "split", "data_item": "parts"}}],
        "outputs": [{"data_item": "y", "alias": "y"}],
    }
    return {
        "model_config_list": [{"config": {"name": "m", "base_path": "m"}}],
        "custom_node_library_config_list": [
            {"name": "split", "base_path": "dbl.py:Split"},
            {"name": "dbl", "base_path": "dbl.py:Double"},
        ],
        "pipeline_config_list": [
            {
                "name": "p",
                "inputs": ["x"],
                "nodes": [split, double],
                "outputs": [{"y": {"node_name": "n_dbl", "data_item": "y"}}],
            }
        ],
    }


@pytest.fixture
def server(repository: Path) -> Iterator[RunningServer]:
    running = RunningServer(models.write_config(repository, config(repository)), access_log=True)
    yield running
    running.stop()


def records(caplog: pytest.LogCaptureFixture, name: str, level: int | None = None) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and (level is None or r.levelno == level)]


def test_a_failing_python_node_logs_its_traceback_at_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ovserve")
    x = np.ones((1, 4), np.float32)
    error = rpc_error(lambda: server.predict("p", {"x": x}))
    assert error.code() == grpc.StatusCode.INTERNAL
    answer = requests.post(f"{server.url}/v2/models/p/infer", json={
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}, timeout=30)  # fmt: skip
    assert answer.status_code == 500
    lines = records(caplog, "ovserve.requests", logging.ERROR)
    assert [r.getMessage().split(":")[0] for r in lines] == [
        "TensorFlowServing gRPC Predict pipeline=p node=n_dbl branch=1",
        "KServe REST POST /v2/models/p/infer pipeline=p node=n_dbl branch=1",
    ]
    grpc_line, rest_line = lines
    assert grpc_line.getMessage().endswith(
        "INTERNAL Custom node failed during execution - node n_dbl (library dbl): "
        "NameError(\"name 'factor' is not defined\"); branch 1"
    )
    assert rest_line.getMessage().startswith("KServe REST POST /v2/models/p/infer pipeline=p node=n_dbl branch=1: 500 ")
    for line in lines:
        trace = logging.Formatter().formatException(line.exc_info)  # type: ignore[arg-type]
        node_file = server.server.config.source.parent / "dbl.py"  # type: ignore[union-attr]
        assert f'File "{node_file}", line {BUG_LINE}, in execute' in trace
        assert 'return {"y": x * factor}' in trace
        assert "NameError: name 'factor' is not defined" in trace
        fields = getattr(line, FIELDS)
        assert (fields["pipeline"], fields["node"], fields["branch"]) == ("p", "n_dbl", "1")
        assert fields["error"] == "NODE_LIBRARY_EXECUTION_FAILED"
    print("\n".join(logging.Formatter(cli.logs.TEXT).format(r) for r in lines))  # the lines for the closing note


def test_a_client_mistake_is_one_info_line_and_repeats_are_rate_limited(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ovserve")
    now = [1000.0]
    server.server.dataplane.requests.clock = lambda: now[0]
    for _ in range(5):
        error = rpc_error(lambda: server.predict("m", {"a": np.ones((1, 3), np.float32)}))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    lines = records(caplog, "ovserve.requests")
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and lines[0].exc_info is None
    first = lines[0].getMessage()
    assert first.startswith("TensorFlowServing gRPC Predict model=m: INVALID_ARGUMENT ")
    assert first.endswith(error.details())
    other = requests.get(f"{server.url}/v1/models/nothing_here", timeout=30)  # another message: not held back
    assert other.status_code == 404
    now[0] += 1.0
    rpc_error(lambda: server.predict("m", {"a": np.ones((1, 3), np.float32)}))
    lines = records(caplog, "ovserve.requests")
    assert [r.levelno for r in lines] == [logging.INFO] * 3
    assert lines[1].getMessage() == (
        "TensorFlowServing REST GET /v1/models/nothing_here model=nothing_here: 404 Model with requested name is not "
        "found - nothing_here"
    )
    assert lines[2].getMessage() == first + " (4 more like this not logged)"
    assert getattr(lines[2], FIELDS)["suppressed"] == 4
    print(logging.Formatter(cli.logs.TEXT).format(lines[0]))  # the line for the closing note


def test_every_request_is_one_access_log_line(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ovserve")
    x = np.ones((1, 4), np.float32)
    server.predict("m", {"x": x})
    body = {"inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    assert requests.post(f"{server.url}/v2/models/m/infer", json=body, timeout=30).status_code == 400
    for _ in range(500):  # the line is written once the response is sent: the client may read it a moment before
        lines = [r.getMessage() for r in records(caplog, "ovserve.access")]
        if len(lines) >= 2:
            break
        time.sleep(0.01)
    assert len(lines) == 2
    grpc_line, rest_line = lines
    assert grpc_line.startswith("TensorFlowServing gRPC Predict model=m status=OK duration_ms=")
    assert rest_line.startswith("KServe REST POST /v2/models/m/infer model=m status=400 duration_ms=")
    sent = json.dumps(body).encode()
    assert f" received={len(sent)} sent=" in rest_line
    fields = getattr(records(caplog, "ovserve.access")[0], FIELDS)
    assert fields["received"] > 32 and fields["sent"] > 32 and fields["duration_ms"] > 0


def test_log_level_takes_any_case() -> None:
    for given in ("debug", "Debug", "DEBUG", "trace", "warning"):
        assert cli.parser().parse_args(["--log_level", given]).log_level == given.upper()
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--log_level", "verbose"])


def ovserve(repository: Path, *flags: str) -> tuple[subprocess.Popen[str], int]:
    """A real `python -m ovserve` on `repository`'s config.json; returns it once it answers, and its REST port."""
    rest = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ovserve", "--config_path", str(repository / "config.json"), "--port", str(free_port()),
         "--rest_port", str(rest), "--drain_seconds", "0", *flags],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if requests.get(f"http://127.0.0.1:{rest}/v2/health/ready", timeout=5).status_code == 200:
                return process, rest
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def stopped(process: subprocess.Popen[str]) -> list[str]:
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    return stderr.splitlines()


def test_json_lines_at_debug_with_the_access_log(repository: Path) -> None:
    models.write_config(repository, config(repository))
    process, rest = ovserve(repository, "--log_format", "json", "--log_level", "debug", "--access_log")
    try:
        good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        assert requests.post(f"http://127.0.0.1:{rest}/v2/models/m/infer", json=good, timeout=30).ok
        bad = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}
        assert requests.post(f"http://127.0.0.1:{rest}/v2/models/p/infer", json=bad, timeout=30).status_code == 500
        assert requests.post(f"http://127.0.0.1:{rest}/v1/config/reload", timeout=30).ok
    finally:
        lines = stopped(process)
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert all(e["logger"].startswith("ovserve") or e["level"] != "DEBUG" for e in entries), "library internals"
    asked = [e for e in entries if "/health/" not in e.get("method", "")]  # not the probes of `ovserve` above
    arrived = next(e for e in asked if e["message"].startswith("in: "))
    assert arrived["method"] == "POST /v2/models/m/infer" and arrived["received"] == len(json.dumps(good))
    access = [e for e in asked if e["logger"] == "ovserve.access"]
    assert [(e["api"], e["method"], e.get("model") or e.get("pipeline"), e["status"]) for e in access] == [
        ("KServe", "POST /v2/models/m/infer", "m", 200),
        ("KServe", "POST /v2/models/p/infer", "p", 500),
        ("", "POST /v1/config/reload", None, 200),
    ]
    assert all(e["duration_ms"] > 0 and e["sent"] > 0 for e in access)
    failure = next(e for e in entries if e["logger"] == "ovserve.requests" and e["level"] == "ERROR")
    assert (failure["pipeline"], failure["node"], failure["branch"], failure["status"]) == ("p", "n_dbl", "1", 500)
    assert "NameError: name 'factor' is not defined" in failure["traceback"]
    debug = [e["message"] for e in entries if e["level"] == "DEBUG"]
    assert "model m version 1: START -> LOADING" in debug
    assert any(m.startswith("config reload: ") and m.endswith("unchanged; rescanning version folders") for m in debug)
    assert any(m.startswith("out: KServe REST POST /v2/models/m/infer model=m: 200 in ") for m in debug)


def test_text_at_info_has_no_debug_lines(repository: Path) -> None:
    models.write_config(repository, config(repository))
    process, rest = ovserve(repository, "--log_level", "Info")
    try:
        assert requests.get(f"http://127.0.0.1:{rest}/v1/models/nothing", timeout=30).status_code == 404
    finally:
        lines = stopped(process)
    assert not [line for line in lines if "][DEBUG][" in line]
    failures = [line.split("] ", 1)[1] for line in lines if "[ovserve.requests]" in line]
    assert [line for line in failures if "/health/ready: 503 Server is not ready" not in line] == [
        "TensorFlowServing REST GET /v1/models/nothing model=nothing: 404 Model with requested name is not found - "
        "nothing"
    ]


def test_a_request_refused_before_the_app_is_logged(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ovserve")
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * (70 << 10) + b"\r\n\r\n"
    answer, closed = raw_exchange(server.rest_port, head)
    assert answer.startswith(b"HTTP/1.1 431 ") and closed
    assert [r.getMessage() for r in records(caplog, "ovserve.requests")] == [
        "REST request head: 431 Request headers too large - request line and headers over 65536 bytes"
    ]
