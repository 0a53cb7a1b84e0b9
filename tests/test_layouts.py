"""Layout settings (docs/configuration.md#model-loading) on a real server: a layout OpenVINO cannot take fails
that model alone, the layout stored in a model counts where none is configured, and a batch size needs an N to go to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import models
import numpy as np
import openvino as ov
import pytest
from conftest import RunningServer, rpc_error
from test_images import bgr, encode, picture, predict_strings, resized

from ovserve._proto.tensorflow.core.framework import types_pb2

Serve = Callable[[dict[str, Any]], RunningServer]


def _states(server: RunningServer, name: str) -> list[tuple[int, int, str]]:
    """(version, state, error code) rows: error_message without the reason ovserve adds after " - "."""
    return [
        (r.version, r.state, r.status.error_message.partition(" - ")[0])
        for r in server.status(name).model_version_status
    ]


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
    assert _states(server, "twice") == [(0, LOADING, "UNKNOWN")]  # never loaded: its config is invalid
    assert _states(server, "dots") == [(0, LOADING, "UNKNOWN")]
    assert 'layout "NN": each of N C H W D at most once' in caplog.text
    assert 'layout "N..C": dots only as one "..."' in caplog.text
    for name in ("rank", "output_rank"):
        assert _states(server, name) == [(1, LOADING, "UNKNOWN")]
    assert "model rank version 1 failed to load: Layout incompatible with given shape: x NCHW:" in caplog.text
    assert "model output_rank version 1 failed to load: Layout incompatible with given shape: y NCHW:" in caplog.text


def _stored(model: Any, layout: str) -> Any:
    """`model` with `layout` stored on its input (rt_info), as a converter writes it into the IR."""
    model.inputs[0].get_node().set_layout(ov.Layout(layout))
    return model


def test_the_layout_stored_in_a_model_places_the_batch_and_lets_images_resize(repository: Path, serve: Serve) -> None:
    """Without a configured layout OVMS reports the one in the model's rt_info (docs/configuration.md#model-loading
    steps 3 and 6): a CN model has its batch in dim 1, for request checks and for batch_size, and an NHWC one gets
    images resized."""
    models.save(_stored(models.add_mul(shape=(3, 4)), "CN"), repository, "cn")
    models.save(_stored(models.pixels((1, 8, 10, 3)), "NHWC"), repository, "nhwc")
    server = serve(
        {
            "model_config_list": [
                {"config": {"name": "cn", "base_path": "cn"}},
                {"config": {"name": "cn_batch", "base_path": "cn", "batch_size": 5}},
                {"config": {"name": "nhwc", "base_path": "nhwc", "plugin_config": models.F32}},
            ]
        }
    )
    error = rpc_error(lambda: server.predict("cn", {"x": np.ones((3, 5), np.float32)}))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid input batch size - Expected: 4; Actual: 5; input name: x",
    )
    assert server.metadata("cn_batch")[0] == {"x": ([3, 5], types_pb2.DT_FLOAT)}
    assert server.predict("cn_batch", {"x": np.ones((3, 5), np.float32)})["y"].shape == (3, 5)
    image = picture(16, 20)
    (pixels,) = predict_strings(server, "nhwc", [encode(image)]).values()
    np.testing.assert_array_equal(pixels, resized(bgr(encode(image)), 8, 10)[np.newaxis].astype(np.float32))


def test_a_batch_size_needs_an_input_with_n_in_its_layout(
    repository: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """OVMS applies batch_size with ov.set_batch, which fails when no input layout has N: that version does not
    load (it was served at the model's own shape, batch_size ignored). An input without N beside one with N is
    left as it is."""
    caplog.set_level(logging.ERROR, logger="ovserve.manager")
    models.save(models.add_mul(shape=(3, 4)), repository, "am")
    models.save(models.pair(shape=(3, 4)), repository, "pair")
    server = serve(
        {
            "model_config_list": [
                {"config": {"name": "no_n", "base_path": "am", "layout": "C?", "batch_size": 2}},
                {"config": {"name": "one_n", "base_path": "pair", "layout": {"x": "C?", "z": "?N"}, "batch_size": 4}},
            ]
        }
    )
    assert _states(server, "no_n") == [(1, LOADING, "UNKNOWN")]
    assert (
        "model no_n version 1 failed to load: Error while loading a model: batch_size is set but no input has N in "
        "its layout: x C?" in caplog.text
    )
    assert _states(server, "one_n") == [(1, AVAILABLE, "OK")]  # z's N (dim 1) is 4 already; x has no N
    assert server.metadata("one_n")[0] == {"x": ([3, 4], types_pb2.DT_FLOAT), "z": ([3, 4], types_pb2.DT_FLOAT)}


def test_a_shape_for_an_unknown_input_is_logged_in_ovms_words(
    repository: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ovserve.manager")
    models.save(models.pair(shape=(1, 4)), repository, "pair")
    server = serve({"model_config_list": [{"config": {"name": "p", "base_path": "pair", "shape": {"q": "(1,4)"}}}]})
    assert _states(server, "p") == [(1, LOADING, "UNKNOWN")]
    assert "model p version 1 failed to load: Shape from config not found in model: q; the model's inputs: x, z" in (
        caplog.text
    )  # issue 13: the real names, so that a typo shows
