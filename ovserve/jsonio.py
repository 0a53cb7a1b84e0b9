"""Request-body JSON for the REST front doors: orjson for speed, the json module for NaN and Infinity literals."""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import ServingError


def loads(body: bytes) -> Any:
    """Parse a request body; invalid JSON raises JSON_INVALID with the parser's message and offset (spec §4.5)."""
    try:
        return orjson.loads(body)  # about 6x faster than json on large numeric bodies
    except orjson.JSONDecodeError:
        pass  # strict JSON only: NaN, Infinity and -Infinity (which TF Serving accepts) need the json module
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise ServingError("JSON_INVALID", f"Error: {e.msg} Offset: {e.pos}") from None
    except UnicodeDecodeError as e:
        raise ServingError("JSON_INVALID", f"Error: Invalid encoding in string. Offset: {e.start}") from None
    except RecursionError:
        raise ServingError("JSON_INVALID", "Error: too deeply nested") from None
