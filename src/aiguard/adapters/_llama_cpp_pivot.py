"""The llama.cpp adapter's side of the pivot: llama.cpp speaks OpenAI's chat format as dicts.

As a fallback target, a ``Llama`` answers an OpenAI chat request with
``create_chat_completion`` (holding the model's lock, see :mod:`aiguard.adapters._llama_lock`);
fields it does not know are dropped and named in a span event. As a primary, its chat request
is already the pivot but for its own sampling fields (dropped, or refused when they change the
answer: a grammar, a logits processor), and its answers are the pivot's dicts themselves.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import llama_cpp

from aiguard._engine.contract import Chat
from aiguard.adapters._llama_lock import call_locked, call_locked_async
from aiguard.adapters._pivot import Untranslatable, converted, converted_async, dropped, split

PROVIDER = "llama_cpp"
PIVOT = "OpenAI chat format"

# -- as a primary ---------------------------------------------------------------------------

_KNOWN = frozenset(
    {"model", "messages", "functions", "function_call", "tools", "tool_choice", "temperature"}
    | {"top_p", "stream", "stop", "seed", "response_format", "max_tokens", "presence_penalty"}
    | {"frequency_penalty", "logprobs", "top_logprobs"}
)
_DROPPED = frozenset(
    {"top_k", "min_p", "typical_p", "repeat_penalty", "tfs_z", "mirostat_mode", "mirostat_tau"}
    | {"mirostat_eta", "logit_bias"}  # llama.cpp's logit_bias keys are its own token ids
)


def to_openai_chat(request: dict[str, Any]) -> Chat:
    out = split(request, _KNOWN, _DROPPED, PIVOT)
    if out.get("stream") is True:
        out["stream_options"] = {"include_usage": True}
    return out


def from_openai_chat(answer: Chat) -> Chat:
    return answer  # what llama.cpp returns: OpenAI's format as dicts


def _same(chunk: Chat) -> tuple[Chat]:
    return (chunk,)


def from_openai_chunks(chunks: Iterator[Chat]) -> Iterator[Chat]:
    return converted(chunks, _same)


def from_openai_chunks_async(chunks: AsyncIterator[Chat]) -> AsyncIterator[Chat]:
    return converted_async(chunks, _same)


# -- as a fallback target -------------------------------------------------------------------

# aiguard's own fields, and those llama.cpp answers as asked without them.
_QUIET = frozenset({"timeout", "stream_options", "n", "max_completion_tokens"})


def _parameters(llm: llama_cpp.Llama, name: str) -> frozenset[str]:
    """The keywords a method takes: its own and ``llama_cpp.Llama``'s. A subclass or a decorator
    without ``functools.wraps`` may show only ``*args, **kwargs``; the request's ``messages``
    must still reach the model."""
    names: set[str] = set()
    for fn in (getattr(llm, name), getattr(llama_cpp.Llama, name)):
        try:
            parameters = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        names.update(
            p.name
            for p in parameters
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
        )
    return frozenset(names)


def _chat_kwargs(known: frozenset[str], request: dict[str, Any]) -> dict[str, Any]:
    if request.get("n") not in (None, 1):
        raise Untranslatable("n= other than 1 (one answer per request)", PROVIDER)
    kwargs = {k: v for k, v in request.items() if k in known}
    if "max_tokens" not in kwargs and isinstance(request.get("max_completion_tokens"), int):
        kwargs["max_tokens"] = request["max_completion_tokens"]
    dropped((k for k in request if k not in known and k not in _QUIET), PROVIDER)
    return kwargs


def openai_chat(
    llm: llama_cpp.Llama, timeout: float | None = None
) -> tuple[Callable[[Chat], Chat | Iterator[Chat]], str]:
    """A callable taking an OpenAI chat request and answering as OpenAI would (as dicts).

    Request fields llama.cpp does not know are dropped (named in a span event, but for
    aiguard's own: ``timeout``, ``stream_options``); the answer is the OpenAI-format dict (or
    iterator of chunk dicts) llama.cpp already produces. Calls hold the model's lock;
    ``timeout`` is the guarded call's, named in the :class:`aiguard.DeadlineExceeded` raised
    when its deadline passes while waiting.
    """
    known = _parameters(llm, "create_chat_completion")

    def invoke(request: Chat) -> Chat | Iterator[Chat]:
        kwargs = _chat_kwargs(known, request)
        answer: Any = call_locked(llm, lambda: llm.create_chat_completion(**kwargs), timeout)
        return cast(Chat | Iterator[Chat], answer)  # TypedDicts: dicts

    return invoke, PROVIDER


def openai_chat_async(
    llm: llama_cpp.Llama, timeout: float | None = None
) -> tuple[Callable[[Chat], Awaitable[Chat | AsyncIterator[Chat]]], str]:
    """:func:`openai_chat` for async callers: waits for the model in the event loop, runs it
    in a worker thread, and streams as an async iterator that holds the model until it ends."""
    known = _parameters(llm, "create_chat_completion")

    async def invoke(request: Chat) -> Chat | AsyncIterator[Chat]:
        kwargs = _chat_kwargs(known, request)
        answer: Any = await call_locked_async(
            llm, lambda: llm.create_chat_completion(**kwargs), timeout
        )
        return cast(Chat | AsyncIterator[Chat], answer)

    return invoke, PROVIDER
