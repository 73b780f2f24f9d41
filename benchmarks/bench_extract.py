"""Cost of ``read_response`` per payload, for every shape, in one run.

Run: python benchmarks/bench_extract.py [--rounds 9] [--n 5000] [--litellm]
Target (issue 2): a few microseconds per dict payload; it runs on every tracked call.

Peers timed in the same interleaved rounds (noise falls on all alike): building a checked
``Usage`` by hand (the floor any reader pays), and genai-prices' own usage extraction of
the same dict (``Provider.extract_usage``, the model lookup left out). Figures are the
median round, in microseconds per call; ratios are to ``Usage(...)`` and to genai-prices.
``--litellm`` adds a LiteLLM ``ModelResponse`` (importing litellm takes seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from costledger._extract import read_response
from costledger._usage import Usage

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "o3-mini-2025-01-31",
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0},
    },
}
RESPONSES = {
    "id": "resp_1",
    "object": "response",
    "model": "o3-2025-04-16",
    "usage": {
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 256, "cache_write_tokens": 0},
        "output_tokens": 52,
        "output_tokens_details": {"reasoning_tokens": 40},
        "total_tokens": 380,
    },
}
ANTHROPIC = {
    "id": "msg_1",
    "type": "message",
    "model": "claude-sonnet-4-5-20250929",
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 1888,
        "cache_read_input_tokens": 12000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 388},
        "output_tokens": 393,
    },
}
GEMINI = {
    "usageMetadata": {
        "promptTokenCount": 1250,
        "candidatesTokenCount": 180,
        "totalTokenCount": 1920,
        "cachedContentTokenCount": 1024,
        "thoughtsTokenCount": 410,
        "toolUsePromptTokenCount": 80,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1250}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "r-1",
}
BEDROCK = {
    "output": {},
    "stopReason": "end_turn",
    "usage": {
        "inputTokens": 12,
        "outputTokens": 85,
        "cacheReadInputTokens": 4000,
        "cacheWriteInputTokens": 2024,
    },
}
LANGCHAIN_USAGE = {
    "input_tokens": 2006,
    "output_tokens": 300,
    "total_tokens": 2306,
    "input_token_details": {"audio": 0, "cache_read": 1920},
    "output_token_details": {"audio": 0, "reasoning": 192},
}


def sdk_payloads(with_litellm: bool) -> dict[str, Any]:
    from anthropic.types import Message
    from langchain_core.messages import AIMessage
    from openai.types.chat import ChatCompletion

    payloads: dict[str, Any] = {
        "openai ChatCompletion": ChatCompletion.model_validate(
            {**CHAT, "created": 0, "choices": []}
        ),
        "anthropic Message": Message.model_validate(
            {**ANTHROPIC, "role": "assistant", "content": []}
        ),
        "langchain AIMessage": AIMessage(
            content="hi",
            usage_metadata=LANGCHAIN_USAGE,  # type: ignore[arg-type]
            response_metadata={"model_name": "o3-mini-2025-01-31"},
            id="chatcmpl-1",
        ),
    }
    if with_litellm:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        payloads["litellm ModelResponse"] = litellm.completion(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], mock_response="x"
        )
    return payloads


def genai_prices_peers() -> dict[str, Callable[[], Any]]:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()

    def peer(provider_id: str, payload: Any, flavor: str) -> Callable[[], Any]:
        provider = snapshot.find_provider(None, provider_id, None)
        return lambda: provider.extract_usage(payload, api_flavor=flavor)

    return {
        "dict openai chat": peer("openai", CHAT, "chat"),
        "dict openai responses": peer("openai", RESPONSES, "responses"),
        "dict anthropic": peer("anthropic", ANTHROPIC, "default"),
        "dict gemini": peer("google", GEMINI, "default"),
        "dict bedrock": peer("aws", BEDROCK, "default"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--litellm", action="store_true")
    args = parser.parse_args()

    ours: dict[str, Any] = {
        "dict openai chat": CHAT,
        "dict openai responses": RESPONSES,
        "dict anthropic": ANTHROPIC,
        "dict gemini": GEMINI,
        "dict bedrock": BEDROCK,
        "dict langchain usage": LANGCHAIN_USAGE,
        **sdk_payloads(args.litellm),
    }
    for payload in ours.values():  # warm up, and fail loudly on a broken fixture
        read_response(payload)
    variants: dict[str, Callable[[], Any]] = {
        "Usage(...) by hand (floor)": lambda: Usage(2006, 300, 1920, 0, 0, 192, 0, 0)
    }
    variants |= {name: (lambda p=payload: read_response(p)) for name, payload in ours.items()}
    peers = {f"genai-prices {name}": fn for name, fn in genai_prices_peers().items()}
    variants |= peers

    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            n = args.n if not name.startswith("genai-prices") else max(args.n // 50, 50)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n * 1e6)

    median = {name: statistics.median(values) for name, values in samples.items()}
    floor = median["Usage(...) by hand (floor)"]
    print(f"{'payload':40s} {'us/call':>9s} {'vs Usage()':>11s} {'genai-prices':>13s}")
    for name, value in median.items():
        if name.startswith("genai-prices"):
            continue
        peer = median.get(f"genai-prices {name}")
        peer_text = f"{peer / value:11.0f}x" if peer else ""
        print(f"{name:40s} {value:9.2f} {value / floor:10.2f}x {peer_text:>13s}")
    print()
    for name, value in median.items():
        if name.startswith("genai-prices"):
            print(f"{name:40s} {value:9.2f}")
    print("\n'genai-prices' column: how many times slower genai-prices reads the same dict.")


if __name__ == "__main__":
    main()
