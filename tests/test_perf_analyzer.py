"""Triton's perf_analyzer (a C++ client) drives ovserve over KServe gRPC and REST: `make test-perf-analyzer`."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import models
import pytest
from conftest import RunningServer

pytestmark = pytest.mark.perf_analyzer


def _perf_analyzer(*args: str) -> str:
    binary = os.environ.get("PERF_ANALYZER")
    if not binary:
        pytest.skip("set PERF_ANALYZER to the perf_analyzer wrapper (`make test-perf-analyzer` does)")
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_analyzer_measures_the_demultiplexing_pipeline(seed_server: RunningServer, protocol: str) -> None:
    port = seed_server.port if protocol == "grpc" else seed_server.rest_port
    output = _perf_analyzer(
        "-m", "resnet50DAG", "-u", f"127.0.0.1:{port}", "-i", protocol, "--shape", "0:4,1,3,4,4",
        "--concurrency-range", "1:4:3", "--measurement-interval", "1000", "--stability-percentage", "100",
    )  # fmt: skip
    rates = [float(x) for x in re.findall(r"Concurrency: \d+, throughput: ([\d.]+) infer/sec", output)]
    assert len(rates) == 2 and all(rate > 0 for rate in rates), output
    _, _, body = seed_server.http("GET", "/metrics")
    counted = re.search(
        rf'ovms_requests_success{{api="KServe",interface="{"gRPC" if protocol == "grpc" else "REST"}",'
        r'method="ModelInfer",name="resnet50DAG",version="1"} (\d+)',
        body.decode(),
    )
    assert counted is not None and int(counted.group(1)) > 0


@pytest.fixture
def shm_server(repository: Path) -> Iterator[RunningServer]:
    """The seed scenario on a server that lets clients use system shared memory."""
    models.save(models.classifier(), repository, "resnet")
    server = RunningServer(models.write_config(repository, models.seed_config()), allow_client_shm=True)
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_analyzer_through_system_shared_memory(shm_server: RunningServer, protocol: str) -> None:
    """perf_analyzer registers its regions, sends every input and receives every output through them, and
    unregisters them when done."""
    port = shm_server.port if protocol == "grpc" else shm_server.rest_port
    output = _perf_analyzer(
        "-m", "resnet50DAG", "-u", f"127.0.0.1:{port}", "-i", protocol, "--shape", "0:4,1,3,4,4",
        "--shared-memory", "system", "--output-shared-memory-size", "4096",
        "--concurrency-range", "2", "--measurement-interval", "1000", "--stability-percentage", "100",
    )  # fmt: skip
    rates = [float(x) for x in re.findall(r"Concurrency: \d+, throughput: ([\d.]+) infer/sec", output)]
    assert len(rates) == 1 and rates[0] > 0, output
    text = shm_server.http("GET", "/metrics")[2].decode()
    interface = "gRPC" if protocol == "grpc" else "REST"
    labels = f'api="KServe",interface="{interface}",method="ModelInfer",name="resnet50DAG",version="1"'
    succeeded, failed = (re.search(re.escape(f"ovms_requests_{kind}{{{labels}}} ") + r"(\d+)", text)
                         for kind in ("success", "fail"))  # fmt: skip
    assert succeeded is not None and int(succeeded.group(1)) > 0, text
    assert failed is None or int(failed.group(1)) == 0, text
    assert shm_server.http("GET", "/v2/systemsharedmemory/status")[2] == b"[]"  # it unregistered them all
