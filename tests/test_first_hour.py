"""A new user's rough edges (issue 13): busy ports, model paths that are not a model repository, /metrics when off."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import models
import pytest
from conftest import free_port

ROOT = Path(__file__).parent.parent


def ovserve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ovserve", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
def one_model(tmp_path: Path) -> Path:
    models.save(models.add_mul(), tmp_path, "m")
    return models.write_config(tmp_path, {"model_config_list": [{"config": {"name": "m", "base_path": "m"}}]})


@pytest.mark.parametrize("door", ["--port", "--rest_port"])
def test_a_busy_port_is_one_error_line(one_model: Path, door: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--rest_port" if door == "--port" else "--port"
        result = ovserve("--config_path", str(one_model), door, str(port), other, str(free_port()))
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    name = "gRPC" if door == "--port" else "REST"
    assert result.returncode == 1
    assert errors == [f"ovserve: error: cannot bind the {name} port 0.0.0.0:{port}: Address already in use (while "
                      f"attempting to bind on address ('0.0.0.0', {port}))"], result.stderr  # fmt: skip
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr


def single_model(path: Path) -> str:
    """The log line that says why `--model_path path` did not load."""
    result = ovserve("--model_name", "m", "--model_path", str(path), "--port", "0", "--rest_port", str(free_port()))
    assert result.returncode == 1 and "Couldn't start model manager: model m did not load" in result.stderr
    return next(line for line in result.stderr.splitlines() if "[ovserve.manager] model m: " in line)


def test_a_model_path_that_is_not_a_repository_shows_the_layout(tmp_path: Path) -> None:
    base = models.save(models.add_mul(), tmp_path, "m")
    flat = tmp_path / "flat"
    shutil.copytree(base / "1", flat)
    (tmp_path / "empty").mkdir()
    lines = {name: single_model(path).split("[ovserve.manager] model m: ")[1] for name, path in {
        "version folder": base / "1", "model file": base / "1" / "model.xml", "flat": flat,
        "flat file": flat / "model.xml", "empty": tmp_path / "empty",
    }.items()}  # fmt: skip
    layout = "expected numbered version folders holding the model: {0}/1/model.xml with {0}/1/model.bin, or " \
             "{0}/1/model.onnx"  # fmt: skip
    assert lines == {
        "version folder": f"no version directories in {base}/1; {base}/1 looks like a version folder itself: the base "
                          f"path is {base}",
        "model file": f"The provided base path is invalid or doesn't exists: {base}/1/model.xml (a model file: the "
                      f"base path is the folder above its version folder, {base})",
        "flat": f"no version directories in {flat}; its model files must move into a version folder: "
                + layout.format(flat),
        "flat file": f"The provided base path is invalid or doesn't exists: {flat}/model.xml (a model file: it must be "
                     f"in a version folder; {layout.format(flat)})",
        "empty": f"no version directories in {tmp_path}/empty; {layout.format(tmp_path / 'empty')}",
    }  # fmt: skip


def get(port: int, method: str, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_metrics_when_off_say_how_to_turn_them_on(one_model: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ovserve", "--config_path", str(one_model), "--rest_port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(port, "GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "the server did not become ready"
            time.sleep(0.1)
        hint = (
            'metrics are not enabled: start ovserve with --metrics_enable, or set "monitoring": {"metrics": '
            '{"enable": true}} in config.json'
        )
        for method in ("GET", "POST"):
            status, body = get(port, method, "/metrics")
            assert status == 400  # OVMS's status
            assert json.loads(body) == {"error": f"Invalid request URL - /metrics: {hint}"}
    finally:
        process.terminate()
        process.wait(30)
