"""The `ovserve` command as a user runs it: flags, exit codes, a real start, metadata client, clean stop."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import models
from conftest import free_port

PYTHON = sys.executable
BIN = Path(sys.executable).parent


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "ovserve", *args], capture_output=True, text=True, timeout=timeout)


def test_bad_flags_print_what_is_wrong(tmp_path: Path) -> None:
    result = run("--port", "70000", "--config_path", "x")
    assert result.returncode == 2 and "70000 is not a port number" in result.stderr
    result = run("--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
    result = run("--config_path", "c.json", "--model_name", "m", "--model_path", "p")
    assert result.returncode == 2 and "Use either config_path or model_path with model_name" in result.stderr
    result = run("--config_path", "c.json", "--nireq", "2")
    assert result.returncode == 2 and "Model parameters in CLI are exclusive with the config file" in result.stderr
    result = run("--model_name", "m", "--model_path", "p", "--plugin_config", "{oops")
    assert result.returncode == 2 and "--plugin_config: not valid JSON" in result.stderr
    result = run("--model_name", "m", "--model_path", str(tmp_path), "--port", "1", "--shape", "[1,2]")
    assert result.returncode == 2 and 'shape "[1,2]" must look like' in result.stderr
    (tmp_path / "ok.json").write_text('{"model_config_list": []}')
    result = run("--config_path", str(tmp_path / "ok.json"), "--port", "1", "--metrics_enable")
    assert result.returncode == 2 and "Missing rest_port parameter in server CLI" in result.stderr
    result = run("--config_path", str(tmp_path / "ok.json"), "--rest_port", "2", "--metrics_list", "ovms_streams")
    assert result.returncode == 2 and "--metrics_list requires --metrics_enable" in result.stderr
    (tmp_path / "m.json").write_text('{"model_config_list": [], "monitoring": {"metrics": {"enable": true}}}')
    result = run("--config_path", str(tmp_path / "m.json"), "--rest_port", "2", "--metrics_enable")
    assert result.returncode == 2 and "Configuration file not found or cannot open" in result.stderr
    (tmp_path / "m.json").write_text('{"model_config_list": [], "monitoring": {"metrics": {"enable": true, '
                                     '"metrics_list": ["ovms_nope"]}}}')  # fmt: skip
    result = run("--config_path", str(tmp_path / "m.json"), "--rest_port", "2")
    assert result.returncode == 2 and "Invalid name in metrics_list: ovms_nope" in result.stderr
    (tmp_path / "config.json").write_text('{"model_config_list": [{"config": {"name": 3}}]}')
    result = run("--config_path", str(tmp_path / "config.json"), "--port", "1")
    assert result.returncode == 2 and "model_config_list[0].config.name: expected a string, got 3" in result.stderr


def test_single_model_mode_fails_when_the_model_does_not_load(tmp_path: Path) -> None:
    result = run("--model_name", "m", "--model_path", str(tmp_path / "none"), "--port", str(free_port()))
    assert result.returncode == 1 and "Couldn't start model manager" in result.stderr


def test_serve_a_config_then_stop_on_sigterm(tmp_path: Path) -> None:
    models.save(models.classifier(), tmp_path, "resnet")
    config = models.write_config(tmp_path, models.seed_config())
    port, rest_port = free_port(), free_port()
    server = subprocess.Popen(
        [PYTHON, "-m", "ovserve", "--config_path", str(config), "--port", str(port),
         "--grpc_bind_address", "127.0.0.1", "--rest_port", str(rest_port), "--rest_bind_address", "127.0.0.1",
         "--metrics_enable", "--metrics_list", "ovms_streams,ovms_infer_req_queue_size", "--allowed_origins",
         "https://example.org"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        metadata = [str(BIN / "ovserve-metadata"), "--grpc_port", str(port), "--model_name", "resnet50DAG"]
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(metadata, capture_output=True, text=True, timeout=30)
            if result.returncode == 0 or time.monotonic() > deadline or server.poll() is not None:
                break
            time.sleep(0.2)
        assert result.returncode == 0, result.stderr
        assert "\tInput name: 0; shape: [-1, 1, 3, 4, 4]; dtype: DT_FLOAT" in result.stdout
        assert "\tOutput name: 1463; shape: [-1, 1, 10]; dtype: DT_FLOAT" in result.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/metrics", timeout=30) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "https://example.org"
            text = response.read().decode()
        assert "# TYPE ovms_streams gauge" in text and 'ovms_infer_req_queue_size{name="resnet",version="1"}' in text
        assert "ovms_requests_success" not in text  # exactly the listed families
    finally:
        os.kill(server.pid, signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "server stopped" in output


def test_predict_client_against_a_real_server(tmp_path: Path) -> None:
    """The guide's client command line (program name changed) through the demultiplexing pipeline."""
    import numpy as np
    from conftest import RunningServer

    models.save(models.classifier(), tmp_path, "resnet")
    server = RunningServer(models.write_config(tmp_path, models.seed_config()))
    try:
        images = np.random.default_rng(1).uniform(0, 255, (5, 3, 4, 4)).astype(np.float32)
        images[0, 0, 0, 0], images[1, 0, 0, 0] = 0, 255  # the client rescales by the global min and max
        labels = models.reference_classifier(images[:, None]).reshape(5, 10).argmax(axis=1)
        np.save(tmp_path / "imgs.npy", images)
        np.save(tmp_path / "lbs.npy", labels)
        command = [
            str(BIN / "ovserve-predict"), "--grpc_port", str(server.port), "--images_numpy_path",
            str(tmp_path / "imgs.npy"), "--labels_numpy_path", str(tmp_path / "lbs.npy"), "--input_name", "0",
            "--output_name", "1463", "--model_name", "resnet50DAG", "--dag-batch-size-auto",
            "--transpose_input", "False", "--batchsize", "3",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert "Iterations: 1" in result.stdout and result.stdout.count("; Correct match.") == 3
    assert "Classification accuracy: 100.00" in result.stdout


def test_freed_memory_is_kept_unless_the_user_tuned_malloc() -> None:
    """glibc's malloc options are set for the server process, except over the user's own MALLOC_* settings."""
    from ovserve.cli import keep_freed_memory

    assert not keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert not keep_freed_memory({"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert not keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"})
    if platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory({})
