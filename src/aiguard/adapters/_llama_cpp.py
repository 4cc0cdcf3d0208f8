"""llama.cpp adapter: an in-process ``llama_cpp.Llama`` model, guarded like a remote client.

Guards ``create_chat_completion``, ``create_completion`` (and ``__call__``) and
``create_embedding``, streams included; everything else passes through. The model runs in this
process, so its spans are INTERNAL and carry no server address; usage comes from the returned
dicts (llama.cpp reports none for streams). Model names: the call's ``model=``, else the model
file's name without extension.

It also lets another adapter fall back to a local model: :func:`openai_chat` (and
:func:`openai_chat_async`) turn a ``Llama`` into a callable that takes an OpenAI chat request and
answers in OpenAI's format.

A ``Llama`` is not thread-safe, so every call aiguard makes on one holds that model's lock (see
:func:`call_locked`): concurrent requests queue for the model instead of crashing the process.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import llama_cpp
from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._engine.contract import Endpoint, Reader, Route
from aiguard._engine.state import current_deadline
from aiguard._errors import DeadlineExceeded
from aiguard._messages import Message, Part, estimate_input_tokens, openai_messages, to_json
from aiguard._policy import Failure, Policy, Target
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters._proxy import (
    GuardedProxy,
    Patch,
    binder,
    guarded_method,
    same_kind_clients,
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

    def result(self) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        if isinstance(self.id, str):
            attrs[sc.RESPONSE_ID] = self.id
        if isinstance(self.model, str):
            attrs[sc.RESPONSE_MODEL] = self.model
        if self.reasons:
            attrs[sc.RESPONSE_FINISH_REASONS] = [self.reasons[i] for i in sorted(self.reasons)]
        return attrs, dict_usage(self.usage)


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
    at a time per model (see :func:`call_locked`)."""
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
    others = same_kind_clients(policy, supports, lambda other: other, "llama_cpp.Llama")
    default = model_name(client)
    tree: dict[str, Any] = {}
    for name, route in _METHODS:
        fallbacks = [
            _endpoint(
                others[id(unwrap(t.client))] if t.client is not None else client,
                name,
                t.model,
                policy,
                t,
            )
            for t in policy.fallback
        ]

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


class _LlamaProxy(GuardedProxy):
    """``llm(prompt)`` is ``create_completion``: calling the proxy goes through the guard."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__getattr__("__call__")(*args, **kwargs)


# -- a local model as another adapter's fallback --------------------------------------------------


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


def _chat_kwargs(known: frozenset[str], request: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in request.items() if k in known}
    if "max_tokens" not in kwargs and isinstance(request.get("max_completion_tokens"), int):
        kwargs["max_tokens"] = request["max_completion_tokens"]
    return kwargs


def openai_chat(
    llm: llama_cpp.Llama, timeout: float | None = None
) -> tuple[Callable[[dict[str, Any]], dict[str, Any] | Iterator[dict[str, Any]]], str]:
    """A callable taking an OpenAI chat request and answering as OpenAI would (as dicts).

    Request fields llama.cpp does not know (``n``, ``stream_options``, ``timeout``, headers)
    are dropped; the answer is the OpenAI-format dict (or iterator of chunk dicts) llama.cpp
    already produces. Calls hold the model's lock; ``timeout`` is the guarded call's, named in
    the :class:`aiguard.DeadlineExceeded` raised when its deadline passes while waiting.
    """
    known = _parameters(llm, "create_chat_completion")

    def invoke(request: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        kwargs = _chat_kwargs(known, request)
        answer: Any = call_locked(llm, lambda: llm.create_chat_completion(**kwargs), timeout)
        return cast(dict[str, Any] | Iterator[dict[str, Any]], answer)  # TypedDicts: dicts

    return invoke, PROVIDER


def openai_chat_async(
    llm: llama_cpp.Llama, timeout: float | None = None
) -> tuple[
    Callable[[dict[str, Any]], Awaitable[dict[str, Any] | AsyncIterator[dict[str, Any]]]], str
]:
    """:func:`openai_chat` for async callers: waits for the model in the event loop, runs it
    in a worker thread, and streams as an async iterator that holds the model until it ends."""
    known = _parameters(llm, "create_chat_completion")

    async def invoke(request: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        kwargs = _chat_kwargs(known, request)
        answer: Any = await call_locked_async(
            llm, lambda: llm.create_chat_completion(**kwargs), timeout
        )
        return cast(dict[str, Any] | AsyncIterator[dict[str, Any]], answer)

    return invoke, PROVIDER


# -- one call at a time per model ----------------------------------------------------------------
#
# A ``Llama`` is not thread-safe: two calls on one instance at once abort the process
# (``GGML_ASSERT``) or hang. Every call aiguard makes on a model holds that model's lock, a
# stream until it ends or is closed. Sync callers wait on the lock (until the guarded call's
# deadline); async callers wait in the event loop (one task per loop at a time, cancellable,
# until the deadline), then hand the work to a worker thread, so neither the loop nor the
# executor fills up with waiting calls. Work already handed to a thread cannot be stopped, so
# the lock is released by the thread once it is done, whatever happened to the caller.

_POLL_S = (0.001, 0.05)  # an async waiter re-tries a lock held by another thread or loop


class _ModelLock:
    """The lock of one ``Llama``: a thread lock, with an asyncio lock per event loop in front."""

    __slots__ = ("_loops", "_mutex", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._mutex = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def acquire(self, timeout: float | None) -> None:
        """Wait for the model in this thread, until the guarded call's deadline."""
        deadline = current_deadline()
        if deadline is None:
            self.lock.acquire()
        elif not self.lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise _passed(timeout)

    async def acquire_async(self, timeout: float | None) -> None:
        """Wait for the model in the event loop (cancellable), until the deadline."""
        deadline = current_deadline()
        loop = asyncio.get_running_loop()
        with self._mutex:
            queue = self._loops.get(loop)
            if queue is None:
                queue = self._loops[loop] = asyncio.Lock()
        try:
            if deadline is None:
                await queue.acquire()
            else:
                await asyncio.wait_for(queue.acquire(), max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise _passed(timeout) from None
        try:
            pause = _POLL_S[0]
            while not self.lock.acquire(blocking=False):  # held by another thread or loop
                if deadline is not None and time.monotonic() + pause >= deadline:
                    raise _passed(timeout)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _POLL_S[1])
        finally:
            queue.release()  # the next task of this loop may now wait on the thread lock


def _passed(timeout: float | None) -> DeadlineExceeded:
    return DeadlineExceeded(timeout if timeout is not None else 0.0, 0)


_locks: weakref.WeakKeyDictionary[Any, _ModelLock] = weakref.WeakKeyDictionary()
_locks_mutex = threading.Lock()


def model_lock(llm: llama_cpp.Llama) -> _ModelLock:
    """The one lock of ``llm``, shared by every wrapper and fallback that uses it."""
    with _locks_mutex:
        found = _locks.get(llm)
        if found is None:
            found = _locks[llm] = _ModelLock()
        return found


def _is_stream(result: Any) -> bool:
    return isinstance(result, Iterator) and not isinstance(result, dict)


class _HeldStream(Iterator[Any]):
    """A sync stream that holds its model's lock until it ends, fails, is closed or dropped."""

    __slots__ = ("__weakref__", "_chunks", "_lock")

    def __init__(self, chunks: Iterator[Any], lock: threading.Lock) -> None:
        self._chunks = chunks
        self._lock: threading.Lock | None = lock

    def __iter__(self) -> _HeldStream:
        return self

    def __next__(self) -> Any:
        if self._lock is None:
            raise StopIteration
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()  # the model's generator cleans up while the lock is still held
        finally:
            lock.release()

    def __del__(self) -> None:
        self.close()


def call_locked(llm: llama_cpp.Llama, fn: Callable[[], Any], timeout: float | None) -> Any:
    """Call ``fn`` (a call on ``llm``) holding the model's lock; a stream keeps it to its end."""
    lock = model_lock(llm)
    lock.acquire(timeout)
    try:
        result = fn()
    except BaseException:
        lock.lock.release()
        raise
    if _is_stream(result):
        return _HeldStream(result, lock.lock)
    lock.lock.release()
    return result


class _Turn:
    """An async call's hold on a model's lock, across the jobs it hands to worker threads.

    The lock is released once: when the call is over and no job of it is still running in a
    thread. Its jobs run one after the other (closing a stream waits for a chunk still being
    made); a job the call no longer wants (it was cancelled) is skipped when it starts.
    """

    __slots__ = ("_ended", "_lock", "_mutex", "_running", "_serial")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._mutex = threading.Lock()
        self._serial = threading.Lock()
        self._running = 0
        self._ended = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker thread. Cancelling the caller does not cancel the job
        (a thread cannot be stopped); the lock waits for the job either way."""
        with self._mutex:
            self._running += 1
        context = contextvars.copy_context()
        job = asyncio.get_running_loop().run_in_executor(None, context.run, self._job, fn, args)
        return await asyncio.shield(job)

    def _job(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            with self._serial:
                if self._ended:  # the call gave up before this job started: skip it
                    return None
                return fn(*args)
        finally:
            with self._mutex:
                self._running -= 1
                release = self._ended and self._running == 0
            if release:
                self._lock.release()

    def end(self) -> None:
        """The call is over: release now, or when its last job in a thread finishes."""
        with self._mutex:
            if self._ended:
                return
            self._ended = True
            release = self._running == 0
        if release:
            self._lock.release()


async def call_locked_async(
    llm: llama_cpp.Llama, fn: Callable[[], Any], timeout: float | None
) -> Any:
    """Wait for ``llm`` in the event loop, then run ``fn`` in a worker thread. A non-stream
    result is returned as is; a stream becomes an async iterator that holds the lock until it
    ends or is closed."""
    lock = model_lock(llm)
    await lock.acquire_async(timeout)
    turn = _Turn(lock.lock)
    try:
        result = await turn.run(fn)
    except BaseException:
        turn.end()
        raise
    if _is_stream(result):
        return _held_async(result, turn)
    turn.end()
    return result


_DONE = object()


async def _held_async(chunks: Iterator[Any], turn: _Turn) -> AsyncIterator[Any]:
    """Iterate a model's blocking stream from async code, one chunk per worker-thread hop."""
    try:
        while True:
            item = await turn.run(next, chunks, _DONE)
            if item is _DONE:
                return
            yield item
    finally:
        close = getattr(chunks, "close", None)
        try:
            if close is not None:
                await turn.run(close)  # cleans up while the lock is still held
        finally:
            turn.end()


# Zero-code instrumentation (``aiguard.instrument()``): the SDK methods it patches.
PATCHES = (
    Patch(
        the_class(llama_cpp.Llama),
        ("create_chat_completion", "create_completion", "create_embedding"),
    ),
)
