"""Neutral types shared by the core and the provider adapters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    """Token usage as the provider reported it; ``None`` where it said nothing.

    As in the GenAI conventions, cache and reasoning tokens are included in the input and output
    totals.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
