"""GET /openapi.json (OpenAPI 3 of every REST route) and Swagger UI at /docs; schemathesis drives the running server
from that document: no 5xx, and every response as the document says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from conftest import RunningServer
from openapi_spec_validator import validate

from ovserve import openapi

IMAGE = (np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4) / 48).round(3)
SAMPLES = {"name": "resnet", "version": "1", "label": "stable", "region": "r", "asset": "swagger-ui.css"}
CUDA = re.compile(r"^/v2/cudasharedmemory")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The guide's model and pipeline, metrics on (RunningServer's default) and client shared memory allowed."""
    repository = tmp_path_factory.mktemp("openapi")
    models.save(models.classifier(), repository, "resnet")
    running = RunningServer(models.write_config(repository, models.seed_config()), allow_client_shm=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def document(server: RunningServer) -> dict[str, Any]:
    status, headers, body = server.http("GET", "/openapi.json")
    assert status == 200 and headers["content-type"] == "application/json"
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def test_the_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    validate(document)  # OpenAPI 3.0's own schema, and every $ref resolves
    assert document["openapi"] == openapi.OPENAPI_VERSION
    operations = [(path, method) for path, item in document["paths"].items() for method in item]
    assert len({document["paths"][p][m]["operationId"] for p, m in operations}) == len(operations)


def sample(path: str) -> str:
    """A documented path with its parameters filled in."""
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)


def test_every_route_is_documented_and_every_documented_path_is_served(
    server: RunningServer, document: dict[str, Any]
) -> None:
    assert server.server.app is not None
    table = server.server.app.routes
    documented = {(sample(path), method.upper()) for path, item in document["paths"].items() for method in item}
    for path, method in documented:
        assert any(r.pattern.fullmatch(path) and method in r.methods for r in table), f"{method} {path} is not served"
    for served in table:
        assert any(served.pattern.fullmatch(path) for path, _ in documented), f"{served.pattern.pattern} not documented"


def test_the_servables_are_offered_as_examples_of_names(document: dict[str, Any]) -> None:
    parameters = document["paths"]["/v2/models/{name}/infer"]["post"]["parameters"]
    name = next(p for p in parameters if p["name"] == "name")
    assert sorted(e["value"] for e in name["examples"].values()) == ["resnet", "resnet50DAG"]


def test_swagger_ui_is_served_from_the_package(server: RunningServer) -> None:
    status, headers, page = server.http("GET", "/docs")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in headers["content-security-policy"]  # nothing from elsewhere can run
    linked = re.findall(rb'(?:src|href)="([^"]+)"', page)
    assert linked and all(link.startswith(b"/docs/") for link in linked), linked
    for link in linked:
        status, headers, body = server.http("GET", link.decode())
        assert status == 200 and len(body) > 100, link
    _, headers, bundle = server.http("GET", "/docs/swagger-ui-bundle.js")
    assert (
        headers["content-type"] == "text/javascript"
        and bundle == openapi.swagger_ui_path.joinpath("swagger-ui-bundle.js").read_bytes()
    )
    _, _, script = server.http("GET", "/docs/ovserve-docs.js")
    assert b'url: "/openapi.json"' in script and b"validatorUrl: null" in script  # no online validator
    status, _, body = server.http("GET", "/docs/index.html")
    assert status == 404 and json.loads(body)["error"].startswith("Requested REST resource not found")


def test_cuda_shared_memory_answers_as_documented(server: RunningServer, document: dict[str, Any]) -> None:
    """Not in the schemathesis run below: 501 Not Implemented is the designed answer of a server without GPUs."""
    for path, item in document["paths"].items():
        if CUDA.match(path):
            (method, operation), *_ = item.items()
            assert set(operation["responses"]) == {"501", "4XX"}
            status, _, body = server.http(method.upper(), sample(path))
            assert status == 501 and "CUDA shared memory is not supported" in json.loads(body)["error"]


@pytest.fixture
def region() -> Iterator[tuple[str, str]]:
    """A real POSIX shared memory object of 256 bytes: (region name, key)."""
    name = f"ovserve-openapi-{uuid.uuid4().hex[:8]}"
    path = Path("/dev/shm") / name
    path.write_bytes(bytes(256))
    yield "openapi-region", f"/{name}"
    path.unlink()


def narrowed(document: dict[str, Any], region: tuple[str, str]) -> dict[str, Any]:
    """The server's document with its `name` and `region` parameters limited to what this server has and valid
    examples of request bodies, so that generated requests reach the models, the pipeline and a real region."""
    narrow = json.loads(json.dumps(document))
    values = {"name": ["resnet", "resnet50DAG"], "region": [region[0]]}
    for item in narrow["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in values:
                    parameter["schema"] = {"type": "string", "enum": values[parameter["name"]]}
    examples = {
        "/v2/models/{name}/infer": {
            "inputs": [{"name": "0", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": IMAGE.ravel().tolist()}]
        },
        "/v1/models/{name}:predict": {"inputs": {"0": IMAGE.tolist()}},
        "/v1/models/{name}/versions/{version}:predict": {"instances": IMAGE.tolist()},
        "/v2/systemsharedmemory/region/{region}/register": {"key": region[1], "offset": 0, "byte_size": 192},
    }
    for path, example in examples.items():
        narrow["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"] = example
    return narrow


def test_schemathesis_finds_no_server_error_and_no_response_outside_the_document(
    server: RunningServer, document: dict[str, Any], region: tuple[str, str], tmp_path: Path
) -> None:
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(narrowed(document, region)))
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance"
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", str(schema), "--url", server.url),
        *("--checks", f"{checks},response_schema_conformance", "--exclude-path-regex", CUDA.pattern),
        *("--max-examples", "3", "--seed", "13", "--workers", "1", "--request-timeout", "20"),
        *("--phases", "examples,coverage,fuzzing", "--no-color", "--output-truncate", "false"),
        *("--report", "junit", "--report-dir", str(tmp_path / "report")),
    ]
    environment = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    result = subprocess.run(
        command, capture_output=True, encoding="utf-8", errors="replace", timeout=600, env=environment, cwd=tmp_path
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    summary = re.search(r"(\d+) generated", result.stdout)
    assert summary and int(summary.group(1)) > 300, "schemathesis sent too few requests to mean anything"
    status, _, body = server.http("GET", "/v1/status.json")  # the server still serves after all that
    assert status == 200 and [m["versions"][0]["state"] for m in json.loads(body)["models"]] == ["AVAILABLE"]
