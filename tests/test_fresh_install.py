"""The README's install and its two commands, run exactly as written in a fresh virtual
environment (all but the clone: this checkout is the clone). Minutes, and it installs packages,
so it runs only when asked: ``AIGUARD_FRESH_INSTALL=1 python -m pytest tests/test_fresh_install.py``
(``.ci/run`` does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not os.environ.get("AIGUARD_FRESH_INSTALL"),
    reason="installs into a fresh venv (minutes): set AIGUARD_FRESH_INSTALL=1 to run",
)


def _bash_block(section: str, index: int = 0) -> list[str]:
    text = (ROOT / "README.md").read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", text, re.S)[index]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readmes_install_and_two_commands_work_in_a_fresh_venv(tmp_path):
    install = [line for line in _bash_block("Install") if not line.startswith("git clone")]
    demo, tests = _bash_block("Two commands")
    assert demo == "aiguard demo" and tests.endswith("python -m pytest")
    venv = tmp_path / "venv"
    # The README's venv line, pointed at a fresh directory instead of ./.venv.
    steps = [line.replace(".venv", str(venv)) for line in install]
    script = " && ".join([*steps, demo, tests])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("AIGUARD_FRESH_INSTALL", None)  # the nested test run skips this test
    env.pop("CI", None)  # the quick path: the local-model tests skip, saying why
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "Cost by model" in done.stdout  # the demo ran
    # pytest's closing line (the demo's own text may say "failed" of an attempt).
    assert re.search(r"\d+ passed", done.stdout) and not re.search(r"\d+ failed", done.stdout)
