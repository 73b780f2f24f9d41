"""``costledger whatif`` and ``costledger reprice``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._cost import money_text
from ._app import EXIT_BAD_INPUT, CliError
from ._options import Format, OutputFormat, Selection, open_ledger, selecting
from ._output import Col, emit, note

if TYPE_CHECKING:
    from .._pricing import Pricer

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


@dataclass
class _Group:
    """The selected calls of one (requested model, response model, provider)."""

    model: str | None
    response_model: str | None
    provider: str | None
    at: datetime | None
    repriced: bool  # the what-if prices them again (not a cache hit, something to price)
    priced_by: str | None = None  # the book model that prices them again, if one does
    default_price: bool = False  # else: a default source prices them

    @property
    def name(self) -> str | None:
        return self.response_model or self.model


@dataclass
class _Coverage:
    """Which of the book's models price a selected call, and why the others do not."""

    typos: list[str]  # match no selected call by name
    unused: dict[str, str]  # match calls by name but price none of them: why
    priced: int  # book models that price some selected call


def _coverage(
    ledger: Any, pricer: Pricer, path: Path, models: list[str], api: dict[str, Any]
) -> _Coverage:
    """The book's models that price no selected call under the what-if's own ``pricer``:
    a book model counts only if re-pricing a selected call took its price from the book
    (``Cost.source``). A name that matches neither the requested nor the response model of
    any call (a typo, ``gpt4o``, or another provider's: matched as the pricer matches
    them, case, provider prefix, date suffix) is a typo; a name that matches calls the
    default data prices under a more specific name (the dated
    ``claude-sonnet-4-20250514`` its own entry prices) is said so."""
    from sqlalchemy import func, or_, select

    from .._ledger._query import _conditions
    from .._ledger._tables import events_table as t
    from .._pricing import Pricer
    from .._pricing._book import BOOK_SOURCE
    from .._reports._common import check_filters
    from .._reports._whatif import _quiet_unknown_models
    from .._reports._when import resolve_bounds
    from .._usage import Usage

    filters = {k: v for k, v in api.items() if k not in ("since", "until")}
    lo, hi = resolve_bounds(api.get("since"), api.get("until"))
    store = ledger._core.store
    kept = or_(t.c.pricing_status == "not_priced", t.c.cache_hit.is_(True))
    stmt = (
        select(
            t.c.model,
            t.c.response_model,
            t.c.provider,
            kept.label("kept"),
            func.max(t.c.timestamp, type_=t.c.timestamp.type),
        )
        .where(*_conditions(store.dialect, lo, hi, check_filters(filters)))
        .group_by(t.c.model, t.c.response_model, t.c.provider, kept)
    )
    with store.read_connection() as conn:
        rows = conn.execute(stmt).all()
    groups = [
        _Group(model, response_model, provider, at, not kept and bool(response_model or model))
        for model, response_model, provider, kept, at in rows
    ]
    nothing = Usage()
    with _quiet_unknown_models():
        for g in groups:
            if not g.repriced or g.name is None:
                continue
            try:  # as the what-if prices the call: its response model, its requested one
                cost = pricer.price(
                    g.name, nothing, provider=g.provider, at=g.at, requested_model=g.model
                )
            except (ValueError, TypeError):
                continue
            if cost.source is not None and cost.source.startswith(BOOK_SOURCE):
                g.priced_by = (cost.model or "").lower()
            else:
                g.default_price = cost.total is not None
    priced = {g.priced_by for g in groups if g.priced_by is not None}
    # matched by name as the pricer matches names, the book alone
    book_only = Pricer(overrides=path, genai_prices=False, litellm=False)
    # by book model: the calls whose priced (response) name it matches, and those only
    # whose requested name it matches (answered by another model)
    by_name: dict[str, dict[int, tuple[_Group, bool]]] = {}
    for g in groups:
        for name in dict.fromkeys((g.name, g.model)):
            if name:
                card = book_only.rate_card(name, provider=g.provider)
                if card is not None:
                    by_name.setdefault(card.model.lower(), {}).setdefault(
                        id(g), (g, name == g.name)
                    )
    typos: list[str] = []
    unused: dict[str, str] = {}
    for model in models:
        key = model.lower()
        if key in priced:
            continue
        if key not in by_name:
            typos.append(model)
        else:
            unused[model] = _why_unused(list(by_name[key].values()))
    return _Coverage(typos, unused, sum(1 for m in models if m.lower() in priced))


def _why_unused(matched: list[tuple[_Group, bool]]) -> str:
    """Why a book model whose name matches these calls (``True``: their response model,
    the one priced; ``False``: only the model they asked for) prices none of them."""
    repriced = [(g, own) for g, own in matched if g.repriced and g.name is not None]
    if not repriced:
        return "its calls keep their recorded cost (cache hits, or nothing to price)"
    reasons: list[str] = []
    for own in (True, False):
        outcomes: dict[str, set[str]] = {}
        for g, is_own in repriced:
            if is_own is own:
                outcome = (
                    "default"
                    if g.default_price
                    else f"book {g.priced_by}"
                    if g.priced_by is not None
                    else "none"
                )
                outcomes.setdefault(outcome, set()).add(str(g.name))
        order = {"default": 0, "none": 2}  # the book's other entries in between
        for outcome in sorted(outcomes, key=lambda o: (order.get(o, 1), o)):
            names = sorted(outcomes[outcome])
            many = len(names) > 1
            listed = ", ".join(repr(n) for n in names)
            if own:
                subject = f"the calls' model{'s' if many else ''} {listed}"
            else:
                subject = (
                    "the calls that asked for it were answered by "
                    f"{'other models' if many else 'another model'}, {listed}, which"
                )
            if outcome == "default" and own:
                what = (
                    "have their own default prices; add entries for them"
                    if many
                    else "has its own default price; add an entry for it"
                )
            elif outcome == "default":
                what = "are priced as themselves" if many else "is priced as itself"
            elif outcome == "none":
                what = "have no price" if many else "has no price"
            else:
                entry = outcome.removeprefix("book ")
                what = f"{'are' if many else 'is'} priced by the book's entry {entry!r}"
            reasons.append(f"{subject} {what}")
    return "; ".join(reasons)


def _coverage_notes(
    coverage: _Coverage, models: list[str], selected_models: list[str]
) -> list[str]:
    import difflib

    from .._pricing._names import strip_date_suffix

    # a dated snapshot's undated name too: a book entry for it prices the snapshots
    candidates = list(
        dict.fromkeys(
            n for m in selected_models for n in (m, strip_date_suffix(m)) if n is not None
        )
    )

    def named(model: str) -> str:
        others = [c for c in candidates if c.lower() != model.lower()]
        close = difflib.get_close_matches(model, others, n=1, cutoff=0.75)
        return f"{model!r} (did you mean {close[0]!r}?)" if close else repr(model)

    listed = ", ".join(named(m) for m in coverage.typos)
    if coverage.priced == 0 and len(coverage.typos) == len(models):
        return [
            f"warning: no model of the price book matches a selected call: {listed}; "
            "nothing is re-priced by the book (names are matched as recorded: see "
            "'costledger report --by model')"
        ]
    level = "warning" if coverage.priced == 0 else "note"
    lines = []
    if coverage.typos:
        lines.append(f"{level}: model(s) of the price book that match no selected call: {listed}")
    lines.extend(f"{level}: {m!r} priced no call: {why}" for m, why in coverage.unused.items())
    if lines and coverage.priced == 0:
        lines.append("warning: no selected call is re-priced by the book")
    return lines


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
    from .._pricing import Pricer
    from .._reports import whatif as compare

    book = _book(price_book)
    assert book is not None
    models = _book_models(book)
    # one pricer for the what-if and for telling which of the book's models priced a call
    pricer = Pricer(overrides=book, genai_prices=not only_book, litellm=not only_book)
    with open_ledger(selected.db) as ledger:
        result = compare(
            ledger,
            pricer,
            list_limit=1000 if fmt is not OutputFormat.table else _SHOWN_UNPRICED,
            **selected.api,
        )
        coverage = _coverage(ledger, pricer, book, models, selected.api) if result.rows else None
    rows = [r.as_dict() for r in result.rows]
    names = sorted({str(r["model"]) for r in rows if r["model"] is not None})
    # on stderr whatever the format: the data on stdout stays as it is
    coverage_notes = _coverage_notes(coverage, models, names) if coverage else []
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
        for text in coverage_notes:
            note(text)
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
    for text in coverage_notes:
        note(text)
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
