"""A wrapper records the call from LiteLLM's answer: a fallback that answered keeps the
name the call's ``fallbacks`` gave it (an Azure deployment, priced by its book entry), and
an answer without usage is still recorded (unpriced, never guessed)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before LiteLLM is imported

from decimal import Decimal

import litellm

from costledger import Pricer, Tracker
from costledger.testing import InMemoryLedger
from costledger_litellm._logger import finish_from_response

BOOK = {"support-bot-prod": {"input": "1", "output": "1", "provider": "azure"}}


def _answer(model: str, provider: str, attempted: int, usage: dict[str, int] | None) -> object:
    response = litellm.ModelResponse(
        id="chatcmpl-1",
        model=model,
        choices=[{"index": 0, "message": {"role": "assistant", "content": "4"}}],
    )
    response.usage = None if usage is None else litellm.Usage(**usage)
    response._hidden_params = {
        "custom_llm_provider": provider,
        "additional_headers": {"x-litellm-attempted-fallbacks": attempted},
    }
    return response


def test_a_fallback_deployment_keeps_its_name_and_its_book_price() -> None:
    tracker = Tracker(InMemoryLedger(), pricer=Pricer(overrides=BOOK), log="off")
    call = tracker.start(source="litellm", model="gpt-4o-mini", provider="openai")
    answer = _answer(
        "gpt-4o-mini-2024-07-18", "azure", 1, {"prompt_tokens": 1000, "completion_tokens": 1000}
    )
    fallbacks = [{"model": "azure/support-bot-prod", "api_base": "https://example.invalid"}]
    finish_from_response(tracker, call, answer, 12.0, fallbacks=fallbacks)
    [event] = tracker.ledger.events()
    assert (event.model, event.response_model, event.provider) == (
        "support-bot-prod",
        "gpt-4o-mini-2024-07-18",
        "azure",
    )
    assert event.total_cost == Decimal("0.002")  # 1000 + 1000 tokens at the book's $1/M
    # without the fallbacks list: the response's model, as before
    call = tracker.start(source="litellm", model="gpt-4o-mini", provider="openai")
    finish_from_response(tracker, call, answer, 12.0)
    assert [e.model for e in tracker.ledger.events() if e.id == call.id] == [
        "gpt-4o-mini-2024-07-18"
    ]


def test_an_answer_without_usage_is_recorded_unpriced() -> None:
    from costledger_litellm._logger import _registry
    from costledger_litellm._wrappers import _answered, _record_answer

    tracker = Tracker(InMemoryLedger(), log="off")
    call = tracker.start(source="litellm", model="gpt-4o-mini", provider="openai")
    _registry.register(call.id, tracker, call)
    answer = _answer("gpt-4o-mini", "openai", 0, None)
    opened = _answered(call.id, answer)
    assert opened is not None  # taken: LiteLLM's own event for the id would add nothing
    _record_answer(opened, answer, 5.0)
    [event] = tracker.ledger.events()
    assert (event.status, event.total_cost, event.input_tokens) == ("ok", None, 0)
    assert event.pricing_status == "not_priced"
