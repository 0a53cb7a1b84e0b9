"""Placeholder: filled in by the REST work."""

from __future__ import annotations

from .dataplane import DataPlane
from .http_app import Route


def routes(dataplane: DataPlane) -> list[Route]:
    return []
