"""``import aiguard`` stays light: heavy dependencies load on first use (not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import aiguard


def _loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_aiguard_does_not_import_genai_prices() -> None:
    loaded = _loaded_after("import aiguard")
    assert "genai_prices" not in loaded


def test_a_wrapped_client_loads_genai_prices_only_when_a_call_is_priced() -> None:
    # Building the engine (the first aiguard.wrap) still leaves the price data unloaded.
    loaded = _loaded_after("import aiguard\naiguard.wrap\naiguard.Retry")
    assert "genai_prices" not in loaded
    loaded = _loaded_after("import aiguard\naiguard.prices.lookup('openai', 'gpt-4o')")
    assert "genai_prices" in loaded


@pytest.mark.parametrize("name", aiguard.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(aiguard, name) is not None
    assert name in dir(aiguard)


def test_lazy_names_are_the_real_objects() -> None:
    from aiguard._errors import AIGuardError
    from aiguard._wrap import wrap

    assert aiguard.wrap is wrap
    assert aiguard.AIGuardError is AIGuardError
    assert aiguard.testing.__name__ == "aiguard.testing"
    namespace: dict[str, object] = {}
    exec("from aiguard import *", namespace)
    assert set(aiguard.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        aiguard.no_such_thing  # type: ignore[attr-defined]  # noqa: B018
