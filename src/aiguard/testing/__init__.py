"""aiguard's testing kit: a fault-injecting OpenAI-compatible server and in-memory telemetry.

The same kit aiguard tests itself with. With pytest installed, the fixtures ``aiguard_server``
and ``aiguard_telemetry`` are available in every test (registered as a pytest plugin).
"""

from aiguard._engine.state import testing as _testing
from aiguard.testing._capture import Capture
from aiguard.testing._server import ANY_MODEL, Fault, MockServer, Recorded, Reply


def set_testing(on: bool) -> None:
    """Make every retry wait zero seconds (deadlines and attempt counts still apply).

    Example::

        aiguard.testing.set_testing(True)   # in conftest.py: tests stay fast
    """
    _testing.active = bool(on)


__all__ = ["ANY_MODEL", "Capture", "Fault", "MockServer", "Recorded", "Reply", "set_testing"]
