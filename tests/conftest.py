"""Fixtures: model repositories of tiny IR models and real ovserve servers on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import models

from ovserve import tfs
from ovserve._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)
from ovserve.config import ServerConfig, load_config
from ovserve.server import Server, Settings

NODES = Path(__file__).parent / "nodes"  # custom node test libraries (C and Python)


_GIVEN: collections.deque[int] = collections.deque(maxlen=256)  # ports handed out lately
_GIVING = threading.Lock()  # tests start servers from several threads


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a server started in another process), and not one handed out lately: the
    kernel may give the same free port to two calls in a row, e.g. a server's --port and --rest_port."""
    with _GIVING:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _GIVEN:
                _GIVEN.append(port)
                return port


def raw_exchange(port: int, request: bytes, wait: float = 10) -> tuple[bytes, bool]:
    """Send `request` (and nothing more) on a fresh connection; what the server answered within `wait` seconds,
    and whether it closed the connection then."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        connection.sendall(request)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except TimeoutError:
            return answer, False
        return answer, True


class RunningServer:
    """An ovserve Server on its own event loop thread, as a real process would run it."""

    def __init__(
        self, config: Path | ServerConfig, poll_seconds: float = 0, cache_dir: Path | None = None, **settings: Any
    ) -> None:
        """`config`: a config.json, or a ServerConfig (single-model mode); `settings`: more Settings fields (metrics:
        the default families unless given; () turns metrics off)."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        chosen = Settings(
            port=0,
            rest_port=0,
            grpc_bind_address="127.0.0.1",
            rest_bind_address="127.0.0.1",
            poll_seconds=poll_seconds,
            cache_dir=cache_dir,
            **{"metrics": None, **settings},
        )
        self.server = Server(load_config(config) if isinstance(config, Path) else config, chosen)
        self.call(self._start())
        self.port = self.server.grpc_port
        self.rest_port = self.server.rest_port
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    async def _start(self) -> None:
        await self.server.start()
        await self.server.loaded()

    def call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=120)

    def stop(self) -> None:
        self.channel.close()
        self.call(self.server.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def http(
        self, method: str, path: str, body: bytes | str | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One plain HTTP/1.1 request to the REST port: (status, lower-case headers, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=60)
        try:
            data = body.encode() if isinstance(body, str) else body
            connection.request(method, path, body=data, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    # --- TF Serving calls ----------------------------------------------------------------------------------

    def _rpc(self, method: str, request: Any, response: Any) -> Any:
        call = self.channel.unary_unary(
            method, request_serializer=type(request).SerializeToString, response_deserializer=response.FromString
        )
        return call(request, timeout=60)

    def predict(self, name: str, inputs: Mapping[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tfs.make_tensor_proto(value))
        response = self.predict_raw(request)
        return {k: tfs.make_ndarray(v) for k, v in response.outputs.items()}

    def predict_raw(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        return self._rpc("/tensorflow.serving.PredictionService/Predict", request, predict_pb2.PredictResponse)

    def metadata(self, name: str, version: int | None = None, fields: tuple[str, ...] = ("signature_def",)) -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        request.metadata_field.extend(fields)
        response = self._rpc(
            "/tensorflow.serving.PredictionService/GetModelMetadata",
            request,
            get_model_metadata_pb2.GetModelMetadataResponse,
        )
        signatures = get_model_metadata_pb2.SignatureDefMap()
        assert response.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]

        def table(infos: Any) -> dict[str, tuple[list[int], int]]:
            return {k: ([d.size for d in v.tensor_shape.dim], v.dtype) for k, v in infos.items()}

        return table(signature.inputs), table(signature.outputs)

    def status(self, name: str, version: int | None = None) -> Any:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        return self._rpc(
            "/tensorflow.serving.ModelService/GetModelStatus", request, get_model_status_pb2.GetModelStatusResponse
        )


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """An empty model repository (config.json goes here too)."""
    return tmp_path


@pytest.fixture
def serve(repository: Path) -> Iterator[Callable[[dict[str, Any]], RunningServer]]:
    """Start a server on a config document (relative base paths resolve in `repository`); stopped afterwards."""
    started: list[RunningServer] = []

    def start(document: dict[str, Any]) -> RunningServer:
        server = RunningServer(models.write_config(repository, document))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def seed_server(repository: Path, serve: Callable[[dict[str, Any]], RunningServer]) -> RunningServer:
    """The guide's scenario with a tiny batch-1 classifier: model 'resnet', pipeline 'resnet50DAG'."""
    models.save(models.classifier(), repository, "resnet")
    return serve(models.seed_config())


@pytest.fixture(scope="session")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test libraries of tests/nodes, built by gcc once per session."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the custom node test libraries")
    out = tmp_path_factory.mktemp("libraries")
    built = {}
    for name in ("crop", "argmax", "incomplete"):
        built[name] = out / f"lib{name}.so"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(built[name]), str(NODES / f"{name}.c")],
            check=True,
        )
    return built


def config_states(server: RunningServer) -> dict[str, list[str]]:
    """Every servable's version states as GET /v1/config lists them."""
    status, _, body = server.http("GET", "/v1/config")
    assert status == 200
    return {name: [v["state"] for v in s["model_version_status"]] for name, s in json.loads(body).items()}


def wait_for_states(server: RunningServer, wanted: dict[str, list[str]], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while config_states(server) != wanted:
        assert time.monotonic() < deadline, f"{config_states(server)} != {wanted}"
        time.sleep(0.05)


def wait_for_versions(server: RunningServer, name: str, rows: list[tuple[int, int, str]], seconds: float = 30) -> None:
    """Until GetModelStatus of `name` lists exactly these (version, state, error code) rows (the error code: the
    error_message without the reason ovserve adds after " - ")."""
    deadline = time.monotonic() + seconds
    while True:
        got = [
            (r.version, r.state, r.status.error_message.partition(" - ")[0])
            for r in server.status(name).model_version_status
        ]
        if got == rows:
            return
        assert time.monotonic() < deadline, f"{got} != {rows}"
        time.sleep(0.05)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


class Clients:
    """Background clients: a thread per client sending requests back to back until stopped; each answer is kept as
    (sent, received, answer), and a client's first failure stops it and is kept for the test to report."""

    def __init__(self, **clients: Callable[[], Any]) -> None:
        self.answers: dict[str, list[tuple[float, float, Any]]] = {name: [] for name in clients}
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n, c)) for n, c in clients.items()]
        for thread in self._threads:
            thread.start()

    def _run(self, name: str, client: Callable[[], Any]) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                answer = client()
            except BaseException as e:  # any failure is reported by the test
                self.failures.append(e)
                return
            self.answers[name].append((sent, time.monotonic(), answer))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
