"""costledger with LiteLLM, offline: the exact cost of a call, a stream and a guarded call.

Run: python examples/litellm_example.py

Needs ``pip install costledger costledger-litellm``. No API key and no network:
LiteLLM's ``mock_response`` answers (10 prompt and 20 completion tokens), and LiteLLM
is told to use its bundled price map instead of fetching one.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing litellm

import tempfile
import time
from decimal import Decimal

import litellm

import costledger
import costledger_litellm
from costledger import Budget, Ledger
from costledger_litellm import CostLedgerLogger

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def wait_for(ledger: Ledger, call_id: str, timeout: float = 10.0) -> costledger.UsageEvent:
    """LiteLLM reports a sync call on its logging thread, just after returning it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ledger.flush()
        stored = ledger.get(call_id)
        if stored is not None:
            return stored.to_event()
        time.sleep(0.01)
    raise TimeoutError(f"call {call_id} was not recorded within {timeout} s")


def main() -> None:
    litellm.telemetry = False
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/costs.db")
        # A budget of 2 cents per team per day, checked before each guarded call.
        costledger.configure(
            ledger=ledger, log="off", guards=[Budget("0.02 USD", "day", per="team")]
        )
        litellm.callbacks = [CostLedgerLogger()]

        # 1. Any LiteLLM call is recorded: priced by costledger, LiteLLM's figure kept beside.
        response = litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="4",
            metadata={"team": "search", "feature": "calculator"},
        )
        event = wait_for(ledger, response._hidden_params["litellm_call_id"])
        usage = event.usage
        print(f"call     : {event.model}, {usage.input_tokens} in / {usage.output_tokens} out")
        print(f"cost     : ${event.cost.total} (LiteLLM said ${event.reported_cost})")
        print(f"team     : {event.team}, feature {event.feature}, latency {event.latency_ms} ms")
        assert event.cost.total == Decimal("0.0000135")

        # 2. A stream is recorded once, when it ends.
        stream = litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="two plus two is four",
            stream=True,
            litellm_call_id="example-stream",  # our own id, to find the record by
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        event = wait_for(ledger, "example-stream")
        print(f"stream   : {text!r}: {event.usage.output_tokens} tokens out, ${event.cost.total}")

        # 3. Guarded: the budget reserves before the call, and the logged cost settles it.
        guarded = costledger_litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="4",
            max_tokens=50,
            metadata={"team": "search"},
        )
        event = wait_for(ledger, guarded._hidden_params["litellm_call_id"])
        print(f"guarded  : ${event.cost.total} for team {event.team}")

        ledger.flush()
        total = sum(
            (row.total_cost for row in ledger.events() if row.total_cost is not None), Decimal(0)
        )
        print(f"ledger   : {len(list(ledger.events()))} calls, ${total} in all")
        ledger.close()


if __name__ == "__main__":
    main()
