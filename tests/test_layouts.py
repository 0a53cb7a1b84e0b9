"""Layout settings (spec §7.1, §7.3) on a real server: a layout OpenVINO cannot take fails that model alone, the
layout stored in a model counts where none is configured, and a batch size needs an N to go to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import models
import pytest
from conftest import RunningServer

Serve = Callable[[dict[str, Any]], RunningServer]


def _states(server: RunningServer, name: str) -> list[tuple[int, int, str]]:
    return [(r.version, r.state, r.status.error_message) for r in server.status(name).model_version_status]


LOADING, AVAILABLE = 20, 30


def test_a_layout_openvino_cannot_take_fails_only_that_model(
    repository: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed layouts are config problems of their model; a layout of another rank than its tensor fails the
    version (LOADING, UNKNOWN) with OVMS's message; the other models serve."""
    caplog.set_level(logging.ERROR, logger="ovserve.manager")
    models.save(models.add_mul(shape=(3, 4)), repository, "am")
    bad = {"twice": "NN", "dots": "N..C", "rank": "NCHW", "output_rank": {"y": "NCHW"}}
    server = serve(
        {
            "model_config_list": [{"config": {"name": name, "base_path": "am", "layout": layout}}
                                  for name, layout in bad.items()]
            + [{"config": {"name": "ok", "base_path": "am"}}]
        }
    )  # fmt: skip
    assert _states(server, "ok") == [(1, AVAILABLE, "OK")]
    assert server.status("twice").model_version_status == []  # never loaded: its config is invalid
    assert server.status("dots").model_version_status == []
    assert 'layout "NN": each of N C H W D at most once' in caplog.text
    assert 'layout "N..C": dots only as one "..."' in caplog.text
    for name in ("rank", "output_rank"):
        assert _states(server, name) == [(1, LOADING, "UNKNOWN")]
    assert "model rank version 1 failed to load: Layout incompatible with given shape: x NCHW:" in caplog.text
    assert "model output_rank version 1 failed to load: Layout incompatible with given shape: y NCHW:" in caplog.text
