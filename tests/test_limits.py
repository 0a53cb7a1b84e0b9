"""What a client may send and how slowly: REST bodies (size, pauses), request heads (size, header count, time to
arrive), idle connections, gRPC message size. Past a limit the client gets a clear answer and its connection is
closed; every other client keeps being served."""

from __future__ import annotations

import json
import shlex
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import models
import numpy as np
import pytest
from conftest import RunningServer, raw_exchange

from ovserve import cli
from ovserve.http_protocol import HttpLimits

GOOD = {"model_config_list": [{"config": {"name": "m", "base_path": "m"}}]}
INFER = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}'
LIMITS = HttpLimits(
    max_body_bytes=1 << 20, body_seconds=1, max_header_bytes=8192, max_headers=20, header_seconds=1, idle_seconds=1
)


@pytest.fixture
def limited(repository: Path) -> Iterator[RunningServer]:
    models.save(models.add_mul(), repository, "m")
    running = RunningServer(models.write_config(repository, GOOD), rest_limits=LIMITS, grpc_max_message=1 << 20)
    yield running
    running.stop()


def still_serving(server: RunningServer) -> None:
    status, _, body = server.http("POST", "/v2/models/m/infer", INFER)
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [4, 6, 8, 10]


def request(*headers: bytes, path: bytes = b"/v2/models/m/ready") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def test_a_body_announced_past_the_limit_is_refused_before_it_is_read(limited: RunningServer) -> None:
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n{"
    started = time.monotonic()
    answer, closed = raw_exchange(limited.rest_port, head)
    assert answer.startswith(b"HTTP/1.1 413 ") and closed, answer
    assert b'{"error":"Request body too large - Content-Length 10737418240; the limit is 1048576"}' in answer
    assert time.monotonic() - started < 5


def test_a_chunked_body_growing_past_the_limit_is_refused(limited: RunningServer) -> None:
    chunk = b"a" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17))  # 1 MiB + 64 KiB, no length
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    # No last chunk: the server has read all that was sent when it answers, so its close loses nothing on the wire.
    answer, closed = raw_exchange(limited.rest_port, head + chunks)
    assert answer.startswith(b"HTTP/1.1 413 ") and closed, answer[:200]
    assert b"Request body too large - more than 1048576 bytes" in answer
    still_serving(limited)


def test_a_client_that_stops_sending_its_body_is_answered_408(limited: RunningServer) -> None:
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"  # 1 byte of 100
    started = time.monotonic()
    answer, closed = raw_exchange(limited.rest_port, head)
    assert answer.startswith(b"HTTP/1.1 408 ") and closed, answer
    assert b"Request body not received in time - nothing received for 1 s" in answer
    assert 0.9 < time.monotonic() - started < 8
    still_serving(limited)


def test_headers_within_the_limits_are_served(limited: RunningServer) -> None:
    answer, _ = raw_exchange(limited.rest_port, request(*[b"X-%d: %s" % (i, b"v" * 300) for i in range(18)]), 3)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (request(*[b"X-%d: 1" % i for i in range(21)]), b"more than 20 headers"),
        (request(b"X-Big: " + b"v" * 9000), b"request line and headers over 8192 bytes"),
        (request(path=b"/v2/models/m/ready?" + b"q" * 9000), b"request line and headers over 8192 bytes"),
    ],
    ids=["count", "one large header", "long URL"],
)
def test_a_head_past_the_limits_is_answered_431_and_closed(limited: RunningServer, head: bytes, problem: bytes) -> None:
    answer, closed = raw_exchange(limited.rest_port, head)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n") and closed, answer[:300]
    assert answer.endswith(b'{"error": "Request headers too large - ' + problem + b'"}'), answer[-200:]
    still_serving(limited)


def test_a_head_that_never_ends_is_cut_at_the_limit_not_buffered(limited: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", limited.rest_port), timeout=10) as connection:
        connection.sendall(b"GET /v2/models/m/ready HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe once the server has closed
            while sent < 50 << 20:
                connection.sendall(b"v" * 65536)
                sent += 65536
        assert sent < 10 << 20


def test_a_head_sent_one_byte_at_a_time_is_answered_408(limited: RunningServer) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited.rest_port), timeout=10) as connection:
        answer = b""
        try:
            for byte in request(*[b"X-%d: 1" % i for i in range(10)]):
                connection.sendall(bytes([byte]))
                time.sleep(0.05)  # 20 bytes a second: the head needs about 6 s
        except OSError:
            pass
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"Request headers not received in time - request line and headers not complete in 1 s" in answer
    assert time.monotonic() - started < 5
    still_serving(limited)


@pytest.mark.parametrize("first", [b"", request()], ids=["fresh", "after a response"])
def test_idle_connections_are_closed(limited: RunningServer, first: bytes) -> None:
    with socket.create_connection(("127.0.0.1", limited.rest_port), timeout=10) as connection:
        connection.sendall(first)
        started = time.monotonic()
        while connection.recv(65536):
            pass
        assert 0.5 < time.monotonic() - started < 5


def test_a_malformed_request_is_answered_400_and_closed(limited: RunningServer) -> None:
    answer, closed = raw_exchange(limited.rest_port, b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and closed, answer
    assert b'{"error": "Malformed HTTP request - ' in answer
    still_serving(limited)


def test_a_grpc_message_past_the_limit_is_refused(limited: RunningServer) -> None:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{limited.port}")
    big = triton.InferInput("x", [1, 4], "FP32")
    big.set_data_from_numpy(np.ones((1, 4), np.float32))
    big._get_tensor().parameters["padding"].string_param = "p" * (2 << 20)  # a 2 MiB message, limit 1 MiB
    with pytest.raises(triton.InferenceServerException) as raised:
        client.infer("m", [big])
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than max (2" in str(raised.value.message()) and "vs. 1048576)" in str(raised.value.message())
    small = triton.InferInput("x", [1, 4], "FP32")
    small.set_data_from_numpy(np.arange(1, 5, dtype=np.float32).reshape(1, 4))
    assert client.infer("m", [small]).as_numpy("y").tolist() == [[4, 6, 8, 10]]
    client.close()


def test_the_limits_are_flags() -> None:
    args = cli.parser().parse_args(
        shlex.split(
            "--model_name m --model_path /tmp --port 9000 --rest_max_body_bytes 1048576 --rest_body_timeout_seconds 2 "
            "--rest_max_header_bytes 4096 --rest_max_headers 10 --rest_header_timeout_seconds 3 "
            "--rest_idle_timeout_seconds 4 --grpc_max_message_bytes 2048 --grpc_max_connection_idle_seconds 5"
        )
    )
    _, settings = cli.build(args)
    assert settings.rest_limits == HttpLimits(1 << 20, 2, 4096, 10, 3, 4)
    assert (settings.grpc_max_message, settings.grpc_max_connection_idle) == (2048, 5)
    defaults = cli.build(cli.parser().parse_args(shlex.split("--model_name m --model_path /tmp --port 9000")))[1]
    assert defaults.rest_limits == HttpLimits() and defaults.grpc_max_message == 1 << 30


def test_a_pipelined_request_after_a_large_body_is_not_mistaken_for_a_large_head(limited: RunningServer) -> None:
    """One read may end a large body (here 100 KB, over the 8 KiB head limit) and begin the next request's head."""
    body = INFER + b" " * 100_000
    first = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with socket.create_connection(("127.0.0.1", limited.rest_port), timeout=10) as connection:
        second = request()
        connection.sendall(first + second[:20])  # the next head begins in the read that ends the body ...
        time.sleep(0.3)
        connection.sendall(second[20:])  # ... and ends in a later one
        answer = b""
        while answer.count(b"HTTP/1.1 ") < 2:
            chunk = connection.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 200 " in answer[12:], answer
    assert b"431" not in answer.split(b"\r\n", 1)[0]
