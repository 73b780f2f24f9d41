"""Async LiteLLM calls made under ``asyncio.run(...)`` are recorded, exactly once.

LiteLLM 1.110 does not queue an ``acompletion``'s success callbacks when the call returns:
it starts a task that queues them later, and ``asyncio.run`` cancels that task when the
coroutine it was given returns. Two shapes of program lose every such call:

* A: a sync app (a Flask view, a CLI command) running one ``asyncio.run`` per request;
* B: a script, ``asyncio.run(main())`` with a few calls, then exit.

The ``costledger_litellm.acompletion`` wrapper records the call from the answer LiteLLM
returned to it (LiteLLM's own success event for the id, if it ever comes, adds nothing);
with the plain logger, ``await costledger_litellm.flush_callbacks()`` at the end of the
coroutine delivers the callbacks first. Real ``litellm.acompletion(mock_response=...)``
in a child process, rows read from the SQLite ledger while it runs and after it exits.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import litellm
import pytest
from litellm_support import (
    GPT_4O_MINI_10_IN_20_OUT,
    MESSAGES,
    RecordingGuard,
    Sentinel,
    litellm_isolated,
    offline,
    utc,
)

import costledger_litellm
from costledger import Tracker
from costledger.testing import CapturedCosts, InMemoryLedger, capture_costs
from costledger_litellm import CostLedgerLogger
from costledger_litellm._logger import _registry

__all__ = ["litellm_isolated", "offline"]

CHILD = textwrap.dedent(
    """
    import asyncio, os, sqlite3, sys
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm
    import costledger, costledger_litellm
    from costledger import Budget, Ledger
    from costledger_litellm import CostLedgerLogger

    path, shape, entry = sys.argv[1], sys.argv[2], sys.argv[3]
    litellm.telemetry = False
    budget = Budget("1 USD", "day", name="app")
    ledger = Ledger("sqlite:///" + path)
    tracker = costledger.configure(
        ledger=ledger, log="off", guards=[budget] if entry == "wrapper" else []
    )
    litellm.callbacks = [CostLedgerLogger()]
    call = costledger_litellm.acompletion if entry == "wrapper" else litellm.acompletion
    messages = [{"role": "user", "content": "What is 2 + 2?"}]

    async def main(n):
        await asyncio.gather(*(
            call(model="gpt-4o-mini", messages=messages, mock_response="4") for _ in range(n)
        ))
        if entry == "flush":  # no time limit: no task of asyncio.wait_for's to yield to
            assert await costledger_litellm.flush_callbacks(None) is True

    def ledger_now():
        costledger.drain_deferred()
        ledger.flush()
        con = sqlite3.connect(path)
        try:
            rows = con.execute("select total_cost from costledger_events").fetchall()
        except sqlite3.OperationalError:
            rows = []
        con.close()
        return ",".join(r[0] for r in rows)

    if shape == "A":  # one asyncio.run per request, the app keeps running
        for _ in range(5):
            asyncio.run(main(1))
            line = ledger_now()
            if entry == "wrapper":
                [status] = budget.status(tracker)
                line += f" {status.spent} {status.reserved}"
            print(line, flush=True)
    else:  # a script: one asyncio.run, then exit
        asyncio.run(main(3))
    """
)

CALLS = {"A": 5, "B": 3}


def _spooled(path: Path) -> int:
    spool = Path(str(path) + ".spool")
    if not spool.is_dir():
        return 0
    return sum(len(f.read_text().splitlines()) for f in spool.iterdir() if f.is_file())


def _run(tmp_path: Path, shape: str, entry: str) -> tuple[list[str], list[Decimal]]:
    path = tmp_path / "app.db"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), shape, entry],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert done.returncode == 0, done.stderr
    con = sqlite3.connect(path)
    rows = [Decimal(r[0]) for r in con.execute("select total_cost from costledger_events")]
    con.close()
    assert _spooled(path) == 0
    return done.stdout.splitlines(), rows


def _money(text: str) -> list[Decimal]:
    return [Decimal(part) for part in text.replace(" ", ",").split(",") if part]


@pytest.mark.parametrize("entry", ["wrapper", "flush"])
def test_one_asyncio_run_per_request_records_each_while_the_app_runs(
    tmp_path: Path, entry: str
) -> None:
    lines, rows = _run(tmp_path, "A", entry)

    # after request n: n rows of the exact cost (and, with the wrapper's budget, each
    # reservation settled once: n calls spent, nothing left reserved)
    seen = [_money(line) for line in lines]
    expected = []
    for n in range(1, CALLS["A"] + 1):
        costs = [GPT_4O_MINI_10_IN_20_OUT] * n
        if entry == "wrapper":
            costs += [n * GPT_4O_MINI_10_IN_20_OUT, Decimal(0)]
        expected.append(costs)
    assert seen == expected
    assert rows == [GPT_4O_MINI_10_IN_20_OUT] * CALLS["A"]  # after exit: nothing more


@pytest.mark.parametrize("entry", ["wrapper", "flush"])
def test_a_script_s_asyncio_run_records_every_call_before_exit(tmp_path: Path, entry: str) -> None:
    lines, rows = _run(tmp_path, "B", entry)

    assert lines == []
    assert rows == [GPT_4O_MINI_10_IN_20_OUT] * CALLS["B"]
    assert sum(rows) == Decimal("0.0000405")


# --- in process: the wrapper's record and LiteLLM's later event ---------------------------------


@pytest.fixture
def guard() -> RecordingGuard:
    return RecordingGuard()


@pytest.fixture
def guarded_costs(guard: RecordingGuard) -> Iterator[CapturedCosts]:
    with capture_costs(guards=[guard]) as captured:
        yield captured


@pytest.mark.usefixtures("litellm_isolated", "offline")
async def test_the_async_wrapper_records_on_return_and_litellm_s_event_adds_nothing(
    guarded_costs: CapturedCosts, guard: RecordingGuard
) -> None:
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    before = datetime.now(timezone.utc)

    response = await costledger_litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="4", metadata={"team": "search"}
    )

    # recorded and settled before acompletion returned, LiteLLM's event not yet delivered
    call_id = response._hidden_params["litellm_call_id"]
    assert sentinel.seen == []
    [event] = guarded_costs.events
    assert event.id == call_id
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert event.reported_cost == GPT_4O_MINI_10_IN_20_OUT
    assert (event.provider, event.response_model, event.team) == ("openai", "gpt-4o-mini", "search")
    assert event.request_id == response.id
    assert (event.streamed, event.cache_hit, event.status) == (False, False, "ok")
    assert before <= event.timestamp <= datetime.now(timezone.utc)
    assert guard.settled == [event]
    assert not _registry.in_flight(call_id)

    # LiteLLM's own success event for the same id arrives: nothing more
    assert await costledger_litellm.flush_callbacks(30) is True
    await sentinel.await_()
    assert [kind for kind, *_ in sentinel.seen] == ["success"]
    assert guarded_costs.events == [event]
    assert guard.settled == [event]
    assert guard.released == []


@pytest.mark.usefixtures("litellm_isolated", "offline")
def test_the_sync_wrapper_records_once_whichever_comes_first(
    guarded_costs: CapturedCosts, guard: RecordingGuard
) -> None:
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    response = costledger_litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="4"
    )
    sentinel.wait()

    [event] = guarded_costs.events
    assert event.id == response._hidden_params["litellm_call_id"]
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert guard.settled == [event]
    _, _, _, start, _ = sentinel.last
    assert event.timestamp <= utc(start)  # the wrapper's start, or LiteLLM's


@pytest.mark.usefixtures("litellm_isolated", "offline")
async def test_a_fallback_that_answered_is_recorded_as_the_model_that_answered(
    guarded_costs: CapturedCosts, guard: RecordingGuard
) -> None:
    litellm.callbacks = [CostLedgerLogger()]

    response = await costledger_litellm.acompletion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response=Exception("the first model is down"),
        fallbacks=[
            {
                "model": "anthropic/claude-3-haiku-20240307",
                "mock_response": "4",
                "api_key": "sk-test-not-a-key",
            }
        ],
        num_retries=0,
    )
    call_id = response._hidden_params["litellm_call_id"]
    [success] = [e for e in guarded_costs.events if e.id == call_id]
    assert (success.model, success.provider) == ("claude-3-haiku-20240307", "anthropic")
    # Claude 3 Haiku: $0.25 in, $1.25 out per million; 10 in, 20 out
    assert success.cost.total == Decimal("0.0000275")
    assert guard.settled == [success]

    assert await costledger_litellm.flush_callbacks(30) is True
    # the failed attempt: its own row, from LiteLLM's failure event
    [failed] = [e for e in guarded_costs.events if e.id != call_id]
    assert failed.id.startswith(call_id + ":failed:")
    assert failed.status == "error"
    assert len(guarded_costs.events) == 2
    assert guard.settled == [success]


@pytest.mark.usefixtures("litellm_isolated", "offline")
async def test_flush_callbacks_waits_for_callbacks_litellm_has_not_queued_yet() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    sentinel = Sentinel()
    seen = sentinel.seen
    litellm.callbacks = [CostLedgerLogger(tracker), sentinel]
    with capture_costs(isolate=False) as costs:
        await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
        # LiteLLM has only started the task that will queue the success callbacks: with
        # nothing queued yet, waiting for LiteLLM's worker alone returns at once
        assert await costledger_litellm.flush_callbacks(timeout=None) is True
        delivered = len(seen)
    assert delivered == 1
    assert [e.cost.total for e in costs.events] == [GPT_4O_MINI_10_IN_20_OUT]


@pytest.mark.usefixtures("litellm_isolated", "offline")
def test_a_cache_hit_through_the_wrapper_costs_nothing(
    guarded_costs: CapturedCosts, guard: RecordingGuard
) -> None:
    from litellm.caching.caching import Cache

    litellm.cache = Cache(type="local")
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    question = [{"role": "user", "content": "a question the wrapper asks twice"}]

    first = costledger_litellm.completion(
        model="gpt-4o-mini", messages=question, mock_response="4", caching=True
    )
    sentinel.wait(1)
    second = costledger_litellm.completion(
        model="gpt-4o-mini", messages=question, mock_response="4", caching=True
    )
    sentinel.wait(2)

    hit = second._hidden_params["litellm_call_id"]
    assert [e.id for e in guarded_costs.events] == [first._hidden_params["litellm_call_id"], hit]
    missed, cached = guarded_costs.events
    assert (missed.cache_hit, missed.cost.total) == (False, GPT_4O_MINI_10_IN_20_OUT)
    assert (cached.cache_hit, cached.cost.total, cached.reported_cost) == (True, 0, 0)
    assert cached.provider == "openai"
    assert guard.settled == [missed, cached]
