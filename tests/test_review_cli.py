"""Fixes from the CLI / dashboard review, each through the real thing: SQLite files, the
``costledger`` command (CliRunner, or a real process for ``serve``), real HTTP sockets."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Tracker, Usage, UsageEvent, UsageLogger
from costledger._dashboard import DashboardServer, build_dashboard
from costledger._ledger import Ledger
from costledger.cli import app

UTC = timezone.utc
KEY = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def one_error_line(result: Result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def priced(
    total: str, *, at: datetime | None = None, model: str = "gpt-4o", **fields: Any
) -> UsageEvent:
    amount = Decimal(total)
    return UsageEvent(
        model=model,
        usage=Usage(input_tokens=10, output_tokens=1),
        cost=Cost(status="priced", total=amount, input=amount, output=Decimal(0)),
        timestamp=at or datetime.now(UTC) - timedelta(minutes=5),
        **fields,
    )


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


# -- 1. names like the page template's marks ----------------------------------------------------


def _script(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}">') + len(f'id="{element_id}">')
    return html[start : html.index("</script>", start)]


def test_dashboard_names_like_the_page_marks(db_path: Path, tmp_path: Path) -> None:
    from costledger._dashboard._page import _asset

    marks = {
        "user": "/*COSTLEDGER:JS*/",
        "feature": "/*COSTLEDGER:OPTIONS*/",
        "model": "/*COSTLEDGER:DATA*/",
    }
    with Ledger(sqlite_url(db_path), sync=True) as ledger:
        ledger.record(
            priced(
                "0.5",
                model=marks["model"],
                user=marks["user"],
                feature=marks["feature"],
                tags=("/*COSTLEDGER:CSS*/", "<!--COSTLEDGER:PLOTLY-->"),
                id="call-1",
            )
        )
    out = tmp_path / "d.html"
    result = run("dashboard", "-o", str(out), "--db", sqlite_url(db_path))
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    data = json.loads(_script(html, "costledger-data"))
    assert [g["user"] for g in data["cost_by_user"]["groups"]] == ["/*COSTLEDGER:JS*/"]
    assert [g["feature"] for g in data["cost_by_feature"]["groups"]] == ["/*COSTLEDGER:OPTIONS*/"]
    assert [s["model"] for s in data["cost_by_day"]["series"]] == ["/*COSTLEDGER:DATA*/"]
    assert [(c["id"], c["model"], c["user"]) for c in data["top_calls"]] == [
        ("call-1", "/*COSTLEDGER:DATA*/", "/*COSTLEDGER:JS*/")
    ]
    assert json.loads(_script(html, "costledger-options")) == {
        "live": False,
        "refresh_seconds": 5.0,
        "data_url": "data.json",
    }
    # the page's own script and style are there once each, where the template puts them
    assert html.count(_asset("page.js")) == 1
    assert html.count(_asset("page.css")) == 1
    assert html.rindex(_asset("page.js")) > html.index('id="costledger-options">')


# -- 3. secrets in sets, frozensets and bytes ---------------------------------------------------


def test_redact_looks_into_sets_and_bytes() -> None:
    from costledger import redact

    assert redact({"k": {KEY}}) == {"k": ["[REDACTED]"]}
    assert redact([frozenset([KEY, "ok"])]) == [["[REDACTED]", "ok"]]
    # two secrets scrubbed to the same text stay two items
    assert redact({KEY, "sk-ant-" + "B" * 30}) == ["[REDACTED]", "[REDACTED]"]
    assert redact(f"Bearer {KEY}".encode()) == "Bearer [REDACTED]"
    assert redact(bytearray(KEY.encode())) == "[REDACTED]"
    assert redact(b"\xff" + KEY.encode()) == "\ufffd[REDACTED]"
    clean_set, clean_bytes = {"a", "b"}, b"hello"
    assert redact(clean_set) is clean_set
    assert redact(clean_bytes) is clean_bytes


def test_no_secret_from_a_set_or_bytes_reaches_a_row_or_log_line(db_path: Path) -> None:
    from costledger._ledger._money import dumps

    buf = io.StringIO()
    with Ledger(sqlite_url(db_path), sync=True) as ledger:
        tracker = Tracker(ledger, logger=UsageLogger(buf))
        event = tracker.record(
            "gpt-4o-mini",
            Usage(input_tokens=10, output_tokens=1),
            provider="openai",
            attribution={
                "meta_set": {KEY},
                "fs": frozenset([KEY, "ok"]),
                "raw": f"Bearer {KEY}".encode(),
                "plain": b"hello",
            },
        )
        # a set handed to the ledger directly is scrubbed when it is stored too
        ledger.record(priced("1", id="direct", metadata={"s": {KEY}, "b": KEY.encode()}))
        ledger.flush()
        row = ledger.get(event.id)
        direct = ledger.get("direct")
    assert row is not None
    assert direct is not None
    assert dict(row.metadata) == {
        "meta_set": ["[REDACTED]"],
        "fs": ["[REDACTED]", "ok"],
        "raw": "Bearer [REDACTED]",
        "plain": "hello",
    }
    assert dict(direct.metadata) == {"s": ["[REDACTED]"], "b": "[REDACTED]"}
    line = buf.getvalue()
    assert KEY not in line
    assert json.loads(line)["costledger.metadata"] == dict(row.metadata)
    assert KEY not in db_path.read_bytes().decode("utf-8", "replace")
    assert dumps({"s": frozenset([KEY])}) == '{"s":["[REDACTED]"]}'


def test_log_line_renders_a_set_scrubbed() -> None:
    from costledger._logging import dumps_record

    assert dumps_record({"s": {KEY}}) == '{"s":["[REDACTED]"]}'


# -- 4. infinite and NaN latencies --------------------------------------------------------------


def test_non_finite_latency_is_no_latency() -> None:
    assert priced("1", latency_ms=float("inf")).latency_ms is None
    assert priced("1", latency_ms=float("-inf")).latency_ms is None
    assert priced("1", latency_ms=float("nan")).latency_ms is None
    assert priced("1", latency_ms=12.5).latency_ms == 12.5
    assert priced("1", latency_ms=0.0).latency_ms == 0.0
    assert priced("1", latency_ms=7).latency_ms == 7


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_infinite_latency_recorded_round_trips(db_path: Path, tmp_path: Path) -> None:
    url = sqlite_url(db_path)
    with Ledger(url, sync=True) as ledger:
        ledger.record(priced("0.25", latency_ms=float("inf"), id="inf", user="u"))
        ledger.record(priced("0.5", latency_ms=float("nan"), id="nan", user="v"))
    top = run("top", "--db", url, "-f", "json")
    assert top.exit_code == 0, top.output
    assert {r["id"]: r["latency_ms"] for r in _strict_json(top.stdout)} == {
        "inf": None,
        "nan": None,
    }
    exported = tmp_path / "out.jsonl"
    result = run("export", "--db", url, "-f", "jsonl", "-o", str(exported))
    assert result.exit_code == 0, result.output
    lines = exported.read_text().splitlines()
    assert [_strict_json(x)["costledger.latency_ms"] for x in lines] == [None, None]
    back = sqlite_url(tmp_path / "back.db")
    ingested = run("ingest", str(exported), "--db", back)
    assert ingested.exit_code == 0, ingested.output
    with Ledger(back) as again:
        assert sorted((e.id, e.latency_ms) for e in again.events()) == [
            ("inf", None),
            ("nan", None),
        ]


def test_infinite_latency_already_stored(db_path: Path, tmp_path: Path) -> None:
    """A ledger written before infinities were refused: every output still reads it."""
    url = sqlite_url(db_path)
    with Ledger(url, sync=True) as ledger:
        ledger.record(priced("0.25", latency_ms=1.0, id="old", metadata={"ratio": 1.5}))
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE costledger_events SET latency_ms = 9e999")
        conn.execute("""UPDATE costledger_events SET metadata = '{"ratio": Infinity}'""")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT latency_ms FROM costledger_events").fetchone() == (math.inf,)

    top = run("top", "--db", url, "-f", "json")
    assert top.exit_code == 0, top.output
    assert [r["latency_ms"] for r in _strict_json(top.stdout)] == [None]

    jsonl = tmp_path / "out.jsonl"
    assert run("export", "--db", url, "-f", "jsonl", "-o", str(jsonl)).exit_code == 0
    record = _strict_json(jsonl.read_text())
    assert (record["costledger.latency_ms"], record["costledger.metadata"]) == (
        None,
        {"ratio": None},
    )

    csv_out = tmp_path / "out.csv"
    assert run("export", "--db", url, "-f", "csv", "-o", str(csv_out)).exit_code == 0
    header, row = csv_out.read_text().splitlines()
    fields = dict(zip(header.split(","), row.split(",", len(header.split(",")) - 1), strict=True))
    assert fields["latency_ms"] == ""

    page = tmp_path / "d.html"
    result = run("dashboard", "-o", str(page), "--db", url)
    assert result.exit_code == 0, result.output
    data = json.loads(_script(page.read_text(encoding="utf-8"), "costledger-data"))
    assert [(c["id"], c["latency_ms"]) for c in data["top_calls"]] == [("old", None)]


# -- 5. ledger text is not rich markup ----------------------------------------------------------


@pytest.mark.parametrize(
    "user", ["[/bold]", "[bold]alice[/bold] [link=https://evil.example]bob[/link] :smile:"]
)
def test_tables_print_names_as_they_are(db_path: Path, user: str) -> None:
    url = sqlite_url(db_path)
    with Ledger(url, sync=True) as ledger:
        ledger.record(priced("0.5", user=user, id="x1"))
    top = run("top", "--db", url)
    assert top.exit_code == 0, top.output
    assert next(line for line in top.stdout.splitlines() if "x1" in line).count(user) == 1
    by_user = run("report", "--by", "user", "--db", url, env={"FORCE_COLOR": "1"})
    assert by_user.exit_code == 0, by_user.output
    assert user in by_user.stdout
    # styling that is meant stays: the header and the totals row are bold
    assert "\x1b[1mtotal" in by_user.stdout
    assert "\x1b[1muser" in by_user.stdout


# -- 6, 7, 8. serve ------------------------------------------------------------------------------


@pytest.fixture
def served(db_path: Path) -> Iterator[DashboardServer]:
    ledger = Ledger(sqlite_url(db_path), sync=True)
    ledger.record(priced("1", user="secret-user"))
    with DashboardServer(lambda: build_dashboard(ledger), port=0) as server:
        yield server
    ledger.close()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("host", [b"[::1", b"evil.com]", b"[localhost"])
def test_serve_malformed_host_is_forbidden(
    served: DashboardServer, host: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    out = _raw(served.port, b"GET /data.json HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert out.split(b"\r\n")[0] == b"HTTP/1.0 403 Forbidden"
    assert out.endswith(b"\r\n\r\nforbidden host\n")
    good = _raw(served.port, b"GET /data.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert good.split(b"\r\n")[0] == b"HTTP/1.0 200 OK"
    assert "Traceback" not in capfd.readouterr().err


def test_serve_refuses_a_second_host_header(served: DashboardServer) -> None:
    for hosts in (b"Host: localhost\r\nHost: evil.example", b"Host: localhost\r\nHost: localhost"):
        out = _raw(served.port, b"GET /data.json HTTP/1.1\r\n" + hosts + b"\r\n\r\n")
        assert out.split(b"\r\n")[0] == b"HTTP/1.0 403 Forbidden"


def test_serve_client_leaving_is_no_error(
    served: DashboardServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="costledger.dashboard")
    for path in (b"/plotly.min.js", b"/"):
        s = socket.create_connection(("127.0.0.1", served.port), timeout=30)
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.0 200 OK")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # a reset, in the middle of the answer
    time.sleep(1.0)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "Traceback" not in capfd.readouterr().err
    good = _raw(served.port, b"GET /data.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert good.split(b"\r\n")[0] == b"HTTP/1.0 200 OK"


@pytest.mark.parametrize("host", ["LOCALHOST", "127.1", "LocalHost"])
def test_serve_loopback_spelled_otherwise_keeps_the_host_check(db_path: Path, host: str) -> None:
    ledger = Ledger(sqlite_url(db_path), sync=True)
    ledger.record(priced("1", user="secret-user"))
    try:
        with DashboardServer(lambda: build_dashboard(ledger), host=host, port=0) as server:
            assert server.loopback is True
            out = _raw(server.port, b"GET /data.json HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
            assert out.split(b"\r\n")[0] == b"HTTP/1.0 403 Forbidden"
            assert b"secret-user" not in out
            ok = _raw(server.port, b"GET /data.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert b"secret-user" in ok
    finally:
        ledger.close()


def test_serve_command_on_localhost_in_capitals(db_path: Path) -> None:
    url = sqlite_url(db_path)
    with Ledger(url, sync=True) as ledger:
        ledger.record(priced("1", user="secret-user"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from costledger.cli import main; main()",
            *("serve", "--host", "LOCALHOST", "--port", "0", "--db", url),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("serving the costledger dashboard on http://LOCALHOST:")
        port = int(first.split("http://LOCALHOST:")[1].split("/")[0])
        out = _raw(port, b"GET /data.json HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
        assert out.split(b"\r\n")[0] == b"HTTP/1.0 403 Forbidden"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "warning" not in err


# -- 9. prices diff across currencies -----------------------------------------------------------


def test_prices_diff_in_another_currency(tmp_path: Path) -> None:
    from costledger import show_price
    from costledger._reports._common import money_text

    default = show_price("gpt-4o")
    assert default is not None
    assert default.currency == "USD"
    book = tmp_path / "eur.toml"
    book.write_text('["gpt-4o"]\ninput = "2.5"\noutput = "10"\ncurrency = "EUR"\n')
    result = run("prices", "diff", str(book), "-f", "json")
    assert result.exit_code == 0, result.output
    rows = {r["component"]: r for r in json.loads(result.stdout)}
    assert rows["input"] == {
        "model": "gpt-4o",
        "provider": None,
        "variant": None,
        "component": "input",
        "currency": "EUR",
        "default_currency": "USD",
        "default": money_text(default.input),
        "book": "2.5",
        "change": None,
        "change_share": None,
        "status": "other currency",
        "default_source": default.source,
    }
    assert {r["status"] for r in rows.values()} == {"other currency"}
    assert {(r["change"], r["change_share"]) for r in rows.values()} == {(None, None)}

    table = run("prices", "diff", str(book), "--changed-only")
    assert table.exit_code == 0, table.output
    line = next(x for x in table.stdout.splitlines() if " input " in x)
    cells = [c.strip() for c in line.split("│")]
    assert cells == ["gpt-4o", "input", "2.50", "USD", "2.50", "EUR", "-", "-", "other currency"]


def test_prices_diff_same_currency_names_it(tmp_path: Path) -> None:
    book = tmp_path / "usd.toml"
    book.write_text('["gpt-4o"]\ninput = "1"\noutput = "10"\n')
    result = run("prices", "diff", str(book), "-f", "json")
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.stdout) if r["component"] == "input")
    assert (row["currency"], row["default_currency"]) == ("USD", "USD")
    assert row["status"] == "changed"


# -- 10. event_from_line is public --------------------------------------------------------------


def test_event_from_line_as_the_log_schema_shows(tmp_path: Path) -> None:
    import costledger
    from costledger import event_from_line

    path = tmp_path / "usage.jsonl"
    event = priced("0.0243525", user="alice", latency_ms=1234.5, tags=("prod",))
    log = UsageLogger(str(path))
    log.emit(event)
    log.close()
    with path.open() as f:
        assert event_from_line(f.readline()) == event
    assert "event_from_line" in costledger.__all__
    assert costledger.event_from_line is event_from_line


# -- 11. reprice with nothing to re-price ---------------------------------------------------------


def test_reprice_exits_1_when_nothing_got_a_price(db_path: Path) -> None:
    url = sqlite_url(db_path)
    with Ledger(url, sync=True) as ledger:
        ledger.record(
            UsageEvent(
                model="acme-unknown-7",
                usage=Usage(input_tokens=5, output_tokens=1),
                cost=Cost.unknown("acme-unknown-7"),
            )
        )
    table = run("reprice", "--db", url)
    assert table.exit_code == 1, table.output
    line = one_error_line(table)
    assert line == "error: nothing to re-price: none of the 1 unpriced call(s) has a price yet"
    row = next(x for x in table.stdout.splitlines() if "acme-unknown-7" in x)
    assert [c.strip() for c in row.split("│")] == ["acme-unknown-7", "0", "1"]
    doc = run("reprice", "--db", url, "-f", "json", "--dry-run")
    assert doc.exit_code == 1
    got = json.loads(doc.stdout)
    assert (got["examined"], got["repriced"], got["still_unknown"]) == (1, 0, 1)
