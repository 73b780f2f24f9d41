(function () {
  "use strict";

  // Money arrives as exact decimal strings. Tables and totals print them untouched;
  // traces get the same strings (Plotly reads numeric strings on a linear axis), so
  // what a chart holds is what the ledger holds.
  var CONFIG = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"]
  };
  var COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b",
    "#b279a2", "#ff9da6", "#9d755d", "#bab0ac", "#8c6d31"];
  var KIND_LABELS = {
    input_uncached: "input (uncached)",
    cache_read: "cached read",
    cache_write: "cache write",
    output_excl_reasoning: "output (excl. reasoning)",
    reasoning: "reasoning"
  };
  var NONE = { user: "(no user)", feature: "(no feature)", model: "(no model)" };
  var PDI = "\u2069";

  function $(id) { return document.getElementById(id); }

  function node(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") { e.textContent = attrs[k]; } else { e.setAttribute(k, attrs[k]); }
      });
    }
    (children || []).forEach(function (c) { if (c) { e.appendChild(c); } });
    return e;
  }

  // Ledger text joined into a sentence is isolated (FSI ... PDI): a name holding a bidi
  // override (U+202E) reverses itself only, never the text after it. A PDI of the name's
  // own that would close the isolate early is dropped (alone it does nothing), and an
  // isolate the name opens is closed before ours.
  function isolate(value) {
    var text = String(value), out = "", open = 0;
    for (var i = 0; i < text.length; i++) {
      var c = text.charAt(i);
      if (c === PDI) {
        if (open === 0) { continue; }
        open -= 1;
      } else if (c === "\u2066" || c === "\u2067" || c === "\u2068") {
        open += 1;
      }
      out += c;
    }
    return "\u2068" + out + new Array(open + 2).join(PDI);
  }

  // The page's own labels are in parentheses ("(no user)", "(3 others)"): a real name in
  // parentheses gets a pair of quotes more, so it never takes the place of one (a bar of
  // calls without a user and one of a user named "(no user)" stay two bars). Adding the
  // quotes keeps names apart: '"(x)"' is shown '""(x)""', never '"(x)"'.
  function named(value, none) {
    if (value === null || value === undefined) { return none; }
    var text = String(value);
    return /^"*\([\s\S]*\)"*$/.test(text) ? '"' + text + '"' : text;
  }

  // Plotly reads a little HTML in labels; names come from the ledger, so show them as text.
  function esc(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function label(value, none) { return esc(named(value, none)); }

  // "a (3), b (2)": each model isolated (see isolate)
  function modelCounts(models) {
    return models.map(function (m) {
      return (m.model === null ? NONE.model : isolate(named(m.model))) + " (" + m.calls + ")";
    }).join(", ");
  }

  function percent(share) {
    return share === null || share === undefined ? "n/a" : (Number(share) * 100).toFixed(2) + "%";
  }

  function layout(extra) {
    var base = {
      margin: { l: 60, r: 20, t: 40, b: 40 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { size: 12, color: "#1d2430" },
      legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom" },
      hoverlabel: { namelength: -1 },
      colorway: COLORS,
      uirevision: "keep" // a live redraw keeps the reader's zoom and hidden legend entries
    };
    Object.keys(extra).forEach(function (k) { base[k] = extra[k]; });
    return base;
  }

  function draw(id, traces, extra) {
    var div = $(id);
    var empty = traces.every(function (t) { return !t.y || t.y.length === 0; });
    var note = div.parentNode.querySelector(".empty[data-for='" + id + "']");
    if (note) { note.remove(); }
    if (empty) {
      div.parentNode.insertBefore(
        node("div", { "class": "empty", "data-for": id, text: "No calls in this selection." }), div);
    }
    return window.Plotly.react(div, traces, layout(extra), CONFIG);
  }

  function table(id, head, rows) {
    var t = $(id);
    t.textContent = "";
    var tr = node("tr");
    head.forEach(function (h) { tr.appendChild(node("th", { text: h[0], "class": h[1] || "" })); });
    t.appendChild(node("thead", null, [tr]));
    var body = node("tbody");
    rows.forEach(function (r) {
      var row = node("tr");
      r.forEach(function (cell, i) {
        var cls = head[i][1] || "";
        if (cell && typeof cell === "object") { cls += " " + cell.cls; cell = cell.text; }
        row.appendChild(node("td", { text: cell === null || cell === undefined ? "" : String(cell), "class": cls }));
      });
      body.appendChild(row);
    });
    t.appendChild(body);
  }

  function selection(d) {
    var parts = [];
    parts.push((d.since ? d.since : "the beginning") + " → " + (d.until ? d.until : "now"));
    Object.keys(d.filters).forEach(function (k) {
      parts.push(k + "=" + d.filters[k].map(isolate).join(","));
    });
    if (d.ledger) { parts.push("ledger " + isolate(d.ledger)); }
    $("selection").textContent = parts.join(" · ");
  }

  function warnings(d) {
    var box = $("warnings");
    box.textContent = "";
    if (d.unpriced.calls > 0) {
      var models = modelCounts(d.unpriced.models);
      box.appendChild(node("div", { "class": "warning", id: "unpriced-warning", role: "alert" }, [
        node("strong", { text: "⚠ " + d.unpriced.calls + " call" + (d.unpriced.calls === 1 ? "" : "s") +
          " without a price. " }),
        node("span", { text: "Their cost is unknown, not zero, and is not in these figures. Models: " +
          models + ". Add a price (a price book) and run costledger reprice." })
      ]));
    }
    if (d.no_usage && d.no_usage.calls > 0) {
      var nu = modelCounts(d.no_usage.models);
      box.appendChild(node("div", { "class": "warning", id: "no-usage-warning", role: "alert" }, [
        node("strong", { text: "⚠ " + d.no_usage.calls + " call" + (d.no_usage.calls === 1 ? "" : "s") +
          " reported no usage. " }),
        node("span", { text: "They ran but nothing could be priced: their cost is unknown, not zero, " +
          "and is not in these figures. Models: " + nu + "." })
      ]));
    }
    d.notes.forEach(function (n) { box.appendChild(node("div", { "class": "note", text: n })); });
  }

  function kpi(label_, value, cls, id) {
    return node("div", { "class": "kpi" }, [
      node("div", { "class": "label", text: label_ }),
      node("div", { "class": "value " + (cls || ""), text: value, id: id })
    ]);
  }

  function kpis(d) {
    var box = $("kpis");
    box.textContent = "";
    var req = 0, err = 0, unpriced = 0;
    d.totals.forEach(function (t) {
      // no call of the currency has a price (unknown model, or no usage): unknown, not 0
      var cost = t.cost === null ? "unknown" : t.cost + " " + t.currency;
      box.appendChild(kpi("Cost (" + isolate(t.currency) + ")", cost, t.cost === null ? "bad" : "", "kpi-cost-" + t.currency));
      req += t.requests; err += t.errors; unpriced += t.unpriced;
    });
    if (d.totals.length === 0) { box.appendChild(kpi("Cost (" + isolate(d.currency) + ")", "0 " + d.currency, "", "kpi-cost-" + d.currency)); }
    box.appendChild(kpi("Calls", String(req), "", "kpi-calls"));
    box.appendChild(kpi("Errors", String(err), err ? "bad" : "", "kpi-errors"));
    box.appendChild(kpi("Unpriced calls", String(unpriced), unpriced ? "bad" : "", "kpi-unpriced"));
    box.appendChild(kpi("Input tokens", String(d.tokens.input_tokens), "", "kpi-input"));
    box.appendChild(kpi("Output tokens", String(d.tokens.output_tokens), "", "kpi-output"));
    box.appendChild(kpi("Cached share of input", percent(d.tokens.cached_share), "", "kpi-cached"));
  }

  function daily(d) {
    var c = d.cost_by_day;
    var cur = esc(c.currency);
    var hover = "%{fullData.name}<br>%{x|%Y-%m-%d}: %{customdata} " + isolate(cur) + "<extra></extra>";
    var traces = c.series.map(function (s) {
      return { type: "bar", name: label(s.model, NONE.model), x: c.days, y: s.cost,
        customdata: s.cost, hovertemplate: hover };
    });
    if (c.other) {
      traces.push({ type: "bar", name: "(" + c.other.models + " other models)", x: c.days,
        y: c.other.cost, customdata: c.other.cost, hovertemplate: hover, marker: { color: "#bbbbbb" } });
    }
    // one bar a day wide, and at least a week on the axis, so ticks stay on whole days
    var DAY = 86400000;
    traces.forEach(function (t) { t.width = 0.8 * DAY; });
    var range;
    if (c.days.length) {
      var first = Date.parse(c.days[0]), last = Date.parse(c.days[c.days.length - 1]);
      var pad = Math.max(DAY, (7 * DAY - (last - first)) / 2);
      range = [new Date(first - pad).toISOString(), new Date(last + pad).toISOString()];
    }
    return draw("chart-daily", traces, {
      barmode: "stack",
      showlegend: true,
      xaxis: { type: "date", tickformat: "%b %d", range: range },
      yaxis: { type: "linear", title: { text: cur }, rangemode: "tozero" }
    });
  }

  function ranked(id, r) {
    var cur = esc(r.currency);
    var names = r.groups.map(function (g) { return label(g[r.key], NONE[r.key]); });
    var costs = r.groups.map(function (g) { return g.cost; });
    var text = r.groups.map(function (g, i) {
      // a group none of whose calls has a price: its cost is unknown, not 0
      var cost = g.unpriced + g.no_usage >= g.requests ? "unknown" : g.cost + " " + isolate(cur);
      var name = g[r.key] === null ? names[i] : isolate(names[i]);
      return name + ": " + cost + " · " + percent(g.share) + " · " + g.requests + " calls";
    });
    if (r.other) {
      names.push("(" + r.other.groups + " others)");
      costs.push(r.other.cost);
      text.push(names[names.length - 1] + ": " + r.other.cost + " " + isolate(cur) + " · " +
        percent(r.other.share) + " · " + r.other.requests + " calls");
    }
    // most expensive at the top
    names.reverse(); costs.reverse(); text.reverse();
    return draw(id, [{ type: "bar", orientation: "h", x: costs, y: names, customdata: text,
      hovertemplate: "%{customdata}<extra></extra>", marker: { color: "#4c78a8" } }], {
      xaxis: { type: "linear", title: { text: cur }, rangemode: "tozero" },
      yaxis: { type: "category", automargin: true },
      margin: { l: 10, r: 20, t: 10, b: 40 },
      showlegend: false
    });
  }

  function tokens(d) {
    var t = d.tokens;
    var models = t.models.map(function (m) { return label(m, NONE.model); });
    if (t.other) { models.push("(" + t.other.models + " other models)"); }
    var traces = t.kinds.map(function (kind) {
      var y = t.by_kind[kind].slice();
      if (t.other) { y.push(t.other[kind]); }
      return { type: "bar", name: KIND_LABELS[kind], x: models, y: y, meta: kind,
        hovertemplate: "%{x}<br>" + KIND_LABELS[kind] + ": %{y:,d}<extra></extra>" };
    });
    $("cached-share").textContent = "· cached share of input: " + percent(t.cached_share);
    return draw("chart-tokens", traces, {
      barmode: "stack",
      showlegend: true,
      xaxis: { type: "category", automargin: true },
      yaxis: { type: "linear", title: { text: "tokens" }, rangemode: "tozero" }
    });
  }

  function burns(d) {
    var box = $("burns");
    var budgets = d.burn.some(function (b) { return b.limit !== null; });
    $("burn-title").textContent = budgets ? "Budget burn-down, forecast to the period's end"
      : "Spend this month, forecast to the month's end";
    var divs = box.querySelectorAll(".burn-block");
    for (var i = d.burn.length; i < divs.length; i++) { window.Plotly.purge(divs[i].querySelector(".burn")); divs[i].remove(); }
    var done = [];
    d.burn.forEach(function (b, i) {
      var id = "chart-burn-" + i;
      var block = box.querySelectorAll(".burn-block")[i];
      if (!block) {
        block = node("div", { "class": "burn-block" }, [node("h3", { "class": "muted" }),
          node("div", { id: id, "class": "burn" })]);
        box.appendChild(block);
      }
      var remaining = b.limit !== null;
      var field = remaining ? "remaining" : "spent";
      var x = b.points.map(function (p) { return p.at; });
      var y = b.points.map(function (p) { return p[field]; });
      var unit = esc(b.unit);
      var traces = [{ type: "scatter", mode: "lines+markers", name: remaining ? "remaining" : "spent",
        x: x, y: y, customdata: y, line: { shape: "linear", color: "#4c78a8" },
        hovertemplate: "%{x|%Y-%m-%d %H:%M}: %{customdata} " + isolate(unit) + "<extra></extra>" }];
      var headline = burnTitle(b) + ": spent " + b.spent + " " + isolate(b.unit);
      if (b.limit !== null) { headline += " of " + b.limit + " " + isolate(b.unit); }
      if (b.forecast !== null && b.end !== null) {
        var fy = remaining ? b.forecast_remaining : b.forecast;
        traces.push({ type: "scatter", mode: "lines", name: "forecast", x: [b.now, b.end],
          y: [y[y.length - 1], fy], customdata: [y[y.length - 1], fy],
          line: { dash: "dash", color: b.over ? "#c0392b" : "#888888" },
          hovertemplate: "%{x|%Y-%m-%d %H:%M}: %{customdata} " + isolate(unit) + "<extra>forecast</extra>" });
        headline += " · forecast by " + b.end.slice(0, 10) + ": " + b.forecast + " " + isolate(b.unit) +
          (b.over ? " (over the limit)" : "");
      }
      block.querySelector("h3").textContent = headline;
      var shapes = [];
      if (remaining) {
        shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: 0, y1: 0,
          line: { color: "#c0392b", width: 1 } });
      }
      done.push(window.Plotly.react($(id), traces, layout({
        xaxis: { type: "date", range: [b.start, b.end || b.now] },
        yaxis: { type: "linear", title: { text: unit } },
        shapes: shapes,
        margin: { l: 60, r: 20, t: 10, b: 30 },
        showlegend: false
      }), CONFIG));
    });
    return Promise.all(done);
  }

  // the burn's title from its parts, the budget's name and key isolated (see isolate)
  function burnTitle(b) {
    if (b.budget === null) { return b.title; }
    if (b.per === null) { return isolate(b.budget); }
    return isolate(b.budget) + " · " + (b.key === null ? "no " + b.per : b.per + " " + isolate(b.key));
  }

  function budgetTable(d) {
    $("budgets-card").hidden = d.budgets.length === 0;
    table("budgets-table", [["budget"], ["key"], ["period"], ["limit", "num"], ["spent", "num"],
      ["reserved", "num"], ["remaining", "num"], ["used", "num"], ["resets", ""], ["hard", ""]],
      d.budgets.map(function (s) {
        var used = s.used === null ? null : Number(s.used);
        return [s.budget, s.per === null ? "(all)" : s.per + " " + (s.key === null ? "(none)" : s.key),
          s.period, s.limit + " " + s.unit, s.spent, s.reserved, s.remaining,
          { text: percent(s.used), cls: used !== null && used >= 1 ? "bad" : "" },
          s.resets_at || "", s.hard ? "hard" : "soft"];
      }));
  }

  function totalsTable(d) {
    table("totals-table", [["currency"], ["cost", "num"], ["calls", "num"], ["errors", "num"],
      ["cancelled", "num"], ["unpriced", "num"], ["no usage", "num"], ["input tokens", "num"],
      ["cached read", "num"], ["cache write", "num"], ["output tokens", "num"], ["reasoning", "num"]],
      d.totals.map(function (t) {
        return [t.currency, t.cost === null ? "-" : t.cost, t.requests, t.errors, t.cancelled,
          { text: String(t.unpriced), cls: t.unpriced ? "bad" : "" },
          { text: String(t.no_usage), cls: t.no_usage ? "bad" : "" }, t.input_tokens,
          t.cache_read_tokens, t.cache_write_tokens, t.output_tokens, t.reasoning_tokens];
      }));
  }

  function topTable(d) {
    table("top-table", [["time (UTC)"], ["model"], ["provider"], ["user"], ["feature"],
      ["status"], ["input", "num"], ["cached", "num"], ["output", "num"], ["cost", "num"], ["id"]],
      d.top_calls.map(function (c) {
        return [c.timestamp.replace("T", " ").replace("Z", "").slice(0, 19), c.model, c.provider,
          c.user, c.feature, { text: c.status, cls: c.status === "ok" ? "ok" : "bad" },
          c.input_tokens, c.cache_read_tokens, c.output_tokens,
          c.cost === null ? "unpriced" : c.cost + " " + c.currency, c.id];
      }));
  }

  var state = { data: null, renders: 0, options: {}, error: null };

  function render(d) {
    state.data = d;
    document.querySelectorAll("[data-unit]").forEach(function (e) { e.textContent = "· " + d.currency; });
    selection(d);
    warnings(d);
    kpis(d);
    budgetTable(d);
    totalsTable(d);
    topTable(d);
    return Promise.all([daily(d), ranked("chart-users", d.cost_by_user),
      ranked("chart-features", d.cost_by_feature), tokens(d), burns(d)]).then(function () {
      state.renders += 1;
      document.body.setAttribute("data-rendered", String(state.renders));
      var when = d.generated_at.replace("T", " ").replace("Z", " UTC").slice(0, 23);
      var status = $("status");
      if (state.options.live) {
        status.className = "live";
        status.textContent = "live · data of " + when + " · refreshes every " + state.options.refresh_seconds + " s";
      } else {
        status.textContent = "generated " + when;
      }
    });
  }

  function poll() {
    var o = state.options;
    fetch(o.data_url, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) {
          // the server's answer says why (the ledger's error), when it is JSON
          return r.json().catch(function () { return {}; }).then(function (body) {
            throw new Error("HTTP " + r.status + (body && body.error ? ": " + body.error : ""));
          });
        }
        return r.json();
      })
      .then(function (d) { state.error = null; return render(d); })
      .catch(function (e) {
        state.error = e && e.message ? e.message : String(e);
        var status = $("status");
        status.className = "stale";
        status.textContent = (state.data === null ? "no data yet" : "showing the last data") +
          ": the server could not answer (" + state.error + "); retrying every " +
          o.refresh_seconds + " s";
      })
      .then(function () { window.setTimeout(poll, o.refresh_seconds * 1000); });
  }

  function start() {
    state.options = JSON.parse($("costledger-options").textContent);
    var first = JSON.parse($("costledger-data").textContent);
    if (first === null) { // served while the ledger could not be read: ask for the data now
      $("status").textContent = "loading the data";
      poll();
      return;
    }
    render(first).then(function () {
      if (state.options.live) { window.setTimeout(poll, state.options.refresh_seconds * 1000); }
    });
  }

  window.costledger = state;
  state.render = render;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
