"""llama.cpp adapter: an in-process ``llama_cpp.Llama`` model, guarded like a remote client.

Guards ``create_chat_completion``, ``create_completion`` (and ``__call__``) and
``create_embedding``, streams included; everything else passes through. The model runs in this
process, so its spans are INTERNAL and carry no server address; usage comes from the returned
dicts (llama.cpp reports none for streams). Model names: the call's ``model=``, else the model
file's name without extension.

Its chats fall back to clients of other SDKs, and other adapters' chats to a local model,
through the pivot (:mod:`aiguard.adapters._llama_cpp_pivot`).

A ``Llama`` is not thread-safe, so every call aiguard makes on one holds that model's lock (see
:mod:`aiguard.adapters._llama_lock`): concurrent requests queue for the model instead of
crashing the process.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, cast

import llama_cpp
from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._engine.contract import Endpoint, Reader, Route
from aiguard._messages import Message, Part, estimate_input_tokens, openai_messages, to_json
from aiguard._policy import Failure, Policy, Target
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters import _llama_cpp_pivot, _pivot, _shapes
from aiguard.adapters._llama_cpp_pivot import (
    from_openai_chat,
    from_openai_chunks,
    from_openai_chunks_async,
    openai_chat,
    openai_chat_async,
    to_openai_chat,
)
from aiguard.adapters._llama_lock import call_locked
from aiguard.adapters._proxy import (
    GuardedProxy,
    Patch,
    binder,
    guarded_method,
    the_class,
    unwrap,
)

PROVIDER = "llama_cpp"


def supports(client: object) -> bool:
    return isinstance(client, llama_cpp.Llama)


def model_name(llm: llama_cpp.Llama) -> str:
    """The name spans use for a model loaded from a file: the file name without extension."""
    path = getattr(llm, "model_path", None)
    if not isinstance(path, str) or not path:
        return "llama_cpp"
    return os.path.splitext(os.path.basename(path))[0]


def classify(error: BaseException) -> tuple[Failure, float | None]:
    """llama.cpp raises ``ValueError`` when the prompt and ``max_tokens`` exceed ``n_ctx``."""
    if isinstance(error, ValueError) and "exceed context window" in str(error):
        return Failure.CONTEXT_WINDOW, None
    return Failure.FATAL, None  # in process: nothing transient to wait out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_REQUEST_NUMBERS = (
    ("max_tokens", sc.REQUEST_MAX_TOKENS),
    ("temperature", sc.REQUEST_TEMPERATURE),
    ("top_p", sc.REQUEST_TOP_P),
    ("top_k", sc.REQUEST_TOP_K),
    ("frequency_penalty", sc.REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", sc.REQUEST_PRESENCE_PENALTY),
    ("seed", sc.REQUEST_SEED),
)


class _Route(Route):
    """What the three guarded methods share; each subclass adds its own ``estimate``."""

    span_kind = SpanKind.INTERNAL
    priced = True

    def __init__(self, operation: str) -> None:
        self.operation = operation

    classify = staticmethod(classify)

    def messages(self, request: dict[str, Any]) -> list[Message]:
        return _shapes.request_messages(request)

    def answer_text(self, result: Any) -> Any:
        return _shapes.answer_text(result)

    def answer_messages(self, result: Any) -> list[tuple[Message, str]]:
        return _shapes.answer_messages(result)

    def reask(self, request: dict[str, Any], answer: Any, errors: list[str]) -> dict[str, Any]:
        if isinstance(request.get("messages"), list | tuple):
            return _shapes.reask_messages(request, answer, errors)
        return _shapes.reask_prompt(request, answer, errors)

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {}
        for key, name in _REQUEST_NUMBERS:
            value = request.get(key)
            if _number(value):
                attrs[name] = value
        stop = request.get("stop")
        if isinstance(stop, str):
            attrs[sc.REQUEST_STOP] = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            attrs[sc.REQUEST_STOP] = stop
        if request.get("stream") is True:
            attrs[sc.REQUEST_STREAM] = True
        return attrs

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        if not isinstance(result, dict):
            return attrs, None
        if isinstance(result.get("id"), str):
            attrs[sc.RESPONSE_ID] = result["id"]
        if isinstance(result.get("model"), str):
            attrs[sc.RESPONSE_MODEL] = result["model"]
        choices = result.get("choices")
        if isinstance(choices, list):
            attrs[sc.RESPONSE_FINISH_REASONS] = [
                str(c.get("finish_reason") or "") for c in choices if isinstance(c, dict)
            ]
        return attrs, dict_usage(result.get("usage"))

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], DictReader]] | None:
        return (request, DictReader) if request.get("stream") is True else None


class ChatRoute(_Route):
    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        extra = [to_json(request[k]) for k in ("tools", "functions") if request.get(k)]
        inputs = estimate_input_tokens(openai_messages(request.get("messages")), extra)
        return inputs, _max_tokens(request)


class CompletionRoute(_Route):
    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        prompt = request.get("prompt")
        text = prompt if isinstance(prompt, str) else to_json(prompt)
        return estimate_input_tokens([Message("user", [Part("text", text)])]), _max_tokens(request)


class EmbeddingRoute(_Route):
    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        given = request.get("input")
        items = given if isinstance(given, list) else [given]
        return estimate_input_tokens([Message("user", [Part("text", to_json(items))])]), 0

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs, usage = super().response_attributes(result)
        data = result.get("data") if isinstance(result, dict) else None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            vector = data[0].get("embedding")
            if isinstance(vector, list):
                attrs[sc.EMBEDDINGS_DIMENSION] = len(vector)
        return attrs, usage


def _max_tokens(request: dict[str, Any]) -> int | None:
    limit = request.get("max_tokens")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def dict_usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else None,
        output_tokens=completion if isinstance(completion, int) else None,
    )


class DictReader(Reader):
    """Reads OpenAI-format chunk dicts (what llama.cpp streams): ids and finish reasons."""

    __slots__ = ("chunks", "complete", "id", "model", "reasons", "usage")

    def __init__(self) -> None:
        self.chunks = 0
        self.complete = False
        self.id: Any = None
        self.model: Any = None
        self.reasons: dict[int, str] = {}
        self.usage: Any = None

    def chunk(self, item: Any) -> bool:
        self.chunks += 1
        if self.id is None:
            self.id = item.get("id")
            self.model = item.get("model")
        for choice in item.get("choices") or ():
            reason = choice.get("finish_reason")
            if reason is not None:
                self.reasons[choice.get("index", 0)] = reason
                self.complete = True
        if item.get("usage") is not None:
            self.usage = item["usage"]
        return True

    def text(self, item: Any) -> str:
        return _shapes.chunk_text(item)

    def result(self) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        if isinstance(self.id, str):
            attrs[sc.RESPONSE_ID] = self.id
        if isinstance(self.model, str):
            attrs[sc.RESPONSE_MODEL] = self.model
        if self.reasons:
            attrs[sc.RESPONSE_FINISH_REASONS] = [self.reasons[i] for i in sorted(self.reasons)]
        return attrs, dict_usage(self.usage)


_PIVOT = _pivot.primary(_llama_cpp_pivot)
# The pivot: a client of another SDK answers this adapter's chats, and a local model answers
# other adapters' chats (see aiguard._engine.contract.PivotPrimary and PivotTarget).
__all__ = [
    "from_openai_chat",
    "from_openai_chunks",
    "from_openai_chunks_async",
    "openai_chat",
    "openai_chat_async",
    "to_openai_chat",
]

_CHAT = ChatRoute("chat")
_COMPLETION = CompletionRoute("text_completion")
_EMBEDDING = EmbeddingRoute("embeddings")

_METHODS: list[tuple[str, ChatRoute | CompletionRoute | EmbeddingRoute]] = [
    ("create_chat_completion", _CHAT),
    ("create_completion", _COMPLETION),
    ("__call__", _COMPLETION),
    ("create_embedding", _EMBEDDING),
]


def _endpoint(
    llm: llama_cpp.Llama,
    name: str,
    model: str,
    policy: Policy,
    target: Target | None = None,
    method: Callable[..., Any] | None = None,
) -> Endpoint:
    """``method`` is the one the call was made with; by default the model's ``name``. One call
    at a time per model (see :mod:`aiguard.adapters._llama_lock`)."""
    call = getattr(llm, name) if method is None else method
    timeout = policy.timeout
    return Endpoint(
        invoke=lambda request: call_locked(llm, lambda: call(**request), timeout),
        model=model,
        provider=PROVIDER,
        server={},
        retry=policy.retry_for(target),
        breaker_key=(id(llm), model),
        timeout_param=None,
    )


def wrap(client: llama_cpp.Llama, policy: Policy, provider: str | None) -> Any:
    others = _pivot.fallback_clients(
        policy, supports, lambda other: other, "llama_cpp.Llama", False, _PIVOT
    )
    default = model_name(client)
    tree: dict[str, Any] = {}
    for name, route in _METHODS:
        fallbacks = []
        for t in policy.fallback:
            owner = others[id(unwrap(t.client))] if t.client is not None else client
            if not isinstance(owner, _pivot.Foreign):
                fallbacks.append(_endpoint(owner, name, t.model, policy, t))
            elif name == "create_chat_completion":  # another SDK's client, via the pivot
                fallbacks.append(owner.endpoint(t, policy))

        def endpoints(
            method: Callable[..., Any],
            model: str,
            name: str = name,
            fallbacks: list[Endpoint] = fallbacks,
        ) -> list[Endpoint]:
            return [_endpoint(client, name, model, policy, method=method), *fallbacks]

        tree[name] = guarded_method(
            route,
            policy,
            endpoints,
            is_async=False,
            default_model=default,
            bind=binder(_bindable(client, name)),
        )
    return _LlamaProxy(client, tree, policy, provider)


def _bindable(llm: llama_cpp.Llama, name: str) -> Callable[..., Any]:
    """The method whose signature binds positional arguments: ``llm``'s own, or when it hides
    its parameters behind ``*args`` (a decorator without ``functools.wraps``), llama_cpp's."""
    method = getattr(llm, name)
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        parameters = None
    if parameters is None or any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return cast(Callable[..., Any], getattr(llama_cpp.Llama, name).__get__(llm))
    return cast(Callable[..., Any], method)


class _LlamaProxy(GuardedProxy):
    """``llm(prompt)`` is ``create_completion``: calling the proxy goes through the guard."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__getattr__("__call__")(*args, **kwargs)


# Zero-code instrumentation (``aiguard.instrument()``): the SDK methods it patches.
PATCHES = (
    Patch(
        the_class(llama_cpp.Llama),
        ("create_chat_completion", "create_completion", "create_embedding"),
    ),
)
