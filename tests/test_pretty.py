"""``exporter="pretty"``: one compact tree per guarded call on the console, from a real
OpenTelemetry SDK and the testing kit's server; plain text off a terminal; never raises."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from tests.conftest import FAST, MESSAGES

import aiguard
from aiguard._pretty import PrettySpanExporter, Style

# Durations vary run to run; everything else in a tree is exact.
_MS = re.compile(r"\s+\d+\.\d ms")


def _normalised(text: str) -> str:
    return _MS.sub(" <ms>", text)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def pretty(telemetry):
    """A pretty exporter on the test's real SDK tracer provider, printing into a buffer."""
    out = io.StringIO()
    exporter = PrettySpanExporter(out=out)
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return out


def test_a_retried_fallen_back_streamed_and_refused_call_golden(pretty, make_client, server):
    client = make_client(fallback=["gpt-4o-mini"], checks=[aiguard.checks.NoSecrets()])
    server.reply("gpt-4o", prompt_tokens=420, completion_tokens=180, cached_tokens=256)
    server.reply("gpt-4o-mini", prompt_tokens=420, completion_tokens=210)

    server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # retried
    server.fail("gpt-4o", status=503, times=3)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # fallen back
    for _ in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
        pass  # streamed
    leaked = [{"role": "user", "content": "key: sk-proj-" + "x1" * 24}]
    with pytest.raises(aiguard.CheckFailed):
        client.chat.completions.create(model="gpt-4o", messages=leaked)  # refused

    assert _normalised(pretty.getvalue()) == textwrap.dedent(
        """\
        ok chat gpt-4o <ms>  attempts=2  tokens in=420 out=180  cached=256  $0.002530
           x attempt 1 gpt-4o: openai.RateLimitError (rate_limit)
           ~ aiguard.retry attempt=1, type=openai.RateLimitError, wait_s=0.000
        ok chat gpt-4o <ms>  attempts=4  fallback=gpt-4o-mini  tokens in=420 out=210  $0.000189
           x attempt 1 gpt-4o: openai.InternalServerError (outage)
           ~ aiguard.retry attempt=1, type=openai.InternalServerError, wait_s=0.001
           x attempt 2 gpt-4o: openai.InternalServerError (outage)
           ~ aiguard.retry attempt=2, type=openai.InternalServerError, wait_s=0.002
           x attempt 3 gpt-4o: openai.InternalServerError (outage)
           ~ aiguard.fallback model=gpt-4o-mini, reason=outage
        ok chat gpt-4o <ms>  attempts=1  tokens in=420 out=180  cached=256  $0.002530  chunks=5
        x chat gpt-4o <ms>  attempts=0  error=aiguard.CheckFailed
           ~ aiguard.check.failed check=NoSecrets
        """
    )
    assert "\033[" not in pretty.getvalue()  # not a terminal: no colour codes


def test_a_budget_refusal_and_a_decorated_function_print_as_one_tree_each(
    pretty, make_client, server
):
    client = make_client()

    @aiguard.guard(retry=FAST)
    def answer(question: str, model: str = "gpt-4o") -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}]
        )
        return reply.choices[0].message.content or ""

    answer("What is the capital of France?")
    with aiguard.budget(usd="0.000001"), pytest.raises(aiguard.BudgetExceeded):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=300)
    lines = _normalised(pretty.getvalue()).splitlines()
    roots = [line for line in lines if not line.startswith(" ")]
    assert len(roots) == 2, lines  # the function's call (with the client's inside), the refusal
    assert roots[0].startswith("ok ") and "answer" in roots[0]
    assert any("chat gpt-4o" in line for line in lines[1:3])  # nested under it
    assert roots[1].startswith("x chat gpt-4o") and "BudgetExceeded" in roots[1]
    assert "~ aiguard.budget.refused model=gpt-4o" in pretty.getvalue()


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch, make_client, telemetry):
    terminal = _Terminal()
    telemetry.tracer_provider.add_span_processor(
        SimpleSpanProcessor(PrettySpanExporter(out=terminal))
    )
    make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "\033[32mok\033[0m chat gpt-4o" in terminal.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Style(_Terminal()).on
    assert Style(_Terminal(), colour=True).on and not Style(io.StringIO()).on


def test_a_tree_waits_for_its_root_and_leftovers_print_at_flush():
    out = io.StringIO()
    exporter = PrettySpanExporter(out=out)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("step"):
            pass
        assert out.getvalue() == ""  # the child waits for its root
    assert re.fullmatch(r"ok request +\S+ ms  \n   ok step +\S+ ms  \n", out.getvalue())

    out.truncate(0), out.seek(0)
    root = tracer.start_span("never-ended")
    with tracer.start_as_current_span("orphan", context=_context(root)):
        pass
    assert out.getvalue() == ""
    exporter.force_flush()  # e.g. at exit: what is left prints as it is
    assert out.getvalue().startswith("ok orphan")
    provider.shutdown()


def test_pending_spans_are_bounded():
    out = io.StringIO()
    exporter = PrettySpanExporter(out=out, max_pending=5)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    root = tracer.start_span("long-running job")
    for _ in range(6):
        with tracer.start_as_current_span("call", context=_context(root)):
            pass
    assert out.getvalue().count("ok call") == 6  # printed once more than 5 waited


def _context(span):
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def test_printing_never_raises_into_the_application(make_client, telemetry, caplog):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("the terminal went away")

    exporter = PrettySpanExporter(out=Broken())
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reply = make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content  # the call is untouched
    assert exporter.export([]) is SpanExportResult.SUCCESS
    assert exporter.force_flush() is True
    assert "exporter='pretty'" in caplog.text  # said once, in the log


def test_configure_pretty_prints_each_call_from_a_real_sdk_in_a_plain_process(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            import aiguard, openai
            from aiguard.testing import MockServer

            aiguard.configure(service_name="app", exporter="pretty")
            with MockServer() as server:
                client = aiguard.wrap(
                    openai.OpenAI(base_url=server.url, api_key="sk-test"),
                    retry=aiguard.Retry(attempts=3, wait_initial=0.01, wait_jitter=0),
                )
                server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
                hi = [{"role": "user", "content": "hi"}]
                client.chat.completions.create(model="gpt-4o", messages=hi)
                time.sleep(1)  # the console view prints within 0.2 s, not only at exit
                print("after", flush=True)
            """
        )
    )
    env = {**os.environ, "NO_COLOR": ""}
    done = subprocess.run(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one pipe: the order things were printed in
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok chat gpt-4o") and "attempts=2" in lines[0]
    assert "x attempt 1 gpt-4o" in lines[1] and "~ aiguard.retry attempt=1" in lines[2]
    assert lines[-1] == "after"  # printed live, not only at exit
    assert "\033[" not in done.stdout and "{" not in done.stdout  # a tree, not JSON


def test_the_view_goes_to_stderr_so_program_output_stays_clean(capsys, make_client, telemetry):
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(PrettySpanExporter()))
    make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("ok chat gpt-4o")
