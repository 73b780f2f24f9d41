"""A call served in a batch or at a tier, dated before the first date the price data gives
that variant (genai-prices dates OpenAI's batch rates from 2026-10-14: "tier history
before this verification is not modeled"), is never priced at the standard price
silently: at the variant's first listed price while the model's standard price is the one
listed then, else at the standard price; ``cost.source`` says which, and one warning per
model and variant names the model, the variant and the date."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from costledger import Ledger, Pricer, Tracker, Usage, ingest, whatif
from costledger._logging import _reporter

UTC = timezone.utc
BATCH = {"processing": "batch"}
USAGE = Usage(input_tokens=1_000_000, output_tokens=100_000)
JUNE_2025 = datetime(2025, 6, 1, tzinfo=UTC)
JULY_2025 = datetime(2025, 7, 1, tzinfo=UTC)
AFTER = datetime(2026, 11, 1, tzinfo=UTC)  # after every variant date used here
BATCH_FIRST = " [processing=batch at its price listed from 2026-10-14]"
BATCH_STANDARD = " [processing=batch not listed before 2026-10-14: standard price]"


@pytest.fixture(autouse=True)
def _fresh_reporter() -> Iterator[None]:
    _reporter.reset()  # the warnings are once per process
    yield
    _reporter.reset()


def _data() -> str:
    """The price data's own source (``genai-prices 0.2.5``), as a standard price names it."""
    source = Pricer().price("gpt-4o-mini", USAGE, at=AFTER).source
    assert source is not None
    assert source.startswith("genai-prices ")
    return source


def _early_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "costledger"
        and str(getattr(r, "costledger_warning", "")).startswith("pricer.early_variant:")
    ]


def _batch_line(tmp_path: Path) -> Path:
    line = {
        "id": "batch_req_1",
        "custom_id": "r1",
        "error": None,
        "response": {
            "status_code": 200,
            "body": {
                "id": "chatcmpl-b1",
                "object": "chat.completion",
                "created": int(JUNE_2025.timestamp()),
                "model": "gpt-4o-mini",
                "choices": [],
                "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 100_000},
            },
        },
    }
    path = tmp_path / "batch_output.jsonl"
    path.write_text(json.dumps(line) + "\n")
    return path


def test_an_openai_batch_result_of_2025_is_priced_at_the_batch_price_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    with caplog.at_level(logging.WARNING, logger="costledger"):
        ingest([_batch_line(tmp_path)], ledger=url, checkpoint_dir=tmp_path / "ck")
    (row,) = Ledger(url).events()
    # gpt-4o-mini in a batch: $0.075 / $0.30 per MTok (the standard $0.15 / $0.60: 0.21)
    assert row.total_cost == Decimal("0.105")
    assert dict(row.price_context) == BATCH
    assert row.pricing_source == _data() + BATCH_FIRST
    (line,) = _early_lines(caplog)
    assert line == (
        f"costledger: {_data()} lists its processing=batch price from 2026-10-14 only, for "
        "model 'gpt-4o-mini' (it does not model that tier's earlier prices): a call of "
        "2025-06-01 is priced at that first listed price ($0.075 / $0.3 per MTok in / out, "
        "where the standard price is $0.15 / $0.6), as is every such call before that date "
        "while the model's standard price is the one listed then; cost.source says so "
        "('processing=batch at its price listed from 2026-10-14'). Give the model a price "
        "book entry with variants to price such calls otherwise (docs/pricing.md, Service "
        "tiers, speed and batch) [model=gpt-4o-mini, provider=None]"
    )


def test_tracker_record_and_whatif_price_an_early_batch_call_at_the_batch_price(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(db, sync=True) as ledger:
        tracker = Tracker(ledger=ledger, log="off")
        event = tracker.record("gpt-4o-mini", USAGE, price_context=BATCH, started_at=JUNE_2025)
        assert event is not None
        assert (event.cost.total, event.cost.source) == (Decimal("0.105"), _data() + BATCH_FIRST)
    # re-priced under a book that does not list the model: the same batch price
    result = whatif(db, {"some-other-model": {"input": "1", "output": "1"}}, since="2025-01-01")
    (row,) = result.rows
    assert (row.cost_then, row.cost_book, row.savings) == (
        Decimal("0.105"),
        Decimal("0.105"),
        Decimal("0"),
    )


def test_the_first_listed_price_is_used_up_to_the_variant_date_then_the_price_as_listed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pricer = Pricer()
    with caplog.at_level(logging.WARNING, logger="costledger"):
        for at in (JUNE_2025, JULY_2025, datetime(2026, 10, 13, 23, 59, tzinfo=UTC)):
            cost = pricer.price("gpt-4o-mini", USAGE, at=at, price_context=BATCH)
            assert (cost.total, cost.source) == (Decimal("0.105"), _data() + BATCH_FIRST)
            card = pricer.rate_card("gpt-4o-mini", at=at, price_context=BATCH)
            assert card is not None
            assert (card.input, card.output, card.source) == (
                Decimal("0.075"),
                Decimal("0.3"),
                _data() + BATCH_FIRST,
            )
        Pricer().price("gpt-4o-mini", USAGE, at=JUNE_2025, price_context=BATCH)
        listed = pricer.price(
            "gpt-4o-mini", USAGE, at=datetime(2026, 10, 14, tzinfo=UTC), price_context=BATCH
        )
    assert (listed.total, listed.source) == (Decimal("0.105"), _data() + " [processing=batch]")
    # one warning per model and variant, whatever the dates and pricers
    (line,) = _early_lines(caplog)
    assert "lists its processing=batch price from 2026-10-14 only, for model 'gpt-4o-mini'" in (
        line
    )


def test_a_tier_before_its_date_is_priced_at_its_first_listed_price() -> None:
    priority = Pricer().price(
        "gpt-4o-mini", USAGE, at=JULY_2025, price_context={"service_tier": "priority"}
    )
    # $0.25 / $1 per MTok: 0.25 + 0.1
    assert (priority.total, priority.source) == (
        Decimal("0.35"),
        _data() + " [service_tier=priority at its price listed from 2026-10-12]",
    )
    # priority listed on 2026-10-13, batch not yet: each entry says what priced it
    both = Pricer().price(
        "gpt-4o-mini",
        USAGE,
        at=datetime(2026, 10, 13, tzinfo=UTC),
        price_context={"service_tier": "priority", "processing": "batch"},
    )
    assert (both.total, both.source) == (
        Decimal("0.35"),
        _data() + " [service_tier=priority; processing=batch at its price listed from 2026-10-14]",
    )


def test_a_call_before_a_standard_price_change_keeps_the_standard_price_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # o3 cost $10 / $40 per MTok until its price cut of 2025-06-10, $2 / $8 after; its
    # batch rates ($1 / $4) are listed from 2026-10-14: they are not the 2025-06-01 ones
    pricer = Pricer()
    with caplog.at_level(logging.WARNING, logger="costledger"):
        before_cut = pricer.price("o3", USAGE, at=JUNE_2025, price_context=BATCH)
        after_cut = pricer.price("o3", USAGE, at=JULY_2025, price_context=BATCH)
        listed = pricer.price("o3", USAGE, at=AFTER, price_context=BATCH)
    assert (before_cut.total, before_cut.source) == (Decimal("14"), _data() + BATCH_STANDARD)
    assert (after_cut.total, after_cut.source) == (Decimal("1.4"), _data() + BATCH_FIRST)
    assert (listed.total, listed.source) == (Decimal("1.4"), _data() + " [processing=batch]")
    standard, first = _early_lines(caplog)
    assert standard == (
        f"costledger: {_data()} lists its processing=batch price from 2026-10-14 only, for "
        "model 'o3', and the model's standard price on 2025-06-01 is not the one in force "
        "then: a call of 2025-06-01 is priced at the standard price ($10 / $40 per MTok in / "
        "out), which a processing=batch call was probably not charged; cost.source says so "
        "('processing=batch not listed before 2026-10-14: standard price'). Give the model a "
        "price book entry with variants to price such calls otherwise (docs/pricing.md, "
        "Service tiers, speed and batch) [model=o3, provider=None]"
    )
    assert "a call of 2025-07-01 is priced at that first listed price ($1 / $4" in first


def test_a_long_prompt_before_a_tier_change_keeps_its_long_context_price() -> None:
    # claude-sonnet-4-6 charged $6 / $22.50 per MTok above 200k prompt tokens until
    # 2026-03-13; its flat batch rates ($1.50 / $7.50, listed from 2026-10-14) would drop
    # that surcharge, so a long batch prompt of 2026-03-01 keeps the standard price
    usage = Usage(input_tokens=250_000, output_tokens=10_000)
    pricer = Pricer()
    march = pricer.price(
        "claude-sonnet-4-6", usage, at=datetime(2026, 3, 1, tzinfo=UTC), price_context=BATCH
    )
    april = pricer.price(
        "claude-sonnet-4-6", usage, at=datetime(2026, 4, 1, tzinfo=UTC), price_context=BATCH
    )
    assert (march.total, march.source) == (Decimal("1.725"), _data() + BATCH_STANDARD)
    assert (april.total, april.source) == (Decimal("0.45"), _data() + BATCH_FIRST)


def test_a_price_book_variant_prices_an_early_call_as_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # price book variants carry no date: the book's batch price prices any date, and the
    # data's dates do not come into it
    book = {
        "gpt-4o-mini": {
            "input": "0.15",
            "output": "0.6",
            "variants": [{"when": BATCH, "input": "0.07", "output": "0.28"}],
        }
    }
    with caplog.at_level(logging.WARNING, logger="costledger"):
        cost = Pricer(overrides=book).price("gpt-4o-mini", USAGE, at=JUNE_2025, price_context=BATCH)
    assert (cost.total, cost.source) == (Decimal("0.098"), "override: mapping [processing=batch]")
    assert _early_lines(caplog) == []
