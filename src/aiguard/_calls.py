"""What a guarded call returned, and the facts of that call: ``call_info`` and ``call_ref``.

A wrapped client returns the SDK's own objects (pydantic models for openai, anthropic and
ollama, dicts for llama.cpp, aiguard's stream proxies), so the facts of the call (trace and
span ids, response id, model, cost) cannot live on them without changing what the caller gets.
They live here instead, in a bounded registry keyed by the object's identity:

- objects that support weak references (pydantic models, stream proxies, most classes) are
  held weakly: their entry goes when they are garbage-collected, and never keeps them alive;
- the others (a llama.cpp ``dict``) are held strongly in a small ring of the most recent ones
  (``STRONG_MAX``), so a reused ``id()`` can never point at another call's facts;
- immutable values (``str``, numbers, ``None``, tuples) are not registered: two calls may
  return the very same object.

Both maps are bounded (``WEAK_MAX`` / ``STRONG_MAX`` entries, oldest dropped first), so a
process that never asks keeps at most a few thousand small records.

A **call reference** (``call_ref``) is a string that carries what is needed to find the call's
trace later, in another process: ``agref1.`` and base64url JSON of the trace id, span id,
response id, model, provider and tag. It is versioned and validated when parsed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import threading
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

WEAK_MAX = 4096
STRONG_MAX = 256
REF_PREFIX = "agref"
REF_VERSION = 1
REF_MAX_CHARS = 2048
_UNREGISTERED = (str, bytes, int, float, complex, bool, tuple, frozenset, type(None))


@dataclass(slots=True)
class CallFacts:
    """What is known of one guarded call; filled in as the call ends (a stream: at its end)."""

    trace_id: int = 0
    span_id: int = 0
    response_id: str | None = None
    model: str | None = None
    provider: str | None = None
    tag: str | None = None
    cost_usd: float | None = None
    ended: bool = False


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The facts of one guarded call, from ``aiguard.call_info(response)``.

    ``trace_id`` / ``span_id`` are lowercase hex (``None`` when no tracer was recording);
    ``cost_usd`` is what the call cost (the span's ``aiguard.cost.total_usd``), ``None`` while a
    stream is still being read or when the model has no known price; ``ref`` is the
    :func:`call_ref` string to store and pass to ``aiguard.feedback`` later (``None`` when
    nothing links to the call: no tracer recording and no response id).
    """

    trace_id: str | None
    span_id: str | None
    response_id: str | None
    model: str | None
    provider: str | None
    tag: str | None
    cost_usd: float | None
    ended: bool
    ref: str | None


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.weak: OrderedDict[int, tuple[weakref.ref[Any], CallFacts]] = OrderedDict()
        self.strong: OrderedDict[int, tuple[Any, CallFacts]] = OrderedDict()
        # Keys of collected responses. The weak reference's callback may run in any thread, at
        # any allocation (the garbage collector), even while this thread holds the lock: it
        # only appends here (atomic), and the lock's holders purge.
        self.collected: deque[int] = deque()

    def remember(self, obj: Any, facts: CallFacts) -> None:
        if isinstance(obj, _UNREGISTERED):
            return
        key = id(obj)
        try:
            ref = weakref.ref(obj, functools.partial(self._forget, key))
        except TypeError:
            with self.lock:
                self.weak.pop(key, None)
                self.strong[key] = (obj, facts)
                self.strong.move_to_end(key)
                while len(self.strong) > STRONG_MAX:
                    self.strong.popitem(last=False)
            return
        with self.lock:
            self._purge()
            self.strong.pop(key, None)
            self.weak[key] = (ref, facts)
            self.weak.move_to_end(key)
            while len(self.weak) > WEAK_MAX:
                self.weak.popitem(last=False)

    def _forget(self, key: int, _: object = None) -> None:
        self.collected.append(key)

    def _purge(self) -> None:
        while self.collected:
            key = self.collected.popleft()
            entry = self.weak.get(key)
            if entry is not None and entry[0]() is None:  # not a new object at the same id
                del self.weak[key]

    def facts(self, obj: Any) -> CallFacts | None:
        key = id(obj)
        with self.lock:
            self._purge()
            weak = self.weak.get(key)
            if weak is not None and weak[0]() is obj:
                return weak[1]
            strong = self.strong.get(key)
            if strong is not None and strong[0] is obj:
                return strong[1]
        return None

    def clear(self) -> None:
        with self.lock:
            self.weak.clear()
            self.strong.clear()


registry = _Registry()


def remember(obj: Any, facts: CallFacts) -> None:
    """Tie ``obj`` (what a guarded call returned) to its call's facts; never raises."""
    with contextlib.suppress(Exception):  # an exotic object: it simply has no facts
        registry.remember(obj, facts)


def facts_of(obj: Any) -> CallFacts | None:
    return registry.facts(obj)


def call_info(response: Any) -> CallInfo | None:
    """The cost, trace id, span id, response id, model and call reference of a guarded call.

    ``response`` is what a wrapped client (or a guarded function, for objects that are not
    plain values) returned. Returns ``None`` for an object no guarded call returned, or one
    returned more than a few thousand calls ago.

    Example::

        reply = client.chat.completions.create(model="gpt-4o", messages=messages)
        info = aiguard.call_info(reply)
        print(info.cost_usd, info.trace_id)
    """
    facts = facts_of(response)
    if facts is None:
        return None
    return CallInfo(
        trace_id=f"{facts.trace_id:032x}" if facts.trace_id else None,
        span_id=f"{facts.span_id:016x}" if facts.span_id else None,
        response_id=facts.response_id,
        model=facts.model,
        provider=facts.provider,
        tag=facts.tag,
        cost_usd=facts.cost_usd,
        ended=facts.ended,
        ref=encode(facts) if linkable(facts) else None,
    )


def linkable(facts: CallFacts) -> bool:
    return bool(facts.trace_id and facts.span_id) or bool(facts.response_id)


def call_ref(response: Any) -> str:
    """A string naming the call that returned ``response``, to store and use later.

    Pass it to ``aiguard.feedback`` (in this process or another, minutes or days later): it
    carries the trace and span ids, the response id and the model, so the feedback lands on
    the call's trace. It holds no prompt or answer text. Raises ``ValueError`` for an object
    no guarded call returned.

    Example::

        ref = aiguard.call_ref(reply)       # store it with the answer shown to the user
        aiguard.feedback(ref, "thumbs", score=1.0)
    """
    facts = facts_of(response)
    if facts is None:
        raise ValueError(
            f"aiguard.call_ref(): this {type(response).__name__} was not returned by a guarded "
            f"call (or so many calls ago that it was forgotten); pass the object a wrapped "
            f"client returned, as it was returned"
        )
    if not linkable(facts):
        raise ValueError(
            "aiguard.call_ref(): nothing links to this call: no tracer was recording it and its "
            "response has no id; configure telemetry (aiguard.configure) to give calls a trace"
        )
    return encode(facts)


def encode(facts: CallFacts) -> str:
    payload: dict[str, str] = {}
    if facts.trace_id and facts.span_id:
        payload["t"] = f"{facts.trace_id:032x}"
        payload["s"] = f"{facts.span_id:016x}"
    for key, value in (
        ("r", facts.response_id),
        ("m", facts.model),
        ("p", facts.provider),
        ("g", facts.tag),
    ):
        if value:
            payload[key] = value
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return f"{REF_PREFIX}{REF_VERSION}.{base64.urlsafe_b64encode(body).decode().rstrip('=')}"


def parse(ref: str) -> CallFacts:
    """The facts a call reference carries; ``ValueError`` saying what is wrong with a bad one."""
    if not isinstance(ref, str):
        raise TypeError(f"a call reference is a string from aiguard.call_ref(), got {ref!r}")
    text = ref.strip()
    head, dot, body = text.partition(".")
    if not head.startswith(REF_PREFIX) or not dot or len(text) > REF_MAX_CHARS:
        raise ValueError(
            f"not an aiguard call reference (they look like '{REF_PREFIX}{REF_VERSION}.eyJ...'): "
            f"{text[:40]!r}"
        )
    version = head[len(REF_PREFIX) :]
    if version != str(REF_VERSION):
        raise ValueError(
            f"call reference version {version!r} is not supported by this aiguard "
            f"(it reads version {REF_VERSION}); upgrade aiguard where the feedback is recorded"
        )
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError(
            "the call reference is damaged (cut or changed): cannot decode it"
        ) from None
    return _facts(payload)


def _facts(payload: Any) -> CallFacts:
    if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
        raise ValueError("the call reference is damaged: its content is not what aiguard writes")
    trace_id = _hex(payload.get("t"), 32, "trace id")
    span_id = _hex(payload.get("s"), 16, "span id")
    if bool(trace_id) != bool(span_id):
        raise ValueError("the call reference is damaged: a trace id needs its span id")
    response_id = payload.get("r")
    if not trace_id and not response_id:
        raise ValueError("the call reference names no trace and no response: nothing to link to")
    return CallFacts(
        trace_id=trace_id,
        span_id=span_id,
        response_id=response_id,
        model=payload.get("m"),
        provider=payload.get("p"),
        tag=payload.get("g"),
        ended=True,
    )


def _hex(value: str | None, digits: int, what: str) -> int:
    if value is None:
        return 0
    try:
        number = int(value, 16)
    except ValueError:
        number = 0
    if len(value) != digits or number == 0:
        raise ValueError(f"the call reference is damaged: its {what} is not {digits} hex digits")
    return number
