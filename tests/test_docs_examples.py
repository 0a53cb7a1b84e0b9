"""The runnable examples of the docs (docs/examples): the quickstart's models and config, and the custom node in C
and in Python, served for real with the answers the docs show."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from conftest import RunningServer

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _infer(server: RunningServer, name: str, shape: list[int], data: list[float]) -> tuple[int, dict]:
    body = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]})
    status, _, answer = server.http("POST", f"/v2/models/{name}/infer", body)
    return status, json.loads(answer) if answer else {}


def test_the_quickstart_serves_what_the_readme_shows(tmp_path: Path) -> None:
    _module(EXAMPLES / "make_models.py").main(tmp_path)
    server = RunningServer(tmp_path / "config.json")
    try:
        status, _, body = server.http("POST", "/v1/models/linear:predict", '{"instances": [[1, 2, 3, 4]]}')
        assert (status, body) == (200, b'{"predictions":[[5.0,10.0,6.0]]}')
        status, answer = _infer(server, "linear_batch", [2, 1, 4], [1, 2, 3, 4, 0, 0, 0, 1])
        assert status == 200
        assert answer["outputs"][0]["shape"] == [2, 1, 3]
        assert answer["outputs"][0]["data"] == [5.0, 10.0, 6.0, 0.5, 1.0, 0.800000011920929]
    finally:
        server.stop()


def test_the_custom_node_example_in_c_and_python(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the custom node example")
    _module(EXAMPLES / "make_models.py").main(tmp_path)
    nodes = Path(__file__).parent / "nodes"
    library = str(tmp_path / "libscales.so")
    build = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I", str(nodes), "-o", library]
    subprocess.run([*build, str(EXAMPLES / "custom_node" / "scales.c")], check=True)
    for name in ("config.json", "scales.py"):
        shutil.copy(EXAMPLES / "custom_node" / name, tmp_path / name)
    server = RunningServer(tmp_path / "config.json")
    try:
        for pipeline in ("scaled_linear", "scaled_linear_py"):
            status, answer = _infer(server, pipeline, [1, 4], [1, 2, 3, 4])
            assert status == 200
            assert answer["outputs"][0]["shape"] == [3, 1, 3]
            assert answer["outputs"][0]["data"] == [5.0, 10.0, 6.0, 10.0, 20.0, 12.0, 15.0, 30.0, 18.0]
            status, answer = _infer(server, pipeline, [1, 5], [1, 2, 3, 4, 5])
            assert status == 400
            assert answer["error"] == (
                "Invalid input shape - Node: rows input: x Invalid shape - Expected: (1,4); Actual: (1,5); branch 0"
            )
    finally:
        server.stop()
