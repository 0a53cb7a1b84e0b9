"""KServe v2 REST routes (docs/apis.md#kserve-rest): health, server and model metadata, readiness, inference (JSON and
the binary data extension); plus Triton's GET .../config so perf_analyzer can drive the server over HTTP, Triton's
system shared-memory routes (CUDA shared memory answers that it is not supported), statistics and repository index."""

from __future__ import annotations

from . import kfs
from .dataplane import DataPlane
from .errors import ServingError
from .http_app import HttpRequest, HttpResponse, Route, route
from .types import Origin

_INFER = Origin("KServe", "REST", "ModelInfer")
_METADATA = Origin("KServe", "REST", "ModelMetadata")
_READY = Origin("KServe", "REST", "ModelReady")
_CONFIG = Origin("KServe", "REST", "ModelConfig")

_MODEL = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[0-9]+))?"
_REGION = r"(?:/region/(?P<region>[^/]+))?"


def _version(request: HttpRequest) -> int | None:
    """The URL's version (digits only, by the route); 0 or none is the default; beyond int64 is not found."""
    text = request.params.get("version")
    if text is None:
        return None
    version = int(text)
    if version > kfs.INT64_MAX:
        raise ServingError("MODEL_VERSION_MISSING", f"version: {text}")
    return version or None


def routes(dataplane: DataPlane) -> list[Route]:
    async def live(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200)

    async def ready(request: HttpRequest) -> HttpResponse:
        if not dataplane.ready:
            raise ServingError("SERVER_NOT_READY")
        return HttpResponse(200)

    async def server_metadata(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, kfs.server_metadata_json(kfs.extensions(dataplane.regions)))

    async def model_metadata(request: HttpRequest) -> HttpResponse:
        endpoint = await dataplane.endpoint(request.params["name"], _version(request), _METADATA)
        return HttpResponse(200, kfs.metadata_json(endpoint))

    async def model_config(request: HttpRequest) -> HttpResponse:
        endpoint = await dataplane.endpoint(request.params["name"], _version(request), _CONFIG)
        return HttpResponse(200, kfs.model_config_json(endpoint))

    async def model_ready(request: HttpRequest) -> HttpResponse:
        version = _version(request)
        if not dataplane.model_ready(request.params["name"], version, _READY):
            raise ServingError("MODEL_VERSION_NOT_LOADED_YET", request.params["name"])
        return HttpResponse(200)

    async def infer(request: HttpRequest) -> HttpResponse:
        regions = dataplane.regions
        parsed = kfs.rest_infer(request.params["name"], _version(request), request.body, request.headers, regions)
        result = await dataplane.infer(parsed.request, _INFER, missing="MODEL_NAME_MISSING")
        body, headers = kfs.rest_response(result, parsed)
        return HttpResponse(200, body, headers=headers)

    async def shm_register(request: HttpRequest) -> HttpResponse:
        key, offset, byte_size = kfs.shm_register_json(request.body)
        dataplane.regions.register(request.params["region"], key, offset, byte_size)
        return HttpResponse(200)

    async def shm_unregister(request: HttpRequest) -> HttpResponse:
        dataplane.regions.unregister(request.params.get("region") or "")
        return HttpResponse(200)

    async def shm_status(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, kfs.shm_status_json(dataplane.regions.status(request.params.get("region") or "")))

    async def statistics(request: HttpRequest) -> HttpResponse:
        name = request.params.get("name") or ""
        version = _version(request) if dataplane.is_model(name) else None  # pipelines ignore it
        return HttpResponse(200, kfs.statistics_json(dataplane.statistics(name, version)))

    async def repository_index(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, kfs.index_json(dataplane.index(kfs.index_ready_only(request.body))))

    async def cuda_shm(request: HttpRequest) -> HttpResponse:
        raise ServingError("CUDA_SHM_UNSUPPORTED", "use system shared memory")

    return [
        route("GET", r"/v2/?", server_metadata),
        route("POST", r"/v2/systemsharedmemory/region/(?P<region>[^/]+)/register", shm_register),
        route("POST", r"/v2/systemsharedmemory" + _REGION + r"/unregister", shm_unregister),
        route("GET", r"/v2/systemsharedmemory" + _REGION + r"/status", shm_status),
        route("GET POST", r"/v2/cudasharedmemory(?:/.*)?", cuda_shm),
        route("GET", r"/v2/models/stats", statistics),
        route("POST", r"/v2/repository/index", repository_index),
        route("GET", r"/v2/health/live", live),
        route("GET", r"/v2/health/ready", ready),
        route("GET", _MODEL + r"/?", model_metadata),
        route("GET", _MODEL + r"/ready", model_ready),
        route("GET", _MODEL + r"/config", model_config),
        route("GET", _MODEL + r"/stats", statistics),
        route("POST", _MODEL + r"/infer", infer),
    ]
