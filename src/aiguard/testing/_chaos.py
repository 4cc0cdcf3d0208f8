"""Random faults and latency on the testing kit's server, for ``aiguard serve``.

:class:`ChaosServer` is a :class:`MockServer` that, for each request with no scripted fault,
waits a random latency and fails a given share of requests with one of the given faults. Scripted
faults (``fail()``, ``script()``) still come first, so a test can mix both.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass

from aiguard.testing._server import Fault, MockServer, Recorded, Reply

# The fault kinds besides an HTTP status.
KINDS = ("reset", "malformed", "cut")
_KEEP_REQUESTS = 1000  # a long-running server keeps only the latest requests


@dataclass(frozen=True)
class Chaos:
    """What to inject: ``rate`` of the requests (0 to 1) fail with one of ``faults`` (an HTTP
    status, ``"reset"``: the connection dropped, ``"malformed"``: a 200 that is not JSON,
    ``"cut"``: a stream cut after two chunks), chosen evenly; every answer first waits between
    ``latency[0]`` and ``latency[1]`` seconds; a 429 or 503 says ``Retry-After: retry_after``
    when it is set. ``seed`` makes the draws repeatable."""

    rate: float = 0.0
    faults: tuple[int | str, ...] = (429, 500, 503)
    latency: tuple[float, float] = (0.0, 0.0)
    retry_after: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate= must be between 0 and 1, got {self.rate!r}")
        if not self.faults:
            raise ValueError("faults= must name at least one fault")
        for fault in self.faults:
            status = isinstance(fault, int) and 400 <= fault <= 599
            if not (status or (isinstance(fault, str) and fault in KINDS)):
                raise ValueError(f"faults=: {fault!r} is not an HTTP error status or {KINDS}")
        low, high = self.latency
        if not 0 <= low <= high:
            raise ValueError(f"latency= must be 0 <= low <= high seconds, got {self.latency!r}")


class ChaosServer(MockServer):
    """The testing kit's server with random faults and latency (see :class:`Chaos`).

    ``injected`` counts the faults it made up, by kind (``"429"``, ``"reset"``...).

    Example::

        with ChaosServer(Chaos(rate=0.2, faults=(429,), latency=(0.1, 0.3))) as server:
            client = openai.OpenAI(base_url=server.url, api_key="test")
    """

    def __init__(self, chaos: Chaos, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.chaos = chaos
        self.injected: Counter[str] = Counter()
        self.served = 0
        self._random = random.Random(chaos.seed)
        self._draw_lock = threading.Lock()

    def _take(self, model: str | None, recorded: Recorded) -> tuple[Fault | None, Reply]:
        fault, reply = super()._take(model, recorded)
        with self._draw_lock:
            self.served += 1
            if len(self.requests) > 2 * _KEEP_REQUESTS:
                del self.requests[:-_KEEP_REQUESTS]
            if fault is None:
                fault = self._draw()
        return fault, reply

    def _draw(self) -> Fault | None:
        chaos, draw = self.chaos, self._random
        low, high = chaos.latency
        delay = draw.uniform(low, high) if high else 0.0
        if draw.random() >= chaos.rate or not chaos.rate:
            return Fault(delay=delay) if delay else None
        kind = draw.choice(chaos.faults)
        self.injected[str(kind)] += 1
        if kind == "reset":
            return Fault(delay=delay, reset=True)
        if kind == "malformed":
            return Fault(delay=delay, malformed=True)
        if kind == "cut":
            return Fault(delay=delay, cut_after=2)
        assert isinstance(kind, int)
        headers = {}
        if chaos.retry_after is not None and kind in (429, 503):
            headers["retry-after"] = f"{chaos.retry_after:g}"
        return Fault(delay=delay, status=kind, headers=headers)
