"""The dashboard without a browser: its data model checked against the ledger to the last
decimal (SQLite and PostgreSQL), hand-checked figures and forecasts, budgets, the page's
HTML, the live server over real HTTP, and the two CLI commands."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costledger._dashboard import (
    TOKEN_KINDS,
    DashboardServer,
    build_dashboard,
    render_dashboard,
    serve_dashboard,
    write_dashboard,
)
from costledger._guards import Budget, budget_status
from costledger._ledger import Ledger
from costledger._reports import top
from costledger._reports._common import exact_text as money_text
from costledger._tracker import Tracker
from costledger.cli import app

from .test_dashboard_helpers import NOW, UTC, history, priced

# -- backends ---------------------------------------------------------------------------------


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    with Ledger(url, sync=True) as opened:
        yield opened


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", sync=True) as opened:
        yield opened


def _cost_cells(rows: Any, currency: str) -> dict[tuple[str, Any], Decimal]:
    return {
        (r.day.isoformat(), r.model): r.cost
        for r in rows
        if r.currency == currency and r.day is not None
    }


# -- the data model against the ledger ---------------------------------------------------------


def test_payload_holds_the_ledgers_figures(ledger: Ledger) -> None:
    events = history(300)
    ledger.record_many(events)
    since = datetime(2025, 2, 20, tzinfo=UTC)
    dash = build_dashboard(ledger, since=since, now=NOW, max_models=100, max_groups=100)
    payload = json.loads(json.dumps(dash.payload()))  # exactly what the page receives

    totals = ledger.summary(since=since)
    # model rows and totals are folded from the day-and-model rows: the ledger's own answer
    assert dash.totals == tuple(totals)
    assert dash.by_model == tuple(ledger.summary(by=["model"], since=since))
    assert {t["currency"]: t["cost"] for t in payload["totals"]} == {
        r.currency: money_text(r.cost) for r in totals
    }
    assert sum(t["requests"] for t in payload["totals"]) == sum(
        1 for e in events if e.timestamp >= since
    )
    currency = payload["currency"]
    assert currency == "USD"

    # cost per day by model: every cell, and only cells the ledger has (or "0")
    cells = _cost_cells(ledger.summary(by=["day", "model"], since=since), currency)
    daily = payload["cost_by_day"]
    assert daily["other"] is None
    seen = {}
    for series in daily["series"]:
        for day, cost in zip(daily["days"], series["cost"], strict=True):
            seen[(day, series["model"])] = Decimal(cost)
            assert cost == money_text(Decimal(cost))  # plain text, no exponent, no float
    for key, cost in seen.items():
        assert cost == cells.get(key, Decimal(0)), key
    assert set(cells) <= set(seen)
    for i, day in enumerate(daily["days"]):
        assert Decimal(daily["total"][i]) == sum(
            (v for (d, _), v in cells.items() if d == day), Decimal(0)
        )

    # by user, by feature
    for name, key in (("cost_by_user", "user"), ("cost_by_feature", "feature")):
        rows = {getattr(r, key): r for r in ledger.summary(by=[key], since=since)}
        groups = payload[name]["groups"]
        assert {g[key]: g["cost"] for g in groups} == {
            k: money_text(r.cost) for k, r in rows.items() if r.currency == currency
        }
        costs = [Decimal(g["cost"]) for g in groups]
        assert costs == sorted(costs, reverse=True)

    # tokens by kind per model: every currency (tokens are not money)
    tokens = payload["tokens"]
    by_model: dict[Any, dict[str, int]] = {}
    for r in ledger.summary(by=["model"], since=since):
        acc = by_model.setdefault(r.model, dict.fromkeys(TOKEN_KINDS, 0))
        acc["input_uncached"] += r.input_tokens - r.cache_read_tokens - r.cache_write_tokens
        acc["cache_read"] += r.cache_read_tokens
        acc["cache_write"] += r.cache_write_tokens
        acc["output_excl_reasoning"] += r.output_tokens - r.reasoning_tokens
        acc["reasoning"] += r.reasoning_tokens
    for i, model in enumerate(tokens["models"]):
        assert {k: tokens["by_kind"][k][i] for k in TOKEN_KINDS} == by_model[model]
    assert set(tokens["models"]) == set(by_model)
    input_total = sum(r.input_tokens for r in totals)
    assert tokens["input_tokens"] == input_total
    assert tokens["output_tokens"] == sum(r.output_tokens for r in totals)
    cached = sum(r.cache_read_tokens for r in totals)
    assert Decimal(tokens["cached_share"]) == (Decimal(cached) / Decimal(input_total)).quantize(
        Decimal("0.000001")
    )

    # unpriced: count and models, as the ledger counts them
    unpriced = {
        r.model: r.unpriced for r in ledger.summary(by=["model"], since=since) if r.unpriced
    }
    assert payload["unpriced"]["calls"] == sum(unpriced.values()) > 0
    assert {m["model"]: m["calls"] for m in payload["unpriced"]["models"]} == unpriced

    # the most expensive calls: the report's order, exact amounts, in the charts' currency
    # (top ranks each currency on its own: a EUR amount is never compared with a USD one)
    expected = [e for e in top(ledger, 20, since=since) if e.currency == "USD"]
    assert len(expected) == 20
    assert [c["id"] for c in payload["top_calls"]] == [e.id for e in expected]
    assert [c["cost"] for c in payload["top_calls"]] == [
        money_text(e.total_cost) for e in expected if e.total_cost is not None
    ]

    # EUR calls are in the totals and announced, not in the USD charts
    assert "EUR" in {t["currency"] for t in payload["totals"]}
    assert any("EUR" in note for note in payload["notes"])


def test_filters_apply_to_every_figure(ledger: Ledger) -> None:
    ledger.record_many(history(200, seed=9))
    dash = build_dashboard(ledger, now=NOW, user=["alice", "bob"], feature="search")
    rows = ledger.summary(by=["user"], user=["alice", "bob"], feature="search")
    payload = dash.payload()
    assert payload["filters"] == {"user": ["alice", "bob"], "feature": ["search"]}
    assert {g["user"] for g in payload["cost_by_user"]["groups"]} == {"alice", "bob"}
    assert {g["user"]: g["cost"] for g in payload["cost_by_user"]["groups"]} == {
        r.user: money_text(r.cost) for r in rows if r.currency == "USD"
    }
    assert {g["feature"] for g in payload["cost_by_feature"]["groups"]} == {"search"}
    assert all(c["user"] in ("alice", "bob") for c in payload["top_calls"])


def test_hand_checked_figures(sqlite_ledger: Ledger) -> None:
    day1 = datetime(2025, 3, 3, 10, tzinfo=UTC)
    day2 = datetime(2025, 3, 4, 10, tzinfo=UTC)
    sqlite_ledger.record_many(
        [
            priced(
                "0.1",
                at=day1,
                input_tokens=1000,
                cache_read_tokens=600,
                cache_write_tokens=100,
                output_tokens=50,
                reasoning_tokens=20,
            ),
            priced("0.2", at=day1, model="gpt-4o-mini", user="bob", feature=None),
            priced("0.000000000000000001", at=day2, user=None),
            priced("5", at=day2, model="o3", user="carol", feature="chat"),
        ]
    )
    from costledger import Cost, Usage, UsageEvent

    sqlite_ledger.record(
        UsageEvent(
            model="my-finetune",
            usage=Usage(input_tokens=10, output_tokens=5),
            cost=Cost.unknown("my-finetune"),
            timestamp=day2,
            user="bob",
        )
    )
    dash = build_dashboard(sqlite_ledger, now=NOW, max_groups=2, max_models=2)
    p = dash.payload()
    assert p["totals"][0]["cost"] == "5.300000000000000001"  # floats would say 5.3
    assert p["totals"][0]["requests"] == 5
    assert p["totals"][0]["unpriced"] == 1
    assert p["cost_by_day"]["days"] == ["2025-03-03", "2025-03-04"]
    assert p["cost_by_day"]["series"] == [
        {"model": "o3", "cost": ["0", "5"]},
        {"model": "gpt-4o-mini", "cost": ["0.2", "0"]},
    ]
    # gpt-4o (0.1 and 1e-18) and my-finetune (unpriced: nothing) folded into "other"
    assert p["cost_by_day"]["other"] == {"models": 2, "cost": ["0.1", "0.000000000000000001"]}
    assert p["cost_by_day"]["total"] == ["0.3", "5.000000000000000001"]
    users = p["cost_by_user"]
    assert [(g["user"], g["cost"], g["share"]) for g in users["groups"]] == [
        ("carol", "5", "0.943396"),
        ("bob", "0.2", "0.037736"),
    ]
    assert users["other"] == {
        "groups": 2,
        "cost": "0.100000000000000001",
        "share": "0.018868",
        "requests": 2,
    }
    assert users["total"] == "5.300000000000000001"
    assert p["unpriced"] == {"calls": 1, "models": [{"model": "my-finetune", "calls": 1}]}
    gpt4o = p["tokens"]["models"].index("gpt-4o")
    assert {k: p["tokens"]["by_kind"][k][gpt4o] for k in TOKEN_KINDS} == {
        # 1000 in (600 read, 100 written) + 100 in, 50 out (20 reasoning) + 10 out
        "input_uncached": 300 + 100,
        "cache_read": 600,
        "cache_write": 100,
        "output_excl_reasoning": 30 + 10,
        "reasoning": 20,
    }
    assert p["tokens"]["cached_share_by_model"][gpt4o] == "0.545455"  # 600 / 1100
    assert [c["cost"] for c in p["top_calls"]] == ["5", "0.2", "0.1", "0.000000000000000001"]
    assert p["notes"] == []


def test_month_burn_forecast_is_a_straight_line(sqlite_ledger: Ledger) -> None:
    # 15 of March's 31 days gone; 7.5 spent -> 15.5 by April 1st
    now = datetime(2025, 3, 16, tzinfo=UTC)
    sqlite_ledger.record_many(
        [
            priced("2.5", at=datetime(2025, 3, 1, 0, 0, tzinfo=UTC)),
            priced("2.5", at=datetime(2025, 3, 10, 23, 59, tzinfo=UTC)),
            priced("2.5", at=datetime(2025, 3, 15, 12, tzinfo=UTC)),
            priced("100", at=datetime(2025, 2, 28, 23, 59, tzinfo=UTC)),  # last month
            priced("100", at=datetime(2025, 3, 16, 0, 0, 1, tzinfo=UTC)),  # after "now"
        ]
    )
    burn = build_dashboard(sqlite_ledger, now=now).payload()["burn"]
    assert len(burn) == 1
    b = burn[0]
    assert b["limit"] is None
    assert (b["start"], b["end"], b["now"]) == (
        "2025-03-01T00:00:00Z",
        "2025-04-01T00:00:00Z",
        "2025-03-16T00:00:00Z",
    )
    assert [(p["at"], p["spent"]) for p in b["points"]] == [
        ("2025-03-01T00:00:00Z", "0"),
        ("2025-03-02T00:00:00Z", "2.5"),
        ("2025-03-10T00:00:00Z", "2.5"),  # flat while nothing is spent
        ("2025-03-11T00:00:00Z", "5"),
        ("2025-03-15T00:00:00Z", "5"),
        ("2025-03-16T00:00:00Z", "7.5"),
    ]
    assert b["spent"] == "7.5"
    assert b["forecast"] == "15.5"
    assert b["over"] is False


def test_budget_burn_down(sqlite_ledger: Ledger) -> None:
    now = datetime(2025, 3, 11, tzinfo=UTC)  # 10 of 31 days gone
    sqlite_ledger.record_many(
        [
            priced("4", at=datetime(2025, 3, 2, 9, tzinfo=UTC), user="alice"),
            priced("6", at=datetime(2025, 3, 5, 9, tzinfo=UTC), user="bob"),
            priced("1", at=datetime(2025, 3, 6, 9, tzinfo=UTC), user=None),
            priced("0.5", at=datetime(2025, 3, 6, 9, tzinfo=UTC), user="bob", currency="EUR"),
        ]
    )
    overall = Budget("20 USD", "month", name="all")
    per_user = Budget("5 USD", "month", per="user", name="users")
    tokens = Budget("1000 tokens", "month", name="tok")
    rolling = Budget("50 USD", "24h", name="rolling")
    dash = build_dashboard(
        sqlite_ledger, budgets=[overall, per_user, tokens, rolling], now=now, max_burns=10
    )
    p = dash.payload()
    tracker = Tracker(sqlite_ledger, guards=[overall, per_user, tokens, rolling], log="off")
    statuses = budget_status(tracker, now=now.timestamp())
    assert [(s["budget"], s["key"], s["spent"]) for s in p["budgets"]] == [
        (s.budget, s.key, money_text(s.spent) if s.unit != "tokens" else str(int(s.spent)))
        for s in statuses
    ]
    burns = {(b["budget"], b["key"]): b for b in p["burn"]}
    assert ("rolling", None) not in burns  # no period end to forecast to
    b = burns[("all", None)]
    assert b["limit"] == "20"
    assert [(q["at"][:10], q["spent"], q["remaining"]) for q in b["points"]] == [
        ("2025-03-01", "0", "20"),
        ("2025-03-02", "0", "20"),
        ("2025-03-03", "4", "16"),
        ("2025-03-05", "4", "16"),
        ("2025-03-06", "10", "10"),
        ("2025-03-07", "11", "9"),
        ("2025-03-11", "11", "9"),
    ]
    assert b["forecast"] == "34.1"  # 11 * 31 / 10
    assert b["forecast_remaining"] == "-14.1"
    assert b["over"] is True
    bob = burns[("users", "bob")]
    assert (bob["spent"], bob["limit"], bob["forecast"]) == ("6", "5", "18.6")
    nobody = burns[("users", None)]
    assert nobody["spent"] == "1"
    assert nobody["title"] == "users · no user"
    tok = burns[("tok", None)]
    assert tok["unit"] == "tokens"
    assert tok["spent"] == str(4 * 110)  # input + output of every call, any currency
    # the closest to their limit come first
    used = [Decimal(s["used"]) for s in p["budgets"]]
    order = [(b["budget"], b["key"]) for b in p["burn"]]
    assert order[0] == ("users", "bob")
    assert max(used) == Decimal("1.2")


def test_bad_input_names_the_field(sqlite_ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown filter 'colour'"):
        build_dashboard(sqlite_ledger, colour="red")
    with pytest.raises(ValueError, match="filter 'user' must be"):
        build_dashboard(sqlite_ledger, user=[""])
    with pytest.raises(ValueError, match="top_n must be a positive int, got 0"):
        build_dashboard(sqlite_ledger, top_n=0)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        build_dashboard(sqlite_ledger, now=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="since"):
        build_dashboard(sqlite_ledger, since="yesterday-ish")
    with pytest.raises(ValueError, match="refresh_seconds"):
        render_dashboard({}, refresh_seconds=0)


def test_empty_ledger(sqlite_ledger: Ledger) -> None:
    p = build_dashboard(sqlite_ledger, now=NOW).payload()
    assert p["totals"] == []
    assert p["cost_by_day"]["days"] == []
    assert p["unpriced"] == {"calls": 0, "models": []}
    assert p["tokens"]["cached_share"] is None
    assert p["burn"][0]["spent"] == "0"
    assert p["burn"][0]["forecast"] == "0"


# -- the page ----------------------------------------------------------------------------------

_DATA = re.compile(r'<script type="application/json" id="costledger-data">(.*?)</script>', re.S)


def page_data(html: str) -> Any:
    match = _DATA.search(html)
    assert match is not None
    return json.loads(match.group(1))


def test_page_is_self_contained(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    sqlite_ledger.record_many(history(50))
    dash = build_dashboard(sqlite_ledger, now=NOW)
    (tmp_path / "out").mkdir()
    path = write_dashboard(dash, tmp_path / "out" / "d.html")
    html = path.read_text(encoding="utf-8")
    assert "plotly.js v" in html  # the library itself, inline
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=", html)
    assert page_data(html) == json.loads(json.dumps(dash.payload()))
    assert json.loads(re.findall(r'id="costledger-options">(.*?)</script>', html)[0]) == {
        "live": False,
        "refresh_seconds": 5.0,
        "data_url": "data.json",
    }
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["d.html"]  # no temporary file left


def test_names_cannot_break_out_of_the_page(sqlite_ledger: Ledger) -> None:
    evil = "</script><script>alert(1)</script>&<!--"
    sqlite_ledger.record(priced("1", at=NOW - timedelta(hours=1), user=evil, feature=evil))
    html = render_dashboard(build_dashboard(sqlite_ledger, now=NOW))
    assert evil not in html
    assert "alert(1)" not in html.replace("alert(1)\\u003c", "")
    data = page_data(html)
    assert data["cost_by_user"]["groups"][0]["user"] == evil


# -- the live server ---------------------------------------------------------------------------


def _get(server: DashboardServer, path: str, **headers: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def _poll_cost(server: DashboardServer, cost: str, timeout: float = 10) -> bool:
    """Poll as the page does: the server may answer from its cache for a moment (at most
    as long as one computation takes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if json.loads(_get(server, "/data.json").read())["totals"][0]["cost"] == cost:
            return True
        time.sleep(0.05)
    return False


def test_server_serves_the_page_and_fresh_data(sqlite_ledger: Ledger) -> None:
    sqlite_ledger.record(priced("0.1", at=NOW - timedelta(hours=1)))

    def compute() -> Any:
        return build_dashboard(sqlite_ledger, now=NOW)

    with DashboardServer(compute, port=0, min_interval=0) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        page = _get(server, "/")
        assert page.status == 200
        html = page.read().decode()
        assert '<script src="plotly.min.js"></script>' in html
        assert "plotly.js v" not in html  # served once, cached by the browser
        assert page_data(html)["totals"][0]["cost"] == "0.1"
        options = json.loads(re.findall(r'id="costledger-options">(.*?)</script>', html)[0])
        assert options["live"] is True

        data = _get(server, "/data.json")
        assert data.status == 200
        assert data.getheader("Cache-Control") == "no-store"
        assert json.loads(data.read())["totals"][0]["cost"] == "0.1"

        sqlite_ledger.record(priced("0.2", at=NOW - timedelta(minutes=1)))
        assert _poll_cost(server, "0.3")

        js = _get(server, "/plotly.min.js")
        assert js.status == 200
        etag = js.getheader("ETag")
        assert etag
        assert b"plotly.js v" in js.read()[:100]
        assert _get(server, "/plotly.min.js", **{"If-None-Match": etag}).status == 304
        assert _get(server, "/nope").status == 404


def test_server_refuses_other_host_names(sqlite_ledger: Ledger) -> None:
    with DashboardServer(lambda: build_dashboard(sqlite_ledger, now=NOW), port=0) as server:
        assert _get(server, "/data.json", Host="evil.example:80").status == 403
        assert _get(server, "/data.json", Host=f"localhost:{server.port}").status == 200
        assert _get(server, "/data.json", Host=f"127.0.0.1:{server.port}").status == 200


def test_server_on_ipv6_loopback(sqlite_ledger: Ledger) -> None:
    try:
        server = DashboardServer(
            lambda: build_dashboard(sqlite_ledger, now=NOW), host="::1", port=0
        )
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server:
        assert server.url == f"http://[::1]:{server.port}/"
        assert server.loopback
        conn = http.client.HTTPConnection("::1", server.port, timeout=30)
        conn.request("GET", "/data.json")  # Host: [::1]:port
        assert conn.getresponse().status == 200
        conn.close()


def test_server_reports_a_failing_ledger_and_keeps_serving(sqlite_ledger: Ledger) -> None:
    calls = {"n": 0}

    def compute() -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is down")
        return build_dashboard(sqlite_ledger, now=NOW)

    with DashboardServer(compute, port=0, min_interval=0) as server:
        failed = _get(server, "/data.json")
        assert failed.status == 500
        assert json.loads(failed.read()) == {"error": "RuntimeError: database is down"}
        assert _get(server, "/data.json").status == 200


def test_serve_dashboard_on_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    with Ledger(url, sync=True) as writer:
        writer.record(priced("1.5", at=datetime.now(UTC) - timedelta(minutes=1), user="dan"))
        assert build_dashboard(url).payload()["totals"][0]["cost"] == "1.5"
        with pytest.raises(ValueError, match="unknown filter 'colour'"):
            serve_dashboard(url, port=0, colour="red")
        server = serve_dashboard(url, port=0, user="dan")
        try:
            body = json.loads(_get(server, "/data.json").read())
            assert body["totals"][0]["cost"] == "1.5"
            assert body["filters"] == {"user": ["dan"]}
        finally:
            server.close()
        with pytest.raises(OSError):
            _get(server, "/data.json")


def test_server_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="port must be an int from 0 to 65535, got 70000"):
        DashboardServer(lambda: None, port=70000)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="refresh_seconds"):
        DashboardServer(lambda: None, port=0, refresh_seconds=0)  # type: ignore[arg-type, return-value]


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_dashboard_writes_the_selection(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    sqlite_ledger.record_many(history(120, seed=3))
    db = str(sqlite_ledger.url.render_as_string(hide_password=False))
    out = tmp_path / "d.html"
    result = CliRunner().invoke(
        app,
        ["dashboard", "-o", str(out), "--db", db, "--user", "alice,bob", "--since", "2025-02-15"],
    )
    assert result.exit_code == 0, result.output
    data = page_data(out.read_text(encoding="utf-8"))
    expected = build_dashboard(
        sqlite_ledger, user=["alice", "bob"], since=date(2025, 2, 15)
    ).payload()
    for key in ("totals", "cost_by_day", "cost_by_user", "cost_by_feature", "tokens", "unpriced"):
        assert data[key] == json.loads(json.dumps(expected[key])), key
    assert data["filters"] == {"user": ["alice", "bob"]}
    totals = ", ".join(f"{t['cost']} {t['currency']}" for t in expected["totals"])
    assert result.output.startswith(f"wrote {out} (")
    assert totals in result.output


def test_cli_dashboard_with_a_budgets_file(
    sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite_ledger.record(priced("3", at=datetime.now(UTC) - timedelta(seconds=5)))
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\nlimit = "10 USD"\nperiod = "month"\nname = "monthly"\n')
    db = str(sqlite_ledger.url.render_as_string(hide_password=False))
    out = tmp_path / "d.html"
    result = CliRunner().invoke(app, ["dashboard", "-o", str(out), "--db", db, "-b", str(budgets)])
    assert result.exit_code == 0, result.output
    data = page_data(out.read_text(encoding="utf-8"))
    assert [(s["budget"], s["limit"], s["spent"]) for s in data["budgets"]] == [
        ("monthly", "10", "3")
    ]
    assert data["burn"][0]["limit"] == "10"
    assert data["burn"][0]["spent"] == "3"
    # as for "budget status": $COSTLEDGER_BUDGETS when no option names the budgets
    monkeypatch.setenv("COSTLEDGER_BUDGETS", str(budgets))
    result = CliRunner().invoke(app, ["dashboard", "-o", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    assert page_data(out.read_text(encoding="utf-8"))["budgets"][0]["budget"] == "monthly"
    monkeypatch.delenv("COSTLEDGER_BUDGETS")
    result = CliRunner().invoke(app, ["dashboard", "-o", str(out), "--db", db])
    assert page_data(out.read_text(encoding="utf-8"))["burn"][0]["limit"] is None


def test_cli_dashboard_counts_budgets_in_the_files_guard_store(
    redis_url: str, tmp_path: Path
) -> None:
    """As for ``budget status``: the budgets file's ``guard_store`` (a call in flight holds
    $3 there), unless ``--guard-store`` names another."""
    import uuid

    from costledger._guards import guards_from_config, open_store

    from .test_guards_backends import _with_query

    store = _with_query(redis_url, prefix=f"cl:dash:{uuid.uuid4().hex[:8]}")
    budgets = tmp_path / "guards.toml"
    budgets.write_text(
        f'guard_store = "{store}"\n[[budget]]\nlimit = "10 USD"\nperiod = "month"\nname = "m"\n'
    )
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    out = tmp_path / "d.html"
    loaded = guards_from_config(budgets)
    with Ledger(db) as ledger:
        ledger.record(priced("1", at=datetime.now(UTC) - timedelta(seconds=5)))
        ledger.flush()
        tracker = Tracker(ledger, guards=loaded.guards, guard_store=loaded.guard_store, log="off")
        call = tracker.start(source="api", model="m", estimate=Decimal("3"))
        try:
            args = ["dashboard", "-o", str(out), "--db", db, "-b", str(budgets)]
            for extra, reserved in (([], "3"), (["--guard-store", "memory://"], "0")):
                result = CliRunner().invoke(app, [*args, *extra])
                assert result.exit_code == 0, result.output
                (status,) = page_data(out.read_text(encoding="utf-8"))["budgets"]
                assert (status["spent"], status["reserved"]) == ("1", reserved)
        finally:
            tracker.cancel(call)
    open_store(store).close()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        app, ["dashboard", "-o", str(tmp_path / "d.html"), "--db", f"sqlite:///{tmp_path}/x.db"]
    )
    assert missing.exit_code == 1
    assert missing.output.strip().startswith("error: no ledger at")
    assert len(missing.output.strip().splitlines()) == 1
    bad = runner.invoke(app, ["dashboard", "-o", "x.html", "--since", "someday"])
    assert bad.exit_code == 2
    assert "cannot read 'someday'" in bad.output
    no_out = runner.invoke(app, ["dashboard"])
    assert no_out.exit_code == 2
    with Ledger(f"sqlite:///{tmp_path}/empty.db", sync=True) as empty:
        empty.record(priced("1", at=NOW))
    out = tmp_path / "d.html"
    nothing = runner.invoke(
        app, ["dashboard", "-o", str(out), "--db", f"sqlite:///{tmp_path}/empty.db", "--user", "x"]
    )
    assert nothing.exit_code == 1
    assert nothing.output.strip() == "error: no calls match (user=x); nothing written"
    assert not out.exists()


def test_cli_serve_over_http(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    sqlite_ledger.record(priced("0.25", at=datetime.now(UTC) - timedelta(seconds=5)))
    db = str(sqlite_ledger.url.render_as_string(hide_password=False))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from costledger.cli import main; main()",
            "serve",
            "--db",
            db,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        port = int(match.group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/data.json")
        first = json.loads(conn.getresponse().read())
        assert first["totals"][0]["cost"] == "0.25"
        sqlite_ledger.record(priced("0.5", at=datetime.now(UTC) - timedelta(seconds=1)))
        deadline = time.monotonic() + 10  # the server recomputes at most twice a second
        while True:
            conn.request("GET", "/data.json")
            cost = json.loads(conn.getresponse().read())["totals"][0]["cost"]
            if cost == "0.75" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert cost == "0.75"
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
