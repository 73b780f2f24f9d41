"""Price books express what the default sources do: long-context ``tiers``, price
``variants`` selected by the call's price context (service tier, speed, batch), a
``reasoning`` rate and a ``per_request`` fee; a card that ``prices show -f json`` prints
reads back as the same prices."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import Ledger, PriceBookError, Pricer, Tracker, Usage, whatif
from costledger._pricing._book import load_price_book

UTC = timezone.utc
AT = datetime(2026, 12, 1, tzinfo=UTC)

# A negotiated gpt-5 deal: $1 / $8, cache reads $0.10; flex and batch half, priority 2x
# (a priority cache read is not listed: it stays at the entry's $0.10).
DEAL: dict[str, Any] = {
    "gpt-5": {
        "input": "1",
        "output": "8",
        "cache_read": "0.1",
        "variants": [
            {"when": {"service_tier": "flex"}, "input": "0.5", "output": "4", "cache_read": "0.05"},
            {"when": {"processing": "batch"}, "input": "0.5", "output": "4", "cache_read": "0.05"},
            {"when": {"service_tier": "priority"}, "input": "2", "output": "16"},
        ],
    }
}
USAGE = Usage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000)


@pytest.mark.parametrize(
    ("context", "total", "source"),
    [
        # 6,000 x 1 + 4,000 x 0.1 + 2,000 x 8, per million
        (None, "0.0224", "override: mapping"),
        ({"service_tier": "default"}, "0.0224", "override: mapping"),  # no variant: standard
        ({"service_tier": "flex"}, "0.0112", "override: mapping [service_tier=flex]"),
        ({"processing": "batch"}, "0.0112", "override: mapping [processing=batch]"),
        # 6,000 x 2 + 4,000 x 0.1 (not changed) + 2,000 x 16
        ({"service_tier": "priority"}, "0.0444", "override: mapping [service_tier=priority]"),
        # other entries in the context do not stop a match, nor reach the source
        (
            {"service_tier": "flex", "region": "eu"},
            "0.0112",
            "override: mapping [service_tier=flex]",
        ),
    ],
)
def test_a_book_variant_is_selected_by_the_calls_context(
    context: dict[str, str] | None, total: str, source: str
) -> None:
    cost = Pricer(overrides=DEAL).price("gpt-5", USAGE, at=AT, price_context=context)
    assert cost.total == Decimal(total)
    assert cost.source == source
    assert cost.status == "priced"


def test_each_price_comes_from_the_first_matching_variant_that_sets_it() -> None:
    book = {
        "m": {
            "input": "10",
            "output": "20",
            "variants": [
                {"when": {"processing": "batch"}, "input": "5"},
                {"when": {"service_tier": "flex"}, "input": "1", "output": "2"},
            ],
        }
    }
    both = {"processing": "batch", "service_tier": "flex"}
    cost = Pricer(overrides=book, genai_prices=False, litellm=False).price(
        "m", Usage(input_tokens=1_000_000, output_tokens=1_000_000), price_context=both
    )
    # input from the batch variant (listed first), output from flex
    assert (cost.input, cost.output, cost.total) == (Decimal(5), Decimal(2), Decimal(7))
    assert cost.source == "override: mapping [processing=batch, service_tier=flex]"


def test_a_variant_without_its_own_cache_price_bills_cache_at_its_input_rate() -> None:
    # the entry gives no cache_read: it falls back to input, and so does the variant's
    fast = {"when": {"speed": "fast"}, "input": "6"}
    book = {"m": {"input": "2", "output": "4", "variants": [fast]}}
    cost = Pricer(overrides=book, genai_prices=False, litellm=False).price(
        "m",
        Usage(input_tokens=1_000_000, output_tokens=0, cache_read_tokens=500_000),
        price_context={"speed": "fast"},
    )
    assert (cost.input, cost.cache_read, cost.total) == (Decimal(3), Decimal(3), Decimal(6))


# A Gemini-style long-context price: above 200,000 prompt tokens the whole call is dearer.
TIERED: dict[str, Any] = {
    "long-model": {
        "input": "1.25",
        "output": "10",
        "cache_read": "0.125",
        "tiers": [{"above": 200_000, "input": "2.5", "output": "15", "cache_read": "0.25"}],
        "variants": [
            {
                "when": {"processing": "batch"},
                "input": "0.625",
                "output": "5",
                "cache_read": "0.0625",
                "tiers": [{"above": 200_000, "input": "1.25", "output": "7.5"}],
            }
        ],
    }
}


@pytest.mark.parametrize(
    ("prompt", "context", "total"),
    [
        (200_000, None, "0.26"),  # at the threshold: 200,000 x 1.25 + 1,000 x 10
        (200_001, None, "0.5150025"),  # past it: 200,001 x 2.5 + 1,000 x 15
        (200_000, {"processing": "batch"}, "0.13"),
        (200_001, {"processing": "batch"}, "0.25750125"),  # 200,001 x 1.25 + 1,000 x 7.5
    ],
)
def test_a_book_tier_prices_the_whole_call_past_its_threshold(
    prompt: int, context: dict[str, str] | None, total: str
) -> None:
    pricer = Pricer(overrides=TIERED, genai_prices=False, litellm=False)
    cost = pricer.price(
        "long-model", Usage(input_tokens=prompt, output_tokens=1_000), price_context=context
    )
    assert cost.total == Decimal(total)


def test_a_tier_without_a_cache_price_bills_cached_tokens_at_the_tiers_input() -> None:
    cost = Pricer(overrides=TIERED, genai_prices=False, litellm=False).price(
        "long-model",
        Usage(input_tokens=300_000, output_tokens=0, cache_read_tokens=100_000),
        price_context={"processing": "batch"},
    )
    # the batch tier gives no cache_read: 100,000 cached at its input 1.25
    assert (cost.input, cost.cache_read) == (Decimal("0.25"), Decimal("0.125"))


def test_reasoning_and_per_request_prices() -> None:
    book = {"r": {"input": "1", "output": "4", "reasoning": "8", "per_request": "0.002"}}
    cost = Pricer(overrides=book, genai_prices=False, litellm=False).price(
        "r", Usage(input_tokens=1_000, output_tokens=3_000, reasoning_tokens=2_000)
    )
    # 1,000 x 1 + 1,000 x 4 + 2,000 x 8 per million, plus the fee
    assert cost.total == Decimal("0.023")


def test_a_per_request_only_model_such_as_rerank_is_priced() -> None:
    book = {"rerank-v3.5": {"input": 0, "output": 0, "per_request": "0.002", "provider": "cohere"}}
    pricer = Pricer(overrides=book)
    cost = pricer.price("cohere/rerank-v3.5", Usage(input_tokens=0, output_tokens=0))
    assert (cost.status, cost.total) == ("priced", Decimal("0.002"))


def test_the_toml_layout_of_tiers_and_variants(tmp_path: Path) -> None:
    path = tmp_path / "book.toml"
    path.write_text(
        """
["long-model"]
input = 1.25
output = 10
cache_read = 0.125

[["long-model".tiers]]
above = 200000
input = 2.5
output = 15
cache_read = 0.25

[["long-model".variants]]
when = { processing = "batch" }
input = 0.625
output = 5
cache_read = 0.0625
tiers = [{ above = 200000, input = 1.25, output = 7.5 }]
""",
        encoding="utf-8",
    )
    a = Pricer(overrides=path, genai_prices=False, litellm=False)
    b = Pricer(overrides=TIERED, genai_prices=False, litellm=False)
    for prompt in (1_000, 200_000, 200_001, 1_000_000):
        for context in (None, {"processing": "batch"}):
            usage = Usage(input_tokens=prompt, output_tokens=700, cache_read_tokens=500)
            assert a.price("long-model", usage, price_context=context).total == (
                b.price("long-model", usage, price_context=context).total
            )


@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-2.5-flash", "gpt-5", "o3"])
def test_a_shown_card_reads_back_as_the_same_prices_part_by_part(
    model: str, tmp_path: Path
) -> None:
    """Tiers (gemini-2.5-pro), a separate cached-audio rate (gemini-2.5-flash), and rates
    the card prints at their parent's value (gpt-5's audio): every part of every call
    is priced as the card prices it."""
    from typer.testing import CliRunner

    from costledger.cli import app

    shown = CliRunner().invoke(app, ["prices", "show", model, "-f", "json"])
    assert shown.exit_code == 0, shown.output
    path = tmp_path / "card.json"
    path.write_text(shown.output, encoding="utf-8")
    book = Pricer(overrides=path, genai_prices=False, litellm=False)
    defaults = Pricer()
    for prompt in (10_000, 200_000, 200_001, 900_000):
        usage = Usage(
            input_tokens=prompt,
            output_tokens=3_000,
            cache_read_tokens=5_000,
            cache_write_tokens=1_000,
            input_audio_tokens=3_000,
            output_audio_tokens=700,
            reasoning_tokens=900,
        )
        assert book.price(model, usage, at=AT) == dataclasses.replace(
            defaults.price(model, usage, at=AT), source=f"override: {path}"
        )


def test_a_shown_card_keeps_its_cached_audio_rate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from costledger.cli import app

    card = json.loads(
        CliRunner().invoke(app, ["prices", "show", "gemini-2.5-flash", "-f", "json"]).output
    )
    assert (card["cache_read"], card["cache_audio_read"]) == ("0.03", "0.1")
    usage = Usage(
        input_tokens=1_000, output_tokens=0, cache_read_tokens=800, input_audio_tokens=900
    )
    path = tmp_path / "flash.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    cost = Pricer(overrides=path, genai_prices=False, litellm=False).price(
        "gemini-2.5-flash", usage
    )
    # 900 audio in a 1,000-token prompt of which 800 were cached: 700 audio overlap the
    # cache reads (cached audio, x 0.10), 200 are uncached audio (x 1.00), and 100 cached
    # text x 0.03 (genai-prices' gemini-2.5-flash rates), per million
    assert (cost.audio, cost.cache_read, cost.total) == (
        Decimal("0.00027"),
        Decimal("0.000003"),
        Decimal("0.000273"),
    )


def test_prices_show_gives_a_book_variants_rates(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from costledger.cli import app

    path = tmp_path / "deal.json"
    path.write_text(json.dumps(DEAL), encoding="utf-8")
    shown = CliRunner().invoke(
        app,
        ["prices", "show", "gpt-5", "-p", str(path), "--context", "service_tier=flex", "-fjson"],
    )
    assert shown.exit_code == 0, shown.output
    card = json.loads(shown.output)
    assert (card["input"], card["output"], card["cache_read"]) == ("0.5", "4", "0.05")
    assert card["source"] == f"override: {path} [service_tier=flex]"


def test_whatif_prices_each_call_at_the_books_variant(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(db, sync=True) as ledger:
        tracker = Tracker(ledger=ledger, log="off")
        tracker.record("gpt-5", USAGE, started_at=AT)
        tracker.record("gpt-5", USAGE, started_at=AT, price_context={"service_tier": "flex"})
        tracker.record("gpt-5", USAGE, started_at=AT, price_context={"service_tier": "priority"})
    (row,) = whatif(db, DEAL).rows
    # then (genai-prices: $1.25 / $10, cache $0.125; flex half, priority 2x):
    # 0.0280 + 0.0140 + 0.0560; under the deal: 0.0224 + 0.0112 + 0.0444
    assert (row.cost_then, row.cost_book, row.savings) == (
        Decimal("0.098"),
        Decimal("0.078"),
        Decimal("0.020"),
    )


def test_a_tracker_with_a_book_prices_the_variant_it_was_served_at() -> None:
    from costledger.testing import capture_costs

    with capture_costs() as costs:
        tracker = Tracker(pricer=Pricer(overrides=DEAL), log="off")
        tracker.record("gpt-5", USAGE, started_at=AT, price_context={"processing": "batch"})
    assert [e.cost.total for e in costs.events] == [Decimal("0.0112")]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"tiers": {"above": 1}}, "field 'tiers' must be a list of tiers"),
        ({"tiers": ["x"]}, "field 'tiers[0]' must map fields to prices, got 'x'"),
        ({"tiers": [{"input": "2", "output": "3"}]}, "'tiers[0].above' must be a positive"),
        ({"tiers": [{"above": True, "input": "2", "output": "3"}]}, "got True"),
        ({"tiers": [{"above": 0, "input": "2", "output": "3"}]}, "got 0"),
        (
            {
                "tiers": [
                    {"above": 200, "input": "2", "output": "3"},
                    {"above": 100, "input": "3", "output": "4"},
                ]
            },
            "'tiers[1].above' must be above the previous tier's 200, got 100",
        ),
        ({"tiers": [{"above": 100, "input": "2"}]}, "tier 'tiers[0]' has no 'output' price"),
        (
            {"tiers": [{"above": 100, "input": "2", "output": "3", "currency": "EUR"}]},
            "unknown field tiers[0].'currency'",
        ),
        (
            {"tiers": [{"above": 100, "input": "-2", "output": "3"}]},
            "field 'tiers[0].input' must not be negative, got '-2'",
        ),
        ({"variants": {"when": {}}}, "field 'variants' must be a list of variants"),
        ({"variants": [{"input": "1"}]}, "'variants[0].when' must map price context keys"),
        ({"variants": [{"when": {"service_tier": 1}, "input": "1"}]}, "got {'service_tier': 1}"),
        ({"variants": [{"when": {"service_tier": "flex"}}]}, "sets no price"),
        (
            {"variants": [{"when": {"speed": "fast"}, "currency": "EUR", "input": "1"}]},
            "unknown field variants[0].'currency'",
        ),
        (
            {"variants": [{"when": {"speed": "fast"}, "output": "abc"}]},
            "field 'variants[0].output' is not a number, got 'abc'",
        ),
        (
            {
                "tiers": [{"above": 100, "input": "2", "output": "3"}],
                "variants": [{"when": {"processing": "batch"}, "input": "0.5"}],
            },
            "changes the rates of a model with long-context tiers: give its own 'tiers'",
        ),
        ({"per_request": "-1"}, "field 'per_request' must not be negative"),
        ({"reasoning": "x"}, "field 'reasoning' is not a number"),
    ],
)
def test_a_malformed_tier_or_variant_is_refused_naming_it(
    entry: dict[str, Any], words: str
) -> None:
    with pytest.raises(PriceBookError) as caught:
        load_price_book({"m": {"input": "1", "output": "2", **entry}})
    assert words in str(caught.value)
    assert "model 'm'" in str(caught.value)


def test_a_variant_of_a_tiered_model_may_drop_the_tiers() -> None:
    book = {
        "m": {
            "input": "1",
            "output": "2",
            "tiers": [{"above": 100, "input": "2", "output": "3"}],
            "variants": [{"when": {"processing": "batch"}, "input": "0.5", "tiers": []}],
        }
    }
    pricer = Pricer(overrides=book, genai_prices=False, litellm=False)
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    assert pricer.price("m", usage).total == Decimal(2)
    assert pricer.price("m", usage, price_context={"processing": "batch"}).total == Decimal("0.5")


def test_prices_diff_compares_each_variant_with_the_default_variant(tmp_path: Path) -> None:
    from costledger import diff_prices

    rows = {(d.variant, d.component): d for d in diff_prices(DEAL, at=AT)}
    # gpt-5 in genai-prices: $1.25 / $10, cache $0.125; flex half of each
    standard, flex = rows[(None, "input")], rows[("service_tier=flex", "input")]
    assert (standard.default, standard.book, standard.change) == (
        Decimal("1.25"),
        Decimal(1),
        Decimal("-0.25"),
    )
    assert (flex.default, flex.book, flex.change, flex.status) == (
        Decimal("0.625"),
        Decimal("0.5"),
        Decimal("-0.125"),
        "changed",
    )
    # priority sets no cache price: the deal's $0.10 against the default priority $0.25
    cached = rows[("service_tier=priority", "cache_read")]
    assert (cached.default, cached.book) == (Decimal("0.25"), Decimal("0.1"))
    assert {variant for variant, _ in rows} == {
        None,
        "service_tier=flex",
        "processing=batch",
        "service_tier=priority",
    }


def test_prices_diff_compares_reasoning_and_the_per_request_fee() -> None:
    from costledger import diff_prices

    book = {"gpt-5": {"input": "1.25", "output": "10", "reasoning": "40", "per_request": "0.5"}}
    rows = {d.component: d for d in diff_prices(book, at=AT) if d.status == "changed"}
    assert sorted(rows) == ["cache_read", "per_request", "reasoning"]  # gpt-5's cache is 0.125
    assert (rows["reasoning"].default, rows["reasoning"].book) == (Decimal(10), Decimal(40))
    assert (rows["per_request"].default, rows["per_request"].book) == (Decimal(0), Decimal("0.5"))
