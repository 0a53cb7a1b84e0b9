"""TensorFlow Serving translation: TensorProto ↔ numpy, PredictRequest/Response, metadata and status messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from google.protobuf import json_format

from ._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from ._proto.tensorflow.core.protobuf import meta_graph_pb2
from ._proto.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2
from .errors import ServingError
from .tensors import TensorSpec, shape_text
from .types import Endpoint, InferRequest, InferResult, VersionStatus

DT = types_pb2.DataType
_NUMPY_OF: dict[int, np.dtype[Any]] = {
    DT.DT_FLOAT: np.dtype(np.float32),
    DT.DT_DOUBLE: np.dtype(np.float64),
    DT.DT_HALF: np.dtype(np.float16),
    DT.DT_INT64: np.dtype(np.int64),
    DT.DT_INT32: np.dtype(np.int32),
    DT.DT_INT16: np.dtype(np.int16),
    DT.DT_INT8: np.dtype(np.int8),
    DT.DT_UINT64: np.dtype(np.uint64),
    DT.DT_UINT32: np.dtype(np.uint32),
    DT.DT_UINT16: np.dtype(np.uint16),
    DT.DT_UINT8: np.dtype(np.uint8),
    DT.DT_BOOL: np.dtype(np.bool_),
    DT.DT_STRING: np.dtype(np.object_),
}
_DT_OF = {dtype: dt for dt, dtype in _NUMPY_OF.items()}

# Typed value fields a client may use instead of tensor_content. OVMS reads only half_val (FP16), int_val (U16)
# and string_val; ovserve also accepts the field TensorFlow's own make_tensor_proto fills for each dtype.
_VALUE_FIELD = {
    DT.DT_FLOAT: "float_val",
    DT.DT_DOUBLE: "double_val",
    DT.DT_HALF: "half_val",
    DT.DT_INT64: "int64_val",
    DT.DT_INT32: "int_val",
    DT.DT_INT16: "int_val",
    DT.DT_INT8: "int_val",
    DT.DT_UINT64: "uint64_val",
    DT.DT_UINT32: "uint32_val",
    DT.DT_UINT16: "int_val",
    DT.DT_UINT8: "int_val",
    DT.DT_BOOL: "bool_val",
}


def datatype(dtype: np.dtype | None) -> int:
    """TF DataType number of a numpy dtype (DT_INVALID when there is none)."""
    return _DT_OF.get(dtype, DT.DT_INVALID) if dtype is not None else DT.DT_INVALID


def make_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode an array: raw little-endian bytes in tensor_content, strings in string_val."""
    proto = tensor_pb2.TensorProto(dtype=datatype(array.dtype))  # type: ignore[arg-type]
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape)
    if array.dtype == object:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def make_ndarray(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decode a TensorProto without copying tensor_content; errors name the input as OVMS does."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise ServingError(
            "INVALID_SHAPE",
            f"Negative or zero dimension size is not acceptable: {shape_text(shape)}; input name: {name}",
        )
    dtype = _NUMPY_OF.get(proto.dtype)
    if dtype is None:  # an unsupported type: an empty array whose precision reads INVALID in the check that follows
        return np.empty(0, dtype="V1")
    count = int(np.prod(shape, dtype=np.int64))
    if proto.dtype == DT.DT_STRING:
        if len(proto.string_val) != (shape[0] if shape else 1):
            raise ServingError(
                "INVALID_VALUE_COUNT",
                f"Expected: {shape[0] if shape else 1}; Actual: {len(proto.string_val)}; input name: {name}",
            )
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
        return values.reshape(shape) if count == len(values) else values
    content = proto.tensor_content  # each read of the field copies the payload: read it once
    if content:
        expected = count * dtype.itemsize
        if len(content) != expected:
            raise ServingError(
                "INVALID_CONTENT_SIZE",
                f"Expected: {expected} bytes; Actual: {len(content)} bytes; input name: {name}",
            )
        return np.frombuffer(content, dtype).reshape(shape)
    values = getattr(proto, _VALUE_FIELD[proto.dtype])
    if not values and count:
        raise ServingError(
            "INVALID_CONTENT_SIZE", f"Expected: {count * dtype.itemsize} bytes; Actual: 0 bytes; input name: {name}"
        )
    if len(values) != count:
        raise ServingError("INVALID_VALUE_COUNT", f"Expected: {count}; Actual: {len(values)}; input name: {name}")
    if proto.dtype == DT.DT_HALF:
        return np.array(values, dtype=np.uint16).view(np.float16).reshape(shape)
    result: np.ndarray = np.array(values, dtype=dtype).reshape(shape)
    return result


# --- messages ----------------------------------------------------------------------------------------------


def requested_version(spec: model_pb2.ModelSpec) -> int | None:
    """The version a ModelSpec asks for; None (absent or 0) means the default version."""
    return spec.version.value if spec.HasField("version") and spec.version.value else None


def predict_request(message: predict_pb2.PredictRequest) -> InferRequest:
    inputs = {name: make_ndarray(proto, name) for name, proto in message.inputs.items()}
    return InferRequest(message.model_spec.name, requested_version(message.model_spec), inputs)


def predict_response(result: InferResult) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    for name, array in result.outputs.items():
        response.outputs[name].CopyFrom(make_tensor_proto(array))
    return response


def _tensor_info(spec: TensorSpec) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=spec.name, dtype=datatype(spec.dtype))  # type: ignore[arg-type]
    info.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in spec.metadata_shape())
    return info


def metadata_response(endpoint: Endpoint) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataResponse with one 'serving_default' signature, as OVMS fills it (spec §4.4)."""
    signature = meta_graph_pb2.SignatureDef()
    for name, spec in endpoint.inputs.items():
        signature.inputs[name].CopyFrom(_tensor_info(spec))
    for name, spec in endpoint.outputs.items():
        signature.outputs[name].CopyFrom(_tensor_info(spec))
    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.signature_def["serving_default"].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = endpoint.name
    response.model_spec.version.value = endpoint.version
    response.metadata["signature_def"].Pack(signatures)
    return response


def check_metadata_request(message: get_model_metadata_pb2.GetModelMetadataRequest) -> None:
    if not message.HasField("model_spec"):
        raise ServingError("MODEL_SPEC_MISSING")
    if list(message.metadata_field) != ["signature_def"]:
        raise ServingError(
            "INVALID_SIGNATURE_DEF", f'metadata_field must be ["signature_def"], got {list(message.metadata_field)}'
        )


_STATE = get_model_status_pb2.ModelVersionStatus.State


def status_response(statuses: Iterable[VersionStatus]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add(version=status.version, state=_STATE.Value(status.state))
        entry.status.error_code = status.error_code
        entry.status.error_message = status.error_code
    return response


def status_json(statuses: Iterable[VersionStatus]) -> str:
    """GetModelStatus as OVMS's REST API prints it: protobuf JSON, every field, 1-space indent (spec §4.5)."""
    response = status_response(statuses)
    text: str = json_format.MessageToJson(response, indent=1, always_print_fields_with_no_presence=True)
    return text


def output_arrays(response: predict_pb2.PredictResponse) -> Mapping[str, np.ndarray]:
    """Client side: every output of a PredictResponse as numpy."""
    return {name: make_ndarray(proto, name) for name, proto in response.outputs.items()}
