"""The REST API as an OpenAPI 3 document (GET /openapi.json) and Swagger UI (GET /docs) from the package's assets."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from . import __version__
from .errors import ServingError
from .http_app import JSON, HttpRequest, HttpResponse, Route, route

Schema = dict[str, Any]
OPENAPI_VERSION = "3.0.3"  # what the bundled Swagger UI (4.x) renders fully
TFS, KSERVE, CONFIG, OVSERVE = "TensorFlow Serving REST", "KServe v2 REST", "Config and monitoring", "ovserve"
TFS_NAME = r"^[^/:]+$"  # the URL grammars of rest_tfs and rest_kserve
KSERVE_NAME = r"^[^/]+$"
LABEL = r"^[A-Za-z0-9_]+$"  # the route takes any word characters: these are the ones generators make fast
MOST_EXAMPLES = 50  # names of servables offered as examples of a `name` parameter


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _content(media: str, description: str, schema: Schema | None = None) -> Schema:
    return {"description": description, "content": {media: {"schema": schema or {"type": "string"}}}}


CLIENT_ERROR = _json(_ref("Error"), "The request was refused: the error table's text, then details after ' - '")
SERVER_ERROR = _json(_ref("Error"), "The server failed to serve it (e.g. a custom node failed)")
EMPTY = {"description": "Done (no body)"}


def _op(
    tag: str,
    summary: str,
    ok: Schema | None,
    parameters: Sequence[Schema] = (),
    body: Schema | None = None,
    more: Schema | None = None,
) -> Schema:
    """An operation answering `ok` (200; None: never), any 4xx as an Error, and `more` responses by status."""
    responses = {"200": ok} if ok is not None else {}
    responses.update({"4XX": CLIENT_ERROR, **(more or {})})
    operation: Schema = {"tags": [tag], "summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    operation["operationId"] = re.sub(r"[^A-Za-z0-9]+", "_", f"{tag} {summary}").strip("_")
    return operation


def _path_parameter(name: str, schema: Schema, description: str, examples: Iterable[str] = ()) -> Schema:
    parameter: Schema = {"name": name, "in": "path", "required": True, "schema": schema, "description": description}
    pattern = re.compile(schema.get("pattern", ".*"))
    shown = [e for e in examples if pattern.search(e)][:MOST_EXAMPLES]
    if shown:
        parameter["examples"] = {f"{i}": {"value": e, "summary": e} for i, e in enumerate(shown)}
    return parameter


def _parameters(names: Sequence[str]) -> dict[str, Schema]:
    servable = "a model or pipeline name"
    return {
        "tfs_name": _path_parameter("name", {"type": "string", "pattern": TFS_NAME}, servable, names),
        "kserve_name": _path_parameter("name", {"type": "string", "pattern": KSERVE_NAME}, servable, names),
        "pipeline": _path_parameter("name", {"type": "string", "pattern": KSERVE_NAME}, "a pipeline name", names),
        "version": _path_parameter(
            "version", {"type": "integer", "minimum": 0}, "a model version; 0 is the default version"
        ),
        "label": _path_parameter("label", {"type": "string", "pattern": LABEL}, "a version label (ignored)"),
        "region": _path_parameter("region", {"type": "string", "pattern": KSERVE_NAME}, "a shared memory region"),
        "asset": _path_parameter("asset", {"type": "string", "enum": [*ASSETS, DOCS_SCRIPT]}, "a file of Swagger UI"),
    }


# --- schemas ------------------------------------------------------------------------------------------------------

_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]
_STATES = ["UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]


def _object(properties: Schema, required: Sequence[str] = (), **more: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    return schema


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
COUNT: Schema = {"type": "integer", "minimum": 0}
SHAPE = _array({"type": "integer"})


def _schemas() -> dict[str, Schema]:
    parameters = {
        "type": "object",
        "additionalProperties": {"oneOf": [STRING, {"type": "boolean"}, INTEGER]},
        "description": "string, boolean or integer values (binary_data_size, binary_data, binary_data_output, "
        "shared_memory_region, shared_memory_offset, shared_memory_byte_size, ...)",
    }
    tensor = _object({"name": STRING, "datatype": STRING, "shape": SHAPE}, ["name", "datatype", "shape"])
    version_row = _object(
        {
            "version": {"type": "string", "description": "int64 as protobuf's JSON writes it"},
            "state": {"type": "string", "enum": _STATES},
            "status": _object({"error_code": STRING, "error_message": STRING}, ["error_code", "error_message"]),
        },
        ["version", "state", "status"],
    )
    requests = _object(
        {
            "success": COUNT,
            "fail": COUNT,
            "count": COUNT,
            "sum_us": {"type": "number"},
            "buckets": _array(COUNT),
        },
        ["success", "fail", "count", "sum_us", "buckets"],
        nullable=True,
        description="inference requests since the start (null when metrics are off)",
    )
    state = {
        "version": INTEGER,
        "state": {"type": "string", "enum": _STATES},
        "error_code": STRING,
        "message": STRING,
    }
    return {
        "Error": _object({"error": STRING}, ["error"]),
        "ReloadError": _object({"error": STRING, "detail": STRING}, ["error"]),
        "ModelStatus": _object({"model_version_status": _array(version_row)}, ["model_version_status"]),
        "Config": {"type": "object", "additionalProperties": _ref("ModelStatus")},
        "TfsMetadata": _object(  # protobuf's JSON names (camelCase), as OVMS writes them
            {
                "modelSpec": _object({"name": STRING, "signatureName": STRING, "version": STRING}),
                "metadata": _object(
                    {"signature_def": _object({"@type": STRING, "signatureDef": {"type": "object"}}, ["@type"])},
                    ["signature_def"],
                ),
            },
            ["modelSpec", "metadata"],
        ),
        "PredictRequest": _object(
            {
                "signature_name": STRING,
                "instances": {"type": "array", "items": {}, "description": "row format"},
                "inputs": {"description": "columnar format: one value, or an object of inputs"},
            },
            description='row (instances) or columnar (inputs) format; binary inputs as {"b64": ...}',
        ),
        "PredictResponse": _object({"predictions": {}, "outputs": {}}),
        "ServerMetadata": _object(
            {"name": STRING, "version": STRING, "extensions": _array(STRING)}, ["name", "version"]
        ),
        "ModelMetadata": _object(
            {
                "name": STRING,
                "versions": _array(STRING),
                "platform": STRING,
                "inputs": _array(tensor),
                "outputs": _array(tensor),
                "rt_info": {"type": "object"},
            },
            ["name", "versions", "platform", "inputs", "outputs"],
        ),
        "ModelConfig": _object(
            {
                "name": STRING,
                "platform": STRING,
                "backend": STRING,
                "max_batch_size": INTEGER,
                "input": _array(_object({"name": STRING, "data_type": STRING, "dims": SHAPE})),
                "output": _array(_object({"name": STRING, "data_type": STRING, "dims": SHAPE})),
            },
            ["name", "platform", "backend", "max_batch_size", "input", "output"],
        ),
        "Parameters": parameters,
        "InferRequest": _object(
            {
                "id": STRING,
                "parameters": _ref("Parameters"),
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        {
                            "name": STRING,
                            "shape": _array(COUNT),
                            "datatype": {"type": "string", "enum": [*_DATATYPES, "BYTES"]},
                            "parameters": _ref("Parameters"),
                            "data": {"type": "array", "items": {}},
                        },
                        ["name", "shape", "datatype"],
                    ),
                },
                "outputs": _array(_object({"name": STRING, "parameters": _ref("Parameters")}, ["name"])),
            },
            ["inputs"],
        ),
        "InferResponse": _object(
            {
                "model_name": STRING,
                "model_version": STRING,
                "id": STRING,
                "outputs": _array(
                    _object(
                        {
                            "name": STRING,
                            "shape": SHAPE,
                            "datatype": STRING,
                            "parameters": _ref("Parameters"),
                            "data": {"type": "array", "items": {}},
                        },
                        ["name", "shape", "datatype"],
                    )
                ),
            },
            ["model_name", "outputs"],
        ),
        "ModelStatistics": _object(
            {"model_stats": _array(_object({"name": STRING, "version": STRING}, ["name", "version"]))},
            ["model_stats"],
        ),
        "RepositoryIndex": _array(
            _object({"name": STRING, "version": STRING, "state": STRING, "reason": STRING}, ["name", "state"])
        ),
        "RegisterRegion": _object(
            {"key": STRING, "offset": COUNT, "byte_size": COUNT},
            ["key", "byte_size"],
            description="a region of a POSIX shared memory object (/dev/shm/<key>) the server may read and write",
        ),
        "RegionStatus": _array(
            _object(
                {"name": STRING, "key": STRING, "offset": COUNT, "byte_size": COUNT},
                ["name", "key", "offset", "byte_size"],
            )
        ),
        "Status": _object(
            {
                "ready": {"type": "boolean"},
                "draining": {"type": "boolean"},
                "metrics": _object({"requests": {"type": "boolean"}, "latency": {"type": "boolean"}}),
                "buckets_us": _array(INTEGER),
                "models": _array(
                    _object(
                        {
                            "name": STRING,
                            "retired": {"type": "boolean"},
                            "error": STRING,
                            "default_version": {"type": "integer", "nullable": True},
                            "versions": _array(_object(state, list(state))),
                            "requests": requests,
                        },
                        ["name", "retired", "error", "default_version", "versions", "requests"],
                    )
                ),
                "pipelines": _array(
                    _object(
                        {**state, "name": STRING, "nodes": COUNT, "revision": STRING, "requests": requests},
                        ["name", *state, "nodes", "revision", "requests"],
                    )
                ),
            },
            ["ready", "draining", "metrics", "buckets_us", "models", "pipelines"],
        ),
    }


# --- paths --------------------------------------------------------------------------------------------------------


def _tfs_paths(p: dict[str, Schema]) -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    base = "/v1/models/{name}"
    for suffix, extra in (("", []), ("/versions/{version}", [p["version"]]), ("/labels/{label}", [p["label"]])):
        params = [p["tfs_name"], *extra]
        which = {"": "", "/versions/{version}": " of a version", "/labels/{label}": " by label"}[suffix]
        paths[base + suffix] = {
            "get": _op(TFS, f"Model status{which}", _json(_ref("ModelStatus"), "GetModelStatus"), params)
        }
        paths[base + suffix + "/metadata"] = {
            "get": _op(TFS, f"Model metadata{which}", _json(_ref("TfsMetadata"), "GetModelMetadata"), params)
        }
        body = {"required": True, "content": {JSON: {"schema": _ref("PredictRequest")}}}
        paths[base + suffix + ":predict"] = {
            "post": _op(
                TFS,
                f"Predict{which}",
                _json(_ref("PredictResponse"), "predictions (row format) or outputs (columnar)"),
                params,
                body,
                more={"204": EMPTY, "5XX": SERVER_ERROR},
            )
        }
        for method in ("classify", "regress"):
            not_served = {"description": "not served", "content": {JSON: {"schema": _ref("Error")}}}
            operation = _op(TFS, f"{method.title()}{which} (not served)", None, params, more={"404": not_served})
            paths[base + suffix + f":{method}"] = {"post": operation}
    return paths


def _kserve_paths(p: dict[str, Schema]) -> dict[str, Schema]:
    paths: dict[str, Schema] = {
        "/v2": {"get": _op(KSERVE, "Server metadata", _json(_ref("ServerMetadata"), "name, version, extensions"))},
        "/v2/health/live": {"get": _op(KSERVE, "Server live", EMPTY)},
        "/v2/health/ready": {"get": _op(KSERVE, "Server ready", EMPTY, more={"503": CLIENT_ERROR})},
    }
    infer_body = {
        "required": True,
        "description": "JSON; or with the binary data extension the JSON request, then the inputs' bytes in input "
        "order, its length in the Inference-Header-Content-Length header",
        "content": {
            JSON: {"schema": _ref("InferRequest")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    header_length = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "schema": COUNT,
        "description": "binary data extension: the length of the JSON part of the body",
    }
    infer_ok = _json(_ref("InferResponse"), "outputs; outputs asked for as binary follow the JSON part")
    infer_ok["headers"] = {"Inference-Header-Content-Length": {"schema": COUNT, "description": "binary outputs"}}
    for suffix, extra in (("", []), ("/versions/{version}", [p["version"]])):
        base, params = "/v2/models/{name}" + suffix, [p["kserve_name"], *extra]
        which = " of a version" if suffix else ""
        paths[base] = {"get": _op(KSERVE, f"Model metadata{which}", _json(_ref("ModelMetadata"), "metadata"), params)}
        paths[base + "/ready"] = {"get": _op(KSERVE, f"Model ready{which}", EMPTY, params)}
        paths[base + "/config"] = {
            "get": _op(KSERVE, f"Model config{which} (Triton)", _json(_ref("ModelConfig"), "Triton's config"), params)
        }
        paths[base + "/infer"] = {
            "post": _op(
                KSERVE,
                f"Infer{which}",
                infer_ok,
                [*params, header_length],
                infer_body,
                more={"204": EMPTY, "5XX": SERVER_ERROR},
            )
        }
    statistics = _json(_ref("ModelStatistics"), "Triton's statistics: counters since the start")
    paths["/v2/models/stats"] = {"get": _op(KSERVE, "Statistics of every model (Triton)", statistics)}
    for suffix, extra in (("", []), ("/versions/{version}", [p["version"]])):
        which = " of a version" if suffix else ""
        paths["/v2/models/{name}" + suffix + "/stats"] = {
            "get": _op(KSERVE, f"Model statistics{which} (Triton)", statistics, [p["kserve_name"], *extra])
        }
    index_body = {"required": False, "content": {JSON: {"schema": _object({"ready": {"type": "boolean"}})}}}
    paths["/v2/repository/index"] = {
        "post": _op(KSERVE, "Repository index (Triton)", _json(_ref("RepositoryIndex"), "models"), (), index_body)
    }
    shm, region = "/v2/systemsharedmemory", [p["region"]]
    register = {"required": True, "content": {JSON: {"schema": _ref("RegisterRegion")}}}
    status = _json(_ref("RegionStatus"), "regions")
    paths[shm + "/status"] = {"get": _op(KSERVE, "Shared memory status", status)}
    paths[shm + "/region/{region}/status"] = {"get": _op(KSERVE, "Shared memory region status", status, region)}
    paths[shm + "/region/{region}/register"] = {
        "post": _op(KSERVE, "Register a shared memory region", EMPTY, region, register)
    }
    paths[shm + "/region/{region}/unregister"] = {
        "post": _op(KSERVE, "Unregister a shared memory region", EMPTY, region)
    }
    paths[shm + "/unregister"] = {"post": _op(KSERVE, "Unregister every shared memory region", EMPTY)}
    cuda = "/v2/cudasharedmemory"
    unsupported = {"501": _json(_ref("Error"), "CUDA shared memory is not supported (no GPU)")}
    for path, method, summary in (
        (cuda + "/status", "get", "CUDA shared memory status"),
        (cuda + "/region/{region}/register", "post", "Register a CUDA shared memory region"),
        (cuda + "/region/{region}/unregister", "post", "Unregister a CUDA shared memory region"),
        (cuda + "/unregister", "post", "Unregister every CUDA shared memory region"),
    ):
        parameters = region if "{region}" in path else []
        paths[path] = {method: _op(KSERVE, summary + " (not supported)", None, parameters, more=unsupported)}
    return paths


def _other_paths(p: dict[str, Schema]) -> dict[str, Schema]:
    config = _json(_ref("Config"), "every servable's status, OVMS's text layout")
    config["headers"] = {
        "X-Ovserve-Config-Error": {"schema": STRING, "description": "why config.json on disk is not the one served"}
    }
    reloaded = _json(_ref("Config"), "nothing changed")
    failed = _json(_ref("ReloadError"), "the reload failed: OVMS's text, and what went wrong as detail")
    return {
        "/v1/config": {"get": _op(CONFIG, "Servables and their versions' states", config)},
        "/v1/config/reload": {
            "post": _op(
                CONFIG,
                "Reload config.json",
                reloaded,
                more={"201": _json(_ref("Config"), "the config changed"), "4XX": failed, "5XX": failed},
            )
        },
        "/metrics": {
            "get": _op(CONFIG, "Prometheus metrics (when enabled; a 400 says how)", _content("text/plain", "metrics"))
        },
        "/": {"get": _op(OVSERVE, "Status page", _content("text/html", "the page; it refreshes from /v1/status.json"))},
        "/v1/status.json": {"get": _op(OVSERVE, "What the status page shows", _json(_ref("Status"), "status"))},
        "/v1/pipelines/{name}/graph.svg": {
            "get": _op(
                OVSERVE,
                "A pipeline drawn with Graphviz",
                _content("image/svg+xml", "the picture"),
                [p["pipeline"]],
                more={"501": _json(_ref("Error"), "Graphviz is not installed")},
            )
        },
        "/openapi.json": {"get": _op(OVSERVE, "This document", _json({"type": "object"}, "OpenAPI 3"))},
        "/docs": {"get": _op(OVSERVE, "Swagger UI", _content("text/html", "Swagger UI on this document"))},
        "/docs/{asset}": {"get": _op(OVSERVE, "Swagger UI's files", _assets(), [p["asset"]])},
    }


def _assets() -> Schema:
    media = sorted(set(ASSETS.values()))
    return {"description": "the file", "content": {m: {"schema": {"type": "string"}} for m in media}}


def document(names: Sequence[str] = ()) -> Schema:
    """The OpenAPI document; `names` (the servables now) are offered as examples of the `name` parameters."""
    p = _parameters(names)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ovserve",
            "version": __version__,
            "description": "OpenVINO Model Server compatible REST API: TensorFlow Serving and KServe v2 (with the "
            "binary data and system shared memory extensions), OVMS's config API, Prometheus metrics, and "
            "ovserve's own status page and pipeline pictures.",
        },
        "tags": [{"name": t} for t in (TFS, KSERVE, CONFIG, OVSERVE)],
        "paths": {**_tfs_paths(p), **_kserve_paths(p), **_other_paths(p)},
        "components": {"schemas": _schemas()},
    }


# --- Swagger UI ---------------------------------------------------------------------------------------------------

ASSETS = {  # what /docs/<name> serves from the swagger-ui-bundle package, and as what
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
_DOCS_PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ovserve API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-ui-standalone-preset.js"></script>
<script src="/docs/ovserve-docs.js"></script>
</body>
</html>
"""
DOCS_SCRIPT = "ovserve-docs.js"
# validatorUrl null: Swagger UI would otherwise send the document to an online validator.
_DOCS_SCRIPT = b"""window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"
});
"""
_DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def routes(names: Callable[[], Sequence[str]]) -> list[Route]:
    """/openapi.json, /docs and its assets; `names()` lists the servables now."""
    cache: dict[str, bytes] = {}

    async def get_document(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, orjson.dumps(document(names())), JSON, {"Cache-Control": "no-cache"})

    async def get_docs(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, _DOCS_PAGE, "text/html; charset=utf-8", {"Content-Security-Policy": _DOCS_POLICY})

    async def get_asset(request: HttpRequest) -> HttpResponse:
        name = request.params["asset"]
        if name == DOCS_SCRIPT:
            return HttpResponse(200, _DOCS_SCRIPT, "text/javascript")
        if name not in ASSETS:
            raise ServingError("REST_NOT_FOUND", request.path)
        if name not in cache:
            cache[name] = swagger_ui_path.joinpath(name).read_bytes()
        return HttpResponse(200, cache[name], ASSETS[name], {"Cache-Control": "max-age=86400"})

    return [
        route("GET", r"/openapi\.json", get_document),
        route("GET", r"/docs/?", get_docs),
        route("GET", r"/docs/(?P<asset>[^/]+)", get_asset),
    ]
