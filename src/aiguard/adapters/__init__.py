"""Provider adapters, one module each, loaded only once their SDK has been imported.

An object or exception of an SDK that was never imported cannot exist, so an adapter whose SDK
is absent from ``sys.modules`` is never needed.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

# SDK module -> (adapter module, what it wraps).
ADAPTERS: dict[str, tuple[str, str]] = {
    "openai": ("aiguard.adapters._openai", "openai.OpenAI, openai.AsyncOpenAI"),
    "llama_cpp": ("aiguard.adapters._llama_cpp", "llama_cpp.Llama"),
    "anthropic": ("aiguard.adapters._anthropic", "anthropic.Anthropic, anthropic.AsyncAnthropic"),
    "ollama": ("aiguard.adapters._ollama", "ollama.Client, ollama.AsyncClient"),
    "botocore": ("aiguard.adapters._bedrock", "boto3.client('bedrock-runtime') (sync)"),
    "google.genai": ("aiguard.adapters._gemini", "google.genai.Client (and its client.aio)"),
}


def loaded(sdk: str) -> ModuleType | None:
    """The adapter for the SDK module ``sdk``, if there is one and that SDK is imported."""
    entry = ADAPTERS.get(sdk)
    if entry is None or sdk not in sys.modules:
        return None
    return importlib.import_module(entry[0])


def for_module(module: str) -> ModuleType | None:
    """The adapter of the SDK a module belongs to (``google.genai.errors``: google.genai's),
    if that SDK is imported."""
    for sdk in ADAPTERS:
        if module == sdk or module.startswith(sdk + "."):
            return loaded(sdk)
    return None


def supported() -> str:
    """What ``aiguard.wrap`` can wrap, for error messages."""
    return "; ".join(what for _, what in ADAPTERS.values())


def for_client(client: object) -> ModuleType | None:
    """The adapter that can wrap ``client``, if any."""
    for sdk in ADAPTERS:
        adapter = loaded(sdk)
        if adapter is not None and adapter.supports(client):
            return adapter
    return None
