"""TensorFlow Serving's REST API (docs/apis.md#tfs-rest): model status, metadata and predict as thin handlers over the
DataPlane; the JSON translation lives in tfs."""

from __future__ import annotations

from . import tfs
from .dataplane import DataPlane
from .errors import ServingError
from .http_app import HttpRequest, HttpResponse, Route, route
from .types import InferRequest, Origin

_PREDICT = Origin("TensorFlowServing", "REST", "Predict")
_METADATA = Origin("TensorFlowServing", "REST", "GetModelMetadata")
_STATUS = Origin("TensorFlowServing", "REST", "GetModelStatus")
_INT64_MAX = (1 << 63) - 1

# OVMS's URL grammar: a name without '/' or ':', then an optional version (digits) or label (ignored).
_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>\w+))?"


def _version(request: HttpRequest) -> int | None:
    """The version in the URL; None (absent or 0) is the default version. Beyond int64 no version can exist."""
    text = request.params.get("version")
    if text is None:
        return None
    number = int(text)
    if number > _INT64_MAX:
        raise ServingError("MODEL_VERSION_MISSING", f"model {request.params['name']} version {text}")
    return number or None


def routes(dataplane: DataPlane) -> list[Route]:
    async def status(request: HttpRequest) -> HttpResponse:
        rows = dataplane.status(request.params["name"], _version(request), _STATUS)
        return HttpResponse(200, tfs.status_json(rows).encode())

    async def metadata(request: HttpRequest) -> HttpResponse:
        endpoint = await dataplane.endpoint(request.params["name"], _version(request), _METADATA)
        return HttpResponse(200, tfs.metadata_json(endpoint).encode())

    async def predict(request: HttpRequest) -> HttpResponse:
        version = _version(request)
        if request.params["method"] != "predict":
            raise ServingError("REST_NOT_FOUND", f":{request.params['method']} is not served")
        body = tfs.RestPredict(request.body)
        result = await dataplane.infer(
            InferRequest(request.params["name"], version, body), _PREDICT, missing="MODEL_NAME_MISSING"
        )
        return HttpResponse(200, body.response(result.all_outputs()))

    return [
        route("GET", _MODEL, status),
        route("GET", _MODEL + "/metadata", metadata),
        route("POST", _MODEL + r":(?P<method>predict|classify|regress)", predict),
    ]
