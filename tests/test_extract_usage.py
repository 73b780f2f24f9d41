"""extract_usage / read_response: every provider shape into the one canonical Usage.

Fixtures under tests/fixtures/usage/ are real-shaped responses with their exact expected
canonical counts; the SDK tests build the real pydantic objects of openai, anthropic,
LangChain and LiteLLM (LiteLLM's own Anthropic/Bedrock/Gemini transformations included);
the property tests render random valid counts into every shape and read them back.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from costledger._errors import UsageError
from costledger._extract import (
    PROVIDER_HINTS,
    SHAPES,
    ResponseInfo,
    extract_usage,
    read_response,
)
from costledger._usage import Usage

FIXTURES = Path(__file__).parent / "fixtures" / "usage"
FIXTURE_CASES = [
    pytest.param(case, id=f"{path.stem}: {case['name']}")
    for path in sorted(FIXTURES.glob("*.json"))
    for case in json.loads(path.read_text())
]


# --- fixtures: real-shaped payloads, exact expected counts ---------------------------


@pytest.mark.parametrize("case", FIXTURE_CASES)
def test_fixture_reads_exactly(case: dict[str, Any]) -> None:
    info = read_response(case["payload"], case.get("provider"))
    assert info == ResponseInfo(
        usage=Usage(**case["expected"]),
        model=case["model"],
        response_id=case["response_id"],
        provider=case["shape"],
        price_context=case.get("price_context"),
    )


@pytest.mark.parametrize("case", FIXTURE_CASES)
def test_fixture_reads_the_same_from_json_text(case: dict[str, Any]) -> None:
    text = json.dumps(case["payload"])
    assert extract_usage(text, case.get("provider")) == Usage(**case["expected"])
    assert extract_usage(text.encode(), case.get("provider")) == Usage(**case["expected"])


def test_every_shape_has_a_fixture() -> None:
    shapes = {case.values[0]["shape"] for case in FIXTURE_CASES}  # type: ignore[index]
    assert shapes == set(SHAPES) - {"costledger"}


# --- real SDK objects ----------------------------------------------------------------


def test_openai_chat_completion_object() -> None:
    from openai.types.chat import ChatCompletion
    from openai.types.completion_usage import CompletionUsage

    payload = json.loads((FIXTURES / "openai.json").read_text())[0]["payload"]
    completion = ChatCompletion.model_validate(payload)
    expected = Usage(
        input_tokens=2006, output_tokens=300, cache_read_tokens=1920, reasoning_tokens=192
    )
    assert read_response(completion) == ResponseInfo(
        expected,
        "o3-mini-2025-01-31",
        "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "openai",
        {"service_tier": "default"},
    )
    assert extract_usage(completion.usage) == expected
    bare = CompletionUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    assert extract_usage(bare, "openai") == Usage(input_tokens=10, output_tokens=5)


def test_openai_responses_objects() -> None:
    from openai.types.responses import Response, ResponseUsage

    payload = json.loads((FIXTURES / "openai_responses.json").read_text())[0]["payload"]
    response = Response.model_validate(
        {**payload, "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    )
    expected = Usage(input_tokens=328, output_tokens=52, cache_read_tokens=256, reasoning_tokens=40)
    info = read_response(response)
    assert info == ResponseInfo(expected, "o3-2025-04-16", payload["id"], "openai_responses")
    usage = ResponseUsage.model_validate(
        {
            "input_tokens": 900,
            "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 700},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 930,
        }
    )
    assert extract_usage(usage) == Usage(
        input_tokens=900, output_tokens=30, cache_read_tokens=100, cache_write_tokens=700
    )


def test_openai_sdk_object_with_extra_fields_of_a_compatible_api() -> None:
    """DeepSeek through the OpenAI SDK: its extra fields live in pydantic's extras."""
    from openai.types.chat import ChatCompletion

    payload = json.loads((FIXTURES / "openai.json").read_text())[5]["payload"]
    completion = ChatCompletion.model_validate({**payload, "created": 0})
    assert completion.usage is not None
    assert completion.usage.model_extra
    assert read_response(completion) == ResponseInfo(
        Usage(input_tokens=1000, output_tokens=50, cache_read_tokens=768),
        "deepseek-chat",
        payload["id"],
        "openai",
    )


def test_anthropic_message_object() -> None:
    from anthropic.types import Message
    from anthropic.types import Usage as AnthropicUsage

    payload = json.loads((FIXTURES / "anthropic.json").read_text())[0]["payload"]
    message = Message.model_validate(payload)
    expected = Usage(
        input_tokens=13909,
        output_tokens=393,
        cache_read_tokens=12000,
        cache_write_tokens=1888,
        cache_write_1h_tokens=388,
    )
    assert read_response(message) == ResponseInfo(
        expected,
        "claude-sonnet-4-5-20250929",
        "msg_01XFDUDYJgAACzvnptvVoYEL",
        "anthropic",
        {"service_tier": "standard"},
    )
    # The SDK object has every optional field, set to None: None means 0 there.
    bare = AnthropicUsage(input_tokens=25, output_tokens=12)
    assert extract_usage(bare) == Usage(input_tokens=25, output_tokens=12)


def test_anthropic_beta_usage_with_thinking() -> None:
    from anthropic.types.beta import BetaUsage

    usage = BetaUsage.model_validate(
        {
            "input_tokens": 3,
            "output_tokens": 40,
            "cache_read_input_tokens": 97,
            "output_tokens_details": {"thinking_tokens": 25},
        }
    )
    assert read_response(usage) == ResponseInfo(
        Usage(input_tokens=100, output_tokens=40, cache_read_tokens=97, reasoning_tokens=25),
        provider="anthropic",
    )


def test_google_genai_like_objects_are_read_by_duck_typing() -> None:
    # google-genai is not installed here; its response is attributes with snake_case
    # names and modality enums, which is all the reader relies on.
    audio = SimpleNamespace(value="AUDIO")
    usage_metadata = SimpleNamespace(
        prompt_token_count=120,
        candidates_token_count=30,
        thoughts_token_count=None,
        cached_content_token_count=100,
        tool_use_prompt_token_count=None,
        total_token_count=150,
        prompt_tokens_details=[SimpleNamespace(modality=audio, token_count=20)],
        candidates_tokens_details=None,
        tool_use_prompt_tokens_details=None,
        response_token_count=None,
        response_tokens_details=None,
    )
    response = SimpleNamespace(
        candidates=[],
        usage_metadata=usage_metadata,
        model_version="gemini-2.5-flash",
        response_id="r-1",
    )
    assert read_response(response) == ResponseInfo(
        Usage(input_tokens=120, output_tokens=30, cache_read_tokens=100, input_audio_tokens=20),
        "gemini-2.5-flash",
        "r-1",
        "gemini",
    )


class _Collect:
    """A LangChain callback handler keeping every LLMResult it is given."""

    def __init__(self) -> None:
        from langchain_core.callbacks import BaseCallbackHandler

        results: list[Any] = []

        class Handler(BaseCallbackHandler):
            def on_llm_end(self, response: Any, **kwargs: Any) -> None:
                results.append(response)

        self.handler = Handler()
        self.results = results


def _fake_chat_model(*messages: Any) -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    return GenericFakeChatModel(messages=iter(messages))


def test_langchain_runtime_message_and_llm_result() -> None:
    from langchain_core.messages import AIMessage

    usage_metadata = {
        "input_tokens": 13909,
        "output_tokens": 393,
        "total_tokens": 14302,
        "input_token_details": {
            "cache_read": 12000,
            "cache_creation": 1888,
            "ephemeral_5m_input_tokens": 1500,
            "ephemeral_1h_input_tokens": 388,
        },
    }
    model = _fake_chat_model(
        AIMessage(
            content="hello",
            usage_metadata=usage_metadata,
            response_metadata={"model_name": "claude-sonnet-4-5-20250929", "id": "msg_1"},
        )
    )
    collect = _Collect()
    message = model.invoke("hi", config={"callbacks": [collect.handler]})
    expected = ResponseInfo(
        Usage(
            input_tokens=13909,
            output_tokens=393,
            cache_read_tokens=12000,
            cache_write_tokens=1888,
            cache_write_1h_tokens=388,
        ),
        "claude-sonnet-4-5-20250929",
        "msg_1",
        "langchain",
    )
    # The provider hint names the model's provider; the message's convention wins.
    assert read_response(message, "anthropic") == expected
    (result,) = collect.results
    assert read_response(result) == expected
    # A ChatGeneration on its own reads the same.
    assert read_response(result.generations[0][0]) == expected


def test_langchain_llm_result_of_several_prompts_sums_them() -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult

    def generation(n: int) -> ChatGeneration:
        meta = {"input_tokens": n, "output_tokens": 1, "total_tokens": n + 1}
        return ChatGeneration(
            message=AIMessage(content="x", usage_metadata=meta, id=f"chatcmpl-{n}")
        )

    result = LLMResult(
        generations=[[generation(10), generation(999)], [], [generation(20)]],
        llm_output={"model_name": "gpt-4o-mini"},
    )
    info = read_response(result)
    # Per prompt only the first candidate carries the call's usage.
    assert info == ResponseInfo(
        Usage(input_tokens=30, output_tokens=2), "gpt-4o-mini", "chatcmpl-10", "langchain"
    )
    chat = ChatResult(generations=[generation(7), generation(7)])
    assert extract_usage(chat) == Usage(input_tokens=7, output_tokens=1)


def test_langchain_result_falls_back_to_llm_output() -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    result = LLMResult(
        generations=[[ChatGeneration(message=AIMessage(content="x"))]],
        llm_output={
            "id": "msg_9",
            "model": "claude-3-5-haiku-20241022",
            "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 2},
        },
    )
    assert read_response(result) == ResponseInfo(
        Usage(input_tokens=105, output_tokens=2, cache_read_tokens=100),
        "claude-3-5-haiku-20241022",
        "msg_9",
        "anthropic",
    )


def test_langchain_stream_without_usage_is_an_error_not_zero() -> None:
    from langchain_core.messages import AIMessage

    model = _fake_chat_model(AIMessage(content="hello world"))
    collect = _Collect()
    chunks = list(model.stream("hi", config={"callbacks": [collect.handler]}))
    assert chunks
    with pytest.raises(UsageError, match="stream_usage=True"):
        read_response(collect.results[0])
    with pytest.raises(UsageError, match=r"usage_metadata' is None"):
        read_response(AIMessage(content="no usage"))


def test_langchain_message_ids_that_are_run_ids_are_not_response_ids() -> None:
    from langchain_core.messages import AIMessage

    meta = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}
    for run_id in ("run-7b0c", "lc_run--019a"):
        message = AIMessage(content="x", usage_metadata=meta, id=run_id)
        assert read_response(message).response_id is None
    message = AIMessage(content="x", usage_metadata=meta, id="chatcmpl-abc")
    assert read_response(message).response_id == "chatcmpl-abc"


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network
    import litellm as module

    return module


def test_litellm_mock_completion(litellm: ModuleType) -> None:
    response = litellm.completion(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], mock_response="hello"
    )
    info = read_response(response)
    # mock_response always reports 10 prompt and 20 completion tokens.
    assert info == ResponseInfo(
        Usage(input_tokens=10, output_tokens=20), "gpt-4o-mini", response.id, "litellm"
    )


_ANTHROPIC_RAW: Any = {
    "input_tokens": 21,
    "cache_creation_input_tokens": 1888,
    "cache_read_input_tokens": 12000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 388},
    "output_tokens": 393,
}
_BEDROCK_RAW: Any = {
    "inputTokens": 12,
    "outputTokens": 85,
    "totalTokens": 6121,
    "cacheReadInputTokens": 4000,
    "cacheWriteInputTokens": 2024,
    "cacheDetails": [{"ttl": "5m", "inputTokens": 1000}, {"ttl": "1h", "inputTokens": 1024}],
}
_GEMINI_RAW = {
    "promptTokenCount": 1250,
    "candidatesTokenCount": 180,
    "totalTokenCount": 1920,
    "cachedContentTokenCount": 1024,
    "thoughtsTokenCount": 410,
    "toolUsePromptTokenCount": 80,
    "promptTokensDetails": [
        {"modality": "TEXT", "tokenCount": 1150},
        {"modality": "AUDIO", "tokenCount": 100},
    ],
}


def test_litellm_anthropic_transformation_is_not_double_counted(litellm: ModuleType) -> None:
    """LiteLLM folds Anthropic's cache counts into prompt_tokens and mirrors them in
    cache_read/creation_input_tokens: read back, it must equal the raw Anthropic usage."""
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    converted = AnthropicConfig().calculate_usage(_ANTHROPIC_RAW, reasoning_content=None)
    assert converted.prompt_tokens == 21 + 1888 + 12000  # LiteLLM's own convention
    raw = extract_usage(_ANTHROPIC_RAW)
    assert raw == Usage(
        input_tokens=13909,
        output_tokens=393,
        cache_read_tokens=12000,
        cache_write_tokens=1888,
        cache_write_1h_tokens=388,
    )
    assert read_response(converted) == ResponseInfo(raw, provider="litellm")
    assert extract_usage(converted.model_dump()) == raw
    model_response = litellm.ModelResponse(model="claude-sonnet-4-5", usage=converted)
    # The LiteLLM integration passes custom_llm_provider as the hint: the fields still decide.
    for hint in ("anthropic", "bedrock", "vertex_ai", "openai", "langchain", None):
        assert extract_usage(model_response, hint) == raw, hint


def test_litellm_bedrock_transformation_is_not_double_counted(litellm: ModuleType) -> None:
    from litellm.llms.bedrock.chat.converse_transformation import AmazonConverseConfig

    converted = AmazonConverseConfig().transform_usage(_BEDROCK_RAW)
    raw = extract_usage({"usage": _BEDROCK_RAW})
    assert raw == Usage(
        input_tokens=6036,
        output_tokens=85,
        cache_read_tokens=4000,
        cache_write_tokens=2024,
        cache_write_1h_tokens=1024,
    )
    assert extract_usage(converted) == raw


def test_litellm_gemini_transformation_is_not_double_counted(litellm: ModuleType) -> None:
    from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import (
        VertexGeminiConfig,
    )

    response: Any = {"usageMetadata": _GEMINI_RAW}
    converted = VertexGeminiConfig._calculate_usage(response)
    raw = extract_usage({"usageMetadata": _GEMINI_RAW})
    assert raw == Usage(
        input_tokens=1330,
        output_tokens=590,
        cache_read_tokens=1024,
        reasoning_tokens=410,
        input_audio_tokens=100,
    )
    assert extract_usage(converted) == raw


def test_litellm_usage_constructed_with_anthropic_names(litellm: ModuleType) -> None:
    from litellm.types.utils import Usage as LiteLLMUsage

    usage = LiteLLMUsage(
        prompt_tokens=1210,
        completion_tokens=30,
        total_tokens=1240,
        cache_read_input_tokens=1000,
        cache_creation_input_tokens=200,
        reasoning_tokens=12,
    )
    assert read_response(usage) == ResponseInfo(
        Usage(
            input_tokens=1210,
            output_tokens=30,
            cache_read_tokens=1000,
            cache_write_tokens=200,
            reasoning_tokens=12,
        ),
        provider="litellm",
    )


# --- conventions and edge cases ------------------------------------------------------


def test_none_detail_is_zero_but_none_count_is_an_error() -> None:
    payload = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": None, "audio_tokens": None},
        "completion_tokens_details": None,
    }
    assert extract_usage(payload) == Usage(input_tokens=10, output_tokens=5)
    with pytest.raises(UsageError) as caught:
        extract_usage({"usage": {"prompt_tokens": 10, "completion_tokens": None}})
    assert caught.value.field == "usage.completion_tokens"
    assert "usage.completion_tokens" in str(caught.value)
    assert "None" in str(caught.value)
    with pytest.raises(UsageError, match=r"'usageMetadata.promptTokenCount' is required"):
        extract_usage({"usageMetadata": {"candidatesTokenCount": 3}})
    with pytest.raises(UsageError, match=r"'usage.input_tokens' is required, got missing"):
        extract_usage(
            {"type": "message", "usage": {"output_tokens": 3, "cache_read_input_tokens": 1}}
        )


def test_unknown_keys_are_ignored() -> None:
    payload = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "some_future_field": {"nested": "x"},
        "prompt_tokens_details": {"cached_tokens": 4, "brand_new_tokens": -3},
    }
    assert extract_usage(payload) == Usage(input_tokens=10, output_tokens=5, cache_read_tokens=4)


def test_digit_strings_are_counts_like_in_usage() -> None:
    assert extract_usage({"prompt_tokens": " 12 ", "completion_tokens": "3"}) == Usage(12, 3)


@pytest.mark.parametrize(
    ("payload", "field", "shown"),
    [
        (
            {
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 5,
                    "prompt_tokens_details": {"cached_tokens": 11},
                }
            },
            "usage.prompt_tokens_details.cached_tokens",
            "= 11",
        ),
        (
            {
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 5,
                    "completion_tokens_details": {"reasoning_tokens": 6},
                }
            },
            "usage.completion_tokens_details.reasoning_tokens",
            "= 6",
        ),
        (
            {
                "usage": {
                    "input_tokens": 10,
                    "input_tokens_details": {"cached_tokens": 12},
                    "output_tokens": 1,
                }
            },
            "usage.input_tokens_details.cached_tokens",
            "= 12",
        ),
        (
            {"usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 11}},
            "usageMetadata.cachedContentTokenCount",
            "= 11",
        ),
        (
            {
                "input_tokens": 10,
                "output_tokens": 1,
                "input_token_details": {"cache_read": 8, "cache_creation": 3},
            },
            "input_token_details.cache_read",
            "= 8",
        ),
        (
            {
                "input_tokens": 10,
                "output_tokens": 1,
                "input_token_details": {"priority_cache_read": 11},
            },
            "input_token_details.priority_cache_read",
            "= 11",
        ),
        (
            {
                "usage": {
                    "inputTokens": 1,
                    "outputTokens": 1,
                    "cacheWriteInputTokens": 5,
                    "cacheDetails": [{"ttl": "1h", "inputTokens": 6}],
                }
            },
            "usage.cacheDetails[ttl=1h].inputTokens",
            "= 6",
        ),
        (
            {
                "usage": {
                    "input_tokens": 1,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 5,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 4,
                        "ephemeral_1h_input_tokens": 2,
                    },
                }
            },
            "usage.cache_creation",
            "4 (5m) + 2 (1h)",
        ),
        (
            {"usage": {"prompt_tokens": 10, "completion_tokens": 5, "cache_read_input_tokens": 11}},
            "usage.cache_read_input_tokens",
            "= 11",
        ),
    ],
)
def test_inconsistent_counts_name_the_raw_field(payload: Any, field: str, shown: str) -> None:
    with pytest.raises(UsageError) as caught:
        extract_usage(payload)
    assert caught.value.field == field
    assert repr(field) in str(caught.value)
    assert shown in str(caught.value)


def test_no_usage_found_names_the_keys_but_never_the_values() -> None:
    secret = "sk-live-do-not-log"
    with pytest.raises(UsageError) as caught:
        extract_usage({"choices": [{"message": {"content": secret}}], "api_key": secret})
    assert "no token usage found" in str(caught.value)
    assert "'choices'" in str(caught.value)
    assert secret not in str(caught.value)
    with pytest.raises(UsageError, match=r"'usage' is None"):
        extract_usage({"object": "chat.completion.chunk", "choices": [], "usage": None})
    with pytest.raises(UsageError, match="no token usage found"):
        extract_usage(object())
    with pytest.raises(UsageError, match="not JSON"):
        extract_usage("data: [DONE]")


def test_anthropic_message_start_event_is_not_final_usage() -> None:
    event = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "usage": {"input_tokens": 10, "output_tokens": 1},
        },
    }
    with pytest.raises(UsageError, match="no token usage found"):
        extract_usage(event)


def test_canonical_usage_and_its_dict_pass_through() -> None:
    usage = Usage(100, 20, 30, 10, 5, 7, 3, 2)
    assert read_response(usage) == ResponseInfo(usage, provider="costledger")
    assert read_response(usage.as_dict()) == ResponseInfo(usage, provider="costledger")
    assert extract_usage({"usage": usage, "model": "m"}) == usage


def test_provider_hint_breaks_ties_and_never_overrides_the_fields() -> None:
    bare = {"input_tokens": 10, "output_tokens": 4}
    for hint, shape in [
        ("anthropic", "anthropic"),
        ("OpenAI", "openai_responses"),
        ("langchain", "langchain"),
        ("groq", "anthropic"),
        (None, "anthropic"),
    ]:
        info = read_response(bare, hint)
        assert info == ResponseInfo(Usage(10, 4), provider=shape), hint
    # Fields that only Anthropic uses decide, whatever the hint says.
    anthropic = {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 4}
    for hint in [*PROVIDER_HINTS, "groq", None]:
        assert extract_usage(anthropic, hint) == Usage(100, 4, cache_read_tokens=90), hint
    # The response wrapper is part of the fields.
    assert read_response({"type": "message", "usage": bare}, "openai").provider == "anthropic"
    assert read_response({"object": "response", "usage": bare}).provider == "openai_responses"


def test_provider_hint_aliases() -> None:
    assert {name: PROVIDER_HINTS[name] for name in ("google", "vertex_ai", "gemini")} == {
        "google": ("gemini",),
        "vertex_ai": ("gemini",),
        "gemini": ("gemini",),
    }
    for name in ("openai", "openai_responses", "anthropic", "bedrock", "langchain", "litellm"):
        assert name in PROVIDER_HINTS


def test_importing_extract_imports_no_sdk_and_nothing_heavy() -> None:
    code = (
        "import sys, costledger\n"
        "before = set(sys.modules)\n"
        "import costledger._extract\n"
        "sdks = ('langchain_core', 'litellm', 'openai', 'anthropic', 'google', 'boto3')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in sdks))\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    sdks, added = (json.loads(line.replace("'", '"')) for line in done.stdout.splitlines())
    assert sdks == []
    assert set(added) <= {
        "costledger._extract",
        "json",
        "json.decoder",
        "json.scanner",
        "json.encoder",
        "_json",
    }


# --- property tests: every shape round-trips any valid canonical usage ----------------

COUNTS = st.integers(min_value=0, max_value=2_000_000)


@st.composite
def usages(
    draw: st.DrawFn,
    *,
    cache_read: bool = True,
    cache_write: bool = True,
    write_1h: bool = True,
    reasoning: bool = True,
    audio_in: bool = True,
    audio_out: bool = True,
) -> Usage:
    read = draw(COUNTS) if cache_read else 0
    write = draw(COUNTS) if cache_write else 0
    input_tokens = draw(COUNTS) + read + write
    thinking = draw(COUNTS) if reasoning else 0
    visible = draw(COUNTS)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=visible + thinking,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=draw(st.integers(0, write)) if write_1h else 0,
        reasoning_tokens=thinking,
        input_audio_tokens=draw(st.integers(0, input_tokens)) if audio_in else 0,
        # Audio is spoken output, never reasoning.
        output_audio_tokens=draw(st.integers(0, visible)) if audio_out else 0,
    )


def render_openai(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "audio_tokens": u.input_audio_tokens,
        },
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning_tokens,
            "audio_tokens": u.output_audio_tokens,
        },
    }


def render_litellm(u: Usage) -> dict[str, Any]:
    payload = render_openai(u)
    payload["prompt_tokens_details"] |= {
        "cache_creation_tokens": u.cache_write_tokens,
        "cache_creation_token_details": {
            "ephemeral_5m_input_tokens": u.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
    }
    payload["cache_read_input_tokens"] = u.cache_read_tokens
    payload["cache_creation_input_tokens"] = u.cache_write_tokens
    return payload


def render_litellm_top_level_only(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def render_responses(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def render_realtime(u: Usage) -> dict[str, Any]:
    return {
        "total_tokens": u.total_tokens,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "input_token_details": {
            "text_tokens": u.input_tokens - u.input_audio_tokens,
            "audio_tokens": u.input_audio_tokens,
            "cached_tokens": u.cache_read_tokens,
        },
        "output_token_details": {
            "text_tokens": u.output_tokens - u.output_audio_tokens,
            "audio_tokens": u.output_audio_tokens,
        },
    }


def render_anthropic(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.uncached_input_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"thinking_tokens": u.reasoning_tokens},
        "service_tier": "standard",
    }


def _gemini_split(u: Usage) -> tuple[int, int, int, int]:
    """(prompt, tool use, prompt audio, tool-use audio): tool-use prompt tokens are
    billed as input on top of promptTokenCount, which holds the cached tokens."""
    tool_use = (u.input_tokens - u.cache_read_tokens) // 3
    prompt = u.input_tokens - tool_use
    prompt_audio = min(u.input_audio_tokens, prompt)
    return prompt, tool_use, prompt_audio, u.input_audio_tokens - prompt_audio


def render_gemini(u: Usage) -> dict[str, Any]:
    prompt, tool_use, prompt_audio, tool_audio = _gemini_split(u)
    candidates = u.output_tokens - u.reasoning_tokens
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": u.reasoning_tokens,
        "cachedContentTokenCount": u.cache_read_tokens,
        "toolUsePromptTokenCount": tool_use,
        "totalTokenCount": u.input_tokens + u.output_tokens,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": prompt - prompt_audio},
            {"modality": "AUDIO", "tokenCount": prompt_audio},
        ],
        "toolUsePromptTokensDetails": [{"modality": "AUDIO", "tokenCount": tool_audio}],
        "candidatesTokensDetails": [
            {"modality": "AUDIO", "tokenCount": u.output_audio_tokens},
            {"modality": "TEXT", "tokenCount": candidates - u.output_audio_tokens},
        ],
    }


def render_gemini_snake(u: Usage) -> dict[str, Any]:
    prompt, tool_use, prompt_audio, tool_audio = _gemini_split(u)
    return {
        "prompt_token_count": prompt,
        "candidates_token_count": u.output_tokens - u.reasoning_tokens,
        "thoughts_token_count": u.reasoning_tokens,
        "cached_content_token_count": u.cache_read_tokens,
        "tool_use_prompt_token_count": tool_use,
        "total_token_count": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": [{"modality": "AUDIO", "token_count": prompt_audio}],
        "tool_use_prompt_tokens_details": [{"modality": "AUDIO", "token_count": tool_audio}],
        "candidates_tokens_details": [{"modality": "AUDIO", "token_count": u.output_audio_tokens}],
    }


def render_bedrock(u: Usage) -> dict[str, Any]:
    return {
        "inputTokens": u.uncached_input_tokens,
        "outputTokens": u.output_tokens,
        "totalTokens": u.total_tokens,
        "cacheReadInputTokens": u.cache_read_tokens,
        "cacheWriteInputTokens": u.cache_write_tokens,
        "cacheDetails": [
            {"ttl": "5m", "inputTokens": u.cache_write_5m_tokens},
            {"ttl": "1h", "inputTokens": u.cache_write_1h_tokens},
        ],
    }


def render_langchain(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "input_token_details": {
            "audio": u.input_audio_tokens,
            "cache_read": u.cache_read_tokens,
            "cache_creation": u.cache_write_tokens,
            "ephemeral_5m_input_tokens": u.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
        "output_token_details": {"audio": u.output_audio_tokens, "reasoning": u.reasoning_tokens},
    }


def render_langchain_split_only(u: Usage) -> dict[str, Any]:
    """langchain-anthropic variants that give only the 5m/1h split, no cache_creation."""
    payload = render_langchain(u)
    del payload["input_token_details"]["cache_creation"]
    return payload


def render_langchain_flex_tier(u: Usage) -> dict[str, Any]:
    payload = render_langchain(u)
    details, out = payload["input_token_details"], payload["output_token_details"]
    details["flex_cache_read"] = details.pop("cache_read")
    details["flex"] = u.input_tokens - u.cache_read_tokens
    out["flex_reasoning"] = out.pop("reasoning")
    out["flex"] = u.output_tokens - u.reasoning_tokens
    return payload


def render_canonical(u: Usage) -> dict[str, Any]:
    return u.as_dict()


Renderer = Callable[[Usage], Any]
Limits = dict[str, bool]
_NO_AUDIO: Limits = {"audio_in": False, "audio_out": False}


def _chat_response(usage: Any) -> Any:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "usage": usage}


def _gemini_response(usage: Any) -> Any:
    if "promptTokenCount" in usage:
        return {"usageMetadata": usage, "modelVersion": "m", "responseId": "r"}
    return {"usage_metadata": usage, "model_version": "m", "response_id": "r"}


# shape -> [(renderer, what it can express)], and how a whole response wraps its usage
SHAPE_RENDERERS: dict[str, tuple[list[tuple[Renderer, Limits]], Callable[[Any], Any]]] = {
    "openai": ([(render_openai, {"write_1h": False})], _chat_response),
    "litellm": (
        [
            (render_litellm, {}),
            (render_litellm_top_level_only, {"write_1h": False, **_NO_AUDIO}),
        ],
        _chat_response,
    ),
    "openai_responses": (
        [(render_responses, {"write_1h": False, **_NO_AUDIO})],
        lambda usage: {"id": "resp_1", "object": "response", "model": "m", "usage": usage},
    ),
    "openai_realtime": (
        [(render_realtime, {"cache_write": False, "reasoning": False})],
        lambda usage: {"type": "response.done", "response": {"id": "r", "usage": usage}},
    ),
    "anthropic": (
        [(render_anthropic, _NO_AUDIO)],
        lambda usage: {"id": "msg_1", "type": "message", "model": "m", "usage": usage},
    ),
    "gemini": (
        [(render_gemini, {"cache_write": False}), (render_gemini_snake, {"cache_write": False})],
        _gemini_response,
    ),
    "bedrock": (
        [(render_bedrock, {"reasoning": False, **_NO_AUDIO})],
        lambda usage: {"output": {}, "stopReason": "end_turn", "usage": usage},
    ),
    "langchain": (
        [
            (render_langchain, {}),
            (render_langchain_split_only, {}),
            (render_langchain_flex_tier, {}),
        ],
        lambda usage: {
            "type": "ai",
            "content": "",
            "response_metadata": {"model_name": "m"},
            "usage_metadata": usage,
        },
    ),
    "costledger": ([(render_canonical, {})], lambda usage: {"usage": usage, "model": "m"}),
}


@st.composite
def rendered(draw: st.DrawFn) -> tuple[str, Usage, Any, bool]:
    shape = draw(st.sampled_from(sorted(SHAPE_RENDERERS)))
    renderers, wrap = SHAPE_RENDERERS[shape]
    render, limits = draw(st.sampled_from(renderers))
    usage = draw(usages(**limits))
    payload = render(usage)
    whole = draw(st.booleans())
    return shape, usage, wrap(payload) if whole else payload, whole


@settings(max_examples=600, deadline=None)
@given(rendered(), st.booleans())
def test_every_shape_round_trips(case: tuple[str, Usage, Any, bool], hinted: bool) -> None:
    shape, usage, payload, _ = case
    info = read_response(payload, shape if hinted else None)
    assert info.usage == usage
    assert info.provider == shape
    assert extract_usage(json.dumps(payload)) == usage


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(usage=usages(audio_in=False, audio_out=False))
def test_sdk_objects_round_trip(usage: Usage) -> None:
    from anthropic.types import Usage as AnthropicUsage
    from openai.types.completion_usage import CompletionUsage
    from openai.types.responses import ResponseUsage

    openai_usage = replace(usage, cache_write_1h_tokens=0)
    assert (
        extract_usage(CompletionUsage.model_validate(render_openai(openai_usage))) == openai_usage
    )
    assert (
        extract_usage(ResponseUsage.model_validate(render_responses(openai_usage))) == openai_usage
    )
    assert extract_usage(AnthropicUsage.model_validate(render_anthropic(usage))) == usage


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(usage=usages())
def test_litellm_usage_objects_round_trip(litellm: ModuleType, usage: Usage) -> None:
    from litellm.types.utils import Usage as LiteLLMUsage

    assert extract_usage(LiteLLMUsage(**render_litellm(usage))) == usage
    plain = replace(usage, cache_write_1h_tokens=0, input_audio_tokens=0, output_audio_tokens=0)
    assert extract_usage(LiteLLMUsage(**render_litellm_top_level_only(plain))) == plain


@settings(max_examples=60, deadline=None)
@given(usage=usages())
def test_langchain_message_objects_round_trip(usage: Usage) -> None:
    from langchain_core.messages import AIMessage

    for render in (render_langchain, render_langchain_split_only, render_langchain_flex_tier):
        message = AIMessage(content="", usage_metadata=render(usage))
        assert read_response(message) == ResponseInfo(usage, provider="langchain")


# --- property tests: invalid values raise UsageError naming the field ----------------

# shape -> a valid payload (a function of no arguments) and the paths of its counts;
# a path ending in "!" is a required count, which may not be None either.
_VALID = Usage(5000, 900, 1000, 600, 100, 300, 40, 30)
_FIELDS: dict[str, tuple[Callable[[], Any], list[str]]] = {
    "openai": (
        lambda: render_openai(replace(_VALID, cache_write_1h_tokens=0)),
        [
            "prompt_tokens!",
            "completion_tokens!",
            "prompt_tokens_details.cached_tokens",
            "prompt_tokens_details.cache_write_tokens",
            "prompt_tokens_details.audio_tokens",
            "completion_tokens_details.reasoning_tokens",
            "completion_tokens_details.audio_tokens",
        ],
    ),
    "litellm": (
        lambda: render_litellm_top_level_only(_VALID),
        [
            "prompt_tokens!",
            "completion_tokens!",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ],
    ),
    "openai_responses": (
        lambda: render_responses(replace(_VALID, cache_write_1h_tokens=0)),
        [
            "input_tokens!",
            "output_tokens!",
            "input_tokens_details.cached_tokens",
            "input_tokens_details.cache_write_tokens",
            "output_tokens_details.reasoning_tokens",
        ],
    ),
    "openai_realtime": (
        lambda: render_realtime(_VALID),
        [
            "input_tokens!",
            "output_tokens!",
            "input_token_details.cached_tokens",
            "input_token_details.audio_tokens",
            "output_token_details.audio_tokens",
        ],
    ),
    "anthropic": (
        lambda: render_anthropic(_VALID),
        [
            "input_tokens!",
            "output_tokens!",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "cache_creation.ephemeral_5m_input_tokens",
            "cache_creation.ephemeral_1h_input_tokens",
            "output_tokens_details.thinking_tokens",
        ],
    ),
    "gemini": (
        lambda: render_gemini(replace(_VALID, cache_write_tokens=0, cache_write_1h_tokens=0)),
        [
            "promptTokenCount!",
            "candidatesTokenCount",
            "thoughtsTokenCount",
            "cachedContentTokenCount",
            "toolUsePromptTokenCount",
            "promptTokensDetails[1].tokenCount",
            "candidatesTokensDetails[0].tokenCount",
        ],
    ),
    "bedrock": (
        lambda: render_bedrock(_VALID),
        [
            "inputTokens!",
            "outputTokens!",
            "cacheReadInputTokens",
            "cacheWriteInputTokens",
            "cacheDetails[1].inputTokens",
        ],
    ),
    "langchain": (
        lambda: render_langchain(_VALID),
        [
            "input_tokens!",
            "output_tokens!",
            "input_token_details.cache_read",
            "input_token_details.cache_creation",
            "input_token_details.ephemeral_1h_input_tokens",
            "input_token_details.audio",
            "output_token_details.reasoning",
            "output_token_details.audio",
        ],
    ),
    "costledger": (
        lambda: render_canonical(_VALID),
        ["input_tokens!", "output_tokens!", "cache_read_tokens", "reasoning_tokens"],
    ),
}

INVALID = st.one_of(
    st.integers(max_value=-1),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(min_size=0, max_size=12).filter(
        lambda s: not (s.strip().isascii() and s.strip().isdigit())
    ),
    st.lists(st.integers(), max_size=2),
    st.just({"tokens": 3}),
)


def _set_path(payload: Any, path: str, value: Any) -> None:
    node = payload
    steps = path.replace("[", ".").replace("]", "").split(".")
    for step in steps[:-1]:
        node = node[int(step)] if step.isdigit() else node[step]
    node[steps[-1]] = value


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_invalid_values_raise_naming_the_field(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(sorted(_FIELDS)))
    make, paths = _FIELDS[shape]
    raw = data.draw(st.sampled_from(paths))
    required, path = raw.endswith("!"), raw.rstrip("!")
    value = data.draw(st.one_of(INVALID, st.just(None)) if required else INVALID)
    payload = make()
    assert extract_usage(payload) is not None  # valid before the change
    _set_path(payload, path, value)
    whole = data.draw(st.booleans()) and shape not in {"costledger", "openai_realtime"}
    where = path
    if whole:
        payload = {"usageMetadata": payload} if shape == "gemini" else {"usage": payload}
        where = f"{'usageMetadata' if shape == 'gemini' else 'usage'}.{path}"
    with pytest.raises(UsageError) as caught:
        extract_usage(payload, shape)
    assert caught.value.field == where
    assert repr(where) in str(caught.value)
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        assert repr(value)[:40] in str(caught.value)


@settings(max_examples=200, deadline=None)
@given(rendered(), st.integers(min_value=1, max_value=1000))
def test_more_cache_than_input_is_refused(case: tuple[str, Usage, Any, bool], extra: int) -> None:
    shape, usage, payload, whole = case
    assume(shape in {"openai", "openai_responses", "langchain", "gemini", "openai_realtime"})
    assume(usage.cache_read_tokens > 0)
    usage_part = payload
    if whole:
        usage_part = next(
            v
            for k, v in payload.items()
            if k in {"usage", "usageMetadata", "usage_metadata", "response"}
        )
        usage_part = usage_part.get("usage", usage_part)
    cached_path = {
        "openai": "prompt_tokens_details.cached_tokens",
        "openai_responses": "input_tokens_details.cached_tokens",
        "openai_realtime": "input_token_details.cached_tokens",
        "langchain": "input_token_details.cache_read",
        "gemini": "cachedContentTokenCount"
        if "cachedContentTokenCount" in usage_part
        else "cached_content_token_count",
    }[shape]
    _set_path(usage_part, cached_path, usage.input_tokens + extra)
    with pytest.raises(UsageError) as caught:
        extract_usage(payload)
    assert caught.value.field is not None
    assert caught.value.field.endswith(cached_path)
    assert str(usage.input_tokens + extra) in str(caught.value)
