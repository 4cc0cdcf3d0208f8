"""AWS Bedrock adapter: boto3's ``bedrock-runtime`` client, ``converse`` and ``converse_stream``.

boto3 has no asyncio client, so Bedrock is guarded sync only. A boto3 client is an instance of a
class botocore makes when the client is created, so it is recognized by its service name
(``client.meta.service_model.service_name == "bedrock-runtime"``), not by its class.

The client stays what it was: the same response dicts, the same ``ClientError``, ``client.meta``,
``client.exceptions``; ``invoke_model`` and every other method pass through untouched. Bedrock
names the model ``modelId``; the engine calls it ``model`` (renamed on the way in and out).
botocore's own retries are off for guarded calls only (a ``needs-retry`` handler, registered
first on the client's event system, answers "no retry" while a guarded call is being sent).
A ``converse_stream`` answer keeps its shape: its ``stream`` is the botocore ``EventStream``,
seen through aiguard, which reads each event for telemetry (``messageStop``, ``metadata``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import botocore.client
import botocore.exceptions
import urllib3.exceptions
import wrapt
from botocore.eventstream import EventStream

from aiguard import _semconv as sc
from aiguard._engine.contract import Endpoint, Reader, Route
from aiguard._engine.state import sdk_call
from aiguard._engine.stream import GuardedStream
from aiguard._http import failure_for_status, retry_after, server_attributes
from aiguard._messages import Message, estimate_input_tokens, to_json
from aiguard._policy import DEFAULT_RETRY, Failure, Policy, Retry, Target
from aiguard._telemetry import Attrs
from aiguard._types import Usage

# The pivot of cross-provider fallback, both ways.
from aiguard.adapters import _bedrock_from_openai, _pivot
from aiguard.adapters._bedrock_from_openai import (
    from_openai_chat,
    from_openai_chunks,
    from_openai_chunks_async,
    to_openai_chat,
)
from aiguard.adapters._bedrock_messages import (
    answer_messages,
    answer_text,
    converse_messages,
    event_text,
    reask,
    tool_definitions,
)
from aiguard.adapters._bedrock_openai import openai_chat, openai_chat_async
from aiguard.adapters._proxy import (
    Guard,
    GuardedProxy,
    Patch,
    guarded_method,
    the_class,
    unwrap,
)

__all__ = [
    "PATCHES",
    "classify",
    "converse_messages",
    "from_openai_chat",
    "from_openai_chunks",
    "from_openai_chunks_async",
    "openai_chat",
    "openai_chat_async",
    "supports",
    "to_openai_chat",
    "wrap",
]

PROVIDER = "aws.bedrock"
SERVICE = "bedrock-runtime"

# Error codes (``Error.Code``; in a stream, the event's lower-camel name) by failure class.
_TRANSIENT = {
    "ThrottlingException": Failure.RATE_LIMIT,
    "TooManyRequestsException": Failure.RATE_LIMIT,
    "ServiceUnavailableException": Failure.OUTAGE,
    "ModelNotReadyException": Failure.OUTAGE,
    "InternalServerException": Failure.OUTAGE,
    "ModelStreamErrorException": Failure.OUTAGE,
    "ModelTimeoutException": Failure.OUTAGE,
}
# How Bedrock (and the models behind it) say the input does not fit the model's context.
_TOO_LONG = re.compile(
    r"too long|too many (input )?tokens|context (length|window)|maximum context|"
    r"exceeds? the max(imum)? (number of )?(input )?tokens",
    re.IGNORECASE,
)
# Connection failures: botocore's own, and urllib3's while a stream is read.
_CONNECTION = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    ConnectionError,
)


def supports(client: object) -> bool:
    if not isinstance(client, botocore.client.BaseClient):
        return False
    model = getattr(getattr(client, "meta", None), "service_model", None)
    return getattr(model, "service_name", None) == SERVICE


def _code(error: botocore.exceptions.ClientError) -> tuple[str, str, int | None]:
    """The error's code (upper camel, as the exception's name), message and HTTP status."""
    response = error.response if isinstance(error.response, Mapping) else {}
    details = response.get("Error") or {}
    code = str(details.get("Code") or "")
    code = code[:1].upper() + code[1:]  # an in-stream error is named in lower camel
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, str(details.get("Message") or ""), status if isinstance(status, int) else None


def classify(error: BaseException) -> tuple[Failure, float | None]:
    """Failure class for a boto3 error, and the wait the server asked for."""
    if isinstance(error, botocore.exceptions.ClientError):
        code, message, status = _code(error)
        headers = (error.response.get("ResponseMetadata") or {}).get("HTTPHeaders")
        wait = retry_after(headers) if isinstance(headers, Mapping) else None
        if code in _TRANSIENT:
            return _TRANSIENT[code], wait
        if code == "ValidationException":
            return (Failure.CONTEXT_WINDOW if _TOO_LONG.search(message) else Failure.FATAL), None
        if isinstance(error, botocore.exceptions.EventStreamError):
            return Failure.FATAL, None  # an in-stream error of a kind not known to pass
        return (failure_for_status(status) if status else None) or Failure.FATAL, wait
    if isinstance(error, _CONNECTION):
        return Failure.OUTAGE, None
    return Failure.FATAL, None


# -- botocore's retries, off for guarded calls only ---------------------------------------------

_no_sdk_retry: ContextVar[bool] = ContextVar("aiguard_bedrock_no_retry", default=False)
_HANDLER_ID = "aiguard-bedrock-no-retry"


def _veto_retry(**kwargs: Any) -> bool | None:
    """``needs-retry`` handler: False (the endpoint then does not retry) inside a guarded call;
    None (no opinion: botocore's retry handler decides) otherwise."""
    return False if _no_sdk_retry.get() else None


def _register_veto(client: Any) -> None:
    # Once per client (the unique id makes registering again a no-op); first, so its False is
    # the first answer that is not None.
    client.meta.events.register_first(f"needs-retry.{SERVICE}", _veto_retry, unique_id=_HANDLER_ID)


# The model the last guarded request in this context was sent to: Bedrock's answer does not
# name it, and the route reads it right after the request (sync, same context).
_answering: ContextVar[str | None] = ContextVar("aiguard_bedrock_model", default=None)


class _Answered(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """The ``EventStream`` of a ``converse_stream`` answer (or the events another provider's
    answer became), holding the rest of the answer."""

    def __init__(self, stream: Any, response: dict[str, Any]) -> None:
        super().__init__(stream)
        self._self_response = response


def _invoke(call: Callable[..., Any], keep_retries: bool) -> Callable[[dict[str, Any]], Any]:
    def invoke(request: dict[str, Any]) -> Any:
        kwargs = dict(request)
        model = kwargs.pop("model")
        kwargs["modelId"] = model
        _answering.set(model)
        token = _no_sdk_retry.set(not keep_retries)
        try:
            response = call(**kwargs)
        finally:
            _no_sdk_retry.reset(token)
        stream = response.get("stream") if isinstance(response, dict) else None
        if isinstance(stream, EventStream):
            return _Answered(stream, response)
        return response

    return invoke


# -- answers -----------------------------------------------------------------------------------


def _count(usage: Mapping[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def bedrock_usage(usage: Any) -> Usage | None:
    """A converse ``usage``: ``inputTokens`` leaves out the cached tokens (read and written),
    which the conventions' input total includes."""
    if not isinstance(usage, Mapping):
        return None
    read = _count(usage, "cacheReadInputTokens")
    written = _count(usage, "cacheWriteInputTokens")
    plain = _count(usage, "inputTokens")
    return Usage(
        input_tokens=None if plain is None else plain + (read or 0) + (written or 0),
        output_tokens=_count(usage, "outputTokens"),
        cache_read_tokens=read,
        cache_write_tokens=written,
    )


def _answer_attrs(stop: Any) -> Attrs:
    attrs: Attrs = {}
    model = _answering.get()
    if model is not None:
        attrs[sc.RESPONSE_MODEL] = model
    if isinstance(stop, str):
        attrs[sc.RESPONSE_FINISH_REASONS] = [stop]
    return attrs


class StreamReader(Reader):
    """Reads ``converse_stream`` events: ``messageStop`` says the answer is whole, ``metadata``
    (last) carries the usage. Until the first content, an error event is retried."""

    __slots__ = ("attrs", "chunks", "complete", "started", "usage")

    def __init__(self) -> None:
        self.chunks = 0
        self.complete = False
        self.started = False
        self.attrs = _answer_attrs(None)
        self.usage: Usage | None = None

    def chunk(self, item: Any) -> bool:
        self.chunks += 1
        if not isinstance(item, Mapping) or "messageStart" in item:
            return True
        self.started = True
        stop = item.get("messageStop")
        if isinstance(stop, Mapping):
            self.complete = True
            self.attrs.update(_answer_attrs(stop.get("stopReason")))
        metadata = item.get("metadata")
        if isinstance(metadata, Mapping):
            self.usage = bedrock_usage(metadata.get("usage"))
        return True

    def result(self) -> tuple[Attrs, Usage | None]:
        return dict(self.attrs), self.usage

    def text(self, item: Any) -> str:
        return event_text(item)


# -- routes ------------------------------------------------------------------------------------


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ConverseRoute(Route):
    """``converse`` (and, with ``streams``, ``converse_stream``)."""

    operation = "chat"
    classify = staticmethod(classify)

    def __init__(self, streams: bool) -> None:
        self.streams = streams

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {}
        config = request.get("inferenceConfig")
        if isinstance(config, Mapping):
            for key, name in _CONFIG_ATTRIBUTES:
                if _number(config.get(key)):
                    attrs[name] = config[key]
            stop = config.get("stopSequences")
            if isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
                attrs[sc.REQUEST_STOP] = list(stop)
        extra = request.get("additionalModelRequestFields")
        if isinstance(extra, Mapping) and _number(extra.get("top_k")):
            attrs[sc.REQUEST_TOP_K] = extra["top_k"]
        if self.streams:
            attrs[sc.REQUEST_STREAM] = True
        return attrs

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        if not isinstance(result, Mapping):
            return {}, None
        return _answer_attrs(result.get("stopReason")), bedrock_usage(result.get("usage"))

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        tools = request.get("toolConfig")
        extra = [to_json(tools)] if tools is not None else []
        inputs = estimate_input_tokens(converse_messages(request), extra)
        config = request.get("inferenceConfig")
        limit = config.get("maxTokens") if isinstance(config, Mapping) else None
        return inputs, limit if isinstance(limit, int) and limit > 0 else None

    def messages(self, request: dict[str, Any]) -> list[Message]:
        return converse_messages(request)

    def tool_definitions(self, request: dict[str, Any]) -> list[Any] | None:
        return tool_definitions(request)

    def answer_text(self, result: Any) -> Any:
        return answer_text(result)

    def answer_messages(self, result: Any) -> list[tuple[Message, str]]:
        return answer_messages(result)

    def reask(self, request: dict[str, Any], answer: Any, errors: list[str]) -> dict[str, Any]:
        return reask(request, answer, errors)

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], StreamReader]] | None:
        # The metadata event always carries the usage: nothing to ask for or to hide.
        return (request, StreamReader) if self.streams else None


_CONFIG_ATTRIBUTES = (
    ("maxTokens", sc.REQUEST_MAX_TOKENS),
    ("temperature", sc.REQUEST_TEMPERATURE),
    ("topP", sc.REQUEST_TOP_P),
)

_METHODS = (
    ("converse", "Converse", ConverseRoute(streams=False)),
    ("converse_stream", "ConverseStream", ConverseRoute(streams=True)),
)


# -- the guarded client ------------------------------------------------------------------------


# botocore's attempts when its config names none: legacy mode's, and standard and adaptive's.
_BOTOCORE_ATTEMPTS = {"legacy": 5}
_BOTOCORE_DEFAULT_ATTEMPTS = 3


def _retry(client: Any, policy: Policy, target: Target | None) -> Retry:
    """The retry of a call on ``client``: the policy's, else as many attempts as the client's
    own retry config allows (``Config(retries={"max_attempts": ...})``, its mode's default)."""
    chosen = policy.retry_for(target)
    if chosen is not DEFAULT_RETRY:
        return chosen
    config = getattr(getattr(client.meta, "config", None), "retries", None) or {}
    total = config.get("total_max_attempts")
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        total = _BOTOCORE_ATTEMPTS.get(str(config.get("mode")), _BOTOCORE_DEFAULT_ATTEMPTS)
    return Retry(attempts=total)


class _Client:
    """One client's view for the core: its provider name and server attributes."""

    def __init__(self, client: Any, provider: str | None, policy: Policy) -> None:
        self.client = client
        self.provider = provider or PROVIDER
        self.server = server_attributes(client.meta.endpoint_url)
        self.keep_retries = policy.sdk_retries
        if not self.keep_retries:
            _register_veto(client)

    def endpoint(
        self,
        name: str,
        model: str,
        policy: Policy,
        target: Target | None = None,
        method: Callable[..., Any] | None = None,
    ) -> Endpoint:
        """``method`` is the one the call was made with; by default the client's ``name``."""
        call = getattr(self.client, name) if method is None else method
        return Endpoint(
            invoke=_invoke(call, self.keep_retries),
            model=model,
            provider=self.provider,
            server=self.server,
            retry=_retry(self.client, policy, target),
            breaker_key=(id(self.client), model),
            timeout_param=None,  # boto3 takes no per-request timeout: it is the client's config
        )


def _renamed(inner: Guard) -> Guard:
    """The guard as boto3 is called: ``modelId`` in, the engine's ``model`` inside; a stream's
    answer is the response dict again, its ``stream`` the guarded ``EventStream``."""

    def guard(
        proxy: Any, method: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if args or "model" in kwargs or not isinstance(kwargs.get("modelId"), str):
            return sdk_call(method, *args, **kwargs)  # boto3 refuses it in its own words
        request = dict(kwargs)
        request["model"] = request.pop("modelId")
        result = inner(proxy, method, instance, (), request)
        answered = getattr(result, "__wrapped__", None)
        if isinstance(result, GuardedStream) and isinstance(answered, _Answered):
            response = dict(answered._self_response)
            response["stream"] = result
            return response
        return result

    return guard


def _dispatch(guards: dict[str, Guard]) -> Guard:
    """The guard of ``_make_api_call(operation, params)``, every boto3 method's way to the
    service: zero-code instrumentation patches it, as the methods are made per client."""

    def guard(
        proxy: Any, method: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        operation = args[0] if len(args) == 2 and not kwargs else None
        found = guards.get(operation) if isinstance(operation, str) else None
        if found is None or not isinstance(args[1], dict):
            return method(*args, **kwargs)

        def call(**params: Any) -> Any:
            return method(operation, params)

        return found(proxy, call, instance, (), dict(args[1]))

    return guard


def pivot_server(client: Any) -> Attrs:
    """``server.*`` of a client answering another adapter's calls (see ``PivotTarget``)."""
    return server_attributes(client.meta.endpoint_url)


_PIVOT = _pivot.primary(_bedrock_from_openai)


def _foreign(owner: _pivot.Foreign, name: str, target: Target, policy: Policy) -> Endpoint:
    """Another SDK's client answering through the pivot, as the target's model (the converse
    answer names none); a stream, as a response whose ``stream`` yields converse events."""
    streams = name == "converse_stream"
    endpoint = owner.streaming(streams).endpoint(target, policy)
    send = endpoint.invoke

    def invoke(request: dict[str, Any]) -> Any:
        _answering.set(endpoint.model)
        result = send(request)
        if not streams:
            return result
        return _Answered(result, {"ResponseMetadata": _bedrock_from_openai.metadata("")})

    endpoint.invoke = invoke
    return endpoint


def wrap(client: Any, policy: Policy, provider: str | None) -> Any:
    primary = _Client(client, provider, policy)

    def view(other: Any) -> _Client:
        return _Client(other, None, policy)

    others = _pivot.fallback_clients(
        policy, supports, view, "bedrock-runtime client", False, _PIVOT
    )
    tree: dict[str, Any] = {}
    by_operation: dict[str, Guard] = {}
    for name, operation, route in _METHODS:
        fallbacks = []
        for t in policy.fallback:
            owner = others[id(unwrap(t.client))] if t.client is not None else primary
            if isinstance(owner, _pivot.Foreign):  # another SDK's client, via the pivot
                fallbacks.append(_foreign(owner, name, t, policy))
            else:
                fallbacks.append(owner.endpoint(name, t.model, policy, t))

        def endpoints(
            method: Callable[..., Any],
            model: str,
            name: str = name,
            fallbacks: list[Endpoint] = fallbacks,
        ) -> list[Endpoint]:
            return [primary.endpoint(name, model, policy, method=method), *fallbacks]

        guard = _renamed(guarded_method(route, policy, endpoints, is_async=False))
        tree[name] = by_operation[operation] = guard
    tree["_make_api_call"] = _dispatch(by_operation)
    return GuardedProxy(client, tree, policy, provider)


# Zero-code instrumentation: a boto3 client's methods are made per client class, each calling
# ``_make_api_call``, which is the one method every bedrock-runtime client shares.
PATCHES = (Patch(the_class(botocore.client.BaseClient), ("_make_api_call",)),)
