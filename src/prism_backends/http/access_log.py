"""The HTTP access log without secrets: query strings can carry tokens (a
client that sends ``?access_token=`` is refused, but its request line would
be logged whole), so every query value is replaced before uvicorn writes it."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

REDACTED = "***"


def redacted_path(path: str) -> str:
    """``/x?limit=10&access_token=abc`` -> ``/x?limit=***&access_token=***``."""
    parts = urlsplit(path)
    if not parts.query:
        return path
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)] or ["?"]
    return f"{parts.path}?{'&'.join(f'{name}={REDACTED}' for name in names)}"


class RedactQueryStrings(logging.Filter):
    """For ``uvicorn.access``: its records' args are (client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redacted_path(args[2]), *args[3:])
        return True


def install() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryStrings) for f in access.filters):
        access.addFilter(RedactQueryStrings())
