"""The OpenTelemetry GenAI conventions as a table of rules, checked on all that tests emit.

``tests/conftest.py`` runs :func:`check` on the spans, metric points and log events of every
test that uses the ``telemetry`` fixture, so every adapter and every path the suite drives is
held to the same rules: a new adapter or attribute cannot drift from the conventions (or add a
name that is in no table here) without a test failing.

Sources: the ``semantic-conventions-genai`` repository (``model/gen-ai/registry.yaml``,
``spans.yaml``, ``metrics.yaml``, the input/output message JSON schemas), as summarised in
``shared/REFERENCE.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import _logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from aiguard import _semconv as sc

# Log events (content details, operation exceptions) of the whole run, through the global API.
# Here, not in conftest.py: pytest imports that twice (as conftest and as tests.conftest).
LOGS = InMemoryLogRecordExporter()
_log_provider = LoggerProvider()
_log_provider.add_log_record_processor(SimpleLogRecordProcessor(LOGS))
_logs.set_logger_provider(_log_provider)

STR, INT, DOUBLE, BOOL, STRS = "string", "int", "double", "boolean", "string[]"

# Every gen_ai.* / server.* / error.* / openai.* attribute aiguard may put on an inference span,
# with the type the conventions give it.
SPAN_ATTRIBUTES: dict[str, str] = {
    "gen_ai.operation.name": STR,
    "gen_ai.provider.name": STR,
    "gen_ai.request.model": STR,
    "gen_ai.request.max_tokens": INT,
    "gen_ai.request.temperature": DOUBLE,
    "gen_ai.request.top_p": DOUBLE,
    "gen_ai.request.top_k": DOUBLE,
    "gen_ai.request.frequency_penalty": DOUBLE,
    "gen_ai.request.presence_penalty": DOUBLE,
    "gen_ai.request.stop_sequences": STRS,
    "gen_ai.request.seed": INT,
    "gen_ai.request.choice.count": INT,
    "gen_ai.request.stream": BOOL,
    "gen_ai.request.encoding_formats": STRS,
    "gen_ai.request.reasoning.level": STR,
    "gen_ai.conversation.id": STR,
    "gen_ai.previous_response.id": STR,
    "gen_ai.output.type": STR,
    "gen_ai.embeddings.dimension.count": INT,
    "gen_ai.response.id": STR,
    "gen_ai.response.model": STR,
    "gen_ai.response.finish_reasons": STRS,
    "gen_ai.response.time_to_first_chunk": DOUBLE,
    "gen_ai.usage.input_tokens": INT,
    "gen_ai.usage.output_tokens": INT,
    "gen_ai.usage.cache_read.input_tokens": INT,
    "gen_ai.usage.cache_creation.input_tokens": INT,
    "gen_ai.usage.cache_write.input_tokens": INT,
    "gen_ai.usage.reasoning.output_tokens": INT,
    "gen_ai.input.messages": STR,  # JSON, checked against the message schema below
    "gen_ai.output.messages": STR,
    "gen_ai.system_instructions": STR,
    "gen_ai.tool.definitions": STR,
    "gen_ai.tool.name": STR,
    "gen_ai.tool.type": STR,
    "gen_ai.tool.call.id": STR,
    "gen_ai.agent.name": STR,
    "server.address": STR,
    "server.port": INT,
    "error.type": STR,
    "openai.api.type": STR,
    "openai.request.service_tier": STR,
    "openai.response.service_tier": STR,
    "openai.response.system_fingerprint": STR,
}
# What the conventions lack: aiguard's own, all under aiguard.*.
AIGUARD_ATTRIBUTES: dict[str, str] = {
    "aiguard.attempts": INT,
    "aiguard.retries": INT,
    "aiguard.outcome": STR,
    "aiguard.function": STR,
    "aiguard.fallback.used": BOOL,
    "aiguard.fallback.model": STR,
    "aiguard.breaker.skipped": INT,
    "aiguard.cost.usd": DOUBLE,
    "aiguard.cost.basis": STR,
    "aiguard.cost.total_usd": DOUBLE,
    "aiguard.cost.unknown": BOOL,
    "aiguard.cost.charged_usd": DOUBLE,
    "aiguard.budget.remaining_usd": DOUBLE,
    "aiguard.tag": STR,
    "aiguard.checks": STRS,
    "aiguard.check.failed": STR,
    "aiguard.reasks": INT,
    "aiguard.stream.chunks": INT,
    "aiguard.stream.abandoned": BOOL,
    "aiguard.evaluation.passed": BOOL,
    "aiguard.rate_limit.wait_s": DOUBLE,
    "aiguard.rate_limit.skipped": INT,
}
ENUMS: dict[str, set[str]] = {
    "gen_ai.operation.name": {
        "chat",
        "text_completion",
        "embeddings",
        "generate_content",
        "execute_tool",
        "invoke_agent",
        "create_agent",
    },
    "gen_ai.output.type": {"text", "json", "image", "speech"},
    "openai.api.type": {"chat_completions", "responses"},
    "aiguard.outcome": {"ok", "error", "abandoned", "cancelled"},
    "aiguard.cost.basis": {"tokens", "compute_time"},
}
# Required at the start of an inference span (samplers see them), for a model call.
START_ATTRIBUTES = ("gen_ai.operation.name", "gen_ai.provider.name")
INFERENCE_OPERATIONS = {"chat", "text_completion", "embeddings", "generate_content"}

DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]
TOKEN_BUCKETS = [float(4**i) for i in range(14)]
METRIC_ATTRIBUTES = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
}
# metric -> (instrument, buckets or None, attributes allowed beyond METRIC_ATTRIBUTES)
METRICS: dict[str, tuple[str, list[float] | None, set[str]]] = {
    "gen_ai.client.operation.duration": ("histogram", DURATION_BUCKETS, {"error.type"}),
    "gen_ai.client.token.usage": ("histogram", TOKEN_BUCKETS, {"gen_ai.token.type"}),
    "gen_ai.client.operation.time_to_first_chunk": ("histogram", DURATION_BUCKETS, set()),
    "gen_ai.client.operation.time_per_output_chunk": ("histogram", DURATION_BUCKETS, set()),
    "gen_ai.client.inference.usage.input_tokens": ("histogram", TOKEN_BUCKETS, set()),
    "gen_ai.client.inference.usage.output_tokens": ("histogram", TOKEN_BUCKETS, set()),
}
# aiguard's own metrics: free attributes, but every name listed.
AIGUARD_METRICS = {
    "aiguard.retries",
    "aiguard.fallbacks",
    "aiguard.breaker.transitions",
    "aiguard.cost",
    "aiguard.refusals",
    "aiguard.reasks",
    "aiguard.evaluation.score",
    "aiguard.evaluations",
    "aiguard.evaluations.dropped",
    "aiguard.waits",
    "aiguard.store.duration",
    "aiguard.store.errors",
}
DETAILED_USAGE = "gen_ai.client.inference.usage.detailed."

PART_TYPES_REQUIRED: dict[str, tuple[str, ...]] = {
    "text": ("content",),
    "tool_call": ("name",),
    "tool_call_response": ("response",),
    "blob": ("modality", "content"),
    "uri": ("modality", "uri"),
    "file": ("modality", "file_id"),
    "reasoning": ("content",),
}
ROLES = {"system", "user", "assistant", "tool"}


def check(
    spans: Sequence[ReadableSpan], metrics: Mapping[str, list[Any]], logs: Iterable[Any]
) -> None:
    """Raise AssertionError naming every rule that what a test emitted breaks."""
    problems: list[str] = []
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    for span in spans:
        if span.instrumentation_scope is None or span.instrumentation_scope.name != "aiguard":
            continue
        problems += [f"span {span.name!r}: {p}" for p in _span_problems(span, by_id)]
    problems += _metric_problems(metrics)
    problems += _log_problems(logs)
    assert not problems, "GenAI conventions broken:\n  " + "\n  ".join(problems)


def _span_problems(span: ReadableSpan, by_id: Mapping[int, ReadableSpan]) -> list[str]:
    out: list[str] = []
    attrs = dict(span.attributes or {})
    for key, value in attrs.items():
        kind = SPAN_ATTRIBUTES.get(key) or AIGUARD_ATTRIBUTES.get(key)
        if kind is None:
            out.append(f"{key} is in no table of the conventions nor under aiguard.*")
        elif not _typed(value, kind):
            out.append(f"{key}={value!r} is not a {kind}")
        allowed = ENUMS.get(key)
        if allowed is not None and value not in allowed:
            out.append(f"{key}={value!r} is not one of {sorted(allowed)}")
    operation = attrs.get("gen_ai.operation.name")
    failed = span.status.status_code is StatusCode.ERROR
    if failed != ("error.type" in attrs):
        out.append("error.type must be set exactly when the status is ERROR")
    if operation is None:
        if span.kind is not SpanKind.INTERNAL:
            out.append("a span without gen_ai.operation.name must be INTERNAL")
        if any(k.startswith(("gen_ai.usage", "gen_ai.response")) for k in attrs):
            out.append("usage or response attributes on a span that is no GenAI operation")
        return out
    if operation in INFERENCE_OPERATIONS:
        for key in START_ATTRIBUTES:
            if key not in attrs:
                out.append(f"required {key} is missing")
        model = attrs.get("gen_ai.request.model")
        expected = f"{operation} {model}" if model else operation
        if span.name != expected:
            out.append(f"the name must be {expected!r}")
        if span.kind not in (SpanKind.CLIENT, SpanKind.INTERNAL):
            out.append("an inference span is CLIENT (INTERNAL for an in-process model)")
        if "server.address" in attrs and "server.port" not in attrs:
            out.append("server.port is required with server.address")
        if attrs.get("gen_ai.request.choice.count") == 1:
            out.append("gen_ai.request.choice.count is set only when not 1")
        if attrs.get("openai.request.service_tier") == "auto":
            out.append("openai.request.service_tier is set only when not auto")
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        parent_op = (parent.attributes or {}).get("gen_ai.operation.name") if parent else None
        if parent_op in INFERENCE_OPERATIONS:
            out.append("an inference span under another: one logical call, one span")
    for key, schema in (
        ("gen_ai.input.messages", _input_messages),
        ("gen_ai.output.messages", _output_messages),
        ("gen_ai.system_instructions", _parts_list),
    ):
        if key in attrs:
            try:
                schema(json.loads(str(attrs[key])))
            except (AssertionError, ValueError) as exc:
                out.append(f"{key} breaks its schema: {exc}")
    if operation == "embeddings" and any(
        k in attrs for k in ("gen_ai.input.messages", "gen_ai.output.messages")
    ):
        out.append("embeddings carry no messages")
    return out


def _typed(value: Any, kind: str) -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == DOUBLE:
        return isinstance(value, float)
    return isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)


def _input_messages(messages: Any) -> None:
    assert isinstance(messages, list), "not a list"
    for message in messages:
        assert isinstance(message, dict), "a message is not an object"
        assert message.get("role") in ROLES, f"role {message.get('role')!r}"
        _parts_list(message.get("parts"))


def _output_messages(messages: Any) -> None:
    _input_messages(messages)
    for message in messages:
        assert isinstance(message.get("finish_reason"), str), "no finish_reason"


def _parts_list(parts: Any) -> None:
    assert isinstance(parts, list), "parts is not a list"
    for part in parts:
        assert isinstance(part, dict) and isinstance(part.get("type"), str), "a part has no type"
        for key in PART_TYPES_REQUIRED.get(part["type"], ()):
            assert key in part, f"a {part['type']} part lacks {key}"
        if part["type"] == "text":
            assert isinstance(part["content"], str), "text content is not a string"
        if part["type"] == "tool_call":
            assert not isinstance(part.get("arguments"), str) or not part["arguments"].startswith(
                "{"
            ), "tool call arguments as a JSON string, not structure"


def _metric_problems(metrics: Mapping[str, list[Any]]) -> list[str]:
    out: list[str] = []
    for name, points in metrics.items():
        if name in AIGUARD_METRICS or name.startswith(DETAILED_USAGE):
            continue
        rule = METRICS.get(name)
        if rule is None:
            out.append(f"metric {name} is in no table")
            continue
        _, buckets, extra = rule
        for point in points:
            bounds = getattr(point, "explicit_bounds", None)
            if buckets is not None and (
                bounds is None or [round(b, 9) for b in bounds] != [round(b, 9) for b in buckets]
            ):
                out.append(f"metric {name}: buckets {bounds} are not the conventions'")
            attrs = dict(point.attributes or {})
            for key in attrs:
                if key not in METRIC_ATTRIBUTES and key not in extra:
                    out.append(f"metric {name}: attribute {key} is not the conventions'")
            for key in ("gen_ai.operation.name", "gen_ai.provider.name"):
                if key not in attrs:
                    out.append(f"metric {name}: required {key} is missing")
            if name == "gen_ai.client.token.usage" and attrs.get("gen_ai.token.type") not in (
                "input",
                "output",
            ):
                out.append(f"metric {name}: gen_ai.token.type must be input or output")
    return out


def _log_problems(logs: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for record in logs:
        event = getattr(record, "event_name", None)
        attrs = dict(record.attributes or {})
        if event == "gen_ai.client.inference.operation.details":
            if record.span_id in (None, 0):
                out.append("the details event is not in the span's context")
            for key in ("gen_ai.operation.name", "gen_ai.provider.name"):
                if key not in attrs:
                    out.append(f"the details event lacks {key}")
            for key in ("gen_ai.input.messages", "gen_ai.output.messages"):
                if isinstance(attrs.get(key), str):
                    out.append(f"the details event has {key} as a JSON string, not structure")
        elif event == sc.EVENT_EXCEPTION and "error.type" not in attrs:
            out.append("the exception event lacks error.type")
        elif event == "gen_ai.evaluation.result":
            out += _evaluation_problems(attrs, record.span_id)
    return out


EVALUATION_ATTRIBUTES = {
    "gen_ai.evaluation.name": STR,
    "gen_ai.evaluation.score.value": DOUBLE,
    "gen_ai.evaluation.score.label": STR,
    "gen_ai.evaluation.explanation": STR,
    "gen_ai.response.id": STR,
}


def _evaluation_problems(attrs: Mapping[str, Any], span_id: int | None) -> list[str]:
    """``gen_ai.evaluation.result``: a name, a score and/or a label, linked to the call."""
    out: list[str] = []
    for key, value in attrs.items():
        kind = EVALUATION_ATTRIBUTES.get(key) or AIGUARD_ATTRIBUTES.get(key)
        if kind is None:
            out.append(f"the evaluation event has {key}, in no table of the conventions")
        elif not _typed(value, kind):
            out.append(f"the evaluation event's {key}={value!r} is not a {kind}")
    if "gen_ai.evaluation.name" not in attrs:
        out.append("the evaluation event lacks gen_ai.evaluation.name")
    if not {"gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label"} & set(attrs):
        out.append("the evaluation event has neither a score value nor a label")
    if span_id in (None, 0) and "gen_ai.response.id" not in attrs:
        out.append("the evaluation event is in no span's context and has no gen_ai.response.id")
    return out
