"""HTTP facts shared by the adapters of HTTP providers."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

from aiguard._policy import Failure
from aiguard._telemetry import Attrs


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``retry-after``.

    ``retry-after`` may be seconds or an HTTP date. Unparseable values are ignored.
    """
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return max(when.timestamp() - time.time(), 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def failure_for_status(status: int) -> Failure | None:
    """The transient classes by HTTP status; ``None`` for a status that needs a closer look."""
    if status == 429:
        return Failure.RATE_LIMIT
    if status in (408, 409) or status >= 500:
        return Failure.OUTAGE
    return None


def server_attributes(url: object) -> Attrs:
    """``server.address`` and ``server.port`` from an httpx-style URL (or a string)."""
    host = getattr(url, "host", None)
    port = getattr(url, "port", None)
    scheme = getattr(url, "scheme", None)
    if host is None and isinstance(url, str):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host, port, scheme = parts.hostname, parts.port, parts.scheme
    attrs: Attrs = {}
    if host:
        attrs["server.address"] = str(host)
        if port is None:
            port = 443 if scheme == "https" else 80 if scheme == "http" else None
        if port is not None:
            attrs["server.port"] = int(port)
    return attrs


def timeout_seconds(timeout: object) -> float | None:
    """A client's own per-request timeout in seconds: a number, or an httpx-style ``Timeout``'s
    read timeout (None: no limit, or a shape not known)."""
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        return float(timeout)
    read = getattr(timeout, "read", None)
    if isinstance(read, int | float) and not isinstance(read, bool):
        return float(read)
    return None
