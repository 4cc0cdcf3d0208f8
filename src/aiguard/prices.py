"""What model calls cost: ``genai-prices`` data, user overrides, and compute-time prices.

Prices come from the ``genai-prices`` package (offline: its data ships in the wheel). The lookup
for a ``(provider, model)`` pair happens once and is cached; pricing a call afterwards is a few
``Decimal`` multiplications. Where the library's pricing is more than per-token rates (tiered
prices, per-request fees), aiguard asks the library itself for every call.

Example::

    import aiguard

    aiguard.prices.register("ft:gpt-4o-mini:acme", input_per_mtok=0.30, output_per_mtok=1.20)
    aiguard.prices.register_local("smollm2", usd_per_hour=0.80)   # a GPU's hourly cost
    aiguard.prices.cost("gpt-4o", aiguard.Usage(input_tokens=1000, output_tokens=500))
    # Decimal('0.0075')
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from aiguard._types import Usage

log = logging.getLogger("aiguard")

__all__ = ["Price", "cost", "lookup", "register", "register_local", "unregister"]

_MILLION = Decimal(1_000_000)
_HOUR = Decimal(3600)
_ZERO = Decimal(0)

# aiguard's gen_ai.provider.name -> genai-prices provider id.
_PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure.ai.openai": "azure",
    "groq": "groq",
    "deepseek": "deepseek",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "cohere": "cohere",
}
# Self-hosted servers: their model names say nothing about a price list. Priced only when the
# user registers a price (per token or per hour).
LOCAL_PROVIDERS = frozenset({"llama_cpp", "ollama", "lm_studio", "vllm"})

# Token counts that keep the library's answer and ours comparable when checking the fast path.
_PROBES = (
    Usage(input_tokens=1_234_567, output_tokens=76_543, cache_read_tokens=4_321),
    Usage(input_tokens=987, output_tokens=13, cache_read_tokens=0, cache_write_tokens=101),
)


@dataclass(frozen=True, slots=True)
class Price:
    """The price of one model: USD per token (input, output, cache read, cache write) or per hour.

    ``source`` is ``"genai-prices"``, ``"registered"`` or ``"compute_time"``.
    """

    model: str
    input: Decimal = _ZERO
    output: Decimal = _ZERO
    cache_read: Decimal = _ZERO
    cache_write: Decimal = _ZERO
    per_hour: Decimal | None = None
    source: str = "registered"
    exact: Any = None  # a genai-prices ModelPrice to ask for every call (fees, new kinds)
    # Cliff tiers: (threshold, price) in ascending order; past a threshold of input tokens,
    # every token of the call costs that tier's rates.
    tiers: tuple[tuple[int, Price], ...] = ()

    @property
    def per_token(self) -> bool:
        return self.per_hour is None

    def cost(self, usage: Usage | None, seconds: float | None = None) -> Decimal | None:
        """The cost of one call, or None when it cannot be known (no usage reported)."""
        if self.per_hour is not None:
            if seconds is None or not math.isfinite(seconds) or seconds < 0:
                return None
            return self.per_hour * Decimal(repr(seconds)) / _HOUR
        if usage is None or (usage.input_tokens is None and usage.output_tokens is None):
            return None
        if self.exact is not None:
            return _library_cost(self.exact, usage)
        return self._tier(_count(usage.input_tokens))._rates(
            _count(usage.input_tokens),
            _count(usage.output_tokens),
            _count(usage.cache_read_tokens),
            _count(usage.cache_write_tokens),
        )

    def worst_case(self, input_tokens: int, output_tokens: int) -> Decimal:
        """The most a call with at most these token counts can cost (no cache discount)."""
        if self.per_hour is not None:
            return _ZERO
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        if self.exact is not None:
            return _library_cost(self.exact, usage)
        tier = self._tier(input_tokens)
        # A cache write can cost more than plain input (Anthropic: 1.25x); assume the dearer.
        dearest = max(tier.input, tier.cache_write)
        return dearest * input_tokens + tier.output * output_tokens

    def _tier(self, input_tokens: int) -> Price:
        chosen = self
        for start, price in self.tiers:
            if input_tokens > start:
                chosen = price
        return chosen

    def _rates(self, inputs: int, outputs: int, cache_read: int, cache_write: int) -> Decimal:
        cache_read = min(cache_read, inputs)
        cache_write = min(cache_write, inputs - cache_read)
        plain = inputs - cache_read - cache_write
        return (
            self.input * plain
            + self.cache_read * cache_read
            + self.cache_write * cache_write
            + self.output * outputs
        )


def _count(value: int | None) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _library_usage(usage: Usage) -> Any:
    import genai_prices

    fields = {
        "input_tokens": _count(usage.input_tokens),
        "output_tokens": _count(usage.output_tokens),
        "cache_read_tokens": _count(usage.cache_read_tokens),
        "cache_write_tokens": _count(usage.cache_write_tokens),
    }
    return genai_prices.Usage(**fields)


def _library_cost(model_price: Any, usage: Usage) -> Decimal:
    total = model_price.calc_price(_library_usage(usage))["total_price"]
    return total if isinstance(total, Decimal) else Decimal(str(total))


# -- the registry and the lookup cache -----------------------------------------------------------

_lock = threading.Lock()
_registered: dict[tuple[str | None, str], Price] = {}
_cache: dict[tuple[str | None, str], Price | None] = {}
_unknown_logged: set[tuple[str | None, str]] = set()


def _rate(name: str, value: object, per: Decimal) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise TypeError(f"{name} must be a number of USD, got {value!r}")
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"{name} must be a number of USD, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a finite, non-negative number of USD, got {value!r}")
    return amount / per


def _key(model: object, provider: object) -> tuple[str | None, str]:
    if not isinstance(model, str) or not model.strip():
        raise TypeError(f"model must be a non-empty string, got {model!r}")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise TypeError(f"provider= must be a non-empty string or None, got {provider!r}")
    return provider, model


def register(
    model: str,
    *,
    input_per_mtok: float | Decimal | str,
    output_per_mtok: float | Decimal | str,
    cached_input_per_mtok: float | Decimal | str | None = None,
    cache_write_per_mtok: float | Decimal | str | None = None,
    provider: str | None = None,
) -> Price:
    """Set the price of ``model`` in USD per million tokens, over any price genai-prices knows.

    For fine-tunes, negotiated rates and self-hosted models. ``provider`` (a
    ``gen_ai.provider.name`` such as ``"openai"`` or ``"ollama"``) limits the price to that
    provider; without it the price applies whichever provider serves the model. Cached input
    defaults to the input rate.

    Example::

        aiguard.prices.register("ft:gpt-4o-mini:acme", input_per_mtok=0.3, output_per_mtok=1.2)
    """
    key = _key(model, provider)
    inputs = _rate("input_per_mtok", input_per_mtok, _MILLION)
    price = Price(
        model=model,
        input=inputs,
        output=_rate("output_per_mtok", output_per_mtok, _MILLION),
        cache_read=(
            inputs
            if cached_input_per_mtok is None
            else _rate("cached_input_per_mtok", cached_input_per_mtok, _MILLION)
        ),
        cache_write=(
            inputs
            if cache_write_per_mtok is None
            else _rate("cache_write_per_mtok", cache_write_per_mtok, _MILLION)
        ),
        source="registered",
    )
    _store(key, price)
    return price


def register_local(
    model: str, *, usd_per_hour: float | Decimal | str, provider: str | None = None
) -> Price:
    """Price ``model`` by compute time: each call costs its duration at ``usd_per_hour``.

    For models on your own hardware (a GPU's hourly cost). Spans mark such costs with
    ``aiguard.cost.basis = "compute_time"``. A budget cannot know a compute-time call's cost in
    advance: it reserves nothing for it and settles the real cost afterwards.

    Example::

        aiguard.prices.register_local("smollm2", usd_per_hour=0.80)
    """
    key = _key(model, provider)
    price = Price(
        model=model,
        per_hour=_rate("usd_per_hour", usd_per_hour, Decimal(1)),
        source="compute_time",
    )
    _store(key, price)
    return price


def unregister(model: str, *, provider: str | None = None) -> None:
    """Remove a price set with ``register`` or ``register_local`` (no error if there is none)."""
    key = _key(model, provider)
    with _lock:
        _registered.pop(key, None)
        _cache.clear()


def _store(key: tuple[str | None, str], price: Price) -> None:
    with _lock:
        _registered[key] = price
        _cache.clear()


def lookup(provider: str | None, model: str) -> Price | None:
    """The price of ``model`` served by ``provider`` (a ``gen_ai.provider.name``), or None.

    With no provider (or one genai-prices does not know), the provider is guessed from the name.

    Registered prices win; then genai-prices, where model names with date suffixes resolve.
    An unknown model is logged once at debug level and gives None: never an error.
    """
    key = (provider, model)
    try:
        return _cache[key]
    except KeyError:
        pass
    price = _registered.get(key) or _registered.get((None, model))
    if price is None and provider not in LOCAL_PROVIDERS:
        price = _from_library(provider, model)
    with _lock:
        if len(_cache) > 4096:  # bounded: model names come from callers and servers
            _cache.clear()
        _cache[key] = price
    return price


def model_info(provider: str | None, model: str) -> Any:
    """genai-prices' record of ``model`` served by ``provider``; raises LookupError if unknown.

    A provider genai-prices does not know (an OpenAI-compatible proxy) is guessed from the
    model name.
    """
    import genai_prices

    snapshot = genai_prices.data_snapshot.get_snapshot()
    provider_id = _PROVIDER_IDS.get(provider, provider) if provider is not None else None
    try:
        return snapshot.find_provider_model(model, None, provider_id, None)[1]
    except LookupError:
        if provider_id is None or provider in _PROVIDER_IDS:
            raise
        return snapshot.find_provider_model(model, None, None, None)[1]


def _from_library(provider: str | None, model: str) -> Price | None:
    try:
        model_price = model_info(provider, model).get_prices(datetime.datetime.now(datetime.UTC))
    except LookupError:
        _log_unknown(provider, model)
        return None
    except Exception as exc:  # the price data or the library changed shape
        from aiguard._telemetry import report_fault

        report_fault("looking up a model price", exc)
        return None
    return _compile(model, model_price)


def _compile(model: str, model_price: Any) -> Price:
    """Per-token rates when they reproduce the library's answer, else ask the library each time.

    A tiered price (a "cliff": past a threshold of input tokens every token costs the tier's rate)
    becomes one flat price per tier. The result is checked against the library on both sides of
    every threshold; any difference (a fee per request, a new kind of price) keeps the library.
    """
    from genai_prices.types import TieredPrices

    fields = ("input", "output", "cache_read", "cache_write")
    raw = {name: getattr(model_price, f"{name}_mtok", None) for name in fields}
    starts = sorted(
        {
            tier.start
            for value in raw.values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        }
    )

    def flat(above: int | None) -> Price:
        rates: dict[str, Decimal | None] = {}
        for name, value in raw.items():
            if isinstance(value, TieredPrices):
                rate = value.base
                for tier in value.tiers:
                    if above is not None and above >= tier.start:
                        rate = tier.price
                value = rate
            rates[name] = value / _MILLION if isinstance(value, Decimal) else None
        inputs = rates["input"] or _ZERO
        return Price(
            model=model,
            input=inputs,
            output=rates["output"] or _ZERO,
            cache_read=rates["cache_read"] if rates["cache_read"] is not None else inputs,
            cache_write=rates["cache_write"] if rates["cache_write"] is not None else inputs,
            source="genai-prices",
        )

    price = flat(None)
    if starts:
        price = replace(price, tiers=tuple((start, flat(start)) for start in starts))
    probes = list(_PROBES)
    for start in starts:
        for inputs in (start - 1, start, start + 1):
            probes.append(Usage(input_tokens=inputs, output_tokens=1_001, cache_read_tokens=7))
    for usage in probes:
        if price.cost(usage) != _library_cost(model_price, usage):
            return Price(model=model, source="genai-prices", exact=model_price)
    return price


def _log_unknown(provider: str | None, model: str) -> None:
    key = (provider, model)
    if key in _unknown_logged:
        return
    _unknown_logged.add(key)
    log.debug(
        "aiguard: no price known for model %r (provider %r); its calls carry no cost. "
        "Set one with aiguard.prices.register().",
        model,
        provider,
    )


def cost(
    model: str,
    usage: Usage,
    *,
    provider: str | None = None,
    seconds: float | None = None,
) -> Decimal | None:
    """The cost in USD of one call of ``model`` with ``usage``, or None if the price is unknown.

    Example::

        aiguard.prices.cost("gpt-4o", aiguard.Usage(input_tokens=1000, output_tokens=500))
    """
    if not isinstance(usage, Usage):
        raise TypeError(f"usage must be an aiguard.Usage, got {type(usage).__name__}")
    price = lookup(provider, _key(model, None)[1])
    return None if price is None else price.cost(usage, seconds)
