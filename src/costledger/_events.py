"""``UsageEvent``: the unit the ledger stores, the log line carries and ingestion reads back."""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal
from uuid import UUID

from ._cost import Cost
from ._errors import short_repr
from ._usage import Usage

__all__ = [
    "EVENT_SOURCES",
    "NO_PRICE_CONTEXT",
    "CallStatus",
    "EventSource",
    "UsageEvent",
    "event_text",
    "new_event_id",
    "short_repr",
    "text_pairs",
]

CallStatus = Literal["ok", "error", "cancelled"]
EventSource = Literal["langchain", "litellm", "decorator", "http", "ingest", "api"]
EVENT_SOURCES: tuple[str, ...] = ("langchain", "litellm", "decorator", "http", "ingest", "api")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
NO_PRICE_CONTEXT: Mapping[str, str] = _EMPTY
"""The default ``UsageEvent.price_context`` (an event made with it skips the check)."""


def text_pairs(value: Any) -> dict[str, str]:
    """The text entries of a price context, when it may hold something else (a failed
    call's context, a row changed by hand): what is not text is left out."""
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def event_text(name: str, value: Any) -> str | None:
    """The text a text field of an event (``model``, ``request_id``, ``status``...) holds for
    ``value``: ``None``, a ``str`` (a ``str`` subclass, a ``StrEnum`` member: its plain
    text), or a value whose text is obvious: an ``int`` or a finite ``float`` (its decimal
    text), a ``UUID``, an ``Enum`` member (its value, by the same rule), ``bytes`` (decoded
    as UTF-8, an invalid sequence as U+FFFD). ``TypeError`` naming ``name`` and the value
    for anything else (a list, a dict, a bool, a datetime...)."""
    if value is None or value.__class__ is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Enum):
        try:
            return event_text(name, value.value)
        except TypeError:
            pass  # the message names the member, not its value
    elif isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)
    elif isinstance(value, float) and math.isfinite(value):
        return float.__repr__(value)
    elif isinstance(value, UUID):
        return str(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"{name} must be text or None, got {type(value).__name__} {short_repr(value)}")


_id_lock = threading.Lock()
_last_ms = 0
_seq = 0
# Ids need uniqueness, not secrecy: a PRNG seeded from the OS is ten times cheaper than a
# urandom call per id. Reseeded in a forked child so parent and child never share a stream.
_random = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_event_id(ms: int | None = None) -> str:
    """A UUIDv7 string: unique, and sorting by it sorts by creation time.

    Monotonic within a process (a 12-bit counter breaks ties in one
    millisecond), random across processes. ``ms`` (Unix milliseconds) dates it
    at an earlier moment than now, such as the start of the call it names; an id
    never sorts before one this process already made. Written here rather than
    taken from the ``uuid6`` package because it is ten lines and on the hot path
    of every call.
    """
    global _last_ms, _seq
    if ms is None:
        ms = time.time_ns() // 1_000_000
    with _id_lock:
        if ms <= _last_ms:
            _seq += 1
            if _seq > 0xFFF:  # counter spent: borrow the next millisecond
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _seq = 0
        seq = _seq
    rand = _random.getrandbits(62)
    # 48-bit ms | version 7 + 12-bit counter | variant 0b10 + 62 random bits
    return "%08x-%04x-%04x-%04x-%012x" % (  # noqa: UP031 - the fastest formatting here
        (ms >> 16) & 0xFFFF_FFFF,
        ms & 0xFFFF,
        0x7000 | seq,
        0x8000 | (rand >> 48),
        rand & 0xFFFF_FFFF_FFFF,
    )


def _event_tags(tags: Any) -> tuple[str, ...]:
    """``UsageEvent.tags`` as text: each tag as ``event_text`` reads a text field (an
    ``int`` tag ``5`` is ``"5"``, so a report never sees two kinds of one tag), a ``None``
    or empty tag left out (no tag); ``TypeError`` naming ``tags`` for a tag without a
    text (a bool, a list) or tags that are not an iterable of them (a bare string would be
    its letters)."""
    if isinstance(tags, (str, bytes, bytearray, memoryview)) or not hasattr(tags, "__iter__"):
        raise TypeError(
            f"UsageEvent tags must be a tuple of text, got {type(tags).__name__} {short_repr(tags)}"
        )
    out: list[str] = []
    for tag in tags:
        text = event_text("UsageEvent tags", tag)
        if text:
            out.append(text)
    return tuple(out)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One model (or tool) call: who, what, how many tokens, how much money.

    ``id`` is the idempotency key: recording the same id twice stores one row.
    Prompts and completions are never part of an event.
    """

    model: str | None
    usage: Usage
    cost: Cost
    id: str = field(default_factory=new_event_id)
    timestamp: datetime = field(default_factory=_utcnow)
    source: str = "api"
    provider: str | None = None
    response_model: str | None = None
    status: CallStatus = "ok"
    error_type: str | None = None
    latency_ms: float | None = None
    request_id: str | None = None
    trace_id: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    feature: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    streamed: bool = False
    cache_hit: bool = False
    reported_cost: Decimal | None = None
    # What the framework said the call cost (LiteLLM's response_cost), kept for comparison.
    price_context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    # How the call was served where that changes its price ({"service_tier": "flex"}):
    # kept so that re-pricing picks the same price variant.

    def __post_init__(self) -> None:
        # Every check starts with an identity test: the Tracker already hands over UTC
        # timestamps, tuples and read-only mappings, and this runs on every call.
        ts = self.timestamp
        if ts.tzinfo is not timezone.utc:
            if ts.tzinfo is None:
                object.__setattr__(self, "timestamp", ts.replace(tzinfo=timezone.utc))
            else:
                object.__setattr__(self, "timestamp", ts.astimezone(timezone.utc))
        tags = self.tags
        if type(tags) is not tuple:
            tags = _event_tags(tags)
            object.__setattr__(self, "tags", tags)
        else:
            for tag in tags:
                if tag.__class__ is not str or not tag:
                    object.__setattr__(self, "tags", _event_tags(tags))
                    break
        # An empty name is no name, as an empty tag is no tag: "" and None would be two
        # groups of a report that print alike and that no filter tells apart.
        if self.user == "":
            object.__setattr__(self, "user", None)
        if self.team == "":
            object.__setattr__(self, "team", None)
        if self.project == "":
            object.__setattr__(self, "project", None)
        if self.feature == "":
            object.__setattr__(self, "feature", None)
        if type(self.metadata) is not MappingProxyType:
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if self.price_context is not _EMPTY:
            context = self.price_context
            if type(context) is not MappingProxyType:
                context = MappingProxyType(dict(context))
                object.__setattr__(self, "price_context", context)
            for key, value in context.items():
                if type(key) is not str or type(value) is not str:
                    raise TypeError(
                        f"UsageEvent price_context must map text to text, got {key!r}: {value!r}"
                    )
        latency = self.latency_ms
        # inf - inf and nan - nan are nan, which differs from 0.0: no latency was measured.
        if isinstance(latency, float) and latency - latency != 0.0:
            object.__setattr__(self, "latency_ms", None)

    def __hash__(self) -> int:
        # By the idempotency key: equal events share it, and the mappings among the
        # fields (metadata, price_context) cannot be hashed.
        return hash(self.id)

    @property
    def total_cost(self) -> Decimal | None:
        return self.cost.total

    def with_cost(self, cost: Cost) -> UsageEvent:
        """The same event re-priced (``reprice``, what-if)."""
        return replace(self, cost=cost)
