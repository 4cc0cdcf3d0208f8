"""Google Gemini adapter: translates the ``google-genai`` SDK's requests, answers and errors.

Guards ``models.generate_content``, ``models.generate_content_stream`` and
``models.embed_content`` of ``genai.Client`` and of its ``client.aio`` (and of a ``Models`` /
``AsyncModels`` resource wrapped alone), and the chats made from the client (``client.chats``:
the SDK's own, on the guarded ``models``); everything else passes through.

A guarded attempt sends one request (the SDK's own ``retry_options`` off for it) and aiguard
retries as the policy says, or as the client's ``retry_options`` say when the policy has no
retry of its own; the per-request timeout (``http_options.timeout``, milliseconds) is shortened
to what is left of a deadline, never widened: see :mod:`aiguard.adapters._gemini_send`.

The provider is ``gcp.gen_ai`` (the Gemini Developer API) or ``gcp.vertex_ai`` (a client made
with ``vertexai=True``); both are priced from genai-prices' ``google`` prices.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from google import genai
from google.genai import errors
from google.genai.models import AsyncModels, Models
from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._engine.contract import Endpoint, Reader, Route
from aiguard._http import failure_for_status, server_attributes
from aiguard._messages import Message, estimate_input_tokens, to_json
from aiguard._policy import Failure, Policy
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters import _gemini_reverse, _pivot
from aiguard.adapters._gemini_parts import (
    answer_messages,
    answer_text,
    chunk_text,
    gemini_messages,
    plain,
    reask,
    tool_definitions,
)
from aiguard.adapters._gemini_pivot import openai_chat as openai_chat
from aiguard.adapters._gemini_pivot import openai_chat_async as openai_chat_async
from aiguard.adapters._gemini_reverse import from_openai_chat as from_openai_chat
from aiguard.adapters._gemini_reverse import from_openai_chunks as from_openai_chunks
from aiguard.adapters._gemini_reverse import from_openai_chunks_async as from_openai_chunks_async
from aiguard.adapters._gemini_reverse import to_openai_chat as to_openai_chat
from aiguard.adapters._gemini_send import PROVIDER as PROVIDER
from aiguard.adapters._gemini_send import VERTEX_PROVIDER as VERTEX_PROVIDER
from aiguard.adapters._gemini_send import _Client, _field, _number, asking
from aiguard.adapters._proxy import (
    GuardedProxy,
    Patch,
    View,
    guarded_method,
    the_class,
    unwrap,
)

# How Gemini says the prompt does not fit ("The input token count (1048577) exceeds the maximum
# number of tokens allowed (1048576).") and Vertex AI ("... the input token count is 40000 but
# model only supports up to 32768 ..."): a 400 INVALID_ARGUMENT either way.
_CONTEXT = re.compile(r"input token count|exceeds the maximum number of tokens", re.IGNORECASE)
_TRANSIENT_STATUS = {
    "RESOURCE_EXHAUSTED": Failure.RATE_LIMIT,
    "UNAVAILABLE": Failure.OUTAGE,
    "INTERNAL": Failure.OUTAGE,
    "DEADLINE_EXCEEDED": Failure.OUTAGE,
}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def _outage_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's own errors, which the SDK lets through (a reset, a stream cut): httpx2
    or httpx, whichever the SDK uses; never an error saying the request was malformed."""
    import sys

    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None:
            found.append(module.TransportError)
    return tuple(found)


def _client_side_errors() -> tuple[type[BaseException], ...]:
    import sys

    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None:
            found += [module.UnsupportedProtocol, module.LocalProtocolError]
    return tuple(found)


_OUTAGE_ERRORS = _outage_errors()
_CLIENT_SIDE = _client_side_errors()


def supports(client: object) -> bool:
    return isinstance(client, genai.Client | genai.client.AsyncClient | Models | AsyncModels)


def _is_async(client: object) -> bool:
    return isinstance(client, genai.client.AsyncClient | AsyncModels)


def retry_delay(details: Any) -> float | None:
    """The wait a Google error asks for: its ``google.rpc.RetryInfo`` ``retryDelay`` ("37s")."""
    error = details.get("error", details) if isinstance(details, dict) else None
    listed = error.get("details") if isinstance(error, dict) else None
    for item in listed if isinstance(listed, list) else ():
        if isinstance(item, dict) and item.get("@type") == _RETRY_INFO:
            delay = item.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    seconds = float(delay[:-1])
                except ValueError:
                    return None
                return seconds if seconds >= 0 else None
    return None


def classify(error: BaseException) -> tuple[Failure, float | None]:
    """Failure class and server-requested wait for a google-genai error."""
    if isinstance(error, errors.APIError):
        delay = retry_delay(error.details)
        failure = _TRANSIENT_STATUS.get(str(error.status))
        code = error.code if isinstance(error.code, int) else 0
        if failure is None:
            failure = failure_for_status(code) if code else None
        if failure is not None:
            return failure, delay
        if _CONTEXT.search(str(error.message or "")):
            return Failure.CONTEXT_WINDOW, None
        return Failure.FATAL, None
    if isinstance(error, _OUTAGE_ERRORS) and not isinstance(error, _CLIENT_SIDE):
        return Failure.OUTAGE, None
    return Failure.FATAL, None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_of(metadata: Any) -> Usage | None:
    """Usage from ``usage_metadata``. Gemini's prompt count includes the cached tokens; its
    candidates' count leaves out the thoughts and the tool-use prompt is counted apart: the
    conventions' totals include them all."""
    if metadata is None:
        return None
    prompt = _count(_field(metadata, "prompt_token_count"))
    tool_prompt = _count(_field(metadata, "tool_use_prompt_token_count"))
    output = _count(_field(metadata, "candidates_token_count"))
    if output is None:
        output = _count(_field(metadata, "response_token_count"))  # embeddings, Live
    thoughts = _count(_field(metadata, "thoughts_token_count"))
    out = Usage(cache_read_tokens=_count(_field(metadata, "cached_content_token_count")))
    if prompt is not None or tool_prompt is not None:
        out.input_tokens = (prompt or 0) + (tool_prompt or 0)
    if output is not None or thoughts is not None:
        out.output_tokens = (output or 0) + (thoughts or 0)
    out.reasoning_tokens = thoughts
    return out


def _reason(value: Any) -> str | None:
    name = getattr(value, "name", value)
    return name.lower() if isinstance(name, str) else None


def response_attributes(response: Any) -> Attrs:
    """``gen_ai.response.*`` of a ``GenerateContentResponse`` (or a stream's chunk)."""
    attrs: Attrs = {}
    ident = getattr(response, "response_id", None)
    if isinstance(ident, str):
        attrs[sc.RESPONSE_ID] = ident
    model = getattr(response, "model_version", None)
    if isinstance(model, str):
        attrs[sc.RESPONSE_MODEL] = model
    reasons = [_reason(c.finish_reason) for c in getattr(response, "candidates", None) or ()]
    found = [r for r in reasons if r is not None]
    if not found:  # a blocked prompt: no candidate, the block reason says why
        blocked = _reason(getattr(getattr(response, "prompt_feedback", None), "block_reason", None))
        found = [blocked] if blocked is not None else []
    if found:
        attrs[sc.RESPONSE_FINISH_REASONS] = found
    return attrs


def _config(request: dict[str, Any]) -> Any:
    return request.get("config")


_SAMPLING = (
    ("temperature", sc.REQUEST_TEMPERATURE),
    ("top_p", sc.REQUEST_TOP_P),
    ("top_k", sc.REQUEST_TOP_K),
    ("presence_penalty", sc.REQUEST_PRESENCE_PENALTY),
    ("frequency_penalty", sc.REQUEST_FREQUENCY_PENALTY),
    ("seed", sc.REQUEST_SEED),
    ("max_output_tokens", sc.REQUEST_MAX_TOKENS),
)


class GenerateRoute(Route):
    """``generate_content``, or with ``streamed`` ``generate_content_stream``."""

    operation = "chat"
    span_kind = SpanKind.CLIENT
    priced = True
    classify = staticmethod(classify)

    def __init__(self, streamed: bool) -> None:
        self.streamed = streamed

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {}
        config = _config(request)
        for key, name in _SAMPLING:
            value = _field(config, key)
            if _number(value):
                attrs[name] = value
        stop = _field(config, "stop_sequences")
        if isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
            attrs[sc.REQUEST_STOP] = list(stop)
        count = _field(config, "candidate_count")
        if isinstance(count, int) and count != 1:
            attrs[sc.REQUEST_CHOICE_COUNT] = count
        schema = _field(config, "response_schema") or _field(config, "response_json_schema")
        if _field(config, "response_mime_type") == "application/json" or schema is not None:
            attrs[sc.OUTPUT_TYPE] = "json"
        if self.streamed:
            attrs[sc.REQUEST_STREAM] = True
        return attrs

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        return response_attributes(result), usage_of(getattr(result, "usage_metadata", None))

    def messages(self, request: dict[str, Any]) -> list[Message]:
        return gemini_messages(
            request.get("contents"), _field(_config(request), "system_instruction")
        )

    def tool_definitions(self, request: dict[str, Any]) -> list[Any] | None:
        return tool_definitions(_config(request))

    def answer_text(self, result: Any) -> Any:
        return answer_text(result)

    def answer_messages(self, result: Any) -> list[tuple[Message, str]]:
        return answer_messages(result)

    def reask(self, request: dict[str, Any], answer: Any, errors: list[str]) -> dict[str, Any]:
        return reask(request, answer, errors)

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        config = _config(request)
        extra = [to_json(plain(_field(config, key))) for key in _EXTRA_INPUT if _field(config, key)]
        limit = _field(config, "max_output_tokens")
        inputs = estimate_input_tokens(self.messages(request), extra)
        return inputs, limit if isinstance(limit, int) and limit > 0 else None

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], StreamReader]] | None:
        # Every chunk carries the usage so far: nothing to ask for, nothing to hide.
        return (request, StreamReader) if self.streamed else None


# Config fields sent to the model besides the contents and the system instruction.
_EXTRA_INPUT = ("tools", "response_schema", "response_json_schema")


class EmbedRoute(Route):
    """``embed_content``."""

    operation = "embeddings"
    span_kind = SpanKind.CLIENT
    priced = True
    classify = staticmethod(classify)

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        dimensions = _field(_config(request), "output_dimensionality")
        return {sc.EMBEDDINGS_DIMENSION: dimensions} if _number(dimensions) else {}

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        vectors = getattr(result, "embeddings", None)
        if isinstance(vectors, list) and vectors:
            values = getattr(vectors[0], "values", None)
            if isinstance(values, list):
                attrs[sc.EMBEDDINGS_DIMENSION] = len(values)
        metadata = getattr(result, "usage_metadata", None)
        prompt = _count(getattr(metadata, "prompt_token_count", None))
        if prompt is None and isinstance(vectors, list):  # Vertex AI: counted per embedding
            prompt = _token_counts(vectors)
        return attrs, Usage(input_tokens=prompt) if prompt is not None else None

    def messages(self, request: dict[str, Any]) -> list[Message]:
        return gemini_messages(request.get("contents"), None)

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        total = sum(
            len(part.content.encode("utf-8", "surrogatepass"))
            for message in self.messages(request)
            for part in message.parts
        )
        return total, 0


def _token_counts(vectors: list[Any]) -> int | None:
    """The tokens of Vertex AI's embeddings, each counted in its statistics (as floats)."""
    counts = [getattr(getattr(v, "statistics", None), "token_count", None) for v in vectors]
    found = [int(c) for c in counts if isinstance(c, int | float) and not isinstance(c, bool)]
    return sum(found) if found else None


class StreamReader(Reader):
    """Reads a Gemini stream: each chunk has the usage so far; the last, the finish reason."""

    __slots__ = ("attrs", "chunks", "complete", "usage")

    def __init__(self) -> None:
        self.chunks = 0
        self.complete = False
        self.attrs: Attrs = {}
        self.usage: Any = None

    def chunk(self, item: Any) -> bool:
        self.chunks += 1
        self.attrs.update(response_attributes(item))
        if sc.RESPONSE_FINISH_REASONS in self.attrs:
            self.complete = True
        metadata = getattr(item, "usage_metadata", None)
        if metadata is not None:
            self.usage = metadata
        return True

    def result(self) -> tuple[Attrs, Usage | None]:
        return dict(self.attrs), usage_of(self.usage)

    def text(self, item: Any) -> str:
        return chunk_text(item)


_GENERATE = GenerateRoute(streamed=False)
_STREAM = GenerateRoute(streamed=True)
_EMBED = EmbedRoute()
_METHODS: tuple[tuple[str, Route], ...] = (
    ("generate_content", _GENERATE),
    ("generate_content_stream", _STREAM),
    ("embed_content", _EMBED),
)


_PIVOT = _pivot.primary(_gemini_reverse)


_Others = dict[int, _Client | _pivot.Foreign]


def _models_tree(
    primary: _Client, others: _Others | TypeError, policy: Policy, is_async: bool
) -> dict[str, Any]:
    """The guarded methods of ``models``; ``others`` is a TypeError when a fallback client of
    another SDK cannot answer this flavour (sync or async) of a ``genai.Client``: raised at
    each call of it, as the other flavour works."""
    tree: dict[str, Any] = {}
    for name, route in _METHODS:

        def endpoints(method: Callable[..., Any], model: str, name: str = name) -> list[Endpoint]:
            if isinstance(others, TypeError):
                raise TypeError(str(others))
            out = [primary.endpoint(method, model, policy, is_async)]
            for t in policy.fallback:
                owner = others[id(unwrap(t.client))] if t.client is not None else primary
                if isinstance(owner, _pivot.Foreign):  # another SDK's client, via the pivot
                    if name != "embed_content":  # it answers chats only
                        streams = name == "generate_content_stream"
                        out.append(owner.streaming(streams).endpoint(t, policy))
                    continue
                send = method if owner is primary else getattr(owner.models(is_async), name)
                out.append(owner.endpoint(send, t.model, policy, is_async, t))
            return out

        tree[name] = asking(guarded_method(route, policy, endpoints, is_async), is_async)
    return tree


def pivot_server(client: Any) -> Attrs:
    """``server.*`` of a client answering another adapter's calls (see ``PivotTarget``)."""
    options = getattr(getattr(client, "_api_client", None), "_http_options", None)
    return server_attributes(getattr(options, "base_url", None))


def wrap(client: Any, policy: Policy, provider: str | None) -> Any:
    primary = _Client(client, policy, provider)
    if isinstance(client, Models | AsyncModels):
        is_async = isinstance(client, AsyncModels)
        others = _others(policy, is_async)
        return GuardedProxy(
            client, _models_tree(primary, others, policy, is_async), policy, provider
        )
    tree: dict[str, Any] = {"chats": _CHATS}
    if isinstance(client, genai.Client):
        sync, async_ = _flavours(policy)
        tree["models"] = _models_tree(primary, sync, policy, False)
        aio = _models_tree(primary, async_, policy, True)
        tree["aio"] = {"models": aio, "chats": _CHATS}
    else:
        tree["models"] = _models_tree(primary, _others(policy, True), policy, True)
    return GuardedProxy(client, tree, policy, provider)


def _chats(proxy: Any, chats: Any) -> Any:
    """``client.chats``: the SDK's own, made on the guarded ``models``, so every message a chat
    sends is a guarded call."""
    try:
        return type(chats)(modules=proxy.models)
    except Exception:  # an SDK that builds its chats differently: unguarded, as it was
        return chats


_CHATS = View(_chats)


def _flavours(policy: Policy) -> tuple[_Others | TypeError, _Others | TypeError]:
    """The fallback clients of a ``genai.Client``'s sync and async models: a TypeError for a
    flavour that a fallback of another SDK cannot answer (raised now if it answers neither)."""
    found: list[_Others | TypeError] = []
    for is_async in (False, True):
        try:
            found.append(_others(policy, is_async))
        except TypeError as exc:
            found.append(exc)
    if isinstance(found[0], TypeError) and isinstance(found[1], TypeError):
        raise found[0]
    return found[0], found[1]


def _others(policy: Policy, is_async: bool) -> _Others:
    """The fallback targets' clients: any google-genai client that has the same flavour of
    ``models`` (a ``genai.Client`` has both, through ``client.aio``), or another SDK's client
    answering chats through the pivot (``generate_content`` and its stream)."""

    def accepts(other: Any) -> bool:
        return supports(other) and (isinstance(other, genai.Client) or _is_async(other) == is_async)

    kind = "google-genai async client" if is_async else "google-genai client"
    return _pivot.fallback_clients(
        policy, accepts, lambda other: _Client(other, policy, None), kind, is_async, _PIVOT
    )


_METHOD_NAMES = tuple(name for name, _ in _METHODS)
# Zero-code instrumentation patches the resources' classes: the method's instance is the
# resource itself, which aiguard can wrap alone.
PATCHES = (Patch(the_class(Models), _METHOD_NAMES), Patch(the_class(AsyncModels), _METHOD_NAMES))
