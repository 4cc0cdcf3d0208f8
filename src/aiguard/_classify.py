"""Classify any exception for the decorator, which does not know which provider raised it.

Each adapter classifies its own SDK's errors; this asks the adapters whose SDK is imported (an
exception of an SDK that was never imported cannot exist), then falls back to the built-in
network errors.
"""

from __future__ import annotations

from aiguard import adapters
from aiguard._errors import AIGuardError
from aiguard._policy import Failure


def classify(error: BaseException) -> tuple[Failure, float | None]:
    if isinstance(error, AIGuardError):  # aiguard's own refusals are final
        return Failure.FATAL, None
    for cls in type(error).__mro__:
        adapter = adapters.for_module(cls.__module__)
        if adapter is not None:
            result: tuple[Failure, float | None] = adapter.classify(error)
            return result
    if isinstance(error, TimeoutError | ConnectionError) or _transport_error(error):
        return Failure.OUTAGE, None
    return Failure.FATAL, None


def _transport_error(error: BaseException) -> bool:
    """A raw httpx / httpx2 transport error: some SDKs let a stream cut midway through as is."""
    return any(
        cls.__name__ == "TransportError" and cls.__module__.partition(".")[0] in _HTTP_CLIENTS
        for cls in type(error).__mro__
    )


_HTTP_CLIENTS = frozenset({"httpx", "httpx2"})
