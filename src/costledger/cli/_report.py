"""``costledger report`` and ``costledger top``."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer

from .._cost import money_text
from ._app import EXIT_BAD_INPUT, CliError
from ._options import Format, OutputFormat, Selection, open_ledger, selecting
from ._output import Col, emit, note

__all__ = ["event_dict", "report", "top"]

_FIGURES = (
    Col("requests", "requests", "int"),
    Col("errors", "errors", "int"),
    Col("input_tokens", "input", "int"),
    Col("cache_read_tokens", "cached", "int"),
    Col("cache_write_tokens", "cache write", "int"),
    Col("output_tokens", "output", "int"),
    Col("reasoning_tokens", "reasoning", "int"),
)


def _currency_option() -> Any:
    return typer.Option(
        "--currency",
        help="Convert every cost into this currency (e.g. EUR), exactly, at the --rate "
        "given for each other currency in the selection.",
        show_default=False,
    )


def _rate_option() -> Any:
    return typer.Option(
        "--rate",
        help="An exchange rate for --currency: CODE=RATE, units of --currency per unit of "
        "CODE (--rate USD=0.9213). Repeat for each currency.",
        show_default=False,
    )


def _check_by(value: str) -> str:
    from .._reports import parse_by

    try:
        parse_by(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@selecting
def report(
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Group by any of day, week, month, model, provider, user, team, project, "
            "feature, tag, source, status (comma-separated). Empty: totals only.",
            callback=_check_by,
        ),
    ] = "",
    sort: Annotated[
        str,
        typer.Option(
            "--sort",
            help="auto (by time when grouping by day/week/month, else by cost), key or cost.",
        ),
    ] = "auto",
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Show only the first N groups.", show_default=False),
    ] = None,
    currency: Annotated[str | None, _currency_option()] = None,
    rate: Annotated[list[str] | None, _rate_option()] = None,
    *,
    selected: Selection,
    fmt: Format = OutputFormat.table,
) -> None:
    """Requests, errors, tokens by kind, exact cost and share of total per group, with totals."""
    from .._reports import report as build

    if sort not in ("auto", "key", "cost"):
        raise typer.BadParameter(f"use auto, key or cost, not {sort!r}", param_hint="'--sort'")
    rates = _parse_rates(rate or [])
    if rates and currency is None:
        raise typer.BadParameter("--rate converts into --currency: give --currency too")
    target = _parse_currency(currency)
    with open_ledger(selected.db) as ledger:
        result = build(
            ledger,
            by,
            sort=sort,  # type: ignore[arg-type]
            limit=limit,
            currency=target,
            rates=rates,
            **selected.api,
        )
    rows = result.as_dicts()
    if not rows:
        if fmt is not OutputFormat.table:  # still a valid (empty) document for a pipe
            emit(fmt, [], [], fields=_fields(result.by))
        raise CliError(f"no calls match ({selected.describe()})", EXIT_BAD_INPUT)
    currencies = {r["currency"] for r in rows}
    cols = [Col(name, name) for name in result.by]
    if currencies != {"USD"}:
        cols.append(Col("currency", "currency"))
    cols.extend(_FIGURES)
    if any(r["unpriced"] for r in rows):
        cols.append(Col("unpriced", "unpriced", "int"))
    if any(r["no_usage"] for r in rows):
        cols.append(Col("no_usage", "no usage", "int"))
    cols += [Col("cost", "cost", "money"), Col("share", "share", "share")]
    footer: list[dict[str, Any]] = []
    for total in result.totals:
        line = total.as_dict()
        first = result.by[0] if result.by else None
        if first is not None:
            line[first] = "total" if len(result.totals) == 1 else f"total {total.currency}"
        footer.append(line)
    if fmt is OutputFormat.table:
        for r in (*rows, *footer):  # the totals too (the only row without --by)
            if r["unpriced"] + r["no_usage"] >= r["requests"]:
                # no call of the group has a price (unknown model, or no usage reported):
                # no amount, not 0 (a group of calls priced at exactly 0 beside an unpriced
                # one keeps its 0.00, as does one of failed calls that reported no usage)
                r["cost"] = None
    if result.rates:
        rates_text = ";".join(f"{code}={money_text(r)}" for code, r in result.rates.items())
        for line in (*rows, *footer):
            line["exchange_rates"] = rates_text
    if not result.by:
        rows, footer = footer, []
    fields = _fields(result.by) + (["exchange_rates"] if result.rates else [])
    emit(fmt, rows, cols, footer=footer, fields=fields, group=result.by)
    if fmt is OutputFormat.table:
        for code, value in result.rates.items():
            note(f"converted at 1 {code} = {money_text(value)} {_currency_of(result)} (--rate)")
        if result.truncated:
            note(f"{result.truncated:,} more group(s) not shown (--limit); totals include them")
        unpriced = sum(t.unpriced for t in result.totals)
        if unpriced:
            note(
                f"warning: {unpriced:,} call(s) have no price (unknown model); their cost is "
                "not included (not $0). Add a price and run 'costledger reprice'."
            )
        no_usage = sum(t.no_usage for t in result.totals)
        if no_usage:
            note(
                f"warning: {no_usage:,} call(s) reported no usage (they did not fail, but "
                "there was nothing to price); their cost is unknown and not included (not $0)."
            )


def _parse_rates(given: list[str]) -> dict[str, str]:
    """``--rate CODE=RATE`` options, each checked as the API checks it (a usage error
    naming the currency and the value: a rate that is not a number, not above 0, out of
    range or with too many digits)."""
    from .._reports._report import check_rate

    rates: dict[str, str] = {}
    for item in given:
        code, sep, value = item.partition("=")
        if not sep or not code.strip() or not value.strip():
            raise typer.BadParameter(
                f"use CODE=RATE (USD=0.9213), not {item!r}", param_hint="'--rate'"
            )
        code = code.strip().upper()
        if code in rates:
            raise typer.BadParameter(f"{code} is given twice", param_hint="'--rate'")
        try:
            check_rate(code, value.strip())
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--rate'") from None
        rates[code] = value.strip()
    return rates


def _parse_currency(given: str | None) -> str | None:
    from .._reports._report import _currency_code

    if given is None:
        return None
    try:
        return _currency_code(given.strip().upper(), "currency")
    except ValueError:
        raise typer.BadParameter(
            f"use a three-letter currency code like EUR, not {given!r}",
            param_hint="'--currency'",
        ) from None


def _currency_of(result: Any) -> str:
    return str(result.totals[0].currency) if result.totals else ""


def _fields(by: tuple[str, ...]) -> list[str]:
    return [
        *by,
        "currency",
        "requests",
        "errors",
        "cancelled",
        "unpriced",
        "no_usage",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost",
        "share",
    ]


def event_dict(e: Any) -> dict[str, Any]:
    """A stored event as JSON-ready fields (money as decimal strings, times in ISO form)."""
    from .._ledger._rows import COLUMNS

    out: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(e, name)
        if name in ("metadata", "price_context"):
            value = dict(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = money_text(value)
        out[name] = value
    return out


TOP_MAX = 1_000_000
"""The largest ``top N`` (more calls than that is an export, not a ranking)."""

_TOP_COLS = (
    Col("timestamp", "time (UTC)"),
    Col("model", "model"),
    Col("provider", "provider"),
    Col("user", "user"),
    Col("team", "team"),
    Col("feature", "feature"),
    Col("input_tokens", "input", "int"),
    Col("cache_read_tokens", "cached", "int"),
    Col("output_tokens", "output", "int"),
    Col("total_cost", "cost", "money"),
    Col("id", "id"),
)


@selecting
def top(
    n: Annotated[
        int, typer.Argument(min=1, max=TOP_MAX, help="How many calls (at most 1,000,000).")
    ] = 10,
    currency: Annotated[str | None, _currency_option()] = None,
    rate: Annotated[list[str] | None, _rate_option()] = None,
    *,
    selected: Selection,
    fmt: Format = OutputFormat.table,
) -> None:
    """The N most expensive calls (exact order), most expensive first.

    Costs in different currencies are never compared: each currency gets its own top N,
    unless --currency (with a --rate for each other currency) converts them into one.
    """
    from .._ledger._rows import COLUMNS
    from .._reports import top as find
    from .._reports._common import exact_text
    from .._reports._report import calls_rates, converted_cost

    rates = _parse_rates(rate or [])
    if rates and currency is None:
        raise typer.BadParameter("--rate converts into --currency: give --currency too")
    target = _parse_currency(currency)
    with open_ledger(selected.db) as ledger:
        found = find(ledger, n, currency=target, rates=rates, **selected.api)
    rows = [event_dict(e) for e in found]
    fields = [*COLUMNS, *([] if target is None else ["converted_cost", "converted_currency"])]
    if not rows:
        if fmt is not OutputFormat.table:
            emit(fmt, [], _TOP_COLS, fields=fields)
        raise CliError(f"no priced calls match ({selected.describe()})", EXIT_BAD_INPUT)
    used = {} if target is None else calls_rates(target, rates, found)
    if target is not None:
        for r, e in zip(rows, found, strict=True):
            r["converted_cost"] = exact_text(converted_cost(e, used))
            r["converted_currency"] = target
    if fmt is not OutputFormat.table:
        emit(fmt, rows, _TOP_COLS, fields=fields)
        return
    for r, e in zip(rows, found, strict=True):
        r["model"] = e.model_key
        r["timestamp"] = e.timestamp.strftime("%Y-%m-%d %H:%M:%S")
    currencies = list(dict.fromkeys(e.currency for e in found))
    cols = list(_TOP_COLS)
    if target is not None:
        # one ranking, by the converted cost; each call's own cost and currency beside it
        if currencies != [target]:
            cols.insert(-1, Col("currency", "currency"))
            cols.insert(-1, Col("converted_cost", f"cost in {target}", "money"))
        emit(fmt, rows, cols, title=f"top {len(rows)} calls by cost in {target}")
        for code, value in used.items():
            note(f"converted at 1 {code} = {money_text(value)} {target} (--rate)")
        return
    if len(currencies) == 1:
        if currencies != ["USD"]:
            cols.insert(-1, Col("currency", "currency"))
        emit(fmt, rows, cols, title=f"top {len(rows)} calls by cost")
        return
    # several currencies, never compared: one ranking (and table) per currency
    cols.insert(-1, Col("currency", "currency"))
    for code in currencies:
        mine = [r for r in rows if r["currency"] == code]
        emit(fmt, mine, cols, title=f"top {len(mine)} calls by cost in {code}")
    note(
        f"calls priced in {', '.join(currencies)} are ranked per currency (amounts in two "
        "currencies are never compared); --currency with a --rate for each ranks them "
        "together"
    )
