"""``aiguard.wrap``: a drop-in client whose model-calling methods run the guarded-call engine.

The adapter for the client's SDK (``aiguard/adapters/``) builds the guarded view; everything
else on the client passes through to the original object untouched.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiguard import adapters
from aiguard._breaker import Breaker
from aiguard._budget import Budget
from aiguard._policy import Policy, Retry, Target, resolve
from aiguard._quality_spec import Review
from aiguard._ratelimit import RateLimit
from aiguard.adapters._proxy import GuardedProxy, unwrap

C = TypeVar("C")


def wrap(
    client: C,
    *,
    policy: Policy | str | None = None,
    retry: Retry | None = ...,  # type: ignore[assignment]
    fallback: list[str | Target] | str | Target | None = ...,  # type: ignore[assignment]
    timeout: float | None = ...,  # type: ignore[assignment]
    breaker: Breaker | None = ...,  # type: ignore[assignment]
    fallback_on: Any = ...,
    budget: Budget | None = ...,  # type: ignore[assignment]
    tag: str | None = ...,  # type: ignore[assignment]
    stream_usage: bool = ...,  # type: ignore[assignment]
    raise_on_truncation: bool = ...,  # type: ignore[assignment]
    checks: Any = ...,
    output: Any = ...,
    reasks: int | None = ...,  # type: ignore[assignment]
    capture: str | bool | None = ...,  # type: ignore[assignment]
    evaluate: Any = ...,
    sample: float = ...,  # type: ignore[assignment]
    review: Review | None = ...,  # type: ignore[assignment]
    rate_limit: RateLimit | None = ...,  # type: ignore[assignment]
    provider: str | None = None,
) -> C:
    """Return ``client`` guarded: same type, same API, same results, with policies and telemetry.

    Without ``retry`` the client's own setting applies (``max_retries``: the SDKs' default of 2
    retries is 3 attempts, ``max_retries=0`` one), with aiguard's backoff; ``retry=None`` is a
    single attempt. Either way aiguard does the retrying: the SDK's own retries are off for
    guarded calls. The client is not copied: changing it later (``api_key``, ``base_url``, a
    mock on one of its methods) applies to the wrapped client too. Wrapping a wrapped client
    changes its policy: the new keywords override the ones it had (see docs/drop-in.md).
    ``provider`` overrides the ``gen_ai.provider.name`` aiguard detects from the base URL.
    ``budget`` refuses calls whose worst-case cost does not fit in it; ``tag`` attributes the
    spend (a feature or tenant name). Streams get usage even when the request did not ask for
    it (``stream_usage=False`` turns that off for servers that reject ``stream_options``); a
    stream cut without a finish reason is recorded as an error, and raises
    :class:`aiguard.StreamTruncated` with ``raise_on_truncation=True``. ``checks`` (see
    :mod:`aiguard.checks`) run on the request before anything is sent or reserved. ``output``
    (a pydantic model or a validating callable) validates each answer's text; a wrong answer is
    re-asked with the errors, up to ``reasks`` times (default: the retry attempts less one).
    ``capture`` sets content capture for this client's calls (a mode such as ``"SPAN_ONLY"``),
    over the process's setting. ``evaluate`` (evaluators, see :mod:`aiguard.evaluators`) judge
    a ``sample`` fraction of answers off the call path; ``review`` (an :class:`aiguard.Review`)
    sends calls to a human review queue (see docs/quality.md).
    over the process's setting. ``rate_limit`` (an :class:`aiguard.RateLimit`) keeps each
    target under its requests and tokens per minute, across processes with a store.
    ``policy`` is an :class:`aiguard.Policy` or the name of one in the policy file
    (``policy="default"`` reads ``[policies.default]`` of ``aiguard.toml``); keywords override it.

    Example::

        client = aiguard.wrap(OpenAI(), retry=aiguard.Retry(attempts=4), fallback=["gpt-4o-mini"])
        reply = client.chat.completions.create(model="gpt-4o", messages=[...])
    """
    if isinstance(client, GuardedProxy):
        # Wrapping a wrapped client adjusts its policy: one guard, never two stacked.
        if policy is not None:
            raise TypeError(
                "aiguard.wrap(): this client is already wrapped; pass keywords to change its "
                "policy (they override the ones it has), or wrap the original client "
                "(client.__wrapped__) to start from a new policy="
            )
        policy = client._self_policy
        if provider is None:
            provider = client._self_provider
    merged = Policy.build(
        resolve(policy),
        retry=retry,
        fallback=fallback,
        timeout=timeout,
        breaker=breaker,
        fallback_on=fallback_on,
        budget=budget,
        tag=tag,
        stream_usage=stream_usage,
        raise_on_truncation=raise_on_truncation,
        checks=checks,
        output=output,
        reasks=reasks,
        capture=capture,
        evaluate=evaluate,
        sample=sample,
        review=review,
        rate_limit=rate_limit,
    )
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise TypeError(f"provider= must be a non-empty string, got {provider!r}")
    target = unwrap(client)
    adapter = adapters.for_client(target)
    if adapter is not None:
        wrapped: C = adapter.wrap(target, merged, provider)
        return wrapped
    raise TypeError(
        f"aiguard.wrap() cannot wrap {type(client).__module__}.{type(client).__qualname__}. "
        f"Supported clients: {adapters.supported()}. To guard any other function, decorate it "
        "with @aiguard.guard()."
    )
