"""POST /v1/config/reload: models and pipelines added, changed and removed while requests keep succeeding."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import models
import numpy as np
from conftest import RunningServer, rpc_error


def _states(server: RunningServer) -> dict[str, list[str]]:
    status, _, body = server.http("GET", "/v1/config")
    assert status == 200
    return {name: [v["state"] for v in s["model_version_status"]] for name, s in json.loads(body).items()}


def test_reload_adds_changes_and_retires_without_failed_requests(repository: Path, seed_server: RunningServer) -> None:
    models.save(models.add_mul(), repository, "second")
    images = np.random.default_rng(1).random((2, 1, 3, 4, 4), dtype=np.float32)
    expected = models.reference_classifier(images)  # (2, 1, 10)
    failures: list[BaseException] = []
    answered = [0]
    stop = threading.Event()

    def client() -> None:  # requests to the model that is reloaded, all through the reloads
        while not stop.is_set():
            try:
                out = seed_server.predict("resnet", {"0": images[0]})["1463"]
                np.testing.assert_allclose(out, expected[0], rtol=1e-5, atol=1e-6)
                answered[0] += 1
            except BaseException as e:  # any failure is reported by the test
                failures.append(e)
                return

    worker = threading.Thread(target=client)
    worker.start()
    try:
        status, _, body = seed_server.http("POST", "/v1/config/reload")
        assert status == 200  # nothing changed yet

        document = models.seed_config(nireq=3)  # a changed model config: the model reloads
        document["model_config_list"].append({"config": {"name": "second", "base_path": "second"}})
        models.write_config(repository, document)
        status, _, body = seed_server.http("POST", "/v1/config/reload")
        assert status == 201, body
        assert _states(seed_server) == {"resnet": ["AVAILABLE"], "resnet50DAG": ["AVAILABLE"], "second": ["AVAILABLE"]}
        reloaded = seed_server.server.manager.models["resnet"].versions[1].servable
        assert reloaded is not None and reloaded.nireq == 3  # the changed model was loaded again
        got = seed_server.predict("second", {"x": np.ones((1, 4), np.float32)})["y"]
        np.testing.assert_allclose(got, np.full((1, 4), 4.0))
        np.testing.assert_allclose(seed_server.predict("resnet50DAG", {"0": images})["1463"], expected, rtol=1e-5)

        (repository / "config.json").write_text("{ not json")
        status, _, body = seed_server.http("POST", "/v1/config/reload")
        assert status == 412
        assert body.decode().startswith('{\n\t"error": "Reloading config file failed. Check server logs')
        assert seed_server.predict("second", {"x": np.ones((1, 4), np.float32)})["y"].shape == (1, 4)  # still served

        models.write_config(repository, {"model_config_list": [{"config": {"name": "resnet", "base_path": "resnet"}}]})
        status, _, body = seed_server.http("POST", "/v1/config/reload")
        assert status == 201
        assert _states(seed_server) == {"resnet": ["AVAILABLE"], "resnet50DAG": ["END"], "second": ["END"]}
        error = rpc_error(lambda: seed_server.predict("second", {"x": np.ones((1, 4), np.float32)}))
        assert error.code() == grpc.StatusCode.NOT_FOUND and "retired" in (error.details() or "")
        error = rpc_error(lambda: seed_server.predict("resnet50DAG", {"0": images}))
        assert (
            error.code() == grpc.StatusCode.NOT_FOUND
            and error.details() == "Pipeline is retired - pipeline resnet50DAG"
        )
    finally:
        stop.set()
        worker.join(30)
    assert not failures, failures[0]
    assert answered[0] > 10


def test_reload_in_single_model_mode_or_unreadable_file(repository: Path, seed_server: RunningServer) -> None:
    (repository / "config.json").unlink()
    status, _, body = seed_server.http("POST", "/v1/config/reload")
    assert status == 500 and "Config file not found or cannot open." in body.decode()
    assert _states(seed_server)["resnet"] == ["AVAILABLE"]
