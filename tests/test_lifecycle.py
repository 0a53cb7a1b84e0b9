"""Model lifecycle edge cases: what one model's files or settings can do to the rest of the server, version folder
names, and the version rows GetModelStatus keeps across reloads (spec §2.2, §2.4, §1.9)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import models
import numpy as np
import openvino as ov
from conftest import RunningServer, config_states

Serve = Callable[[dict[str, Any]], RunningServer]
ONES = np.ones((1, 4), np.float32)


def _model(name: str, **settings: Any) -> dict[str, Any]:
    return {"config": {"name": name, "base_path": name, "plugin_config": models.F32, **settings}}


def _rows(server: RunningServer, name: str) -> list[tuple[int, int, str]]:
    return [(r.version, r.state, r.status.error_message) for r in server.status(name).model_version_status]


def test_a_layout_the_model_cannot_take_fails_that_version_alone(repository: Path, serve: Serve) -> None:
    """OpenVINO refuses a layout of another rank while building the pre-processing: the version fails to load
    (LOADING, UNKNOWN) and the server starts, serving the other models; a reload to that layout does the same."""
    models.save(models.add_mul(shape=(1, 4)), repository, "bad")
    models.save(models.add_mul(shape=(1, 4)), repository, "good")
    server = serve({"model_config_list": [_model("bad", layout="NCHW"), _model("good")]})
    assert _rows(server, "bad") == [(1, 20, "UNKNOWN")]
    np.testing.assert_array_equal(server.predict("good", {"x": ONES})["y"], (ONES + 1) * 2)
    models.write_config(repository, {"model_config_list": [_model("bad"), _model("good", layout="NCHW")]})
    status, _, body = server.http("POST", "/v1/config/reload")
    assert status == 201, body
    assert config_states(server) == {"bad": ["AVAILABLE"], "good": ["LOADING"]}
    np.testing.assert_array_equal(server.predict("bad", {"x": ONES})["y"], (ONES + 1) * 2)


def test_only_plain_positive_integers_name_versions(repository: Path, serve: Serve) -> None:
    """Folders named by other digits (a superscript, a leading zero) or by a number beyond int64 (GetModelStatus's
    version field) are not versions: the server starts, and status and /v1/config list the real versions only."""
    models.save(models.add_mul(shape=(1, 4)), repository, "m", version=2)
    for name in ("²", "01", "007", str(2**63), "99999999999999999999", "0"):
        ov.save_model(models.add_mul(shape=(1, 4), add=5.0), str(repository / "m" / name / "model.xml"))
    server = serve({"model_config_list": [_model("m", model_version_policy={"all": {}})]})
    assert _rows(server, "m") == [(2, 30, "OK")]
    assert config_states(server) == {"m": ["AVAILABLE"]}
    np.testing.assert_array_equal(server.predict("m", {"x": ONES})["y"], (ONES + 1) * 2)
