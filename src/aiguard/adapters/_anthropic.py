"""Anthropic adapter: translates the anthropic SDK's requests, responses and errors for the core.

Guards ``messages.create`` (with and without ``stream=True``) and the ``messages.stream(...)``
helper on ``Anthropic`` and ``AsyncAnthropic``; everything else passes through.

The helper goes through the core's stream machinery too: the guarded call opens the raw event
stream (retried and falling back like any call until its first event), and the SDK's own
``MessageStreamManager`` is built around that guarded stream, so ``text_stream``,
``get_final_message()`` and ``with`` behave exactly as they do unguarded.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from types import MethodType
from typing import Any

import anthropic
from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager
from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._engine.contract import Endpoint, Route
from aiguard._http import failure_for_status, retry_after, timeout_seconds
from aiguard._http import server_attributes as url_server
from aiguard._messages import Message, estimate_input_tokens, to_json
from aiguard._policy import DEFAULT_RETRY, Failure, Policy, Target
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters import _anthropic_pivot, _pivot, _shapes, _stainless
from aiguard.adapters._anthropic_messages import (
    MessagesReader,
    _message_attributes,
    _plain,
    answer_messages,
    answer_text,
    anthropic_messages,
    message_usage,
)
from aiguard.adapters._anthropic_pivot import (
    from_openai_chat,
    from_openai_chunks,
    from_openai_chunks_async,
    openai_chat,
    openai_chat_async,
    pivot_server,
    pivot_timeout,
    to_openai_chat,
)
from aiguard.adapters._proxy import (
    SDK_VIEW,
    Guard,
    GuardedProxy,
    Patch,
    guarded_method,
    is_wrapped,
    resource_class,
    unwrap,
)

PROVIDER = "anthropic"

# Error types that say the service, not the request, failed. An SSE ``error`` event arrives on a
# response whose HTTP status was 200, so only its type tells what happened.
_TRANSIENT_TYPES = {
    "rate_limit_error": Failure.RATE_LIMIT,
    "overloaded_error": Failure.OUTAGE,
    "api_error": Failure.OUTAGE,
    "timeout_error": Failure.OUTAGE,
}
# How the API says a prompt does not fit the model's context window (a 400, no dedicated code).
_CONTEXT_MESSAGE = "prompt is too long"


def _outage_errors() -> tuple[type[BaseException], ...]:
    """Errors without an HTTP status that mean the service could not be reached or cut us off.

    A stream cut mid-way raises the HTTP library's own error, not wrapped by the SDK: httpx2 for
    current SDKs, httpx for older ones; whichever it is, the SDK has imported it already.
    ``RetryableError`` is a middleware asking for a retry (newer SDKs only).
    """
    found: list[type[BaseException]] = [anthropic.APIConnectionError]
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None:
            found.append(module.TransportError)
    retryable = getattr(anthropic, "RetryableError", None)
    if isinstance(retryable, type):
        found.append(retryable)
    return tuple(found)


_OUTAGE_ERRORS = _outage_errors()


def supports(client: object) -> bool:
    return isinstance(client, anthropic.Anthropic | anthropic.AsyncAnthropic)


def classify(error: BaseException) -> tuple[Failure, float | None]:
    """Failure class and server-requested wait for an anthropic SDK error."""
    if isinstance(error, anthropic.APIStatusError):
        headers = error.response.headers
        failure = failure_for_status(error.status_code)
        if failure is not None:
            return failure, retry_after(headers)
        detail = _body_error(error.body)
        failure = _TRANSIENT_TYPES.get(str(detail.get("type")))
        if failure is not None:  # an SSE error event: the 200's headers say nothing of waiting
            return failure, None
        message = detail.get("message")
        if isinstance(message, str) and _CONTEXT_MESSAGE in message.lower():
            return Failure.CONTEXT_WINDOW, None
        if headers.get("x-should-retry") == "true":
            return Failure.OUTAGE, retry_after(headers)
        return Failure.FATAL, None
    if isinstance(error, _OUTAGE_ERRORS):
        return Failure.OUTAGE, None
    return Failure.FATAL, None


def _body_error(body: object) -> dict[str, Any]:
    """The ``error`` object of an Anthropic error body (``{"type": "error", "error": {...}}``)."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            return inner
    return {}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Sampling parameters: read from the call's keywords, or from ``extra_body``, the only way to
# send them with SDKs whose ``create`` no longer takes them.
_SAMPLING = (
    ("temperature", sc.REQUEST_TEMPERATURE),
    ("top_p", sc.REQUEST_TOP_P),
    ("top_k", sc.REQUEST_TOP_K),
)


class MessagesRoute(Route):
    """``messages.create``, or with ``helper`` the ``messages.stream`` helper (always a stream)."""

    operation = "chat"
    span_kind = SpanKind.CLIENT
    priced = True
    classify = staticmethod(classify)

    def __init__(self, helper: bool) -> None:
        self.helper = helper

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {}
        get = request.get
        max_tokens = get("max_tokens")
        if _number(max_tokens):
            attrs[sc.REQUEST_MAX_TOKENS] = max_tokens
        extra = get("extra_body")
        for key, name in _SAMPLING:
            value = get(key)
            if value is None and isinstance(extra, dict):
                value = extra.get(key)
            if _number(value):
                attrs[name] = value
        stop = get("stop_sequences")
        if isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
            attrs[sc.REQUEST_STOP] = list(stop)
        if _asks_for_json(request):
            attrs[sc.OUTPUT_TYPE] = "json"
        if self.helper or get("stream") is True:
            attrs[sc.REQUEST_STREAM] = True
        return attrs

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs = _message_attributes(
            getattr(result, "id", None),
            getattr(result, "model", None),
            getattr(result, "stop_reason", None),
        )
        return attrs, message_usage(getattr(result, "usage", None))

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        extra = [to_json(_plain(request[key])) for key in _EXTRA_INPUT if request.get(key)]
        fmt = request.get("output_format")
        if isinstance(fmt, type):  # stream(output_format=Model): its JSON schema is sent
            extra.append(to_json(getattr(fmt, "model_json_schema", dict)()))
        messages = anthropic_messages(request.get("system"), request.get("messages"))
        limit = request.get("max_tokens")  # required by the API; thinking counts within it
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return estimate_input_tokens(messages, extra), limit
        return estimate_input_tokens(messages, extra), None

    def messages(self, request: dict[str, Any]) -> list[Message]:
        return _shapes.request_messages(request)

    def answer_text(self, result: Any) -> Any:
        return answer_text(result)

    def answer_messages(self, result: Any) -> list[tuple[Message, str]]:
        return answer_messages(result)

    def reask(self, request: dict[str, Any], answer: Any, errors: list[str]) -> dict[str, Any]:
        return _shapes.reask_messages(request, answer, errors)

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], MessagesReader]] | None:
        # Anthropic always reports usage in a stream: nothing to ask for, nothing to hide.
        if self.helper or request.get("stream") is True:
            return request, MessagesReader
        return None


# Request fields sent to the model besides the system prompt and the messages.
_EXTRA_INPUT = ("tools", "output_config")


def _asks_for_json(request: dict[str, Any]) -> bool:
    if isinstance(request.get("output_format"), type):
        return True
    config = request.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    return isinstance(fmt, dict) and fmt.get("type") == "json_schema"


_PIVOT = _pivot.primary(_anthropic_pivot)
# The pivot: a client of another SDK answers this adapter's calls, and this adapter's clients
# answer other adapters' calls (see aiguard._engine.contract.PivotPrimary and PivotTarget).
__all__ = [
    "from_openai_chat",
    "from_openai_chunks",
    "from_openai_chunks_async",
    "openai_chat",
    "openai_chat_async",
    "pivot_server",
    "pivot_timeout",
    "to_openai_chat",
]

_CREATE = MessagesRoute(helper=False)
_HELPER = MessagesRoute(helper=True)


def _open(manager: MessageStreamManager[Any]) -> Any:
    """Send the helper's request and return its raw event stream (what ``create`` returns)."""
    return manager.__enter__()._raw_stream


async def _open_async(manager: AsyncMessageStreamManager[Any]) -> Any:
    return (await manager.__aenter__())._raw_stream


def _opener(is_async: bool) -> Callable[[Any], Any]:
    return _open_async if is_async else _open


class _Client:
    """One client's view for the core: read from the client at each call, never copied."""

    def __init__(
        self,
        client: anthropic.Anthropic | anthropic.AsyncAnthropic,
        provider: str | None,
        policy: Policy,
    ) -> None:
        self.client = client
        self.is_async = isinstance(client, anthropic.AsyncAnthropic)
        # The SDK's own retries are off for guarded attempts: aiguard retries (unless told to
        # keep them, as zero-code instrumentation without a retry policy does).
        self.keep_retries = policy.sdk_retries
        _stainless.hush(client)
        self.call: Callable[..., Any] = _stainless.call_async if self.is_async else _stainless.call
        self.provider = provider or PROVIDER
        self.url: Any = None
        self.server: Attrs = {}

    def endpoint(
        self, method: Callable[..., Any], model: str, policy: Policy, target: Target | None = None
    ) -> Endpoint:
        client = self.client
        url = client.base_url  # may be changed on the client at any time
        if url is not self.url:
            self.server = url_server(url)
            self.url = url
        retry = _stainless.retry(client, policy, target)
        call = self.call
        # A client with a token provider: the SDK sends a request rejected with 401 once more,
        # with a fresh token, while it has retries left; so does aiguard, within the attempt.
        if (
            retry.attempts > 1
            and not self.keep_retries
            and getattr(client, "_token_cache", None) is not None
        ):
            call = _refreshing_async if self.is_async else _refreshing
        return Endpoint(
            invoke=functools.partial(call, client, self.keep_retries, [0], method),
            model=model,
            provider=self.provider,
            server=self.server,
            retry=retry,
            breaker_key=(id(client), model),
            client_timeout=lambda: timeout_seconds(client.timeout),
        )


def _refreshing(
    client: Any, keep: bool, tries: list[int], method: Callable[..., Any], request: Any
) -> Any:
    try:
        return _stainless.call(client, keep, tries, method, request)
    except anthropic.AuthenticationError:  # the SDK's auth dropped the rejected token
        return _stainless.call(client, keep, tries, method, request)


async def _refreshing_async(
    client: Any, keep: bool, tries: list[int], method: Callable[..., Any], request: Any
) -> Any:
    try:
        return await _stainless.call_async(client, keep, tries, method, request)
    except anthropic.AuthenticationError:
        return await _stainless.call_async(client, keep, tries, method, request)


def _opening(stream: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """``stream(**request)`` builds the SDK's manager; this sends it and gives the raw stream."""
    opener = _opener(is_async)
    return lambda **request: opener(stream(**request))


def _guardable(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """What ``guarded_method`` guards; the helper decides it before building its manager."""
    return not args and isinstance(kwargs.get("model"), str)


def _stream_helper(guard: Guard, is_async: bool) -> Guard:
    """``messages.stream(...)``: the SDK's own manager, around a guarded raw stream.

    The SDK's ``stream()`` runs first, as unguarded, so its checks of the arguments raise at the
    call; the request is sent when the manager is entered, as the SDK does, so the guarded call
    (and its span) starts there. A mocked ``stream`` is called as it is.
    """
    manager_type = AsyncMessageStreamManager if is_async else MessageStreamManager

    def stream(
        proxy: Any, method: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        own = type(method) is MethodType and method.__self__ is proxy.__wrapped__
        if not own or not _guardable(args, kwargs):
            return method(*args, **kwargs)
        unsent = method(**kwargs)  # the SDK's checks; nothing is sent until a manager is entered
        if is_async:  # its request, made in advance as a coroutine, is never awaited
            pending = getattr(unsent, "_AsyncMessageStreamManager__api_request", None)
            close = getattr(pending, "close", None)
            if close is not None:
                close()
        opened = _opening(method, is_async)
        fmt = kwargs.get("output_format", anthropic.NOT_GIVEN)
        if is_async:  # its manager takes the awaitable, the sync one a callable
            return manager_type(guard(proxy, opened, None, (), kwargs), output_format=fmt)
        send: Any = functools.partial(guard, proxy, opened, None, (), kwargs)
        return manager_type(send, output_format=fmt)

    return stream


def _endpoints(
    name: str,
    primary: _Client,
    others: dict[int, _Client | _pivot.Foreign],
    policy: Policy,
    is_async: bool,
) -> Callable[[Callable[..., Any], str], list[Endpoint]]:
    """The targets of one call of ``messages.<name>``: the method called, then fallbacks."""

    def found(method: Callable[..., Any], model: str) -> list[Endpoint]:
        out = [primary.endpoint(method, model, policy)]
        for t in policy.fallback:
            owner = others[id(unwrap(t.client))] if t.client is not None else primary
            if isinstance(owner, _pivot.Foreign):  # another SDK's client, via the pivot
                out.append(owner.streaming(name == "stream").endpoint(t, policy))
                continue
            send = method
            if owner is not primary:
                send = getattr(owner.client.messages, name)
                if name == "stream":
                    send = _opening(send, is_async)
            out.append(owner.endpoint(send, t.model, policy, t))
        return out

    return found


def wrap(
    client: anthropic.Anthropic | anthropic.AsyncAnthropic, policy: Policy, provider: str | None
) -> Any:
    is_async = isinstance(client, anthropic.AsyncAnthropic)
    primary = _Client(client, provider, policy)
    kind = "AsyncAnthropic client" if is_async else "Anthropic client"
    others = _pivot.fallback_clients(
        policy,
        lambda other: supports(other) and isinstance(other, anthropic.AsyncAnthropic) == is_async,
        lambda other: _Client(other, None, policy),
        kind,
        is_async,
        _PIVOT,
    )

    def endpoints(name: str) -> Callable[[Callable[..., Any], str], list[Endpoint]]:
        return _endpoints(name, primary, others, policy, is_async)

    create = guarded_method(_CREATE, policy, endpoints("create"), is_async)
    helper = guarded_method(_HELPER, policy, endpoints("stream"), is_async)
    tree: dict[str, Any] = {
        "messages": {
            "create": _stainless.raw_responses(create, is_async),
            "stream": _stream_helper(helper, is_async),
            # The SDK's raw and streaming-response views, around the guarded resource.
            "with_raw_response": SDK_VIEW,
            "with_streaming_response": SDK_VIEW,
        },
    }

    def with_options(
        proxy: Any, method: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        result = method(*args, **kwargs)
        if is_wrapped(result):
            return result
        if result is proxy.__wrapped__:
            return proxy
        if not supports(result):
            return result
        rewrapped = policy
        if "max_retries" in kwargs and policy.retry is not DEFAULT_RETRY:
            rewrapped = dataclasses.replace(policy, retry=DEFAULT_RETRY)
        return wrap(result, rewrapped, provider)

    tree["with_options"] = tree["copy"] = with_options
    return GuardedProxy(client, tree, policy, provider)


# Zero-code instrumentation (``aiguard.instrument()``): the SDK methods it patches.
PATCHES = tuple(
    Patch(resource_class(client_cls, ("messages",)), ("create",), ("messages",), "_client")
    for client_cls in (anthropic.Anthropic, anthropic.AsyncAnthropic)
)
