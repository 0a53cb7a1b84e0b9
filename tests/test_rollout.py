"""A rolling restart and a model rollout that lose no request: three ovserve replicas behind a real nginx,
continuous KServe gRPC and REST load through it, each replica replaced the way Kubernetes does it (a new one ready,
then SIGTERM to the old and, a second later, the old one leaves the load balancer), then a new model version put
in the shared S3 bucket (moto) and picked up by every replica. Prints requests sent, failed and p99 latency of each
phase.

nginx balances two ways at once. As an HTTP proxy (`proxy_pass`, `grpc_pass`, with kept-alive upstream
connections, as an ingress does) it carries a gRPC client and a REST client that opens a connection per request.
As a TCP proxy (the `stream` module: each client connection pinned to one replica, as a Kubernetes Service's
kube-proxy does) it carries a gRPC client and a REST client that keep their connections: there the server itself
must move them away (Connection: close, GOAWAY). Clients do not keep HTTP/1.1 connections to the HTTP proxy: an
nginx reload closes those that are idle, racing a request sent that instant, whatever the servers behind do."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import models
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from conftest import free_port
from moto.server import ThreadedMotoServer

PYTHON = sys.executable
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"  # Debian's libnginx-mod-stream
DRAIN_S = 3.0  # the replicas' --drain_seconds
LEAVES_LB_S = 1.0  # a SIGTERM'd replica leaves the load balancer this long after (endpoints updating)
X = np.arange(8, dtype=np.float32).reshape(2, 4)
ANSWERS = {1: (X + 1) * 2, 2: (X + 2) * 2}  # what each model version computes (add_mul, add = version)


def get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
        return status
    finally:
        connection.close()


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.05)


class Replica:
    """One ovserve process serving config.json (models in S3) on its own loopback ports."""

    def __init__(self, config: Path, environ: dict[str, str], log: Path) -> None:
        self.port, self.rest_port = free_port(), free_port()
        self.log = log
        with log.open("w") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [PYTHON, "-m", "ovserve", "--config_path", str(config), "--port", str(self.port),
                 "--grpc_bind_address", "127.0.0.1", "--rest_port", str(self.rest_port), "--rest_bind_address",
                 "127.0.0.1", "--file_system_poll_wait_seconds", "1", "--drain_seconds", str(DRAIN_S),
                 "--shutdown_grace_seconds", "20", "--grpc_max_connection_age_seconds", str(DRAIN_S / 3)],
                stdout=subprocess.DEVNULL, stderr=out, env=environ,
            )  # fmt: skip

    def wait_ready(self) -> None:
        wait_for(lambda: self.process.poll() is None and get(self.rest_port, "/v2/health/ready") == 200, 90, "ready")

    def stop(self, signalled: bool = False) -> int:
        """SIGTERM (unless `signalled` already), then its exit code (killed past 60 s)."""
        if not signalled:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9


class Nginx:
    """nginx in the foreground, as an HTTP proxy and as a TCP proxy, each with a gRPC and a REST port; its upstreams
    change by a reload (SIGHUP: old workers finish what they have, new ones take the new upstreams)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.grpc_port, self.rest_port, self.tcp_grpc_port, self.tcp_rest_port = (free_port() for _ in range(4))
        folder.mkdir()
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temp = " ".join(f"{kind}_temp_path {folder}/{kind};" for kind in kinds)
        user = "user root;" if os.geteuid() == 0 else ""  # root's workers would otherwise be nobody's
        (folder / "nginx.conf").write_text(f"""
load_module {STREAM_MODULE};
{user}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {temp}
    client_max_body_size 0;
    include {folder}/http-upstreams.conf;
    server {{
        listen 127.0.0.1:{self.rest_port};
        location / {{ proxy_pass http://rest; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{self.grpc_port} http2;
        location / {{ grpc_pass grpc://grpc; }}
    }}
}}
stream {{
    include {folder}/tcp-upstreams.conf;
    server {{ listen 127.0.0.1:{self.tcp_rest_port}; proxy_pass tcp_rest; }}
    server {{ listen 127.0.0.1:{self.tcp_grpc_port}; proxy_pass tcp_grpc; }}
}}
""")
        self.process: subprocess.Popen[bytes] | None = None

    def route(self, replicas: list[Replica]) -> None:
        """Send traffic to exactly these replicas."""

        def upstream(name: str, ports: list[int], extra: str) -> str:
            return f"upstream {name} {{\n" + "".join(f"    server 127.0.0.1:{p};\n" for p in ports) + extra + "}\n"

        rest, grpc = [r.rest_port for r in replicas], [r.port for r in replicas]
        keepalive = "    keepalive 16;\n"
        (self.folder / "http-upstreams.conf").write_text(
            upstream("rest", rest, keepalive) + upstream("grpc", grpc, keepalive)
        )
        (self.folder / "tcp-upstreams.conf").write_text(upstream("tcp_rest", rest, "") + upstream("tcp_grpc", grpc, ""))
        if self.process is None:
            self.process = subprocess.Popen([NGINX, "-c", str(self.folder / "nginx.conf"), "-p", str(self.folder)])
            wait_for(lambda: get(self.rest_port, "/v2/health/live") == 200, 30, "nginx up")
        else:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(30)


@dataclass
class Load:
    """Client threads sending requests through nginx until stopped; every outcome is kept with its time."""

    nginx: Nginx
    outcomes: list[tuple[float, float, str | None]] = field(default_factory=list)  # start, seconds, error
    versions: set[int] = field(default_factory=set)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        n = self.nginx
        senders = {
            "gRPC via HTTP proxy": self._grpc(n.grpc_port),
            "REST via HTTP proxy, a connection per request": self._rest_new_connections(n.rest_port),
            "gRPC via TCP proxy": self._grpc(n.tcp_grpc_port),
            "REST via TCP proxy, kept-alive connection": self._rest_kept_alive(n.tcp_rest_port),
        }
        self.threads = [threading.Thread(target=self._run, args=item) for item in senders.items()]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self, door: str, request: Callable[[], tuple[int, np.ndarray]]) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            error = None
            try:
                version, y = request()
                if not np.array_equal(y, ANSWERS.get(version, X)):
                    error = f"{door}: version {version} answered {y.tolist()}"
                self.versions.add(version)
            except Exception as e:  # the outcome: counted and shown
                error = f"{door}: {type(e).__name__}: {e}"
            self.outcomes.append((started, time.monotonic() - started, error))

    def _grpc(self, port: int) -> Callable[[], tuple[int, np.ndarray]]:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton_grpc.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)

        def request() -> tuple[int, np.ndarray]:
            result = client.infer("m", [tensor], client_timeout=30)
            return int(result.get_response().model_version), result.as_numpy("y")

        return request

    def _rest_kept_alive(self, port: int) -> Callable[[], tuple[int, np.ndarray]]:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=30)
        tensor = triton_http.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X, binary_data=False)

        def request() -> tuple[int, np.ndarray]:
            result = client.infer("m", [tensor])
            return int(result.get_response()["model_version"]), result.as_numpy("y")

        return request

    def _rest_new_connections(self, port: int) -> Callable[[], tuple[int, np.ndarray]]:
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}]}
        )

        def request() -> tuple[int, np.ndarray]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("POST", "/v2/models/m/infer", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
            finally:
                connection.close()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {answer}")
            output = answer["outputs"][0]
            return int(answer["model_version"]), np.array(output["data"], np.float32).reshape(output["shape"])

        return request

    def phase(self, start: float, end: float) -> tuple[int, int, float, list[str]]:
        """Requests started in [start, end): sent, failed, p99 latency in ms, the first errors."""
        chosen = [o for o in list(self.outcomes) if start <= o[0] < end]
        errors = [o[2] for o in chosen if o[2] is not None]
        p99 = float(np.percentile([o[1] for o in chosen], 99)) * 1000 if chosen else float("nan")
        return len(chosen), len(errors), p99, errors[:5]


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "s3", endpoint_url=endpoint, region_name="us-east-1"
    )
    yield endpoint, client
    server.stop()


def upload(client: Any, name: str, staging: Path, version: int) -> None:
    folder = models.save(models.add_mul(shape=(-1, 4), add=float(version)), staging / uuid.uuid4().hex, "m", version)
    for file in sorted((folder / str(version)).iterdir()):
        client.put_object(Bucket=name, Key=f"m/{version}/{file.name}", Body=file.read_bytes())


@pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is installed by `make test` (scripts/debian-packages.sh)")
def test_rolling_restart_and_model_rollout_lose_no_request(tmp_path: Path, bucket: tuple[str, Any]) -> None:
    endpoint, s3 = bucket
    s3.create_bucket(Bucket="models")
    upload(s3, "models", tmp_path, 1)
    config = models.write_config(
        tmp_path,
        {"model_config_list": [{"config": {"name": "m", "base_path": "s3://models/m",
                                           "model_version_policy": {"latest": {"num_versions": 1}}}}]},
    )  # fmt: skip
    environ = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1", "S3_ENDPOINT": endpoint}  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()
    count = 0

    def replica() -> Replica:
        nonlocal count
        count += 1
        return Replica(config, environ, logs / f"replica-{count}.log")

    live = [replica() for _ in range(3)]
    for r in live:
        r.wait_ready()
    nginx = Nginx(tmp_path / "nginx")
    nginx.route(live)
    load = Load(nginx)
    exits: list[int] = []
    events: list[tuple[float, str]] = []
    try:
        load.start()
        steady_start = time.monotonic()
        time.sleep(5)
        roll_start = time.monotonic()
        for index in range(len(live)):  # maxSurge 1, maxUnavailable 0: the new pod first, then the old one goes
            new = replica()
            new.wait_ready()
            old = live[index]
            live[index] = new
            nginx.route([*live, old])
            events.append((time.monotonic(), f"new replica {count} routed; SIGTERM to replica {old.log.stem}"))
            old.process.send_signal(signal.SIGTERM)
            time.sleep(LEAVES_LB_S)
            nginx.route(live)
            events.append((time.monotonic(), f"{old.log.stem} left nginx"))
            exits.append(old.stop(signalled=True))
            events.append((time.monotonic(), f"{old.log.stem} exited"))
        rollout_start = time.monotonic()
        upload(s3, "models", tmp_path, 2)  # every replica polls the bucket: version 2 loads, version 1 retires
        wait_for(lambda: all(get(r.rest_port, "/v2/models/m/versions/2/ready") == 200 for r in live), 60, "v2")
        wait_for(lambda: all(get(r.rest_port, "/v2/models/m/versions/1/ready") != 200 for r in live), 60, "v1 out")
        time.sleep(2)
        end = time.monotonic()
    finally:
        load.stop()
        for r in live:
            exits.append(r.stop())
        nginx.stop()

    rows = [
        ("steady state", *load.phase(steady_start, roll_start)),
        ("rolling restart", *load.phase(roll_start, rollout_start)),
        ("model v1 -> v2", *load.phase(rollout_start, end)),
    ]
    print("\nphase              sent  failed  p99 ms")
    for name, sent, failed, p99, _ in rows:
        print(f"{name:<17} {sent:>5} {failed:>7} {p99:>7.1f}")
    failures = sorted((o[0], o[2]) for o in load.outcomes if o[2] is not None)
    timeline = "\n".join(f"{t - steady_start:8.3f} {what}" for t, what in sorted([*events, *failures]))
    assert not failures, timeline + "\n" + (tmp_path / "nginx" / "error.log").read_text()[-3000:]
    assert all(sent > 20 for _, sent, *_ in rows), rows
    assert exits == [0] * 6, [(path.name, path.read_text()[-2000:]) for path in sorted(logs.iterdir())]
    assert load.versions == {1, 2}
