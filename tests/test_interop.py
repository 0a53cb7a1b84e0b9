"""A TF Serving client nobody here wrote (ovmsclient) against a real ovserve server."""

from __future__ import annotations

import models
import numpy as np
import ovmsclient
import pytest
from conftest import RunningServer


@pytest.fixture
def client(seed_server: RunningServer) -> object:
    return ovmsclient.make_grpc_client(f"127.0.0.1:{seed_server.port}")


def test_ovmsclient_metadata_and_status(client: object) -> None:
    metadata = client.get_model_metadata(model_name="resnet50DAG")  # type: ignore[attr-defined]
    assert metadata["model_version"] == 1
    assert metadata["inputs"] == {"0": {"shape": [-1, 1, 3, 4, 4], "dtype": "DT_FLOAT"}}
    assert metadata["outputs"] == {"1463": {"shape": [-1, 1, 10], "dtype": "DT_FLOAT"}}
    status = client.get_model_status(model_name="resnet")  # type: ignore[attr-defined]
    assert status == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"}}


@pytest.mark.parametrize("n", [1, 5])
def test_ovmsclient_predict_through_the_demultiplexer(client: object, n: int) -> None:
    images = np.random.default_rng(n).uniform(0, 255, (n, 1, 3, 4, 4)).astype(np.float32)
    scores = client.predict(inputs={"0": images}, model_name="resnet50DAG")  # type: ignore[attr-defined]
    np.testing.assert_allclose(scores, models.reference_classifier(images), rtol=1e-4, atol=1e-2)


def test_ovmsclient_sees_ovms_errors(client: object) -> None:
    with pytest.raises(ovmsclient.ModelNotFoundError):
        client.predict(inputs={"0": np.zeros((1, 1, 3, 4, 4), np.float32)}, model_name="nope")  # type: ignore[attr-defined]
    with pytest.raises(ovmsclient.InvalidInputError, match="Invalid input shape"):
        client.predict(inputs={"0": np.zeros((1, 2, 3, 4, 4), np.float32)}, model_name="resnet50DAG")  # type: ignore[attr-defined]
