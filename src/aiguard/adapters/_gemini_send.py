"""One guarded attempt of a google-genai call: one request, within the deadline.

The SDK retries a request by itself only when ``http_options.retry_options`` is set (on the
client or on the request). A guarded attempt gives the request per-request ``retry_options`` of
one attempt (the caller's other ``http_options`` kept, the caller's config never changed), unless
the policy keeps the SDK's retries (zero-code instrumentation without a retry policy). Without
a retry policy of its own, aiguard retries as the request's ``retry_options`` say, else the
client's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from google import genai
from google.genai import types
from google.genai.models import AsyncModels, Models

from aiguard._engine.contract import Endpoint
from aiguard._engine.state import in_sdk
from aiguard._http import server_attributes
from aiguard._policy import DEFAULT_RETRY, Policy, Retry, Target
from aiguard._telemetry import Attrs
from aiguard.adapters._proxy import Guard

PROVIDER = "gcp.gen_ai"
VERTEX_PROVIDER = "gcp.vertex_ai"
# The SDK's own retry defaults (google.genai._api_client), for a client's retry_options.
_SDK_ATTEMPTS, _SDK_INITIAL, _SDK_MAX, _SDK_BASE, _SDK_JITTER = 5, 1.0, 60.0, 2.0, 1.0
# The request key the engine sets to what is left of a deadline (seconds); popped before sending.
_TIMEOUT_KEY = "aiguard_timeout"


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _options(config: Any) -> types.HttpOptions:
    given = _field(config, "http_options")
    if isinstance(given, types.HttpOptions):
        return given
    return types.HttpOptions.model_validate(given or {})


def attempt_config(config: Any, keep_retries: bool, remaining: float | None) -> Any:
    """The request's ``config`` for one guarded attempt: the SDK's retries off (unless kept),
    the per-request timeout (ms) no longer than what is left of the deadline. The caller's
    config is never changed."""
    if keep_retries and remaining is None:
        return config
    options = _options(config)
    update: dict[str, Any] = {}
    if not keep_retries:
        update["retry_options"] = types.HttpRetryOptions(attempts=1)
    if remaining is not None:
        ms = max(int(remaining * 1000), 1)
        if options.timeout is None or options.timeout > ms:
            update["timeout"] = ms
    options = options.model_copy(update=update)
    if config is None:
        return {"http_options": options}
    if isinstance(config, dict):
        return {**config, "http_options": options}
    return config.model_copy(update={"http_options": options})


def _prepared(client: _Client, request: dict[str, Any]) -> dict[str, Any]:
    """The request of one attempt. Unchanged unless the SDK would retry it (``retry_options``
    on the client or the request) or a deadline applies: the SDK then converts a config, which
    costs it more than the call's own work."""
    remaining = request.pop(_TIMEOUT_KEY, None)
    client_ms = client.timeout_ms()
    if remaining is not None and client_ms is not None:
        remaining = min(remaining, client_ms / 1000)
    config = request.get("config")
    keep = client.keep_retries or not client.retrying()
    if not keep or remaining is not None:
        request["config"] = attempt_config(config, keep, remaining)
    return request


def _send(method: Callable[..., Any], client: _Client, request: dict[str, Any]) -> Any:
    return method(**_prepared(client, dict(request)))


async def _send_async(method: Callable[..., Any], client: _Client, request: dict[str, Any]) -> Any:
    # Inside the SDK while awaited: an instrumented method it calls passes straight through.
    token = in_sdk.set(True)
    try:
        return await method(**_prepared(client, dict(request)))
    finally:
        in_sdk.reset(token)


class _Client:
    """One client's view for the engine: read from the client at each call, never copied."""

    def __init__(self, client: Any, policy: Policy, provider: str | None) -> None:
        self.client = client
        self.api = client._api_client
        self.keep_retries = policy.sdk_retries
        self.provider = provider or (VERTEX_PROVIDER if self.api.vertexai else PROVIDER)
        self.url: Any = None
        self.server: Attrs = {}

    def models(self, is_async: bool) -> Any:
        client = self.client
        if isinstance(client, Models | AsyncModels):
            return client
        return client.aio.models if is_async and isinstance(client, genai.Client) else client.models

    def _options(self) -> Any:
        return getattr(self.api, "_http_options", None)

    def retrying(self) -> bool:
        """Would the SDK retry the guarded request by itself?"""
        return _asked.get() is not None or self._options_retry() is not None

    def _options_retry(self) -> Any:
        return getattr(self._options(), "retry_options", None)

    def timeout_ms(self) -> float | None:
        timeout = getattr(self._options(), "timeout", None)
        return timeout if _number(timeout) else None

    def retry(self, policy: Policy, target: Target | None) -> Retry:
        """The policy's retry; without one, the request's own ``retry_options``, else the
        client's, if any."""
        chosen = policy.retry_for(target)
        options = _asked.get() or self._options_retry()
        if chosen is not DEFAULT_RETRY or options is None:
            return chosen
        return _following(
            options.attempts or _SDK_ATTEMPTS,
            _or(options.initial_delay, _SDK_INITIAL),
            _or(options.max_delay, _SDK_MAX),
            _or(options.jitter, _SDK_JITTER),
            max(_or(options.exp_base, _SDK_BASE), 1.0),
        )

    def endpoint(
        self,
        method: Callable[..., Any],
        model: str,
        policy: Policy,
        is_async: bool,
        target: Target | None = None,
    ) -> Endpoint:
        url = getattr(self._options(), "base_url", None)
        if url != self.url:
            self.server = server_attributes(url)
            self.url = url
        send = _send_async if is_async else _send
        return Endpoint(
            invoke=functools.partial(send, method, self),
            model=model,
            provider=self.provider,
            server=self.server,
            retry=self.retry(policy, target),
            breaker_key=(id(self.api), model),
            timeout_param=_TIMEOUT_KEY,
        )


# The ``retry_options`` of the request being guarded (its config's ``http_options``).
_asked: ContextVar[Any] = ContextVar("aiguard_gemini_retry_options", default=None)


def _request_retry_options(kwargs: dict[str, Any]) -> Any:
    options = _field(kwargs.get("config"), "http_options")
    retry = _field(options, "retry_options")
    if isinstance(retry, dict):
        try:
            return types.HttpRetryOptions.model_validate(retry)
        except ValueError:  # the SDK will say what is wrong with it
            return None
    return retry if isinstance(retry, types.HttpRetryOptions) else None


def asking(guard: Guard, is_async: bool) -> Guard:
    """``guard``, with the request's own ``retry_options`` known while its targets are made."""
    if is_async:

        async def guarded_async(
            proxy: Any, method: Callable[..., Any], instance: Any, args: Any, kwargs: Any
        ) -> Any:
            token = _asked.set(_request_retry_options(kwargs))
            try:
                return await guard(proxy, method, instance, args, kwargs)
            finally:
                _asked.reset(token)

        return guarded_async

    def guarded(
        proxy: Any, method: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        token = _asked.set(_request_retry_options(kwargs))
        try:
            return guard(proxy, method, instance, args, kwargs)
        finally:
            _asked.reset(token)

    return guarded


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


@functools.lru_cache(maxsize=64)
def _following(attempts: int, initial: float, most: float, jitter: float, base: float) -> Retry:
    return Retry(
        attempts=max(attempts, 1),
        wait_initial=initial,
        wait_max=most,
        wait_jitter=jitter,
        wait_exp_base=base,
    )
