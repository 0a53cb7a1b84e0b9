"""Tiny OpenVINO models built at test time with the opset API, saved as IR into model repositories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino import opset13 as ops
from openvino.op.util import Variable, VariableInfo


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


def detector(
    size: int = 8, window: int = 4, in_name: str = "image", out_name: str = "boxes", channels: int = 1
) -> ov.Model:
    """A 'detector' for (1,channels,size,size) images: one box per window x window tile, (1,K,3) rows of score (the
    tile's mean), y, x. Boxes above a threshold vary with the image, so a crop node after it demultiplexes."""
    x = _named(ops.parameter([1, channels, size, size], np.float32, name=in_name), in_name)
    pooled = ops.avg_pool(x, [window, window], [0, 0], [0, 0], [window, window], exclude_pad=True)
    means = ops.reduce_mean(pooled, ops.constant(np.array([1], np.int64)), keep_dims=True)
    tiles = (size // window) ** 2
    scores = ops.reshape(means, ops.constant(np.array([1, tiles, 1], np.int64)), special_zero=False)
    corners = np.array([[y, x] for y in range(0, size, window) for x in range(0, size, window)], np.float32)
    boxes = _named(ops.concat([scores, ops.constant(corners.reshape(1, tiles, 2))], 2), out_name)
    return ov.Model([boxes], [x], "detector")


def reference_detector(image: np.ndarray, window: int = 4) -> np.ndarray:
    """What `detector` computes for one (1,C,H,W) image."""
    size = image.shape[-1]
    rows = [
        [image[0, :, y : y + window, x : x + window].mean(), y, x]
        for y in range(0, size, window)
        for x in range(0, size, window)
    ]
    return np.array([rows], np.float32)


def reduce_sum(count: int = 3, shape: tuple[int, ...] = (1, 4), in_name: str = "x", out_name: str = "y") -> ov.Model:
    """Sums `count` gathered shards: (count, *shape) -> shape; a node after a gather_from_node."""
    x = _named(ops.parameter([count, *shape], np.float32, name=in_name), in_name)
    y = _named(ops.reduce_sum(x, ops.constant(np.array([0], np.int64)), keep_dims=False), out_name)
    return ov.Model([y], [x], "reduce_sum")


def two_outputs(count: int = 3) -> ov.Model:
    """Spec docs/pipelines.md#pipeline-metadata worked example 2's node A, smaller: x (1,4) -> output_A (count,1,10,10),
    output_B (count,1,4,13)."""
    x = _named(ops.parameter([1, 4], np.float32, name="x"), "x")
    total = ops.reduce_sum(x, ops.constant(np.array([1], np.int64)), keep_dims=False)
    outputs = []
    for name, shape in (("output_A", (count, 1, 10, 10)), ("output_B", (count, 1, 4, 13))):
        ones = ops.constant(np.ones(shape, np.float32))
        outputs.append(_named(ops.multiply(ones, ops.reshape(total, ops.constant(np.ones(4, np.int64)), False)), name))
    return ov.Model(outputs, [x], "two_outputs")


def combine(out: int = 5) -> ov.Model:
    """Spec docs/pipelines.md#pipeline-metadata example 2's node B, smaller: output_A (1,10,10) and output_B (1,4,13) ->
    output (1,out)."""
    a = _named(ops.parameter([1, 10, 10], np.float32, name="a"), "a")
    b = _named(ops.parameter([1, 4, 13], np.float32, name="b"), "b")
    total = ops.add(
        ops.reduce_sum(a, ops.constant(np.array([1, 2], np.int64)), keep_dims=False),
        ops.reduce_sum(b, ops.constant(np.array([1, 2], np.int64)), keep_dims=False),
    )
    y = _named(ops.multiply(ops.constant(np.ones((1, out), np.float32)), ops.unsqueeze(total, [1])), "output")
    return ov.Model([y], [a, b], "combine")


def pair(shape: tuple[int, ...] = (1, 4)) -> ov.Model:
    """Two inputs: y = x + z."""
    x = _named(ops.parameter(list(shape), np.float32, name="x"), "x")
    z = _named(ops.parameter(list(shape), np.float32, name="z"), "z")
    return ov.Model([_named(ops.add(x, z), "y")], [x, z], "pair")


def accumulator(shape: tuple[int, ...] = (1, 4)) -> ov.Model:
    """A stateful model (ReadValue/Assign) with two variables: acc := 2 * acc + x and count := count + 1, both
    starting at 0; outputs "acc" (shape) and "count" (1, 1). The doubling makes every result depend on the order of
    the sequence's requests."""
    x = _named(ops.parameter(list(shape), np.float32, name="x"), "x")
    acc_var = _variable("acc", shape)
    count_var = _variable("count", (1, 1))
    acc = _named(ops.add(ops.multiply(ops.read_value(ops.constant(np.zeros(shape, np.float32)), acc_var),
                                      ops.constant(np.float32(2))), x), "acc")  # fmt: skip
    count = _named(ops.add(ops.read_value(ops.constant(np.zeros((1, 1), np.float32)), count_var),
                           ops.constant(np.ones((1, 1), np.float32))), "count")  # fmt: skip
    sinks = [ops.assign(acc, acc_var), ops.assign(count, count_var)]
    return ov.Model(results=[ops.result(acc), ops.result(count)], sinks=sinks, parameters=[x], name="accumulator")


def _variable(name: str, shape: tuple[int, ...]) -> Any:
    info = VariableInfo()
    info.data_shape, info.data_type, info.variable_id = ov.PartialShape(list(shape)), ov.Type.f32, name
    return Variable(info)


def reference_accumulator(steps: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """What `accumulator` answers to each request of one sequence, in numpy."""
    acc, answers = np.zeros_like(steps[0]), []
    for i, x in enumerate(steps):
        acc = acc * 2 + x
        answers.append((acc.copy(), np.full((1, 1), i + 1, np.float32)))
    return answers


def recurrent(features: int = 4) -> ov.Model:
    """A TensorIterator running h := h + x over a sequence of one step, h starting at 0: stateless as it is (y = x);
    with OpenVINO's LowLatency2 h lives in a variable and y is the running sum over the requests."""
    x = _named(ops.parameter([1, 1, features], np.float32, name="x"), "x")
    step_x = ops.parameter([1, 1, features], np.float32)
    h = ops.parameter([1, features], np.float32)
    summed = ops.result(ops.add(h, ops.reshape(step_x, ops.constant(np.array([1, features], np.int64)), False)))
    loop = ops.tensor_iterator()
    loop.set_body(ov.Model([summed], [step_x, h], "step"))
    loop.set_sliced_input(step_x, x.output(0), 0, 1, 1, -1, 1)
    loop.set_merged_input(h, ops.constant(np.zeros((1, features), np.float32)).output(0), summed.output(0))
    y = loop.get_iter_value(summed.output(0), -1)
    y.get_tensor().set_names({"y"})
    return ov.Model([ops.result(y)], [x], "recurrent")


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


def pixels(shape: tuple[int, ...] = (1, 4, 4, 3), dtype: Any = np.uint8, in_name: str = "image") -> ov.Model:
    """Shows the tensor an input received: output 'pixels' = the input as float32 (values unchanged)."""
    x = _named(ops.parameter(list(shape), dtype, name=in_name), in_name)
    y = _named(ops.multiply(ops.convert(x, np.float32), ops.constant(np.float32(1))), "pixels")
    return ov.Model([y], [x], "pixels")


def text_echo(out_name: str = "text_string") -> ov.Model:
    """U8 (N, W) strings in, the same array out: named "..._string", responses carry it as N strings
    (docs/apis.md#strings-2d)."""
    x = _named(ops.parameter([-1, -1], np.uint8, name="text"), "text")
    return ov.Model([_named(ops.add(x, ops.constant(np.uint8(0))), out_name)], [x], "text_echo")


def channel_means(shape: tuple[int, ...] = (1, 6, 8, 3), in_name: str = "image") -> ov.Model:
    """An NHWC float32 image → its mean per channel, (1, C): a batch-1 model for demultiplexed image pipelines."""
    x = _named(ops.parameter(list(shape), np.float32, name=in_name), in_name)
    y = _named(ops.reduce_mean(x, ops.constant(np.array([1, 2], np.int64)), keep_dims=False), "means")
    return ov.Model([y], [x], "channel_means")


def gray_nchw(shape: tuple[int, ...] = (1, 3, 12, 16), weights: tuple[float, ...] = (0.114, 0.587, 0.299)) -> ov.Model:
    """An NCHW model: a 1x1 convolution mixing the channels with `weights` (BGR luma by default) → (1, 1, H, W)."""
    x = _named(ops.parameter(list(shape), np.float32, name="data"), "data")
    kernel = ops.constant(np.array(weights, np.float32).reshape(1, len(weights), 1, 1))
    y = _named(ops.convolution(x, kernel, [1, 1], [0, 0], [0, 0], [1, 1]), "gray")
    return ov.Model([y], [x], "gray_nchw")
