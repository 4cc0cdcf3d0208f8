"""Policies from a file: retries, fallbacks, a budget and checks that operations can change.

The policies live in aiguard.toml next to this example; code names them (``policy="default"``)
and may override single keywords. No API key: the testing kit's server plays the provider.

Run: python examples/policy_file.py   (from any directory)
"""

from __future__ import annotations

import os
from pathlib import Path

import openai

import aiguard
from aiguard.testing import MockServer

# Usually set by the deployment; here, the policy file beside this example.
os.environ["AIGUARD_CONFIG"] = str(Path(__file__).resolve().with_name("aiguard.toml"))

MESSAGES = [{"role": "user", "content": "Say hello."}]


def main() -> None:
    with MockServer() as server:
        sdk = openai.OpenAI(base_url=server.url, api_key="sk-example", max_retries=0)
        client = aiguard.wrap(sdk, policy="default", provider="openai")

        server.fail("gpt-4o", status=503)
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        print(f"one outage, retried by [policies.default]: answered by {reply.model}")

        server.fail("gpt-4o", status=503, times=3)
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        print(f"a longer outage: the file's fallback answered ({reply.model})")

        leaky = [{"role": "user", "content": "my key is sk-proj-" + "EXAMPLE0" * 5}]
        try:
            client.chat.completions.create(model="gpt-4o", messages=leaky)
        except aiguard.CheckFailed as refusal:
            print(f"the file's checks: {refusal}")

        budget = aiguard.Policy.build("default").budget
        assert budget is not None
        print(f"budget {budget.name!r}: ${budget.spent} of ${budget.limit} spent")

        # Keywords in code override the file: no retries here, straight to the fallback.
        impatient = aiguard.wrap(sdk, policy="default", retry=None)
        server.fail("gpt-4o", status=503)
        reply = impatient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        print(f"retry=None in code: one attempt, then {reply.model}")

        @aiguard.guard(policy="summaries")
        def summarise(text: str, model: str = "gpt-4o") -> str:
            messages = [{"role": "user", "content": f"Summarise: {text}"}]
            answer = sdk.chat.completions.create(model=model, messages=messages)
            return f"{answer.model}: {answer.choices[0].message.content}"

        server.fail("gpt-4o", status=429, times=2)
        print(f"@guard(policy='summaries') -> {summarise('a long report')}")

        try:
            aiguard.wrap(sdk, policy="sumaries")
        except aiguard.AIGuardError as problem:
            print(f"a misspelt name: {problem}")


if __name__ == "__main__":
    main()
