"""A call asking for several answers reserves each one's worst case, by one rule.

``Tracker.start(choices=n)`` (OpenAI's ``n``, ``best_of``, Gemini's ``candidate_count``)
multiplies one answer's output limit (the call's ``max_output_tokens``, else the model's
limit from the price data, else the guard's ``Estimator.default_output_tokens``). The
LangChain and LiteLLM entry points used to compute "several answers without a limit"
themselves, from the shared default estimator (a guard's own ``default_output_tokens``
was ignored), and the HTTP transport did not count ``n`` at all: a request for 8 answers
reserved one.

Model ``m`` is priced 10 USD / MTok in, 20 USD / MTok out; its prompt is given as an
explicit token count so the figures below are exact.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from costledger import Budget, Estimator, Pricer, Tracker
from costledger.http import TrackingTransport
from costledger.testing import InMemoryLedger, MemoryStore

IN = Decimal(10) / 1_000_000
OUT = Decimal(20) / 1_000_000
PROMPT = "x" * 400  # the estimate's heuristic: ceil(400 / 4) + 16 = 116 tokens
PROMPT_TOKENS = 116


def _pricer(max_output_tokens: int | None = None) -> Pricer:
    entry: dict[str, Any] = {"input": "10", "output": "20"}
    if max_output_tokens is not None:
        entry["max_output_tokens"] = max_output_tokens
    return Pricer({"m": entry}, genai_prices=False, litellm=False)


def _tracker(budget: Budget, pricer: Pricer | None = None) -> Tracker:
    return Tracker(
        InMemoryLedger(), pricer or _pricer(), guards=[budget], guard_store=MemoryStore(), log="off"
    )


def _reserved(budget: Budget, tracker: Tracker) -> Decimal:
    [status] = budget.status(tracker)
    return status.reserved


def test_choices_multiply_the_calls_own_output_limit() -> None:
    budget = Budget("100 USD", "day")
    tracker = _tracker(budget)
    tracker.start(source="api", model="m", prompt_text=PROMPT, max_output_tokens=100, choices=3)
    assert _reserved(budget, tracker) == PROMPT_TOKENS * IN + 300 * OUT


def test_choices_multiply_the_models_limit_from_the_price_data() -> None:
    budget = Budget("100 USD", "day")
    tracker = _tracker(budget, _pricer(max_output_tokens=700))
    tracker.start(source="api", model="m", prompt_text=PROMPT, choices=2)
    assert _reserved(budget, tracker) == PROMPT_TOKENS * IN + 1400 * OUT


def test_choices_multiply_the_guards_own_default_output() -> None:
    budget = Budget("100 USD", "day", estimator=Estimator(default_output_tokens=50))
    tracker = _tracker(budget)  # m has no output limit in the price data
    tracker.start(source="api", model="m", prompt_text=PROMPT, choices=4)
    assert _reserved(budget, tracker) == PROMPT_TOKENS * IN + 200 * OUT


def test_a_token_budget_counts_every_answer() -> None:
    budget = Budget("1000 tokens", "day", estimator=Estimator(default_output_tokens=50))
    tracker = _tracker(budget)
    tracker.start(source="api", model="m", prompt_text=PROMPT, choices=4)
    assert _reserved(budget, tracker) == PROMPT_TOKENS + 200


@pytest.mark.parametrize("bad", [0, -1, True, "2", 2.0, None])
def test_unreadable_choices_is_a_value_error_naming_it(bad: object) -> None:
    budget = Budget("100 USD", "day")
    tracker = _tracker(budget)
    with pytest.raises(ValueError, match=r"choices must be an int >= 1, got " + repr(bad)):
        tracker.start(source="api", model="m", choices=bad)  # type: ignore[arg-type]
    assert _reserved(budget, tracker) == 0


def _answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    n = body.get("n", 1)
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": "hi"}} for i in range(n)
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n},
        },
    )


@pytest.mark.parametrize(
    ("extra", "output_reserved"),
    [
        ({"n": 3, "max_tokens": 100}, 300),
        ({"n": 3}, 150),  # the guard's default output (50) for each of the 3 answers
        ({"best_of": 4, "n": 2, "max_tokens": 10}, 40),  # best_of are generated and billed
        ({"max_tokens": 100}, 100),
    ],
)
def test_the_http_transport_reserves_every_answer_a_request_asks_for(
    extra: dict[str, Any], output_reserved: int
) -> None:
    budget = Budget("1000000 tokens", "day", estimator=Estimator(default_output_tokens=50))
    tracker = _tracker(budget)
    held: list[Decimal] = []

    def handler(request: httpx.Request) -> httpx.Response:
        held.append(_reserved(budget, tracker))
        return _answer(request)

    transport = TrackingTransport(httpx.MockTransport(handler), tracker=tracker)
    with httpx.Client(transport=transport, base_url="https://api.openai.com/v1") as client:
        for fields in ({"max_tokens": 1}, extra):  # the first: the prompt's own count
            body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], **fields}
            client.post("/chat/completions", json=body).raise_for_status()
            tracker.ledger.flush()  # type: ignore[attr-defined]  (its settle lands first)
    prompt_tokens = held[0] - 1
    assert prompt_tokens >= PROMPT_TOKENS  # the request's text, counted by the estimate
    assert held[1] == prompt_tokens + output_reserved
