"""Tiny OpenVINO models built at test time with the opset API, saved as IR into model repositories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino import opset13 as ops


def _named(node: Any, name: str) -> Any:
    node.output(0).get_tensor().set_names({name})
    return node


def classifier(
    in_name: str = "0", out_name: str = "1463", image: tuple[int, ...] = (1, 3, 4, 4), classes: int = 10, seed: int = 0
) -> ov.Model:
    """A batch-1 'classifier': flatten the image, multiply by a fixed random matrix → (1, classes) scores."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(image[1:]))
    weights = rng.standard_normal((features, classes)).astype(np.float32)
    x = ops.parameter(list(image), np.float32, name=in_name)
    _named(x, in_name)
    flat = ops.reshape(x, ops.constant(np.array([image[0], features], np.int64)), special_zero=False)
    y = _named(ops.matmul(flat, ops.constant(weights), False, False), out_name)
    return ov.Model([y], [x], "classifier")


def reference_classifier(images: np.ndarray, seed: int = 0, classes: int = 10) -> np.ndarray:
    """What `classifier` computes, in numpy: one row of scores per image (images shaped [N, 1, C, H, W])."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(images.shape[2:]))
    weights = rng.standard_normal((features, classes)).astype(np.float32)
    return (images.reshape(images.shape[0], features).astype(np.float32) @ weights).reshape(images.shape[0], 1, classes)


def add_mul(
    shape: tuple[int, ...] = (1, 4),
    add: float = 1.0,
    mul: float = 2.0,
    in_name: str = "x",
    out_name: str = "y",
    dtype: Any = np.float32,
) -> ov.Model:
    """y = (x + add) * mul."""
    x = _named(ops.parameter(list(shape), dtype, name=in_name), in_name)
    y = _named(
        ops.multiply(ops.add(x, ops.constant(np.array(add, dtype))), ops.constant(np.array(mul, dtype))), out_name
    )
    return ov.Model([y], [x], "add_mul")


def weighted_sum(shape: tuple[int, ...] = (1, 4), weight: float = 3.0) -> ov.Model:
    """Two inputs: z = a + weight * b."""
    a = _named(ops.parameter(list(shape), np.float32, name="a"), "a")
    b = _named(ops.parameter(list(shape), np.float32, name="b"), "b")
    z = _named(ops.add(a, ops.multiply(b, ops.constant(np.float32(weight)))), "z")
    return ov.Model([z], [a, b], "weighted_sum")


def replicate(
    copies: int = 3, shape: tuple[int, ...] = (1, 4), in_name: str = "x", out_name: str = "crops"
) -> ov.Model:
    """A fixed 'detector': stacks (x + i) for i in range(copies) → (copies, *shape), for node demultiplexing."""
    x = _named(ops.parameter(list(shape), np.float32, name=in_name), in_name)
    parts = [
        ops.unsqueeze(ops.add(x, ops.constant(np.float32(i))), ops.constant(np.array([0], np.int64)))
        for i in range(copies)
    ]
    y = _named(ops.concat(parts, 0), out_name)
    return ov.Model([y], [x], "replicate")


def save(model: ov.Model, repository: Path, name: str, version: int = 1) -> Path:
    """Write `model` as IR into repository/name/version/model.xml; returns the model's base path."""
    folder = repository / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    return repository / name


# Exact float32 arithmetic, so results can be compared with numpy: on CPUs with bf16 units (AVX512_BF16, AMX)
# OpenVINO otherwise infers in bfloat16 by default, about 3 significant digits.
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def seed_config(
    model: str = "resnet",
    pipeline: str = "resnet50DAG",
    demultiply_count: int = -1,
    inp: str = "0",
    out: str = "1463",
    **model_settings: Any,
) -> dict[str, Any]:
    """The guide's config.json: one batch-1 model and a pipeline demultiplexing at the request (exact f32)."""
    model_settings.setdefault("plugin_config", F32)
    return {
        "model_config_list": [{"config": {"name": model, "base_path": model, **model_settings}}],
        "pipeline_config_list": [
            {
                "name": pipeline,
                "inputs": [inp],
                "demultiply_count": demultiply_count,
                "nodes": [
                    {
                        "name": "resnetNode",
                        "model_name": model,
                        "type": "DL model",
                        "inputs": [{inp: {"node_name": "request", "data_item": inp}}],
                        "outputs": [{"data_item": out, "alias": out}],
                    }
                ],
                "outputs": [{out: {"node_name": "resnetNode", "data_item": out}}],
            }
        ],
    }


def write_config(repository: Path, document: dict[str, Any]) -> Path:
    path = repository / "config.json"
    path.write_text(json.dumps(document, indent=1))
    return path
