"""A request id holding a secret (a gateway's id built from the request, an echoed key) is
stored scrubbed, as attribution is, by every entry point: the Tracker scrubs it when it
builds the event, as `costledger ingest` does when it reads one from a log."""

from __future__ import annotations

from costledger import Tracker, Usage, drain_deferred
from costledger.testing import InMemoryLedger

KEY = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXyz0123456789abcd"


def test_a_request_id_holding_a_key_is_stored_scrubbed() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    tracker.record(
        "gpt-4o-mini", Usage(input_tokens=10, output_tokens=5), request_id=f"req?api_key={KEY}"
    )
    call = tracker.start(source="test", model="gpt-4o-mini")
    tracker.finish(call, usage=Usage(input_tokens=10, output_tokens=5), request_id=f"Bearer {KEY}")
    drain_deferred()
    events = list(tracker.ledger.events())  # type: ignore[attr-defined]
    assert [e.request_id for e in events] == ["req?api_key=[REDACTED]", "Bearer [REDACTED]"]


def test_a_plain_request_id_is_kept_as_given() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    tracker.record(
        "gpt-4o-mini", Usage(input_tokens=10, output_tokens=5), request_id="chatcmpl-abc123"
    )
    [event] = tracker.ledger.events()  # type: ignore[attr-defined]
    assert event.request_id == "chatcmpl-abc123"
