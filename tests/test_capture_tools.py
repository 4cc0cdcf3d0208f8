"""``gen_ai.tool.definitions`` for every adapter's request shape (each route reads its own:
``Route.tool_definitions``), recorded with content capture on, over the real SDKs."""

from __future__ import annotations

import json
from typing import Any

import boto3
import ollama
import pytest
from google import genai
from google.genai import types
from tests.conftest import API_KEY, MESSAGES

import aiguard

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather.",
    "parameters": SCHEMA,
}


@pytest.fixture
def capture(telemetry: Any) -> Any:
    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content="SPAN_ONLY",
    )
    return telemetry


def _definitions(telemetry: Any, span: str) -> Any:
    return json.loads(telemetry.span(span).attributes["gen_ai.tool.definitions"])


def local_time(city: str) -> str:
    """The time in a city."""
    return "noon"


def test_gemini_tool_definitions_are_recorded(server, capture):
    client = aiguard.wrap(
        genai.Client(api_key=API_KEY, http_options={"base_url": server.gemini_url})
    )
    declared = types.FunctionDeclaration(
        name="weather", description="The weather.", parameters_json_schema=SCHEMA
    )
    typed = types.FunctionDeclaration(
        name="rain",
        parameters=types.Schema(
            type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}
        ),
    )
    config = types.GenerateContentConfig(
        tools=[
            types.Tool(function_declarations=[declared, typed]),
            types.Tool(google_search=types.GoogleSearch()),
        ]
    )
    client.models.generate_content(model="gemini-2.0-flash", contents="Hi", config=config)
    assert _definitions(capture, "chat gemini-2.0-flash") == [
        WEATHER,
        {"type": "function", "name": "rain", "parameters": SCHEMA},
        {"type": "google_search", "name": "google_search"},
    ]


def test_a_gemini_python_function_tool_is_recorded_by_its_name(server, capture):
    client = aiguard.wrap(
        genai.Client(api_key=API_KEY, http_options={"base_url": server.gemini_url})
    )
    config = {"tools": [local_time], "automatic_function_calling": {"disable": True}}
    client.models.generate_content(model="gemini-2.0-flash", contents="Hi", config=config)
    assert _definitions(capture, "chat gemini-2.0-flash") == [
        {"type": "function", "name": "local_time", "description": "The time in a city."}
    ]


def test_bedrock_tool_definitions_are_recorded(server, capture):
    client = aiguard.wrap(
        boto3.client(
            "bedrock-runtime",
            endpoint_url=server.anthropic_url,
            region_name="eu-west-1",
            aws_access_key_id="AKIDAIGUARDTEST",
            aws_secret_access_key="aiguard-test-secret",
        )
    )
    spec = {"name": "weather", "description": "The weather.", "inputSchema": {"json": SCHEMA}}
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    client.converse(
        modelId=model,
        messages=[{"role": "user", "content": [{"text": "Hi"}]}],
        toolConfig={"tools": [{"toolSpec": spec}, {"cachePoint": {"type": "default"}}]},
    )
    assert _definitions(capture, f"chat {model}") == [WEATHER]


def test_an_ollama_python_function_tool_is_recorded_as_its_schema(server, capture):
    client = aiguard.wrap(ollama.Client(host=server.ollama_url))
    client.chat(model="llama3", messages=MESSAGES, tools=[local_time])
    [definition] = _definitions(capture, "chat llama3")
    assert definition["name"] == "local_time" and definition["type"] == "function"
    assert definition["description"] == "The time in a city."
    assert definition["parameters"]["properties"]["city"]["type"] == "string"


def test_no_tools_no_definitions(server, capture):
    client = aiguard.wrap(
        genai.Client(api_key=API_KEY, http_options={"base_url": server.gemini_url})
    )
    client.models.generate_content(model="gemini-2.0-flash", contents="Hi")
    assert "gen_ai.tool.definitions" not in capture.span("chat gemini-2.0-flash").attributes
