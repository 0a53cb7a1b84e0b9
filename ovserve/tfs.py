"""TensorFlow Serving translation: TensorProto ↔ numpy, PredictRequest/Response, metadata and status messages; the
REST API's JSON bodies (docs/apis.md#tfs-rest)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from google.protobuf import json_format

from . import _proto, images, jsonio, sequences
from ._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from ._proto.tensorflow.core.protobuf import meta_graph_pb2
from ._proto.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2
from .errors import ServingError
from .tensors import TensorSpec, check_declared, check_names, precision_name, request_count, shape_text
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
_INVALID = np.dtype("V1")  # stand-in of the types without a numpy one: their precision reads INVALID

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
    proto = tensor_pb2.TensorProto()
    _fill_tensor_proto(proto, array)
    return proto


def _fill_tensor_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """make_tensor_proto into an empty message in place (a response's map entry: no copy of the data)."""
    proto.dtype = datatype(array.dtype)  # type: ignore[assignment]
    dims = proto.tensor_shape.dim
    for d in array.shape:
        dims.add(size=d)
    if array.dtype == object:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()


def _shape(proto: tensor_pb2.TensorProto, name: str) -> tuple[int, ...]:
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise ServingError(
            "INVALID_SHAPE",
            f"Negative or zero dimension size is not acceptable: {shape_text(shape)}; input name: {name}",
        )
    return shape


def make_ndarray(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decode a TensorProto without copying tensor_content; errors name the input as OVMS does."""
    shape = _shape(proto, name)
    dtype = _NUMPY_OF.get(proto.dtype)
    if dtype is None:  # an unsupported type: an empty array whose precision reads INVALID in the check that follows
        return np.empty(0, dtype=_INVALID)
    count = request_count(shape, name)
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
    """A PredictRequest as an InferRequest whose inputs are decoded once the servable's input specs are known:
    DT_STRING tensors for inputs other than STRING are binary inputs (images, 2-D strings;
    docs/apis.md#binary-inputs)."""
    protos = message.inputs

    def decode(specs: Mapping[str, TensorSpec]) -> images.Decoded:
        check_names(protos, specs)
        arrays: dict[str, np.ndarray | images.EncodedImages] = {}
        for name in sorted(specs):
            if name not in protos:  # an optional input left out
                continue
            proto, spec = protos[name], specs[name]
            if name in sequences.SPECIAL_INPUTS and spec.optional:
                arrays[name] = _special_input(proto, spec)
            elif proto.dtype == DT.DT_STRING and images.converts(spec):
                arrays[name] = images.binary_input(list(proto.string_val), _shape(proto, name), spec)
            else:  # precision, rank, batch and shape as declared come before the content (docs/apis.md#tfs-grpc step 2)
                check_declared(_NUMPY_OF.get(proto.dtype, _INVALID), _shape(proto, name), spec)
                arrays[name] = make_ndarray(proto, name)
        return images.finish(arrays)

    return InferRequest(message.model_spec.name, requested_version(message.model_spec), decode)


def _special_input(proto: tensor_pb2.TensorProto, spec: TensorSpec) -> np.ndarray:
    """sequence_id or sequence_control_input of a stateful model's request: shape [1], the value in uint64_val or
    uint32_val (docs/stateful.md#stateful-models); ovserve also takes it from tensor_content when the dtype is right."""
    name = spec.name
    dims = proto.tensor_shape.dim
    if not dims:
        raise ServingError("SPECIAL_INPUT_NO_TENSOR_SHAPE", f"input name: {name}")
    if len(dims) != 1:
        raise ServingError("INVALID_NO_OF_SHAPE_DIMENSIONS", f"Required shape for {name} is: (1)")
    if dims[0].size != 1:
        raise ServingError("INVALID_SHAPE", f"Required shape for {name} is: (1)")
    assert spec.dtype is not None
    values = getattr(proto, "uint64_val" if spec.dtype == np.uint64 else "uint32_val")
    if len(values) == 1:
        return np.array(values, spec.dtype)
    if proto.dtype == datatype(spec.dtype) and len(proto.tensor_content) == spec.dtype.itemsize:
        return np.frombuffer(proto.tensor_content, spec.dtype)
    raise ServingError(sequences.BAD_TYPE[name], f"input name: {name}")


def predict_response(result: InferResult) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    for name, array in result.outputs.items():
        _fill_tensor_proto(response.outputs[name], array)
    if result.sequence_id is not None:  # in uint64_val, where OVMS's clients read it (docs/stateful.md#stateful-models)
        proto = response.outputs[sequences.SEQUENCE_ID]
        proto.dtype = DT.DT_UINT64
        proto.tensor_shape.dim.add(size=1)
        proto.uint64_val.append(result.sequence_id)
    return response


def _tensor_info(spec: TensorSpec) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=spec.name, dtype=datatype(spec.dtype))  # type: ignore[arg-type]
    info.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in spec.metadata_shape())
    return info


def metadata_response(endpoint: Endpoint) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataResponse with one 'serving_default' signature, as OVMS fills it (docs/apis.md#tfs-grpc)."""
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
        entry.status.error_message = _error_message(status)
    return response


def _error_message(status: VersionStatus) -> str:
    """OVMS's error_message is the code's name; beyond OVMS, a failed row adds why: "UNKNOWN - <reason>"."""
    if status.error_code == "OK" or not status.message:
        return status.error_code
    return f"{status.error_code} - {status.message}"


def status_json(statuses: Iterable[VersionStatus]) -> str:
    """GetModelStatus as OVMS's REST API prints it: protobuf JSON, every field, 1-space indent
    (docs/apis.md#tfs-rest)."""
    response = status_response(statuses)
    text: str = json_format.MessageToJson(response, indent=1, always_print_fields_with_no_presence=True)
    return text


def output_arrays(response: predict_pb2.PredictResponse) -> Mapping[str, np.ndarray]:
    """Client side: every output of a PredictResponse as numpy."""
    return {name: make_ndarray(proto, name) for name, proto in response.outputs.items()}


# --- REST (JSON) translation, docs/apis.md#tfs-rest
# ------------------------------------------------------------------------

MAX_JSON_DEPTH = 100  # nesting levels of arrays and objects OVMS accepts in a request body
_POOL = getattr(_proto, "POOL", None)  # the private descriptor pool of the generated modules, when they have one

# Structural bytes of JSON text: +1 opens a level, -1 closes one, 2 is a quote (strings hide brackets).
_STRUCTURE = np.zeros(256, np.int8)
_STRUCTURE[[ord("["), ord("{")]] = 1
_STRUCTURE[[ord("]"), ord("}")]] = -1
_STRUCTURE[ord('"')] = 2
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')  # what json_depth drops before it counts


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects in a JSON text (brackets inside strings do not count), found with
    numpy over the raw bytes so that a hostile body never reaches the recursive parser."""
    if b"\\" in body:
        body = _ESCAPE.sub(b"__", body)  # escaped quotes must not toggle the in-string state; offsets are kept
    # bytes.translate keeps only brackets, braces and quotes at C speed: a tensor's numbers never reach numpy
    marks = _STRUCTURE[np.frombuffer(body.translate(None, _NOT_STRUCTURE), np.uint8)]
    quotes = marks == 2
    outside = (np.cumsum(quotes, dtype=np.int64) & 1) == 0
    steps = marks[outside & ~quotes].astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def parse_json(body: bytes) -> Any:
    """A request body as Python values; OVMS's errors for too deep (more than 100 levels) and invalid JSON."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise ServingError("JSON_NESTING_DEPTH_EXCEEDED", f"more than {MAX_JSON_DEPTH} levels of arrays and objects")
    return jsonio.loads(body)


def _is_b64(value: Any) -> bool:
    """TF Serving's binary value: an object with the single key "b64" holding a string."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64_decode(text: str, status: str, name: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ServingError(status, f"input {name}: invalid base64 data") from None


def _json_tensor(value: Any, spec: TensorSpec | None, status: str, name: str, bools: bool) -> np.ndarray:
    """One input's JSON value (nested lists, a scalar, strings or {"b64": ...} objects) as an array in the endpoint
    input's precision; numbers are cast as OVMS casts them (1.7 is 1 for an integer input). Inputs unknown to the
    endpoint take I32 for integers and FP32 otherwise, and fail the validation that follows. `bools`: whether the
    body may hold JSON booleans at all (else the walk that finds them among numbers is skipped)."""
    if spec is not None and spec.optional and name in sequences.SPECIAL_INPUTS:
        return _special_json(value, spec, status)
    try:
        raw = np.array(value)  # numpy infers the shape; ragged or mixed nesting raises ValueError
    except (ValueError, TypeError, OverflowError):
        raise ServingError(status, f"input {name}: nested lists of unequal lengths or depths") from None
    if raw.size == 0:
        raise ServingError(status, f"input {name}: empty array")
    target = spec.dtype if spec is not None else None
    kind = raw.dtype.kind
    if kind in "iuf":
        if target is None:
            target = np.dtype(np.float32) if kind == "f" else np.dtype(np.int32)
        elif target.kind not in "iuf":
            raise ServingError(status, f"input {name}: numbers for a {precision_name(target)} input")
        if bools and jsonio.has_bool(value):
            raise ServingError(status, f"input {name}: booleans among numbers")
        with np.errstate(all="ignore"):
            converted: np.ndarray = raw.astype(target)
        return converted
    if kind == "U":  # plain strings: STRING inputs and U8 inputs (2-D strings, docs/apis.md#strings-2d)
        if target is not None and target in (np.dtype(np.uint8), np.dtype(np.object_)):
            encoded: np.ndarray = np.char.encode(raw, "utf-8").astype(object)
            return encoded
        raise ServingError(status, f"input {name}: strings for a {precision_name(target)} input")
    if kind == "O":
        flat = raw.ravel()
        if all(_is_b64(v) for v in flat):  # binary inputs; decoded into images later (docs/apis.md#binary-inputs)
            values = np.empty(flat.size, dtype=object)
            values[:] = [_b64_decode(v["b64"], status, name) for v in flat]
            return values.reshape(raw.shape or (1,))
    raise ServingError(status, f'input {name}: values must be numbers, strings or {{"b64": ...}} objects')


def _special_json(value: Any, spec: TensorSpec, status: str) -> np.ndarray:
    """sequence_id or sequence_control_input in a REST body: a list of one unsigned integer, as [7]
    (docs/stateful.md#stateful-models)."""
    assert spec.dtype is not None
    limit = np.iinfo(spec.dtype).max
    if not (isinstance(value, list) and len(value) == 1 and type(value[0]) is int and 0 <= value[0] <= limit):
        shown = json.dumps(value)[:60]
        raise ServingError(status, f"input {spec.name}: expected one unsigned integer in a list, as [7]; got {shown}")
    return np.array(value, spec.dtype)


def _only_input(specs: Mapping[str, TensorSpec]) -> tuple[str, TensorSpec]:
    required = [(name, spec) for name, spec in specs.items() if not spec.optional]
    if len(required) != 1:
        raise ServingError("INVALID_INPUT_FORMAT", f"the no-named format needs one input; there are {len(required)}")
    return required[0]


def _row_inputs(instances: Any, specs: Mapping[str, TensorSpec], bools: bool) -> dict[str, np.ndarray]:
    status = "REST_COULD_NOT_PARSE_INSTANCE"
    if not isinstance(instances, list):
        raise ServingError("REST_INSTANCES_NOT_AN_ARRAY")
    if not instances:
        raise ServingError("REST_NO_INSTANCES_FOUND")
    first = instances[0]
    if isinstance(first, dict) and not _is_b64(first):  # named: [{input: value, ...}, ...]
        columns: dict[str, list[Any]] = {}
        for instance in instances:
            if not isinstance(instance, dict):
                raise ServingError("REST_NAMED_INSTANCE_NOT_AN_OBJECT")
            if not instance:
                raise ServingError(status, "an instance names no input")
            for name, value in instance.items():
                columns.setdefault(name, []).append(value)
        inputs = {name: _json_tensor(values, specs.get(name), status, name, bools) for name, values in columns.items()}
        if len({len(values) for values in columns.values()}) > 1:
            sizes = ", ".join(f"{name}: {len(values)}" for name, values in columns.items())
            raise ServingError("REST_INSTANCES_BATCH_SIZE_DIFFER", sizes)
        return inputs
    number = isinstance(first, (int, float)) and not isinstance(first, bool)
    if isinstance(first, (list, str)) or number or _is_b64(first):  # no-named: the instances are the tensor
        name, spec = _only_input(specs)
        return {name: _json_tensor(instances, spec, status, name, bools)}
    raise ServingError("REST_INSTANCES_NOT_NAMED_OR_NONAMED")


def _column_inputs(inputs: Any, specs: Mapping[str, TensorSpec], bools: bool) -> dict[str, np.ndarray]:
    status = "REST_COULD_NOT_PARSE_INPUT"
    if isinstance(inputs, list):  # no-named: the value is the tensor of the only input
        name, spec = _only_input(specs)
        return {name: _json_tensor(inputs, spec, status, name, bools)}
    if not isinstance(inputs, dict):
        raise ServingError("REST_INPUTS_NOT_AN_OBJECT")
    if not inputs:
        raise ServingError("REST_NO_INPUTS_FOUND")
    return {name: _json_tensor(value, specs.get(name), status, name, bools) for name, value in inputs.items()}


def _binary_inputs(inputs: dict[str, np.ndarray], specs: Mapping[str, TensorSpec]) -> images.Decoded:
    """Strings and {"b64": ...} values sent to inputs other than STRING become images or 2-D strings
    (docs/apis.md#binary-inputs)."""
    check_names(inputs.keys(), specs)
    arrays: dict[str, np.ndarray | images.EncodedImages] = {}
    for name in sorted(specs):
        if name not in inputs:  # an optional input left out
            continue
        array, spec = inputs[name], specs[name]
        if array.dtype == object and images.converts(spec):
            arrays[name] = images.binary_input(array.ravel().tolist(), array.shape, spec)
        else:
            arrays[name] = array
    return images.finish(arrays)


class RestPredict:
    """A TF Serving REST predict body as a data-plane decoder: parsed once the servable's input specs are known (its
    values take their precisions); it remembers the request's format for the response (docs/apis.md#tfs-rest)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.row = False

    def __call__(self, specs: Mapping[str, TensorSpec]) -> images.Decoded:
        """The arrays, or an awaitable of them while images decode (see images.finish)."""
        document = parse_json(self.body)
        if not isinstance(document, dict):
            raise ServingError("REST_BODY_IS_NOT_AN_OBJECT")
        if ("instances" in document) == ("inputs" in document):
            raise ServingError("REST_PREDICT_UNKNOWN_ORDER")
        self.row = "instances" in document
        bools = jsonio.mentions_bool(self.body)
        if self.row:
            inputs = _row_inputs(document["instances"], specs, bools)
        else:
            inputs = _column_inputs(document["inputs"], specs, bools)
        return _binary_inputs(inputs, specs)

    def response(self, outputs: Mapping[str, np.ndarray]) -> bytes:
        return predict_json(outputs, self.row)


# Powers of ten a double holds exactly: scaling by them rounds once, so the decimal arithmetic below is exact
# enough to decide; elements it cannot vouch for are formatted by Python instead.
_POW10 = 10.0 ** np.arange(23)


def _round_significant(x: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite nonzero doubles rounded to `digits` significant decimal digits: the double nearest to the decimal
    printf("%.<digits>g") writes; and a mask of the elements this arithmetic cannot vouch for (a near tie, or a
    scale beyond exact powers of ten)."""
    exponent = np.floor(np.log10(np.abs(x))).astype(np.int64)

    def scaled(shift: np.ndarray) -> np.ndarray:
        up = _POW10[np.clip(shift, 0, 22)]
        down = _POW10[np.clip(-shift, 0, 22)]
        result: np.ndarray = np.where(shift >= 0, x * up, x / down)
        return result

    shift = digits - 1 - exponent
    s = np.abs(scaled(shift))  # log10 may be one off next to a power of ten: fix the exponent, then rescale
    shift = shift - (s >= 10.0**digits) + (s < 10.0 ** (digits - 1))
    s = scaled(shift)  # |s| in [10**(digits-1), 10**digits]: its integer part holds the significant digits
    mantissa = np.rint(s)
    unsure = (np.abs(shift) > 22) | (np.abs(np.abs(s - np.floor(s)) - 0.5) < 10.0**digits * 2.0**-50)
    up, down = _POW10[np.clip(shift, 0, 22)], _POW10[np.clip(-shift, 0, 22)]
    value: np.ndarray = np.where(shift >= 0, mantissa / up, mantissa * down)  # one rounding: the nearest double
    return value, unsure


def _float32_text_value(v: float) -> float:
    short = float(f"{v:.6g}")
    return short if np.float32(short) == np.float32(v) else float(f"{v:.9g}")


def json_floats(array: np.ndarray) -> np.ndarray:
    """Float32 values as the doubles a client reads from TF Serving's JSON text (json_tensor's WriteDecimal): the
    6-significant-digit form when it converts back to the same float32, else 9 digits; so 0.1f reads 0.1, not
    0.10000000149011612. Vectorised; returns float64 (NaN and infinities unchanged)."""
    x = array.astype(np.float64)
    regular = np.isfinite(x) & (x != 0)
    values = x[regular]
    with np.errstate(all="ignore"):  # elements beyond exact powers of ten compute garbage here; redone below
        short, unsure_short = _round_significant(values, 6)
        full, unsure_full = _round_significant(values, 9)
        same = short.astype(np.float32) == values.astype(np.float32)
    chosen = np.where(same, short, full)
    for i in np.flatnonzero(unsure_short | unsure_full):  # rare: near ties, subnormal or huge values
        chosen[i] = _float32_text_value(float(values[i]))
    x[regular] = chosen
    return x


def json_values(array: np.ndarray, name: str) -> Any:
    """An output as JSON-ready nested lists (TF Serving's rules): integers as ints, floats as TF Serving prints them,
    strings as text or, for outputs named *_bytes, {"b64": ...}. FP16, U16 and BOOL cannot be rendered."""
    dtype = array.dtype
    if dtype == np.float32:
        return json_floats(array).tolist()
    if dtype == np.float64:
        return array.tolist()  # %.6g when it round-trips, else %.17g: a client reads the same double either way
    if dtype.kind in "iu" and dtype != np.uint16:
        return array.tolist()
    if dtype.kind == "O":
        flat = array.ravel()
        rendered = np.empty(flat.size, dtype=object)
        if name.endswith("_bytes"):
            rendered[:] = [{"b64": base64.b64encode(_as_bytes(v)).decode()} for v in flat]
        else:
            rendered[:] = [_as_bytes(v).decode("utf-8", "replace") for v in flat]
        return rendered.reshape(array.shape).tolist()
    raise ServingError("REST_UNSUPPORTED_PRECISION", f"output {name} is {precision_name(dtype)}")


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def predict_json(outputs: Mapping[str, np.ndarray], row: bool) -> bytes:
    """A predict response body: {"predictions": ...} for row requests, {"outputs": ...} for column requests."""
    names = sorted(outputs)
    values = {name: json_values(outputs[name], name) for name in names}
    if not row:
        payload: dict[str, Any] = {"outputs": values[names[0]] if len(names) == 1 else values}
    else:
        batch: int | None = None
        for name in names:
            shape = outputs[name].shape
            if not shape:
                raise ServingError("REST_PROTO_TO_STRING_ERROR", f"Tensor name: {name} has no shape information")
            if batch is None:
                batch = shape[0]
            elif shape[0] != batch:
                raise ServingError(
                    "REST_PROTO_TO_STRING_ERROR",
                    f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}",
                )
        if len(names) == 1:
            payload = {"predictions": values[names[0]]}
        else:
            payload = {"predictions": [{name: values[name][i] for name in names} for i in range(batch or 0)]}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def metadata_json(endpoint: Endpoint) -> str:
    """GetModelMetadata as OVMS's REST API prints it: protobuf JSON, every field, 1-space indent, the Any with its
    type URL (docs/apis.md#tfs-rest)."""
    text: str = json_format.MessageToJson(
        metadata_response(endpoint), indent=1, always_print_fields_with_no_presence=True, descriptor_pool=_POOL
    )
    return text
