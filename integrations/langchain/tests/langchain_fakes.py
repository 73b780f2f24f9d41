"""Fake chat models for the LangChain tests: the real LangChain runtime, no network.

``UsageChatModel`` answers like ``ChatOpenAI`` does: ``usage_metadata`` on the
message (input including cached tokens), the dated snapshot in
``response_metadata["model_name"]``, ``ls_provider="openai"``. Its streams carry
usage the way providers do: on the final chunk only (OpenAI with
``stream_usage=True``), or as a running total repeated on every chunk (the
providers whose chunks LangChain wrongly sums).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

# gpt-4o-mini list prices, USD per token: $0.15 / MTok input, $0.075 cached, $0.60 output.
INPUT_PRICE = Decimal("0.15") / 1_000_000
CACHED_PRICE = Decimal("0.075") / 1_000_000
OUTPUT_PRICE = Decimal("0.60") / 1_000_000

SNAPSHOT = "gpt-4o-mini-2024-07-18"


def expected_cost(input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> Decimal:
    """gpt-4o-mini's price of one call, worked out by hand."""
    return (
        (input_tokens - cached_tokens) * INPUT_PRICE
        + cached_tokens * CACHED_PRICE
        + output_tokens * OUTPUT_PRICE
    )


def usage_metadata(input_tokens: int, output_tokens: int, cached: int = 0) -> UsageMetadata:
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    if cached:
        usage["input_token_details"] = {"cache_read": cached}
    # A cast, not the TypedDict call: langchain-core spells NotRequired the 3.11 way,
    # which mypy checking for 3.10 reads as required.
    return cast(UsageMetadata, usage)


class UsageChatModel(BaseChatModel):
    """A chat model answering ``reply`` with fixed usage, like ChatOpenAI."""

    model_name: str = "gpt-4o-mini"
    snapshot: str = SNAPSHOT
    reply: str = "the answer is forty two"
    input_tokens: int = 1000
    output_tokens: int = 200
    cached_tokens: int = 0
    choices: int = 1
    max_tokens: int | None = None
    stream_usage: Literal["final", "cumulative", "delta", "none"] = "final"
    fail_with: Any = None
    fail_after_chunks: int | None = None
    chunk_delay: float = 0.0
    calls: int = 0

    def _usage(self) -> UsageMetadata:
        return usage_metadata(self.input_tokens, self.output_tokens, self.cached_tokens)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with _lock:
            self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        generations = [
            ChatGeneration(
                message=AIMessage(
                    content=self.reply if i == 0 else f"{self.reply} ({i})",
                    # Like ChatOpenAI with n > 1: every choice carries the response's usage.
                    usage_metadata=self._usage(),
                    response_metadata={"model_name": self.snapshot, "finish_reason": "stop"},
                )
            )
            for i in range(self.choices)
        ]
        return ChatResult(generations=generations, llm_output={"model_name": self.snapshot})

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        with _lock:
            self.calls += 1
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            if self.fail_after_chunks is not None and i == self.fail_after_chunks:
                raise self.fail_with or RuntimeError("stream broke")
            usage = None
            if self.stream_usage == "cumulative":
                # A running total on every chunk: the prompt each time, output so far.
                done = self.output_tokens * (i + 1) // len(words)
                usage = usage_metadata(self.input_tokens, done, self.cached_tokens)
            elif self.stream_usage == "delta" and i == 0:
                # Anthropic's way: the prompt on the first chunk, the output at the end.
                usage = usage_metadata(self.input_tokens, 0, self.cached_tokens)
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(content=word if i == 0 else f" {word}", usage_metadata=usage)
            )
            # Like most integrations, report the chunk from inside _stream too.
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
        final_usage = None
        if self.stream_usage == "final":
            final_usage = self._usage()
        elif self.stream_usage == "delta":
            final_usage = usage_metadata(0, self.output_tokens)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=final_usage,
                response_metadata={"model_name": self.snapshot, "finish_reason": "stop"},
                chunk_position="last",
            )
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(messages, stop=stop, **kwargs):
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)  # the network, as seen by a task
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        return params

    @property
    def _llm_type(self) -> str:
        return "usage-fake-chat-model"


_lock = threading.Lock()
