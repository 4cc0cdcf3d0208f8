"""The testing kit's AWS Bedrock wire: ``converse`` (JSON) and ``converse-stream`` (event stream).

``POST /model/{modelId}/converse`` answers JSON; ``POST /model/{modelId}/converse-stream`` answers
``application/vnd.amazon.eventstream``: binary frames, each a prelude (total length, headers
length, their CRC32), headers (``:event-type``, ``:content-type``, ``:message-type``), a JSON
payload and the CRC32 of the whole frame. Errors come as AWS sends them: the status, an
``x-amzn-errortype`` header naming the exception and ``{"message": ...}``; an in-stream error is
an ``exception`` frame. Point boto3 at the server with ``endpoint_url=server.url`` (any region,
any credentials): the model is read from the path.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
import zlib
from typing import Any
from urllib.parse import unquote

from aiguard.testing._wire import Fault, Reply, Wire, _pieces, _token_counts

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream)$")
# Bedrock's exception by status, as a fault's ``status`` picks it (``code`` names another).
ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
# The answer's stop reason from the Reply's OpenAI-style finish reason.
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "content_filtered",
}
MALFORMED = b'{"output": {"message": '
_STRING = 7  # the header value type of a string


def route(path: str) -> tuple[str, bool] | None:
    """``(modelId, streams)`` for a Bedrock path, else None."""
    found = _PATH.match(path)
    if found is None:
        return None
    return unquote(found["model"]), found["op"] == "converse-stream"


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude and its CRC, headers, payload, the message's CRC."""
    encoded = b""
    for name, value in headers.items():
        key, data = name.encode(), value.encode()
        encoded += struct.pack("!B", len(key)) + key + struct.pack("!BH", _STRING, len(data)) + data
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def event(kind: str, data: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(data).encode())


def exception(kind: str, message: str) -> bytes:
    """An in-stream error; ``kind`` as the stream names it (``throttlingException``)."""
    kind = kind[:1].lower() + kind[1:]
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, json.dumps({"message": message}).encode())


def error(status: int, message: str, code: str | None) -> tuple[bytes, dict[str, str]]:
    """An error answer's body and headers."""
    kind = code or ERRORS.get(status, "InternalServerException" if status >= 500 else "Error")
    headers = {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    headers["x-amzn-requestid"] = str(uuid.uuid4())
    return json.dumps({"message": message}).encode(), headers


def usage(body: dict[str, Any], reply: Reply, content: str) -> dict[str, int]:
    """Bedrock's usage: ``inputTokens`` leaves out what was read from or written to the cache."""
    prompt, output = _token_counts(body, reply, content)
    read, written = reply.cached_tokens or 0, reply.cache_write_tokens or 0
    counts = {"inputTokens": max(prompt - read - written, 0), "outputTokens": output}
    counts["totalTokens"] = prompt + output
    if read:
        counts["cacheReadInputTokens"] = read
    if written:
        counts["cacheWriteInputTokens"] = written
    return counts


def _blocks(content: str, reply: Reply) -> list[dict[str, Any]]:
    if not reply.tool_calls:
        return [{"text": content}]
    return [
        {"toolUse": {"toolUseId": f"tooluse_{i}", "name": c["name"], "input": c["arguments"]}}
        for i, c in enumerate(reply.tool_calls)
    ]


def _stop(reply: Reply) -> str:
    reason = "tool_calls" if reply.tool_calls else reply.finish_reason
    return _STOP.get(reason, reason)


def answer(body: dict[str, Any], reply: Reply, content: str) -> dict[str, Any]:
    """A ``converse`` answer."""
    message = {"role": "assistant", "content": _blocks(content, reply)}
    answered: dict[str, Any] = {"output": {"message": message}, "stopReason": _stop(reply)}
    if reply.usage:
        answered["usage"] = usage(body, reply, content)
    answered["metrics"] = {"latencyMs": 1}
    return answered


def stream_frames(
    body: dict[str, Any], reply: Reply, content: str, pieces: list[str], truncate: bool
) -> list[tuple[bytes, bool]]:
    """A ``converse-stream`` answer's frames, each saying whether it counts as a chunk (the
    message's start does not: a fault cuts after it)."""
    frames: list[tuple[bytes, bool]] = [(event("messageStart", {"role": "assistant"}), False)]
    if reply.tool_calls:
        for i, block in enumerate(_blocks(content, reply)):
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            delta = {"toolUse": {"input": json.dumps(use["input"])}}
            at: dict[str, Any] = {"contentBlockIndex": i}
            frames.append((event("contentBlockStart", {"start": start, **at}), True))
            frames.append((event("contentBlockDelta", {"delta": delta, **at}), True))
            frames.append((event("contentBlockStop", {"contentBlockIndex": i}), True))
    else:
        for piece in pieces:
            text = {"delta": {"text": piece}, "contentBlockIndex": 0}
            frames.append((event("contentBlockDelta", text), True))
        frames.append((event("contentBlockStop", {"contentBlockIndex": 0}), True))
    if not truncate:
        frames.append((event("messageStop", {"stopReason": _stop(reply)}), True))
        metadata: dict[str, Any] = {"metrics": {"latencyMs": 1}}
        if reply.usage:
            metadata["usage"] = usage(body, reply, content)
        frames.append((event("metadata", metadata), True))
    return frames


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    return {"message": message}


class BedrockWire(Wire):
    def _bedrock(
        self, model: str, streams: bool, body: dict[str, Any], reply: Reply, fault: Fault | None
    ) -> None:
        """Answer a ``converse`` or ``converse-stream`` request for ``model`` (from the path)."""
        content = reply.content if reply.content is not None else f"Hello from {model}."
        headers = {"x-amzn-requestid": str(uuid.uuid4()), **(fault.headers if fault else {})}
        if not streams:
            self._json(200, answer(body, reply, content), headers)
            return
        truncate = bool(fault and fault.truncate)
        frames = stream_frames(body, reply, content, _pieces(content), truncate)
        # As AWS sends it: chunked, one event a chunk, so the SDK reads each as it comes.
        sent = [(_chunk(data), counts) for data, counts in frames] + [(_chunk(b""), False)]
        failure = None
        if fault is not None and fault.stream_error:
            failure = _chunk(exception(fault.stream_error, "mock stream error")) + _chunk(b"")
        headers["transfer-encoding"] = "chunked"
        self._stream(CONTENT_TYPE, sent, fault, failure, headers)

    def _error(self, dialect: str, status: int, message: str, fault: Fault | None = None) -> None:
        """Bedrock's errors name their exception in ``x-amzn-errortype``; others as they are."""
        if dialect != "bedrock":
            super()._error(dialect, status, message, fault)
            return
        data, headers = error(status, message, fault.code if fault else None)
        self._raw(status, data, {**headers, **(fault.headers if fault else {})})


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
