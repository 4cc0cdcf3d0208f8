"""aiguard: production-grade AI model calls, drop-in.

Wrap a client or decorate a function; calls get retries, fallbacks, a circuit breaker, a
deadline, cost accounting with hard budgets, and OpenTelemetry GenAI spans and metrics.

Example::

    import aiguard
    from openai import OpenAI

    client = aiguard.wrap(OpenAI(), retry=aiguard.Retry(attempts=4), fallback=["gpt-4o-mini"])
    messages = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages)
"""

from aiguard import checks, prices
from aiguard._breaker import Breaker
from aiguard._budget import Budget, budget, tag
from aiguard._config import configure, flush, shutdown
from aiguard._decorator import guard
from aiguard._errors import (
    AIGuardError,
    BudgetExceeded,
    CheckFailed,
    CircuitOpen,
    DeadlineExceeded,
    OutputInvalid,
    StreamTruncated,
)
from aiguard._instrument import instrument, uninstrument
from aiguard._policy import Failure, Policy, Retry, Target
from aiguard._policy_file import PolicyFileError
from aiguard._policy_file import reload as reload_policies
from aiguard._types import Usage
from aiguard._wrap import wrap

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # ``aiguard.testing`` (the fake server and in-memory telemetry) is loaded on first use only.
    if name == "testing":
        import importlib

        return importlib.import_module("aiguard.testing")
    raise AttributeError(f"module 'aiguard' has no attribute {name!r}")


__all__ = [
    "AIGuardError",
    "Breaker",
    "Budget",
    "BudgetExceeded",
    "CheckFailed",
    "CircuitOpen",
    "DeadlineExceeded",
    "Failure",
    "OutputInvalid",
    "Policy",
    "PolicyFileError",
    "Retry",
    "StreamTruncated",
    "Target",
    "Usage",
    "__version__",
    "budget",
    "checks",
    "configure",
    "flush",
    "guard",
    "instrument",
    "prices",
    "reload_policies",
    "shutdown",
    "tag",
    "uninstrument",
    "wrap",
]
