"""Reloads: /v1/config/reload and the repository watcher, models and pipelines added, changed and removed while
requests keep succeeding; a soak of twenty reloads under load."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import tritonclient.grpc as grpcclient
from conftest import Clients, RunningServer, config_states, rpc_error, wait_for_states, wait_for_versions


def test_reload_adds_changes_and_retires_without_failed_requests(repository: Path, seed_server: RunningServer) -> None:
    models.save(models.add_mul(), repository, "second")
    images = np.random.default_rng(1).random((2, 1, 3, 4, 4), dtype=np.float32)
    expected = models.reference_classifier(images)  # (2, 1, 10)

    def client() -> None:  # requests to the model that is reloaded, all through the reloads
        out = seed_server.predict("resnet", {"0": images[0]})["1463"]
        np.testing.assert_allclose(out, expected[0], rtol=1e-5, atol=1e-6)

    clients = Clients(resnet=client)
    try:
        status, _, body = seed_server.http("POST", "/v1/config/reload")
        assert status == 200  # nothing changed yet

        document = models.seed_config(nireq=3)  # a changed model config: the model reloads
        document["model_config_list"].append({"config": {"name": "second", "base_path": "second"}})
        models.write_config(repository, document)
        status, _, body = seed_server.http("POST", "/v1/config/reload")
        assert status == 201, body
        assert config_states(seed_server) == {
            "resnet": ["AVAILABLE"],
            "resnet50DAG": ["AVAILABLE"],
            "second": ["AVAILABLE"],
        }
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
        status, headers, body = seed_server.http("GET", "/v1/config")  # what is served, and why the file is not
        assert status == 200 and set(json.loads(body)) == {"resnet", "resnet50DAG", "second"}
        assert headers["x-ovserve-config-error"].startswith("The file is not valid json: ")
        assert headers["x-ovserve-config-error"].endswith("config.json: Expecting property name enclosed in double "
                                                          "quotes at line 1 column 3")  # fmt: skip

        only_resnet = {"name": "resnet", "base_path": "resnet", "plugin_config": models.F32}
        models.write_config(repository, {"model_config_list": [{"config": only_resnet}]})
        status, _, body = seed_server.http("POST", "/v1/config/reload")
        assert status == 201
        assert "x-ovserve-config-error" not in seed_server.http("GET", "/v1/config")[1]
        assert config_states(seed_server) == {"resnet": ["AVAILABLE"], "resnet50DAG": ["END"], "second": ["END"]}
        error = rpc_error(lambda: seed_server.predict("second", {"x": np.ones((1, 4), np.float32)}))
        assert error.code() == grpc.StatusCode.NOT_FOUND and "retired" in (error.details() or "")
        error = rpc_error(lambda: seed_server.predict("resnet50DAG", {"0": images}))
        assert (
            error.code() == grpc.StatusCode.NOT_FOUND
            and error.details() == "Pipeline is retired - pipeline resnet50DAG"
        )
    finally:
        clients.stop()
    assert not clients.failures, clients.failures[0]
    assert len(clients.answers["resnet"]) > 10


def test_reload_in_single_model_mode_or_unreadable_file(repository: Path, seed_server: RunningServer) -> None:
    (repository / "config.json").unlink()
    status, _, body = seed_server.http("POST", "/v1/config/reload")
    assert status == 500 and "Config file not found or cannot open." in body.decode()
    assert config_states(seed_server)["resnet"] == ["AVAILABLE"]


class Timeline:
    """Which versions the test made available when; an answer must come from a version available at some moment
    between its request and its response. While a change is on its way, the old and the new sets both count."""

    def __init__(self, versions: set[int]) -> None:
        self.phases: list[tuple[float, set[int]]] = [(time.monotonic(), set(versions))]

    def changing(self, versions: set[int]) -> None:
        self.phases.append((time.monotonic(), self.phases[-1][1] | versions))

    def settled(self, versions: set[int]) -> None:
        self.phases.append((time.monotonic(), set(versions)))

    def allowed(self, start: float, end: float) -> set[int]:
        ends = [t for t, _ in self.phases[1:]] + [float("inf")]
        return set().union(*(v for (t, v), until in zip(self.phases, ends, strict=True) if t <= end and until > start))


def _available(server: RunningServer, name: str) -> set[int]:
    """The AVAILABLE versions of a model, from /v1/config."""
    status, _, body = server.http("GET", "/v1/config")
    assert status == 200
    rows = json.loads(body)[name]["model_version_status"]
    return {int(row["version"]) for row in rows if row["state"] == "AVAILABLE"}


def test_soak_twenty_reloads_under_load_answer_every_request_from_an_available_version(repository: Path) -> None:
    """Versions added and removed, config edited (polling and /v1/config/reload), broken and fixed, while three
    clients send requests: a model (each version a different classifier), the pipeline on it, and a batch_size auto
    model fed changing batches. No request fails; every answer comes from a version available at the time."""
    staging, trash = repository / "staging", repository / "trash"
    trash.mkdir()
    models.save(models.classifier(seed=1), repository, "resnet", version=1)
    models.save(models.add_mul(shape=(1, 4)), repository, "auto")

    def document(**resnet: Any) -> dict[str, Any]:
        doc = models.seed_config(**resnet)
        doc["model_config_list"].append(
            {"config": {"name": "auto", "base_path": "auto", "batch_size": "auto", "plugin_config": models.F32}}
        )
        return doc

    def add(version: int) -> None:  # written aside, then moved in at once
        staged = models.save(models.classifier(seed=version), staging, "resnet", version=version)
        (staged / str(version)).rename(repository / "resnet" / str(version))

    def remove(version: int) -> None:  # moved out at once, so no scan sees it half deleted
        (repository / "resnet" / str(version)).rename(trash / str(version))
        shutil.rmtree(trash / str(version))

    config = models.write_config(repository, document())
    server = RunningServer(config, poll_seconds=0.1)
    image = np.random.default_rng(2).random((1, 3, 4, 4), dtype=np.float32)
    images = np.random.default_rng(3).random((2, 1, 3, 4, 4), dtype=np.float32)
    seeds = range(1, 7)
    answers = {s: models.reference_classifier(image[None], seed=s)[0] for s in seeds}
    pipeline_answers = {s: models.reference_classifier(images, seed=s) for s in seeds}
    kserve = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    request = grpcclient.InferInput("0", list(image.shape), "FP32")
    request.set_data_from_numpy(image)

    def model_client() -> int:  # KServe: the response names the version that answered (TF Serving's does not)
        result = kserve.infer("resnet", [request])
        version = int(result.get_response().model_version)
        np.testing.assert_allclose(result.as_numpy("1463"), answers[version], rtol=1e-5, atol=1e-5)
        return version

    def pipeline_client() -> int:
        got = server.predict("resnet50DAG", {"0": images})["1463"]
        matches = [s for s, a in pipeline_answers.items() if np.allclose(got, a, rtol=1e-5, atol=1e-5)]
        assert len(matches) == 1, got
        return matches[0]

    batches = itertools.cycle([1, 3, 3, 8, 1, 8])

    def auto_client() -> int:
        batch = next(batches)
        x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
        np.testing.assert_array_equal(server.predict("auto", {"x": x})["y"], (x + 1) * 2)
        return batch

    timeline = Timeline({1})

    def event(versions: set[int], action: Callable[[], Any]) -> None:
        """Do `action`, then wait until the server serves `versions` of resnet."""
        timeline.changing(versions)
        action()
        deadline = time.monotonic() + 30
        while _available(server, "resnet") != versions:
            assert time.monotonic() < deadline, f"{_available(server, 'resnet')} != {versions}"
            time.sleep(0.02)
        timeline.settled(versions)

    def write(**resnet: Any) -> Callable[[], None]:
        return lambda: models.write_config(repository, document(**resnet))

    def post(**resnet: Any) -> Callable[[], None]:
        def action() -> None:
            models.write_config(repository, document(**resnet))
            status, _, body = server.http("POST", "/v1/config/reload")
            assert status in (200, 201), body  # 200 when the watcher applied it first

        return action

    def broken(reload: bool) -> Callable[[], None]:
        def action() -> None:
            config.write_text('{"model_config_list": [')
            if reload:
                assert server.http("POST", "/v1/config/reload")[0] == 412
            else:
                time.sleep(0.3)  # three polls see it and change nothing

        return action

    def nireq() -> int:
        return {v.servable.nireq for v in server.server.manager.models["resnet"].versions.values() if v.servable}.pop()

    clients = Clients(model=model_client, pipeline=pipeline_client, auto=auto_client)
    try:
        event({2}, lambda: add(2))
        event({3}, lambda: add(3))
        event({2}, lambda: remove(3))
        event({1, 2}, post(model_version_policy={"specific": {"versions": [1, 2]}}))
        event({1, 2}, post(model_version_policy={"specific": {"versions": [1, 2]}}, nireq=2))
        assert nireq() == 2  # the edited model was loaded again
        event({1, 2}, post(model_version_policy={"all": {}}))
        event({1, 2, 3}, lambda: add(3))
        event({2, 3}, lambda: remove(1))
        event({2, 3}, broken(reload=True))
        event({3}, write())  # fixed, back to latest 1, picked up by the watcher
        event({4}, lambda: add(4))
        event({3}, lambda: remove(4))
        event(
            {2, 3},
            post(model_version_policy={"latest": {"num_versions": 2}}, plugin_config={**models.F32, "NUM_STREAMS": 1}),
        )
        event({2, 3}, broken(reload=False))
        event({3}, write(model_version_policy={"specific": {"versions": [3]}}))
        event({3, 5}, lambda: (add(5), write(model_version_policy={"specific": {"versions": [3, 5]}})()))
        event({5}, lambda: remove(3))
        event({5}, post(nireq=3))
        assert nireq() == 3
        event({6}, lambda: add(6))
        event({5}, lambda: remove(6))
        event({2, 5}, post(model_version_policy={"latest": {"num_versions": 3}}))
        time.sleep(0.2)  # a last stretch of requests on the final state
    finally:
        clients.stop()
        kserve.close()
        server_reloads = _reloads(server, "auto")
        server.stop()
    assert not clients.failures, clients.failures[0]
    for name in ("model", "pipeline"):
        for sent, received, version in clients.answers[name]:
            assert version in timeline.allowed(sent, received), (name, version, sent, received)
        assert {2, 3, 5} <= {v for _, _, v in clients.answers[name]}, name  # the clients saw the changes
    sent_batches = [1] + [b for _, _, b in clients.answers["auto"]]  # the model starts at its own batch, 1
    changes = sum(a != b for a, b in itertools.pairwise(sent_batches))
    assert server_reloads == changes > 10  # one reload per change of batch, none otherwise


def _reloads(server: RunningServer, name: str) -> int:
    _, _, body = server.http("GET", "/metrics")
    wanted = f'ovserve_model_reloads{{name="{name}",version="1",status="success"}} '
    return sum(int(line[len(wanted) :]) for line in body.decode().splitlines() if line.startswith(wanted))


def test_watching_skips_a_half_copied_version_then_loads_it_once_copied_again(repository: Path) -> None:
    """A version caught half-copied fails without disturbing the one serving; removed, then copied in whole, it
    loads."""
    models.save(models.classifier(seed=1), repository, "resnet", version=1)
    server = RunningServer(models.write_config(repository, models.seed_config()), poll_seconds=0.1)
    image = np.random.default_rng(2).random((1, 1, 3, 4, 4), dtype=np.float32)
    try:
        wait_for_states(server, {"resnet": ["AVAILABLE"], "resnet50DAG": ["AVAILABLE"]})
        serving = server.server.manager.models["resnet"].versions[1].servable
        (repository / "resnet" / "2").mkdir()
        (repository / "resnet" / "2" / "model.xml").write_text("<net")  # no .bin yet
        wait_for_versions(server, "resnet", [(1, 30, "OK"), (2, 20, "UNKNOWN")])  # AVAILABLE; LOADING, failed
        assert server.server.manager.models["resnet"].versions[1].servable is serving  # never retired meanwhile
        shutil.rmtree(repository / "resnet" / "2")
        wait_for_states(server, {"resnet": ["AVAILABLE", "END"], "resnet50DAG": ["AVAILABLE"]})
        staged = models.save(models.classifier(seed=2), repository / "staging", "resnet", version=2)
        (staged / "2").rename(repository / "resnet" / "2")
        wait_for_states(server, {"resnet": ["END", "AVAILABLE"], "resnet50DAG": ["AVAILABLE"]})
        got = server.predict("resnet", {"0": image[0]})["1463"]
        np.testing.assert_allclose(got, models.reference_classifier(image, seed=2)[0], rtol=1e-5)
    finally:
        server.stop()
