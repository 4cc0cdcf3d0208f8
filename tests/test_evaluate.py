"""Online evaluators: off the call path (no latency, no error reaches the call), sampled, bounded
(a full queue drops and counts), drained at exit; the built-in evaluators."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import openai
import pydantic
import pytest
from tests.conftest import MESSAGES
from tests.conventions import LOGS

import aiguard
from aiguard import _online, _worker
from aiguard._messages import Message, Part
from aiguard.evaluators import (
    GRADE_SCHEMA,
    EmptyAnswer,
    Grounded,
    Judge,
    Matches,
    Refusal,
    Result,
    Truncated,
    ValidJson,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_worker():
    LOGS.clear()
    _worker.reset()
    yield
    _worker.drain(5)


def _results() -> dict[str, list]:
    found: dict[str, list] = {}
    for item in LOGS.get_finished_logs():
        record = item.log_record
        if record.event_name == "gen_ai.evaluation.result":
            found.setdefault(record.attributes["gen_ai.evaluation.name"], []).append(record)
    return found


def _ask(client, **extra):
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, **extra)


def test_evaluators_see_the_request_the_answer_and_the_context(make_client, server, telemetry):
    server.answer("gpt-4o", "Paris is the capital of France.")
    seen = []

    def spy(messages, answer, **context):
        seen.append(([m.text for m in messages], answer, context))
        return 0.8

    reply = _ask(make_client(evaluate=[spy], tag="geo"))
    assert aiguard.flush(5)
    assert seen == [
        (
            [MESSAGES[0]["content"]],
            "Paris is the capital of France.",
            {
                "model": "gpt-4o",
                "provider": "openai",
                "tag": "geo",
                "finish_reason": "stop",
                "operation": "chat",
            },
        )
    ]
    (event,) = _results()["spy"]
    span = telemetry.span("chat gpt-4o")
    assert (event.trace_id, event.span_id) == (span.context.trace_id, span.context.span_id)
    assert event.attributes["gen_ai.evaluation.score.value"] == 0.8
    assert event.attributes["gen_ai.response.id"] == reply.id


def test_a_slow_or_failing_evaluator_changes_nothing_in_the_call(make_client, server, telemetry):
    gate = threading.Event()

    def slow(messages, answer, **context):
        gate.wait(5)
        return True

    def broken(messages, answer, **context):
        raise RuntimeError("evaluator bug")

    plain = make_client()
    _ask(plain)  # warm the connection: both timings below are of the same work
    started = time.perf_counter()
    expected = _ask(plain).choices[0].message.content
    baseline = time.perf_counter() - started
    client = make_client(evaluate=[broken, slow, lambda m, a, **c: object()])
    started = time.perf_counter()
    reply = _ask(client)
    took = time.perf_counter() - started
    assert reply.choices[0].message.content == expected
    assert took < baseline + 0.2  # the slow evaluator is still waiting: not on the call's path
    gate.set()
    assert aiguard.flush(5)
    found = _results()
    assert set(found) == {"slow"}
    assert telemetry.spans()[-1].attributes["aiguard.outcome"] == "ok"


async def test_async_evaluators_and_the_async_client(make_async_client, telemetry):
    async def graded(messages, answer, **context):
        return Result(0.25, "meh", "too short")

    graded.name = "graded"  # type: ignore[attr-defined]
    await make_async_client(evaluate=[graded]).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert aiguard.flush(5)
    (event,) = _results()["graded"]
    assert event.attributes["gen_ai.evaluation.score.label"] == "meh"
    (counted,) = telemetry.metrics()["aiguard.evaluations"]
    assert counted.attributes["aiguard.evaluation.passed"] is False


def test_sampling_is_honoured(make_client, telemetry, monkeypatch):
    draws = iter([0.1, 0.9, 0.3, 0.7])
    monkeypatch.setattr(_online.random, "random", lambda: next(draws))
    client = make_client(evaluate=[Matches("Hello", name="hello")], sample=0.5)
    replies = [_ask(client) for _ in range(4)]
    assert aiguard.flush(5)
    events = _results()["hello"]
    assert [e.attributes["gen_ai.response.id"] for e in events] == [replies[0].id, replies[2].id]
    never = make_client(evaluate=[Matches("Hello", name="never")], sample=0)
    _ask(never)
    assert aiguard.flush(5) and "never" not in _results()


def test_an_evaluator_may_sample_its_own_share(make_client, server, telemetry, monkeypatch):
    draws = iter([0.9, 0.1])  # the policy samples every call; the judge draws once per call
    monkeypatch.setattr(_online.random, "random", lambda: next(draws))
    server.answer("judge-model", "5")
    judge = Judge(make_client(), "Correct?", model="judge-model", sample=0.5)
    client = make_client(evaluate=[EmptyAnswer(), judge])
    replies = [_ask(client) for _ in range(2)]
    assert aiguard.flush(5)
    found = _results()
    assert len(found["empty_answer"]) == 2
    assert [e.attributes["gen_ai.response.id"] for e in found["judge"]] == [replies[1].id]
    with pytest.raises(ValueError, match=r"Judge\(sample=\.\.\.\) must be a fraction"):
        Judge(make_client(), "Correct?", sample=2)


def test_a_full_queue_drops_and_counts(make_client, telemetry):
    worker = _worker.reset(size=1)
    running, release = threading.Event(), threading.Event()

    def blocking(messages, answer, **context):
        running.set()
        release.wait(5)
        return 1.0

    client = make_client(evaluate=[blocking])
    _ask(client)
    assert running.wait(5)  # the worker holds the first job
    for _ in range(3):
        _ask(client)  # one waits in the queue, two are dropped
    assert worker.dropped == 2
    (dropped,) = telemetry.metrics()["aiguard.evaluations.dropped"]
    assert dropped.value == 2
    release.set()
    assert aiguard.flush(5)
    assert len(_results()["blocking"]) == 2


def test_streams_are_evaluated_on_their_text(make_client, server, telemetry):
    server.answer("gpt-4o", "I'm sorry, but I can't help with that.")
    stream = _ask(make_client(evaluate=[Refusal(), EmptyAnswer()]), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert aiguard.flush(5)
    found = _results()
    assert found["refusal"][0].attributes["gen_ai.evaluation.score.label"] == "refused"
    assert found["empty_answer"][0].attributes["gen_ai.evaluation.score.value"] == 1.0


def test_a_truncated_answer_fails_its_evaluation(make_client, server, telemetry):
    server.reply("gpt-4o", content="Paris is", finish_reason="length")
    _ask(make_client(evaluate=[Truncated()]))
    assert aiguard.flush(5)
    (event,) = _results()["truncated"]
    assert event.attributes["gen_ai.evaluation.score.label"] == "truncated"


def test_guarded_functions_are_evaluated_on_their_return_value(telemetry):
    @aiguard.guard(evaluate=[ValidJson()])
    def extract(text: str) -> str:
        return '{"city": "Paris"}'

    assert extract("Where?") == '{"city": "Paris"}'
    assert aiguard.flush(5)
    assert _results()["valid_json"][0].attributes["gen_ai.evaluation.score.label"] == "valid"


def test_evaluators_are_checked_when_the_policy_is_built():
    with pytest.raises(TypeError, match=r"evaluate= entries are called as evaluator\(messages"):
        aiguard.Policy(evaluate=[lambda answer: 1.0])
    with pytest.raises(TypeError, match="write Refusal\\(\\) to make one"):
        aiguard.Policy(evaluate=[Refusal])
    with pytest.raises(TypeError, match="evaluate= must be a list"):
        aiguard.Policy(evaluate="refusal")
    with pytest.raises(ValueError, match="sample= must be a fraction"):
        aiguard.Policy(evaluate=[Refusal()], sample=1.5)
    policy = aiguard.Policy(evaluate=Refusal(), sample=0.25)
    assert len(policy.evaluate) == 1 and policy.sample == 0.25


def test_the_built_in_evaluators():
    class City(pydantic.BaseModel):
        city: str

    assert Refusal()([], "As an AI language model, I cannot do that.").passed is False
    assert Refusal()([], "Paris.").label == "answered"
    assert EmptyAnswer()([], "  \n").passed is False
    assert Truncated()([], "x", finish_reason="max_tokens").passed is False
    assert Truncated()([], "x", finish_reason="stop").passed is True
    assert ValidJson(City)([], '```json\n{"city": "Paris"}\n```').passed is True
    assert ValidJson(City)([], '{"town": "Paris"}').explanation == "1 validation error(s)"
    assert ValidJson()([], "Paris").label == "invalid"
    assert Matches(r"\bParis\b")([], "It is Paris.") is True
    assert Matches(r"http", must=False)([], "see http://x") is False
    with pytest.raises(ValueError, match="not a valid regular expression"):
        Matches("(")
    grounded = Grounded("Paris is the capital and largest city of France.")
    assert grounded([], "Paris is the capital of France.").score == 1.0
    wandered = grounded([], "Berlin hosts the Bundestag and Reichstag.")
    assert wandered.score == 0.0 and wandered.passed is False
    assert grounded([], "") is None


def test_a_judge_grades_with_any_guarded_client(make_client, server, telemetry):
    server.answer("judge-model", "4 - correct and polite.")
    judge = Judge(make_client(), "Is it correct?", model="judge-model")
    _ask(make_client(evaluate=[judge]))
    assert aiguard.flush(5)
    (event,) = _results()["judge"]
    assert event.attributes["gen_ai.evaluation.score.value"] == 0.75
    assert event.attributes["gen_ai.evaluation.explanation"] == "4 - correct and polite."
    prompt = server.requests_for("judge-model")[0].body["messages"][0]["content"]
    assert "Is it correct?" in prompt and MESSAGES[0]["content"] in prompt
    with pytest.raises(TypeError, match=r"Judge\(client=\.\.\.\) must be"):
        Judge(42, "rubric")


_EXITING = textwrap.dedent(
    """
    import sys, time
    import openai, aiguard
    from aiguard.testing import MockServer

    def slow(messages, answer, **context):
        time.sleep(float(sys.argv[2]))
        open(sys.argv[1], "w").write(answer)
        return 1.0

    with MockServer() as server:
        client = aiguard.wrap(openai.OpenAI(base_url=server.url, api_key="k"), evaluate=[slow])
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    """
)


@pytest.mark.parametrize(("seconds", "finished"), [(0.2, True), (30.0, False)])
def test_queued_evaluations_finish_at_exit_bounded(tmp_path, seconds, finished):
    out = tmp_path / "evaluated.txt"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _EXITING, str(out), str(seconds)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    assert out.exists() is finished
    assert time.monotonic() - started < 15  # a stuck evaluator costs the exit ~2 s, no more


def test_the_local_smollm2_model_as_judge(telemetry):
    from tests.test_local_models import MODEL_PATH, NAME, llama_cpp

    llm = llama_cpp.Llama(model_path=MODEL_PATH, n_ctx=1024, verbose=False, seed=1)
    judge = Judge(
        aiguard.wrap(llm),
        "Does the answer name the right capital city?",
        max_tokens=16,
        request={"response_format": {"type": "json_object", "schema": GRADE_SCHEMA}},
    )
    question = [Message("user", [Part("text", "Capital of France?")])]
    good = judge(question, "The capital of France is Paris.")
    bad = judge(question, "Bananas are yellow.")
    assert good is not None and bad is not None
    assert good.score > bad.score  # the 135M model tells them apart when held to the schema
    assert [s.attributes["aiguard.outcome"] for s in telemetry.spans(f"chat {NAME}")] == ["ok"] * 2


def test_failed_calls_and_guarded_generators_are_not_evaluated(make_client, server, telemetry):
    seen = []

    def spy(messages, answer, **context):
        seen.append(answer)

    server.fail("gpt-4o", status=400)
    with pytest.raises(openai.BadRequestError):
        _ask(make_client(evaluate=[spy]))

    @aiguard.guard(evaluate=[spy])
    def words(text: str):
        yield from text.split()

    assert list(words("a b")) == ["a", "b"]
    assert aiguard.flush(5) and seen == []
