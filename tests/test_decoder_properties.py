"""Property tests: each door's request decoder and the config loader, fed any input Hypothesis makes, either give
arrays that pass the endpoint checks or raise the error table's ServingError (ConfigError for configs) — never any
other exception. Seeded and bounded for `make test`; OVSERVE_PROPERTY_EXAMPLES raises the count (`make fuzz`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovserve import kfs, tfs
from ovserve._proto import grpc_predict_v2_pb2 as kpb
from ovserve._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from ovserve._proto.tensorflow_serving.apis import predict_pb2
from ovserve.config import parse_config
from ovserve.errors import ConfigError, ServingError
from ovserve.shm import Regions
from ovserve.tensors import TensorSpec, check_inputs
from ovserve.types import ImageLimits, InferRequest

EXAMPLES = int(os.environ.get("OVSERVE_PROPERTY_EXAMPLES", "400"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)
SPECS = {
    "x": TensorSpec("x", np.dtype(np.float32), (1, 4)),
    "n": TensorSpec("n", np.dtype(np.int64), (-1, 2)),
    "image": TensorSpec("image", np.dtype(np.uint8), (-1, -1, -1, 3), layout="NHWC"),
    "text": TensorSpec("text", np.dtype(object), (-1,)),
}
NAMES = st.sampled_from([*SPECS, "y", "", "\x00", "sequence_id"])
DIMS = st.lists(st.one_of(st.integers(-3, 6), st.integers(-(2**63), 2**63 - 1)), max_size=5)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def decoded(request: InferRequest, specs: Mapping[str, TensorSpec] = SPECS) -> None:
    """Run the decoder as the data plane does; only ServingError may come out."""
    try:
        inputs: Any = request.inputs(specs) if callable(request.inputs) else request.inputs
        if not isinstance(inputs, Mapping):
            inputs = asyncio.run(inputs.finish(ImageLimits(max_pixels=1 << 16, max_bytes=1 << 22)))
        check_inputs(inputs, specs)
    except ServingError:
        pass


# --- TF Serving gRPC ---------------------------------------------------------------------------------------------


@st.composite
def tensor_protos(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=draw(st.integers(0, 30)))
    if draw(st.booleans()):
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in draw(DIMS)]
        proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(dim=dims))
    field = draw(st.sampled_from(["tensor_content", "float_val", "int64_val", "string_val", "int_val", "none"]))
    if field == "tensor_content":
        proto.tensor_content = draw(st.binary(max_size=64))
    elif field == "float_val":
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=10)))
    elif field == "int64_val":
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10)))
    elif field == "int_val":
        proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=10)))
    elif field == "string_val":
        proto.string_val.extend(draw(st.lists(st.binary(max_size=40), max_size=4)))
    return proto


@SETTINGS
@given(st.dictionaries(NAMES, tensor_protos(), max_size=4))
def test_tfs_grpc_decoder(inputs: dict[str, tensor_pb2.TensorProto]) -> None:
    message = predict_pb2.PredictRequest()
    message.model_spec.name = "m"
    for name, proto in inputs.items():
        message.inputs[name].CopyFrom(proto)
    decoded(tfs.predict_request(message))


# --- KServe gRPC -------------------------------------------------------------------------------------------------

DATATYPES = st.sampled_from(["FP32", "INT64", "UINT8", "BYTES", "BOOL", "FP16", "INT8", "UINT64", "XYZ", ""])


@st.composite
def infer_requests(draw: st.DrawFn) -> kpb.ModelInferRequest:
    message = kpb.ModelInferRequest(model_name="m")
    for name in draw(st.lists(NAMES, max_size=4)):
        tensor = message.inputs.add(name=name, datatype=draw(DATATYPES), shape=draw(DIMS))
        choice = draw(st.sampled_from(["raw", "fp32", "int64", "bytes", "none"]))
        if choice == "raw":
            message.raw_input_contents.append(draw(st.binary(max_size=64)))
        elif choice == "fp32":
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=10)))
        elif choice == "int64":
            tensor.contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10)))
        elif choice == "bytes":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=40), max_size=4)))
    return message


@SETTINGS
@given(infer_requests())
def test_kserve_grpc_decoder(message: kpb.ModelInferRequest) -> None:
    try:
        request = kfs.infer_request(message, Regions())
    except ServingError:
        return
    decoded(request)


# --- REST (TF Serving and KServe) --------------------------------------------------------------------------------


def rest_tensor(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"name": st.just(name), "datatype": DATATYPES, "shape": DIMS},
        optional={"data": JSON, "parameters": JSON},
    )


@SETTINGS
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries({}, optional={"instances": JSON, "inputs": JSON, "signature_name": JSON}),
    ),
    st.binary(max_size=16),
)
def test_tfs_rest_decoder(document: Any, tail: bytes) -> None:
    for body in (json.dumps(document).encode(), json.dumps(document).encode()[:-1] + tail):
        decoded(InferRequest("m", None, tfs.RestPredict(body)))


@SETTINGS
@given(
    st.fixed_dictionaries(
        {"inputs": st.lists(NAMES.flatmap(rest_tensor), max_size=3)},
        optional={"id": JSON, "outputs": JSON, "parameters": JSON},
    ),
    st.binary(max_size=64),
    st.one_of(st.none(), st.integers(-5, 200).map(str), st.text(max_size=5)),
)
def test_kserve_rest_decoder(document: dict[str, Any], binary: bytes, length: str | None) -> None:
    head = json.dumps(document).encode()
    headers = {} if length is None else {"inference-header-content-length": length}
    try:
        parsed = kfs.rest_infer("m", None, head + binary, headers, Regions())
    except ServingError:
        return
    decoded(parsed.request)


# --- config.json -------------------------------------------------------------------------------------------------

VALID = {
    "model_config_list": [{"config": {"name": "m", "base_path": "m", "shape": "(1,4)", "nireq": 2}}],
    "pipeline_config_list": [
        {
            "name": "p",
            "inputs": ["x"],
            "demultiply_count": -1,
            "nodes": [
                {
                    "name": "n",
                    "model_name": "m",
                    "type": "DL model",
                    "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
                    "outputs": [{"data_item": "y", "alias": "y"}],
                }
            ],
            "outputs": [{"y": {"node_name": "n", "data_item": "y"}}],
        }
    ],
}


@st.composite
def mutated(draw: st.DrawFn, node: Any = VALID, depth: int = 0) -> Any:
    """`node` with some of its parts replaced, dropped or added at any depth."""
    action = draw(st.sampled_from(["keep", "keep", "replace", "descend", "descend"]))
    if action == "replace" or depth > 6:
        return draw(JSON) if action == "replace" else node
    if isinstance(node, dict) and action == "descend":
        out = {k: draw(mutated(v, depth + 1)) for k, v in node.items() if draw(st.integers(0, 9))}
        if draw(st.integers(0, 5)) == 0:
            out[draw(st.sampled_from(["name", "shape", "layout", "batch_size", "nireq", "x", "demultiply_count"]))] = (
                draw(JSON)
            )
        return out
    if isinstance(node, list) and action == "descend":
        return [draw(mutated(v, depth + 1)) for v in node] * draw(st.integers(0, 2))
    return node


@SETTINGS
@given(mutated())
def test_config_loader(document: Any) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(document, Path("/nonexistent"))
