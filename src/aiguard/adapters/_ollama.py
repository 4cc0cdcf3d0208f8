"""Ollama adapter: translates the ollama client's requests, responses and errors for the core.

Guards ``chat``, ``generate`` (both streaming or not) and ``embed`` on ``ollama.Client`` and
``ollama.AsyncClient``; everything else passes through. The ollama client never retries, so the
wrapped client itself is called (no retry-free copy is needed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
import ollama
from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._engine.contract import Endpoint, Reader, Route
from aiguard._http import failure_for_status
from aiguard._http import server_attributes as url_server
from aiguard._messages import Message, Part, estimate_input_tokens, to_json
from aiguard._policy import Failure, Policy, Target
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters import _ollama_pivot, _pivot, _shapes
from aiguard.adapters._ollama_pivot import (
    from_openai_chat,
    from_openai_chunks,
    from_openai_chunks_async,
    ollama_plain,
    openai_chat,
    openai_chat_async,
    pivot_server,
    to_openai_chat,
    tool_schema,
)
from aiguard.adapters._proxy import (
    GuardedProxy,
    Patch,
    binder,
    guarded_method,
    the_class,
    unwrap,
)

PROVIDER = "ollama"

# Every context overflow Ollama reports says so ("the input length exceeds the context length",
# "input after truncation exceeds maximum context length"...), with a 400 or, in older
# servers, a 500 that must not be retried.
_CONTEXT_PHRASE = "context length"
# httpx errors that say the request could never be sent as written, not that the server or the
# network failed.
_CLIENT_SIDE = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def supports(client: object) -> bool:
    return isinstance(client, ollama.Client | ollama.AsyncClient)


def classify(error: BaseException) -> tuple[Failure, float | None]:
    """Failure class for an ollama client error (Ollama sends no ``Retry-After``)."""
    if isinstance(error, ollama.ResponseError):
        if _CONTEXT_PHRASE in str(error.error).lower():
            return Failure.CONTEXT_WINDOW, None
        if error.status_code == -1:  # an error line in a stream: the server failed mid-answer
            return Failure.OUTAGE, None
        return failure_for_status(error.status_code) or Failure.FATAL, None
    if isinstance(error, ConnectionError):  # the client's "Failed to connect to Ollama"
        return Failure.OUTAGE, None
    # The client lets httpx's own errors through (a stream cut, a reset, a timeout).
    if isinstance(error, httpx.TransportError) and not isinstance(error, _CLIENT_SIDE):
        return Failure.OUTAGE, None
    return Failure.FATAL, None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _option(options: Any, key: str) -> Any:
    """One entry of ``options``: a dict or an ``ollama.Options``."""
    if isinstance(options, Mapping):
        return options.get(key)
    return getattr(options, key, None)


def _max_output(options: Any) -> int | None:
    limit = _option(options, "num_predict")
    # -1 (the default) means no limit, -2 until the context is full; 0 is no limit too.
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


_OPTION_ATTRIBUTES = (
    ("temperature", sc.REQUEST_TEMPERATURE),
    ("top_p", sc.REQUEST_TOP_P),
    ("top_k", sc.REQUEST_TOP_K),
    ("frequency_penalty", sc.REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", sc.REQUEST_PRESENCE_PENALTY),
    ("seed", sc.REQUEST_SEED),
)


def _usage(response: Any) -> Usage | None:
    prompt = getattr(response, "prompt_eval_count", None)
    output = getattr(response, "eval_count", None)
    if not isinstance(prompt, int) and not isinstance(output, int):
        return None
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else None,
        output_tokens=output if isinstance(output, int) else None,
    )


def generation_attributes(response: Any) -> tuple[Attrs, Usage | None]:
    """Attributes and usage of a finished ``chat`` or ``generate`` (or a stream's last line)."""
    attrs: Attrs = {}
    model = getattr(response, "model", None)
    if isinstance(model, str):
        attrs[sc.RESPONSE_MODEL] = model
    reason = getattr(response, "done_reason", None)
    if isinstance(reason, str):
        attrs[sc.RESPONSE_FINISH_REASONS] = [reason]
    return attrs, _usage(response)


class StreamReader(Reader):
    """Reads an Ollama stream: its last line says ``done``, with the reason and the counts."""

    __slots__ = ("chunks", "complete", "last", "model")

    def __init__(self) -> None:
        self.chunks = 0
        self.complete = False
        self.model: Any = None
        self.last: Any = None

    def chunk(self, item: Any) -> bool:
        self.chunks += 1
        if self.model is None:
            self.model = item.model
        if item.done:
            self.complete = True
            self.last = item
        return True  # Ollama sends nothing aiguard asked for: every line is the user's

    def result(self) -> tuple[Attrs, Usage | None]:
        if self.last is not None:
            return generation_attributes(self.last)
        return ({sc.RESPONSE_MODEL: self.model} if isinstance(self.model, str) else {}), None

    def text(self, item: Any) -> str:
        return _answer(item) or ""


def _answer(response: Any) -> str | None:
    """The text of a ``chat`` answer (its message) or a ``generate`` one; None: neither."""
    message = getattr(response, "message", None)
    if message is not None and isinstance(getattr(message, "content", None), str):
        return str(message.content)
    text = getattr(response, "response", None)
    return text if isinstance(text, str) else None


class _Route(Route):
    span_kind = SpanKind.CLIENT
    priced = True

    def __init__(self, operation: str) -> None:
        self.operation = operation

    classify = staticmethod(classify)

    def messages(self, request: dict[str, Any]) -> list[Message]:
        return _shapes.request_messages(request)

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], StreamReader]] | None:
        return None


class _GenerationRoute(_Route):
    """What ``chat`` and ``generate`` share: options, streams and the final counts."""

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {}
        options = request.get("options")
        if options is not None:
            for key, name in _OPTION_ATTRIBUTES:
                value = _option(options, key)
                if _number(value):
                    attrs[name] = value
            limit = _max_output(options)
            if limit is not None:
                attrs[sc.REQUEST_MAX_TOKENS] = limit
            stop = _option(options, "stop")
            if isinstance(stop, str):
                attrs[sc.REQUEST_STOP] = [stop]
            elif isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
                attrs[sc.REQUEST_STOP] = list(stop)
        fmt = request.get("format")
        if fmt == "json" or isinstance(fmt, Mapping):  # JSON mode or a JSON schema
            attrs[sc.OUTPUT_TYPE] = "json"
        if request.get("stream") is True:
            attrs[sc.REQUEST_STREAM] = True
        return attrs

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        return generation_attributes(result)

    def answer_text(self, result: Any) -> Any:
        text = _answer(result)
        return result if text is None else text

    def answer_messages(self, result: Any) -> list[tuple[Message, str]]:
        text = _answer(result)
        if text is None:
            return []
        parts = _shapes.text_parts(text)
        calls = getattr(getattr(result, "message", None), "tool_calls", None) or ()
        parts += [Part("tool_call", to_json(ollama_plain(c))) for c in calls]
        return [(Message("assistant", parts), _shapes.reason(getattr(result, "done_reason", None)))]

    def reask(self, request: dict[str, Any], answer: Any, errors: list[str]) -> dict[str, Any]:
        if isinstance(request.get("messages"), list | tuple):
            return _shapes.reask_messages(request, answer, errors)
        return _shapes.reask_prompt(request, answer, errors)

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], StreamReader]] | None:
        # The last line always carries the counts: there is nothing to ask for or to hide.
        return (request, StreamReader) if request.get("stream") is True else None


class ChatRoute(_GenerationRoute):
    """``chat``."""

    def __init__(self) -> None:
        super().__init__("chat")

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        tools = [_tool_json(tool) for tool in request.get("tools") or ()]
        inputs = estimate_input_tokens(chat_messages(request.get("messages")), tools)
        return inputs, _max_output(request.get("options"))

    def tool_definitions(self, request: dict[str, Any]) -> list[Any] | None:
        # Python functions among them, as the schema the client sends for them.
        tools = request.get("tools")
        return [tool_schema(t) for t in tools] if isinstance(tools, list | tuple) else None


class GenerateRoute(_GenerationRoute):
    """``generate``: a prompt, an optional system prompt, images and earlier context."""

    def __init__(self) -> None:
        super().__init__("text_completion")

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        text = {key: value for key in _GENERATE_TEXT if isinstance(value := request.get(key), str)}
        messages = []
        if "system" in text:
            messages.append(Message("system", [Part("text", text["system"])]))
        parts = [Part("text", text[key]) for key in ("prompt", "suffix") if key in text]
        parts += [Part("image") for _ in request.get("images") or ()]
        messages.append(Message("user", parts))
        template = [text["template"]] if "template" in text else []
        inputs = estimate_input_tokens(messages, template)
        context = request.get("context")  # the token ids of an earlier answer, sent back as is
        if isinstance(context, list | tuple):
            inputs += len(context)
        return inputs, _max_output(request.get("options"))


# What generate sends as text besides the images: all of it reaches the model.
_GENERATE_TEXT = ("system", "prompt", "suffix", "template")


class EmbedRoute(_Route):
    """``embed``."""

    def __init__(self) -> None:
        super().__init__("embeddings")

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        dimensions = request.get("dimensions")
        return {sc.EMBEDDINGS_DIMENSION: dimensions} if _number(dimensions) else {}

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        given = request.get("input")
        items = [given] if isinstance(given, str) else given or ()
        total = sum(len(str(item).encode("utf-8", "surrogatepass")) for item in items)
        return total, 0

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        model = getattr(result, "model", None)
        if isinstance(model, str):
            attrs[sc.RESPONSE_MODEL] = model
        vectors = getattr(result, "embeddings", None)
        if isinstance(vectors, list | tuple) and vectors:
            attrs[sc.EMBEDDINGS_DIMENSION] = len(vectors[0])
        tokens = getattr(result, "prompt_eval_count", None)
        return attrs, Usage(input_tokens=tokens) if isinstance(tokens, int) else None


def chat_messages(messages: Any) -> list[Message]:
    """Ollama ``messages`` (dicts or ``ollama.Message``) in the neutral form."""
    if not isinstance(messages, list | tuple):
        return []
    out = []
    for message in messages:
        if not isinstance(message, Mapping | ollama.Message):
            continue
        role = message.get("role")
        text = message.get("content")
        parts = [] if not isinstance(text, str) else [Part("text", text)]
        if role == "tool":
            parts = [Part("tool_call_response", p.content) for p in parts]
        thinking = message.get("thinking")  # an earlier answer's reasoning, sent back
        if isinstance(thinking, str):
            parts.append(Part("other", thinking))
        parts += [Part("image") for _ in message.get("images") or ()]
        parts += [
            Part("tool_call", to_json(ollama_plain(c))) for c in message.get("tool_calls") or ()
        ]
        out.append(Message(role if isinstance(role, str) else "user", parts))
    return out


def _tool_json(tool: Any) -> str:
    return to_json(tool_schema(tool))


_PIVOT = _pivot.primary(_ollama_pivot)
# The pivot: a client of another SDK answers this adapter's chats, and this adapter's clients
# answer other adapters' chats (see aiguard._engine.contract.PivotPrimary and PivotTarget).
__all__ = [
    "from_openai_chat",
    "from_openai_chunks",
    "from_openai_chunks_async",
    "openai_chat",
    "openai_chat_async",
    "pivot_server",
    "to_openai_chat",
]

_CHAT = ChatRoute()
_GENERATE = GenerateRoute()
_EMBED = EmbedRoute()

_METHODS: tuple[tuple[str, ChatRoute | GenerateRoute | EmbedRoute], ...] = (
    ("chat", _CHAT),
    ("generate", _GENERATE),
    ("embed", _EMBED),
)


class _Client:
    """One client's view for the core: its provider name and server attributes."""

    def __init__(self, client: ollama.Client | ollama.AsyncClient, provider: str | None) -> None:
        self.client = client
        self.provider = provider or PROVIDER
        # The client keeps its host as the base URL of its httpx client.
        base_url = getattr(getattr(client, "_client", None), "base_url", None)
        self.server = url_server(base_url)

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
            invoke=lambda request: call(**request),
            model=model,
            provider=self.provider,
            server=self.server,
            retry=policy.retry_for(target),
            breaker_key=(id(self.client), model),
            timeout_param=None,  # the methods take no timeout: it is set on the client
        )


def wrap(client: ollama.Client | ollama.AsyncClient, policy: Policy, provider: str | None) -> Any:
    is_async = isinstance(client, ollama.AsyncClient)
    primary = _Client(client, provider)
    kind = "ollama.AsyncClient" if is_async else "ollama.Client"
    others = _pivot.fallback_clients(
        policy,
        lambda other: supports(other) and isinstance(other, ollama.AsyncClient) == is_async,
        lambda other: _Client(other, None),
        kind,
        is_async,
        _PIVOT,
    )

    tree: dict[str, Any] = {}
    for name, route in _METHODS:
        fallbacks = []
        for t in policy.fallback:
            owner = others[id(unwrap(t.client))] if t.client is not None else primary
            if not isinstance(owner, _pivot.Foreign):
                fallbacks.append(owner.endpoint(name, t.model, policy, t))
            elif name == "chat":  # another SDK's client answers chats, through the pivot
                fallbacks.append(owner.endpoint(t, policy))

        def endpoints(
            method: Callable[..., Any],
            model: str,
            name: str = name,
            fallbacks: list[Endpoint] = fallbacks,
        ) -> list[Endpoint]:
            return [primary.endpoint(name, model, policy, method=method), *fallbacks]

        tree[name] = guarded_method(
            route,
            policy,
            endpoints,
            is_async,
            bind=binder(getattr(client, name)),  # client.chat("llama3", messages) is common
        )
    return GuardedProxy(client, tree, policy, provider)


# Zero-code instrumentation (``aiguard.instrument()``): the SDK methods it patches.
PATCHES = tuple(
    Patch(the_class(client_cls), ("chat", "generate", "embed"))
    for client_cls in (ollama.Client, ollama.AsyncClient)
)


_shapes.reads(_CHAT.answer_text)  # chat and generate answers alike
