#!/usr/bin/env python
"""Run the openai and anthropic SDKs' own test suites against aiguard-wrapped clients.

A developer's check of "drop-in" (not run by CI): the SDKs' source distributions ship their
``tests/`` at exactly the released version. This script downloads them (``pip download
--no-binary :all: --no-deps``), then runs each suite three ways and compares:

- ``plain``: as released, the baseline;
- ``wrap``: every client the tests build (``OpenAI(...)``, ``AsyncAnthropic(...)``, subclasses
  too) is handed to the test as ``aiguard.wrap(client)`` with its defaults;
- ``instrument``: ``aiguard.instrument()`` is active for the whole session.

Usage::

    python benchmarks/sdk_suites.py                     # both SDKs, all three modes
    python benchmarks/sdk_suites.py --sdk openai --mode wrap -- -k test_client

``tests/api_resources`` is left out: it needs Stainless's mock API server (prism). The suites
need their own test dependencies in the environment (``respx``, ``pytest-xdist``,
``inline-snapshot``, ``dirty-equals``, ``time-machine``, ``http-snapshot[httpx]``, ``trio``,
``rich``, ``griffe``, ``websockets``, ``botocore``, ``standardwebhooks``); they are not
aiguard's. The SDK versions tested are the installed ones.

The same file is the pytest plugin (``-p sdk_suites``) that swaps the clients in.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

MODES = ("plain", "wrap", "instrument")
SDKS = ("openai", "anthropic")
CLIENTS = {"openai": ("OpenAI", "AsyncOpenAI"), "anthropic": ("Anthropic", "AsyncAnthropic")}
_MODE_VAR = "AIGUARD_SDK_SUITE_MODE"


# -- the pytest plugin ---------------------------------------------------------------------------

# Set while the SDK's own ``copy`` builds a client: that one is the SDK's business (a wrapped
# client's ``copy`` wraps the result itself).
_copying: contextvars.ContextVar[bool] = contextvars.ContextVar("copying", default=False)


def _patch_client(cls: type) -> None:
    import aiguard

    def new(klass: type, *args: Any, **kwargs: Any) -> Any:
        client = object.__new__(klass)
        if _copying.get():
            return client  # type.__call__ runs __init__ on it, as usual
        client.__init__(*args, **kwargs)  # type: ignore[misc]
        # Not an instance of ``klass`` by its real type: type.__call__ leaves it alone.
        return aiguard.wrap(client)

    original_copy = cls.copy  # type: ignore[attr-defined]

    @functools.wraps(original_copy)  # the suites read its signature and type hints
    def copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _copying.set(True)
        try:
            return original_copy(self, *args, **kwargs)
        finally:
            _copying.reset(token)

    cls.__new__ = new  # type: ignore[assignment]
    cls.copy = copy  # type: ignore[attr-defined]
    cls.with_options = copy  # type: ignore[attr-defined]


def pytest_configure(config: Any) -> None:
    mode = os.environ.get(_MODE_VAR, "plain")
    if mode == "wrap":
        for sdk, names in CLIENTS.items():
            module = __import__(sdk)
            for name in names:
                _patch_client(getattr(module, name))
    elif mode == "instrument":
        import aiguard

        aiguard.instrument()


# -- the runner ----------------------------------------------------------------------------------


def _source(sdk: str, work: Path) -> Path:
    version = importlib.metadata.version(sdk)
    folder = work / f"{sdk}-{version}"
    if folder.is_dir():
        return folder
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-binary",
            ":all:",
            "--no-deps",
            "-q",
            "-d",
            str(work),
            f"{sdk}=={version}",
        ],
        check=True,
    )
    with tarfile.open(work / f"{sdk}-{version}.tar.gz") as archive:
        archive.extractall(work, filter="data")
    return folder


def _run(sdk: str, mode: str, source: Path, extra: list[str], timeout: float) -> dict[str, Any]:
    report = source / f"aiguard-{mode}.xml"
    report.unlink(missing_ok=True)
    env = dict(os.environ)
    env[_MODE_VAR] = mode
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--continue-on-collection-errors",
        "-p",
        "sdk_suites",
        f"--junit-xml={report}",
        "--tb=line",
    ]
    if sdk == "anthropic":  # respx mocks httpx: the suite aliases it to httpx2 first
        args += ["-p", "tests._alias_httpx"]
    # tests/api_resources need Stainless's mock API server (prism), which is not here: every one
    # of them fails after the SDK's retries, with or without aiguard.
    args += extra or ["tests", "--ignore=tests/api_resources"]
    started = time.monotonic()
    try:
        done = subprocess.run(
            args, cwd=source, env=env, capture_output=True, text=True, timeout=timeout
        )
        tail = done.stdout.strip().splitlines()[-1:] if done.stdout else []
        if not report.exists():
            tail = [done.stderr.strip()[-2000:]]
    except subprocess.TimeoutExpired:
        tail = [f"timed out after {timeout:.0f}s"]
    outcomes = _outcomes(report) if report.exists() else {}
    return {
        "sdk": sdk,
        "mode": mode,
        "seconds": round(time.monotonic() - started),
        "summary": tail[0] if tail else "",
        "outcomes": outcomes,
    }


def _outcomes(report: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            found[name] = "failed"
        elif case.find("skipped") is not None:
            found[name] = "skipped"
        else:
            found[name] = "passed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdk", choices=SDKS, action="append")
    parser.add_argument("--mode", choices=MODES, action="append")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "aiguard-sdk-suites")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, help="write the per-test outcomes here")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    options = parser.parse_args()
    results = []
    for sdk in options.sdk or SDKS:
        source = _source(sdk, options.work)
        plain: dict[str, str] | None = None
        for mode in options.mode or MODES:
            result = _run(sdk, mode, source, options.pytest_args, options.timeout)
            results.append(result)
            counts: dict[str, int] = {}
            for outcome in result["outcomes"].values():
                counts[outcome] = counts.get(outcome, 0) + 1
            line = f"{sdk:9} {mode:10} {result['seconds']:5}s  {counts}  ({result['summary']})"
            if mode == "plain":
                plain = result["outcomes"]
            elif plain is not None:
                broken = sorted(
                    name
                    for name, outcome in result["outcomes"].items()
                    if outcome == "failed" and plain.get(name) == "passed"
                )
                line += f"\n{'':21}pass plain, fail {mode}: {len(broken)}"
                result["broken"] = broken
            print(line, flush=True)
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
