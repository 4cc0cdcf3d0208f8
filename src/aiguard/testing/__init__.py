"""aiguard's testing kit: a fault-injecting OpenAI-compatible server and in-memory telemetry.

The same kit aiguard tests itself with. With pytest installed, the fixtures ``aiguard_server``
and ``aiguard_telemetry`` are available in every test (registered as a pytest plugin).
"""

from __future__ import annotations

from aiguard._engine.state import testing as _testing
from aiguard.testing._capture import Capture
from aiguard.testing._chaos import Chaos, ChaosServer
from aiguard.testing._server import ANY_MODEL, Fault, MockServer, Recorded, Reply


class _TestMode:
    """What :func:`set_testing` returns: leaving a ``with`` block restores the mode before."""

    def __init__(self, before: bool) -> None:
        self.before = before

    def __enter__(self) -> _TestMode:
        return self

    def __exit__(self, *exc: object) -> None:
        _testing.active = self.before


def set_testing(on: bool) -> _TestMode:
    """Make every retry wait zero seconds (deadlines and attempt counts still apply).

    Takes effect at once; used as a ``with`` block, the mode before is restored at its end.

    Example::

        aiguard.testing.set_testing(True)   # in conftest.py: tests stay fast

        with aiguard.testing.set_testing(True):
            client.chat.completions.create(...)   # retried without waiting
    """
    before = _testing.active
    _testing.active = bool(on)
    return _TestMode(before)


__all__ = [
    "ANY_MODEL",
    "Capture",
    "Chaos",
    "ChaosServer",
    "Fault",
    "MockServer",
    "Recorded",
    "Reply",
    "set_testing",
]
