"""pytest fixtures of the testing kit (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiguard.testing._capture import Capture
from aiguard.testing._server import MockServer


@pytest.fixture(scope="session")
def _aiguard_server_session() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


@pytest.fixture
def aiguard_server(_aiguard_server_session: MockServer) -> Iterator[MockServer]:
    """A running fault-injecting OpenAI-compatible server, reset for each test."""
    _aiguard_server_session.reset()
    yield _aiguard_server_session
    _aiguard_server_session.reset()


@pytest.fixture
def aiguard_telemetry() -> Iterator[Capture]:
    """aiguard's spans and metrics, captured in memory for this test."""
    with Capture() as capture:
        yield capture
