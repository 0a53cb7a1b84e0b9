"""Every client-visible failure: one table of OVMS status → base message, gRPC code name, HTTP status."""

from __future__ import annotations

from typing import NamedTuple


class _Entry(NamedTuple):
    message: str
    grpc: str  # name of a grpc.StatusCode member; kept as text so lifecycle code never imports grpc
    http: int


# OVMS status names, base messages and codes (docs/apis.md#status-codes). Where OVMS answers a client mistake with
# UNKNOWN/INTERNAL (pipeline demultiplexing errors, unsupported precisions), ovserve answers INVALID_ARGUMENT
# instead: a caller must be able to tell "you sent something wrong" from "we broke" (docs/compatibility.md).
TABLE: dict[str, _Entry] = {
    "MODEL_NAME_MISSING": _Entry("Model with requested name is not found", "NOT_FOUND", 404),
    "MODEL_VERSION_MISSING": _Entry("Model with requested version is not found", "NOT_FOUND", 404),
    "MODEL_VERSION_NOT_LOADED_ANYMORE": _Entry("Model with requested version is retired", "NOT_FOUND", 404),
    "MODEL_VERSION_NOT_LOADED_YET": _Entry("Model with requested version is not loaded yet", "UNAVAILABLE", 404),
    "PIPELINE_DEFINITION_NAME_MISSING": _Entry("Pipeline with requested name is not found", "NOT_FOUND", 404),
    "PIPELINE_DEFINITION_NOT_LOADED_ANYMORE": _Entry("Pipeline is retired", "NOT_FOUND", 404),
    "PIPELINE_DEFINITION_NOT_LOADED_YET": _Entry("Pipeline is not loaded yet", "UNAVAILABLE", 404),
    "MODEL_SPEC_MISSING": _Entry("model_spec missing in request", "INVALID_ARGUMENT", 400),
    "INVALID_SIGNATURE_DEF": _Entry("Invalid signature name", "INVALID_ARGUMENT", 400),
    "MODEL_VERSION_INVALID_FORMAT": _Entry("invalid model version format in request", "INVALID_ARGUMENT", 400),
    "INVALID_NO_OF_INPUTS": _Entry("Invalid number of inputs", "INVALID_ARGUMENT", 400),
    "INVALID_MISSING_INPUT": _Entry("Missing input with specific name", "INVALID_ARGUMENT", 400),
    "INVALID_UNEXPECTED_INPUT": _Entry("Unexpected input", "INVALID_ARGUMENT", 400),
    "INVALID_NO_OF_SHAPE_DIMENSIONS": _Entry("Invalid number of shape dimensions", "INVALID_ARGUMENT", 400),
    "INVALID_BATCH_SIZE": _Entry("Invalid input batch size", "INVALID_ARGUMENT", 400),
    "INVALID_SHAPE": _Entry("Invalid input shape", "INVALID_ARGUMENT", 400),
    "INVALID_PRECISION": _Entry("Invalid input precision", "INVALID_ARGUMENT", 400),
    "INVALID_VALUE_COUNT": _Entry("Invalid number of values in tensor proto container", "INVALID_ARGUMENT", 400),
    "INVALID_CONTENT_SIZE": _Entry("Invalid content size of tensor proto", "INVALID_ARGUMENT", 400),
    "INVALID_INPUT_FORMAT": _Entry("Inputs inside buffer does not match expected format.", "INVALID_ARGUMENT", 400),
    # Binary inputs (docs/apis.md#binary-inputs). OVMS answers IMAGE_PARSING_FAILED and INVALID_STRING_MAX_SIZE_EXCEEDED
    # with UNKNOWN and BYTES_CONTENTS_EMPTY with HTTP 500: all are the sender's mistake, so 400 / INVALID_ARGUMENT here.
    "IMAGE_TOO_LARGE": _Entry("Image too large", "RESOURCE_EXHAUSTED", 413),  # not in OVMS: --max_image_pixels
    "UNSUPPORTED_LAYOUT": _Entry(
        "Received binary image input but resource not configured to accept NHWC layout", "INVALID_ARGUMENT", 400
    ),
    "INVALID_NO_OF_CHANNELS": _Entry("Invalid number of channels in binary input", "INVALID_ARGUMENT", 400),
    "BINARY_IMAGES_RESOLUTION_MISMATCH": _Entry(
        "Binary input images for this endpoint are required to have the same resolution", "INVALID_ARGUMENT", 400
    ),
    "STRING_VAL_EMPTY": _Entry("String val is empty", "INVALID_ARGUMENT", 400),
    "BYTES_CONTENTS_EMPTY": _Entry("Bytes contents is empty", "INVALID_ARGUMENT", 400),
    "IMAGE_PARSING_FAILED": _Entry("Image parsing failed", "INVALID_ARGUMENT", 400),
    "INVALID_STRING_MAX_SIZE_EXCEEDED": _Entry(
        "Maximum 2D array after string conversion exceeded 1GB", "INVALID_ARGUMENT", 400
    ),
    "PIPELINE_TOO_LARGE_DIMENSION_SIZE_TO_DEMULTIPLY": _Entry(
        "Too large dynamic demultiplication requested.", "INVALID_ARGUMENT", 400
    ),
    "PIPELINE_WRONG_DIMENSION_SIZE_TO_DEMULTIPLY": _Entry(
        "Wrong dimension size. Should match demultiply count", "INVALID_ARGUMENT", 400
    ),
    "PIPELINE_WRONG_NUMBER_OF_DIMENSIONS_TO_DEMULTIPLY": _Entry(
        "Wrong number of dimensions in a tensor to be sharded", "INVALID_ARGUMENT", 400
    ),
    "PIPELINE_STRING_DEMULTIPLICATION_UNSUPPORTED": _Entry(
        "Demultiplication is not supported for string precision", "UNIMPLEMENTED", 501
    ),
    "PIPELINE_DEMULTIPLEXER_NO_RESULTS": _Entry(
        "Pipeline execution aborted due to no content from custom node", "ABORTED", 204
    ),
    "PIPELINE_INCONSISTENT_SHARD_DIMENSIONS": _Entry(
        "Gathered tensor shards dimensions are different", "INTERNAL", 500
    ),
    "NOT_IMPLEMENTED": _Entry("Functionality not implemented", "UNIMPLEMENTED", 501),
    # Custom nodes (docs/pipelines.md#custom-nodes): a library that fails or breaks its contract is the server side's
    # fault (INTERNAL); a Python node that raises ValueError rejects its input, which is the caller's
    # (INVALID_ARGUMENT).
    "NODE_LIBRARY_EXECUTION_FAILED": _Entry("Custom node failed during execution", "INTERNAL", 500),
    "NODE_LIBRARY_INPUT_REJECTED": _Entry("Custom node failed during execution", "INVALID_ARGUMENT", 400),
    "NODE_LIBRARY_OUTPUTS_CORRUPTED": _Entry(
        "Custom node library has returned corrupted outputs handle", "INTERNAL", 500
    ),
    "NODE_LIBRARY_OUTPUTS_CORRUPTED_COUNT": _Entry(
        "Custom node library has produced corrupted number of outputs", "INTERNAL", 500
    ),
    "NODE_LIBRARY_OUTPUT_MISSING_NAME": _Entry("Custom node output is missing name", "INTERNAL", 500),
    "NODE_LIBRARY_MISSING_OUTPUT": _Entry("Custom node output is missing", "INTERNAL", 500),
    "NODE_LIBRARY_INVALID_PRECISION": _Entry(
        "Custom node has produced tensor with unspecified precision", "INTERNAL", 500
    ),
    "NODE_LIBRARY_INVALID_CONTENT_SIZE": _Entry("Custom node output has invalid content size", "INTERNAL", 500),
    "OV_INTERNAL_INFERENCE_ERROR": _Entry("Internal inference error", "INTERNAL", 500),
    "OV_UNSUPPORTED_SERIALIZATION_PRECISION": _Entry("Unsupported serialization precision", "INTERNAL", 500),
    "INTERNAL_ERROR": _Entry("Internal server error", "INTERNAL", 500),
    "MEDIAPIPE_DEFINITION_NAME_MISSING": _Entry(
        "Mediapipe graph definition with requested name is not found", "NOT_FOUND", 404
    ),
    "INVALID_MESSAGE_STRUCTURE": _Entry(
        "Passing buffers both in ModelInferRequest::InferInputTensor::contents and in "
        "ModelInferRequest::raw_input_contents is not allowed",
        "INVALID_ARGUMENT",
        400,
    ),
    "OV_UNSUPPORTED_DESERIALIZATION_PRECISION": _Entry("Unsupported deserialization precision", "INTERNAL", 500),
    "JSON_INVALID": _Entry("The file is not valid json", "FAILED_PRECONDITION", 412),
    "RESHAPE_ERROR": _Entry("Model could not be reshaped with requested shape", "FAILED_PRECONDITION", 412),
    # A load error is never a request's answer; its HTTP status is that of a config reload it fails
    # (docs/apis.md#config-api).
    "CANNOT_COMPILE_MODEL_INTO_TARGET_DEVICE": _Entry(
        "Cannot compile model into target device", "FAILED_PRECONDITION", 412
    ),
    # Stateful models (docs/stateful.md#stateful-models): the special inputs sequence_id and sequence_control_input, and
    # the sequences.
    "SEQUENCE_MISSING": _Entry("Sequence with provided ID does not exist", "NOT_FOUND", 404),
    "SEQUENCE_ALREADY_EXISTS": _Entry("Sequence with provided ID already exists", "ALREADY_EXISTS", 409),
    "SEQUENCE_ID_NOT_PROVIDED": _Entry("Sequence ID has not been provided in request inputs", "INVALID_ARGUMENT", 400),
    "INVALID_SEQUENCE_CONTROL_INPUT": _Entry("Unexpected value of sequence control input", "INVALID_ARGUMENT", 400),
    "SEQUENCE_ID_BAD_TYPE": _Entry(
        "Could not find sequence id in expected tensor proto field uint64_val", "INVALID_ARGUMENT", 400
    ),
    "SEQUENCE_CONTROL_INPUT_BAD_TYPE": _Entry(
        "Could not find sequence control input in expected tensor proto field uint32_val", "INVALID_ARGUMENT", 400
    ),
    "SPECIAL_INPUT_NO_TENSOR_SHAPE": _Entry(
        "Special input proto does not contain tensor shape information", "INVALID_ARGUMENT", 400
    ),
    "SEQUENCE_TERMINATED": _Entry(
        "Sequence last request is being processed and it's not available anymore", "FAILED_PRECONDITION", 412
    ),
    "MAX_SEQUENCE_NUMBER_REACHED": _Entry(
        "Max sequence number has been reached. Could not create new sequence.", "UNAVAILABLE", 503
    ),
    "SERVER_NOT_READY": _Entry("Server is not ready", "UNAVAILABLE", 503),
    "HEALTH_SERVICE_UNKNOWN": _Entry("Health of an unknown service requested", "NOT_FOUND", 404),  # beyond OVMS
    "MODEL_QUEUE_FULL": _Entry("Model queue is full", "RESOURCE_EXHAUSTED", 429),  # beyond OVMS
    # Triton's system shared-memory extension (not in OVMS; Triton's texts where it has one). A request naming a
    # region wrongly is the sender's mistake: INVALID_ARGUMENT, with the input or output and the region named.
    "SHM_NOT_ALLOWED": _Entry("System shared memory is not enabled on this server", "PERMISSION_DENIED", 403),
    "SHM_REGISTER_FAILED": _Entry("Unable to register system shared memory region", "INVALID_ARGUMENT", 400),
    "SHM_REGION_ALREADY_EXISTS": _Entry("Shared memory region is already registered", "ALREADY_EXISTS", 409),
    "SHM_REGION_NOT_FOUND": _Entry("Unable to find system shared memory region", "NOT_FOUND", 404),
    "SHM_REGION_MISSING": _Entry("Unable to find system shared memory region", "INVALID_ARGUMENT", 400),
    "SHM_REGION_UNUSABLE": _Entry("System shared memory region is no longer usable", "INVALID_ARGUMENT", 400),
    "SHM_OUT_OF_RANGE": _Entry("Invalid offset + byte size for system shared memory region", "INVALID_ARGUMENT", 400),
    "SHM_INVALID_PARAMETERS": _Entry("Invalid shared memory parameters", "INVALID_ARGUMENT", 400),
    "SHM_OUTPUT_TOO_SMALL": _Entry("Shared memory region is too small to hold the output", "INVALID_ARGUMENT", 400),
    # Triton built without GPU support answers TRITONSERVER_ERROR_UNSUPPORTED (gRPC UNIMPLEMENTED) the same way.
    "CUDA_SHM_UNSUPPORTED": _Entry("CUDA shared memory is not supported: this server has no GPU", "UNIMPLEMENTED", 501),
    # Beyond OVMS: GET /v1/pipelines/{name}/graph.svg on a server without Graphviz.
    "GRAPH_LAYOUT_UNAVAILABLE": _Entry("Pipeline graphs cannot be drawn here", "UNIMPLEMENTED", 501),
    # REST only (docs/apis.md#tfs-rest, docs/apis.md#kserve-rest, docs/apis.md#status-codes): HTTP statuses; the gRPC
    # column is never used for them.
    "REST_NOT_FOUND": _Entry("Requested REST resource not found", "NOT_FOUND", 404),
    "REST_BODY_TOO_LARGE": _Entry("Request body too large", "RESOURCE_EXHAUSTED", 413),  # OVMS drops the connection
    "REST_BODY_TIMEOUT": _Entry("Request body not received in time", "DEADLINE_EXCEEDED", 408),  # not in OVMS
    "REST_HEADER_TIMEOUT": _Entry("Request headers not received in time", "DEADLINE_EXCEEDED", 408),  # not in OVMS
    "REST_HEADERS_TOO_LARGE": _Entry("Request headers too large", "RESOURCE_EXHAUSTED", 431),  # not in OVMS
    "REST_MALFORMED_REQUEST": _Entry("Malformed HTTP request", "INVALID_ARGUMENT", 400),
    "REST_COULD_NOT_PARSE_VERSION": _Entry("Could not parse model version in request", "INVALID_ARGUMENT", 400),
    "REST_INVALID_URL": _Entry("Invalid request URL", "INVALID_ARGUMENT", 400),
    "REST_UNSUPPORTED_METHOD": _Entry("Unsupported method", "UNIMPLEMENTED", 406),
    "REST_BODY_IS_NOT_AN_OBJECT": _Entry("Request body should be JSON object", "INVALID_ARGUMENT", 400),
    "REST_PREDICT_UNKNOWN_ORDER": _Entry(
        "Invalid JSON structure. Could not detect row or column format", "INVALID_ARGUMENT", 400
    ),
    "REST_INSTANCES_NOT_AN_ARRAY": _Entry(
        "Invalid JSON structure. Nonamed instance is not an array.", "INVALID_ARGUMENT", 400
    ),
    "REST_NAMED_INSTANCE_NOT_AN_OBJECT": _Entry(
        "Invalid JSON structure. One of named instances is not a JSON object.", "INVALID_ARGUMENT", 400
    ),
    "REST_NO_INSTANCES_FOUND": _Entry(
        "Invalid JSON structure. Missing instances in row format", "INVALID_ARGUMENT", 400
    ),
    "REST_INSTANCES_NOT_NAMED_OR_NONAMED": _Entry(
        "Could not detect neither named or nonamed format", "INVALID_ARGUMENT", 400
    ),
    "REST_COULD_NOT_PARSE_INSTANCE": _Entry(
        "Could not parse instance content. Not valid ndarray detected", "INVALID_ARGUMENT", 400
    ),
    "REST_INSTANCES_BATCH_SIZE_DIFFER": _Entry(
        "Invalid JSON structure. Request inputs have different batch sizes", "INVALID_ARGUMENT", 400
    ),
    "REST_INPUTS_NOT_AN_OBJECT": _Entry(
        "Invalid JSON structure. One of inputs is not a JSON object.", "INVALID_ARGUMENT", 400
    ),
    "REST_NO_INPUTS_FOUND": _Entry("Invalid JSON structure, missing inputs", "INVALID_ARGUMENT", 400),
    "REST_COULD_NOT_PARSE_INPUT": _Entry(
        "Could not parse input content. Not valid ndarray detected", "INVALID_ARGUMENT", 400
    ),
    "REST_COULD_NOT_PARSE_OUTPUT": _Entry("Could not parse output content.", "INVALID_ARGUMENT", 400),
    "REST_COULD_NOT_PARSE_PARAMETERS": _Entry("Could not parse request parameters", "INVALID_ARGUMENT", 400),
    "REST_BASE64_DECODE_ERROR": _Entry("Decode Base64 to string error", "INVALID_ARGUMENT", 400),
    "REST_UNSUPPORTED_PRECISION": _Entry(
        "Could not parse input content. Unsupported data precision detected", "INVALID_ARGUMENT", 400
    ),
    "REST_INFERENCE_HEADER_CONTENT_LENGTH_EXCEEDED": _Entry(
        "Inference-Header-Content-Length header exceeds actual payload length", "INVALID_ARGUMENT", 400
    ),
    "REST_INFERENCE_HEADER_CONTENT_LENGTH_INVALID": _Entry(
        "Inference-Header-Content-Length header is invalid and couldn't be parsed", "INVALID_ARGUMENT", 400
    ),
    "REST_BINARY_DATA_SIZE_PARAMETER_INVALID": _Entry(
        "binary_data_size parameter is invalid and cannot be parsed", "INVALID_ARGUMENT", 400
    ),
    "REST_BINARY_BUFFER_EXCEEDED": _Entry(
        "Received buffer size is smaller than binary_data_size parameter indicates", "INVALID_ARGUMENT", 400
    ),
    "REST_CONTENTS_FIELD_NOT_EMPTY": _Entry(
        "Request contains values both in binary data and in content value", "INVALID_ARGUMENT", 400
    ),
    "PATH_INVALID": _Entry("The provided base path is invalid or doesn't exists", "INVALID_ARGUMENT", 400),
    "RELOAD_CONFIG_FILE_MISSING": _Entry("Config file not found or cannot open.", "INTERNAL", 500),
    "RELOAD_CONFIG_FAILED": _Entry(
        "Reloading config file failed. Check server logs for more info.", "FAILED_PRECONDITION", 412
    ),
    "CONFIG_FILE_INVALID": _Entry("Configuration file not found or cannot open", "INTERNAL", 500),
    # Not in OVMS's HTTP table (it would answer 500): a too deep body is the client's mistake.
    "JSON_NESTING_DEPTH_EXCEEDED": _Entry("JSON nesting depth exceeds the allowed limit", "INVALID_ARGUMENT", 400),
    "REST_PROTO_TO_STRING_ERROR": _Entry("Response parsing to JSON error", "INTERNAL", 500),
    # Not an OVMS status: bytes that do not parse as the rpc's message (gRPC's C++ library answers INTERNAL).
    "GRPC_MESSAGE_MALFORMED": _Entry("Request message could not be parsed", "INVALID_ARGUMENT", 400),
}


def http_status(status: str) -> int:
    """The HTTP status of an OVMS status; one the table does not list is 500 (docs/apis.md#status-codes)."""
    entry = TABLE.get(status)
    return entry.http if entry is not None else 500


class ServingError(Exception):
    """A failure with an OVMS status; ``str()`` is the user-visible "<base message> - <details>". `http` overrides
    the table's HTTP status (a config reload answers with the status of the load's first error)."""

    def __init__(self, status: str, details: str = "", http: int | None = None) -> None:
        self.status = status
        self.entry = TABLE[status]
        self.details = details
        self._http = http
        self.node: str | None = None  # the pipeline node it came from (for the log), once the pipeline says so
        self.branch = ""  # and its demultiplexer branch, "0/3" for nested ones
        super().__init__(f"{self.entry.message} - {details}" if details else self.entry.message)

    def locate(self, node: str, branch: str) -> None:
        """Name the pipeline node (and branch) where this failed, unless that was done already."""
        if self.node is None:
            self.node, self.branch = node, branch

    @property
    def grpc_code(self) -> str:
        return self.entry.grpc

    @property
    def http_status(self) -> int:
        return self.entry.http if self._http is None else self._http


class ConfigError(Exception):
    """config.json or a CLI flag is malformed; the message names the JSON path or flag and the problem."""


class LoadError(Exception):
    """A model version or pipeline could not be loaded; ``status`` is the OVMS status name shown in logs."""

    def __init__(self, status: str, message: str) -> None:
        self.status = status
        super().__init__(message)
