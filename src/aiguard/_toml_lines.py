"""Where a key of a TOML text is: tomllib reports no positions, so the lines are found by
scanning the text for each key's table and key (and an array item's start).

A best effort, used only to name the line in an error message.
"""

from __future__ import annotations

import bisect
import re
import tomllib

Key = tuple[str | int, ...]


# -- locating keys in the text --------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\r\n#]+")


class _Locator:
    """The line on which each key and array item starts, in TOML that tomllib accepted."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [index for index, char in enumerate(text) if char == "\n"]
        self.lines: dict[Key, int] = {}
        self.arrays: dict[Key, int] = {}

    def run(self) -> dict[Key, int]:
        text = self.text
        table: Key = ()
        while True:
            self.skip()
            if self.pos >= len(text):
                return self.lines
            start = self.pos
            if text.startswith("[[", self.pos):
                self.pos += 2
                path = self.key()
                self.expect("]]")
                index = self.arrays[path] = self.arrays.get(path, -1) + 1
                self.mark(path, start)
                table = (*path, index)
            elif text[self.pos] == "[":
                self.pos += 1
                table = self.key()
                self.expect("]")
            else:
                self.pair(table)
                continue
            self.mark(table, start)

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def mark(self, key: Key, pos: int) -> None:
        # The enclosing tables too: ``[a.b]`` or ``a.b = 1`` is where ``a`` first appears.
        line = self.line(pos)
        for length in range(1, len(key) + 1):
            self.lines.setdefault(key[:length], line)

    def skip(self, newlines: bool = True) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def expect(self, token: str) -> None:
        self.skip(newlines=False)
        if not self.text.startswith(token, self.pos):
            raise ValueError(f"expected {token!r} at {self.pos}")
        self.pos += len(token)

    def key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self.skip(newlines=False)
            char = self.text[self.pos]
            if char == '"':
                parts.append(tomllib.loads(f"k = {self.string(char)}")["k"])
            elif char == "'":
                parts.append(self.string(char)[1:-1])
            else:
                bare = _BARE.match(self.text, self.pos)
                if bare is None:
                    raise ValueError(f"no key at {self.pos}")
                parts.append(bare.group())
                self.pos = bare.end()
            self.skip(newlines=False)
            if not self.text.startswith(".", self.pos):
                return tuple(parts)
            self.pos += 1

    def pair(self, table: Key) -> None:
        start = self.pos
        key = (*table, *self.key())
        self.expect("=")
        self.mark(key, start)
        self.value(key)

    def string(self, quote: str) -> str:
        start, text = self.pos, self.text
        self.pos += 1
        while text[self.pos] != quote:
            self.pos += 2 if quote == '"' and text[self.pos] == "\\" else 1
        self.pos += 1
        return text[start : self.pos]

    def multiline(self, quote: str) -> None:
        text = self.text
        self.pos += 3
        while not text.startswith(quote * 3, self.pos):
            self.pos += 2 if quote == '"' and text[self.pos] == "\\" else 1
        self.pos += 3
        for _ in range(2):  # up to two quotes may end the content right before the delimiter
            if text.startswith(quote, self.pos):
                self.pos += 1

    def value(self, key: Key) -> None:
        self.skip(newlines=False)
        text = self.text
        char = text[self.pos]
        if char in "\"'":
            if text.startswith(char * 3, self.pos):
                self.multiline(char)
            else:
                self.string(char)
        elif char in "[{":
            self.pos += 1
            close = "]" if char == "[" else "}"
            index = 0
            while True:
                self.skip()
                if text[self.pos] == close:
                    self.pos += 1
                    return
                if char == "[":
                    self.mark((*key, index), self.pos)
                    self.value((*key, index))
                    index += 1
                else:
                    self.pair(key)
                self.skip()
                if text[self.pos] == ",":
                    self.pos += 1
                elif text[self.pos] != close:
                    raise ValueError(f"expected ',' or {close!r} at {self.pos}")
        else:
            scalar = _SCALAR.match(text, self.pos)
            if scalar is None:
                raise ValueError(f"no value at {self.pos}")
            self.pos = scalar.end()


def _locate(text: str) -> dict[Key, int]:
    locator = _Locator(text)
    try:
        return locator.run()
    except (ValueError, IndexError, tomllib.TOMLDecodeError):
        return locator.lines  # a best effort: what was found before the scan lost its way


def _line_of(lines: dict[Key, int], key: Key) -> int | None:
    """The line of ``key``, or of its nearest enclosing key or table that the scan found."""
    for length in range(len(key), 0, -1):
        line = lines.get(key[:length])
        if line is not None:
            return line
    return None
