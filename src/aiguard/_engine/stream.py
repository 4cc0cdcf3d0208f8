"""Guarded streams: the SDK's own stream object, with telemetry that ends exactly once.

The core reads a stream's first chunk inside the guarded call, so a stream that fails before
its first chunk is retried or falls back like any call. From then on the user iterates the
:class:`GuardedStream` (or :class:`AsyncGuardedStream`): a transparent proxy of the SDK's stream
(``with``, ``close()``, ``.response`` and every other attribute still work) whose iteration passes
each chunk to the adapter's :class:`Reader`. The guarded call ends on exhaustion, on an error while
reading, on ``close()``, on leaving a ``with`` block, or when the stream is garbage-collected
(marked abandoned), whichever comes first.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import wrapt

from aiguard._engine.contract import Reader
from aiguard._errors import StreamTruncated
from aiguard._telemetry import Attrs, report_fault


class Ended:
    """How a stream ended: read to the end, failed, or abandoned (closed or collected early)."""

    __slots__ = ("abandoned", "error")

    def __init__(self, error: BaseException | None = None, abandoned: bool = False) -> None:
        self.error = error
        self.abandoned = abandoned


def first_chunk(stream: Any, reader: Reader) -> tuple[Iterator[Any], list[Any]]:
    """Read up to the first chunk the user may see; raises what the stream raises.

    A reader holds its chunks back until it says the answer has ``started`` (Anthropic sends
    ``message_start`` and then, when overloaded, an error event): an error before then is
    retried like any failed request, and the held chunks are never seen.
    """
    iterator = iter(stream)
    held: list[Any] = []
    for item in iterator:
        if _note(reader, item):
            held.append(item)
            if reader.started:
                break
    return iterator, held


async def first_chunk_async(stream: Any, reader: Reader) -> tuple[AsyncIterator[Any], list[Any]]:
    iterator = stream.__aiter__()
    held: list[Any] = []
    async for item in iterator:
        if _note(reader, item):
            held.append(item)
            if reader.started:
                break
    return iterator, held


def _note(reader: Reader, item: Any) -> bool:
    try:
        return reader.chunk(item)
    except Exception as exc:  # an odd chunk must reach the user, not break their loop
        report_fault("reading a stream chunk", exc)
        return True


class Lifecycle:
    """The end of a guarded stream, shared by the sync and async proxies: exactly once.

    ``on_end(how, kept)`` tells the guarded call how the stream ended. It also times the chunks
    the user gets after the first: one ``gen_ai.client.operation.time_per_output_chunk`` point
    per chunk, from the end of the previous chunk to the end of this one, when metrics are on.
    """

    __slots__ = (
        "attrs",
        "done",
        "first_at",
        "histogram",
        "kept",
        "last",
        "model",
        "on_end",
        "raise_on_truncation",
        "reader",
    )

    def __init__(
        self,
        reader: Reader,
        on_end: Callable[[Ended, list[Any] | None], None],
        model: str,
        raise_on_truncation: bool,
        kept: list[Any] | None = None,
    ) -> None:
        self.reader = reader
        self.on_end = on_end
        self.model = model
        self.raise_on_truncation = raise_on_truncation
        self.first_at = self.last = time.perf_counter()
        self.done = False
        # The chunks the user got, kept only when content capture records the answer.
        self.kept = kept
        self.histogram: Any = None
        self.attrs: Attrs | None = None

    def measure(self, histogram: Any, attrs: Attrs) -> None:
        """Record the time of each chunk after the first in ``histogram``."""
        self.histogram = histogram
        self.attrs = attrs

    def got(self, item: Any) -> None:
        """The user gets ``item``: keep it for capture, time it."""
        if self.kept is not None:
            self.kept.append(item)
        histogram = self.histogram
        if histogram is not None:
            now = time.perf_counter()
            try:
                histogram.record(now - self.last, self.attrs)
            except Exception as exc:
                report_fault("recording a metric", exc)
            self.last = now

    def end(self, how: Ended) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.on_end(how, self.kept)
        except Exception as exc:
            report_fault("ending a stream's telemetry", exc)

    def truncated(self) -> BaseException | None:
        """The error to raise at the end of an incomplete stream, when the user asked for it."""
        if self.reader.complete or not self.raise_on_truncation:
            return None
        return StreamTruncated(self.model)


class GuardedStream(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """The SDK's stream, iterated through aiguard (sync)."""

    def __init__(
        self, stream: Any, iterator: Iterator[Any], held: list[Any], lifecycle: Lifecycle
    ) -> None:
        super().__init__(stream)
        self._self_iterator = iterator
        self._self_held = held
        self._self_life = lifecycle

    def __iter__(self) -> GuardedStream:
        return self

    def __next__(self) -> Any:
        if self._self_held:  # what was read inside the guarded call comes first
            return self._self_held.pop(0)
        life = self._self_life
        if life.done:
            raise StopIteration
        try:
            for item in self._self_iterator:
                if _note(life.reader, item):
                    life.got(item)
                    return item
        except BaseException as exc:
            life.end(Ended(exc))
            raise
        error = life.truncated()
        life.end(Ended(error))
        if error is not None:
            raise error
        raise StopIteration

    def close(self) -> None:
        self._self_life.end(Ended(abandoned=True))
        self.__wrapped__.close()

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        life = getattr(self, "_self_life", None)
        if life is not None:
            life.end(Ended(abandoned=True))

    def __repr__(self) -> str:
        return f"<aiguard stream of {self.__wrapped__!r}>"


class AsyncGuardedStream(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """The SDK's stream, iterated through aiguard (async)."""

    def __init__(
        self,
        stream: Any,
        iterator: AsyncIterator[Any],
        held: list[Any],
        lifecycle: Lifecycle,
    ) -> None:
        super().__init__(stream)
        self._self_iterator = iterator
        self._self_held = held
        self._self_life = lifecycle

    def __aiter__(self) -> AsyncGuardedStream:
        return self

    async def __anext__(self) -> Any:
        if self._self_held:
            return self._self_held.pop(0)
        life = self._self_life
        if not life.done:
            try:
                async for item in self._self_iterator:
                    if _note(life.reader, item):
                        life.got(item)
                        return item
            except BaseException as exc:
                life.end(Ended(exc))
                raise
        error = life.truncated()
        life.end(Ended(error))
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def close(self) -> None:
        self._self_life.end(Ended(abandoned=True))
        stream = self.__wrapped__
        # SDK streams have an async close(); an async generator (Ollama's) has aclose().
        aclose = getattr(stream, "aclose", None)
        await (aclose() if aclose is not None else stream.close())

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self) -> AsyncGuardedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        life = getattr(self, "_self_life", None)
        if life is not None:
            life.end(Ended(abandoned=True))

    def __repr__(self) -> str:
        return f"<aiguard stream of {self.__wrapped__!r}>"
