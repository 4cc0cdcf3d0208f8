"""The openai adapter's side of the pivot: its requests and answers are the pivot itself.

As a primary, its chat request is already an OpenAI chat request, and the pivot's dicts become
the SDK's own ``ChatCompletion`` / ``ChatCompletionChunk``. As a fallback target, an ``OpenAI``
client (any OpenAI-compatible server) answers a pivot request with ``chat.completions.create``,
one request per attempt (the SDK's own retries off: aiguard retries), and answers as dicts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aiguard._engine.contract import Chat
from aiguard._http import server_attributes as _server
from aiguard._http import timeout_seconds
from aiguard._telemetry import Attrs
from aiguard.adapters import _stainless
from aiguard.adapters._pivot import converted, converted_async


def telemetry_provider(client: openai.OpenAI | openai.AsyncOpenAI) -> str:
    """``gen_ai.provider.name`` for traffic through the openai SDK, whatever server it reaches.

    The conventions make the attribute the format flavour of the telemetry, consistent with the
    ``openai.*`` attributes: ``openai``, or ``azure.ai.openai`` for an Azure OpenAI client. The
    real host is in ``server.address``; pricing uses the adapter's ``detect_provider``.
    """
    if isinstance(client, openai.AzureOpenAI | openai.AsyncAzureOpenAI):
        return "azure.ai.openai"
    return (
        "azure.ai.openai"
        if (client.base_url.host or "").endswith(".openai.azure.com")
        else "openai"
    )


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


# -- as a primary ---------------------------------------------------------------------------


def to_openai_chat(request: dict[str, Any]) -> Chat:
    """A ``chat.completions.create`` request is the pivot (the target drops what it lacks)."""
    return dict(request)


def from_openai_chat(answer: Chat) -> ChatCompletion:
    return ChatCompletion.model_validate(answer)


def _chunk(chunk: Chat) -> tuple[ChatCompletionChunk]:
    return (ChatCompletionChunk.model_validate(chunk),)


def from_openai_chunks(chunks: Iterator[Chat]) -> Iterator[ChatCompletionChunk]:
    """Chunk dicts as the SDK's chunks; closing this closes the source."""
    return converted(chunks, _chunk)


def from_openai_chunks_async(chunks: AsyncIterator[Chat]) -> AsyncIterator[ChatCompletionChunk]:
    return converted_async(chunks, _chunk)


# -- as a fallback target -------------------------------------------------------------------


def pivot_server(client: openai.OpenAI | openai.AsyncOpenAI) -> Attrs:
    return _server(client.base_url)


def pivot_pricing(client: openai.OpenAI | openai.AsyncOpenAI) -> str:
    return detect_provider(client)


def pivot_timeout(client: openai.OpenAI | openai.AsyncOpenAI) -> float | None:
    return timeout_seconds(client.timeout)


def _dict(item: Any) -> Chat:
    return item.model_dump(mode="json", exclude_unset=True)  # type: ignore[no-any-return]


def _dicts(chunk: Any) -> tuple[Chat]:
    return (_dict(chunk),)


def openai_chat(
    client: openai.OpenAI, timeout: float | None = None
) -> tuple[Callable[[Chat], Chat | Iterator[Chat]], str]:
    """``client`` answering OpenAI chat requests as dicts (see ``PivotTarget``)."""
    if not isinstance(client, openai.OpenAI):
        raise TypeError("an async OpenAI client cannot answer a sync call")
    _stainless.hush(client)
    tries = [0]

    def answer(request: Chat) -> Chat | Iterator[Chat]:
        method = client.chat.completions.create
        result = _stainless.call(client, False, tries, method, request)
        return converted(result, _dicts) if request.get("stream") is True else _dict(result)

    return answer, telemetry_provider(client)


def openai_chat_async(
    client: openai.AsyncOpenAI, timeout: float | None = None
) -> tuple[Callable[[Chat], Awaitable[Chat | AsyncIterator[Chat]]], str]:
    if not isinstance(client, openai.AsyncOpenAI):
        raise TypeError("a sync OpenAI client cannot answer an async call")
    _stainless.hush(client)
    tries = [0]

    async def answer(request: Chat) -> Chat | AsyncIterator[Chat]:
        method = client.chat.completions.create
        result = await _stainless.call_async(client, False, tries, method, request)
        if request.get("stream") is True:
            return converted_async(result, _dicts)
        return _dict(result)

    return answer, telemetry_provider(client)
