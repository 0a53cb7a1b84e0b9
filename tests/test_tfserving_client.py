"""TensorFlow Serving's own client (tensorflow-serving-api) against ovserve; run with `make test-tfserving`.

TensorFlow registers the same proto files as ovserve in protobuf's default pool, so the client runs in its own
process (as it would for a real user), with the Python named by TFSERVING_PYTHON (a venv that has it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import models
import numpy as np
import pytest
from conftest import RunningServer

pytestmark = pytest.mark.tfserving

CLIENT = """
import sys, numpy as np, grpc, tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("127.0.0.1:" + sys.argv[1]))
request = predict_pb2.PredictRequest()
request.model_spec.name = "resnet50DAG"
images = np.load(sys.argv[2])
request.inputs["0"].CopyFrom(tf.make_tensor_proto(images, shape=images.shape))
np.save(sys.argv[3], tf.make_ndarray(stub.Predict(request, 30.0).outputs["1463"]))
metadata = get_model_metadata_pb2.GetModelMetadataRequest()
metadata.model_spec.name = "resnet50DAG"
metadata.metadata_field.append("signature_def")
signatures = get_model_metadata_pb2.SignatureDefMap()
stub.GetModelMetadata(metadata, 30.0).metadata["signature_def"].Unpack(signatures)
print([d.size for d in signatures.signature_def["serving_default"].inputs["0"].tensor_shape.dim])
"""


def test_tensorflow_serving_api_predict_and_metadata(seed_server: RunningServer, tmp_path: Path) -> None:
    python = os.environ.get("TFSERVING_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import tensorflow_serving.apis"], capture_output=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("tensorflow-serving-api is not installed (make test-tfserving installs it in its own venv)")
    images = np.random.default_rng(3).uniform(0, 255, (6, 1, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "in.npy", images)
    command = [python, "-c", CLIENT, str(seed_server.port), str(tmp_path / "in.npy"), str(tmp_path / "out.npy")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[-1, 1, 3, 4, 4]"
    scores = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(scores, models.reference_classifier(images), rtol=1e-4, atol=1e-2)
