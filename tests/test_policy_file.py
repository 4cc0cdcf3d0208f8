"""Named policies from aiguard.toml / [tool.aiguard]: parsing, search, errors, and real calls."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from tests.conftest import API_KEY, MESSAGES

import aiguard
from aiguard import _policy_file
from aiguard._policy_file import PolicyFileError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "aiguard.toml"

FULL = """\
[policies.default]
retry = { attempts = 4, wait_initial = 0.25, wait_max = 20, wait_jitter = 0.5 }
fallback = ["gpt-4o-mini", { model = "claude-haiku", retry = { attempts = 2 } }]
timeout = 30
breaker = { failures = 5, reset_after = 12.5 }
budget = { usd = 5.0, per_call_usd = 0.25, name = "support" }
checks = [
    "NoSecrets",
    "NotEmpty",
    { name = "NoPII", action = "redact", kinds = ["email", "phone"] },
    { name = "MaxInputTokens", n = 8000 },
    { name = "NoSecrets", patterns = ["ACME-[0-9]{8}"] },
]
tag = "support"
fallback_on = ["rate_limit", "outage"]
stream_usage = false
raise_on_truncation = true
reasks = 2

[policies.summaries]
retry = { attempts = 2 }
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test in its own directory, bounded by a .git so no file above it is found."""
    monkeypatch.delenv("AIGUARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    _policy_file.reset()
    yield
    _policy_file.reset()


def write(directory: Path, text: str, name: str = "aiguard.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def problem(text: str, name: str = "default", file: str = "aiguard.toml") -> PolicyFileError:
    write(Path.cwd(), text, file)
    with pytest.raises(PolicyFileError) as caught:
        aiguard.Policy.build(name)
    return caught.value


# -- every field, into aiguard's own objects ------------------------------------------------------


def test_every_field_is_parsed_into_aiguard_objects(tmp_path):
    write(tmp_path, FULL)
    policy = aiguard.Policy.build("default")

    assert policy.retry == aiguard.Retry(
        attempts=4, wait_initial=0.25, wait_max=20, wait_jitter=0.5
    )
    assert policy.fallback == (
        aiguard.Target(model="gpt-4o-mini"),
        aiguard.Target(model="claude-haiku", retry=aiguard.Retry(attempts=2)),
    )
    assert policy.timeout == 30
    assert isinstance(policy.breaker, aiguard.Breaker)
    assert (policy.breaker.failures, policy.breaker.reset_after) == (5, 12.5)
    assert isinstance(policy.budget, aiguard.Budget)
    assert policy.budget.limit == Decimal("5.0")
    assert policy.budget.per_call == Decimal("0.25")
    assert policy.budget.name == "support"
    assert policy.tag == "support"
    assert policy.fallback_on == {aiguard.Failure.RATE_LIMIT, aiguard.Failure.OUTAGE}
    assert policy.stream_usage is False
    assert policy.raise_on_truncation is True
    assert policy.reasks == 2

    no_secrets, not_empty, no_pii, max_tokens, custom = policy.checks
    assert type(no_secrets) is aiguard.checks.NoSecrets and no_secrets.patterns == ()
    assert type(not_empty) is aiguard.checks.NotEmpty
    assert type(no_pii) is aiguard.checks.NoPII
    assert (no_pii.action, no_pii.kinds) == ("redact", ("email", "phone"))
    assert type(max_tokens) is aiguard.checks.MaxInputTokens and max_tokens.n == 8000
    assert [p.pattern for p in custom.patterns] == ["ACME-[0-9]{8}"]


def test_keys_left_out_keep_aiguard_defaults(tmp_path):
    write(tmp_path, FULL)
    assert aiguard.Policy.build("summaries") == aiguard.Policy(retry=aiguard.Retry(attempts=2))


def test_retry_false_means_a_single_attempt(tmp_path):
    write(
        tmp_path,
        """
        [policies.once]
        retry = false
        fallback = [{ model = "gpt-4o-mini", retry = false }]
        """,
    )
    policy = aiguard.Policy.build("once")
    assert policy.retry.attempts == 1
    assert policy.fallback[0].retry == aiguard.Retry(attempts=1)


def test_a_single_fallback_and_failure_may_be_written_without_a_list(tmp_path):
    write(
        tmp_path,
        """
        [policies.default]
        fallback = "gpt-4o-mini"
        fallback_on = "outage"
        """,
    )
    policy = aiguard.Policy.build("default")
    assert policy.fallback == (aiguard.Target(model="gpt-4o-mini"),)
    assert policy.fallback_on == {aiguard.Failure.OUTAGE}


def test_budget_is_named_after_its_policy_unless_named(tmp_path):
    write(tmp_path, "[policies.tenant-42]\nbudget = { usd = 50 }\n")
    assert aiguard.Policy.build("tenant-42").budget.name == "tenant-42"


def test_code_keywords_override_the_file(tmp_path):
    write(tmp_path, FULL)
    budget = aiguard.Budget(usd=1)
    policy = aiguard.Policy.build(
        "default", retry=None, fallback=["local"], timeout=5, budget=budget, checks=[]
    )
    assert policy.retry.attempts == 1
    assert policy.fallback == (aiguard.Target(model="local"),)
    assert policy.timeout == 5
    assert policy.budget is budget
    assert policy.checks == ()
    # what the code did not say still comes from the file
    assert policy.tag == "support" and policy.reasks == 2 and policy.breaker is not None


def test_a_policy_object_still_works_and_other_types_are_refused():
    strict = aiguard.Policy(timeout=3)
    assert aiguard.Policy.build(strict, tag="x") == aiguard.Policy(timeout=3, tag="x")
    with pytest.raises(TypeError, match="name of a policy"):
        aiguard.Policy.build(42)  # type: ignore[arg-type]


def test_the_example_policy_file_is_valid(monkeypatch):
    monkeypatch.setenv("AIGUARD_CONFIG", str(EXAMPLE))
    assert _policy_file.reload() == EXAMPLE
    assert aiguard.Policy.build("default").fallback


# -- where the file is found ----------------------------------------------------------------------


def test_pyproject_tool_aiguard_is_read(tmp_path):
    write(
        tmp_path,
        """
        [project]
        name = "app"

        [tool.aiguard.policies.default]
        timeout = 12
        """,
        "pyproject.toml",
    )
    assert aiguard.Policy.build("default").timeout == 12


def test_pyproject_errors_name_the_full_key():
    error = problem(
        """
        [tool.aiguard.policies.default]
        timeout = "soon"
        """,
        file="pyproject.toml",
    )
    assert str(error) == (
        "pyproject.toml:3: tool.aiguard.policies.default.timeout: Input should be a valid number"
    )


def test_aiguard_toml_wins_over_pyproject_in_the_same_directory(tmp_path):
    write(tmp_path, "[tool.aiguard.policies.default]\ntimeout = 1\n", "pyproject.toml")
    write(tmp_path, "[policies.default]\ntimeout = 2\n")
    assert aiguard.Policy.build("default").timeout == 2


def test_the_nearest_directory_wins_and_the_search_stops_at_the_git_root(tmp_path, monkeypatch):
    project = tmp_path / "project"
    deep = project / "src" / "app"
    deep.mkdir(parents=True)
    (project / ".git").mkdir()
    write(tmp_path, "[policies.default]\ntimeout = 1\n")  # above the repository: never read
    monkeypatch.chdir(deep)
    with pytest.raises(PolicyFileError, match="up to"):
        aiguard.Policy.build("default")

    write(project, "[tool.aiguard.policies.default]\ntimeout = 2\n", "pyproject.toml")
    assert aiguard.Policy.build("default").timeout == 2
    _policy_file.reset()
    write(project / "src", "[policies.default]\ntimeout = 3\n")
    assert aiguard.Policy.build("default").timeout == 3


def test_a_pyproject_without_tool_aiguard_is_passed_over(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    write(tmp_path, "[policies.default]\ntimeout = 4\n")
    write(sub, '[project]\nname = "x"\ndependencies = ["aiguard"]\n', "pyproject.toml")
    monkeypatch.chdir(sub)
    assert aiguard.Policy.build("default").timeout == 4


def test_aiguard_config_wins_over_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path, "[policies.default]\ntimeout = 1\n")
    elsewhere = tmp_path / "ops"
    elsewhere.mkdir()
    write(elsewhere, "[policies.default]\ntimeout = 9\n", "prod.toml")
    monkeypatch.setenv("AIGUARD_CONFIG", "ops/prod.toml")  # relative to the current directory
    assert aiguard.Policy.build("default").timeout == 9


def test_aiguard_config_may_name_a_pyproject(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    pyproject = write(
        tmp_path / "conf", "[tool.aiguard.policies.default]\ntimeout = 7\n", "pyproject.toml"
    )
    monkeypatch.setenv("AIGUARD_CONFIG", str(pyproject))
    assert aiguard.Policy.build("default").timeout == 7


def test_aiguard_config_naming_no_file_is_an_error(tmp_path, monkeypatch):
    write(tmp_path, "[policies.default]\ntimeout = 1\n")
    monkeypatch.setenv("AIGUARD_CONFIG", "missing.toml")
    with pytest.raises(PolicyFileError, match=r"AIGUARD_CONFIG='missing.toml' names no file"):
        aiguard.Policy.build("default")


# -- errors: file, line, field ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """
            [policies.default]
            timeout = 30
            retry = { attempts = 0 }
            """,
            "aiguard.toml:4: policies.default.retry.attempts: Input should be greater than 0",
            id="out of range",
        ),
        pytest.param(
            """
            [policies.default]
            timeout = "30"
            """,
            "aiguard.toml:3: policies.default.timeout: Input should be a valid number",
            id="wrong type",
        ),
        pytest.param(
            """
            [policies.default.breaker]
            failures = true
            """,
            "aiguard.toml:3: policies.default.breaker.failures: Input should be a valid integer",
            id="bool for an int",
        ),
        pytest.param(
            """
            [policies.default]
            retry = { attempts = 3, wait = 2 }
            """,
            "aiguard.toml:3: policies.default.retry.wait: unknown key; retry takes attempts, "
            "wait_initial, wait_max, wait_jitter, wait_exp_base, max_retry_after",
            id="unknown key",
        ),
        pytest.param(
            """
            [policies.default]
            checks = [
                "NoSecrets",
                "NoSpam",
            ]
            """,
            "aiguard.toml:5: policies.default.checks.1.name: unknown check 'NoSpam'; the built-in "
            "checks are NotEmpty, MaxInputTokens, NoSecrets, NoPII (custom checks are passed in "
            "code)",
            id="unknown check",
        ),
        pytest.param(
            """
            [policies.default]
            checks = [{ name = "NoPII", action = "mask" }]
            """,
            "aiguard.toml:3: policies.default.checks.0.action: Input should be 'raise' or 'redact'",
            id="bad check parameter",
        ),
        pytest.param(
            """
            [policies.default]
            checks = [{ name = "MaxInputTokens", limit = 10 }]
            """,
            "aiguard.toml:3: policies.default.checks.0.limit: unknown key; MaxInputTokens takes "
            "name, n",
            id="unknown check parameter",
        ),
        pytest.param(
            """
            [policies.default]
            retry = 0
            """,
            "aiguard.toml:3: policies.default.retry: must be a table such as { attempts = 3 }, or "
            "false for a single attempt",
            id="retry as a number",
        ),
        pytest.param(
            """
            [policies.default]
            budget = { per_call_usd = 0.1 }
            """,
            "aiguard.toml:3: policies.default.budget.usd: Field required",
            id="missing budget limit",
        ),
        pytest.param(
            """
            [policies.default]
            capture = "LOUD"
            """,
            "aiguard.toml:3: policies.default.capture: Value error, capture_content must be one "
            "of NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT (or True/False)",
            id="an unknown capture mode",
        ),
        pytest.param(
            """
            [policies.default]
            fallback_on = ["outage", "fatal"]
            """,
            "aiguard.toml:3: policies.default.fallback_on.1: Input should be 'rate_limit', "
            "'outage', 'context_window' or 'content_policy'",
            id="unknown failure",
        ),
        pytest.param(
            """
            [policy.default]
            timeout = 3
            """,
            "aiguard.toml:2: policy: unknown key; the policy file takes policies, store",
            id="misspelt top-level table",
        ),
    ],
)
def test_errors_name_the_file_line_and_field(text, expected):
    error = problem(text)
    assert str(error) == expected
    assert isinstance(error, aiguard.AIGuardError) and isinstance(error, ValueError)
    assert error.path == Path.cwd() / "aiguard.toml"
    assert error.line == int(expected.split(":")[1])
    assert error.field == expected.split(": ")[1]


def test_every_problem_is_reported_in_file_order():
    error = problem(
        """
        [policies.b]
        reasks = -1

        [policies.a]
        timeout = 0
        tag = ""
        """
    )
    assert str(error).splitlines() == [
        "aiguard.toml:3: policies.b.reasks: Input should be greater than or equal to 0",
        "aiguard.toml:6: policies.a.timeout: Input should be greater than 0",
        "aiguard.toml:7: policies.a.tag: must not be blank",
    ]
    assert (error.line, error.field) == (3, "policies.b.reasks")


def test_lines_are_found_in_multiline_arrays_subtables_and_arrays_of_tables():
    error = problem(
        '''
        # a comment with [brackets] and = signs
        [policies."default"]
        tag = """multi
        line]"""
        fallback = [
            "gpt-4o-mini",  # fine
            { model = "x", retry = { attempts = 1, wait_max = -1 } },
        ]

        [[policies.default.checks]]
        name = "NotEmpty"

        [[policies.default.checks]]
        name = "NoPII"
        kinds = ["email", "passport"]
        '''
    )
    assert str(error).splitlines() == [
        "aiguard.toml:8: policies.default.fallback.1.retry.wait_max: "
        "Input should be greater than or equal to 0",
        "aiguard.toml:16: policies.default.checks.1.kinds.1: must be one of email, phone, "
        "credit_card, ssn, iban, ip_address",
    ]


def test_bad_toml_syntax_is_reported_with_its_line():
    error = problem(
        """
        [policies.default]
        retry = { attempts = 3
        """
    )
    assert str(error).startswith("aiguard.toml:3: invalid TOML: ")
    assert "line 3" in str(error)
    assert error.line == 3 and error.field is None


def test_an_unknown_policy_name_lists_the_known_names_and_the_file(tmp_path):
    write(tmp_path, FULL)
    with pytest.raises(PolicyFileError) as caught:
        aiguard.wrap(openai.OpenAI(api_key=API_KEY), policy="summary")
    assert str(caught.value) == (
        "aiguard.toml: no policy named 'summary'; the file defines 'default', 'summaries'. "
        "Add a [policies.summary] table, or pass one of those names."
    )


def test_no_file_says_where_it_looked_and_how_to_create_one(tmp_path):
    with pytest.raises(PolicyFileError) as caught:

        @aiguard.guard(policy="summaries")
        def summarise(text: str) -> str:
            return text

    message = str(caught.value)
    assert "AIGUARD_CONFIG is not set" in message
    assert f"no aiguard.toml (nor a pyproject.toml with a [tool.aiguard] table) in {tmp_path}" in (
        message
    )
    assert "[policies.summaries]\n    retry = { attempts = 3 }" in message


# -- once per process, and reload ----------------------------------------------------------------


def test_each_named_policy_is_built_once_and_shared(tmp_path):
    write(tmp_path, FULL)
    first = aiguard.Policy.build("default")
    second = aiguard.Policy.build("default", timeout=1)
    assert second.budget is first.budget and second.breaker is first.breaker


def test_reload_reads_the_file_again_and_keeps_an_unchanged_budget(tmp_path):
    path = write(tmp_path, "[policies.default]\ntimeout = 1\nbudget = { usd = 5 }\n")
    before = aiguard.Policy.build("default")
    path.write_text("[policies.default]\ntimeout = 2\nbudget = { usd = 5 }\n")
    assert aiguard.Policy.build("default").timeout == 1  # cached until reloaded
    assert _policy_file.reload() == path
    after = aiguard.Policy.build("default")
    assert after.timeout == 2 and after.budget is before.budget

    path.write_text("[policies.default]\nbudget = { usd = 6 }\n")
    _policy_file.reload()
    assert aiguard.Policy.build("default").budget is not before.budget


def test_reload_of_a_broken_file_keeps_the_policies_in_force(tmp_path):
    path = write(tmp_path, "[policies.default]\ntimeout = 1\n")
    assert aiguard.Policy.build("default").timeout == 1
    path.write_text("[policies.default]\ntimeout = -1\n")
    with pytest.raises(PolicyFileError, match=r"aiguard\.toml:2: policies\.default\.timeout"):
        _policy_file.reload()
    assert aiguard.Policy.build("default").timeout == 1


def test_the_file_is_read_at_wrap_time_never_per_call(tmp_path, server, monkeypatch):
    write(tmp_path, "[policies.default]\nretry = false\n")
    reads: list[Path] = []
    real_read = _policy_file._read
    monkeypatch.setattr(
        _policy_file, "_read", lambda path, **kw: reads.append(path) or real_read(path, **kw)
    )
    client = aiguard.wrap(openai.OpenAI(base_url=server.url, api_key=API_KEY), policy="default")
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reads == [tmp_path / "aiguard.toml"]


# -- over the real openai SDK ---------------------------------------------------------------------

SERVED = """
[policies.default]
retry = { attempts = 2, wait_initial = 0, wait_jitter = 0 }
fallback = ["gpt-4o-mini"]

[policies.summaries]
retry = { attempts = 3, wait_initial = 0, wait_jitter = 0 }
fallback = ["gpt-4o-mini"]
"""


@pytest.fixture
def served(tmp_path, raw_client):
    write(tmp_path, SERVED)
    return aiguard.wrap(raw_client, policy="default")


def test_a_file_configured_retry_over_the_real_sdk(served, server):
    server.fail("gpt-4o", status=500)
    reply = served.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.model == "gpt-4o"
    assert len(server.requests) == 2


def test_a_file_configured_fallback_over_the_real_sdk(served, server, telemetry):
    server.fail("gpt-4o", status=503, times=2)
    reply = served.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.model == "gpt-4o-mini"
    assert [r.model for r in server.requests] == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]


def test_a_decorator_uses_a_named_policy(tmp_path, server):
    write(tmp_path, SERVED)
    sdk = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
    seen: list[str] = []

    @aiguard.guard(policy="summaries")
    def summarise(text: str, model: str = "gpt-4o") -> str:
        seen.append(model)
        return sdk.chat.completions.create(model=model, messages=MESSAGES).model

    server.fail("gpt-4o", status=503, times=3)
    assert summarise("a long text") == "gpt-4o-mini"
    assert seen == ["gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o-mini"]


# The server reports 10 input and 20 output tokens: $0.000225 on gpt-4o ($2.50/M in, $10/M out).
REAL = Decimal("0.000225")
# The worst case of one call below: 54 input tokens at $2.50/M plus max_tokens=100 at $10/M.
WORST = Decimal(54) * Decimal("0.0000025") + Decimal(100) * Decimal("0.00001")


def test_a_file_budget_holds_across_every_client_using_the_policy(tmp_path, server):
    # Room for one call's worst case and a half more: the second client's call must not fit.
    write(tmp_path, f"[policies.default]\nbudget = {{ usd = {WORST + REAL / 2} }}\n")
    server.reply("gpt-4o", prompt_tokens=10, completion_tokens=20)
    first, second = (
        aiguard.wrap(
            openai.OpenAI(base_url=server.url, api_key=API_KEY), policy="default", provider="openai"
        )
        for _ in range(2)
    )
    first.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100)
    with pytest.raises(aiguard.BudgetExceeded, match="budget 'default'"):
        second.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100)
    budget = aiguard.Policy.build("default").budget
    assert budget.spent == REAL and budget.refusals == 1
    assert len(server.requests) == 1
