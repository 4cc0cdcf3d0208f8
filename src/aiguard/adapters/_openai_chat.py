"""The openai adapter's chat-completions and embeddings routes: requests, answers, streams.

Also what every route of the adapter shares: the error classes of the openai SDK, and the
request attributes read the same way by chat completions and Responses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._engine.contract import Reader, Route
from aiguard._http import failure_for_status, retry_after
from aiguard._messages import Message, estimate_input_tokens, openai_messages, to_json
from aiguard._policy import Failure
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters import _shapes

_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})


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

    def messages(self, request: dict[str, Any]) -> list[Message]:
        return _shapes.request_messages(request)


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

    def answer_text(self, result: Any) -> Any:
        return _shapes.answer_text(result)

    def answer_messages(self, result: Any) -> list[tuple[Message, str]]:
        return _shapes.answer_messages(result)

    def reask(self, request: dict[str, Any], answer: Any, errors: list[str]) -> dict[str, Any]:
        return _shapes.reask_messages(request, answer, errors)

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

    def text(self, item: Any) -> str:
        return _shapes.chunk_text(item)


def _hiding_reader() -> ChatReader:
    return ChatReader(hide_usage=True)


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
