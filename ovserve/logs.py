"""Log setup for the `ovserve` command: levels (any case; TRACE adds library internals), text or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
TEXT = "[%(asctime)s][%(levelname)s][%(name)s] %(message)s"
FIELDS = "fields"  # the LogRecord attribute carrying a line's structured fields (requests: door, model, status...)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the record's fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, timezone.utc)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, path: Path | None = None, form: str = "text", access: bool = False) -> None:
    """Log to `path` (else stderr) at `level`. DEBUG is ovserve's own events only: asyncio, grpc, uvicorn and other
    libraries stay at INFO unless TRACE is asked. `access` turns the access log (logger ovserve.access) on."""
    level = level.upper()
    handler: logging.Handler = logging.FileHandler(path) if path is not None else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(TEXT))
    ours = logging.DEBUG if level in ("TRACE", "DEBUG") else logging.getLevelName(level)
    logging.basicConfig(level=logging.DEBUG if level == "TRACE" else max(ours, logging.INFO), handlers=[handler])
    logging.getLogger("ovserve").setLevel(ours)
    if access:  # its lines pass at any --log_level: asking for the access log is asking for them
        logging.getLogger("ovserve.access").setLevel(logging.INFO)
