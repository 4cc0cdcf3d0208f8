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

# Importing aiguard loads almost nothing: every public name below is imported from its module on
# first use (PEP 562 ``__getattr__``), so an application pays for the engine, the OpenTelemetry
# SDK, pydantic, the checks' patterns and the genai-prices data only when it uses them. The
# ``TYPE_CHECKING`` imports give type checkers and IDEs the same names, eagerly.

from __future__ import annotations

import importlib

from aiguard._version import __version__

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing ``typing`` costs a few ms
if TYPE_CHECKING:
    from typing import Any

    from aiguard import checks, evaluators, prices
    from aiguard import testing as testing  # not in __all__: the test kit, loaded on use
    from aiguard._breaker import Breaker
    from aiguard._budget import Budget, budget, tag
    from aiguard._calls import CallInfo, call_info, call_ref
    from aiguard._config import configure, flush, shutdown
    from aiguard._decorator import guard
    from aiguard._errors import (
        AIGuardError,
        BudgetExceeded,
        CheckFailed,
        CircuitOpen,
        DeadlineExceeded,
        OutputInvalid,
        RateLimited,
        StoreUnavailable,
        StreamTruncated,
    )
    from aiguard._evaluation import feedback
    from aiguard._instrument import instrument, uninstrument
    from aiguard._policy import Failure, Policy, Retry, Target
    from aiguard._policy_file import PolicyFileError
    from aiguard._policy_file import reload as reload_policies
    from aiguard._quality_spec import Review
    from aiguard._ratelimit import RateLimit
    from aiguard._types import Usage
    from aiguard._wrap import wrap
    from aiguard.adapters._pivot import Untranslatable


# public name -> (module, attribute in it; None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "AIGuardError": ("aiguard._errors", "AIGuardError"),
    "Breaker": ("aiguard._breaker", "Breaker"),
    "Budget": ("aiguard._budget", "Budget"),
    "BudgetExceeded": ("aiguard._errors", "BudgetExceeded"),
    "CallInfo": ("aiguard._calls", "CallInfo"),
    "CheckFailed": ("aiguard._errors", "CheckFailed"),
    "CircuitOpen": ("aiguard._errors", "CircuitOpen"),
    "DeadlineExceeded": ("aiguard._errors", "DeadlineExceeded"),
    "Failure": ("aiguard._policy", "Failure"),
    "OutputInvalid": ("aiguard._errors", "OutputInvalid"),
    "Policy": ("aiguard._policy", "Policy"),
    "PolicyFileError": ("aiguard._policy_file", "PolicyFileError"),
    "Retry": ("aiguard._policy", "Retry"),
    "Review": ("aiguard._quality_spec", "Review"),
    "StreamTruncated": ("aiguard._errors", "StreamTruncated"),
    "RateLimited": ("aiguard._errors", "RateLimited"),
    "RateLimit": ("aiguard._ratelimit", "RateLimit"),
    "StoreUnavailable": ("aiguard._errors", "StoreUnavailable"),
    "Target": ("aiguard._policy", "Target"),
    "Untranslatable": ("aiguard.adapters._pivot", "Untranslatable"),
    "Usage": ("aiguard._types", "Usage"),
    "budget": ("aiguard._budget", "budget"),
    "call_info": ("aiguard._calls", "call_info"),
    "call_ref": ("aiguard._calls", "call_ref"),
    "evaluators": ("aiguard.evaluators", None),
    "feedback": ("aiguard._evaluation", "feedback"),
    "checks": ("aiguard.checks", None),
    "configure": ("aiguard._config", "configure"),
    "flush": ("aiguard._config", "flush"),
    "shutdown": ("aiguard._config", "shutdown"),
    "guard": ("aiguard._decorator", "guard"),
    "instrument": ("aiguard._instrument", "instrument"),
    "prices": ("aiguard.prices", None),
    "reload_policies": ("aiguard._policy_file", "reload"),
    "tag": ("aiguard._budget", "tag"),
    "testing": ("aiguard.testing", None),
    "uninstrument": ("aiguard._instrument", "uninstrument"),
    "wrap": ("aiguard._wrap", "wrap"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'aiguard' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AIGuardError",
    "Breaker",
    "Budget",
    "BudgetExceeded",
    "CallInfo",
    "CheckFailed",
    "CircuitOpen",
    "DeadlineExceeded",
    "Failure",
    "OutputInvalid",
    "Policy",
    "PolicyFileError",
    "RateLimit",
    "RateLimited",
    "Retry",
    "Review",
    "StoreUnavailable",
    "StreamTruncated",
    "Target",
    "Untranslatable",
    "Usage",
    "__version__",
    "budget",
    "call_info",
    "call_ref",
    "checks",
    "configure",
    "evaluators",
    "feedback",
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
