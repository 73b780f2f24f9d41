"""The exact cost of LangChain calls with costledger, offline.

Run: python examples/langchain_example.py

``OfflineChatModel`` stands in for ``ChatOpenAI``: it answers at once with the
usage and metadata ChatOpenAI reports, so the example needs no key and no network.
With a real model, only the model line changes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate

import costledger
from costledger_langchain import CostLedgerCallbackHandler, tracking

USAGE: Any = {
    "input_tokens": 1200,  # LangChain counts cached input inside input_tokens
    "output_tokens": 300,
    "total_tokens": 1500,
    "input_token_details": {"cache_read": 1024},
}
SNAPSHOT = {"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": "stop"}


class OfflineChatModel(BaseChatModel):
    """Answers like ChatOpenAI(model="gpt-4o-mini", stream_usage=True) would."""

    model_name: str = "gpt-4o-mini"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(content="Paris.", usage_metadata=USAGE, response_metadata=SNAPSHOT)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="Par"))
        yield ChatGenerationChunk(message=AIMessageChunk(content="is."))
        # Usage arrives on the final chunk, as OpenAI sends it with stream_usage=True.
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=USAGE, response_metadata=SNAPSHOT)
        )

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        return params

    @property
    def _llm_type(self) -> str:
        return "offline-chat-model"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = costledger.Ledger(f"sqlite:///{tmp}/costs.db")
        costledger.configure(ledger=ledger, log="off", project="example")

        model = OfflineChatModel()
        chain = (
            ChatPromptTemplate.from_messages([("human", "Capital of {country}?")])
            | model
            | StrOutputParser()
        )

        # 1. One handler on one call; attribution rides on LangChain metadata.
        handler = CostLedgerCallbackHandler()
        answer = chain.invoke(
            {"country": "France"},
            config={"callbacks": [handler], "metadata": {"user": "u-42", "feature": "geo"}},
        )
        print(f"{answer!r} cost ${handler.totals.total_cost}")

        # 2. Everything inside a block, streams included, with a live exact total.
        with tracking(team="travel") as totals:
            chain.batch([{"country": c} for c in ("Spain", "Italy", "Japan")])
            for _ in model.stream("Capital of Peru?"):
                pass
        print(f"{totals.requests} calls in the block cost ${totals.total_cost}")
        print(f"  {totals.input_tokens} input tokens ({totals.cache_read_tokens} from cache)")

        rows = list(ledger.events())  # reads wait for the background writer
        stored = sum(r.total_cost for r in rows if r.total_cost is not None)
        print(f"the ledger holds {len(rows)} events, ${stored}")
        ledger.close()


if __name__ == "__main__":
    main()
