"""A guard of the host's own may be unhashable (a plain ``@dataclass``: ``eq`` without
``frozen`` sets ``__hash__`` to ``None``). The tracker keeps a second asking's admissions
by the guard's identity, so such a guard is asked as any other; it raised ``TypeError``
into the host on every guarded call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from costledger import Tracker, Usage
from costledger.testing import InMemoryLedger


@dataclass
class CountingGuard:
    reserved: list[str] = field(default_factory=list)
    settled: list[Any] = field(default_factory=list)

    def reserve(self, call: Any, tracker: Any) -> str:
        self.reserved.append(call.id)
        return call.id

    def settle(self, token: str, event: Any) -> None:
        self.settled.append(token)

    def release(self, token: str) -> None:
        pass


def test_an_unhashable_guard_is_asked_and_settled() -> None:
    guard = CountingGuard()
    tracker = Tracker(InMemoryLedger(), guards=[guard], log="off")
    call = tracker.start(source="test", model="gpt-4o-mini")
    tracker.finish(call, usage=Usage(input_tokens=10, output_tokens=5))
    assert guard.reserved == guard.settled == [call.id]
