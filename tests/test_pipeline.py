"""The seed scenario over real gRPC: demultiplexing pipelines, metadata, concurrency, no reloads."""

from __future__ import annotations

import threading
from pathlib import Path

import models
import numpy as np
import openvino as ov
import pytest
from conftest import RunningServer

from ovserve._proto.tensorflow.core.framework import types_pb2

DT_FLOAT = types_pb2.DataType.DT_FLOAT


def in_process(model_path: Path, images: np.ndarray) -> np.ndarray:
    """Reference: OpenVINO in this process, one image at a time → [N, 1, classes]."""
    compiled = ov.Core().compile_model(str(model_path), "CPU", models.F32)
    return np.stack([compiled(image)[0] for image in images])


def test_pipeline_metadata_adds_the_demultiplexer_dimension(seed_server: RunningServer) -> None:
    inputs, outputs = seed_server.metadata("resnet50DAG")
    assert inputs == {"0": ([-1, 1, 3, 4, 4], DT_FLOAT)}
    assert outputs == {"1463": ([-1, 1, 10], DT_FLOAT)}
    assert seed_server.metadata("resnet") == ({"0": ([1, 3, 4, 4], DT_FLOAT)}, {"1463": ([1, 10], DT_FLOAT)})


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_any_batch_size_equals_per_image_inference(seed_server: RunningServer, repository: Path, n: int) -> None:
    images = np.random.default_rng(n).uniform(0, 255, (n, 1, 3, 4, 4)).astype(np.float32)
    result = seed_server.predict("resnet50DAG", {"0": images})
    assert list(result) == ["1463"]
    assert result["1463"].shape == (n, 1, 10)
    expected = in_process(repository / "resnet" / "1" / "model.xml", images)
    np.testing.assert_allclose(result["1463"], expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result["1463"], models.reference_classifier(images), rtol=1e-4, atol=1e-2)


def test_two_clients_with_different_batch_sizes_at_once_and_no_reload(seed_server: RunningServer) -> None:
    version = seed_server.server.manager.models["resnet"].versions[1].servable
    compiled = version.compiled
    results: dict[int, list[bool]] = {8: [], 37: []}

    def client(n: int) -> None:
        rng = np.random.default_rng(n)
        for _ in range(15):
            images = rng.uniform(0, 255, (n, 1, 3, 4, 4)).astype(np.float32)
            out = seed_server.predict("resnet50DAG", {"0": images})["1463"]
            ok = out.shape == (n, 1, 10) and np.allclose(out, models.reference_classifier(images), atol=1e-2)
            results[n].append(ok)

    threads = [threading.Thread(target=client, args=(n,)) for n in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {8: [True] * 15, 37: [True] * 15}
    after = seed_server.server.manager.models["resnet"].versions[1].servable
    assert after is version and after.compiled is compiled  # the model was never reloaded or recompiled


def test_fixed_demultiply_count(repository: Path, serve: object) -> None:
    models.save(models.classifier(), repository, "resnet")
    server = serve(models.seed_config(demultiply_count=3))  # type: ignore[operator]
    assert server.metadata("resnet50DAG") == ({"0": ([3, 1, 3, 4, 4], DT_FLOAT)}, {"1463": ([3, 1, 10], DT_FLOAT)})
    images = np.random.default_rng(0).uniform(0, 1, (3, 1, 3, 4, 4)).astype(np.float32)
    out = server.predict("resnet50DAG", {"0": images})["1463"]
    np.testing.assert_allclose(out, models.reference_classifier(images), rtol=1e-4, atol=1e-4)


def node_demux_config(count: int) -> dict[str, object]:
    """request → detector (replicates x into `count` crops, node demultiplexer) → add_mul per crop → response."""
    return {
        "model_config_list": [
            {"config": {"name": "detector", "base_path": "detector"}},
            {"config": {"name": "scale", "base_path": "scale"}},
        ],
        "pipeline_config_list": [
            {
                "name": "crops",
                "inputs": ["image"],
                "nodes": [
                    {
                        "name": "detect",
                        "model_name": "detector",
                        "type": "DL model",
                        "demultiply_count": count,
                        "inputs": [{"x": {"node_name": "request", "data_item": "image"}}],
                        "outputs": [{"data_item": "crops", "alias": "crop"}],
                    },
                    {
                        "name": "classify",
                        "model_name": "scale",
                        "type": "DL model",
                        "inputs": [{"x": {"node_name": "detect", "data_item": "crop"}}],
                        "outputs": [{"data_item": "y", "alias": "score"}],
                    },
                ],
                "outputs": [
                    {"scores": {"node_name": "classify", "data_item": "score"}},
                    {"crops": {"node_name": "detect", "data_item": "crop"}},
                ],
            }
        ],
    }


@pytest.mark.parametrize("count", [3, -1])
def test_node_level_demultiplexer_gathers_at_the_response(repository: Path, serve: object, count: int) -> None:
    models.save(models.replicate(copies=3, shape=(1, 4)), repository, "detector")
    models.save(models.add_mul(shape=(1, 4), add=1, mul=2), repository, "scale")
    server = serve(node_demux_config(count))  # type: ignore[operator]
    dim = 3 if count > 0 else -1
    inputs, outputs = server.metadata("crops")
    assert inputs == {"image": ([1, 4], DT_FLOAT)}
    assert outputs == {"scores": ([dim, 1, 4], DT_FLOAT), "crops": ([dim, 1, 4], DT_FLOAT)}
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    result = server.predict("crops", {"image": x})
    crops = np.stack([x + i for i in range(3)])
    np.testing.assert_allclose(result["crops"], crops)
    np.testing.assert_allclose(result["scores"], (crops + 1) * 2)
