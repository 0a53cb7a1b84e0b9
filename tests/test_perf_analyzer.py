"""Triton's perf_analyzer (a C++ client) drives ovserve over KServe gRPC and REST: `make test-perf-analyzer`."""

from __future__ import annotations

import os
import re
import subprocess

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
