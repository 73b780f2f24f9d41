"""A LangChain chat model's response served at a service tier or speed is priced at that
variant (ChatOpenAI keeps ``service_tier`` in ``response_metadata``, ChatAnthropic the
provider's usage with its ``speed`` under ``response_metadata["usage"]``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from costledger import Pricer, Usage
from costledger.testing import capture_costs
from costledger_langchain import CostLedgerCallbackHandler

USAGE = Usage(input_tokens=10_000, output_tokens=2_000)


class ServedChatModel(BaseChatModel):
    """Answers with fixed usage and the response metadata ``served`` adds."""

    model_name: str
    served: dict[str, Any]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(
            content="4",
            usage_metadata={"input_tokens": 10_000, "output_tokens": 2_000, "total_tokens": 12_000},
            response_metadata={"model_name": self.model_name, **self.served},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    @property
    def _llm_type(self) -> str:
        return "served-fake"


@pytest.mark.parametrize(
    ("model", "served", "context", "total"),
    [
        ("gpt-5", {"service_tier": "priority"}, {"service_tier": "priority"}, "0.065"),
        ("gpt-5", {"service_tier": "flex"}, {"service_tier": "flex"}, "0.01625"),
        (
            "claude-opus-4-8",
            {"usage": {"input_tokens": 10_000, "output_tokens": 2_000, "speed": "fast"}},
            {"speed": "fast"},
            "0.2",
        ),
        ("gpt-5", {}, {}, "0.0325"),
    ],
)
def test_the_variant_a_response_reports_prices_the_call(
    model: str, served: dict[str, Any], context: dict[str, str], total: str
) -> None:
    if context and Pricer().price(model, USAGE, price_context=context) == Pricer().price(
        model, USAGE
    ):
        pytest.skip(f"the installed genai-prices has no {context} price variant of {model}")
    chat = ServedChatModel(model_name=model, served=served)
    with capture_costs() as costs:
        chat.invoke("2 + 2?", config={"callbacks": [CostLedgerCallbackHandler()]})
    [event] = costs.events
    assert dict(event.price_context) == context
    assert event.cost.total == Decimal(total)
