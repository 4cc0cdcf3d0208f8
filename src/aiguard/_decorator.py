"""``@aiguard.guard``: the guarded-call core around any function that calls a model.

The function is the unit that is retried (on transient provider errors) and re-called with
``model=`` set to the next fallback. Its arguments are validated against its type hints first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal, ParamSpec, TypeVar, overload

import pydantic
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._breaker import Breaker
from aiguard._budget import Budget
from aiguard._classify import classify
from aiguard._engine.call import GuardedCall
from aiguard._engine.contract import Endpoint, Route
from aiguard._engine.driver import (
    EMPTY,
    attempts,
    begin,
    drive_async,
    drive_sync,
    run_async,
    run_sync,
)
from aiguard._engine.state import current_deadline
from aiguard._errors import CheckFailed, DeadlineExceeded
from aiguard._messages import Message, Part
from aiguard._policy import Policy, Retry, Target, resolve
from aiguard._quality_spec import Review
from aiguard._ratelimit import RateLimit
from aiguard._telemetry import Attrs
from aiguard._types import Usage

P = ParamSpec("P")
R = TypeVar("R")


class _FunctionRoute(Route):
    """The decorator's view for the core: no inference spans of its own."""

    span_kind = SpanKind.INTERNAL
    priced = False
    returns_output = True  # a validated return value replaces the raw one

    def __init__(self, name: str) -> None:
        self.operation = name

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        return 0, 0

    def stream(self, request: dict[str, Any], include_usage: bool) -> None:
        return None  # a generator function is guarded up to its first item instead

    def messages(self, request: dict[str, Any]) -> list[Message]:
        """What checks read: the function's string arguments, as one user message."""
        parts = [Part("text", value) for value in _strings(request.values())]
        return [Message("user", parts)]

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        return {}

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        return {}, None

    classify = staticmethod(classify)


def _strings(values: Any) -> list[str]:
    found: list[str] = []
    for value in values:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(_strings(value))
        elif isinstance(value, dict):
            found.extend(_strings(value.values()))
    return found


class _Validator:
    """Validates bound arguments against the function's type hints with pydantic.

    Built on first use so forward references resolve; parameters whose type pydantic cannot
    handle are left unchecked.
    """

    def __init__(self, fn: Callable[..., Any], signature: inspect.Signature) -> None:
        self.fn = fn
        self.signature = signature
        self.adapters: dict[str, pydantic.TypeAdapter[Any]] | None = None

    def _build(self) -> dict[str, pydantic.TypeAdapter[Any]]:
        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception:
            hints = {}
        adapters: dict[str, pydantic.TypeAdapter[Any]] = {}
        for name, param in self.signature.parameters.items():
            hint = hints.get(name)
            if hint is None or hint is Any:
                continue
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                hint = tuple[hint, ...]  # type: ignore[valid-type]
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                hint = dict[str, hint]  # type: ignore[valid-type]
            adapter = _adapter(hint)
            if adapter is not None:
                adapters[name] = adapter
        return adapters

    def validate(self, arguments: dict[str, Any]) -> None:
        adapters = self.adapters
        if adapters is None:
            adapters = self.adapters = self._build()
        for name, value in arguments.items():
            adapter = adapters.get(name)
            if adapter is None:
                continue
            try:
                arguments[name] = adapter.validate_python(value)
            except pydantic.ValidationError as exc:
                raise CheckFailed(
                    f"argument validation of {self.fn.__qualname__}()",
                    _describe(name, exc),
                ) from None


def _adapter(hint: Any) -> pydantic.TypeAdapter[Any] | None:
    try:
        return pydantic.TypeAdapter(hint)
    except Exception:
        pass
    try:
        return pydantic.TypeAdapter(hint, config=pydantic.ConfigDict(arbitrary_types_allowed=True))
    except Exception:
        return None


def _describe(name: str, error: pydantic.ValidationError) -> str:
    # Locations and messages only: the offending value is never repeated.
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in (name, *item["loc"]))
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)


@overload
def guard(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def guard(
    *,
    policy: Policy | str | None = None,
    retry: Retry | None = ...,
    fallback: list[str | Target] | str | Target | None = ...,
    timeout: float | None = ...,
    breaker: Breaker | None = ...,
    fallback_on: Any = ...,
    budget: Budget | None = ...,
    tag: str | None = ...,
    checks: Any = ...,
    output: Any = ...,
    reasks: int | None = ...,
    evaluate: Any = ...,
    sample: float = ...,
    review: Review | None = ...,
    rate_limit: RateLimit | None = ...,
    name: str | None = None,
    validate_args: bool = True,
    kind: Literal["tool", "agent"] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def guard(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    policy: Policy | str | None = None,
    retry: Any = ...,
    fallback: Any = ...,
    timeout: Any = ...,
    breaker: Any = ...,
    fallback_on: Any = ...,
    budget: Any = ...,
    tag: Any = ...,
    checks: Any = ...,
    output: Any = ...,
    reasks: Any = ...,
    evaluate: Any = ...,
    sample: Any = ...,
    review: Any = ...,
    rate_limit: Any = ...,
    name: str | None = None,
    validate_args: bool = True,
    kind: Literal["tool", "agent"] | None = None,
) -> Any:
    """Guard a function that calls a model: span, argument validation, retries, fallbacks.

    Works on sync and async functions, generators and async generators (those are retried only
    before their first item). Fallbacks re-call the function with ``model=`` set to the next
    model, so the function needs a ``model`` parameter to use them. ``budget`` and ``tag``
    apply to every guarded call the function makes. ``checks`` run on the function's string
    arguments before it is called (a redacting check replaces them). ``output`` validates the
    return value (a JSON string or dict becomes the model, which is returned); when it is wrong
    the function is called again, up to ``reasks`` times. ``policy`` is an :class:`aiguard.Policy`
    or the name of one in the policy file (``aiguard.toml``); keywords override it.
    ``evaluate``, ``sample`` and ``review`` evaluate the return value off the call path, as on
    :func:`aiguard.wrap` (see docs/quality.md).

    ``kind="tool"`` declares the function a tool a model calls: its span is the conventions'
    ``execute_tool {name}`` with ``gen_ai.tool.name``; ``kind="agent"`` an in-process agent:
    ``invoke_agent {name}`` with ``gen_ai.agent.name``. Otherwise the span is the function's
    own, which backends do not count as a GenAI operation.

    Example::

        @aiguard.guard(retry=aiguard.Retry(attempts=3), fallback=["gpt-4o-mini"])
        def answer(question: str, model: str = "gpt-4o") -> str:
            reply = client.chat.completions.create(model=model, messages=[...])
            return reply.choices[0].message.content
    """
    merged = Policy.build(
        resolve(policy),
        retry=retry,
        fallback=fallback,
        timeout=timeout,
        breaker=breaker,
        fallback_on=fallback_on,
        budget=budget,
        tag=tag,
        checks=checks,
        output=output,
        reasks=reasks,
        evaluate=evaluate,
        sample=sample,
        review=review,
        rate_limit=rate_limit,
    )
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"guard(name=...) must be a non-empty string, got {name!r}")
    if not isinstance(validate_args, bool):
        raise TypeError("guard(validate_args=...) must be True or False")
    if kind not in (None, "tool", "agent"):
        raise ValueError(f"guard(kind=...) must be 'tool', 'agent' or None, got {kind!r}")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise TypeError(f"@aiguard.guard decorates functions, got {type(func).__name__}")
        return _Guarded(func, merged, name, validate_args, kind).build()

    if fn is not None:
        return decorate(fn)
    return decorate


class _Guarded:
    def __init__(
        self,
        fn: Callable[..., Any],
        policy: Policy,
        name: str | None,
        validate_args: bool,
        kind: str | None = None,
    ) -> None:
        self.fn = fn
        self.policy = policy
        self.signature = inspect.signature(fn)
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.route = _FunctionRoute(self.name)
        self.validator = _Validator(fn, self.signature) if validate_args else None
        self.has_model = "model" in self.signature.parameters
        if policy.fallback and not self.has_model:
            raise TypeError(
                f"@aiguard.guard(fallback=...) on {self.name}() needs a 'model' parameter: a "
                "fallback re-calls the function with model= set to the next model"
            )
        if any(t.client is not None for t in policy.fallback):
            raise TypeError(
                "@aiguard.guard(fallback=...) takes model names; Target(client=...) is for "
                "aiguard.wrap(), since the decorated function chooses its own client"
            )
        self.invoke = self._invoke_async if inspect.iscoroutinefunction(fn) else self._invoke
        self.fallbacks = [self._endpoint(t.model, t.retry) for t in policy.fallback]
        self.endpoints: dict[str, Endpoint] = {}
        self.attrs: Attrs = {sc.GUARD_FUNCTION: self.name}
        self.span_name = self.name
        # A tool or agent is known by its short name (the one a model calls it by).
        short = name or getattr(fn, "__name__", None) or self.name
        if kind == "tool":
            self.span_name = f"execute_tool {short}"
            self.attrs.update(
                {sc.OPERATION: "execute_tool", sc.TOOL_NAME: short, sc.TOOL_TYPE: "function"}
            )
        elif kind == "agent":
            self.span_name = f"invoke_agent {short}"
            self.attrs.update({sc.OPERATION: "invoke_agent", sc.AGENT_NAME: short})

    def _endpoint(self, model: str, retry: Retry | None) -> Endpoint:
        return Endpoint(
            invoke=self.invoke,
            model=model,
            provider="",
            server={},
            retry=retry or self.policy.retry,
            breaker_key=(id(self.fn), model),
            timeout_param=None,
        )

    def _invoke(self, request: dict[str, Any]) -> Any:
        bound = inspect.BoundArguments(self.signature, request)
        return self.fn(*bound.args, **bound.kwargs)

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> GuardedCall:
        bound = self.signature.bind(*args, **kwargs)
        if self.validator is not None:
            self.validator.validate(bound.arguments)
        model = ""
        if self.has_model:
            bound.apply_defaults()
            given = bound.arguments.get("model")
            model = given if isinstance(given, str) else ""
        primary = self.endpoints.get(model)
        if primary is None:
            primary = self.endpoints[model] = self._endpoint(model, None)
        return begin(
            self.route,
            self.policy,
            [primary, *self.fallbacks],
            dict(bound.arguments),
            function=(self.span_name, self.attrs),
        )

    def build(self) -> Callable[..., Any]:
        fn = self.fn
        if inspect.isasyncgenfunction(fn):
            wrapper: Callable[..., Any] = self._async_generator()
        elif inspect.isgeneratorfunction(fn):
            wrapper = self._generator()
        elif inspect.iscoroutinefunction(fn):
            wrapper = self._coroutine()
        else:
            wrapper = self._function()
        functools.update_wrapper(wrapper, fn)
        wrapper.__aiguard_policy__ = self.policy  # type: ignore[attr-defined]
        return wrapper

    def _function(self) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return run_sync(self.begin(args, kwargs))

        return guarded

    def _invoke_async(self, request: dict[str, Any]) -> Any:
        bound = inspect.BoundArguments(self.signature, request)
        coroutine = self.fn(*bound.args, **bound.kwargs)
        deadline = current_deadline()
        if deadline is None:
            return coroutine
        return _within(coroutine, deadline, self.policy.timeout)

    def _coroutine(self) -> Callable[..., Any]:
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            return await run_async(self.begin(args, kwargs))

        return guarded

    def _generator(self) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Iterator[Any]:
            run = self.begin(args, kwargs)
            error: BaseException | None = None
            gen: Any = None
            try:
                started = drive_sync(attempts(run, items=True))
                gen = started.result
                if started.first is EMPTY:
                    return
                yield started.first
                while True:
                    token = _enter(run)
                    try:
                        item = next(gen)
                    except StopIteration:
                        return
                    finally:
                        _leave(token)
                    yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                if gen is not None:
                    gen.close()
                run.finish(error)

        return guarded

    def _async_generator(self) -> Callable[..., Any]:
        async def guarded(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            run = self.begin(args, kwargs)
            error: BaseException | None = None
            gen: Any = None
            try:
                started = await drive_async(attempts(run, items=True))
                gen = started.result
                if started.first is EMPTY:
                    return
                yield started.first
                while True:
                    token = _enter(run)
                    try:
                        item = await gen.__anext__()
                    except StopAsyncIteration:
                        return
                    finally:
                        _leave(token)
                    yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                if gen is not None:
                    await gen.aclose()
                run.finish(error)

        return guarded


async def _within(coroutine: Any, deadline: float, timeout: float | None) -> Any:
    """Await ``coroutine``, cancelling it when the guarded call's deadline passes."""
    try:
        async with asyncio.timeout_at(_loop_time(deadline)) as scope:
            return await coroutine
    except TimeoutError:
        if scope.expired():
            raise DeadlineExceeded(timeout or 0.0, 0) from None
        raise


def _loop_time(deadline: float) -> float:
    # Deadlines are on time.monotonic(); the loop has its own clock.
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _enter(run: GuardedCall) -> tuple[object, Any]:
    # Between items the generator body runs as part of the guarded call: its span is current
    # and nested guarded calls see its deadline, budgets and tag.
    token: object = None
    with contextlib.suppress(Exception):
        token = otel_context.attach(trace.set_span_in_context(run.span))
    return token, run.enter()


def _leave(tokens: tuple[object, Any]) -> None:
    token, scope = tokens
    GuardedCall.leave(scope)
    if token is not None:
        with contextlib.suppress(Exception):
            otel_context.detach(token)  # type: ignore[arg-type]
