"""Shared pieces of the report and CLI tests: backends, random histories, a direct recomputation.

(No tests here; the name keeps it with the files it serves.)
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import Context, Decimal, localcontext
from typing import Any

from costledger import Cost, Usage, UsageEvent
from costledger._events import CallStatus

UTC = timezone.utc

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-pro", "my-finetune")
STATUSES: tuple[CallStatus, ...] = ("ok", "ok", "ok", "ok", "error", "cancelled")
AMOUNTS = ("0.1", "0.2", "0.0000000375", "12345678.000000000000000001", "0.000000000000000001")


def history(n: int, seed: int = 11, *, start: datetime | None = None) -> list[UsageEvent]:
    """Random events over 40 days from a Monday: every status, currency, pricing status,
    tag set, and amounts that float addition gets wrong (tenths, 1e-18, huge ones)."""
    rng = random.Random(seed)
    start = start or datetime(2025, 1, 27, tzinfo=UTC)
    events = []
    for i in range(n):
        ts = start + timedelta(seconds=rng.randrange(0, 86400 * 40), microseconds=i)
        status = rng.choice(STATUSES)
        inp = rng.randrange(0, 5000)
        cache_read = rng.randrange(0, inp + 1)
        cache_write = rng.randrange(0, inp - cache_read + 1)
        out = rng.randrange(0, 2000)
        usage = Usage(
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            reasoning_tokens=rng.randrange(0, out + 1),
        )
        roll = rng.random()
        model = rng.choice(MODELS)
        if roll < 0.8:
            total = Decimal(rng.randrange(0, 10**9)) * Decimal("1E-17") + Decimal(
                rng.choice(AMOUNTS)
            )
            cost = Cost(
                status="priced",
                total=total,
                input=total,
                currency=rng.choice(["USD"] * 9 + ["EUR"]),
                source="test",
            )
        elif roll < 0.93:
            cost = Cost.unknown(model)
        else:
            cost = Cost(status="not_priced")
        events.append(
            UsageEvent(
                model=model,
                response_model=rng.choice([None, model + "-2025"]),
                usage=usage,
                cost=cost,
                timestamp=ts,
                status=status,
                provider=rng.choice(["openai", "anthropic", None]),
                source=rng.choice(["langchain", "litellm", "api"]),
                user=rng.choice(["u1", "u2", "u3", None]),
                team=rng.choice(["search", "chat", None]),
                project=rng.choice(["p1", "p2"]),
                feature=rng.choice(["f1", "f2", None]),
                tags=tuple(rng.sample(["a", "b", "c", "d"], rng.randrange(0, 3))),
            )
        )
    return events


def _key(event: UsageEvent, name: str) -> list[Any]:
    ts = event.timestamp
    if name == "day":
        return [ts.date()]
    if name == "week":
        return [ts.date() - timedelta(days=ts.weekday())]
    if name == "month":
        return [date(ts.year, ts.month, 1)]
    if name == "model":
        return [event.response_model or event.model]
    if name == "tag":
        return list(dict.fromkeys(event.tags)) or [None]
    return [getattr(event, name)]


def expected_summary(
    events: Iterable[UsageEvent], by: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per group and currency, computed in Python from the events themselves."""

    def fresh() -> dict[str, Any]:
        acc: dict[str, Any] = defaultdict(int)
        acc["cost"] = Decimal(0)
        return acc

    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(fresh)
    with localcontext(Context(prec=100)):  # the default 28 digits would round the sums
        _accumulate(out, events, by)
    return {k: dict(v) for k, v in out.items()}


def _accumulate(
    out: dict[tuple[Any, ...], dict[str, Any]], events: Iterable[UsageEvent], by: tuple[str, ...]
) -> None:
    for e in events:
        keys: list[tuple[Any, ...]] = [()]
        for name in by:
            keys = [(*k, v) for k in keys for v in _key(e, name)]
        for k in keys:
            group = (*k, e.cost.currency)
            acc = out[group]
            acc["requests"] += 1
            acc["errors"] += e.status == "error"
            acc["cancelled"] += e.status == "cancelled"
            acc["unpriced"] += e.cost.total is None and e.cost.status != "not_priced"
            # ran (or was cancelled) and reported no usage: nothing to price, cost unknown
            acc["no_usage"] += e.cost.status == "not_priced" and e.status != "error"
            for f in (
                "input_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "output_tokens",
                "reasoning_tokens",
            ):
                acc[f] += getattr(e.usage, f)
            if e.cost.total is not None:
                acc["cost"] += e.cost.total


def summary_dict(rows: Iterable[Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {
        (*r.key, r.currency): {
            "requests": r.requests,
            "errors": r.errors,
            "cancelled": r.cancelled,
            "unpriced": r.unpriced,
            "no_usage": r.no_usage,
            "input_tokens": r.input_tokens,
            "cache_read_tokens": r.cache_read_tokens,
            "cache_write_tokens": r.cache_write_tokens,
            "output_tokens": r.output_tokens,
            "reasoning_tokens": r.reasoning_tokens,
            "cost": r.cost,
        }
        for r in rows
    }


def in_range(
    events: Iterable[UsageEvent], since: datetime | None, until: datetime | None
) -> list[UsageEvent]:
    return [
        e
        for e in events
        if (since is None or e.timestamp >= since) and (until is None or e.timestamp < until)
    ]
