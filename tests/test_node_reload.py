"""Python custom node files edited while serving: a reload (POST /v1/config/reload or the file watcher) imports the
file again; a request running finishes on the old code; a broken edit keeps the old code serving and is reported; a
module named by its import path is not imported again, and says so."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from conftest import RunningServer

NODE = """
import os, time

FACTOR = {factor}  # a module global: the code running reads the module it was defined in


class Scale:
    def __init__(self, params):
        self.gate, self.started = params["gate"], params["started"]

    def inputs_info(self):
        return {{"x": ((1, 4), "float32")}}

    def outputs_info(self):
        return {{"y": ((1, 4), "float32")}}

    def execute(self, inputs):
        open(self.started, "w").close()
        while os.path.exists(self.gate):  # held while the gate file exists
            time.sleep(0.01)
        return {{"y": inputs["x"] * FACTOR}}
"""
BAD_METADATA = NODE.replace('return {{"y": ((1, 4), "float32")}}', 'return {{"y": ((1, 4), "float32")}}[0]')
X = np.ones((1, 4), np.float32)


def _config(repository: Path, location: str) -> Path:
    node = {
        "name": "scale",
        "type": "custom",
        "library_name": "scaler",
        "params": {"gate": str(repository / "gate"), "started": str(repository / "started")},
        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
        "outputs": [{"data_item": "y", "alias": "y"}],
    }
    return models.write_config(
        repository,
        {
            "model_config_list": [],
            "custom_node_library_config_list": [{"name": "scaler", "base_path": location}],
            "pipeline_config_list": [
                {
                    "name": "scaled",
                    "inputs": ["x"],
                    "nodes": [node],
                    "outputs": [{"y": {"node_name": "scale", "data_item": "y"}}],
                }
            ],
        },
    )


def _factor(server: RunningServer) -> float:
    return float(server.predict("scaled", {"x": X})["y"][0, 0])


def _reload(server: RunningServer) -> tuple[int, dict[str, Any]]:
    status, _, body = server.http("POST", "/v1/config/reload")
    return status, json.loads(body)


def test_an_edited_node_file_serves_after_reload_and_a_broken_edit_keeps_the_old_code(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = repository / "scale.py"
    source.write_text(NODE.format(factor=2))
    server = RunningServer(_config(repository, "scale.py:Scale"))
    try:
        assert _factor(server) == 2
        # A request inside the node while the file changes and the server reloads finishes on the old code.
        (repository / "gate").touch()
        (repository / "started").unlink()  # left by the request before
        running: list[float] = []
        request = threading.Thread(target=lambda: running.append(_factor(server)))
        request.start()
        while not (repository / "started").exists():
            time.sleep(0.01)
        source.write_text(NODE.format(factor=3))
        assert _reload(server)[0] == 201  # changed
        (repository / "gate").unlink()
        request.join(30)
        assert running == [2]
        assert _factor(server) == 3

        caplog.clear()
        source.write_text(NODE.format(factor=4).replace("def execute(self, inputs):", "def execute(self, inputs)"))
        for _ in range(2):  # reported by every reload while the file stays so, logged once
            status, body = _reload(server)
            assert status == 500
            assert "Custom node library failed to open - scaler" in body["detail"]
            assert "SyntaxError" in body["detail"]
            assert _factor(server) == 3
        logged = [r.getMessage() for r in caplog.records if "changed code cannot be used" in r.getMessage()]
        assert len(logged) == 1 and "its pipelines keep serving the code loaded before" in logged[0]

        source.write_text(BAD_METADATA.format(factor=5))  # imports, but the pipeline fails validation with it
        status, body = _reload(server)
        assert status == 500 and "pipeline scaled" in body["detail"] and "outputs_info" in body["detail"]
        assert _factor(server) == 3
        status, _, text = server.http("POST", "/v2/repository/index")
        assert (status, json.loads(text)) == (200, [{"name": "scaled", "version": "1", "state": "READY", "reason": ""}])

        source.write_text(NODE.format(factor=6))
        assert _reload(server)[0] == 201
        assert _factor(server) == 6
        assert _reload(server)[0] == 200  # nothing changed since
    finally:
        server.stop()


def test_the_file_watcher_takes_an_edited_node_file(repository: Path) -> None:
    source = repository / "scale.py"
    source.write_text(NODE.format(factor=2))
    server = RunningServer(_config(repository, "scale.py:Scale"), poll_seconds=0.1)
    try:
        assert _factor(server) == 2
        source.write_text(NODE.format(factor=7))
        deadline = time.monotonic() + 30
        while _factor(server) != 7:
            assert time.monotonic() < deadline, "the watcher did not take the edited file"
            time.sleep(0.05)
    finally:
        server.stop()


def test_a_node_module_named_by_import_path_is_not_imported_again_and_says_so(
    repository: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    package = repository / "site"
    package.mkdir()
    name = f"scale_module_{repository.name.replace('-', '_')}"  # a module name no other test imports
    (package / f"{name}.py").write_text(NODE.format(factor=2))
    monkeypatch.syspath_prepend(str(package))
    server = RunningServer(_config(repository, f"{name}:Scale"))
    try:
        assert _factor(server) == 2
        (package / f"{name}.py").write_text(NODE.format(factor=3))
        caplog.set_level(logging.INFO)
        assert _reload(server)[0] == 200  # nothing changed: a restart takes the new code
        assert _factor(server) == 2
        warned = [r for r in caplog.records if "not imported again while serving" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert (
            "restart ovserve to use the new code (or name the file itself, path/to/file.py:Scale"
            in warned[0].getMessage()
        )
        assert _reload(server)[0] == 200
        assert len([r for r in caplog.records if "not imported again" in r.getMessage()]) == 1  # once per change
    finally:
        server.stop()
