"""Attribute and metric names aiguard emits, spelled once.

The GenAI conventions live in open-telemetry/semantic-conventions-genai; the constants shipped in
``opentelemetry-semantic-conventions`` are deprecated, so the names are strings here.
"""

from __future__ import annotations

# GenAI inference span attributes
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_STOP = "gen_ai.request.stop_sequences"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_ENCODING_FORMATS = "gen_ai.request.encoding_formats"
# The request parameters the conventions type as doubles (``temperature=1`` is ``1.0``).
DOUBLE_ATTRIBUTES = (
    REQUEST_TEMPERATURE,
    REQUEST_TOP_P,
    REQUEST_TOP_K,
    REQUEST_FREQUENCY_PENALTY,
    REQUEST_PRESENCE_PENALTY,
)
REQUEST_REASONING_LEVEL = "gen_ai.request.reasoning.level"
CONVERSATION_ID = "gen_ai.conversation.id"
PREVIOUS_RESPONSE_ID = "gen_ai.previous_response.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
AGENT_NAME = "gen_ai.agent.name"
OUTPUT_TYPE = "gen_ai.output.type"
EMBEDDINGS_DIMENSION = "gen_ai.embeddings.dimension.count"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT = "gen_ai.usage.input_tokens"
USAGE_OUTPUT = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
USAGE_CACHE_WRITE = "gen_ai.usage.cache_write.input_tokens"  # its newest name
USAGE_REASONING = "gen_ai.usage.reasoning.output_tokens"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

OPENAI_API_TYPE = "openai.api.type"
OPENAI_REQUEST_SERVICE_TIER = "openai.request.service_tier"
OPENAI_RESPONSE_SERVICE_TIER = "openai.response.service_tier"
OPENAI_SYSTEM_FINGERPRINT = "openai.response.system_fingerprint"

# aiguard's own attributes, for what the conventions lack
GUARD_ATTEMPTS = "aiguard.attempts"
GUARD_RETRIES = "aiguard.retries"
GUARD_OUTCOME = "aiguard.outcome"
GUARD_FUNCTION = "aiguard.function"
ATTEMPT = "aiguard.attempt"
ATTEMPT_MODEL = "aiguard.attempt.model"
ATTEMPT_DURATION = "aiguard.attempt.duration_s"
FALLBACK_USED = "aiguard.fallback.used"
FALLBACK_MODEL = "aiguard.fallback.model"
FALLBACK_REASON = "aiguard.fallback.reason"
FAILURE_CLASS = "aiguard.failure.class"
RETRY_WAIT = "aiguard.retry.wait_s"
BREAKER_SKIPPED = "aiguard.breaker.skipped"
BREAKER_STATE = "aiguard.breaker.state"
DEADLINE = "aiguard.deadline_s"
COST_USD = "aiguard.cost.usd"
COST_TOTAL_USD = "aiguard.cost.total_usd"
COST_BASIS = "aiguard.cost.basis"
COST_UNKNOWN = "aiguard.cost.unknown"
COST_CHARGED_USD = "aiguard.cost.charged_usd"
BUDGET_REMAINING_USD = "aiguard.budget.remaining_usd"
TAG = "aiguard.tag"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
STREAM_CHUNKS = "aiguard.stream.chunks"
STREAM_ABANDONED = "aiguard.stream.abandoned"
REFUSAL_KIND = "aiguard.refusal"
WAIT_KIND = "aiguard.wait"
RATE_LIMIT_WAIT = "aiguard.rate_limit.wait_s"
RATE_LIMIT_SKIPPED = "aiguard.rate_limit.skipped"
CHECKS = "aiguard.checks"
CHECK_NAME = "aiguard.check"
CHECK_FAILED = "aiguard.check.failed"
REASKS = "aiguard.reasks"
OUTPUT_ERRORS = "aiguard.output.errors"

# Metrics
METRIC_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKENS = "gen_ai.client.token.usage"
# With OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental, the newest usage metrics.
OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
OPT_IN_LATEST = "gen_ai_latest_experimental"
METRIC_INPUT_TOKENS = "gen_ai.client.inference.usage.input_tokens"
METRIC_OUTPUT_TOKENS = "gen_ai.client.inference.usage.output_tokens"
METRIC_DETAILED = "gen_ai.client.inference.usage.detailed."  # + input_tokens, ...
TOKEN_MODALITY = "gen_ai.token.modality"
METRIC_RETRIES = "aiguard.retries"
METRIC_FALLBACKS = "aiguard.fallbacks"
METRIC_BREAKER = "aiguard.breaker.transitions"
METRIC_COST = "aiguard.cost"
METRIC_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
METRIC_CHUNK_TIME = "gen_ai.client.operation.time_per_output_chunk"
METRIC_REFUSALS = "aiguard.refusals"
METRIC_REASKS = "aiguard.reasks"
# The shared store (Redis): each operation's duration, and its failures.
METRIC_STORE_DURATION = "aiguard.store.duration"
METRIC_STORE_ERRORS = "aiguard.store.errors"
STORE_OPERATION = "aiguard.store.operation"
STORE_BUCKETS = [0.0001 * 2**i for i in range(14)]  # 0.1 ms ... 0.8 s
# Calls that waited for a rate limit's room, and how long.
METRIC_WAITS = "aiguard.waits"
TOKEN_TYPE = "gen_ai.token.type"
# The attributes the conventions put on the GenAI client metrics (plus error.type on failure).
METRIC_KEYS = (OPERATION, PROVIDER, REQUEST_MODEL, SERVER_ADDRESS, SERVER_PORT)

# Events (log records)
EVENT_EXCEPTION = "gen_ai.client.operation.exception"

DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 ... 81.92 s
# The streaming timings use the same advised buckets as the duration.
CHUNK_BUCKETS = DURATION_BUCKETS
TOKEN_BUCKETS = [4**i for i in range(14)]  # 1 ... 67108864
# Fallback across providers (aiguard.adapters._pivot): what a translation left out, and for whom.
TRANSLATION_DROPPED_EVENT = "aiguard.translation.dropped"
TRANSLATION_FIELDS = "aiguard.translation.fields"
TRANSLATION_TARGET = "aiguard.translation.target"
