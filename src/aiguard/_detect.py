"""The detectors behind the built-in checks: secrets and personal data in plain text.

Everything here is plain Python (``re``): no model, no download. Patterns are compiled once at
import, and every pattern is bounded or anchored so that a megabyte of prompt is scanned in a
fraction of a second, whatever it holds. :mod:`aiguard.checks` re-exports the public helpers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from aiguard._patterns import _DIGITS, _PII, _PII_NAMES, _SECRETS, PII_KINDS, _Detector


class Finding(NamedTuple):
    """One match of a detector in a string: its ``kind`` and the ``text[start:end]`` it covers.

    Example::

        >>> find_pii("mail ada@example.com")
        [Finding(kind='email', start=5, end=20)]
    """

    kind: str
    start: int
    end: int


# -- scanning ------------------------------------------------------------------------------------


class _Found(NamedTuple):
    start: int
    end: int
    rank: int
    detector: _Detector


def _scan(text: str, detectors: Iterable[_Detector], priority: int = 0) -> Iterator[_Found]:
    lowered: str | None = None
    for rank, detector in enumerate(detectors, priority):
        if detector.hints:
            if lowered is None:
                lowered = text.lower()
            if not any(hint in lowered for hint in detector.hints):
                continue  # a substring search is far cheaper than the pattern
        for match in detector.pattern.finditer(text):
            if detector.valid is None or detector.valid(match):
                group = (match.lastindex or 0) if detector.group is None else detector.group
                if match.end(group) > match.start(group):  # a custom pattern may match ""
                    yield _Found(match.start(group), match.end(group), rank, detector)


def _resolve(found: Iterable[_Found]) -> list[_Found]:
    """Overlapping matches become one, covering all of them (nothing half-redacted), named by
    a secret before personal data, then by the leftmost and most specific detector."""
    clusters: list[list[_Found]] = []
    end = -1
    for item in sorted(found, key=lambda f: (f.start, -f.end, f.rank)):
        if clusters and item.start < end:
            clusters[-1].append(item)
            end = max(end, item.end)
        else:
            clusters.append([item])
            end = item.end
    resolved = []
    for cluster in clusters:
        best = min(cluster, key=lambda f: (f.detector.kind in _PII_NAMES, f.start, f.rank))
        last = max(item.end for item in cluster)
        resolved.append(_Found(cluster[0].start, last, best.rank, best.detector))
    return resolved


def _pii_detectors(kinds: Iterable[str]) -> tuple[_Detector, ...]:
    wanted = set(kinds)
    return tuple(detector for detector in _PII if detector.kind in wanted)


def _findings(text: str, secrets: Sequence[_Detector], pii: Sequence[_Detector]) -> list[_Found]:
    found = list(_scan(text, secrets))
    if pii and _could_hold_pii(text):
        found.extend(_scan(text, pii, priority=len(secrets)))
    return _resolve(found)


def _could_hold_pii(text: str) -> bool:
    # Every kind of personal data here has a digit or an "@": prose without either is clean.
    return "@" in text or _DIGITS.search(text) is not None


def find_secrets(text: str) -> list[str]:
    """The kinds of credential in ``text``, in order of first appearance (see SECRET_KINDS).

    Example::

        >>> find_secrets("export GITHUB_TOKEN=ghp_" + "a1B2" * 9)
        ['github_token']
    """
    kinds: dict[str, None] = {}
    for item in _findings(text, _SECRETS, ()):
        kinds.setdefault(item.detector.kind)
    return list(kinds)


def find_pii(text: str, kinds: Iterable[str] = PII_KINDS) -> list[Finding]:
    """Where ``text`` holds personal data of the given kinds (see PII_KINDS), in order.

    Findings never overlap: matches that share characters become one finding covering them all,
    named after the leftmost.

    Example::

        >>> find_pii("call +44 20 7946 0958 or mail ada@example.com")
        [Finding(kind='phone', start=5, end=21), Finding(kind='email', start=30, end=45)]
    """
    detectors = _pii_detectors(_kinds(kinds))
    return [
        Finding(item.detector.kind, item.start, item.end) for item in _findings(text, (), detectors)
    ]


def scrub(text: str, pii: bool = True) -> str:
    """``text`` with every credential, and with ``pii`` every piece of personal data, replaced
    by a marker naming its kind, such as ``[REDACTED:openai_api_key]`` or ``[REDACTED:email]``.

    For a ``password=`` assignment only the value is replaced, so the text still reads.

    Example::

        >>> scrub("password=hunter22 for ada@example.com")
        'password=[REDACTED:secret_assignment] for [REDACTED:email]'
    """
    return _replace(text, _findings(text, _SECRETS, _PII if pii else ()))


def _replace(text: str, found: Sequence[_Found]) -> str:
    if not found:
        return text
    pieces: list[str] = []
    position = 0
    for item in found:
        pieces.append(text[position : item.start])
        pieces.append(f"[REDACTED:{item.detector.kind}]")
        position = item.end
    pieces.append(text[position:])
    return "".join(pieces)


def _kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    if not isinstance(kinds, str) and (
        isinstance(kinds, bytes | dict) or not isinstance(kinds, Iterable)
    ):
        raise TypeError(
            f"NoPII(kinds=...) takes a kind or a list of them ({', '.join(PII_KINDS)}), "
            f"got {kinds!r}"
        )
    chosen = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [kind for kind in chosen if kind not in _PII_NAMES]
    if unknown or not chosen:
        raise ValueError(
            f"kinds= must name one or more of {', '.join(PII_KINDS)}; got {list(chosen)!r}"
        )
    return chosen
