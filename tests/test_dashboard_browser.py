"""The dashboard in real headless Chromium (driven over the DevTools Protocol): the page loads
with no console errors and no network, its charts and tables hold the ledger's exact
figures, and the served page redraws when new events land.

``COSTLEDGER_DASHBOARD_SCREENSHOT=/some/dir`` saves a PNG of each page for a look by eye.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger._dashboard import TOKEN_KINDS, DashboardServer, build_dashboard, write_dashboard
from costledger._guards import Budget
from costledger._ledger import Ledger
from costledger._reports import top
from costledger._reports._common import exact_text as money_text

from .test_dashboard_helpers import NOW, UTC, Browser, browser_session, history, priced

pytestmark = pytest.mark.browser

_TRACES = """
Object.fromEntries(Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => [
  g.id,
  g.data.map(t => ({name: t.name, x: t.x, y: t.y, meta: t.meta === undefined ? null : t.meta}))
]))
"""
_TABLE = """
Array.from(document.querySelectorAll('#{id} tbody tr')).map(
  r => Array.from(r.cells).map(c => c.textContent))
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from browser_session()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", sync=True) as opened:
        yield opened


def _screenshot(browser: Browser, name: str) -> None:
    where = os.environ.get("COSTLEDGER_DASHBOARD_SCREENSHOT")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        browser.screenshot(Path(where) / f"{name}.png")


def _load(browser: Browser, url: str) -> dict[str, Any]:
    browser.navigate(url)
    browser.wait_for("document.body.dataset.rendered >= '1'")
    browser.pump(0.3)  # late console messages
    return dict(browser.evaluate(_TRACES))


def _none(value: str, placeholder: str) -> str | None:
    return None if value == placeholder else value


def test_file_page_draws_the_ledgers_numbers(
    browser: Browser, ledger: Ledger, tmp_path: Path
) -> None:
    ledger.record_many(history(300))
    since = datetime(2025, 2, 20, tzinfo=UTC)
    dash = build_dashboard(ledger, since=since, now=NOW, max_models=100, max_groups=100)
    page = write_dashboard(dash, tmp_path / "dashboard.html")
    traces = _load(browser, page.as_uri())
    _screenshot(browser, "file")

    assert browser.errors() == []
    assert browser.requested() == [page.as_uri()]  # nothing else: no CDN, no fonts
    assert set(traces) >= {
        "chart-daily",
        "chart-users",
        "chart-features",
        "chart-tokens",
        "chart-burn-0",
    }

    # cost per day, stacked by model: every bar is the ledger's amount, as its exact text
    cells = {
        (r.day.isoformat(), r.model): r.cost
        for r in ledger.summary(by=["day", "model"], since=since)
        if r.currency == "USD" and r.day is not None
    }
    drawn = {}
    for t in traces["chart-daily"]:
        for day, y in zip(t["x"], t["y"], strict=True):
            drawn[(day, t["name"])] = y
    assert {k: v for k, v in drawn.items() if v != "0"} == {
        k: money_text(v) for k, v in cells.items() if v
    }
    assert all(k in drawn for k in cells)

    # cost by user and by feature
    for chart, key, placeholder in (
        ("chart-users", "user", "(no user)"),
        ("chart-features", "feature", "(no feature)"),
    ):
        (bars,) = traces[chart]
        got = {_none(name, placeholder): x for name, x in zip(bars["y"], bars["x"], strict=True)}
        assert got == {
            getattr(r, key): money_text(r.cost)
            for r in ledger.summary(by=[key], since=since)
            if r.currency == "USD"
        }

    # tokens by kind: each kind's trace, per model, partitions the ledger's tokens
    per_model: dict[Any, list[int]] = {}
    for r in ledger.summary(by=["model"], since=since):  # rows per currency: add them up
        acc = per_model.setdefault(r.model, [0] * 5)
        for i, n in enumerate(
            (
                r.input_tokens - r.cache_read_tokens - r.cache_write_tokens,
                r.cache_read_tokens,
                r.cache_write_tokens,
                r.output_tokens - r.reasoning_tokens,
                r.reasoning_tokens,
            )
        ):
            acc[i] += n
    kinds = {t["meta"]: dict(zip(t["x"], t["y"], strict=True)) for t in traces["chart-tokens"]}
    assert list(kinds) == list(TOKEN_KINDS)
    for model, counts in per_model.items():
        assert [kinds[kind][model] for kind in TOKEN_KINDS] == counts, model

    # this month's burn: the last point is the month's spend so far
    month = ledger.summary(since=datetime(2025, 3, 1, tzinfo=UTC), until=NOW)
    spent, forecast = traces["chart-burn-0"]
    assert spent["y"][-1] == money_text(
        sum((r.cost for r in month if r.currency == "USD"), Decimal(0))
    )
    assert forecast["x"][-1].startswith("2025-04-01")

    # tables print the exact amounts
    totals = browser.evaluate(_TABLE.replace("{id}", "totals-table"))
    assert {row[0]: row[1] for row in totals} == {
        r.currency: money_text(r.cost) for r in ledger.summary(since=since)
    }
    calls = browser.evaluate(_TABLE.replace("{id}", "top-table"))
    # the table holds the charts' currency only: amounts in two currencies are never ranked together
    expected = [e for e in top(ledger, 20, since=since) if e.currency == "USD"]
    assert [row[-1] for row in calls] == [e.id for e in expected]
    assert [row[-2] for row in calls] == [
        f"{money_text(e.total_cost)} {e.currency}" for e in expected if e.total_cost is not None
    ]

    # the unpriced calls are announced, visibly
    unpriced = sum(r.unpriced for r in ledger.summary(since=since))
    assert unpriced > 0
    warning = browser.evaluate(
        "(() => { const w = document.getElementById('unpriced-warning');"
        " return w && w.offsetHeight > 0 ? w.textContent : null; })()"
    )
    assert warning is not None
    assert f"{unpriced} calls without a price" in warning
    assert browser.evaluate("document.getElementById('kpi-unpriced').textContent") == str(unpriced)


def test_budget_burn_down_in_the_page(browser: Browser, ledger: Ledger, tmp_path: Path) -> None:
    now = datetime(2025, 3, 11, tzinfo=UTC)
    ledger.record_many(
        [
            priced("4", at=datetime(2025, 3, 2, 9, tzinfo=UTC)),
            priced("7", at=datetime(2025, 3, 6, 9, tzinfo=UTC), user="bob"),
        ]
    )
    budget = Budget("20 USD", "month", name="monthly")
    page = write_dashboard(
        build_dashboard(ledger, budgets=[budget], now=now), tmp_path / "budgets.html"
    )
    traces = _load(browser, page.as_uri())
    _screenshot(browser, "budgets")
    assert browser.errors() == []
    remaining, forecast = traces["chart-burn-0"]
    assert remaining["y"] == ["20", "20", "16", "16", "9", "9"]
    assert forecast["y"] == ["9", "-14.1"]  # 11 spent in 10 days -> 34.1 by April 1st
    rows = browser.evaluate(_TABLE.replace("{id}", "budgets-table"))
    assert [row[:7] for row in rows] == [["monthly", "(all)", "2025-03", "20 USD", "11", "0", "9"]]
    assert browser.evaluate("document.getElementById('budgets-card').hidden") is False


def test_served_page_redraws_as_events_land(browser: Browser, ledger: Ledger) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    ledger.record(priced("0.1", at=start, model="gpt-4o"))

    def compute() -> Any:
        return build_dashboard(ledger)

    with DashboardServer(compute, port=0, refresh_seconds=0.5, min_interval=0) as server:
        traces = _load(browser, server.url)
        assert browser.errors() == []
        assert [(t["name"], t["y"]) for t in traces["chart-daily"]] == [("gpt-4o", ["0.1"])]

        ledger.record(priced("0.2", at=start + timedelta(seconds=1), model="gpt-4o"))
        ledger.record(priced("0.000000000000000001", at=start, model="o3", user="carol"))
        browser.wait_for(
            "window.costledger.data.totals[0].cost === '0.300000000000000001'", timeout=30
        )
        browser.wait_for("document.getElementById('chart-daily').data.length === 2", timeout=30)
        traces = dict(browser.evaluate(_TRACES))
        assert [(t["name"], t["y"]) for t in traces["chart-daily"]] == [
            ("gpt-4o", ["0.3"]),
            ("o3", ["0.000000000000000001"]),
        ]
        (users,) = traces["chart-users"]
        assert dict(zip(users["y"], users["x"], strict=True)) == {
            "alice": "0.3",
            "carol": "0.000000000000000001",
        }
        assert browser.evaluate("document.getElementById('kpi-cost-USD').textContent") == (
            "0.300000000000000001 USD"
        )
        _screenshot(browser, "served")
        assert browser.errors() == []
        origin = server.url.rstrip("/")
        assert all(u.startswith(origin) for u in browser.requested())
