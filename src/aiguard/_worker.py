"""The background worker online evaluators run on, off every call's path.

A guarded call hands its evaluation over as one job (:func:`submit`) and returns at once: the
call never waits for an evaluator, and nothing an evaluator does (raise, hang, return garbage)
reaches it. The queue is bounded (``QUEUE_MAX`` jobs): when it is full a job is dropped and
counted (``aiguard.evaluations.dropped``), never waited for. One daemon thread runs the jobs in
order; async evaluators run on that thread's own event loop, each bounded by
``EVALUATOR_TIMEOUT_S``. At exit (and in ``aiguard.flush``) the queue is drained for a bounded
time, then abandoned: the process never hangs on an evaluator.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiguard._telemetry import current, report_fault

QUEUE_MAX = 1000
EVALUATOR_TIMEOUT_S = 60.0
EXIT_DRAIN_S = 2.0
METRIC_DROPPED = "aiguard.evaluations.dropped"


class Worker:
    """A bounded queue of jobs and the daemon thread that runs them."""

    def __init__(self, size: int = QUEUE_MAX) -> None:
        self.jobs: queue.Queue[Callable[[], None]] = queue.Queue(size)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0
        self.done = 0

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job``; False (dropped and counted) when the queue is full."""
        self._start()
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            with self.lock:
                self.dropped += 1
            _count_drop()
            return False
        return True

    def _start(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return
            self.thread = threading.Thread(target=self._run, name="aiguard-evaluate", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        while True:
            job = self.jobs.get()
            try:
                job()
            except Exception as exc:
                report_fault("running an evaluation", exc)
            finally:
                with self.lock:
                    self.done += 1
                self.jobs.task_done()

    def run_async(self, awaitable: Awaitable[Any]) -> Any:
        """Await an async evaluator's result on the worker's loop, bounded in time."""
        loop = self.loop
        if loop is None or threading.current_thread() is not self.thread:
            return asyncio.run(asyncio.wait_for(awaitable, EVALUATOR_TIMEOUT_S))
        return loop.run_until_complete(asyncio.wait_for(awaitable, EVALUATOR_TIMEOUT_S))

    def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until every queued job ran; True if they did."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self.jobs.all_tasks_done:
            while self.jobs.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.jobs.all_tasks_done.wait(min(left, 0.05))
        return True


def _count_drop() -> None:
    telemetry = current()
    try:
        if telemetry.measuring():
            counter = telemetry.meter.create_counter(
                METRIC_DROPPED,
                unit="{evaluation}",
                description="Evaluations dropped because the evaluation queue was full",
            )
            counter.add(1)
    except Exception as exc:
        report_fault("counting a dropped evaluation", exc)


class _ProcessWorker:
    worker: Worker | None = None
    lock = threading.Lock()


def worker() -> Worker:
    """The process's worker, created (with its exit drain) on first use."""
    found = _ProcessWorker.worker
    if found is not None:
        return found
    with _ProcessWorker.lock:
        if _ProcessWorker.worker is None:
            _ProcessWorker.worker = Worker()
            atexit.register(_drain_at_exit)
        return _ProcessWorker.worker


def submit(job: Callable[[], None]) -> bool:
    return worker().submit(job)


def drain(timeout: float) -> bool:
    """Run what is queued, for at most ``timeout`` seconds (``aiguard.flush`` calls it)."""
    found = _ProcessWorker.worker
    return True if found is None else found.drain(timeout)


def _drain_at_exit() -> None:
    with contextlib.suppress(Exception):
        drain(EXIT_DRAIN_S)


def reset(size: int = QUEUE_MAX) -> Worker:
    """A fresh worker with a queue of ``size`` (tests); the old one's jobs are abandoned."""
    with _ProcessWorker.lock:
        _ProcessWorker.worker = Worker(size)
        return _ProcessWorker.worker
