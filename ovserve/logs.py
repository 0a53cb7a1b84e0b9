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


class Throttle:
    """Repeats of a log line (by key) let through at most once every `interval` seconds; `admit` says how many were
    held back since, for the next line to say so. At most `remembered` keys are kept: beyond, the ones quiet for an
    interval are forgotten, else the older half."""

    def __init__(self, interval: float = 1.0, remembered: int = 4096) -> None:
        self.interval = interval
        self.remembered = remembered
        self._seen: dict[str, list[float]] = {}  # key -> [when last let through, repeats held back since]

    def admit(self, key: str, now: float) -> int | None:
        """None if `key` was let through less than `interval` ago (this repeat is counted), else how many were not."""
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return None
        if seen is None and len(self._seen) >= self.remembered:
            self._forget(now)
        self._seen.pop(key, None)  # re-inserted last: the dict stays in order of letting through
        self._seen[key] = [now, 0]
        return int(seen[1]) if seen is not None else 0

    def _forget(self, now: float) -> None:
        quiet = [k for k, (when, _) in self._seen.items() if now - when >= self.interval]
        for key in quiet or list(self._seen)[: self.remembered // 2]:
            del self._seen[key]


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
