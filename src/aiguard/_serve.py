"""``aiguard serve``: the testing kit's fault-injecting server as a process of its own.

For manual and cross-language testing: point any application (a colleague's Node service, a
curl loop) at it and watch it cope with rate limits, outages and slow answers. It speaks OpenAI,
Anthropic and Ollama on one port, prints its URL first, and stops cleanly on Ctrl-C or SIGTERM,
saying how many requests it served and which faults it injected::

    aiguard serve --port 8080 --chaos 0.2 --status 429 --status 503 --latency 100ms-300ms
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TextIO, TypeVar

from aiguard.testing._chaos import KINDS, Chaos, ChaosServer

_T = TypeVar("_T")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``serve``'s flags on a (sub)parser; :func:`run` takes the parsed namespace."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0, help="port (0, the default: a free one)")
    parser.add_argument(
        "--chaos", type=_share, default=0.0, metavar="SHARE",
        help="share of requests that fail, 0 to 1 (e.g. 0.2)",
    )  # fmt: skip
    parser.add_argument(
        "--status", type=_status, action="append", metavar="CODE",
        help="an HTTP error status the failures use (repeatable; default 429, 500 and 503)",
    )  # fmt: skip
    parser.add_argument(
        "--fault", type=_kind, action="append", metavar="KIND",
        help=f"another failure kind: {', '.join(KINDS)} (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--latency", type=_latency, default=(0.0, 0.0), metavar="TIME",
        help="wait before every answer: 200ms, 0.5s, or a range 100ms-300ms",
    )  # fmt: skip
    parser.add_argument(
        "--retry-after", type=_seconds, metavar="TIME",
        help="a Retry-After header on the 429 and 503 answers (e.g. 1s)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, help="repeatable random draws")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM; 0 when stopped so, 2 when the port cannot be taken."""
    out = sys.stdout if out is None else out
    faults = tuple(args.status or ()) + tuple(args.fault or ())
    chaos = Chaos(
        rate=args.chaos,
        faults=faults or Chaos.faults,
        latency=args.latency,
        retry_after=args.retry_after,
        seed=args.seed,
    )
    server = ChaosServer(chaos, args.host, args.port)
    try:
        server.start()
    except OSError as exc:
        print(
            f"aiguard serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _banner(server, out)
        while True:  # until a signal
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    injected = ", ".join(f"{kind} x{n}" for kind, n in sorted(server.injected.items()))
    print(
        f"aiguard serve: stopped after {server.served} requests "
        f"({sum(server.injected.values())} faults injected{': ' + injected if injected else ''})",
        file=out,
        flush=True,
    )
    return 0


def _banner(server: ChaosServer, out: TextIO) -> None:
    chaos, root = server.chaos, server.anthropic_url
    lines = [
        f"aiguard serve: listening on {root}",
        f'  openai:    openai.OpenAI(base_url="{server.url}", api_key="test")',
        f"             or OPENAI_BASE_URL={server.url} OPENAI_API_KEY=test your-app",
        f'  anthropic: anthropic.Anthropic(base_url="{root}", api_key="test")',
        f'  ollama:    ollama.Client(host="{root}")',
        f"  faults:    {_describe(chaos)}",
        "Ctrl-C stops it.",
    ]
    print("\n".join(lines), file=out, flush=True)


def _describe(chaos: Chaos) -> str:
    parts = []
    if chaos.rate:
        kinds = ", ".join(str(f) for f in chaos.faults)
        parts.append(f"{chaos.rate:.0%} of requests fail ({kinds})")
    else:
        parts.append("none (every request answered; --chaos 0.2 fails a fifth)")
    low, high = chaos.latency
    if high:
        wait = f"{low * 1000:g} ms" if low == high else f"{low * 1000:g}-{high * 1000:g} ms"
        parts.append(f"every answer waits {wait}")
    if chaos.retry_after is not None:
        parts.append(f"a 429 or 503 says Retry-After: {chaos.retry_after:g}")
    return "; ".join(parts)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# -- flag values: argparse names the flag in front of these messages -------------------------


def _port(text: str) -> int:
    value = _number(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text!r}")
    return value


def _share(text: str) -> float:
    value = _number(text, float, "a share between 0 and 1 (0.2: a fifth of the requests)")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, got {text!r}")
    return value


def _status(text: str) -> int:
    value = _number(text, int, "an HTTP error status such as 429 or 503")
    if not 400 <= value <= 599:
        raise argparse.ArgumentTypeError(f"an HTTP error status is 400 to 599, got {text!r}")
    return value


def _kind(text: str) -> str:
    if text not in KINDS:
        raise argparse.ArgumentTypeError(f"one of {', '.join(KINDS)}, got {text!r}")
    return text


def _seconds(text: str) -> float:
    found = _DURATION.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"a time with its unit such as 200ms or 0.5s, got {text!r}"
        )
    value = float(found.group(1))
    return value / 1000 if found.group(2) == "ms" else value


def _latency(text: str) -> tuple[float, float]:
    low, sep, high = text.partition("-")
    first = _seconds(low)
    second = _seconds(high) if sep else first
    if second < first:
        raise argparse.ArgumentTypeError(f"a range runs from low to high, got {text!r}")
    return first, second


def _number(text: str, kind: Callable[[str], _T], what: str) -> _T:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
