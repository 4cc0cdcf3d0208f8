"""The default store: configure(store=...), AIGUARD_STORE, the policy file's [store] table."""

from __future__ import annotations

import textwrap
from decimal import Decimal

import pytest
from tests.fleet_support import redis_server

import aiguard
from aiguard import _policy_file, _store

__all__ = ["redis_server"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("AIGUARD_CONFIG", raising=False)
    monkeypatch.delenv("AIGUARD_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    _policy_file.reset()
    monkeypatch.setattr(_store, "_default", [])
    monkeypatch.setattr(_store, "_explicit", [])
    yield
    _policy_file.reset()


def _shared(budget: aiguard.Budget, url: str) -> bool:
    """Does the budget's spend land in the store at ``url``?"""
    budget.settle(Decimal(0), Decimal("0.25"))
    same = aiguard.Budget(usd=1, name=budget.name, per=budget.per, store=url)
    return same.spent == Decimal("0.25")


def test_configure_sets_the_default_store_of_named_objects(redis_server):
    aiguard.configure(store=redis_server.url)
    assert _shared(aiguard.Budget(usd=1, name="named"), redis_server.url)
    unnamed = aiguard.Budget(usd=1)
    unnamed.settle(Decimal(0), Decimal("0.25"))
    assert unnamed.spent == Decimal("0.25")  # its own, in the process
    aiguard.configure(store=None)
    assert not _shared(aiguard.Budget(usd=1, name="local"), redis_server.url)
    with pytest.raises(ValueError, match="configure"):
        aiguard.configure(store="mysql://db")


def test_the_environment_names_the_default_store(redis_server, monkeypatch):
    monkeypatch.setenv("AIGUARD_STORE", redis_server.url)
    assert _shared(aiguard.Budget(usd=1, name="from-env"), redis_server.url)


def test_the_policy_file_store_table_and_rate_limit(redis_server, tmp_path):
    (tmp_path / "aiguard.toml").write_text(
        textwrap.dedent(
            f"""
            [store]
            url = "{redis_server.url}"

            [policies.default]
            budget = {{ usd = 1.0, per = "day", fail = "closed" }}
            rate_limit = {{ rpm = 60, tpm = 1000, name = "tier", max_wait = 5 }}
            breaker = {{ failures = 3, name = "openai" }}
            """
        )
    )
    policy = aiguard.Policy.build("default")
    assert policy.budget is not None and policy.budget.per == "day"
    assert _shared(policy.budget, redis_server.url)
    limit = policy.rate_limit
    assert limit is not None and (limit.rpm, limit.tpm, limit.max_wait) == (60, 1000, 5.0)
    assert policy.breaker is not None and policy.breaker.name == "openai"


def test_a_bad_store_url_in_the_policy_file_names_the_line(tmp_path):
    (tmp_path / "aiguard.toml").write_text('[store]\nurl = "http://nope"\n')
    with pytest.raises(aiguard.PolicyFileError, match=r"aiguard.toml:2: store.url: .*redis://"):
        aiguard.Policy.build("default")


def test_doctor_checks_the_store(redis_server):
    from tests.test_cli import _aiguard

    shared = _aiguard("doctor", env={"AIGUARD_STORE": redis_server.url})
    assert shared.returncode == 0, shared.stdout + shared.stderr
    assert "store: redis " in shared.stdout and redis_server.url in shared.stdout
    assert "answering in" in shared.stdout
    redis_server.stop()
    down = _aiguard("doctor", env={"AIGUARD_STORE": redis_server.url})
    assert down.returncode == 1 and "NOT reachable" in down.stdout
    assert "Traceback" not in down.stderr
    local = _aiguard("doctor")
    assert "store: in-process" in local.stdout


def test_a_redis_client_sync_or_asyncio_is_a_store_too(redis_server, server):
    import asyncio

    import openai
    import redis
    import redis.asyncio
    from tests.conftest import API_KEY, MESSAGES

    sync = aiguard.Budget(usd=1, name="clients", store=redis.Redis.from_url(redis_server.url))
    sync.settle(Decimal(0), Decimal("0.25"))
    assert sync.spent == Decimal("0.25")  # a read sends this process's settles first
    given = redis.asyncio.Redis.from_url(redis_server.url)
    shared = aiguard.Budget(usd=1, name="clients", store=given)
    assert shared.spent == Decimal("0.25")  # the same account, through either client

    async def ask() -> None:
        raw = openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY)
        client = aiguard.wrap(raw, budget=shared, retry=None)
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
        await given.aclose()

    asyncio.run(ask())
    assert shared.spent > Decimal("0.25") and shared.reserved == 0
