"""KServe v2 translation for both transports: ModelInferRequest and REST JSON/binary bodies ↔ numpy, responses,
metadata, readiness and Triton's ModelConfig (docs/apis.md#protobufs, docs/apis.md#data-types, docs/apis.md#kserve-grpc,
docs/apis.md#kserve-rest).

A request becomes an `InferRequest` whose inputs are a decoder: given the servable's input specs it validates in
OVMS's order (number of inputs, buffer coherency, then each input by sorted name: presence, negative dimensions,
precision, rank, batch, shape, content) before it reads any buffer, so a wrong request never costs a decode. Raw
buffers become numpy views without copies, and so do inputs in a registered shared-memory region (Triton's extension);
outputs that name a region are written into it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__, images, jsonio, sequences, stats
from ._proto import grpc_predict_v2_pb2 as pb
from .errors import ServingError
from .shm import Regions, RegionStatus, Target
from .tensors import TensorSpec, check_declared, element_count, request_count, shape_text
from .types import Endpoint, InferRequest, InferResult

SERVER_NAME = "OpenVINO Model Server"
PLATFORM = "OpenVINO"
CONFIG_PLATFORM = "openvino"  # Triton ModelConfig platform/backend
INT64_MAX = 2**63 - 1

# KServe datatype names (docs/apis.md#data-types) of numpy dtypes; strings are BYTES, held as object arrays of bytes.
_DATATYPE: dict[np.dtype[Any], str] = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.object_): "BYTES",
}
NUMPY_OF: dict[str, np.dtype[Any]] = {name: dtype for dtype, name in _DATATYPE.items()}
BYTES = "BYTES"

# The typed field of InferTensorContents that carries each datatype, with the numpy type of its values (narrower
# integers travel widened and are cast, wrapping, as OVMS does). FP16 has none: raw only.
_CONTENTS_FIELD: dict[str, tuple[str, type[Any]]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", np.object_),
}

# Triton ModelConfig DataType of each KServe datatype.
_CONFIG_TYPE = {
    "BOOL": pb.TYPE_BOOL,
    "UINT8": pb.TYPE_UINT8,
    "UINT16": pb.TYPE_UINT16,
    "UINT32": pb.TYPE_UINT32,
    "UINT64": pb.TYPE_UINT64,
    "INT8": pb.TYPE_INT8,
    "INT16": pb.TYPE_INT16,
    "INT32": pb.TYPE_INT32,
    "INT64": pb.TYPE_INT64,
    "FP16": pb.TYPE_FP16,
    "FP32": pb.TYPE_FP32,
    "FP64": pb.TYPE_FP64,
    "BYTES": pb.TYPE_STRING,
}


def datatype(dtype: np.dtype[Any] | None) -> str:
    """KServe datatype name of a numpy dtype; "INVALID" when there is none (bf16 and the like)."""
    return _DATATYPE.get(dtype, "INVALID") if dtype is not None else "INVALID"


def element_size(name: str) -> int:
    """Bytes per element of a KServe datatype (BYTES and unknown names: 1 and 0, as OVMS counts them)."""
    if name == BYTES:
        return 1
    dtype = NUMPY_OF.get(name)
    return dtype.itemsize if dtype is not None else 0


_VERSION_RE = re.compile(r"[0-9]+")


def parse_version(text: str) -> int | None:
    """A KServe version string: empty or 0 is the default version (None); anything but digits fitting int64 is
    MODEL_VERSION_INVALID_FORMAT."""
    if not text:
        return None
    if not _VERSION_RE.fullmatch(text) or int(text) > INT64_MAX:
        raise ServingError("MODEL_VERSION_INVALID_FORMAT", f"version: {text}")
    return int(text) or None


# --- request tensors ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tensor:
    """One request input as received, not yet decoded: raw little-endian bytes, or typed values."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | memoryview | None = None  # raw_input_contents[i] / the REST binary part
    values: Any = None  # a typed InferTensorContents field, or a flat numpy array decoded from REST JSON
    bytes_status: str = "INVALID_CONTENT_SIZE"  # status of a malformed length-prefixed BYTES buffer
    region: str = ""  # the shared-memory region `raw` is a view of


def _count(shape: Sequence[int]) -> int:
    return element_count(shape)


def split_bytes(buffer: bytes | memoryview, name: str, status: str = "INVALID_CONTENT_SIZE") -> list[bytes]:
    """Elements of a BYTES buffer: each is a 4-byte little-endian length and that many bytes."""
    view = memoryview(buffer).cast("B")
    size = len(view)
    items: list[bytes] = []
    offset = 0
    while size - offset >= 4:
        length = int.from_bytes(view[offset : offset + 4], "little")
        if offset + 4 + length > size:
            raise ServingError(
                status,
                f"Batch length metadata exceeded buffer size, buffer size: {size}, batch length: {length}; "
                f"input name: {name}",
            )
        items.append(bytes(view[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    if offset != size:
        raise ServingError(status, f"Processed bytes: {offset} do not equal to buffer size: {size}; input name: {name}")
    return items


def join_bytes(array: np.ndarray) -> bytes:
    """A BYTES tensor's wire form: every element as a 4-byte little-endian length and its bytes."""
    parts: list[bytes] = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)


def _object_array(items: Sequence[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array.reshape(shape)


def _decode(tensor: Tensor, dtype: np.dtype[Any]) -> np.ndarray:
    """The array of a validated tensor, after the content check (docs/apis.md#kserve-grpc step 4)."""
    name, shape = tensor.name, tensor.shape
    count = request_count(shape, name)
    if tensor.raw is not None:
        if tensor.datatype == BYTES:
            items = split_bytes(tensor.raw, name, tensor.bytes_status)
            if len(items) != count:
                raise ServingError(
                    "INVALID_VALUE_COUNT", f"Expected: {count} values; Actual: {len(items)} values; input name: {name}"
                )
            return _object_array(items, shape)
        expected = count * dtype.itemsize
        if len(tensor.raw) != expected:
            where = f"; shared memory region: {tensor.region}" if tensor.region else ""
            raise ServingError(
                "INVALID_CONTENT_SIZE",
                f"Expected: {expected} bytes; Actual: {len(tensor.raw)} bytes; input name: {name}{where}",
            )
        return np.frombuffer(tensor.raw, dtype).reshape(shape)
    values = tensor.values if tensor.values is not None else ()
    if len(values) != count:
        raise ServingError(
            "INVALID_VALUE_COUNT", f"Expected: {count} values; Actual: {len(values)} values; input name: {name}"
        )
    if tensor.datatype == BYTES:
        return _object_array(list(values), shape)
    if not isinstance(values, np.ndarray):  # a protobuf repeated field
        values = np.fromiter(values, _CONTENTS_FIELD[tensor.datatype][1], count)
    return values.astype(dtype, copy=False).reshape(shape)


def _items(tensor: Tensor) -> list[bytes]:
    """The elements of a BYTES tensor, from its length-prefixed raw buffer or its bytes_contents."""
    if tensor.raw is not None:
        return split_bytes(tensor.raw, tensor.name, tensor.bytes_status)
    return list(tensor.values) if tensor.values is not None else []


def _decoder(tensors: Sequence[Tensor], coherency: ServingError | None = None) -> Any:
    """The InferRequest decoder: validates `tensors` against the servable's specs in OVMS's order, then decodes.
    BYTES tensors for inputs other than STRING are binary inputs (images, 2-D strings; docs/apis.md#binary-inputs)."""

    def decode(specs: Mapping[str, TensorSpec]) -> images.Decoded:
        by_name = {t.name: t for t in tensors}
        expected = sum(1 for name, spec in specs.items() if not spec.optional or name in by_name)
        if not tensors or len(tensors) != expected:
            raise ServingError("INVALID_NO_OF_INPUTS", f"Expected: {expected}; Actual: {len(tensors)}")
        if coherency is not None:
            raise coherency
        checked: list[tuple[Tensor, np.dtype[Any]]] = []
        binary: dict[str, np.ndarray | images.EncodedImages] = {}
        for name in sorted(specs):
            tensor = by_name.get(name)
            if tensor is None:
                if specs[name].optional:
                    continue
                raise ServingError("INVALID_MISSING_INPUT", f"Required input: {name}")
            if name in sequences.SPECIAL_INPUTS and specs[name].optional:
                checked.append((tensor, _special_input(tensor, specs[name])))
                continue
            if any(d < 0 for d in tensor.shape):
                shape = shape_text(tensor.shape)
                raise ServingError(
                    "INVALID_SHAPE", f"Negative or zero dimension size is not acceptable: {shape}; input name: {name}"
                )
            spec = specs[name]
            if tensor.datatype == BYTES and images.converts(spec):
                binary[name] = images.binary_input(_items(tensor), tensor.shape, spec, kserve=True)
                continue
            dtype = NUMPY_OF.get(tensor.datatype)
            if (spec.dtype is not None and dtype != spec.dtype) or dtype is None:
                raise ServingError(
                    "INVALID_PRECISION",
                    f"Expected: {datatype(spec.dtype)}; Actual: {tensor.datatype}; input name: {name}",
                )
            check_declared(dtype, tensor.shape, spec)  # rank, batch and shape as declared: no buffer read yet
            checked.append((tensor, dtype))
        arrays = {tensor.name: _decode(tensor, dtype) for tensor, dtype in checked}
        return images.finish({**arrays, **binary}) if binary else arrays

    return decode


def _special_input(tensor: Tensor, spec: TensorSpec) -> np.dtype[Any]:
    """Check sequence_id (UINT64) or sequence_control_input (UINT32) of a stateful model's request: shape [1], its
    one value in the datatype's contents field or in raw_input_contents (docs/stateful.md#stateful-models, as KServe
    carries them)."""
    name = spec.name
    if not tensor.shape:
        raise ServingError("SPECIAL_INPUT_NO_TENSOR_SHAPE", f"input name: {name}")
    if len(tensor.shape) != 1:
        raise ServingError("INVALID_NO_OF_SHAPE_DIMENSIONS", f"Required shape for {name} is: (1)")
    if tensor.shape[0] != 1:
        raise ServingError("INVALID_SHAPE", f"Required shape for {name} is: (1)")
    assert spec.dtype is not None
    if tensor.datatype != datatype(spec.dtype):
        wanted = datatype(spec.dtype)
        raise ServingError(sequences.BAD_TYPE[name], f"KServe: datatype {wanted}, not {tensor.datatype}; input: {name}")
    return spec.dtype


# --- shared memory (Triton's extension) --------------------------------------------------------------------

SHM_REGION = "shared_memory_region"
SHM_OFFSET = "shared_memory_offset"
SHM_BYTE_SIZE = "shared_memory_byte_size"
_SHM_KEYS = (SHM_REGION, SHM_OFFSET, SHM_BYTE_SIZE)


@dataclass(frozen=True, slots=True)
class SharedRef:
    """The bytes of a registered region an input or output names."""

    region: str
    offset: int
    byte_size: int


def shared_ref(parameters: Mapping[str, Any], tensor: str) -> SharedRef | None:
    """An input's or output's ("input x") shared-memory parameters, None when it names no region. The region and
    its byte size come together; the offset is optional (0)."""
    if not any(key in parameters for key in _SHM_KEYS):
        return None
    region, offset, size = (parameters.get(key) for key in _SHM_KEYS)
    if not isinstance(region, str) or not region or size is None:
        raise ServingError(
            "SHM_INVALID_PARAMETERS", f"{tensor}: {SHM_REGION} (a region name) and {SHM_BYTE_SIZE} go together"
        )
    offset = 0 if offset is None else offset
    for key, value in ((SHM_BYTE_SIZE, size), (SHM_OFFSET, offset)):
        if type(value) is not int or value < 0:
            raise ServingError("SHM_INVALID_PARAMETERS", f"{tensor}: {key} must be an integer >= 0, not {value!r}")
    return SharedRef(region, offset, size)


def _grpc_parameters(parameters: Any) -> dict[str, Any]:
    """The shared-memory entries of an InferParameter map as plain values."""
    values = {}
    for key in _SHM_KEYS:
        if key in parameters:
            parameter = parameters[key]
            choice = parameter.WhichOneof("parameter_choice")
            values[key] = getattr(parameter, choice) if choice is not None else None
    return values


def _shared_input(tensor: Tensor, ref: SharedRef, regions: Regions) -> Tensor:
    """`tensor` with its bytes: a read-only view of the region (no copy)."""
    view = regions.input(ref.region, ref.offset, ref.byte_size, tensor.name)
    return Tensor(tensor.name, tensor.datatype, tensor.shape, raw=view, bytes_status=tensor.bytes_status,
                  region=ref.region)  # fmt: skip


def _targets(requested: Iterable[tuple[str, Mapping[str, Any]]], regions: Regions) -> dict[str, Target]:
    """Where the requested outputs that name a region go."""
    targets = {}
    for name, parameters in requested:
        ref = shared_ref(parameters, f"output {name}")
        if ref is not None:
            targets[name] = regions.output(ref.region, ref.offset, ref.byte_size, name)
    return targets


def _write(target: Target, array: np.ndarray) -> dict[str, Any]:
    """Write an output into its region; returns the parameters its entry in the response carries."""
    data: Any = join_bytes(array) if array.dtype == object else np.ascontiguousarray(array)
    size = target.write(memoryview(data))
    parameters: dict[str, Any] = {SHM_REGION: target.region.status.name, SHM_BYTE_SIZE: size}
    if target.offset:
        parameters[SHM_OFFSET] = target.offset
    return parameters


def _check_targets(result: InferResult, targets: Mapping[str, Target]) -> None:
    for name in targets:
        if name not in result.outputs:
            raise ServingError(
                "SHM_INVALID_PARAMETERS",
                f"output {name} named with a shared memory region is not an output of {result.target}",
            )


# --- gRPC messages -----------------------------------------------------------------------------------------


def infer_request(message: pb.ModelInferRequest, regions: Regions) -> InferRequest:
    """A ModelInferRequest as an InferRequest. raw_input_contents holds the bytes of the inputs that name no
    shared-memory region, in order; those that do are views of their region."""
    version = parse_version(message.model_version)
    raw = list(message.raw_input_contents)  # each read of the field copies: read it once
    refs = [_input_ref(proto) for proto in message.inputs]
    coherency = None
    if raw:
        for proto, ref in zip(message.inputs, refs, strict=True):
            if ref is None and proto.HasField("contents"):
                coherency = ServingError(
                    "INVALID_MESSAGE_STRUCTURE",
                    "Passing buffers both in InferInputTensor contents and in raw_input_contents is not allowed. "
                    f"Detected buffer in InferInputTensor contents for input: {proto.name}",
                )
                break
        wired = sum(ref is None for ref in refs)
        if coherency is None and len(raw) != wired:
            coherency = ServingError(
                "INVALID_MESSAGE_STRUCTURE",
                f"Size of raw_input_contents: {len(raw)} is different than number of inputs: {wired}",
            )
    tensors = []
    next_raw = 0
    for proto, ref in zip(message.inputs, refs, strict=True):
        tensor = Tensor(proto.name, proto.datatype, tuple(proto.shape))
        if ref is not None:
            tensors.append(_shared_input(tensor, ref, regions))
            continue
        field = _CONTENTS_FIELD.get(proto.datatype, ("", None))[0]
        tensors.append(
            Tensor(
                proto.name,
                proto.datatype,
                tensor.shape,
                raw=raw[next_raw] if next_raw < len(raw) else None,
                values=getattr(proto.contents, field) if field and not raw else None,
            )
        )
        next_raw += 1
    return InferRequest(message.model_name, version, _decoder(tensors, coherency))


def _input_ref(proto: pb.ModelInferRequest.InferInputTensor) -> SharedRef | None:
    if not proto.parameters:
        return None
    ref = shared_ref(_grpc_parameters(proto.parameters), f"input {proto.name}")
    if ref is not None and proto.HasField("contents"):
        raise ServingError("SHM_INVALID_PARAMETERS", f"input {proto.name}: both contents and a shared memory region")
    return ref


def output_targets(message: pb.ModelInferRequest, regions: Regions) -> dict[str, Target]:
    """The requested outputs of a ModelInferRequest that name a shared-memory region, checked."""
    requested = [(o.name, _grpc_parameters(o.parameters)) for o in message.outputs if o.parameters]
    return _targets(requested, regions) if requested else {}


def _raw(array: np.ndarray) -> bytes:
    if array.dtype == object:
        return join_bytes(array)
    return np.ascontiguousarray(array).tobytes()


def _sorted(outputs: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [(name, outputs[name]) for name in sorted(outputs)]


def infer_response(
    result: InferResult, request_id: str = "", targets: Mapping[str, Target] | None = None
) -> pb.ModelInferResponse:
    """Every output, sorted by name, with its data in raw_output_contents at the same index; an output with a
    shared-memory target is written there instead, its entry carrying the region and an empty raw content."""
    response = pb.ModelInferResponse(model_name=result.target, model_version=str(result.version), id=request_id)
    if targets:
        _check_targets(result, targets)
    for name, array in _sorted(result.all_outputs()):
        output = response.outputs.add(name=name, datatype=datatype(array.dtype), shape=array.shape)
        target = targets.get(name) if targets else None
        if target is None:
            response.raw_output_contents.append(_raw(array))
            continue
        for key, value in _write(target, array).items():
            parameter = output.parameters[key]
            if isinstance(value, str):
                parameter.string_param = value
            else:
                parameter.int64_param = value
        response.raw_output_contents.append(b"")
    return response


def _tensor_metadata(specs: Mapping[str, TensorSpec]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=name, datatype=datatype(specs[name].dtype), shape=specs[name].metadata_shape()
        )
        for name in sorted(specs)
    ]


def metadata_response(endpoint: Endpoint) -> pb.ModelMetadataResponse:
    """Name, the versions AVAILABLE now (pipelines: "1"), platform, inputs and outputs sorted by name."""
    versions = sorted({*endpoint.available, endpoint.version})
    return pb.ModelMetadataResponse(
        name=endpoint.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=_tensor_metadata(endpoint.inputs),
        outputs=_tensor_metadata(endpoint.outputs),
    )


def server_metadata(extensions: Sequence[str] = ()) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=extensions)


def extensions(regions: Regions) -> tuple[str, ...]:
    """Triton's extensions the server serves: system shared memory when clients may use it."""
    return ("system_shared_memory",) if regions.enabled else ()


def model_config(endpoint: Endpoint) -> pb.ModelConfigResponse:
    """Triton's ModelConfig as far as perf_analyzer reads it: no implicit batching, full shapes (-1 = dynamic)."""
    config = pb.ModelConfig(name=endpoint.name, platform=CONFIG_PLATFORM, backend=CONFIG_PLATFORM, max_batch_size=0)
    for name in sorted(endpoint.inputs):
        spec = endpoint.inputs[name]
        config.input.add(
            name=name, data_type=_CONFIG_TYPE.get(datatype(spec.dtype), pb.TYPE_INVALID), dims=spec.metadata_shape()
        )
    for name in sorted(endpoint.outputs):
        spec = endpoint.outputs[name]
        config.output.add(
            name=name, data_type=_CONFIG_TYPE.get(datatype(spec.dtype), pb.TYPE_INVALID), dims=spec.metadata_shape()
        )
    return pb.ModelConfigResponse(config=config)


# --- REST (docs/apis.md#kserve-rest)
# --------------------------------------------------------------------------------------

HEADER_LENGTH = "inference-header-content-length"


def _dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def metadata_json(endpoint: Endpoint) -> bytes:
    message = metadata_response(endpoint)

    def tensors(items: Iterable[pb.ModelMetadataResponse.TensorMetadata]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    document: dict[str, Any] = {
        "name": message.name,
        "versions": list(message.versions),
        "platform": message.platform,
        "inputs": tensors(message.inputs),
        "outputs": tensors(message.outputs),
    }
    if endpoint.model_info:  # REST only, as OVMS appends it (docs/apis.md#kserve-rest)
        document["rt_info"] = {"model_info": endpoint.model_info}
    return _dumps(document)


def server_metadata_json(extensions: Sequence[str] = ()) -> bytes:
    document: dict[str, Any] = {"name": SERVER_NAME, "version": __version__}
    if extensions:  # no "extensions" key when there are none, as OVMS
        document["extensions"] = list(extensions)
    return _dumps(document)


def shm_status_response(rows: Sequence[RegionStatus]) -> pb.SystemSharedMemoryStatusResponse:
    response = pb.SystemSharedMemoryStatusResponse()
    for row in rows:
        response.regions[row.name].CopyFrom(
            pb.SystemSharedMemoryStatusResponse.RegionStatus(
                name=row.name, key=row.key, offset=row.offset, byte_size=row.byte_size
            )
        )
    return response


def shm_status_json(rows: Sequence[RegionStatus]) -> bytes:
    """Triton's REST status: an array of {name, key, offset, byte_size}."""
    return _dumps([{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in rows])


def shm_register_json(body: bytes) -> tuple[str, int, int]:
    """A REST register body {"key": ..., "offset": ..., "byte_size": ...}: key, offset (default 0), byte size."""
    document = jsonio.loads(body)
    if not isinstance(document, dict):
        raise ServingError("REST_BODY_IS_NOT_AN_OBJECT")
    key = document.get("key")
    if not isinstance(key, str):
        raise ServingError("SHM_REGISTER_FAILED", "key must be a string")
    offset, size = document.get("offset", 0), document.get("byte_size")
    if type(offset) is not int or type(size) is not int or offset < 0 or size < 0:
        raise ServingError("SHM_REGISTER_FAILED", "offset and byte_size must be integers >= 0")
    return key, offset, size


def model_config_json(endpoint: Endpoint) -> bytes:
    """Triton's GET /v2/models/{name}/config (JSON of ModelConfig, dims as integers) for perf_analyzer over HTTP."""
    config = model_config(endpoint).config

    def tensors(items: Iterable[Any]) -> list[dict[str, Any]]:
        return [{"name": t.name, "data_type": pb.DataType.Name(t.data_type), "dims": list(t.dims)} for t in items]

    return _dumps(
        {
            "name": config.name,
            "platform": config.platform,
            "backend": config.backend,
            "max_batch_size": config.max_batch_size,
            "input": tensors(config.input),
            "output": tensors(config.output),
        }
    )


def _parameters(node: Any) -> dict[str, Any]:
    """Request, input or output parameters: an object of string, bool or integer values."""
    if not isinstance(node, dict):
        raise ServingError("REST_COULD_NOT_PARSE_PARAMETERS")
    for key, value in node.items():
        if not isinstance(value, str | bool) and not (type(value) is int and -(2**63) <= value <= INT64_MAX):
            raise ServingError("REST_COULD_NOT_PARSE_PARAMETERS", f"parameter {key}: {json.dumps(value)}")
    return node


def _bytes_values(node: Any, name: str, out: list[bytes]) -> None:
    for value in node:
        if isinstance(value, list):
            _bytes_values(value, name, out)
        elif isinstance(value, str):
            out.append(value.encode())
        else:
            raise ServingError("REST_COULD_NOT_PARSE_INPUT", f"BYTES data must be strings; input name: {name}")


def _json_values(data: list[Any], datatype_name: str, name: str, bools: bool) -> Any:
    """`data` (nested or flat) as a flat array of the declared datatype; wrong JSON types are parse errors. `bools`:
    whether the body may hold JSON booleans at all (else the walk that finds them among numbers is skipped)."""
    if datatype_name == BYTES:
        items: list[bytes] = []
        _bytes_values(data, name, items)
        return items
    dtype = NUMPY_OF.get(datatype_name)
    if dtype is None:
        raise ServingError("REST_UNSUPPORTED_PRECISION", f"datatype: {datatype_name}; input name: {name}")
    if datatype_name == "FP16":
        raise ServingError("REST_COULD_NOT_PARSE_INPUT", f"FP16 is accepted only as binary data; input name: {name}")
    bad = ServingError("REST_COULD_NOT_PARSE_INPUT", f"data does not hold {datatype_name} values; input name: {name}")
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError) as e:  # ragged nesting, numbers beyond 64 bits
        raise bad from e
    flat = array.ravel()
    if flat.size == 0:
        return flat.astype(dtype)
    if dtype == np.uint64 and flat.dtype.kind not in "iu":  # numpy widens a mix of int64 and uint64 to float64
        flat = _uint64_values(data, bad)
    kind = flat.dtype.kind
    if dtype.kind == "f":
        ok = kind in "iuf"
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        ok = kind in "iu" and int(flat.min()) >= info.min and int(flat.max()) <= info.max
    else:  # bool
        ok = kind == "b"
    if not ok or (kind != "b" and bools and jsonio.has_bool(data)):
        raise bad
    with np.errstate(over="ignore"):  # FP32 values beyond float32 become infinities, as OVMS's float reads
        return flat.astype(dtype)


def _uint64_values(data: list[Any], bad: ServingError) -> np.ndarray:
    """JSON integers beyond int64 beside small ones, as uint64; anything else raises `bad`."""
    items = np.asarray(data, dtype=object).ravel()
    if not all(type(v) is int and 0 <= v < 2**64 for v in items):
        raise bad
    return np.array(items.tolist(), dtype=np.uint64)


@dataclass(frozen=True, slots=True)
class _RestInput:
    tensor: Tensor  # without raw yet when its bytes come from the binary part or shared memory
    parameters: dict[str, Any]
    has_data: bool
    shared: SharedRef | None = None


def _rest_input(node: Any, only_one: bool, bools: bool) -> _RestInput:
    if not isinstance(node, dict):
        raise ServingError("REST_COULD_NOT_PARSE_INPUT", "an input is not a JSON object")
    name = node.get("name")
    if not isinstance(name, str):
        raise ServingError("REST_COULD_NOT_PARSE_INPUT", "an input has no string name")
    shape = node.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= INT64_MAX for d in shape):
        raise ServingError("REST_COULD_NOT_PARSE_INPUT", f"shape must be a list of integers >= 0; input name: {name}")
    datatype_name = node.get("datatype")
    if not isinstance(datatype_name, str):
        raise ServingError("REST_COULD_NOT_PARSE_INPUT", f"datatype must be a string; input name: {name}")
    parameters = _parameters(node["parameters"]) if "parameters" in node else {}
    shared = shared_ref(parameters, f"input {name}")
    if shared is not None:
        if "data" in node or "binary_data_size" in parameters:
            raise ServingError("SHM_INVALID_PARAMETERS", f"input {name}: both data and a shared memory region")
        return _RestInput(Tensor(name, datatype_name, tuple(shape)), parameters, False, shared)
    if "data" in node:
        data = node["data"]
        if not isinstance(data, list):
            raise ServingError("REST_COULD_NOT_PARSE_INPUT", f"data must be an array; input name: {name}")
        values = _json_values(data, datatype_name, name, bools)
        return _RestInput(Tensor(name, datatype_name, tuple(shape), values=values), parameters, True)
    if "binary_data_size" not in parameters and datatype_name == BYTES and not (only_one and shape == [1]):
        raise ServingError(
            "REST_COULD_NOT_PARSE_INPUT",
            f"BYTES input without binary_data_size needs to be the only input, of shape [1]; input name: {name}",
        )
    return _RestInput(Tensor(name, datatype_name, tuple(shape), bytes_status="INVALID_INPUT_FORMAT"), parameters, False)


@dataclass(frozen=True, slots=True)
class RestInfer:
    """A parsed REST infer body: the request and what the response needs."""

    request: InferRequest
    request_id: str
    binary_outputs: frozenset[str] | None  # None: every output binary; else the names of binary outputs
    targets: Mapping[str, Target] | None = None  # outputs to write into shared memory


def header_length(headers: Mapping[str, str], body_size: int) -> int | None:
    """The Inference-Header-Content-Length header: where the JSON part of the body ends."""
    text = headers.get(HEADER_LENGTH)
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit():
        raise ServingError("REST_INFERENCE_HEADER_CONTENT_LENGTH_INVALID", text)
    length = int(text)
    if length > body_size:
        raise ServingError(
            "REST_INFERENCE_HEADER_CONTENT_LENGTH_EXCEEDED", f"header: {length}; payload: {body_size} bytes"
        )
    return length


def rest_infer(name: str, version: int | None, body: bytes, headers: Mapping[str, str], regions: Regions) -> RestInfer:
    """Parse a POST .../infer body: JSON, then inputs without `data` from the binary part in input order, or from
    the shared-memory region they name."""
    end = header_length(headers, len(body))
    json_end = len(body) if end is None else end
    head = body[:json_end]
    document = jsonio.loads(head)
    if not isinstance(document, dict):
        raise ServingError("REST_BODY_IS_NOT_AN_OBJECT")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise ServingError("REST_COULD_NOT_PARSE_INPUT", "id must be a string")
    parameters = _parameters(document["parameters"]) if "parameters" in document else {}
    requested: list[tuple[str, dict[str, Any]]] | None = None
    if "outputs" in document:
        outputs = document["outputs"]
        if not isinstance(outputs, list):
            raise ServingError("REST_COULD_NOT_PARSE_INPUT", "outputs must be an array")
        requested = []
        for node in outputs:
            if not isinstance(node, dict) or not isinstance(node.get("name"), str):
                raise ServingError("REST_COULD_NOT_PARSE_OUTPUT")
            requested.append((node["name"], _parameters(node["parameters"]) if "parameters" in node else {}))
    if "inputs" not in document:
        raise ServingError("REST_NO_INPUTS_FOUND")
    nodes = document["inputs"]
    if not isinstance(nodes, list):
        raise ServingError("REST_COULD_NOT_PARSE_INPUT", "inputs must be an array")
    if not nodes:
        raise ServingError("REST_NO_INPUTS_FOUND")
    bools = jsonio.mentions_bool(head)
    inputs = [_rest_input(node, len(nodes) == 1, bools) for node in nodes]
    tensors = _attach_binary(inputs, memoryview(body)[json_end:], regions)
    targets = _targets(requested, regions) if requested is not None else None
    default_binary = parameters.get("binary_data_output") is True
    binary: frozenset[str] | None
    if requested is None:
        binary = None if default_binary else frozenset()
    else:
        binary = frozenset(
            out_name for out_name, out_parameters in requested if _binary(out_parameters, default_binary)
        )
    return RestInfer(InferRequest(name, version, _decoder(tensors)), request_id, binary, targets or None)


def _binary(parameters: Mapping[str, Any], default: bool) -> bool:
    """Whether a requested output goes binary: its `binary_data` parameter, else the request's default."""
    value = parameters.get("binary_data")
    return value if isinstance(value, bool) else default


def _attach_binary(inputs: Sequence[_RestInput], buffer: memoryview, regions: Regions) -> list[Tensor]:
    """Give each input without `data` its slice of the binary part, or of its shared-memory region (views, no
    copies)."""
    tensors: list[Tensor] = []
    offset = 0
    for item in inputs:
        tensor = item.tensor
        if item.shared is not None:
            tensors.append(_shared_input(tensor, item.shared, regions))
            continue
        size_parameter = item.parameters.get("binary_data_size")
        if "binary_data_size" in item.parameters:
            if item.has_data and len(tensor.values):
                raise ServingError("REST_CONTENTS_FIELD_NOT_EMPTY", f"input name: {tensor.name}")
            if type(size_parameter) is not int or size_parameter < 0:
                raise ServingError("REST_BINARY_DATA_SIZE_PARAMETER_INVALID", f"input name: {tensor.name}")
            size = size_parameter
        elif item.has_data:
            tensors.append(tensor)
            continue
        elif len(inputs) == 1 and tensor.datatype == BYTES:
            size = len(buffer)
        else:
            size = _count(tensor.shape) * element_size(tensor.datatype)
        if offset + size > len(buffer):
            raise ServingError(
                "REST_BINARY_BUFFER_EXCEEDED",
                f"input name: {tensor.name}; needed: {offset + size} bytes; binary part: {len(buffer)} bytes",
            )
        raw = buffer[offset : offset + size]
        tensors.append(Tensor(tensor.name, tensor.datatype, tensor.shape, raw=raw, bytes_status=tensor.bytes_status))
        offset += size
    return tensors


def _json_data(array: np.ndarray) -> list[Any]:
    """An output's values for JSON: a flat list; BYTES as strings; FP16 cannot be written."""
    if array.dtype == object:
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    if array.dtype == np.float16:
        raise ServingError("REST_UNSUPPORTED_PRECISION", "Unsupported precisionFP16")
    values: list[Any] = array.ravel().tolist()
    return values


def rest_response(result: InferResult, parsed: RestInfer) -> tuple[bytes, dict[str, str]]:
    """The infer response: JSON, then the binary outputs' bytes in output order (with the header that splits)."""
    outputs: list[dict[str, Any]] = []
    binary_parts: list[bytes] = []
    targets = parsed.targets or {}
    if targets:
        _check_targets(result, targets)
    for name, array in _sorted(result.all_outputs()):
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype(array.dtype)}
        target = targets.get(name)
        if target is not None:
            _write(target, array)  # no "parameters": Triton's C++ client reads binary_data_size from any it finds
        elif parsed.binary_outputs is None or name in parsed.binary_outputs:
            raw = _raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            entry["data"] = _json_data(array)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": result.target, "model_version": str(result.version)}
    if parsed.request_id:
        document["id"] = parsed.request_id
    document["outputs"] = outputs
    head = _dumps(document)
    if not binary_parts:
        return head, {}
    return b"".join([head, *binary_parts]), {"Inference-Header-Content-Length": str(len(head))}


# --- Triton's statistics and repository index ----------------------------------------------------------------


def _durations(row: stats.Row) -> dict[str, stats.Duration]:
    zero = stats.Duration(0, 0)
    return {
        "success": row.success,
        "fail": row.fail,
        "queue": row.queue,
        "compute_input": row.compute_input,
        "compute_infer": row.compute_infer,
        "compute_output": row.compute_output,
        "cache_hit": zero,
        "cache_miss": zero,
    }


_BATCH_PARTS = ("compute_input", "compute_infer", "compute_output")


def statistics_response(rows: Sequence[stats.Row]) -> pb.ModelStatisticsResponse:
    """ModelStatistics of each row; one batch_stats entry of batch size 1 once a version has run (no batching)."""
    response = pb.ModelStatisticsResponse()
    for row in rows:
        durations = {k: pb.StatisticDuration(count=d.count, ns=d.ns) for k, d in _durations(row).items()}
        message = response.model_stats.add(
            name=row.name,
            version=str(row.version),
            last_inference=row.last_inference_ms,
            inference_count=row.executions,
            execution_count=row.executions,
            inference_stats=pb.InferStatistics(**durations),
        )
        if row.executions:
            message.batch_stats.add(batch_size=1, **{k: durations[k] for k in _BATCH_PARTS})
    return response


def statistics_json(rows: Sequence[stats.Row]) -> bytes:
    """Triton's REST statistics: {"model_stats": [...]}, the fields of ModelStatistics."""
    documents = []
    for row in rows:
        durations = {k: {"count": d.count, "ns": d.ns} for k, d in _durations(row).items()}
        batches = [{"batch_size": 1, **{k: durations[k] for k in _BATCH_PARTS}}] if row.executions else []
        documents.append(
            {
                "name": row.name,
                "version": str(row.version),
                "last_inference": row.last_inference_ms,
                "inference_count": row.executions,
                "execution_count": row.executions,
                "inference_stats": durations,
                "response_stats": {},
                "batch_stats": batches,
                "memory_usage": [],
            }
        )
    return _dumps({"model_stats": documents})


def index_response(rows: Sequence[stats.IndexRow]) -> pb.RepositoryIndexResponse:
    response = pb.RepositoryIndexResponse()
    for row in rows:
        version = "" if row.version is None else str(row.version)
        response.models.add(name=row.name, version=version, state=row.state, reason=row.reason)
    return response


def index_json(rows: Sequence[stats.IndexRow]) -> bytes:
    """Triton's REST index: an array of {name, version (when there is one), state, reason}."""
    documents: list[dict[str, str]] = []
    for row in rows:
        document = {"name": row.name}
        if row.version is not None:
            document["version"] = str(row.version)
        documents.append({**document, "state": row.state, "reason": row.reason})
    return _dumps(documents)


def index_ready_only(body: bytes) -> bool:
    """A REST index body: empty, or an object with an optional boolean "ready"."""
    if not body.strip():
        return False
    document = jsonio.loads(body)
    if not isinstance(document, dict):
        raise ServingError("REST_BODY_IS_NOT_AN_OBJECT")
    ready = document.get("ready", False)
    if not isinstance(ready, bool):
        raise ServingError("REST_COULD_NOT_PARSE_PARAMETERS", f"ready must be true or false, not {json.dumps(ready)}")
    return ready
