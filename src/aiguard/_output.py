"""Output validation: check what a model answered, and re-ask it with the errors when it is wrong.

``output=`` on ``wrap`` / ``guard`` is a pydantic model (or any type pydantic can validate) or a
callable that returns the validated value and raises when the value is wrong. For a wrapped
client the text of the answer is validated (JSON for a model; each adapter's route reads the
text and makes the re-ask request, see :class:`aiguard._engine.contract.Route`); the caller
still gets the SDK's own response. For a decorated function its return value is validated (a
JSON string or a dict becomes the model), and the validated value is returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic

# pydantic is imported where an ``output=`` is compiled or checked, not with aiguard: a wrapped
# client that validates nothing never loads it.


class OutputSpec:
    """A compiled ``output=``: validates a value, or raises :class:`InvalidOutput`."""

    def __init__(self, output: Any) -> None:
        import pydantic

        self.output = output
        self.adapter: pydantic.TypeAdapter[Any] | None = None
        self.function: Callable[[Any], Any] | None = None
        if isinstance(output, type) or not callable(output):
            try:
                self.adapter = pydantic.TypeAdapter(output)
            except Exception as exc:
                raise TypeError(
                    f"output= must be a pydantic model, a type pydantic can validate, or a "
                    f"callable that validates; got {output!r} ({exc})"
                ) from None
        else:
            self.function = output
        self.name = getattr(output, "__qualname__", None) or repr(output)

    def validate(self, value: Any) -> Any:
        """The validated value; raises :class:`InvalidOutput` listing what is wrong."""
        import pydantic

        if self.function is not None:
            try:
                return self.function(value)
            except Exception as exc:
                raise InvalidOutput([str(exc) or type(exc).__name__]) from exc
        assert self.adapter is not None
        try:
            if isinstance(value, str | bytes):
                try:
                    return self.adapter.validate_json(value)
                except pydantic.ValidationError as exc:
                    if _json_failed(exc):
                        return self.adapter.validate_python(value)
                    raise
            return self.adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise InvalidOutput(_describe(exc)) from None


class InvalidOutput(Exception):
    """An answer that did not validate, with what was wrong (never the answer itself)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _json_failed(error: pydantic.ValidationError) -> bool:
    # The text was not JSON at all: a plain-text output (output=str) validates as it is.
    return any(e["type"] == "json_invalid" for e in error.errors())


def _describe(error: pydantic.ValidationError) -> list[str]:
    # Locations and messages only: the model's answer is not repeated into logs.
    out = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "answer"
        out.append(f"{where}: {item['msg']}")
    return out


def feedback(errors: list[str]) -> str:
    """What a re-ask tells the model."""
    listed = "\n".join(f"- {e}" for e in errors)
    return (
        "Your previous answer did not match the required format:\n"
        f"{listed}\n"
        "Answer again, in the required format only."
    )


# How each adapter reads its provider's answer text (registered when the adapter is imported;
# see aiguard.adapters._shapes.reads): the text, or None for another provider's answer.
ANSWER_READERS: list[Callable[[Any], Any]] = []


def answer_text(result: Any) -> Any:
    """The text of a model client's answer, read by its adapter's reader; else the value itself.

    For code below the adapters that holds an answer but not its route (a judge's reply); a
    guarded call asks its route (``Route.answer_text``).
    """
    for read in ANSWER_READERS:
        text = read(result)
        if text is not None:
            return text
    return result


def previous_text(raw: Any) -> str:
    """A wrong answer as the text a re-ask sends back to the model."""
    return raw if isinstance(raw, str) else _to_json(raw)


def _to_json(value: Any) -> str:
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    try:
        return json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return repr(value)
