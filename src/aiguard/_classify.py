"""Classify any exception for the decorator, which does not know which provider raised it.

Each adapter classifies its own SDK's errors; this asks the adapters whose SDK is imported (an
exception of an SDK that was never imported cannot exist), then falls back to the built-in
network errors.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from aiguard._errors import AIGuardError
from aiguard._policy import Failure

Classifier = Callable[[BaseException], tuple[Failure, "float | None"]]

# Module whose exceptions an adapter understands -> the adapter module.
_ADAPTERS = {
    "openai": "aiguard.adapters._openai",
}
_loaded: dict[str, Classifier] = {}


def classify(error: BaseException) -> tuple[Failure, float | None]:
    if isinstance(error, AIGuardError):  # aiguard's own refusals are final
        return Failure.FATAL, None
    for cls in type(error).__mro__:
        root = cls.__module__.partition(".")[0]
        adapter = _ADAPTERS.get(root)
        if adapter is not None and root in sys.modules:
            classifier = _loaded.get(root)
            if classifier is None:
                classifier = _loaded[root] = importlib.import_module(adapter).classify
            return classifier(error)
    if isinstance(error, TimeoutError | ConnectionError):
        return Failure.OUTAGE, None
    return Failure.FATAL, None
