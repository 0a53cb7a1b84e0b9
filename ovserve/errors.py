"""Every client-visible failure: one table of OVMS status → base message, gRPC code name, HTTP status."""

from __future__ import annotations

from typing import NamedTuple


class _Entry(NamedTuple):
    message: str
    grpc: str  # name of a grpc.StatusCode member; kept as text so lifecycle code never imports grpc
    http: int


# OVMS status names and base messages (spec §10) with the codes of spec §4.9. Where OVMS answers a client
# mistake with UNKNOWN/INTERNAL (pipeline demultiplexing errors, unsupported precisions), ovserve answers
# INVALID_ARGUMENT instead: a caller must be able to tell "you sent something wrong" from "we broke".
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
    "PIPELINE_TOO_LARGE_DIMENSION_SIZE_TO_DEMULTIPLY": _Entry(
        "Too large dynamic demultiplication requested.", "INVALID_ARGUMENT", 400
    ),
    "PIPELINE_WRONG_DIMENSION_SIZE_TO_DEMULTIPLY": _Entry(
        "Wrong dimension size. Should match demultiply count", "INVALID_ARGUMENT", 400
    ),
    "PIPELINE_WRONG_NUMBER_OF_DIMENSIONS_TO_DEMULTIPLY": _Entry(
        "Wrong number of dimensions in a tensor to be sharded", "INVALID_ARGUMENT", 400
    ),
    "PIPELINE_DEMULTIPLEXER_NO_RESULTS": _Entry(
        "Pipeline execution aborted due to no content from custom node", "ABORTED", 204
    ),
    "PIPELINE_INCONSISTENT_SHARD_DIMENSIONS": _Entry(
        "Gathered tensor shards dimensions are different", "INTERNAL", 500
    ),
    "NOT_IMPLEMENTED": _Entry("Functionality not implemented", "UNIMPLEMENTED", 501),
    "OV_INTERNAL_INFERENCE_ERROR": _Entry("Internal inference error", "INTERNAL", 500),
    "OV_UNSUPPORTED_SERIALIZATION_PRECISION": _Entry("Unsupported serialization precision", "INTERNAL", 500),
    "INTERNAL_ERROR": _Entry("Internal server error", "INTERNAL", 500),
}


class ServingError(Exception):
    """A failure with an OVMS status; ``str()`` is the user-visible "<base message> - <details>"."""

    def __init__(self, status: str, details: str = "") -> None:
        self.status = status
        self.entry = TABLE[status]
        self.details = details
        super().__init__(f"{self.entry.message} - {details}" if details else self.entry.message)

    @property
    def grpc_code(self) -> str:
        return self.entry.grpc

    @property
    def http_status(self) -> int:
        return self.entry.http


class ConfigError(Exception):
    """config.json or a CLI flag is malformed; the message names the JSON path or flag and the problem."""


class LoadError(Exception):
    """A model version or pipeline could not be loaded; ``status`` is the OVMS status name shown in logs."""

    def __init__(self, status: str, message: str) -> None:
        self.status = status
        super().__init__(message)
