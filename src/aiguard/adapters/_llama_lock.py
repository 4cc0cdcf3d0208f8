"""One call at a time per ``llama_cpp.Llama``: a model is not thread-safe.

Two calls on one instance at once abort the process (``GGML_ASSERT``) or hang. Every call
aiguard makes on a model holds that model's lock, a stream until it ends or is closed. Sync
callers wait on the lock (until the guarded call's deadline); async callers wait in the event
loop (one task per loop at a time, cancellable, until the deadline), then hand the work to a
worker thread, so neither the loop nor the executor fills up with waiting calls. Work already
handed to a thread cannot be stopped, so the lock is released by the thread once it is done,
whatever happened to the caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import llama_cpp

from aiguard._engine.state import current_deadline
from aiguard._errors import DeadlineExceeded

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
