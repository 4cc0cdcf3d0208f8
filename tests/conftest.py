"""Shared fixtures: the testing kit's server, in-memory telemetry, and guarded clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from tests import conventions

import aiguard
from aiguard.testing import Capture, MockServer

API_KEY = "sk-proj-TESTKEY0123456789abcdefSECRET"
FAST = aiguard.Retry(attempts=3, wait_initial=0.001, wait_max=0.01, wait_jitter=0.0)
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def server(aiguard_server: MockServer) -> MockServer:
    return aiguard_server


@pytest.fixture
def telemetry(aiguard_telemetry: Capture) -> Iterator[Capture]:
    """aiguard's telemetry in memory; what the test emitted must follow the GenAI conventions."""
    conventions.LOGS.clear()
    yield aiguard_telemetry
    conventions.check(
        aiguard_telemetry.spans(),
        aiguard_telemetry.metrics(),
        [r.log_record for r in conventions.LOGS.get_finished_logs()],
    )


@pytest.fixture
def raw_client(server: MockServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=API_KEY)


@pytest.fixture
def raw_async_client(server: MockServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY)


@pytest.fixture
def make_client(raw_client: openai.OpenAI) -> Callable[..., Any]:
    def make(**policy: Any) -> Any:
        policy.setdefault("retry", FAST)
        return aiguard.wrap(raw_client, **policy)

    return make


@pytest.fixture
def make_async_client(raw_async_client: openai.AsyncOpenAI) -> Callable[..., Any]:
    def make(**policy: Any) -> Any:
        policy.setdefault("retry", FAST)
        return aiguard.wrap(raw_async_client, **policy)

    return make
