"""OpenAI adapter: translates the openai SDK's requests, responses and errors for the core.

Guards ``chat.completions.create`` / ``parse`` and ``embeddings.create`` on ``OpenAI`` and
``AsyncOpenAI``; everything else passes through. Works for any OpenAI-compatible server.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import openai
from opentelemetry.trace import SpanKind

from aiguard import _budget
from aiguard import _semconv as sc
from aiguard._engine.contract import Endpoint, Reader, Route
from aiguard._errors import AIGuardError
from aiguard._http import failure_for_status, retry_after, timeout_seconds
from aiguard._http import server_attributes as url_server
from aiguard._messages import (
    Message,
    Part,
    estimate_input_tokens,
    openai_messages,
    plain,
    to_json,
)
from aiguard._policy import DEFAULT_RETRY, Failure, Policy, Target
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters import _openai_pivot, _pivot, _stainless
from aiguard.adapters._openai_pivot import (
    from_openai_chat,
    from_openai_chunks,
    from_openai_chunks_async,
    openai_chat,
    openai_chat_async,
    server_attributes,
    telemetry_provider,
    to_openai_chat,
)
from aiguard.adapters._proxy import (
    SDK_VIEW,
    Guard,
    GuardedProxy,
    Patch,
    guarded_method,
    is_wrapped,
    rebound,
    resource_class,
    unwrap,
)

_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})

# Well-known hosts and ports; anything else is an unnamed OpenAI-compatible server.
_HOSTS = {
    "api.openai.com": "openai",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral_ai",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
    "openrouter.ai": "openrouter",
}
_PORTS = {11434: "ollama", 1234: "lm_studio"}


def supports(client: object) -> bool:
    return isinstance(client, openai.OpenAI | openai.AsyncOpenAI)


def detect_provider(client: openai.OpenAI | openai.AsyncOpenAI) -> str:
    """The vendor behind a client's base URL, for prices (``openai_compatible`` if unknown)."""
    url = client.base_url
    host = url.host or ""
    if host in _HOSTS:
        return _HOSTS[host]
    if host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    if url.port in _PORTS:
        return _PORTS[url.port]
    return "openai_compatible"


def classify(error: BaseException) -> tuple[Failure, float | None]:
    """Failure class and server-requested wait for an openai SDK error."""
    if isinstance(error, openai.APIStatusError):
        headers = error.response.headers
        failure = failure_for_status(error.status_code)
        if failure is not None:
            return failure, retry_after(headers)
        code = error.code or _body_code(error.body)
        if code in _CONTEXT_CODES:
            return Failure.CONTEXT_WINDOW, None
        if code in _POLICY_CODES:
            return Failure.CONTENT_POLICY, None
        if headers.get("x-should-retry") == "true":
            return Failure.OUTAGE, retry_after(headers)
        return Failure.FATAL, None
    if isinstance(error, openai.APIConnectionError):
        return Failure.OUTAGE, None
    return Failure.FATAL, None


def _body_code(body: object) -> str | None:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            code = inner.get("code")
            return code if isinstance(code, str) else None
    return None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SAMPLING = (
    ("temperature", sc.REQUEST_TEMPERATURE),
    ("top_p", sc.REQUEST_TOP_P),
    ("frequency_penalty", sc.REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", sc.REQUEST_PRESENCE_PENALTY),
    ("seed", sc.REQUEST_SEED),
)


def _numbers(request: dict[str, Any], attrs: Attrs, names: tuple[tuple[str, str], ...]) -> None:
    for key, name in names:
        value = request.get(key)
        if _number(value):
            attrs[name] = value


def _service_tier(request: dict[str, Any], attrs: Attrs) -> None:
    tier = request.get("service_tier")
    if isinstance(tier, str) and tier != "auto":  # the conventions: only when not auto
        attrs[sc.OPENAI_REQUEST_SERVICE_TIER] = tier


class _Route(Route):
    span_kind = SpanKind.CLIENT
    priced = True

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], Reader]] | None:
        return None

    def __init__(self, operation: str) -> None:
        self.operation = operation

    classify = staticmethod(classify)


class ChatRoute(_Route):
    """``chat.completions.create`` and ``parse``."""

    def __init__(self) -> None:
        super().__init__("chat")

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {sc.OPENAI_API_TYPE: "chat_completions"}
        get = request.get
        max_tokens = get("max_completion_tokens", get("max_tokens"))
        if _number(max_tokens):
            attrs[sc.REQUEST_MAX_TOKENS] = max_tokens
        _numbers(request, attrs, _SAMPLING)
        effort = get("reasoning_effort")
        if isinstance(effort, str):
            attrs[sc.REQUEST_REASONING_LEVEL] = effort
        n = get("n")
        if _number(n) and n != 1:
            attrs[sc.REQUEST_CHOICE_COUNT] = n
        stop = get("stop")
        if isinstance(stop, str):
            attrs[sc.REQUEST_STOP] = [stop]
        elif isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
            attrs[sc.REQUEST_STOP] = list(stop)
        _service_tier(request, attrs)
        fmt = get("response_format")
        if isinstance(fmt, dict):
            kind = fmt.get("type")
            attrs[sc.OUTPUT_TYPE] = "json" if kind in ("json_object", "json_schema") else "text"
        elif isinstance(fmt, type):  # parse(response_format=PydanticModel)
            attrs[sc.OUTPUT_TYPE] = "json"
        if get("stream") is True:
            attrs[sc.REQUEST_STREAM] = True
        return attrs

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        response_id = getattr(result, "id", None)
        if isinstance(response_id, str):
            attrs[sc.RESPONSE_ID] = response_id
        model = getattr(result, "model", None)
        if isinstance(model, str):
            attrs[sc.RESPONSE_MODEL] = model
        choices = getattr(result, "choices", None)
        if isinstance(choices, list):
            reasons = [str(getattr(c, "finish_reason", None) or "") for c in choices]
            attrs[sc.RESPONSE_FINISH_REASONS] = reasons
        tier = getattr(result, "service_tier", None)
        if isinstance(tier, str):
            attrs[sc.OPENAI_RESPONSE_SERVICE_TIER] = tier
        fingerprint = getattr(result, "system_fingerprint", None)
        if isinstance(fingerprint, str):
            attrs[sc.OPENAI_SYSTEM_FINGERPRINT] = fingerprint
        return attrs, chat_usage(getattr(result, "usage", None))

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        extra = [to_json(request[key]) for key in _EXTRA_INPUT if request.get(key) is not None]
        fmt = request.get("response_format")
        if isinstance(fmt, type):  # parse(response_format=Model): its JSON schema is sent
            extra.append(to_json(getattr(fmt, "model_json_schema", dict)()))
        inputs = estimate_input_tokens(openai_messages(request.get("messages")), extra)
        limit = request.get("max_completion_tokens", request.get("max_tokens"))
        n = request.get("n")
        choices = n if isinstance(n, int) and n > 1 else 1
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return inputs, limit * choices
        return inputs, None

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], Reader]] | None:
        if request.get("stream") is not True:
            return None
        options = request.get("stream_options")
        if isinstance(options, openai.Omit | openai.NotGiven):
            options = None
        asked = isinstance(options, dict) and options.get("include_usage") is True
        # Options aiguard cannot read (not a dict) go to the server as given: it answers them.
        if not include_usage or asked or not isinstance(options, dict | None):
            return request, ChatReader
        # Ask for usage, and hide the extra chunk it brings from a user who did not ask.
        request = {**request, "stream_options": {**(options or {}), "include_usage": True}}
        return request, _hiding_reader


# Request fields sent to the model besides the messages.
_EXTRA_INPUT = ("tools", "functions", "response_format", "prediction")


class ChatReader(Reader):
    """Reads chat completion chunks: finish reasons, ids, the model and the usage chunk."""

    __slots__ = (
        "chunks",
        "complete",
        "fingerprint",
        "hide_usage",
        "id",
        "model",
        "reasons",
        "tier",
        "usage",
    )

    def __init__(self, hide_usage: bool = False) -> None:
        self.hide_usage = hide_usage
        self.chunks = 0
        self.complete = False
        self.reasons: dict[int, str] = {}
        self.id: Any = None
        self.model: Any = None
        self.usage: Any = None
        self.fingerprint: Any = None
        self.tier: Any = None

    def chunk(self, item: Any) -> bool:
        self.chunks += 1
        if self.id is None:
            self.id = item.id
            self.model = item.model
            self.fingerprint = getattr(item, "system_fingerprint", None)
            self.tier = getattr(item, "service_tier", None)
        choices = item.choices
        if choices:
            for choice in choices:
                reason = choice.finish_reason
                if reason is not None:
                    self.reasons[choice.index] = reason
                    self.complete = True
            return True
        usage = item.usage
        if usage is not None:
            self.usage = usage
            if self.hide_usage:
                self.chunks -= 1
                return False
        return True

    def result(self) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        if isinstance(self.id, str):
            attrs[sc.RESPONSE_ID] = self.id
        if isinstance(self.model, str):
            attrs[sc.RESPONSE_MODEL] = self.model
        if self.reasons:
            attrs[sc.RESPONSE_FINISH_REASONS] = [self.reasons[i] for i in sorted(self.reasons)]
        if isinstance(self.fingerprint, str):
            attrs[sc.OPENAI_SYSTEM_FINGERPRINT] = self.fingerprint
        if isinstance(self.tier, str):
            attrs[sc.OPENAI_RESPONSE_SERVICE_TIER] = self.tier
        return attrs, chat_usage(self.usage)


def _hiding_reader() -> ChatReader:
    return ChatReader(hide_usage=True)


class ResponsesRoute(_Route):
    """``responses.create`` (streams too) and, through it, ``responses.stream``."""

    def __init__(self) -> None:
        super().__init__("chat")

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {sc.OPENAI_API_TYPE: "responses"}
        limit = request.get("max_output_tokens")
        if _number(limit):
            attrs[sc.REQUEST_MAX_TOKENS] = limit
        _numbers(request, attrs, _SAMPLING[:2])
        _service_tier(request, attrs)
        reasoning = request.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        if isinstance(effort, str):
            attrs[sc.REQUEST_REASONING_LEVEL] = effort
        previous = request.get("previous_response_id")
        if isinstance(previous, str):
            attrs[sc.PREVIOUS_RESPONSE_ID] = previous
        conversation = request.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        if isinstance(conversation, str):
            attrs[sc.CONVERSATION_ID] = conversation
        if request.get("stream") is True:
            attrs[sc.REQUEST_STREAM] = True
        return attrs

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        for key, name in (("id", sc.RESPONSE_ID), ("model", sc.RESPONSE_MODEL)):
            value = getattr(result, key, None)
            if isinstance(value, str):
                attrs[name] = value
        status = getattr(result, "status", None)
        if status == "completed":
            attrs[sc.RESPONSE_FINISH_REASONS] = ["stop"]
        elif isinstance(status, str):
            reason = getattr(getattr(result, "incomplete_details", None), "reason", None)
            attrs[sc.RESPONSE_FINISH_REASONS] = [reason if isinstance(reason, str) else status]
        tier = getattr(result, "service_tier", None)
        if isinstance(tier, str):
            attrs[sc.OPENAI_RESPONSE_SERVICE_TIER] = tier
        return attrs, responses_usage(getattr(result, "usage", None))

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        given = request.get("input")
        if isinstance(given, str):
            messages = [Message("user", [Part("text", given)])]
        else:
            messages = openai_messages(
                [_response_item(item) for item in given] if isinstance(given, list) else None
            )
        extra = [to_json(request[k]) for k in ("tools", "text") if request.get(k) is not None]
        if isinstance(request.get("instructions"), str):
            extra.append(request["instructions"])
        limit = request.get("max_output_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return estimate_input_tokens(messages, extra), limit
        return estimate_input_tokens(messages, extra), None

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], Reader]] | None:
        # The final event carries the whole response with its usage: nothing to ask for.
        return (request, ResponsesReader) if request.get("stream") is True else None


def _response_item(item: Any) -> Any:
    """A Responses input item as a chat message: its parts' types differ (``input_text``)."""
    item = plain(item)
    if not isinstance(item, dict):
        return item
    content = item.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            part = plain(part)
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "input_image":
                parts.append({"type": "image"})
            else:
                parts.append(part)
        return {**item, "content": parts}
    if "role" not in item:  # a function call, its output, a reasoning item: counted as JSON
        return {"role": "tool", "content": to_json(item)}
    return item


class ResponsesReader(Reader):
    """Reads Responses stream events: the final event carries the whole response."""

    __slots__ = ("chunks", "complete", "response")

    def __init__(self) -> None:
        self.chunks = 0
        self.complete = False
        self.response: Any = None

    def chunk(self, item: Any) -> bool:
        self.chunks += 1
        kind = item.type
        if kind in _FINAL_EVENTS:
            self.response = item.response
            self.complete = True
        elif kind == "response.created":
            self.response = item.response
        return True

    def result(self) -> tuple[Attrs, Usage | None]:
        if self.response is None:
            return {}, None
        return _RESPONSES.response_attributes(self.response)


_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def responses_usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    out = Usage()
    inputs, outputs = getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)
    if isinstance(inputs, int):
        out.input_tokens = inputs
    if isinstance(outputs, int):
        out.output_tokens = outputs
    cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", None)
    if isinstance(cached, int):
        out.cache_read_tokens = cached
    reasoning = getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", None)
    if isinstance(reasoning, int):
        out.reasoning_tokens = reasoning
    return out


class EmbeddingsRoute(_Route):
    """``embeddings.create``."""

    def __init__(self) -> None:
        super().__init__("embeddings")

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {}
        fmt = request.get("encoding_format")
        if isinstance(fmt, str):
            attrs[sc.REQUEST_ENCODING_FORMATS] = [fmt]
        dimensions = request.get("dimensions")
        if _number(dimensions):
            attrs[sc.EMBEDDINGS_DIMENSION] = dimensions
        return attrs

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        given = request.get("input")
        items = given if isinstance(given, list) else [given]
        total = 0
        for item in items:
            if isinstance(item, str):
                total += len(item.encode("utf-8", "surrogatepass"))
            elif isinstance(item, list):  # already tokens
                total += len(item)
            else:
                total += len(to_json(item))
        return total, 0

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        model = getattr(result, "model", None)
        if isinstance(model, str):
            attrs[sc.RESPONSE_MODEL] = model
        data = getattr(result, "data", None)
        if isinstance(data, list) and data:
            vector = getattr(data[0], "embedding", None)
            if isinstance(vector, list):
                attrs[sc.EMBEDDINGS_DIMENSION] = len(vector)
        usage = getattr(result, "usage", None)
        tokens = getattr(usage, "prompt_tokens", None)
        return attrs, Usage(input_tokens=tokens) if isinstance(tokens, int) else None


def chat_usage(usage: Any) -> Usage | None:
    """Usage from a chat completion; tolerant of servers that omit the detail objects."""
    if usage is None:
        return None
    out = Usage()
    prompt = getattr(usage, "prompt_tokens", None)
    if isinstance(prompt, int):
        out.input_tokens = prompt
    completion = getattr(usage, "completion_tokens", None)
    if isinstance(completion, int):
        out.output_tokens = completion
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None)
    if isinstance(cached, int):
        out.cache_read_tokens = cached
    reasoning = getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", None)
    if isinstance(reasoning, int):
        out.reasoning_tokens = reasoning
    return out


_CHAT = ChatRoute()
_RESPONSES = ResponsesRoute()
_EMBEDDINGS = EmbeddingsRoute()
_CREATE = ("chat", "completions", "create")

# Guarded methods by path, with their route. ``beta.chat`` is the same resource as ``chat``.
_METHODS: list[tuple[tuple[str, ...], ChatRoute | ResponsesRoute | EmbeddingsRoute]] = [
    (_CREATE, _CHAT),
    (("chat", "completions", "parse"), _CHAT),
    (("beta", "chat", "completions", "create"), _CHAT),
    (("beta", "chat", "completions", "parse"), _CHAT),
    (("embeddings", "create"), _EMBEDDINGS),
    (("responses", "create"), _RESPONSES),
]
# SDK helpers that send their requests through the guarded ``self.create``.
_HELPERS = [
    ("chat", "completions", "stream"),
    ("beta", "chat", "completions", "stream"),
    ("responses", "stream"),
]


def _method(client: Any, path: tuple[str, ...]) -> Any:
    obj = client
    for name in path:
        obj = getattr(obj, name)
    return obj


class _Client:
    """One client's view for the core: read from the client at each call, never copied."""

    def __init__(
        self, client: openai.OpenAI | openai.AsyncOpenAI, provider: str | None, policy: Policy
    ) -> None:
        self.client = client
        self.given_provider = provider
        # The SDK's own retries are off for guarded attempts: aiguard retries (unless told to
        # keep them, as zero-code instrumentation without a retry policy does).
        self.keep_retries = policy.sdk_retries
        _stainless.hush(client)
        self.call: Callable[..., Any] = (
            _stainless.call_async if isinstance(client, openai.AsyncOpenAI) else _stainless.call
        )
        self.url: Any = None
        self.provider = self.pricing = ""
        self.server: Attrs = {}

    def _where(self) -> None:
        # base_url may be changed on the client at any time.
        url = self.client.base_url
        if url is not self.url:
            # An explicit provider= names both; else telemetry says openai, prices follow the
            # host.
            self.provider = self.given_provider or telemetry_provider(self.client)
            self.pricing = self.given_provider or detect_provider(self.client)
            self.server = url_server(url)
            self.url = url

    def endpoint(
        self, method: Callable[..., Any], model: str, policy: Policy, target: Target | None = None
    ) -> Endpoint:
        if self.client.base_url is not self.url:
            self._where()
        client = self.client
        invoke = functools.partial(self.call, client, self.keep_retries, [0], method)
        return Endpoint(
            invoke=invoke,
            model=model,
            provider=self.provider,
            server=self.server,
            retry=_stainless.retry(client, policy, target),
            breaker_key=(id(client), model),
            client_timeout=lambda: timeout_seconds(client.timeout),
            pricing=self.pricing,
        )


def wrap(client: openai.OpenAI | openai.AsyncOpenAI, policy: Policy, provider: str | None) -> Any:
    is_async = isinstance(client, openai.AsyncOpenAI)
    primary = _Client(client, provider, policy)
    kind = "AsyncOpenAI client" if is_async else "OpenAI client"
    others = _pivot.fallback_clients(
        policy,
        lambda other: supports(other) and isinstance(other, openai.AsyncOpenAI) == is_async,
        lambda other: _Client(other, None, policy),
        kind,
        is_async,
        _PIVOT,
    )

    tree: dict[str, Any] = {}

    def place(path: tuple[str, ...], node: Any) -> None:
        branch = tree
        for name in path[:-1]:
            branch = branch.setdefault(name, {})
        branch[path[-1]] = node

    for path, route in _METHODS:
        endpoints = _endpoints(path, primary, others, policy)
        if route is _RESPONSES:  # a stored prompt may name the model: the answer tells it
            guard = _budgeted(guarded_method(route, policy, endpoints, is_async, default_model=""))
        else:
            guard = guarded_method(route, policy, endpoints, is_async)
        place(path, _stainless.raw_responses(guard, is_async))
        # The SDK's raw and streaming-response views, around the guarded resource.
        place((*path[:-1], "with_raw_response"), SDK_VIEW)
        place((*path[:-1], "with_streaming_response"), SDK_VIEW)
    for path in _HELPERS:
        place(path, rebound)

    def with_options(
        proxy: Any, method: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        return _rewrap(proxy, method(*args, **kwargs), kwargs, policy, provider)

    tree["with_options"] = tree["copy"] = with_options
    return GuardedProxy(client, tree, policy, provider)


_PIVOT = _pivot.primary(_openai_pivot)

__all__ = [
    "from_openai_chat",
    "from_openai_chunks",
    "from_openai_chunks_async",
    "openai_chat",
    "openai_chat_async",
    "server_attributes",
    "to_openai_chat",
]


def _budgeted(guard: Guard) -> Guard:
    """Refuse a call without ``model=`` while a budget is in force: its cost cannot be held.

    Without a budget it is guarded as any call, priced by the model its answer names.
    """

    def guarded(proxy: Any, method: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not args and "model" not in kwargs:
            policy: Policy = proxy._self_policy
            if policy.budget is not None or _budget.active.get():
                raise AIGuardError(
                    "a budget is in force and this call names no model, so its worst-case "
                    "cost cannot be reserved: pass model= (the one the stored prompt uses)"
                )
        return guard(proxy, method, instance, args, kwargs)

    return guarded


def _endpoints(
    path: tuple[str, ...],
    primary: _Client,
    others: dict[int, _Client | _pivot.Foreign],
    policy: Policy,
) -> Callable[[Callable[..., Any], str], list[Endpoint]]:
    """The targets of one call of the method at ``path``: the method called, then fallbacks.

    A client of another SDK answers ``chat.completions.create`` only (through the pivot)."""
    fallbacks: list[tuple[Target, _Client | _pivot.Foreign]] = []
    for t in policy.fallback:
        owner = others[id(unwrap(t.client))] if t.client is not None else primary
        if not isinstance(owner, _pivot.Foreign) or path == _CREATE:
            fallbacks.append((t, owner))

    if not fallbacks:
        return lambda method, model: [primary.endpoint(method, model, policy)]

    def endpoints(method: Callable[..., Any], model: str) -> list[Endpoint]:
        found = [primary.endpoint(method, model, policy)]
        for target, owner in fallbacks:
            if isinstance(owner, _pivot.Foreign):
                found.append(owner.endpoint(target, policy))
            elif owner is primary:  # another model through the same method
                found.append(primary.endpoint(method, target.model, policy, target))
            else:
                other = _method(owner.client, path)
                found.append(owner.endpoint(other, target.model, policy, target))
        return found

    return endpoints


def _rewrap(
    proxy: Any, result: Any, options: dict[str, Any], policy: Policy, provider: str | None
) -> Any:
    """What ``with_options``/``copy`` return on a wrapped client: the copy, wrapped alike.

    ``max_retries=`` given there is the more specific choice: the copy follows it (the openai
    tool runner sends calls that must not repeat with ``max_retries=0``).
    """
    if is_wrapped(result):
        return result
    if result is proxy.__wrapped__:
        return proxy
    if not supports(result):
        return result
    if "max_retries" in options and policy.retry is not DEFAULT_RETRY:
        policy = dataclasses.replace(policy, retry=DEFAULT_RETRY)
    return wrap(result, policy, provider)


# Zero-code instrumentation (``aiguard.instrument()``): the SDK methods it patches.
PATCHES = tuple(
    Patch(resource_class(client_cls, path), methods, path, "_client")
    for client_cls in (openai.OpenAI, openai.AsyncOpenAI)
    for path, methods in (
        (("chat", "completions"), ("create", "parse")),
        (("embeddings",), ("create",)),
        (("responses",), ("create",)),
    )
)
