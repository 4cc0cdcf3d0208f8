"""Shared fixtures: the testing kit's server, in-memory telemetry, and guarded clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

import aiguard
from aiguard.testing import Capture, MockServer

API_KEY = "sk-proj-TESTKEY0123456789abcdefSECRET"
FAST = aiguard.Retry(attempts=3, wait_initial=0.001, wait_max=0.01, wait_jitter=0.0)
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def server(aiguard_server: MockServer) -> MockServer:
    return aiguard_server


@pytest.fixture
def telemetry(aiguard_telemetry: Capture) -> Capture:
    return aiguard_telemetry


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
