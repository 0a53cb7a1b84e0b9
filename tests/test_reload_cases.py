"""Reloads found wanting by tests/test_reload_fuzz.py, each reduced to its smallest config: the answer is one of the
spec's reload forms and the valid config, restored, serves again."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import models
from conftest import RunningServer
from test_reload_fuzz import VALID, check_reload_answer, check_serving, prepare


def reload_with(server: RunningServer, config: Path, document: object) -> tuple[int, bytes]:
    config.write_text(json.dumps(document))
    status, _, body = server.http("POST", "/v1/config/reload")
    check_reload_answer(status, body)
    return status, body


def restore(server: RunningServer, config: Path) -> None:
    models.write_config(config.parent, VALID)
    status, _, body = server.http("POST", "/v1/config/reload")
    assert status in (200, 201), body
    check_serving(server)


def test_a_library_path_holding_nul_fails_to_open_and_the_rest_serves(tmp_path: Path) -> None:
    """A NUL in a custom node library's base_path made ctypes raise ValueError, which nothing caught: the reload
    answered 500 "Internal server error" with a traceback, half applied (models swapped, pipelines not rebuilt)."""
    config = prepare(tmp_path)
    server = RunningServer(config)
    try:
        document = copy.deepcopy(VALID)
        document["custom_node_library_config_list"][0]["base_path"] = "lib\u0000.so"
        status, body = reload_with(server, config, document)
        # Answered for its first failure (the spec's rule): the library fails to open, so its pipeline cannot take
        # it and keeps serving what it had.
        answer = json.loads(body)
        assert status == 500 and answer["error"] == "Reloading config file failed. Check server logs for more info."
        assert "Custom node library failed to open - argmax: embedded null byte" in answer["detail"]
        status, _, body = server.http("GET", "/v1/config")
        (row,) = json.loads(body)["chain"]["model_version_status"]
        assert row["state"] == "AVAILABLE", row  # the pipeline keeps the node code it had (see test_node_reload)
        restore(server, config)
    finally:
        server.stop()
