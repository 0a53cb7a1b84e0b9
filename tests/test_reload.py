"""POST /v1/config/reload: models and pipelines added, changed and removed while requests keep succeeding."""

from __future__ import annotations

import json
import shutil
import threading
import time
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

        only_resnet = {"name": "resnet", "base_path": "resnet", "plugin_config": models.F32}
        models.write_config(repository, {"model_config_list": [{"config": only_resnet}]})
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


def _wait_for(server: RunningServer, wanted: dict[str, list[str]], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while _states(server) != wanted:
        assert time.monotonic() < deadline, f"{_states(server)} != {wanted}"
        time.sleep(0.05)


def test_watching_loads_new_versions_and_config_edits_while_requests_keep_succeeding(repository: Path) -> None:
    """--file_system_poll_wait_seconds: version folders added and removed, config edited, broken and fixed."""
    models.save(models.classifier(seed=1), repository, "resnet", version=1)
    server = RunningServer(models.write_config(repository, models.seed_config()), poll_seconds=0.1)
    image = np.random.default_rng(2).random((1, 1, 3, 4, 4), dtype=np.float32)
    answers = {seed: models.reference_classifier(image, seed=seed)[0] for seed in (1, 2)}
    seen: set[int] = set()
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                out = server.predict("resnet", {"0": image[0]})["1463"]
                matches = [s for s, a in answers.items() if np.allclose(out, a, rtol=1e-5, atol=1e-5)]
                assert len(matches) == 1, out
                seen.add(matches[0])
            except BaseException as e:  # any failure is reported by the test
                failures.append(e)
                return

    worker = threading.Thread(target=client)
    worker.start()
    try:
        _wait_for(server, {"resnet": ["AVAILABLE"], "resnet50DAG": ["AVAILABLE"]})
        staged = models.save(models.classifier(seed=2), repository / "staging", "resnet", version=2)
        (staged / "2").rename(repository / "resnet" / "2")  # a new version, moved in at once: it replaces 1
        _wait_for(server, {"resnet": ["END", "AVAILABLE"], "resnet50DAG": ["AVAILABLE"]})
        np.testing.assert_allclose(server.predict("resnet", {"0": image[0]})["1463"], answers[2], rtol=1e-5)
        np.testing.assert_allclose(server.predict("resnet50DAG", {"0": image})["1463"][0], answers[2], rtol=1e-5)

        shutil.rmtree(repository / "resnet" / "2")  # the new version goes away: version 1 serves again
        _wait_for(server, {"resnet": ["AVAILABLE", "END"], "resnet50DAG": ["AVAILABLE"]})
        np.testing.assert_allclose(server.predict("resnet", {"0": image[0]})["1463"], answers[1], rtol=1e-5)

        (repository / "config.json").write_text('{"model_config_list": [')  # broken: nothing changes
        time.sleep(0.5)
        assert _states(server) == {"resnet": ["AVAILABLE", "END"], "resnet50DAG": ["AVAILABLE"]}
        models.save(models.add_mul(), repository, "second")
        document = models.seed_config()
        document["model_config_list"].append({"config": {"name": "second", "base_path": "second"}})
        models.write_config(repository, document)  # fixed, with one more model
        _wait_for(server, {"resnet": ["AVAILABLE", "END"], "resnet50DAG": ["AVAILABLE"], "second": ["AVAILABLE"]})
    finally:
        stop.set()
        worker.join(30)
        server.stop()
    assert not failures, failures[0]
    assert seen == {1, 2}


def test_watching_skips_a_half_copied_version_then_loads_it_once_copied_again(repository: Path) -> None:
    """A version caught half-copied fails without disturbing the one serving; removed, then copied in whole, it
    loads."""
    models.save(models.classifier(seed=1), repository, "resnet", version=1)
    server = RunningServer(models.write_config(repository, models.seed_config()), poll_seconds=0.1)
    image = np.random.default_rng(2).random((1, 1, 3, 4, 4), dtype=np.float32)
    try:
        _wait_for(server, {"resnet": ["AVAILABLE"], "resnet50DAG": ["AVAILABLE"]})
        serving = server.server.manager.models["resnet"].versions[1].servable
        (repository / "resnet" / "2").mkdir()
        (repository / "resnet" / "2" / "model.xml").write_text("<net")  # no .bin yet
        deadline = time.monotonic() + 30
        while [(r.version, r.state, r.status.error_message) for r in server.status("resnet").model_version_status] != [
            (1, 30, "OK"), (2, 20, "UNKNOWN")  # AVAILABLE; LOADING with an error: failed
        ]:  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert server.server.manager.models["resnet"].versions[1].servable is serving  # never retired meanwhile
        shutil.rmtree(repository / "resnet" / "2")
        _wait_for(server, {"resnet": ["AVAILABLE", "END"], "resnet50DAG": ["AVAILABLE"]})
        staged = models.save(models.classifier(seed=2), repository / "staging", "resnet", version=2)
        (staged / "2").rename(repository / "resnet" / "2")
        _wait_for(server, {"resnet": ["END", "AVAILABLE"], "resnet50DAG": ["AVAILABLE"]})
        got = server.predict("resnet", {"0": image[0]})["1463"]
        np.testing.assert_allclose(got, models.reference_classifier(image, seed=2)[0], rtol=1e-5)
    finally:
        server.stop()
