"""The HTTP route table: TF Serving and KServe REST, config API, /metrics (docs/apis.md#tfs-rest,
docs/apis.md#kserve-rest, docs/apis.md#config-api), pipeline graphs, the status page and the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from . import openapi, rest_kserve, rest_tfs, status_page, tfs
from .dataplane import DataPlane
from .errors import ServingError
from .http_app import HttpRequest, HttpResponse, Route, route
from .metrics import Metrics

Reload = Callable[[], Awaitable[bool]]  # reloads config.json; True if anything changed; raises ServingError


def config_json(dataplane: DataPlane) -> bytes:
    """Every servable's status in OVMS's exact /v1/config text layout."""
    parts = []
    for name in dataplane.names():
        try:
            parts.append(f"{json.dumps(name, ensure_ascii=False)} : \n{tfs.status_json(dataplane.status(name, None))}")
        except ServingError:
            continue  # OVMS skips servables whose status cannot be obtained
    return ("{\n" + ",\n".join(parts) + "\n}" if parts else "{}").encode()


CONFIG_ERROR_HEADER = "X-Ovserve-Config-Error"
METRICS_OFF = (
    'metrics are not enabled: start ovserve with --metrics_enable, or set "monitoring": {"metrics": {"enable": true}} '
    "in config.json"
)


def routes(
    dataplane: DataPlane, metrics: Metrics, reload: Reload | None = None, config_error: Callable[[], str] | None = None
) -> list[Route]:
    """`config_error` tells why the config file on disk is not the one served ("" when it is)."""

    async def get_config(request: HttpRequest) -> HttpResponse:
        # The body keeps OVMS's exact layout (clients read every key as a servable); a config.json that failed to
        # reload, by the watcher or by POST, is told in a header beside it.
        error = config_error() if config_error is not None else ""
        shown = " ".join(error.split()).encode("ascii", "backslashreplace").decode()
        return HttpResponse(200, config_json(dataplane), headers={CONFIG_ERROR_HEADER: shown} if shown else {})

    async def post_reload(request: HttpRequest) -> HttpResponse:
        try:
            changed = await reload() if reload is not None else False
        # the config API's own layout (docs/apis.md#config-api): OVMS's text, then what went wrong
        except ServingError as e:
            detail = f',\n\t"detail": {json.dumps(e.details, ensure_ascii=False)}' if e.details else ""
            body = f'{{\n\t"error": {json.dumps(e.entry.message)}{detail}\n}}'
            return HttpResponse(e.http_status, body.encode())
        return HttpResponse(201 if changed else 200, config_json(dataplane))

    async def get_pipeline_graph(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, await dataplane.pipeline_graph(request.params["name"]), "image/svg+xml")

    async def metrics_off(request: HttpRequest) -> HttpResponse:
        raise ServingError("REST_INVALID_URL", f"{request.path}: {METRICS_OFF}")  # OVMS's 400, and how to turn them on

    async def get_metrics(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, metrics.render().encode(), "text/plain; version=0.0.4")

    table = [
        route("GET", r"/v1/config", get_config),
        route("POST", r"/v1/config/reload", post_reload),
        route("GET", r"/v1/pipelines/(?P<name>[^/]+)/graph\.svg", get_pipeline_graph),  # beyond OVMS
        *rest_tfs.routes(dataplane),
        *rest_kserve.routes(dataplane),
        *status_page.routes(dataplane, metrics),  # beyond OVMS
        *openapi.routes(dataplane.names),  # beyond OVMS
    ]
    if metrics.enabled:
        table.append(route("GET", r"/metrics", get_metrics))
    else:
        table.append(route("GET POST", r"/metrics", metrics_off))
    return table
