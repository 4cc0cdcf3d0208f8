"""Cost per call from reported usage: exact prices, overrides, compute time, totals, faults."""

from __future__ import annotations

import logging
import math
import time
from decimal import Decimal

import genai_prices
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import API_KEY, MESSAGES

import aiguard
from aiguard import prices


@pytest.fixture(autouse=True)
def _clean_prices():
    yield
    for model in ("acme-ft", "local-llama", "gpt-4o"):
        prices.unregister(model)
        prices.unregister(model, provider="ollama")


def _cost(span) -> Decimal:
    return Decimal(repr(span.attributes["aiguard.cost.usd"]))


def test_cost_of_a_plain_call_is_exact(make_client, server, telemetry):
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    make_client(provider="openai").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    attempt = telemetry.span("chat gpt-4o")
    assert attempt.attributes["aiguard.cost.usd"] == pytest.approx(0.0075, abs=1e-12)
    assert attempt.attributes["aiguard.cost.basis"] == "tokens"
    guard = telemetry.span("chat gpt-4o")
    assert guard.attributes["aiguard.cost.total_usd"] == pytest.approx(0.0075, abs=1e-12)


def test_cached_input_is_billed_at_the_cached_rate(make_client, server, telemetry):
    server.reply("gpt-4o", prompt_tokens=1000, cached_tokens=800, completion_tokens=500)
    make_client(provider="openai").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    # 200 at $2.50/M + 800 at $1.25/M + 500 at $10/M
    assert _cost(telemetry.span("chat gpt-4o")) == Decimal("0.0065")


def test_reasoning_tokens_are_billed_as_output_and_dated_models_resolve(
    make_client, server, telemetry
):
    server.reply(
        "o1",
        prompt_tokens=100,
        completion_tokens=300,
        reasoning_tokens=250,
        response_model="o1-2024-12-17",
    )
    make_client(provider="openai").chat.completions.create(model="o1", messages=MESSAGES)
    expected = prices.cost(
        "o1-2024-12-17", aiguard.Usage(input_tokens=100, output_tokens=300), provider="openai"
    )
    library = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=100, output_tokens=300),
        model_ref="o1-2024-12-17",
        provider_id="openai",
    ).total_price
    assert expected == library > 0
    assert _cost(telemetry.span("chat o1")) == library


def test_unknown_model_has_no_cost_and_logs_once_at_debug(make_client, server, telemetry, caplog):
    client = make_client(provider="openai")
    with caplog.at_level(logging.DEBUG, logger="aiguard"):
        for _ in range(3):
            client.chat.completions.create(model="house-model-v9", messages=MESSAGES)
    for span in telemetry.spans():
        assert "aiguard.cost.usd" not in span.attributes
        assert "aiguard.cost.total_usd" not in span.attributes
    notes = [r for r in caplog.records if "house-model-v9" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.DEBUG


def test_registered_price_overrides_and_adds(make_client, server, telemetry):
    prices.register(
        "acme-ft", input_per_mtok=1, output_per_mtok="3", cached_input_per_mtok=Decimal("0.5")
    )
    prices.register("gpt-4o", input_per_mtok=0, output_per_mtok=0)  # a negotiated rate
    server.reply("acme-ft", prompt_tokens=2000, cached_tokens=1000, completion_tokens=1000)
    client = make_client(provider="openai")
    client.chat.completions.create(model="acme-ft", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert _cost(telemetry.span("chat acme-ft")) == Decimal("0.0045")
    assert _cost(telemetry.span("chat gpt-4o")) == 0


def test_local_model_is_priced_by_compute_time(raw_client, server, telemetry):
    prices.register_local("local-llama", usd_per_hour=3600, provider="ollama")  # $1 a second
    server.fail("local-llama", delay=0.2, status=None)
    client = aiguard.wrap(raw_client, provider="ollama", retry=None)
    started = time.perf_counter()
    client.chat.completions.create(model="local-llama", messages=MESSAGES)
    elapsed = time.perf_counter() - started
    span = telemetry.span("chat local-llama")
    assert span.attributes["aiguard.cost.basis"] == "compute_time"
    assert 0.2 <= span.attributes["aiguard.cost.usd"] <= elapsed


def test_local_providers_are_not_priced_from_cloud_lists(raw_client, server, telemetry):
    client = aiguard.wrap(raw_client, provider="ollama", retry=None)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "aiguard.cost.usd" not in telemetry.span("chat gpt-4o").attributes


def test_failed_attempts_cost_nothing(make_client, server, telemetry):
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    server.fail("gpt-4o", status=500)
    make_client(provider="openai").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    span = telemetry.span("chat gpt-4o")
    assert [e.name for e in span.events].count("aiguard.attempt.failed") == 1
    assert _cost(span) == Decimal("0.0075")  # the answering attempt's
    assert span.attributes["aiguard.cost.total_usd"] == pytest.approx(0.0075, abs=1e-12)
    [spend] = telemetry.metrics()["aiguard.cost"]
    assert spend.value == pytest.approx(0.0075, abs=1e-12)


def test_decorated_function_totals_its_nested_calls(make_client, server, telemetry):
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    server.reply("gpt-4o-mini", prompt_tokens=1000, completion_tokens=500)
    client = make_client(provider="openai")

    @aiguard.guard
    def pipeline(question: str) -> str:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return "done"

    pipeline("q")
    total = telemetry.span(pipeline.__qualname__).attributes["aiguard.cost.total_usd"]
    mini = prices.cost("gpt-4o-mini", aiguard.Usage(input_tokens=1000, output_tokens=500))
    assert total == pytest.approx(float(Decimal("0.0075") + mini), abs=1e-12)


async def test_async_calls_are_priced(make_async_client, server, telemetry):
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    client = make_async_client(provider="openai")
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert _cost(telemetry.span("chat gpt-4o")) == Decimal("0.0075")


def test_embeddings_are_priced_by_input(make_client, server, telemetry):
    make_client(provider="openai").embeddings.create(
        model="text-embedding-3-small", input=["hello world"]
    )
    span = telemetry.span("embeddings text-embedding-3-small")
    tokens = span.attributes["gen_ai.usage.input_tokens"]
    assert _cost(span) == Decimal(tokens) * Decimal("0.02") / 1_000_000


def test_spend_metric_carries_provider_models_and_tag(make_client, server, telemetry):
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    client = make_client(provider="openai")
    with aiguard.tag("checkout"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    points = telemetry.metrics()["aiguard.cost"]
    by_tag = {p.attributes.get("aiguard.tag"): p.value for p in points}
    assert by_tag == pytest.approx({"checkout": 0.015, None: 0.0075})
    tagged = next(p for p in points if p.attributes.get("aiguard.tag") == "checkout")
    assert tagged.attributes["gen_ai.provider.name"] == "openai"
    assert tagged.attributes["gen_ai.request.model"] == "gpt-4o"
    assert tagged.attributes["gen_ai.response.model"] == "gpt-4o"
    guard = telemetry.spans("chat gpt-4o")[0]
    assert guard.attributes["aiguard.tag"] == "checkout"


def test_tag_on_the_policy_wins_over_the_scope(make_client, server, telemetry):
    client = make_client(provider="openai", tag="summaries")
    with aiguard.tag("checkout"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    points = telemetry.metrics()["aiguard.cost"]
    assert {p.attributes["aiguard.tag"] for p in points} == {"summaries"}


@pytest.mark.parametrize("bad", ["", None, 3, "x" * 129])
def test_bad_tags_are_refused_with_advice(make_client, bad):
    if bad is not None:  # tag=None on a policy means no tag
        with pytest.raises(TypeError, match="tag"):
            make_client(tag=bad)
    with pytest.raises(TypeError, match="tag"):
        aiguard.tag(bad)


def test_a_broken_price_lookup_never_reaches_the_caller(
    make_client, server, telemetry, monkeypatch
):
    def explode(*args, **kwargs):
        raise RuntimeError("price data corrupted")

    monkeypatch.setattr(prices, "lookup", explode)
    budget = aiguard.Budget(usd=1)
    reply = make_client(provider="openai", budget=budget).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert reply.choices[0].message.content
    assert "aiguard.cost.usd" not in telemetry.span("chat gpt-4o").attributes
    assert budget.reserved == 0


def test_register_rejects_bad_prices():
    with pytest.raises(ValueError, match="non-negative"):
        prices.register("acme-ft", input_per_mtok=-1, output_per_mtok=1)
    with pytest.raises(ValueError, match="finite"):
        prices.register("acme-ft", input_per_mtok=float("nan"), output_per_mtok=1)
    with pytest.raises(TypeError, match="number of USD"):
        prices.register("acme-ft", input_per_mtok=None, output_per_mtok=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        prices.register("", input_per_mtok=1, output_per_mtok=1)
    with pytest.raises(TypeError, match="usage"):
        prices.cost("gpt-4o", {"input_tokens": 1})  # type: ignore[arg-type]


# -- the fast path agrees with genai-prices ------------------------------------------------------

_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini-2024-07-18"),
    ("openai", "o3-mini"),
    ("anthropic", "claude-sonnet-4-5"),  # tiered
    ("anthropic", "claude-3-5-haiku-latest"),
    ("perplexity", "sonar"),  # a fee per request: the library prices it
]
_tokens = st.one_of(st.none(), st.integers(min_value=0, max_value=3_000_000))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_MODELS),
    _tokens,
    _tokens,
    _tokens,
    _tokens,
)
def test_costs_match_genai_prices_and_are_never_negative_or_nan(
    model, inputs, outputs, cached, written
):
    provider, name = model
    usage = aiguard.Usage(
        input_tokens=inputs,
        output_tokens=outputs,
        cache_read_tokens=cached,
        cache_write_tokens=written,
    )
    cost = prices.cost(name, usage, provider=provider)
    if inputs is None and outputs is None:
        assert cost is None
        return
    assert cost is not None and cost.is_finite() and cost >= 0
    assert not math.isnan(float(cost))
    if (cached or 0) + (written or 0) <= (inputs or 0):  # what a provider can report
        library = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=inputs or 0,
                output_tokens=outputs or 0,
                cache_read_tokens=cached or 0,
                cache_write_tokens=written or 0,
            ),
            model_ref=name,
            provider_id=provider,
        ).total_price
        assert cost == library


def test_real_http_usage_from_a_server_that_omits_details(server, telemetry):
    # Local servers often leave out prompt_tokens_details; the cost is still exact.
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500, cached_tokens=None)
    client = aiguard.wrap(openai.OpenAI(base_url=server.url, api_key=API_KEY), provider="openai")
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert _cost(telemetry.span("chat gpt-4o")) == Decimal("0.0075")
