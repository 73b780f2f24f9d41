"""``costledger_langchain.tracking()``: every run inside the block is tracked, with live totals."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers import context as lc_context
from langchain_fakes import SNAPSHOT, UsageChatModel, expected_cost

from costledger import Tracker
from costledger.testing import CapturedCosts, InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler, CostTotals, tracking

ONE_CALL = expected_cost(1000, 200)


def test_tracking_covers_every_run_with_exact_totals(costs: CapturedCosts) -> None:
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | UsageChatModel()
    with tracking() as totals:
        chain.invoke({"q": "one"})
        UsageChatModel(cached_tokens=400).invoke("two")
        list(UsageChatModel().stream("three"))
        UsageChatModel(input_tokens=10, output_tokens=5).batch(["a", "b"])
    assert totals.requests == 5
    assert totals.total_cost == Decimal("0.00027") + Decimal("0.00024") + Decimal("0.00027") + 2 * (
        expected_cost(10, 5)
    )
    assert totals.total_cost == Decimal("0.000789")
    assert totals.input_tokens == 3020
    assert totals.output_tokens == 610
    assert totals.cache_read_tokens == 400
    assert totals.total_tokens == 3630
    assert len(totals.events) == 5
    assert totals.by_model() == {SNAPSHOT: Decimal("0.000789")}
    assert len(costs.events) == 5
    assert repr(totals).startswith("CostTotals(total_cost=0.000789")


def test_outside_the_block_nothing_is_tracked(costs: CapturedCosts) -> None:
    with tracking() as totals:
        UsageChatModel().invoke("inside")
    UsageChatModel().invoke("outside")
    assert totals.requests == 1
    assert len(costs.events) == 1


def test_totals_are_live(costs: CapturedCosts) -> None:
    with tracking() as totals:
        UsageChatModel().invoke("a")
        assert totals.total_cost == ONE_CALL
        UsageChatModel().invoke("b")
        assert totals.total_cost == 2 * ONE_CALL


def test_nested_blocks_feed_the_outer_total(costs: CapturedCosts) -> None:
    with tracking() as outer:
        UsageChatModel().invoke("a")
        with tracking() as inner:
            UsageChatModel().invoke("b")
            UsageChatModel().invoke("c")
        UsageChatModel().invoke("d")
    assert inner.requests == 2
    assert inner.total_cost == 2 * ONE_CALL
    assert outer.requests == 4
    assert outer.total_cost == 4 * ONE_CALL
    assert len(costs.events) == 4  # one event per call, not per scope


def test_tracking_plus_an_explicit_handler_counts_once(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    with tracking() as totals:
        UsageChatModel().invoke("a", config={"callbacks": [handler]})
        UsageChatModel(callbacks=[handler]).invoke("b")
    assert len(costs.events) == 2
    assert totals.requests == handler.totals.requests == 2
    assert totals.total_cost == handler.totals.total_cost == 2 * ONE_CALL


async def test_tracking_in_asyncio_tasks(costs: CapturedCosts) -> None:
    model = UsageChatModel()
    with tracking() as totals:
        await asyncio.gather(*(model.ainvoke(f"q{i}") for i in range(5)))
        async for _ in model.astream("streamed"):
            pass
    assert totals.requests == 6
    assert totals.total_cost == 6 * ONE_CALL


def test_tracking_with_attribution_and_tracker() -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, log="off")
    with tracking(tracker, user="u-3", feature="summary", tags=["t"]) as totals:
        (
            ChatPromptTemplate.from_messages([("human", "{q}")])
            | UsageChatModel()
            | StrOutputParser()
        ).invoke({"q": "x"})
        with tracking() as inner:  # inherits the outer block's tracker
            UsageChatModel().invoke("y")
    rows = list(ledger.events())
    assert len(rows) == 2
    assert {(r.user, r.feature) for r in rows} == {("u-3", "summary")}
    assert all(r.tags == ["t"] for r in rows)
    assert totals.total_cost == 2 * ONE_CALL
    assert inner.total_cost == ONE_CALL


def test_tracking_registers_one_configure_hook_for_the_process(costs: CapturedCosts) -> None:
    before = len(lc_context._configure_hooks)
    for _ in range(50):
        with tracking():
            UsageChatModel().invoke("a")
    assert len(lc_context._configure_hooks) == before
    assert len(costs.events) == 50


def test_tracking_resets_after_an_exception(costs: CapturedCosts) -> None:
    def fails() -> None:
        with tracking() as inner:
            totals.append(inner)
            UsageChatModel().invoke("a")
            raise RuntimeError("app failure")

    totals: list[CostTotals] = []
    with pytest.raises(RuntimeError, match="app failure"):
        fails()
    UsageChatModel().invoke("b")
    assert totals[0].requests == 1
    assert len(costs.events) == 1
