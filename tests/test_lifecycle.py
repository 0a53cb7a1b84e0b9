"""Model lifecycle edge cases: what one model's files or settings can do to the rest of the server, version folder
names, and the version rows GetModelStatus keeps across reloads (docs/configuration.md#versions,
docs/apis.md#version-states, docs/operations.md#reload-order)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import openvino as ov
from conftest import RunningServer, config_states, rpc_error, wait_for_states

from ovserve import versions

Serve = Callable[[dict[str, Any]], RunningServer]
ONES = np.ones((1, 4), np.float32)


def _model(name: str, **settings: Any) -> dict[str, Any]:
    return {"config": {"name": name, "base_path": name, "plugin_config": models.F32, **settings}}


def _rows(server: RunningServer, name: str) -> list[tuple[int, int, str]]:
    """(version, state, error code) rows: error_message without the reason ovserve adds after " - "."""
    return [
        (r.version, r.state, r.status.error_message.partition(" - ")[0])
        for r in server.status(name).model_version_status
    ]


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
    assert status == 500 and b"model good version 1: Layout incompatible with given shape" in body, body
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


def test_retired_versions_stay_listed_across_config_changes(repository: Path, serve: Serve) -> None:
    """END stays listed forever (docs/apis.md#version-states): a config edit that reloads the model keeps the rows of
    its retired versions, and of the versions the new policy leaves out; a retired version is END with OK, even one that
    had failed to load. A new entry that does not parse shows the versions it unloaded as LOADING, UNKNOWN
    (docs/operations.md#reload-order)."""
    for version in (1, 2, 3):
        models.save(models.add_mul(shape=(1, 4)), repository, "m", version=version)
    (repository / "m" / "4").mkdir()  # no model file: fails to load
    server = serve({"model_config_list": [_model("m", model_version_policy={"all": {}})]})
    assert _rows(server, "m") == [(1, 30, "OK"), (2, 30, "OK"), (3, 30, "OK"), (4, 20, "UNKNOWN")]
    (repository / "m" / "4").rmdir()
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert _rows(server, "m") == [(1, 30, "OK"), (2, 30, "OK"), (3, 30, "OK"), (4, 50, "OK")]

    models.write_config(
        repository, {"model_config_list": [_model("m", model_version_policy={"latest": {"num_versions": 2}})]}
    )
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert _rows(server, "m") == [(1, 50, "OK"), (2, 30, "OK"), (3, 30, "OK"), (4, 50, "OK")]

    models.write_config(repository, {"model_config_list": [_model("m", shape="(1,x)")]})  # a value that fails
    assert server.http("POST", "/v1/config/reload")[0] == 500  # MODEL_CONFIG_INVALID
    assert _rows(server, "m") == [(1, 50, "OK"), (2, 20, "UNKNOWN"), (3, 20, "UNKNOWN"), (4, 50, "OK")]
    error = rpc_error(lambda: server.predict("m", {"x": ONES}))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details().startswith("Model with requested version is not found - model m: "), error.details()
    assert "model_config_list[0].config.shape" in error.details()

    models.write_config(repository, {"model_config_list": [_model("m")]})
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert _rows(server, "m") == [(1, 50, "OK"), (2, 50, "OK"), (3, 30, "OK"), (4, 50, "OK")]
    assert config_states(server) == {"m": ["END", "END", "AVAILABLE", "END"]}


def test_a_pipeline_takes_the_name_of_a_removed_model_and_back(repository: Path, serve: Serve) -> None:
    """A model renamed, a pipeline in its place under the old name (and back): the name serves what the config
    says now, and /v1/config lists that one."""
    models.save(models.classifier(), repository, "resnet")
    server = serve({"model_config_list": [_model("resnet")]})
    images = np.random.default_rng(1).random((2, 1, 3, 4, 4), dtype=np.float32)
    expected = models.reference_classifier(images)
    document = models.seed_config(model="resnet_v2", pipeline="resnet")
    document["model_config_list"][0]["config"]["base_path"] = "resnet"
    models.write_config(repository, document)
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert config_states(server) == {"resnet": ["AVAILABLE"], "resnet_v2": ["AVAILABLE"]}
    np.testing.assert_allclose(server.predict("resnet", {"0": images})["1463"], expected, rtol=1e-5, atol=1e-6)

    models.write_config(repository, {"model_config_list": [_model("resnet")]})
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert config_states(server) == {"resnet": ["AVAILABLE"], "resnet_v2": ["END"]}
    np.testing.assert_allclose(server.predict("resnet", {"0": images[0]})["1463"], expected[0], rtol=1e-5, atol=1e-6)


def test_a_config_that_does_not_validate_answers_412_whatever_its_text(repository: Path, serve: Serve) -> None:
    """Only a file that cannot be read answers 500 (docs/apis.md#config-api); a schema error is 412 even when the value
    it quotes reads like the other case."""
    models.save(models.add_mul(shape=(1, 4)), repository, "m")
    server = serve({"model_config_list": [_model("m")]})
    models.write_config(repository, {"model_config_list": [_model("m", nireq="cannot open")]})
    status, _, body = server.http("POST", "/v1/config/reload")
    assert status == 412, body
    assert body.decode().startswith('{\n\t"error": "Reloading config file failed. Check server logs')
    assert config_states(server) == {"m": ["AVAILABLE"]}


def _gauge(server: RunningServer, family: str, name: str, version: int = 1) -> float:
    _, _, body = server.http("GET", "/metrics")
    wanted = f'{family}{{name="{name}",version="{version}"}} '
    values = [line[len(wanted) :] for line in body.decode().splitlines() if line.startswith(wanted)]
    assert len(values) == 1, f"no {wanted.strip()} in /metrics"
    return float(values[0])


def test_a_reloaded_version_keeps_its_gauges(repository: Path, serve: Serve) -> None:
    """A config edit loads the version again and retires the old one: the old one going must not zero the series
    (name, version) that the new one now reports."""
    models.save(models.add_mul(shape=(1, 4)), repository, "m")
    streams = {**models.F32, "NUM_STREAMS": 2}
    server = serve({"model_config_list": [_model("m", plugin_config=streams)]})
    assert _gauge(server, "ovms_streams", "m") == 2
    models.write_config(repository, {"model_config_list": [_model("m", plugin_config=streams, nireq=3)]})
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert _gauge(server, "ovms_streams", "m") == 2
    models.write_config(repository, {"model_config_list": []})
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert _gauge(server, "ovms_streams", "m") == 0


def test_a_model_whose_base_path_cannot_be_listed_loads_once_it_can(repository: Path, serve: Serve) -> None:
    """A repository missing at start (a volume not mounted yet, an S3 endpoint not up) fails the model alone; once
    the base path is there, the next rescan (POST /v1/config/reload, or the watcher) loads it, as OVMS's reload
    after a failed load does (docs/apis.md#config-api). A model whose config values are wrong stays failed until the
    config changes."""
    server = serve({"model_config_list": [_model("later"), _model("wrong", shape="(1,x)")]})
    assert _rows(server, "later") == _rows(server, "wrong") == [(0, 20, "UNKNOWN")]  # version 0: the model failed
    assert server.http("POST", "/v1/config/reload")[0] == 200  # still missing: nothing changed
    models.save(models.add_mul(shape=(1, 4)), repository, "later")
    models.save(models.add_mul(shape=(1, 4)), repository, "wrong")
    status, _, body = server.http("POST", "/v1/config/reload")
    assert status == 201, body
    assert config_states(server) == {"later": ["AVAILABLE"], "wrong": ["LOADING"]}
    np.testing.assert_array_equal(server.predict("later", {"x": ONES})["y"], (ONES + 1) * 2)
    assert server.http("POST", "/v1/config/reload")[0] == 200

    models.write_config(repository, {"model_config_list": [_model("later", base_path="moved")]})  # not there yet
    assert server.http("POST", "/v1/config/reload")[0] == 400  # applied, and answered PATH_INVALID
    assert _rows(server, "later") == [(1, 20, "UNKNOWN")]  # what it served, unloaded by the failed entry
    models.save(models.add_mul(shape=(1, 4), add=2.0), repository, "moved")
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert _rows(server, "later") == [(1, 30, "OK")]
    np.testing.assert_array_equal(server.predict("later", {"x": ONES})["y"], (ONES + 2) * 2)


def test_a_reload_whose_models_fail_answers_the_first_error_and_applies_the_rest(
    repository: Path, serve: Serve
) -> None:
    """A changed config.json is applied whole, but a model it (re)loads that fails makes the reload answer
    'Reloading config file failed' with the HTTP status of the first error (docs/apis.md#config-api,
    docs/operations.md#reload-order): PATH_INVALID is 400, a status docs/apis.md#status-codes does not list is 500. The
    same file again answers the same while that model still fails."""
    models.save(models.add_mul(shape=(1, 4)), repository, "m")
    models.save(models.add_mul(shape=(1, 4)), repository, "bad")
    server = serve({"model_config_list": [_model("m")]})
    models.write_config(repository, {"model_config_list": [_model("m", nireq=2), _model("nowhere")]})
    status, _, body = server.http("POST", "/v1/config/reload")
    assert status == 400, body
    answer = json.loads(body)
    assert answer["error"] == "Reloading config file failed. Check server logs for more info.", answer  # OVMS's
    text = answer["detail"]
    assert text == "model nowhere: The provided base path is invalid or doesn't exists: nowhere", text
    assert config_states(server) == {"m": ["AVAILABLE"], "nowhere": ["LOADING"]}
    assert server.server.manager.models["m"].versions[1].servable.nireq == 2  # the rest was applied
    assert server.http("POST", "/v1/config/reload")[:3:2] == (status, body)

    models.write_config(repository, {"model_config_list": [_model("m"), _model("bad", layout="NCHW")]})
    status, _, body = server.http("POST", "/v1/config/reload")
    assert status == 500, body
    assert "model bad version 1: Layout incompatible with given shape" in json.loads(body)["detail"]
    assert config_states(server) == {"bad": ["LOADING"], "m": ["AVAILABLE"], "nowhere": []}


def test_a_failed_load_applied_by_the_watcher_is_still_the_answer_of_a_reload(repository: Path) -> None:
    """POST /v1/config/reload while the watcher runs: when the watcher applied the changed file first and a model of
    it failed, the POST still answers that failure (the last load failed, docs/apis.md#config-api), until the model
    loads."""
    models.save(models.add_mul(shape=(1, 4)), repository, "m")
    server = RunningServer(models.write_config(repository, {"model_config_list": [_model("m")]}), poll_seconds=0.05)
    try:
        models.write_config(repository, {"model_config_list": [_model("m"), _model("nowhere")]})
        wait_for_states(server, {"m": ["AVAILABLE"], "nowhere": ["LOADING"]})  # the watcher applied it
        status, _, body = server.http("POST", "/v1/config/reload")
        assert status == 400 and b"model nowhere: The provided base path is invalid" in body, body
        models.save(models.add_mul(shape=(1, 4)), repository, "nowhere")
        wait_for_states(server, {"m": ["AVAILABLE"], "nowhere": ["AVAILABLE"]})
        assert server.http("POST", "/v1/config/reload")[0] == 200
    finally:
        server.stop()


def test_model_file_priority_needs_both_files_of_a_two_file_format(tmp_path: Path) -> None:
    """IR needs .xml and .bin, Paddle .pdmodel and .pdiparams (docs/configuration.md#versions): half of one is passed
    over for the next format, as OVMS does."""
    for name in ("model.xml", "model.pdmodel", "model.tflite"):
        (tmp_path / name).write_bytes(b"")
    assert versions.model_file(tmp_path).name == "model.tflite"
    (tmp_path / "model.pdiparams").write_bytes(b"")
    assert versions.model_file(tmp_path).name == "model.pdmodel"
    (tmp_path / "model.bin").write_bytes(b"")
    assert versions.model_file(tmp_path).name == "model.xml"


def test_base_paths_and_values_that_cannot_be_used_are_config_errors(repository: Path, serve: Serve) -> None:
    """A base path naming the home of a user this system does not know fails its model alone; a node's params that
    are a number reject the file (412), as any schema error: neither stops the server or answers 500."""
    models.save(models.add_mul(shape=(1, 4)), repository, "good")
    document = {"model_config_list": [_model("good"), _model("tilde", base_path="~no-such-user-here/m")]}
    server = serve(document)
    assert config_states(server) == {"good": ["AVAILABLE"], "tilde": ["LOADING"]}
    error = rpc_error(lambda: server.predict("tilde", {"x": ONES}))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert '"~no-such-user-here/m": Could not determine home directory' in (error.details() or ""), error.details()
    np.testing.assert_array_equal(server.predict("good", {"x": ONES})["y"], (ONES + 1) * 2)

    node = {"name": "n", "type": "DL model", "model_name": "good", "inputs": [], "outputs": [], "params": 5}
    document["pipeline_config_list"] = [{"name": "p", "inputs": ["x"], "outputs": [], "nodes": [node]}]
    models.write_config(repository, document)
    status, _, body = server.http("POST", "/v1/config/reload")
    assert status == 412 and b"pipeline_config_list[0].nodes[0].params: expected an object, got 5" in body, body


def test_a_model_used_by_a_pipeline_is_not_turned_to_auto(repository: Path, serve: Serve) -> None:
    """Spec docs/operations.md#reload-order (5): a config edit asking batch_size "auto" of a model a pipeline uses is
    not applied to it (the pipeline would fail validation and stop serving); once no pipeline uses the model, it is."""
    models.save(models.classifier(), repository, "resnet")
    server = serve(models.seed_config())
    images = np.random.default_rng(1).random((2, 1, 3, 4, 4), dtype=np.float32)
    expected = models.reference_classifier(images)
    models.write_config(repository, models.seed_config(batch_size="auto"))
    server.http("POST", "/v1/config/reload")
    assert config_states(server) == {"resnet": ["AVAILABLE"], "resnet50DAG": ["AVAILABLE"]}
    np.testing.assert_allclose(server.predict("resnet50DAG", {"0": images})["1463"], expected, rtol=1e-5, atol=1e-6)
    assert server.server.manager.models["resnet"].config.batch_size is None  # not reconfigured
    assert server.http("POST", "/v1/config/reload")[0] == 200  # still asked, still not applied: nothing changes

    document = models.seed_config(batch_size="auto")
    document["pipeline_config_list"] = []
    models.write_config(repository, document)
    assert server.http("POST", "/v1/config/reload")[0] == 201
    assert server.server.manager.models["resnet"].config.batch_size == "auto"
    np.testing.assert_allclose(server.predict("resnet", {"0": images[:, 0]})["1463"], expected[:, 0], rtol=1e-5)
