"""Zero-code instrumentation: guard every supported client without touching the app's code.

``aiguard.instrument()`` (or ``opentelemetry-instrument python app.py``, through the
``opentelemetry_instrumentor`` entry point) patches the model-calling methods of the OpenAI,
Anthropic, Gemini, Ollama and llama.cpp SDK classes, and botocore's ``_make_api_call`` for
Bedrock (each adapter's ``PATCHES``), when the app imports that SDK. A call on any client, made
before or after, then runs through the same guard as ``aiguard.wrap(client)``: spans, metrics
and cost always; retries, fallbacks, budgets and checks only as the policy says (the policy
file's ``default``, if there is one). Without a retry policy the SDK keeps its own retries; the
deliberate differences of docs/drop-in.md still apply.

A call already inside a guard (a client the app wrapped itself) passes straight through, so
nothing is recorded twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import weakref
from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any

import wrapt

from aiguard import adapters
from aiguard._engine import state
from aiguard._policy import NO_RETRY, Policy, resolve
from aiguard._telemetry import report_fault
from aiguard.adapters._proxy import Patch


class _Instrumentation:
    """What instrument() did: its policy, the methods it patched, the clients it guarded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.policy: Policy | None = None
        self.patched: list[tuple[type, str, Any]] = []
        self.patched_sdks: set[str] = set()
        # SDKs not imported yet whose import will patch them (wrapt's post-import hooks).
        self.hooked: set[str] = set()
        self.guarded: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


_state = _Instrumentation()


def instrument(policy: Policy | str | None = None) -> None:
    """Guard every OpenAI, Anthropic, Gemini, Bedrock, Ollama and llama.cpp client of this process.

    ``policy`` (a :class:`Policy` or a policy file's name) sets retries and the rest; without
    one the policy file's ``default`` applies if there is one, else telemetry and cost only (the
    SDK keeps its own retries). Calling it again changes the policy. Clients the app wraps with
    :func:`aiguard.wrap` keep their own policy and are not recorded twice.

    Example::

        aiguard.instrument()          # or: opentelemetry-instrument python app.py
    """
    resolved = _policy(policy)
    with _state.lock:
        _state.policy = resolved
        _state.guarded = weakref.WeakKeyDictionary()
    # An SDK already imported is patched now; the others when (if ever) the app imports them,
    # so instrumenting costs no SDK's import time.
    for sdk in adapters.ADAPTERS:
        module = sys.modules.get(sdk)
        if module is not None:
            _on_import(module)
        elif sdk not in _state.hooked:
            _state.hooked.add(sdk)
            wrapt.register_post_import_hook(_on_import, sdk)


def _on_import(module: ModuleType) -> None:
    """Patch an SDK's methods (its adapter's ``PATCHES``) while instrumentation is on."""
    sdk = module.__name__
    with _state.lock:
        if _state.policy is None or sdk in _state.patched_sdks:
            return
        _state.patched_sdks.add(sdk)
        try:
            adapter = adapters.loaded(sdk)
        except Exception as exc:  # never break the app's import
            report_fault(f"instrumenting {sdk}", exc)
            return
        for patch in adapter.PATCHES if adapter is not None else ():
            _patch(sdk, patch)


def _patch(sdk: str, patch: Patch) -> None:
    try:
        cls = patch.find()
    except Exception as exc:  # the SDK changed shape: that SDK is left alone
        report_fault(f"instrumenting {sdk}", exc)
        return
    for method in patch.methods:
        original = cls.__dict__.get(method)
        if original is None:
            continue
        caller = _caller((*patch.path, method), patch.client_attr)
        setattr(cls, method, wrapt.FunctionWrapper(original, caller))
        _state.patched.append((cls, method, original))


def uninstrument() -> None:
    """Undo :func:`instrument`: the SDK classes get their own methods back."""
    with _state.lock:
        for cls, method, original in reversed(_state.patched):
            with contextlib.suppress(Exception):
                setattr(cls, method, original)
        _state.patched.clear()
        _state.patched_sdks.clear()
        _state.guarded = weakref.WeakKeyDictionary()
        _state.policy = None


def _policy(policy: Policy | str | None) -> Policy:
    if policy is None:
        policy = "default" if _file_has("default") else None
    if policy is None:
        return dataclasses.replace(Policy(retry=NO_RETRY), sdk_retries=True)
    built = resolve(policy)
    if not isinstance(built, Policy):
        raise TypeError(f"instrument(policy=...) takes an aiguard.Policy or a name, got {policy!r}")
    return dataclasses.replace(built, sdk_retries=built.retry.attempts <= 1)


def _file_has(name: str) -> bool:
    """Does a policy file define ``name``? (No file, or no such policy: False.)"""
    try:
        resolve(name)
    except Exception:
        return False
    return True


def _caller(path: tuple[str, ...], client_attr: str) -> Callable[..., Any]:
    def call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if state.inside_client_call() or _state.policy is None:
            return wrapped(*args, **kwargs)
        client = getattr(instance, client_attr) if client_attr else instance
        guarded = _guarded(client)
        if guarded is None:
            return wrapped(*args, **kwargs)
        # The guard of this method on the client's guarded view, given the method called (the
        # SDK's own): an app's function set over it on the instance is not called twice.
        owner = guarded
        for name in path[:-1]:
            owner = getattr(owner, name)
        guard = owner._self_tree.get(path[-1])
        if not callable(guard):
            return wrapped(*args, **kwargs)
        return guard(owner, wrapped, instance, args, kwargs)

    return call


def _guarded(client: Any) -> Any:
    """The guarded view of ``client`` under the instrumentation policy, made once per client."""
    try:
        found = _state.guarded.get(client)
        if found is None:
            adapter = adapters.for_client(client)
            policy = _state.policy
            if adapter is None or policy is None:
                return None
            found = _state.guarded[client] = adapter.wrap(client, policy, None)
        return found
    except Exception as exc:  # never break the app's call: it goes on unguarded
        report_fault("guarding an instrumented client", exc)
        return None


class AIGuardInstrumentor:
    """The ``opentelemetry-instrument`` entry point (``opentelemetry_instrumentor``: aiguard).

    Follows the contract of ``opentelemetry.instrumentation.instrumentor.BaseInstrumentor``
    without depending on it: ``instrument()``, ``uninstrument()``,
    ``instrumentation_dependencies()``.
    """

    _is_instrumented_by_opentelemetry = False

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def instrument(self, **kwargs: Any) -> None:
        instrument(kwargs.get("policy"))
        self._is_instrumented_by_opentelemetry = True

    def uninstrument(self, **kwargs: Any) -> None:
        uninstrument()
        self._is_instrumented_by_opentelemetry = False

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._is_instrumented_by_opentelemetry
