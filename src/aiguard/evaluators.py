"""Built-in online evaluators for ``evaluate=[...]``: none needs a download.

An evaluator is any callable ``evaluator(messages, answer, **context)``: ``messages`` are the
request's neutral messages (``.role``, ``.text``), ``answer`` the answer's text, and
``context`` holds ``model``, ``provider``, ``tag``, ``finish_reason`` and ``operation``. It
returns a score (a number), a label (a string), a bool (passed or not), a :class:`Result`
(score, label, explanation) or None (nothing to say). Evaluators run off the call path (see
``docs/quality.md``): they never slow a call down or change what it returns.

Example::

    client = aiguard.wrap(
        OpenAI(),
        evaluate=[aiguard.evaluators.Refusal(), aiguard.evaluators.ValidJson()],
        sample=0.2,
    )
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from aiguard._evaluation import Result
from aiguard._messages import Message
from aiguard._quality_spec import fraction

__all__ = [
    "EmptyAnswer",
    "Grounded",
    "Judge",
    "Matches",
    "Refusal",
    "Result",
    "Truncated",
    "ValidJson",
    "is_refusal",
]

_REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) (?:sorry|afraid)[^.]{0,60}\b(?:can(?:no|')t|unable|not able)"
    r"|I (?:can(?:no|')t|won't|will not|am unable to|am not able to) "
    r"(?:help|assist|comply|provide|do that|answer|fulfil|support)"
    r"|(?:against|violates?) (?:my|our|the) (?:guidelines|policies|policy|usage polic)"
    r"|as an AI(?: language model)?, I (?:can(?:no|')t|am not able|don't))",
    re.IGNORECASE,
)


def is_refusal(answer: str) -> bool:
    """Does the answer read like a refusal ("I'm sorry, but I can't help with that")?"""
    return bool(_REFUSAL.search(answer[:2000]))


class Refusal:
    """Passes when the model answered, fails (label ``refused``) when it refused."""

    name = "refusal"

    def __call__(self, messages: Sequence[Message], answer: str, **context: Any) -> Result:
        refused = is_refusal(answer)
        return Result(
            0.0 if refused else 1.0, "refused" if refused else "answered", passed=not refused
        )


class EmptyAnswer:
    """Fails an answer with no text (only whitespace)."""

    name = "empty_answer"

    def __call__(self, messages: Sequence[Message], answer: str, **context: Any) -> Result:
        empty = not answer.strip()
        return Result(0.0 if empty else 1.0, "empty" if empty else "non_empty", passed=not empty)


class Truncated:
    """Fails an answer cut at the token limit (finish reason ``length`` / ``max_tokens``)."""

    name = "truncated"
    _CUT = frozenset({"length", "max_tokens", "max_output_tokens"})

    def __call__(self, messages: Sequence[Message], answer: str, **context: Any) -> Result:
        cut = str(context.get("finish_reason") or "") in self._CUT
        return Result(0.0 if cut else 1.0, "truncated" if cut else "complete", passed=not cut)


class ValidJson:
    """Passes an answer that is JSON (inside a fenced block too), and valid for ``model`` if
    given (a pydantic model or any type pydantic validates)."""

    name = "valid_json"

    def __init__(self, model: Any = None) -> None:
        self.adapter: Any = None
        if model is not None:
            import pydantic

            try:
                self.adapter = pydantic.TypeAdapter(model)
            except Exception as exc:
                raise TypeError(
                    f"ValidJson(model=...) must be a type pydantic validates: {exc}"
                ) from None

    def __call__(self, messages: Sequence[Message], answer: str, **context: Any) -> Result:
        text = _unfenced(answer)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return Result(0.0, "invalid", f"not JSON: {exc.msg} at {exc.pos}", passed=False)
        if self.adapter is not None:
            try:
                self.adapter.validate_python(value)
            except Exception as exc:
                errors = getattr(exc, "error_count", lambda: 1)()
                return Result(0.0, "invalid", f"{errors} validation error(s)", passed=False)
        return Result(1.0, "valid", passed=True)


def _unfenced(text: str) -> str:
    match = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    return (match.group(1) if match else text).strip()


class Matches:
    """Passes when the answer matches ``pattern`` (``must=False``: when it does not)."""

    def __init__(self, pattern: str, *, must: bool = True, name: str | None = None) -> None:
        if not isinstance(pattern, str):
            raise TypeError(
                f"Matches(pattern=...) must be a regular expression string, got {pattern!r}"
            )
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"Matches(pattern=...) is not a valid regular expression: {exc}"
            ) from None
        if not isinstance(must, bool):
            raise TypeError("Matches(must=...) must be True or False")
        self.must = must
        self.name = name or ("matches" if must else "does_not_match")

    def __call__(self, messages: Sequence[Message], answer: str, **context: Any) -> bool:
        return bool(self.pattern.search(answer)) is self.must


_WORD = re.compile(r"[^\W_]{3,}", re.UNICODE)
# fmt: off
_STOP = frozenset({
    "the", "and", "for", "are", "but", "not", "you", "your", "with", "this", "that", "from",
    "have", "has", "was", "were", "will", "would", "can", "could", "should", "there", "their",
    "they", "them", "what", "which", "when", "where", "who", "how", "its", "into", "than", "then",
    "also", "about", "been", "being", "does", "did", "here", "more", "most", "such", "only",
    "other", "some", "very", "just",
})
# fmt: on


def _words(text: str) -> set[str]:
    return {w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in _STOP}


class Grounded:
    """A cheap groundedness heuristic: the share of the answer's content words found in the
    context (``context=`` given here, else the request's system and tool messages).

    Not a fact checker: it catches answers that wander away from the given material. The score
    is that share (0 to 1); it passes at ``threshold``.
    """

    name = "grounded"

    def __init__(self, context: str | None = None, *, threshold: float = 0.6) -> None:
        if context is not None and not isinstance(context, str):
            raise TypeError("Grounded(context=...) must be a string or None")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0 <= threshold <= 1
        ):
            raise ValueError("Grounded(threshold=...) must be a number from 0 to 1")
        self.context = context
        self.threshold = float(threshold)

    def __call__(self, messages: Sequence[Message], answer: str, **context: Any) -> Result | None:
        source = self.context
        if source is None:
            source = "\n".join(m.text for m in messages if m.role in ("system", "tool"))
        said = _words(answer)
        if not said or not source.strip():
            return None
        known = _words(source)
        score = round(len(said & known) / len(said), 4)
        return Result(
            score,
            explanation=f"{len(said & known)} of {len(said)} content words in the context",
            passed=score >= self.threshold,
        )


_JUDGE_PROMPT = """You grade an AI assistant's answer.
Rubric: {rubric}

Question:
{question}

Answer:
{answer}

Grade the answer against the rubric from 1 (bad) to 5 (excellent).
Reply with the grade as a single digit first, then one short sentence why."""
GRADE_SCHEMA = {
    "type": "object",
    "properties": {"grade": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["grade"],
}
_GRADE = re.compile(r"\b([1-5])(?:\s*/\s*5)?\b")


class Judge:
    """LLM-as-judge: a guarded client grades each answer against a rubric.

    ``client`` is any client ``aiguard.wrap`` returns (openai, anthropic, ollama, llama.cpp) or
    a plain function ``ask(prompt) -> str``; ``model`` names the judge's model where the client
    needs one. The grade (1 to 5) becomes a score from 0 to 1 (``(grade - 1) / 4``), with the
    judge's words as the explanation. Give the judge's client no ``evaluate=`` of its own.
    ``sample`` judges only that fraction of the calls evaluated (the other evaluators of the
    policy still see every one): any evaluator may carry such a ``sample`` attribute.
    ``request`` adds keywords to the judge's call; a small local model grades reliably when
    its answer is held to :data:`GRADE_SCHEMA`, e.g. with llama.cpp
    ``request={"response_format": {"type": "json_object", "schema": GRADE_SCHEMA}}``.

    Example::

        judge = aiguard.evaluators.Judge(aiguard.wrap(OpenAI()), "Is it correct and polite?",
                                         model="gpt-4o-mini")
    """

    def __init__(
        self,
        client: Any,
        rubric: str,
        *,
        model: str | None = None,
        name: str = "judge",
        max_tokens: int = 48,
        request: dict[str, Any] | None = None,
        sample: float = 1.0,
    ) -> None:
        if not isinstance(rubric, str) or not rubric.strip():
            raise TypeError("Judge(rubric=...) must be a non-empty string")
        if not isinstance(name, str) or not name.strip():
            raise TypeError("Judge(name=...) must be a non-empty string")
        if model is not None and not isinstance(model, str):
            raise TypeError("Judge(model=...) must be a model name or None")
        if request is not None and not isinstance(request, dict):
            raise TypeError("Judge(request=...) must be a dict of the client call's keywords")
        self.ask = _asker(client, {"model": model} if model else {}, max_tokens, request or {})
        self.rubric = rubric
        self.name = name
        self.sample = fraction("Judge(sample=...)", sample)

    def __call__(self, messages: Sequence[Message], answer: str, **context: Any) -> Result | None:
        question = next((m.text for m in reversed(messages) if m.role == "user"), "")
        prompt = _JUDGE_PROMPT.format(
            rubric=self.rubric, question=question[:4000], answer=answer[:4000]
        )
        reply = self.ask(prompt)
        found = _GRADE.search(reply or "")
        if found is None:
            raise ValueError("the judge's reply holds no grade from 1 to 5")
        grade = int(found.group(1))
        return Result((grade - 1) / 4, f"grade_{grade}", reply.strip()[:500])


def _asker(client: Any, named: dict[str, Any], max_tokens: int, extra: dict[str, Any]) -> Any:
    """A function ``prompt -> reply text`` for the judge's client."""
    from aiguard._output import answer_text

    def chat(prompt: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": prompt}]

    named = {**named, **extra}
    if hasattr(client, "create_chat_completion"):  # llama.cpp
        return lambda p: answer_text(
            client.create_chat_completion(
                messages=chat(p), max_tokens=max_tokens, temperature=0.0, **named
            )
        )
    completions = getattr(getattr(client, "chat", None), "completions", None)
    if completions is not None:  # openai
        return lambda p: answer_text(
            completions.create(messages=chat(p), max_tokens=max_tokens, temperature=0, **named)
        )
    messages_api: Any = getattr(client, "messages", None)
    if hasattr(messages_api, "create"):  # anthropic
        return lambda p: answer_text(
            messages_api.create(messages=chat(p), max_tokens=max_tokens, **named)
        )
    if callable(getattr(client, "chat", None)):  # ollama
        return lambda p: answer_text(client.chat(messages=chat(p), **named))
    if callable(client):
        return lambda p: str(client(p))
    raise TypeError(
        f"Judge(client=...) must be a wrapped model client or a function prompt -> text, "
        f"got {client!r}"
    )
