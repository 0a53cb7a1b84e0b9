"""Stopping as Kubernetes stops a pod: SIGTERM drains (not ready, still serving, connections closed after each
response), requests in flight finish, exit 0; a second signal cuts it short. Probes: gRPC health, HEAD, strict
readiness. Real `ovserve` processes, tritonclient and gRPC's own health client."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from conftest import RunningServer, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

PYTHON = sys.executable

SLEEPER = '''
import time

class Sleeper:
    """Returns its input after `seconds`: a request that stays in flight."""

    def __init__(self, params):
        self.seconds = float(params["seconds"])
        time.sleep(float(params["load_seconds"]))  # a node that takes its time to load

    def inputs_info(self):
        return {"x": ((1, 4), "float32")}

    def outputs_info(self):
        return {"y": ((1, 4), "float32")}

    def execute(self, inputs):
        time.sleep(self.seconds)
        return {"y": inputs["x"]}
'''


def slow_config(repository: Path, seconds: float, load_seconds: float = 0) -> Path:
    """A model `sum` (y = (x + 1) * 2, instant) and a pipeline `slow` that answers its input after `seconds` (and
    takes `load_seconds` to load)."""
    repository.mkdir(parents=True, exist_ok=True)
    models.save(models.add_mul(), repository, "sum")
    (repository / "sleeper.py").write_text(SLEEPER)
    node = {
        "name": "sleep", "type": "custom", "library_name": "sleeper",
        "params": {"seconds": str(seconds), "load_seconds": str(load_seconds)},
        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}], "outputs": [{"data_item": "y", "alias": "y"}],
    }  # fmt: skip
    document = {
        "model_config_list": [{"config": {"name": "sum", "base_path": "sum"}}],
        "custom_node_library_config_list": [{"name": "sleeper", "base_path": "sleeper.py:Sleeper"}],
        "pipeline_config_list": [{
            "name": "slow", "inputs": ["x"], "nodes": [node],
            "outputs": [{"y": {"node_name": "sleep", "data_item": "y"}}],
        }],
    }  # fmt: skip
    return models.write_config(repository, document)


class Process:
    """A real `ovserve` process on loopback ports."""

    def __init__(self, config: Path, *flags: str) -> None:
        self.port, self.rest_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [PYTHON, "-m", "ovserve", "--config_path", str(config), "--port", str(self.port), "--grpc_bind_address",
             "127.0.0.1", "--rest_port", str(self.rest_port), "--rest_bind_address", "127.0.0.1", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.output = ""

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=30)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.finish()
            try:
                if self.get("/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not ready in {seconds} s: {self.finish()}")

    def read_until(self, text: str, seconds: float = 60) -> str:
        """The output up to the first line holding `text`."""
        assert self.process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + seconds
        while not lines or text not in lines[-1]:
            assert time.monotonic() < deadline and self.process.poll() is None, "".join(lines)
            lines.append(self.process.stdout.readline())
        return "".join(lines)

    def signal(self, number: int = signal.SIGTERM) -> None:
        os.kill(self.process.pid, number)

    def finish(self, timeout: float = 60) -> str:
        """Wait for the process to end (killing it past `timeout`); its output."""
        try:
            self.output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate()
            raise
        return self.output


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.communicate()


def health(port: int, service: str = "") -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)


def slow_inputs_http(x: np.ndarray) -> list[Any]:
    tensor = triton_http.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return [tensor]


def test_sigterm_drains_then_finishes_every_request_in_flight(tmp_path: Path, processes: list[Process]) -> None:
    server = Process(slow_config(tmp_path, 1.5), "--drain_seconds", "2", "--shutdown_grace_seconds", "20")
    processes.append(server)
    server.wait_ready()
    assert health(server.port).status == health_pb2.HealthCheckResponse.SERVING
    assert health(server.port, "slow").status == health_pb2.HealthCheckResponse.SERVING

    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    results: list[Any] = []

    def infer_http() -> None:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{server.rest_port}", network_timeout=60)
        try:
            results.append(client.infer("slow", slow_inputs_http(x)).as_numpy("y"))
        except Exception as e:  # kept as the result: the assertion below shows it
            results.append(e)

    def infer_grpc() -> None:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.port}")
        tensor = triton_grpc.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(x)
        try:
            results.append(client.infer("slow", [tensor], client_timeout=60).as_numpy("y"))
        except Exception as e:
            results.append(e)

    threads = [threading.Thread(target=f) for f in (infer_http, infer_grpc) * 4]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # all eight are in the sleeper now (the node runs them side by side in worker threads)
    server.signal()
    time.sleep(0.3)

    # Draining: not ready by every probe, yet serving, and each HTTP response closes its connection.
    status, headers, _ = server.get("/v2/health/ready")
    assert status == 503 and headers["connection"] == "close"
    assert server.get("/v2/health/live")[0] == 200
    assert health(server.port).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(server.port, "sum").status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not triton_grpc.InferenceServerClient(f"127.0.0.1:{server.port}").is_server_ready()
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.port}")
    tensor = triton_grpc.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    assert np.array_equal(client.infer("sum", [tensor]).as_numpy("y"), (x + 1) * 2)

    for thread in threads:
        thread.join(60)
    assert len(results) == 8 and all(isinstance(r, np.ndarray) and np.array_equal(r, x) for r in results), results
    output = server.finish(30)
    assert server.process.returncode == 0, output
    assert "SIGTERM: not ready now; serving on for 2 s" in output and "server stopped" in output
    with pytest.raises(OSError):  # the ports are closed
        server.get("/v2/health/live")


def test_requests_in_flight_finish_within_the_grace_after_the_drain(tmp_path: Path, processes: list[Process]) -> None:
    """Requests that outlast the drain still finish: the grace runs after it; the process ends once they do."""
    server = Process(slow_config(tmp_path, 3), "--drain_seconds", "0.5", "--shutdown_grace_seconds", "20")
    processes.append(server)
    server.wait_ready()
    results: list[Any] = []
    x = np.ones((1, 4), np.float32)

    def infer() -> None:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{server.rest_port}", network_timeout=60)
        results.append(client.infer("slow", slow_inputs_http(x)).as_numpy("y"))

    threads = [threading.Thread(target=infer) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    server.signal()
    output = server.finish(30)
    for thread in threads:
        thread.join(10)
    assert server.process.returncode == 0, output
    assert len(results) == 4 and all(np.array_equal(r, x) for r in results)
    assert time.monotonic() - started >= 1.5  # it waited for them (they had about 2.5 s to go)


def test_a_second_signal_ends_the_drain_and_the_grace(tmp_path: Path, processes: list[Process]) -> None:
    server = Process(slow_config(tmp_path, 30), "--drain_seconds", "60", "--shutdown_grace_seconds", "60")
    processes.append(server)
    server.wait_ready()
    errors: list[Exception] = []

    def infer() -> None:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{server.rest_port}", network_timeout=60)
        try:
            client.infer("slow", slow_inputs_http(np.ones((1, 4), np.float32)))
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=infer)
    thread.start()
    time.sleep(0.5)
    server.signal()
    time.sleep(0.5)
    assert server.process.poll() is None  # draining
    server.signal()
    output = server.finish(20)  # not the 60 s drain, nor the 30 s request
    thread.join(30)
    assert server.process.returncode == 0, output
    assert errors  # the request still running was abandoned
    assert "second signal: stopped without waiting for requests in flight" in output


def test_sigint_and_early_sigterm_skip_the_drain(tmp_path: Path, processes: list[Process]) -> None:
    config = slow_config(tmp_path, 0.1)
    server = Process(config, "--drain_seconds", "60")
    processes.append(server)
    server.wait_ready()
    server.signal(signal.SIGINT)
    assert server.finish(20) and server.process.returncode == 0
    # A TERM while the pipeline loads (5 s): nothing to drain.
    early = Process(slow_config(tmp_path / "early", 0.1, load_seconds=5), "--drain_seconds", "60")
    processes.append(early)
    seen = early.read_until("REST server listening")
    early.signal()
    output = seen + early.finish(30)
    assert early.process.returncode == 0, output
    assert "server stopped" in output and "server ready" not in output


def test_grpc_health_and_head_on_the_health_routes(seed_server: RunningServer) -> None:
    server = seed_server
    stub = health_pb2_grpc.HealthStub(server.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", "grpc.health.v1.Health", "inference.GRPCInferenceService", "resnet", "resnet50DAG"):
        assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == serving, name
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="nothing"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Health of an unknown service requested - service: 'nothing'" in str(caught.value.details())

    for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/resnet/ready", "/v1/models/resnet"):
        get_status, get_headers, _ = server.http("GET", path)
        status, headers, body = server.http("HEAD", path)
        assert (status, body) == (get_status, b""), path
        assert headers["content-length"] == get_headers["content-length"], path
    assert server.http("HEAD", "/v2/models/nothing/ready")[0] == 404

    watch = stub.Watch(health_pb2.HealthCheckRequest(service="resnet"), timeout=30)
    assert next(watch).status == serving
    server.server.drain()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert server.http("HEAD", "/v2/health/ready")[0] == 503
    unknown = stub.Watch(health_pb2.HealthCheckRequest(service="nothing"), timeout=30)
    assert next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    watch.cancel()
    unknown.cancel()


def test_readiness_can_require_every_model(tmp_path: Path, processes: list[Process]) -> None:
    """By default (as OVMS) a model that fails to load leaves the server ready; with --ready_requires_all_models
    readiness stays false, and turns true once the model loads."""
    models.save(models.weighted_sum(), tmp_path, "good")
    document = {
        "model_config_list": [
            {"config": {"name": "good", "base_path": "good"}},
            {"config": {"name": "broken", "base_path": "missing"}},
        ]
    }
    config = models.write_config(tmp_path, document)
    lenient = Process(config)
    strict = Process(config, "--ready_requires_all_models", "--file_system_poll_wait_seconds", "1")
    processes.extend((lenient, strict))
    lenient.wait_ready()

    def good_loaded() -> bool:
        try:
            states = json.loads(strict.get("/v1/config")[2] or b"{}")
        except OSError:  # the REST port is not open yet
            return False
        return bool(states.get("good", {}).get("model_version_status", [{}])[0].get("state") == "AVAILABLE")

    deadline = time.monotonic() + 60
    while not good_loaded():
        assert time.monotonic() < deadline, strict.finish()
        time.sleep(0.1)
    time.sleep(0.5)
    assert strict.get("/v2/health/ready")[0] == 503
    assert health(strict.port).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(strict.port, "good").status == health_pb2.HealthCheckResponse.SERVING
    models.save(models.weighted_sum(), tmp_path, "missing")  # the model appears: the watcher loads it
    strict.wait_ready(30)
    for process in (lenient, strict):
        process.signal(signal.SIGINT)
        process.finish(30)


def test_ports_in_use_are_one_clear_line(tmp_path: Path) -> None:
    models.save(models.weighted_sum(), tmp_path, "sum")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flag in ("--port", "--rest_port"):
            other = "--rest_port" if flag == "--port" else "--port"
            result = subprocess.run(
                [PYTHON, "-m", "ovserve", "--model_name", "sum", "--model_path", str(tmp_path / "sum"), flag,
                 str(port), other, str(free_port()), "--grpc_bind_address", "127.0.0.1", "--rest_bind_address",
                 "127.0.0.1"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 1, result.stderr
            lines = [line for line in result.stderr.splitlines() if line.startswith("ovserve: error:")]
            assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], result.stderr
            assert "Traceback" not in result.stderr
