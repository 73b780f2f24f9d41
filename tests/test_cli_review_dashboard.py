"""The dashboard shows an unknown cost as unknown, not 0: when no call of a currency has a
price (every one of an unknown model, or without usage), the payload's total is ``null``
and the page (its own script, run under node with a minimal DOM) shows "unknown" in the
KPI and "-" in the totals table, as ``costledger report`` shows "-"."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from costledger import Cost, Usage, UsageEvent
from costledger._dashboard import build_dashboard
from costledger._dashboard._data import known_cost
from costledger._ledger import Ledger

JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
NOW = datetime(2025, 6, 3, tzinfo=timezone.utc)

SHIM = r"""
// A minimal DOM for page.js under node: elements with children, text, attributes and ids.
"use strict";
const fs = require("fs");
const [, , scriptPath, dataPath] = process.argv;
const ids = {};
function El(tag) {
  this.tagName = tag; this.children = []; this.attrs = {}; this._text = ""; this.parentNode = null;
  this.hidden = false;
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
// simple selectors only: a tag name or one class; anything else matches nothing
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
const window = { Plotly: { react: () => Promise.resolve(), purge: () => {} } };
document.getElementById("costledger-data").textContent = fs.readFileSync(dataPath, "utf8");
document.getElementById("costledger-options").textContent =
  JSON.stringify({ live: false, refresh_seconds: 5, data_url: "data.json" });
global.document = document; global.window = window;
new Function("document", "window", fs.readFileSync(scriptPath, "utf8"))(document, window);
function rows(id) {
  const t = ids[id]; if (!t) { return null; }
  const body = t.children.find((c) => c.tagName === "tbody");
  return body.children.map((tr) => tr.children.map((td) => td.textContent));
}
setTimeout(() => {
  const kpis = {};
  Object.keys(ids).filter((k) => k.startsWith("kpi-"))
    .forEach((k) => { kpis[k] = ids[k].textContent; });
  const rendered = document.body.attrs["data-rendered"] || null;
  process.stdout.write(JSON.stringify({ kpis, totals: rows("totals-table"), rendered }));
}, 50);
"""


def unknown(model: str = "acme-llm-9000") -> UsageEvent:
    return UsageEvent(model=model, usage=Usage(100, 10), cost=Cost.unknown(model), timestamp=JUNE)


def priced(total: str, currency: str = "USD", **fields: Any) -> UsageEvent:
    return UsageEvent(
        model="m",
        usage=fields.pop("usage", Usage(100, 10)),
        cost=Cost("priced", total=Decimal(total), currency=currency),
        timestamp=JUNE,
        **fields,
    )


def no_usage() -> UsageEvent:
    """A call that ran but reported no usage: nothing to price (stored as the tracker
    stores one)."""
    return UsageEvent(model="m", usage=Usage(0, 0), cost=Cost("not_priced"), timestamp=JUNE)


def failed_without_usage() -> UsageEvent:
    return UsageEvent(
        model="m", usage=Usage(0, 0), cost=Cost("not_priced"), timestamp=JUNE, status="error"
    )


def payload(tmp_path: Path, *events: UsageEvent) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(list(events))
    return build_dashboard(url, now=NOW).payload()


def totals(p: dict[str, Any]) -> dict[str, str | None]:
    return {t["currency"]: t["cost"] for t in p["totals"]}


def test_every_call_unpriced_is_unknown_not_zero(tmp_path: Path) -> None:
    p = payload(tmp_path, unknown(), unknown(), unknown())
    assert totals(p) == {"USD": None}
    assert p["totals"][0]["unpriced"] == 3


def test_unpriced_and_without_usage_is_unknown(tmp_path: Path) -> None:
    p = payload(tmp_path, unknown(), no_usage())
    assert totals(p) == {"USD": None}
    assert (p["totals"][0]["unpriced"], p["totals"][0]["no_usage"]) == (1, 1)
    (tmp_path / "alone").mkdir()
    assert totals(payload(tmp_path / "alone", no_usage())) == {"USD": None}


def test_known_amounts_stay(tmp_path: Path) -> None:
    # a call priced at exactly 0 beside an unpriced one: 0, known
    assert totals(payload(tmp_path, unknown(), priced("0"))) == {"USD": "0"}


def test_failed_calls_without_usage_cost_zero(tmp_path: Path) -> None:
    p = payload(tmp_path, failed_without_usage())
    assert totals(p) == {"USD": "0"}
    assert (p["totals"][0]["requests"], p["totals"][0]["errors"]) == (1, 1)


def test_one_currency_unknown_beside_a_priced_one(tmp_path: Path) -> None:
    # unknown-model calls carry no amount, in USD; the priced calls are in EUR: as in
    # `report`, the one currency holding amounts takes the calls without one
    p = payload(tmp_path, priced("1.25", "EUR"), priced("2", "EUR"), unknown())
    assert totals(p) == {"EUR": "3.25"}
    assert (p["totals"][0]["requests"], p["totals"][0]["unpriced"]) == (3, 1)


def test_known_cost_of_a_summary_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many([unknown(), priced("0.5", "EUR")])
        rows = {r.currency: r for r in ledger.summary()}
    assert known_cost(rows["USD"]) is None
    assert known_cost(rows["EUR"]) == Decimal("0.5")


def run_page(tmp_path: Path, p: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = tmp_path / "page.js"
    script.write_text(
        resources.files("costledger._dashboard").joinpath("page.js").read_text("utf-8")
    )
    shim = tmp_path / "shim.js"
    shim.write_text(SHIM)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(p))
    done = subprocess.run(
        [node, str(shim), str(script), str(data)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    assert out["rendered"] == "1"
    return out


def test_page_shows_unknown_not_zero(tmp_path: Path) -> None:
    shown = run_page(tmp_path, payload(tmp_path, unknown(), unknown(), unknown()))
    assert shown["kpis"]["kpi-cost-USD"] == "unknown"
    assert shown["kpis"]["kpi-unpriced"] == "3"
    assert [row[:3] for row in shown["totals"]] == [["USD", "-", "3"]]


def test_page_shows_known_amounts_as_before(tmp_path: Path) -> None:
    p = payload(tmp_path, priced("1.25", "EUR"), priced("0", "USD"), unknown())
    shown = run_page(tmp_path, p)
    assert shown["kpis"]["kpi-cost-EUR"] == "1.25 EUR"
    assert "kpi-cost-USD" not in shown["kpis"]  # a $0 call holds no amount: joins EUR
    assert [row[:3] for row in shown["totals"]] == [["EUR", "1.25", "3"]]
