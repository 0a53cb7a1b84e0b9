"""The status page (GET /, beyond OVMS): servables, their states and reasons, pipeline pictures, request rates."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

import orjson

from .dataplane import DataPlane
from .http_app import JSON, HttpRequest, HttpResponse, Route, route
from .metrics import BUCKETS_US, Metrics
from .types import ModelView, PipelineView

INFER_METHODS = frozenset({"Predict", "ModelInfer"})  # what the page counts as requests (not metadata or status)
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def page() -> tuple[bytes, str]:
    """The page (one file of the package: HTML, CSS and script inline) and a Content-Security-Policy allowing
    exactly its own script and style, and fetches and images from this server only."""
    text = resources.files("ovserve").joinpath("static/status.html").read_bytes()
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, body in _INLINE.findall(text):
        hashes[kind].append(f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'")
    policy = (
        f"default-src 'none'; script-src {' '.join(hashes[b'script'])}; style-src {' '.join(hashes[b'style'])}; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return text, policy


def snapshot(dataplane: DataPlane, metrics: Metrics) -> dict[str, Any]:
    """What the page shows, as JSON: the server, every model with its versions, every pipeline, request totals."""
    manager = dataplane.manager
    totals = request_totals(metrics)
    return {
        "ready": dataplane.ready,
        "draining": dataplane.draining,
        "metrics": {
            "requests": "ovms_requests_success" in metrics.families,
            "latency": "ovms_request_time_us" in metrics.families,
        },
        "buckets_us": list(BUCKETS_US),
        "models": [_model(model, totals.get(model.name)) for model in manager.models_view()],
        "pipelines": [_pipeline(pipeline, totals.get(pipeline.name)) for pipeline in manager.pipelines_view()],
    }


def _model(model: ModelView, requests: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": model.name,
        "retired": model.retired,
        "error": model.error,  # a problem of the whole model (a bad base path, bad config values)
        "default_version": model.default,
        "versions": [_version(status) for status in model.versions],
        "requests": requests,
    }


def _pipeline(pipeline: PipelineView, requests: dict[str, Any] | None) -> dict[str, Any]:
    status = pipeline.status
    return {
        "name": pipeline.name,
        **_version(status),
        "nodes": len(pipeline.config.nodes),
        # Changes when the picture would: a new config, or a change of state or reason.
        "revision": hashlib.sha1(repr((pipeline.config, status)).encode()).hexdigest()[:12],
        "requests": requests,
    }


def _version(status: Any) -> dict[str, Any]:
    return {
        "version": status.version,
        "state": status.state,
        "error_code": status.error_code,
        "message": status.message,
    }


def request_totals(metrics: Metrics) -> dict[str, dict[str, Any]]:
    """Per model or pipeline name, summed over versions and front doors since the start: inference requests that
    succeeded and failed, and their processing time (count, sum and buckets of ovms_request_time_us). Empty when
    metrics are off: the page then says how to turn them on rather than counting on the hot path anyway."""
    totals: dict[str, dict[str, Any]] = {}

    def of(name: str) -> dict[str, Any]:
        if name not in totals:
            totals[name] = {"success": 0, "fail": 0, "count": 0, "sum_us": 0.0, "buckets": [0] * (len(BUCKETS_US) + 1)}
        return totals[name]

    for outcome in ("success", "fail"):
        family = metrics.families.get(f"ovms_requests_{outcome}")
        for key, value in _series(family):
            if key[2] in INFER_METHODS:  # (api, interface, method, name[, version])
                of(key[3])[outcome] += int(value)
    for key, (counts, total) in _series(metrics.families.get("ovms_request_time_us")):  # (interface, name, version)
        entry = of(key[1])
        entry["count"] += sum(counts)
        entry["sum_us"] += total
        entry["buckets"] = [a + b for a, b in zip(entry["buckets"], counts, strict=True)]
    return totals


def _series(family: Any) -> Iterable[tuple[tuple[str, ...], Any]]:
    return list(family.series.items()) if family is not None else []


def routes(dataplane: DataPlane, metrics: Metrics) -> list[Route]:
    html, policy = page()
    page_headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    async def get_page(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, html, "text/html; charset=utf-8", page_headers)

    async def get_status(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, orjson.dumps(snapshot(dataplane, metrics)), JSON, {"Cache-Control": "no-store"})

    return [route("GET", r"/", get_page), route("GET", r"/v1/status\.json", get_status)]
