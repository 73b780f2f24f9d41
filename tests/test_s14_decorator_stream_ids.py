"""How a tracked stream tells its responses apart by their ids (second-round review).

One LangChain model call's chunks may carry different ids: ``BaseChatModel.stream`` gives
a chunk without one ``lc_run-<run id>``, so a provider that sends its id on one chunk only
mixes the two (LangChain's own chunk addition merges them). They were read as two calls:
two events, the second without a model (unpriced, or priced below a long-context tier).
And an empty response id (``""``, as some OpenAI-compatible servers send) made two
whole responses one. Real LangChain runtime and OpenAI SDK objects, exact money.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from openai.types.chat import ChatCompletion

from costledger import Usage, track_cost
from costledger.testing import capture_costs

M = Decimal(1_000_000)
# claude-3-5-haiku: 0.80 USD per million input tokens, 4.00 output
HAIKU_1200_80 = (1200 * Decimal("0.80") + 80 * 4) / M
# gpt-4o-mini: 0.15 / 0.60
MINI_3000_150 = (3000 * Decimal("0.15") + 150 * Decimal("0.60")) / M
assert (Decimal("0.00128"), Decimal("0.00054")) == (HAIKU_1200_80, MINI_3000_150)


class _Streamer(BaseChatModel):
    """Streams one answer: the provider's id on the first chunk (``first=True``) or the
    last, none on the others; the prompt's usage first, the output's last."""

    first: bool = True
    model_name: str = "claude-3-5-haiku-20241022"

    @property
    def _llm_type(self) -> str:
        return "s14-streamer"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        head: dict[str, Any] = {"id": "msg_01XYZ"} if self.first else {}
        tail: dict[str, Any] = {} if self.first else {"id": "msg_01XYZ"}
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata={"input_tokens": 1200, "output_tokens": 0, "total_tokens": 1200},
                response_metadata={"model_name": self.model_name},
                **head,
            )
        )
        for word in ("Hello", " world"):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata={"input_tokens": 0, "output_tokens": 80, "total_tokens": 80},
                response_metadata={"stop_reason": "end_turn"},
                **tail,
            )
        )


def _events(costs: Any) -> list[tuple[Usage, str | None, Decimal | None]]:
    return [(e.usage, e.response_model, e.cost.total) for e in costs.events]


@pytest.mark.parametrize("first", [True, False])
def test_one_langchain_call_whose_chunks_carry_two_ids_is_one_response(first: bool) -> None:
    @track_cost(model="claude-3-5-haiku", provider="anthropic")
    def ask() -> Iterator[Any]:
        yield from _Streamer(first=first).stream("hi")

    with capture_costs() as costs:
        chunks = list(ask())
    assert len({chunk.id for chunk in chunks}) == 2  # the provider's and lc_run-...
    assert _events(costs) == [(Usage(1200, 80), "claude-3-5-haiku-20241022", HAIKU_1200_80)]


def test_two_langchain_calls_streamed_one_after_the_other_are_two_responses() -> None:
    @track_cost(model="claude-3-5-haiku", provider="anthropic")
    def loop() -> Iterator[Any]:
        yield from _Streamer().stream("hi")  # the provider's id first, then lc_run-<1>
        yield from _Streamer(first=False).stream("again")  # lc_run-<2> first, the id last

    with capture_costs() as costs:
        list(loop())
    # one model at a linear price: the two calls are added into the one event
    assert _events(costs) == [(Usage(2400, 160), "claude-3-5-haiku-20241022", 2 * HAIKU_1200_80)]


def _completion(response_id: str, prompt: int, completion: int) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": response_id,
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "x"},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    )


def test_whole_responses_with_an_empty_id_are_each_counted() -> None:
    @track_cost
    def loop() -> Iterator[ChatCompletion]:
        yield _completion("", 1000, 100)
        yield _completion("", 2000, 50)

    with capture_costs() as costs:
        list(loop())
    assert _events(costs) == [(Usage(3000, 150), "gpt-4o-mini-2024-07-18", MINI_3000_150)]


class _Branch(BaseChatModel):
    """Streams one answer with its provider id on the first chunk only (ChatAnthropic-like)."""

    model_name: str
    provider_id: str

    @property
    def _llm_type(self) -> str:
        return "s14-branch"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                id=self.provider_id,
                usage_metadata={"input_tokens": 1000, "output_tokens": 0, "total_tokens": 1000},
                response_metadata={"model_name": self.model_name},
            )
        )
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="x",
                usage_metadata={"input_tokens": 0, "output_tokens": 1000, "total_tokens": 1000},
            )
        )


def test_interleaved_calls_are_not_priced_at_each_others_model() -> None:
    # Two branches' chunks interleaved in one stream: LangChain's lc_run- ids of the
    # output chunks cannot be matched to a provider id, so they are not guessed into the
    # call streamed last (it was: sonnet charged for haiku's 1000 output tokens).
    @track_cost(provider="anthropic")
    def parallel() -> Iterator[Any]:
        a = _Branch(model_name="claude-3-5-haiku-20241022", provider_id="msg_A").stream("a")
        b = _Branch(model_name="claude-3-5-sonnet-20241022", provider_id="msg_B").stream("b")
        for chunk_a, chunk_b in zip(a, b, strict=True):
            yield chunk_a
            yield chunk_b

    with capture_costs() as costs:
        list(parallel())
    priced = {e.response_model: e.usage for e in costs.events if e.response_model}
    assert priced == {
        "claude-3-5-haiku-20241022": Usage(1000, 0),
        "claude-3-5-sonnet-20241022": Usage(1000, 0),
    }
