"""The testing kit's server itself: what users rely on when they test their own AI code."""

from __future__ import annotations

import openai
import pytest
from tests.conftest import MESSAGES

import aiguard
from aiguard.testing import Fault, MockServer


def test_stream_with_usage_and_done(raw_client, server):
    stream = raw_client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_stream_cut_midway_raises_in_the_sdk(server):
    client = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
    server.fail("m", cut_after=2)
    got = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            got.append(chunk)
    assert len(got) == 2


def test_truncated_stream_ends_without_finish_reason(raw_client, server):
    server.fail("m", truncate=True)
    chunks = list(raw_client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(c.choices[0].finish_reason is None for c in chunks)


def test_scripted_queue_plays_in_order_then_answers(server):
    client = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
    server.script("m", Fault(status=429), Fault(status=500))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert client.chat.completions.create(model="m", messages=MESSAGES).model == "m"
    assert [r.path for r in server.requests] == ["/v1/chat/completions"] * 3
    assert server.requests[0].headers["authorization"] == "Bearer k"


def test_server_url_before_start_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not running"):
        _ = MockServer().url


def test_non_json_body_is_a_400(server):
    import httpx2

    response = httpx2.post(f"{server.url}/chat/completions", content=b"{not json")
    assert response.status_code == 400


def test_the_readme_testing_snippet_works(aiguard_server, aiguard_telemetry):
    import aiguard

    client = aiguard.wrap(openai.OpenAI(base_url=aiguard_server.url, api_key="test"))
    aiguard_server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert len(aiguard_server.requests) == 2
    assert aiguard_telemetry.span("chat gpt-4o").attributes["aiguard.retries"] == 1


def test_set_testing_as_a_with_block_restores_the_mode_before(make_client, server):
    from aiguard._engine.state import testing

    assert testing.active is False
    with aiguard.testing.set_testing(True):
        assert testing.active is True
        server.fail("gpt-4o", status=429, headers={"retry-after": "5"})
        make_client(retry=aiguard.Retry(attempts=2)).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )  # retried at once, not after 5 s
    assert testing.active is False
