"""``costledger whatif`` and ``costledger reprice``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .._cost import money_text
from ._app import EXIT_BAD_INPUT, CliError
from ._options import Format, OutputFormat, Selection, open_ledger, selecting
from ._output import Col, emit, note

__all__ = ["reprice", "whatif"]

_SHOWN_UNPRICED = 20


def _book(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise CliError(f"price book {str(path)!r} does not exist or is not a file")
    return path


def _book_models(path: Path) -> list[str]:
    """The models ``path`` lists (as written); an empty book is refused, as ``prices diff``
    refuses it: re-pricing under it would change nothing and say so nowhere."""
    from .._pricing._book import load_price_book_entries

    models = [entry.card.model for entry in load_price_book_entries(path).values()]
    if not models:
        raise CliError(f"price book {str(path)!r} lists no models", EXIT_BAD_INPUT)
    return models


def _unmatched(ledger: Any, path: Path, models: list[str], api: dict[str, Any]) -> list[str]:
    """The book's models that price no selected call: a name that matches neither the
    requested nor the response model of any call (a typo, ``gpt4o``, or another
    provider's), matched as the pricer matches them (case, provider prefix, date suffix)."""
    from sqlalchemy import select

    from .._ledger._query import _conditions
    from .._ledger._tables import events_table as t
    from .._pricing import Pricer
    from .._reports._common import check_filters
    from .._reports._when import resolve_bounds

    filters = {k: v for k, v in api.items() if k not in ("since", "until")}
    lo, hi = resolve_bounds(api.get("since"), api.get("until"))
    store = ledger._core.store
    stmt = (
        select(t.c.model, t.c.response_model, t.c.provider)
        .where(*_conditions(store.dialect, lo, hi, check_filters(filters)))
        .distinct()
    )
    with store.read_connection() as conn:
        names = conn.execute(stmt).all()
    book_only = Pricer(overrides=path, genai_prices=False, litellm=False)
    matched: set[str] = set()
    for model, response_model, provider in names:
        for name in (model, response_model):
            if name:
                card = book_only.rate_card(name, provider=provider)
                if card is not None:
                    matched.add(card.model.lower())
    return [m for m in models if m.lower() not in matched]


def _unmatched_note(unmatched: list[str], models: list[str], selected_models: list[str]) -> str:
    import difflib

    def named(model: str) -> str:
        close = difflib.get_close_matches(model, selected_models, n=1, cutoff=0.75)
        return f"{model!r} (did you mean {close[0]!r}?)" if close else repr(model)

    listed = ", ".join(named(m) for m in unmatched)
    if len(unmatched) == len(models):
        return (
            f"warning: no model of the price book matches a selected call: {listed}; "
            "nothing is re-priced by the book (names are matched as recorded: see "
            "'costledger report --by model')"
        )
    return f"note: model(s) of the price book that match no selected call: {listed}"


_WHATIF_COLS = (
    Col("model", "model"),
    Col("requests", "requests", "int"),
    Col("cost_then", "cost then", "money"),
    Col("cost_book", "under the book", "money"),
    Col("savings", "savings", "money"),
    Col("savings_share", "savings %", "share"),
    Col("unpriced_then", "unpriced then", "int"),
    Col("unpriced_book", "unpriced in book", "int"),
)


@selecting
def whatif(
    price_book: Annotated[
        Path,
        typer.Option(
            "--price-book",
            "-p",
            help="A .toml or .json price book, as for Pricer(overrides=...).",
            show_default=False,
        ),
    ],
    only_book: Annotated[
        bool,
        typer.Option(
            "--only-book",
            help="Price with the book alone (models it does not list count as unpriced), "
            "instead of the book laid over the default prices.",
        ),
    ] = False,
    *,
    selected: Selection,
    fmt: Format = OutputFormat.table,
) -> None:
    """Re-price the selected calls under a price book: cost then, under the book, savings."""
    from .._reports import whatif as compare

    book = _book(price_book)
    assert book is not None
    models = _book_models(book)
    with open_ledger(selected.db) as ledger:
        result = compare(
            ledger,
            book,
            only_book=only_book,
            list_limit=1000 if fmt is not OutputFormat.table else _SHOWN_UNPRICED,
            **selected.api,
        )
        unmatched = _unmatched(ledger, book, models, selected.api) if result.rows else []
    rows = [r.as_dict() for r in result.rows]
    names = sorted({str(r["model"]) for r in rows if r["model"] is not None})
    # on stderr whatever the format: the data on stdout stays as it is
    unmatched_note = _unmatched_note(unmatched, models, names) if unmatched else None
    if not rows:
        if fmt is OutputFormat.json:
            emit(fmt, [], [], document=result.as_dict())
        elif fmt is OutputFormat.csv:
            emit(fmt, [], [], fields=_WHATIF_FIELDS)
        raise CliError(f"no calls match ({selected.describe()})", EXIT_BAD_INPUT)
    if fmt is not OutputFormat.table:
        if fmt is OutputFormat.json:
            emit(fmt, rows, _WHATIF_COLS, document=result.as_dict())
        else:
            emit(fmt, rows, _WHATIF_COLS, fields=_WHATIF_FIELDS)
        if unmatched_note:
            note(unmatched_note)
        return
    cols = list(_WHATIF_COLS)
    if len({r["currency"] for r in rows}) > 1 or rows[0]["currency"] != "USD":
        cols.insert(1, Col("currency", "currency"))
    footer = []
    for t in result.totals:
        line = t.as_dict()
        line["model"] = "total" if len(result.totals) == 1 else f"total {t.currency}"
        footer.append(line)
    for r in (*rows, *footer):
        # A group (or total) none of whose calls has an amount shows none, not 0: then, when
        # every call was unpriced; under the book, when the book prices none of them in the
        # row's currency (unpriced, or in another currency: never added to this one).
        # Calls priced at exactly 0 keep their 0.00.
        # Calls that reported no usage have no amount either way.
        if r["unpriced_then"] + r["no_usage"] >= r["requests"]:
            r["cost_then"] = None
        if r["unpriced_book"] + r["other_currency"] + r["no_usage"] >= r["requests"]:
            r["cost_book"] = None
        if not r["compared"]:
            r["savings"] = None
    other_currency = sum(t.other_currency for t in result.totals)
    if other_currency:
        cols.append(Col("other_currency", "book in other currency", "int"))
    no_usage = sum(t.no_usage for t in result.totals)
    if no_usage:
        cols.append(Col("no_usage", "no usage", "int"))
    emit(fmt, rows, cols, footer=footer, title=f"what if: {book}")
    note(
        "savings = cost then - cost under the book, over the calls priced both ways "
        "(positive: the book is cheaper)"
    )
    if unmatched_note:
        note(unmatched_note)
    if other_currency:
        note(
            f"{other_currency:,} call(s) are priced by the book in another currency than "
            "they were priced in: not in 'under the book' nor in the savings (amounts in "
            "two currencies are never added or subtracted)"
        )
    if no_usage:
        note(
            f"{no_usage:,} call(s) reported no usage (they did not fail, but there was "
            "nothing to price): in neither cost, their cost is unknown (not $0)"
        )
    if result.unpriced_count:
        shown = [u.as_dict() for u in result.unpriced]
        for u, call in zip(shown, result.unpriced, strict=True):
            u["timestamp"] = call.timestamp.strftime("%Y-%m-%d %H:%M:%S")
            u["then"] = "priced" if u["priced_then"] else "no price"
            u["book"] = "priced" if u["priced_book"] else "no price"
        emit(
            fmt,
            shown,
            (
                Col("timestamp", "time (UTC)"),
                Col("model", "model"),
                Col("provider", "provider"),
                Col("then", "then"),
                Col("book", "under the book"),
                Col("id", "id"),
            ),
            title=f"unpriced calls ({result.unpriced_count})",
        )
        if result.unpriced_count > len(shown):
            note(f"... and {result.unpriced_count - len(shown)} more (--format json lists 1000)")


_WHATIF_FIELDS = [
    "model",
    "currency",
    "requests",
    "cost_then",
    "cost_book",
    "compared",
    "savings",
    "savings_share",
    "unpriced_then",
    "unpriced_book",
    "other_currency",
    "no_usage",
]


@selecting
def reprice(
    price_book: Annotated[
        Path | None,
        typer.Option(
            "--price-book",
            "-p",
            help="A price book laid over the default prices (default: the default prices).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be priced; write nothing.")
    ] = False,
    *,
    selected: Selection,
    fmt: Format = OutputFormat.table,
) -> None:
    """Price the stored calls of unknown models that now have a price."""
    from .._reports import reprice as fill

    book = _book(price_book)
    with open_ledger(selected.db) as ledger:
        result = fill(ledger, book, dry_run=dry_run, **selected.api)
    if result.examined == 0:
        if fmt is not OutputFormat.table:
            emit(fmt, [], [], document=result.as_dict(), fields=_REPRICE_FIELDS)
        raise CliError(f"no unpriced calls to re-price ({selected.describe()})", EXIT_BAD_INPUT)
    rows: list[dict[str, Any]] = [
        {"model": m, "repriced": a, "still_unknown": b} for m, (a, b) in result.by_model.items()
    ]
    emit(
        fmt,
        rows,
        (
            Col("model", "model"),
            Col("repriced", "priced now", "int"),
            Col("still_unknown", "still unknown", "int"),
        ),
        footer=[
            {
                "model": "total",
                "repriced": result.repriced,
                "still_unknown": result.still_unknown,
            }
        ],
        document=result.as_dict(),
        fields=_REPRICE_FIELDS,
        title="re-priced (dry run: nothing written)" if dry_run else "re-priced",
    )
    if fmt is OutputFormat.table:
        for currency, amount in result.added.items():
            verb = "would add" if dry_run else "added"
            note(f"{verb} {money_text(amount)} {currency} to the ledger's total")
    if result.repriced == 0:
        raise CliError(
            f"nothing to re-price: none of the {result.examined} unpriced call(s) has a price yet",
            EXIT_BAD_INPUT,
        )


_REPRICE_FIELDS = ["model", "repriced", "still_unknown"]
