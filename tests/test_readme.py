"""The README's code runs as shown, so it cannot drift: the 30-second example (offline, exactly
as written; the keyed variant against the testing kit's server), the one-line setup, the
testing-kit test; and the install and test commands it gives exist and stay honest."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(section: str, lang: str = "python", page: str = README) -> list[str]:
    text = page.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _env() -> dict[str, str]:
    """This process's environment, its import path made absolute (the snippets run elsewhere),
    with no key and no collector."""
    env = {**os.environ, "OPENAI_API_KEY": "", "NO_COLOR": ""}
    if env.get("PYTHONPATH"):
        paths = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in paths)
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(name, None)
    return env


def _run(code: str, tmp_path: Path, name: str = "snippet.py") -> subprocess.CompletedProcess[str]:
    script = tmp_path / name
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=_env(),
    )


def test_the_30_second_example_runs_offline_exactly_as_written(tmp_path):
    offline = _blocks("30 seconds")[0]
    assert "MockServer" in offline and 'exporter="pretty"' in offline
    done = _run(offline, tmp_path)
    assert done.returncode == 0, done.stderr
    # The answers on stdout, the streamed text ending its line.
    assert done.stdout == "Hello from gpt-4o.\ngpt-4o-mini\nHello from gpt-4o.\n"
    # The console view on stderr: one tree per call, with the retry, the fallback, the stream.
    view = done.stderr
    assert "~ aiguard.retry attempt=1, type=openai.RateLimitError, wait_s=0.200" in view
    assert "fallback=gpt-4o-mini" in view and "chunks=5" in view
    assert sum(line.startswith("ok chat gpt-4o") for line in view.splitlines()) == 3
    assert "\033[" not in view and "Traceback" not in view


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_keyed_variant_runs_against_the_testing_kits_server(tmp_path, page):
    keyed = _blocks("30 seconds", page=(ROOT / page).read_text())[-1]
    assert "OpenAI()" in keyed
    body = keyed.replace("OpenAI()", 'OpenAI(base_url=server.url, api_key="sk-test")')
    indented = "\n".join("    " + line for line in body.splitlines())
    done = _run(f"import aiguard.testing\nwith aiguard.testing.MockServer() as server:\n"
                f"{indented}\n", tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello from gpt-4o.\nHello from gpt-4o.\n"  # stream, then function
    assert "ok summarise" in done.stderr  # the decorated function's tree


def test_the_one_line_setup_guards_a_plain_client(tmp_path):
    (one_line,) = _blocks("One line")
    code = one_line + (
        "from openai import OpenAI\n"
        "from aiguard.testing import MockServer\n"
        "with MockServer() as server:\n"
        '    client = OpenAI(base_url=server.url, api_key="sk-test")\n'
        '    client.chat.completions.create(model="gpt-4o", '
        'messages=[{"role": "user", "content": "hi"}])\n'
    )
    done = _run(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("ok chat gpt-4o")


def test_the_testing_kit_example_passes_under_pytest(tmp_path):
    (kit,) = _blocks("Testing your own AI code")
    (tmp_path / "test_mine.py").write_text(kit)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_install_and_test_commands_are_honest():
    docs = [README, *(p.read_text() for p in (ROOT / "docs").glob("*.md"))]
    for text in docs:  # the name aiguard on PyPI is an unrelated project
        text = text.replace("never `pip install aiguard`", "")
        text = text.replace("nor `pip install -U aiguard`", "")
        assert not re.search(r"pip install (-U |--upgrade )?['\"]?aiguard\b", text)
    (install,) = _blocks("Install", "bash")
    assert "git clone" in install and "pip install -e '.[openai]'" in install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (commands, full) = _blocks("Two commands", "bash")
    assert "pip install -e '.[test]' && python -m pytest" in commands
    quick = extras["test"]  # the quick path compiles nothing
    assert not any(dep.startswith(("llama-cpp", "aiguard[local]")) for dep in quick)
    assert "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install -e '.[dev]'" in full
    assert "aiguard[test-local]" in extras["dev"]
    assert "aiguard[local]" in extras["test-local"]
    assert any(dep.startswith("llama-cpp-python") for dep in extras["local"])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[dev]'" in ci and 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in ci


def test_the_local_model_tests_say_why_they_skip():
    source = (ROOT / "tests" / "test_local_models.py").read_text()
    assert "pip install -e '.[test-local]'" in source


def test_the_rotel_collector_command_in_the_docs_works_as_written():
    pytest.importorskip("rotel", reason="rotel comes with the test extra")
    text = (ROOT / "docs" / "backends.md").read_text()
    (command,) = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "rotel" in b]
    ports = {"4318": str(_free_port()), "4317": str(_free_port())}  # 4317/8 may be taken here
    for standard, free in ports.items():
        command = command.replace(f"127.0.0.1:{standard}", f"127.0.0.1:{free}")
    env = _env()
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # `python`
    agent = subprocess.Popen(
        ["bash", "-c", command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not _listening(int(ports["4318"])):
            assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
            assert time.monotonic() < deadline, "rotel-agent did not listen"
            time.sleep(0.1)
        assert _listening(int(ports["4317"]))
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
