"""The dashboard after review 16: the charts show the currency that holds the spend (a
ledger priced in EUR is charted in EUR, its unpriced calls counted in it, as ``report``
does); ``dashboard -o`` and ``export`` write through a new file created exclusively (a
planted link redirects nothing) and name the user's path in an error; ``serve`` closes a
connection that does not send its request in time and answers 503 over its connection
cap; the page is served while the ledger cannot be read; the summary line escapes ledger
text; ledger names joined into a sentence are bidi isolates; a user named "(no user)"
keeps a bar of its own.

The page's script runs under node with a minimal DOM (as in test_cli_review_dashboard.py).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costledger import Cost, Usage, UsageEvent
from costledger._dashboard import DashboardServer, build_dashboard, write_dashboard
from costledger._guards import Budget
from costledger._ledger import Ledger
from costledger._pricing import Pricer
from costledger._reports import export
from costledger._tracker import Tracker
from costledger.cli import app

UTC = timezone.utc
DAY = datetime(2025, 6, 2, 12, tzinfo=UTC)
NOW = datetime(2025, 6, 3, tzinfo=UTC)
FSI, PDI, RLO = "\u2068", "\u2069", "\u202e"
_DATA = re.compile(r'<script type="application/json" id="costledger-data">(.*?)</script>', re.S)


def priced(total: str, currency: str = "USD", **fields: Any) -> UsageEvent:
    fields.setdefault("timestamp", DAY)
    return UsageEvent(
        model=fields.pop("model", "m"),
        usage=Usage(100, 10),
        cost=Cost("priced", total=Decimal(total), currency=currency),
        **fields,
    )


def unknown(model: str = "new-finetune", **fields: Any) -> UsageEvent:
    fields.setdefault("timestamp", DAY)
    return UsageEvent(model=model, usage=Usage(100, 10), cost=Cost.unknown(model), **fields)


def recorded(path: Path, *events: UsageEvent) -> str:
    url = f"sqlite:///{path}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(list(events))
    return url


def page_data(html: str) -> Any:
    match = _DATA.search(html)
    assert match is not None
    return json.loads(match.group(1))


# -- 1. the charts' currency -------------------------------------------------------------------


@pytest.fixture
def eur_ledger(url: str) -> Iterator[Ledger]:
    """40 calls priced in EUR by the price book, 60 of a model it does not know (stored as
    USD, as the tracker stores every unpriced call)."""
    pricer = Pricer(
        overrides={"our-model": {"input": "2", "output": "8", "currency": "EUR"}},
        genai_prices=False,
        litellm=False,
    )
    with Ledger(url, sync=True) as ledger:
        tracker = Tracker(ledger=ledger, pricer=pricer, log="off")
        for _ in range(40):
            tracker.record("our-model", Usage(input_tokens=1000, output_tokens=500), user="alice")
        for _ in range(60):
            tracker.record("new-finetune", Usage(input_tokens=1000, output_tokens=500), user="bob")
        yield ledger


def test_a_ledger_priced_in_eur_is_charted_in_eur(eur_ledger: Ledger) -> None:
    stored = {(r.currency, r.requests, r.unpriced) for r in eur_ledger.summary()}
    assert stored == {("EUR", 40, 0), ("USD", 60, 60)}  # as the tracker stores them

    dash = build_dashboard(eur_ledger)
    p = json.loads(json.dumps(dash.payload()))
    assert p["currency"] == "EUR"
    assert [(t["currency"], t["requests"], t["unpriced"], t["cost"]) for t in p["totals"]] == [
        ("EUR", 100, 60, "0.24")
    ]
    users = p["cost_by_user"]
    assert users["currency"] == "EUR"
    assert [
        (g["user"], g["cost"], g["share"], g["requests"], g["unpriced"]) for g in users["groups"]
    ] == [
        ("alice", "0.24", "1.000000", 40, 0),
        ("bob", "0", "0.000000", 60, 60),
    ]
    assert users["total"] == "0.24"
    daily = p["cost_by_day"]
    assert daily["currency"] == "EUR"
    assert [(s["model"], s["cost"]) for s in daily["series"]] == [
        ("our-model", ["0.24"]),
        ("new-finetune", ["0"]),
    ]
    assert daily["total"] == ["0.24"]
    assert daily["requests"] == [100]
    assert len(p["top_calls"]) == 20
    assert {(c["currency"], c["cost"]) for c in p["top_calls"]} == {("EUR", "0.006")}
    (burn,) = p["burn"]
    assert (burn["unit"], burn["spent"]) == ("EUR", "0.24")
    assert p["unpriced"] == {"calls": 60, "models": [{"model": "new-finetune", "calls": 60}]}
    assert p["notes"] == []


def test_cli_summary_of_a_ledger_priced_in_eur(eur_ledger: Ledger, tmp_path: Path) -> None:
    db = eur_ledger.url.render_as_string(hide_password=False)
    out = tmp_path / "eur.html"
    result = CliRunner().invoke(app, ["dashboard", "-o", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    # the page's exact text of the amount, the same on every backend
    assert result.stdout == f"wrote {out} (100 calls, 0.24 EUR; 60 unpriced)\n"


def test_several_currencies_with_spend_charts_the_one_with_most_priced_calls(
    tmp_path: Path,
) -> None:
    # USD: more calls and larger amounts, but only 2 of its 7 calls have a price; EUR: 3 of 3
    url = recorded(
        tmp_path / "mixed.db",
        *(priced("1", "EUR", user="eve") for _ in range(3)),
        *(priced("100", "USD", user="sam") for _ in range(2)),
        *(unknown(user="sam") for _ in range(5)),
    )
    p = build_dashboard(url, now=NOW).payload()
    assert p["currency"] == "EUR"
    assert [(t["currency"], t["requests"], t["cost"]) for t in p["totals"]] == [
        ("EUR", 3, "3"),
        ("USD", 7, "200"),
    ]
    assert [(g["user"], g["cost"]) for g in p["cost_by_user"]["groups"]] == [("eve", "3")]
    assert p["notes"] == [
        "Charts and the most expensive calls show EUR; calls in USD appear in the totals only."
    ]


# -- 2. writing files --------------------------------------------------------------------------


def _plant_links(directory: Path, names: list[str], victim: Path) -> None:
    for name in names:
        (directory / name).symlink_to(victim)


def test_dashboard_file_is_not_written_through_a_planted_link(tmp_path: Path) -> None:
    url = recorded(tmp_path / "l.db", priced("1.5"))
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("important settings\n")
    # the names the page used to be written to first, one per process id
    _plant_links(shared, [f".d.html.{os.getpid()}.tmp", "d.html.part"], victim)
    old_umask = os.umask(0o022)
    try:
        path = write_dashboard(build_dashboard(url, now=NOW), shared / "d.html")
    finally:
        os.umask(old_umask)
    assert victim.read_text() == "important settings\n"
    assert not path.is_symlink()
    assert page_data(path.read_text(encoding="utf-8"))["totals"][0]["cost"] == "1.5"
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # as open() gives: 0666 less the umask
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        [f".d.html.{os.getpid()}.tmp", "d.html", "d.html.part"]
    )


def test_export_is_not_written_through_a_planted_link(tmp_path: Path) -> None:
    url = recorded(tmp_path / "e.db", priced("1.5"))
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("important settings\n")
    _plant_links(shared, ["calls.csv.part"], victim)
    result = export(url, shared / "calls.csv")
    assert result.rows == 1
    assert victim.read_text() == "important settings\n"
    target = shared / "calls.csv"
    assert not target.is_symlink()
    assert target.read_text().count("\n") == 2  # header and the one call
    assert sorted(p.name for p in shared.iterdir()) == ["calls.csv", "calls.csv.part"]


def test_a_long_file_name_is_written(tmp_path: Path) -> None:
    # the file system takes a 250-byte name; the temporary name must not be longer
    url = recorded(tmp_path / "n.db", priced("1.5"))
    name = "d" * 245 + ".html"
    path = write_dashboard(build_dashboard(url, now=NOW), tmp_path / name)
    assert path.name == name
    assert export(url, tmp_path / ("c" * 246 + ".csv")).rows == 1


needs_sysfs = pytest.mark.skipif(
    not os.path.isdir("/sys/kernel"), reason="needs Linux /sys (no file may be created there)"
)


@needs_sysfs
def test_write_errors_name_the_path_given(tmp_path: Path) -> None:
    url = recorded(tmp_path / "s.db", priced("1.5"))
    with pytest.raises(PermissionError) as caught:
        write_dashboard(build_dashboard(url, now=NOW), "/sys/x.html")
    assert str(caught.value) == "[Errno 13] Permission denied: '/sys/x.html'"
    with pytest.raises(PermissionError) as caught:
        export(url, "/sys/x.csv")
    assert str(caught.value) == "[Errno 13] Permission denied: '/sys/x.csv'"
    result = CliRunner().invoke(app, ["dashboard", "-o", "/sys/x.html", "--db", url])
    assert result.exit_code == 1
    assert result.stderr == "error: [Errno 13] Permission denied: '/sys/x.html'\n"


# -- 3. connections: a deadline for the request, a cap ----------------------------------------


def _server(tmp_path: Path, **options: Any) -> DashboardServer:
    url = recorded(tmp_path / "srv.db", priced("1.5"))
    return DashboardServer(lambda: build_dashboard(url, now=NOW), port=0, **options)


def _half_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (recv sees the end) before the 30 s the
    client waits: it sends no answer to a request that never arrived."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_half_sent_request_is_closed(tmp_path: Path) -> None:
    with _server(tmp_path, request_timeout=0.5) as server:
        sock = _half_request(server.port)
        try:
            assert _closed_by_server(sock)
        finally:
            sock.close()
        page = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        page.request("GET", "/data.json")
        assert page.getresponse().status == 200


def test_a_request_sent_a_byte_at_a_time_is_closed_all_the_same(tmp_path: Path) -> None:
    # each byte comes well within the timeout: only a deadline for the whole request ends it
    with _server(tmp_path, request_timeout=1) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        closed = False
        try:
            for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 400:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                time.sleep(0.05)
                sock.setblocking(False)
                try:
                    if sock.recv(1024) == b"":
                        closed = True
                        break
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed = True
                    break
                finally:
                    sock.setblocking(True)
        finally:
            sock.close()
        assert closed


def test_over_the_connection_cap_is_answered_503_at_once(tmp_path: Path) -> None:
    with _server(tmp_path, max_connections=2, request_timeout=60) as server:
        idle = [_half_request(server.port), _half_request(server.port)]
        try:
            busy = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            busy.request("GET", "/data.json")
            answer = busy.getresponse()
            assert answer.status == 503
            assert answer.getheader("Retry-After") == "1"
            assert answer.read() == b"busy: too many connections to this dashboard; try again\n"
        finally:
            for sock in idle:
                sock.close()
        # the idle ones gone, their slots are free again
        for _ in range(600):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("GET", "/data.json")
            if conn.getresponse().status == 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the server never served again after its idle connections closed")


def test_limits_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match=r"request_timeout must be .* got 0$"):
        DashboardServer(lambda: None, port=0, request_timeout=0)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match=r"request_timeout must be .* got True$"):
        DashboardServer(lambda: None, port=0, request_timeout=True)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match=r"max_connections must be a positive int, got 0$"):
        DashboardServer(lambda: None, port=0, max_connections=0)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match=r"max_connections must be a positive int, got 2.5$"):
        DashboardServer(lambda: None, port=0, max_connections=2.5)  # type: ignore[arg-type, return-value]


# -- 6. the page while the ledger cannot be read -----------------------------------------------


def test_page_is_served_while_the_ledger_cannot_be_read(tmp_path: Path) -> None:
    db = tmp_path / "flaky.db"
    good = tmp_path / "good.db"
    recorded(good, priced("1.5"))
    shutil.copy(good, db)
    served = f"sqlite:///{db}"
    with DashboardServer(lambda: build_dashboard(served, now=NOW), port=0, min_interval=0) as s:
        db.write_bytes(b"this is not a database" * 100)
        page = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        page.request("GET", "/")
        answer = page.getresponse()
        assert answer.status == 200
        assert answer.getheader("Content-Type") == "text/html; charset=utf-8"
        html = answer.read().decode()
        assert page_data(html) is None  # no data yet: the page asks for it
        options = json.loads(re.findall(r'id="costledger-options">(.*?)</script>', html)[0])
        assert options == {"live": True, "refresh_seconds": 5.0, "data_url": "data.json"}
        data = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        data.request("GET", "/data.json")
        failed = data.getresponse()
        assert failed.status == 500
        assert "error" in json.loads(failed.read())

        shutil.copy(good, db)  # the ledger is back
        again = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        again.request("GET", "/")
        assert page_data(again.getresponse().read().decode())["totals"][0]["cost"] == "1.5"


# -- 4. the summary line -----------------------------------------------------------------------


def test_summary_line_escapes_ledger_text(tmp_path: Path) -> None:
    currency = "\x1b]0;owned-title\x07\x1b[2J\x1b[31mUSD"
    url = recorded(tmp_path / "esc.db", priced("1.5", currency))
    out = tmp_path / "esc.html"
    result = CliRunner().invoke(app, ["dashboard", "-o", str(out), "--db", url])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"wrote {out} (1 calls, 1.5 \\x1b]0;owned-title\\x07\\x1b[2J\\x1b[31mUSD)\n"
    )


# -- 5 and 7: the page's script under node -----------------------------------------------------

SHIM = r"""
"use strict";
const fs = require("fs");
const [, , scriptPath, dataPath, optionsPath] = process.argv;
const ids = {};
function El(tag) {
  this.tagName = tag; this.children = []; this.attrs = {}; this._text = ""; this.parentNode = null;
  this.hidden = false; this.className = "";
}
Object.defineProperty(El.prototype, "textContent", {
  get() { return this._text + this.children.map((c) => c.textContent).join(""); },
  set(v) { this._text = String(v); this.children = []; }
});
El.prototype.setAttribute = function (k, v) {
  this.attrs[k] = String(v);
  if (k === "id") { ids[v] = this; }
};
El.prototype.appendChild = function (c) { c.parentNode = this; this.children.push(c); return c; };
El.prototype.insertBefore = function (c, ref) {
  c.parentNode = this; const i = this.children.indexOf(ref);
  this.children.splice(i < 0 ? this.children.length : i, 0, c); return c;
};
El.prototype.remove = function () {
  const p = this.parentNode;
  if (p) { p.children = p.children.filter((x) => x !== this); }
};
function matches(e, sel) {
  if (/^[a-z0-9]+$/.test(sel)) { return e.tagName === sel; }
  if (/^\.[\w-]+$/.test(sel)) {
    return (e.attrs["class"] || "").split(/\s+/).includes(sel.slice(1));
  }
  return false;
}
El.prototype.querySelectorAll = function (sel) {
  const out = [];
  (function walk(e) {
    e.children.forEach((c) => { if (matches(c, sel)) { out.push(c); } walk(c); });
  })(this);
  return out;
};
El.prototype.querySelector = function (sel) { return this.querySelectorAll(sel)[0] || null; };
const document = {
  readyState: "complete",
  body: new El("body"),
  createElement: (tag) => new El(tag),
  getElementById: (id) => {
    if (!ids[id]) {
      const e = new El("div");
      e.setAttribute("id", id);
      document.body.appendChild(e);
    }
    return ids[id];
  },
  querySelectorAll: () => [],
  addEventListener: () => {}
};
const plotted = {};
const timers = [];
const fetched = [];
const window = {
  Plotly: {
    react: (div, traces, layout) => {
      plotted[div.attrs.id] = { traces, layout };
      return Promise.resolve();
    },
    purge: () => {}
  },
  setTimeout: (f, ms) => { timers.push(ms); }
};
// the server cannot read its ledger: /data.json answers 500 with the error
global.fetch = (url) => {
  fetched.push(url);
  return Promise.resolve({ ok: false, status: 500,
    json: () => Promise.resolve({ error: "DatabaseError: file is not a database" }) });
};
document.getElementById("costledger-data").textContent = fs.readFileSync(dataPath, "utf8");
document.getElementById("costledger-options").textContent = fs.readFileSync(optionsPath, "utf8");
global.document = document; global.window = window;
new Function("document", "window", fs.readFileSync(scriptPath, "utf8"))(document, window);
setTimeout(() => {
  const text = (id) => (ids[id] ? ids[id].textContent : null);
  const h3 = ids["burns"] ? ids["burns"].querySelectorAll("h3").map((e) => e.textContent) : [];
  process.stdout.write(JSON.stringify({
    unpriced: text("unpriced-warning"), no_usage: text("no-usage-warning"),
    notes: ids["warnings"]
      ? ids["warnings"].querySelectorAll(".note").map((e) => e.textContent) : [],
    selection: text("selection"), status: text("status"), burns: h3,
    kpi_labels: Object.keys(ids).filter((k) => k.startsWith("kpi-cost-"))
      .map((k) => ids[k].parentNode.children[0].textContent),
    plotted, timers, fetched, rendered: document.body.attrs["data-rendered"] || null
  }));
}, 100);
"""


def run_page(tmp_path: Path, data: Any, *, live: bool = False) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = tmp_path / "page.js"
    script.write_text(
        resources.files("costledger._dashboard").joinpath("page.js").read_text("utf-8"),
        encoding="utf-8",
    )
    shim = tmp_path / "shim.js"
    shim.write_text(SHIM, encoding="utf-8")
    data_path = tmp_path / "data.json"
    data_path.write_text(json.dumps(data), encoding="utf-8")
    options = tmp_path / "options.json"
    options.write_text(
        json.dumps({"live": live, "refresh_seconds": 5, "data_url": "data.json"}), encoding="utf-8"
    )
    done = subprocess.run(
        [node, str(shim), str(script), str(data_path), str(options)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_page_without_data_asks_for_it_and_says_it_retries(tmp_path: Path) -> None:
    shown = run_page(tmp_path, None, live=True)
    assert shown["fetched"] == ["data.json"]
    assert shown["status"] == (
        "no data yet: the server could not answer (HTTP 500: DatabaseError: file is not a "
        "database); retrying every 5 s"
    )
    assert shown["timers"] == [5000]
    assert shown["rendered"] is None


def test_banner_isolates_each_model_name(tmp_path: Path) -> None:
    url = recorded(
        tmp_path / "bidi.db",
        *(priced("1") for _ in range(3)),
        *(unknown(f"{RLO}ft-model") for _ in range(9)),
        *(unknown("claude-x") for _ in range(2)),
        unknown(f"{PDI}{RLO}evil{FSI}"),
    )
    shown = run_page(tmp_path, build_dashboard(url, now=NOW).payload())
    assert shown["rendered"] == "1"
    assert shown["unpriced"] == (
        "⚠ 12 calls without a price. Their cost is unknown, not zero, and is not in these "
        f"figures. Models: {FSI}{RLO}ft-model{PDI} (9), {FSI}claude-x{PDI} (2), "
        f"{FSI}{RLO}evil{FSI}{PDI}{PDI} (1). Add a price (a price book) and run costledger "
        "reprice."
    )


def test_notes_burn_titles_and_labels_isolate_ledger_text(tmp_path: Path) -> None:
    odd = f"{PDI}{RLO}XYZ"
    url = recorded(
        tmp_path / "cur.db",
        *(priced("1", user="alice") for _ in range(3)),
        priced("2", user=f"{RLO}bob"),
        priced("2", "EUR", user="dave"),
        priced("5", odd, user="carol"),
    )
    budget = Budget("10 USD", "month", per="user", name="users")
    p = build_dashboard(url, now=NOW, budgets=[budget]).payload()
    assert p["notes"] == [
        "Charts and the most expensive calls show USD; calls in EUR, "
        f"{FSI}{RLO}XYZ{PDI} appear in the totals only."
    ]
    shown = run_page(tmp_path, p)
    assert shown["notes"] == p["notes"]
    usd = f"{FSI}USD{PDI}"
    assert [t for t in shown["burns"] if "bob" in t] == [
        f"{FSI}users{PDI} · user {FSI}{RLO}bob{PDI}: spent 2 {usd} of 10 {usd} · forecast by "
        f"2025-07-01: 30 {usd} (over the limit)"
    ]
    assert f"Cost ({FSI}{RLO}XYZ{PDI})" in shown["kpi_labels"]


def test_isolated_leaves_left_to_right_text_alone() -> None:
    from costledger._dashboard._data import isolated

    assert isolated("EUR") == "EUR"
    assert isolated(f"{RLO}x") == f"{FSI}{RLO}x{PDI}"
    assert isolated(f"{PDI}{PDI}a{FSI}b") == f"{FSI}a{FSI}b{PDI}{PDI}"
    assert isolated("שקל") == f"{FSI}שקל{PDI}"


def test_a_user_named_no_user_keeps_a_bar_of_its_own(tmp_path: Path) -> None:
    url = recorded(
        tmp_path / "names.db",
        priced("3", user=None, feature=None),
        priced("2", user="(no user)", feature="(no feature)"),
        priced("1", user='"(no user)"', feature="search"),
        priced("4", model="(no model)", user="alice", feature=None),
    )
    shown = run_page(tmp_path, build_dashboard(url, now=NOW).payload())
    (users,) = shown["plotted"]["chart-users"]["traces"]
    # the dearest at the top (Plotly draws the first category at the bottom)
    assert list(zip(users["y"], users["x"], strict=True)) == [
        ('""(no user)""', "1"),
        ('"(no user)"', "2"),
        ("(no user)", "3"),
        ("alice", "4"),
    ]
    assert users["customdata"][1] == f'{FSI}"(no user)"{PDI}: 2 {FSI}USD{PDI} · 20.00% · 1 calls'
    assert users["customdata"][2] == f"(no user): 3 {FSI}USD{PDI} · 30.00% · 1 calls"
    (features,) = shown["plotted"]["chart-features"]["traces"]
    assert list(zip(features["y"], features["x"], strict=True)) == [
        ("search", "1"),
        ('"(no feature)"', "2"),
        ("(no feature)", "7"),
    ]
    assert shown["plotted"]["chart-tokens"]["traces"][0]["x"] == ["m", '"(no model)"']
