"""Fetching endorsements over HTTPS (AMD KDS, Intel PCS), with an on-disk cache.

This is the I/O edge the pure cores take as an injected ``Fetcher``; it is only
used when asked for (``attestation verify --fetch``, or configured in the
service), never in tests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from prism_backends.attestation.common import CollateralUnavailable

TIMEOUT_SECONDS = 15.0


class CachingHttpFetcher:
    """GETs by URL; successful answers are cached (with their headers) on disk."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir

    def get(self, url: str) -> bytes:
        return self.get_with_headers(url)[1]

    def refresh(self, url: str) -> bytes:
        """GET past the cache (a CRL past its next update), replacing what it held."""
        return self._fetch(url)[1]

    def get_with_headers(self, url: str) -> tuple[dict[str, str], bytes]:
        cached = self._cached(url)
        if cached is not None:
            return cached
        return self._fetch(url)

    def _fetch(self, url: str) -> tuple[dict[str, str], bytes]:
        try:
            response = httpx.get(url, timeout=TIMEOUT_SECONDS, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise CollateralUnavailable(f"cannot fetch {url}: {exc}") from exc
        if response.status_code != 200:
            raise CollateralUnavailable(f"cannot fetch {url}: HTTP {response.status_code}")
        headers = {key.lower(): value for key, value in response.headers.items()}
        self._store(url, response.content, headers)
        return headers, response.content

    def _paths(self, url: str) -> tuple[Path, Path] | None:
        if self._cache_dir is None:
            return None
        name = hashlib.sha256(url.encode()).hexdigest()
        return self._cache_dir / f"{name}.bin", self._cache_dir / f"{name}.headers.json"

    def _cached(self, url: str) -> tuple[dict[str, str], bytes] | None:
        paths = self._paths(url)
        if paths is None or not paths[0].exists():
            return None
        headers = json.loads(paths[1].read_text()) if paths[1].exists() else {}
        return headers, paths[0].read_bytes()

    def _store(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        paths = self._paths(url)
        if paths is None:
            return
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        paths[0].write_bytes(body)
        paths[1].write_text(json.dumps(headers))
