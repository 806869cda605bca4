"""Parsing paging and other bounded integers from query strings, with errors
that name the parameter and say what is accepted."""

from __future__ import annotations

import re

from prism_backends.errors import BadRequest

MAX_PAGE = 100
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def parse_page(
    limit: str | None, offset: str | None, *, default_limit: int = 10
) -> tuple[int, int]:
    parsed_limit = bounded_int(limit, "limit", default_limit, 1, MAX_PAGE)
    parsed_offset = bounded_int(offset, "offset", 0, 0, None)
    return parsed_limit, parsed_offset


def bounded_int(raw: str | None, field: str, default: int, low: int, high: int | None) -> int:
    if raw is None:
        return default
    text = raw.strip()
    accepted = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    if not _INTEGER.fullmatch(text):
        raise BadRequest(f"must be {accepted}, got {raw!r}", field=field)
    value = int(text)
    if value < low or (high is not None and value > high):
        raise BadRequest(f"must be {accepted}, got {value}", field=field)
    return value
