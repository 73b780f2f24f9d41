"""``costledger prices list | show MODEL | diff FILE``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .._cost import money_text
from ._app import EXIT_BAD_INPUT, CliError
from ._options import Format, OutputFormat
from ._output import Col, emit, note

__all__ = ["app"]

app = typer.Typer(
    help="The prices costledger uses: list them, show one model's, compare a price book.",
    no_args_is_help=True,
)

_RATE_COLS = (
    Col("input", "input", "money"),
    Col("output", "output", "money"),
    Col("cache_read", "cache read", "money"),
    Col("cache_write", "cache write", "money"),
)


def _card_dict(card: Any) -> dict[str, Any]:
    from .._reports import effective_rates

    rates = effective_rates(card)
    out: dict[str, Any] = {
        "provider": card.provider,
        "model": card.model,
        "currency": card.currency,
        **{name: money_text(value) for name, value in rates.items()},
        "reasoning": None if card.reasoning is None else money_text(card.reasoning),
        "per_request": money_text(card.request),
        "tiers": [_tier_dict(tier) for tier in card.tiers],
        "max_input_tokens": card.max_input_tokens,
        "max_output_tokens": card.max_output_tokens,
        "source": card.source,
    }
    return out


def _tier_dict(tier: Any) -> dict[str, Any]:
    """A tier as a price book writes it: its own optional rates only where it has them
    (else they bill as their parent), so the printed card reads back as the same prices."""
    from .._pricing._book import PRICE_FIELDS

    out: dict[str, Any] = {"above": tier.above}
    for name in PRICE_FIELDS:
        value = getattr(tier, name)
        if value is not None:
            out[name] = money_text(value)
    return out


def _book(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise CliError(f"price book {str(path)!r} does not exist or is not a file")
    return path


PriceBookOption = Annotated[
    Path | None,
    typer.Option(
        "--price-book", "-p", help="Also a .toml / .json price book's models.", show_default=False
    ),
]


@app.command("list")
def list_(
    provider: Annotated[
        str | None,
        typer.Option("--provider", help="Only this provider's models.", show_default=False),
    ] = None,
    price_book: PriceBookOption = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Every model genai-prices prices (USD per million tokens), and a price book's."""
    from .._reports import list_prices

    cards = list_prices(provider=provider, price_book=_book(price_book))
    if not cards:
        raise CliError(f"no prices for provider {provider!r}", EXIT_BAD_INPUT)
    rows = [_card_dict(c) for c in cards]
    for r in rows:
        r["tier_count"] = len(r["tiers"])
    cols = [
        Col("provider", "provider"),
        Col("model", "model"),
        *_RATE_COLS,
        Col("tier_count", "tiers", "int"),
        Col("source", "source"),
    ]
    fields = ["provider", "model", "currency", "input", "output", "cache_read", "cache_write"]
    fields += ["cache_write_1h", "input_audio", "output_audio", "per_request", "tier_count"]
    emit(fmt, rows, cols, fields=[*fields, "source"], title="prices per million tokens")
    if fmt is OutputFormat.table:
        note(f"{len(rows)} models; LiteLLM's price map fills in others: 'costledger prices show'")


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="Model name as your calls report it.")],
    provider: Annotated[
        str | None, typer.Option("--provider", help="Provider, to narrow the match.")
    ] = None,
    price_book: PriceBookOption = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Prices at this time (ISO; default now).", show_default=False),
    ] = None,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            help="A price context entry KEY=VALUE, repeatable: the rates of a call served "
            "so (service_tier=priority, service_tier=flex, speed=fast, processing=batch).",
            show_default=False,
        ),
    ] = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """The rate card one model is priced with, and where it comes from."""
    from .._reports import parse_when, show_price

    moment = None
    if at is not None:
        try:
            moment = parse_when(at, "since", field="--at")
        except ValueError as exc:  # "--at: cannot read ...": click names the option itself
            message = str(exc).removeprefix("--at: ")
            raise typer.BadParameter(message, param_hint="'--at'") from None
    price_context: dict[str, str] = {}
    for entry in context or ():
        key, sep, value = entry.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(
                f"expected KEY=VALUE such as service_tier=priority, got {entry!r}",
                param_hint="'--context'",
            )
        price_context[key.strip()] = value.strip()
    card = show_price(
        model,
        provider=provider,
        price_book=_book(price_book),
        at=moment,
        price_context=price_context or None,
    )
    if card is None:
        raise CliError(
            f"no price for model {model!r}"
            + (f" at provider {provider!r}" if provider else "")
            + "; add it to a price book (docs/pricing.md)",
            EXIT_BAD_INPUT,
        )
    doc = _card_dict(card)
    if fmt is OutputFormat.json:
        emit(fmt, [doc], [], document=doc)
        return
    rows = [
        {"field": k, "value": v}
        for k, v in doc.items()
        if k != "tiers" and v is not None and not (k == "per_request" and v == "0")
    ]
    for tier in doc["tiers"]:
        rows.append(
            {
                "field": f"above {tier['above']:,} input tokens",
                "value": f"input {tier['input']}, output {tier['output']}, "
                f"cache read {tier['cache_read']}, cache write {tier['cache_write']}",
            }
        )
    emit(
        fmt,
        rows,
        (Col("field", "field"), Col("value", "value")),
        fields=["field", "value"],
        title=f"{card.model} ({card.currency} per million tokens)",
    )


_DIFF_COLS = (
    Col("model", "model"),
    Col("component", "component"),
    Col("default", "default", "money"),
    Col("default_currency", "currency"),
    Col("book", "book", "money"),
    Col("currency", "currency"),
    Col("change", "change", "money"),
    Col("change_share", "change %", "share"),
    Col("status", "status"),
)


@app.command("diff")
def diff(
    price_book: Annotated[Path, typer.Argument(help="A .toml or .json price book.")],
    changed_only: Annotated[
        bool, typer.Option("--changed-only", help="Leave out components that are the same.")
    ] = False,
    fmt: Format = OutputFormat.table,
) -> None:
    """A price book against the default prices, per model and component."""
    from .._reports import diff_prices

    book = _book(price_book)
    assert book is not None
    found = diff_prices(book)
    if not found:
        raise CliError(f"price book {str(book)!r} lists no models", EXIT_BAD_INPUT)
    rows = [d.as_dict() for d in found if not changed_only or d.status != "same"]
    fields = ["model", "provider", "variant", "component", "currency", "default_currency"]
    fields += ["default", "book", "change"]
    cols: tuple[Col, ...] = _DIFF_COLS
    if any(d.variant for d in found):
        cols = (cols[0], Col("variant", "variant"), *cols[1:])
    emit(
        fmt,
        rows,
        cols,
        fields=[*fields, "change_share", "status", "default_source"],
        title=f"{book} against the default prices (per million tokens)",
    )
