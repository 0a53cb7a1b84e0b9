"""shape/batch_size "auto": a request of another shape reloads the version with it (docs/apis.md#input-checks), counted
and logged."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import openvino as ov
import pytest
import tritonclient.http as httpclient
from conftest import RunningServer, rpc_error

from ovserve import loading, runtime
from ovserve.config import ModelConfig
from ovserve.errors import LoadError

DT_FLOAT = 1
Serve = Callable[[dict[str, Any]], RunningServer]


def _config(name: str, **settings: Any) -> dict[str, Any]:
    return {
        "model_config_list": [{"config": {"name": name, "base_path": name, "plugin_config": models.F32, **settings}}]
    }


def _reloads(server: RunningServer, name: str, status: str = "success") -> int:
    """ovserve_model_reloads of version 1 of `name`, from /metrics."""
    _, _, body = server.http("GET", "/metrics")
    wanted = f'ovserve_model_reloads{{name="{name}",version="1",status="{status}"}} '
    values = [line[len(wanted) :] for line in body.decode().splitlines() if line.startswith(wanted)]
    assert len(values) == 1, f"no {wanted.strip()} in /metrics"
    return int(values[0])


def _add_mul(x: np.ndarray) -> np.ndarray:
    return (x + 1) * 2  # models.add_mul(): exact in float32 for these small integers


def test_batch_auto_reloads_for_each_new_batch_and_metadata_follows(
    repository: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    models.save(models.add_mul(shape=(1, 4)), repository, "m")
    server = serve(_config("m", batch_size="auto"))
    assert server.metadata("m")[0] == {"x": ([1, 4], DT_FLOAT)}  # compiled with the model's own batch
    assert _reloads(server, "m") == 0 and _reloads(server, "m", "fail") == 0  # the series exist from the load
    caplog.set_level(logging.INFO, logger="ovserve.runtime")
    for batch in (1, 3, 3, 8, 1):
        x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
        np.testing.assert_array_equal(server.predict("m", {"x": x})["y"], _add_mul(x))
        assert server.metadata("m")[0] == {"x": ([batch, 4], DT_FLOAT)}
    assert _reloads(server, "m") == 3  # 1 → 3 → 8 → 1; the first request and the repeat needed none
    assert [r.getMessage().split(" in ")[0] for r in caplog.records if "reloaded" in r.getMessage()] == [
        "model m version 1 reloaded for shape x (3,4)",
        "model m version 1 reloaded for shape x (8,4)",
        "model m version 1 reloaded for shape x (1,4)",
    ]

    # KServe REST with Triton's client: the decoder checks the request against the open batch too.
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    data = httpclient.InferInput("x", [5, 4], "FP32")
    data.set_data_from_numpy(x, binary_data=True)
    np.testing.assert_array_equal(client.infer("m", [data]).as_numpy("y"), _add_mul(x))
    assert client.get_model_metadata("m")["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [5, 4]}]
    assert _reloads(server, "m") == 4

    # Only the batch follows the request: another dimension is the client's mistake, and nothing reloads.
    error = rpc_error(lambda: server.predict("m", {"x": np.zeros((2, 5), np.float32)}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Invalid input shape - Expected: (-1,4); Actual: (2,5); input name: x"
    error = rpc_error(lambda: server.predict("m", {"x": np.zeros((2, 4, 1), np.float32)}))
    assert error.details() == "Invalid number of shape dimensions - Expected: (-1,4); Actual: (2,4,1); input name: x"
    assert _reloads(server, "m") == 4 and server.metadata("m")[0] == {"x": ([5, 4], DT_FLOAT)}


def test_batch_auto_with_two_inputs_takes_one_batch(repository: Path, serve: Serve) -> None:
    models.save(models.weighted_sum(shape=(1, 4)), repository, "two")
    server = serve(_config("two", batch_size="auto"))
    a, b = np.ones((3, 4), np.float32), np.full((3, 4), 2, np.float32)
    np.testing.assert_array_equal(server.predict("two", {"a": a, "b": b})["z"], a + 3 * b)
    assert server.metadata("two")[0] == {"a": ([3, 4], DT_FLOAT), "b": ([3, 4], DT_FLOAT)}
    # Inputs of different batches: refused before any reload (the batch of the first input by name is wanted).
    error = rpc_error(lambda: server.predict("two", {"a": np.ones((2, 4), np.float32), "b": b}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Invalid input batch size - Expected: 2; Actual: 3; input name: b"
    assert _reloads(server, "two") == 1 and server.metadata("two")[0]["a"] == ([3, 4], DT_FLOAT)


@pytest.mark.parametrize("shape", ["auto", {"x": "auto"}])
def test_shape_auto_reloads_for_any_new_shape(repository: Path, serve: Serve, shape: Any) -> None:
    models.save(models.add_mul(shape=(1, 4)), repository, "m")
    server = serve(_config("m", shape=shape))
    for dims in ((1, 4), (2, 7), (2, 7), (5, 1)):
        x = np.arange(int(np.prod(dims)), dtype=np.float32).reshape(dims)
        np.testing.assert_array_equal(server.predict("m", {"x": x})["y"], _add_mul(x))
        assert server.metadata("m")[0] == {"x": (list(dims), DT_FLOAT)}
    assert _reloads(server, "m") == 2
    error = rpc_error(lambda: server.predict("m", {"x": np.zeros(3, np.float32)}))
    assert error.details() == "Invalid number of shape dimensions - Expected: (-1,-1); Actual: (3); input name: x"


def test_anonymous_shape_auto_covers_every_input_of_a_model(repository: Path, serve: Serve) -> None:
    models.save(models.weighted_sum(shape=(1, 4)), repository, "two")
    server = serve(_config("two", shape="auto"))
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 5, np.float32)
    np.testing.assert_array_equal(server.predict("two", {"a": a, "b": b})["z"], a + 3 * b)
    assert server.metadata("two")[0] == {"a": ([2, 3], DT_FLOAT), "b": ([2, 3], DT_FLOAT)}
    assert _reloads(server, "two") == 1


def test_a_failed_reshape_answers_412_and_the_previous_shape_keeps_serving(repository: Path, serve: Serve) -> None:
    models.save(models.classifier(), repository, "resnet")  # flatten + matmul: H and W cannot change
    server = serve(_config("resnet", shape="auto"))
    bigger = np.ones((1, 3, 5, 5), np.float32)
    error = rpc_error(lambda: server.predict("resnet", {"0": bigger}))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details() or ""
    assert details.startswith(
        "Model could not be reshaped with requested shape - model resnet version 1: 0 (1,3,5,5): "
    )
    body = json.dumps({"instances": bigger.tolist()})
    status, _, answer = server.http("POST", "/v1/models/resnet:predict", body)
    assert status == 412
    assert json.loads(answer)["error"].startswith("Model could not be reshaped with requested shape - model resnet")
    assert (_reloads(server, "resnet", "fail"), _reloads(server, "resnet")) == (2, 0)
    image = np.random.default_rng(3).random((1, 3, 4, 4), dtype=np.float32)
    expected = models.reference_classifier(image[None])[0]
    np.testing.assert_allclose(server.predict("resnet", {"0": image})["1463"], expected, rtol=1e-5, atol=1e-5)
    assert server.metadata("resnet")[0] == {"0": ([1, 3, 4, 4], DT_FLOAT)}
    np.testing.assert_allclose(  # the batch can change: OpenVINO rewrites the flattening for it
        server.predict("resnet", {"0": np.concatenate([image, image])})["1463"],
        np.concatenate([expected, expected]),
        rtol=1e-5,
        atol=1e-5,
    )
    assert _reloads(server, "resnet") == 1


def test_concurrent_requests_of_two_batch_sizes_are_all_answered_on_their_shape(repository: Path, serve: Serve) -> None:
    models.save(models.add_mul(shape=(1, 4)), repository, "m")
    server = serve(_config("m", batch_size="auto", nireq=2))
    failures: list[BaseException] = []
    answered: list[int] = []  # list.append is atomic: one entry per correct answer
    rounds = threading.Barrier(4)  # every round sends both sizes at once

    def client(batch: int) -> None:
        rng = np.random.default_rng(batch)
        try:
            for _ in range(25):
                x = rng.integers(0, 100, (batch, 4)).astype(np.float32)
                rounds.wait(30)
                np.testing.assert_array_equal(server.predict("m", {"x": x})["y"], _add_mul(x))
                answered.append(batch)
        except BaseException as e:  # any failure is reported by the test
            failures.append(e)
            rounds.abort()

    threads = [threading.Thread(target=client, args=(batch,)) for batch in (1, 8, 8, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[0]
    assert (answered.count(1), answered.count(8)) == (50, 50)
    assert 25 <= _reloads(server, "m") <= 100 and _reloads(server, "m", "fail") == 0


def test_load_time_rules_of_auto(tmp_path: Path) -> None:
    def load(model: Any, **settings: Any) -> runtime.ModelVersion:
        base = models.save(model, tmp_path, "m")
        return loading.load(ov.Core(), ModelConfig("m", base, **settings), 1, base / "1" / "model.xml")

    scalar = models.add_mul(shape=())
    with pytest.raises(LoadError, match="Batching set to AUTO but model contains scalar tensor"):
        load(scalar, batch_size="auto")
    fixed = load(models.add_mul(shape=(1, 4)), shape=(2, 4), batch_size="auto")  # a shape overrides batch_size
    assert fixed.inputs["x"].shape == (2, 4) and fixed.accepts["x"].shape == (2, 4)
    nhwc = load(models.classifier(image=(1, 3, 4, 6)), layout="NHWC:NCHW", batch_size="auto")
    assert nhwc.inputs["0"].shape == (1, 4, 6, 3) and nhwc.accepts["0"].shape == (-1, 4, 6, 3)
    cn = load(models.add_mul(shape=(4, 1)), layout="CN", batch_size="auto")  # the batch is where N is
    assert cn.accepts["x"].shape == (4, -1)
