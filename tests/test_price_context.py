"""Price variants: a call served at a service tier or speed, or in a batch, is priced at
that variant's price (genai-prices' ``price_variants``), the context is stored with the
call, and re-pricing uses it again."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from costledger import Ledger, Pricer, Tracker, Usage, UsageEvent, event_from_line, ingest
from costledger._extract import read_response
from costledger._schema import event_to_record
from costledger.http import TrackingTransport
from costledger.testing import capture_costs

from ._fake_provider import FakeProvider, Reply, chat_completion

UTC = timezone.utc
AT = datetime(2026, 12, 1, tzinfo=UTC)  # after the variants' start date in genai-prices
USAGE = Usage(input_tokens=10_000, output_tokens=2_000)


def needs_genai_variant(model: str, when: dict[str, str]) -> None:
    """Skip unless the installed genai-prices lists this price variant of ``model``
    (Python 3.10 gets genai-prices 0.1, whose data lacks some, such as fast mode)."""
    from genai_prices import data_snapshot

    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, None, None)
    except LookupError:
        info = None
    variants = getattr(info, "price_variants", None) or ()
    if not any(variant.when == when for variant in variants):
        pytest.skip(f"the installed genai-prices has no {when} price variant of {model}")


# -- the pricer --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "context", "total", "label"),
    [
        # gpt-5: $1.25 / $10 per MTok; priority x2; flex and batch half
        ("gpt-5", None, "0.0325", ""),
        ("gpt-5", {"service_tier": "priority"}, "0.065", " [service_tier=priority]"),
        ("gpt-5", {"service_tier": "flex"}, "0.01625", " [service_tier=flex]"),
        ("gpt-5", {"processing": "batch"}, "0.01625", " [processing=batch]"),
        ("gpt-5", {"service_tier": "default"}, "0.0325", ""),  # a variant with no prices
        ("gpt-5", {"service_tier": "scale"}, "0.0325", ""),  # no such variant: standard
        # claude-opus-4-8: $5 / $25; fast mode x2; batch half
        ("claude-opus-4-8", None, "0.1", ""),
        ("claude-opus-4-8", {"speed": "fast"}, "0.2", " [speed=fast]"),
        ("claude-opus-4-8", {"processing": "batch"}, "0.05", " [processing=batch]"),
        ("claude-opus-4-8", {"service_tier": "standard"}, "0.1", ""),
    ],
)
def test_a_variant_is_priced_at_its_own_rates(
    model: str, context: dict[str, str] | None, total: str, label: str
) -> None:
    if label:
        key, value = label.strip(" []").split("=")
        needs_genai_variant(model, {key: value})
    cost = Pricer().price(model, USAGE, at=AT, price_context=context)
    assert cost.status == "priced"
    assert cost.total == Decimal(total)
    assert cost.source is not None
    assert cost.source.startswith("genai-prices ")
    assert cost.source.endswith(label or cost.source[-1])
    if not label:
        assert "[" not in cost.source


@pytest.mark.parametrize(
    ("context", "total", "label"),
    [
        # LiteLLM's map: 1.375 / 0.1375 / 11 per MTok; _priority x2; _batches half; no _flex
        (None, "0.0308", ""),
        ({"service_tier": "priority"}, "0.0616", " [service_tier=priority]"),
        ({"processing": "batch"}, "0.0154", " [processing=batch]"),
        ({"service_tier": "flex"}, "0.0308", ""),
    ],
)
def test_a_model_priced_from_litellms_map_uses_its_tier_rates(
    context: dict[str, str] | None, total: str, label: str
) -> None:
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=2_000)
    cost = Pricer().price("azure/us/gpt-5-2025-08-07", usage, at=AT, price_context=context)
    assert cost.total == Decimal(total)
    assert cost.source is not None
    assert cost.source.startswith("litellm ")
    assert cost.source.endswith(label) if label else "[" not in cost.source


def test_a_variant_prices_every_part_cached_tokens_too() -> None:
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=2_000)
    cost = Pricer().price("gpt-5", usage, at=AT, price_context={"service_tier": "flex"})
    # 6,000 x 0.625 + 4,000 x 0.0625 + 2,000 x 5, per million
    assert (cost.input, cost.cache_read, cost.output) == (
        Decimal("0.00375"),
        Decimal("0.00025"),
        Decimal("0.01"),
    )
    assert cost.total == Decimal("0.014")


def test_before_its_start_date_a_variant_is_its_first_listed_price_and_says_so() -> None:
    # the standard price of 2026-01-01 is the one listed beside the tier's first price
    # (2026-10-12): the same price list, so the tier's first price is the best known one
    early = datetime(2026, 1, 1, tzinfo=UTC)
    cost = Pricer().price("gpt-5", USAGE, at=early, price_context={"service_tier": "priority"})
    assert cost.total == Decimal("0.065")
    assert cost.source is not None
    assert cost.source.endswith(" [service_tier=priority at its price listed from 2026-10-12]")


def test_a_price_book_entry_is_its_own_price_whatever_the_tier() -> None:
    pricer = Pricer(overrides={"gpt-5": {"input": "1", "output": "2"}})
    cost = pricer.price("gpt-5", USAGE, at=AT, price_context={"service_tier": "priority"})
    assert cost.total == Decimal("0.014")


@pytest.mark.parametrize(
    ("context", "words"),
    [
        ({"service_tier": 1}, "price_context['service_tier'] must be text"),
        ("priority", "price_context must be a mapping of text to text, got str 'priority'"),
    ],
)
def test_a_context_that_is_not_text_is_refused_naming_it(context: Any, words: str) -> None:
    with pytest.raises(TypeError) as caught:
        Pricer().price("gpt-5", USAGE, at=AT, price_context=context)
    assert words in str(caught.value)


# -- reading it from responses -------------------------------------------------------------------
def test_openai_service_tier_is_read_from_the_response() -> None:
    body = {**chat_completion("gpt-5-2025-08-07"), "service_tier": "flex"}
    assert read_response(body).price_context == {"service_tier": "flex"}


def test_anthropic_batch_tier_and_fast_speed_are_read_from_the_usage() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-opus-4-8",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 2,
            "service_tier": "batch",
            "speed": "fast",
        },
    }
    assert read_response(body).price_context == {"processing": "batch", "speed": "fast"}


def test_a_response_that_says_nothing_has_no_context() -> None:
    body = chat_completion()
    del body["service_tier"]
    assert read_response(body).price_context is None


# -- recorded, stored, logged, re-priced ---------------------------------------------------------
def test_a_recorded_call_keeps_its_context_in_the_ledger_and_reprices_with_it(url: str) -> None:
    body = {
        **chat_completion(
            "gpt-5-2025-08-07", usage={"prompt_tokens": 10_000, "completion_tokens": 2_000}
        ),
        "service_tier": "priority",
    }
    with Ledger(url, sync=True) as ledger:
        tracker = Tracker(ledger=ledger, log="off")
        event = tracker.record("gpt-5", payload=body, started_at=AT)
        assert event is not None
        assert dict(event.price_context) == {"service_tier": "priority"}
        assert event.cost.total == Decimal("0.065")
        (stored,) = ledger.events()
        assert dict(stored.price_context) == {"service_tier": "priority"}
        assert stored.total_cost == Decimal("0.065")
        assert stored.to_event() == event
        # re-pricing an event keeps the variant it was served at
        unpriced = stored.to_event().with_cost(Pricer().price("no-such-model", USAGE))
        assert Pricer().reprice(unpriced).cost.total == Decimal("0.065")


def test_the_log_line_carries_the_context_only_when_there_is_one() -> None:
    plain = UsageEvent(model="gpt-5", usage=USAGE, cost=Pricer().price("gpt-5", USAGE, at=AT))
    assert "costledger.price_context" not in event_to_record(plain)
    served = UsageEvent(
        model="gpt-5",
        usage=USAGE,
        cost=Pricer().price("gpt-5", USAGE, at=AT, price_context={"speed": "fast"}),
        price_context={"speed": "fast"},
    )
    record = event_to_record(served)
    assert record["costledger.price_context"] == {"speed": "fast"}
    assert event_from_line(json.dumps(record)) == served
    bad = {**record, "costledger.price_context": {"speed": 2}}
    with pytest.raises(ValueError, match=r"costledger\.price_context"):
        event_from_line(json.dumps(bad))


def test_ingest_keeps_and_prices_the_context_of_every_format(tmp_path: Path) -> None:
    served = UsageEvent(
        id="0199a000-0000-7000-8000-000000000001",
        model="gpt-5",
        usage=USAGE,
        timestamp=AT,
        cost=Pricer().price("gpt-5", USAGE, at=AT, price_context={"service_tier": "flex"}),
        price_context={"service_tier": "flex"},
    )
    own = json.dumps(event_to_record(served))
    response = {
        **chat_completion(
            "gpt-5-2025-08-07", usage={"prompt_tokens": 10_000, "completion_tokens": 2_000}
        ),
        "id": "chatcmpl-priority",
        "created": int(AT.timestamp()),
        "service_tier": "priority",
    }
    payload = {
        "id": "chatcmpl-litellm",
        "litellm_call_id": "litellm-call-1",
        "call_type": "completion",
        "status": "success",
        "model": "gpt-5",
        "custom_llm_provider": "openai",
        "startTime": AT.timestamp(),
        "endTime": AT.timestamp() + 1.5,
        "response": {**response, "id": "chatcmpl-litellm", "service_tier": "flex"},
        "response_cost": 0.01625,
        "metadata": {},
        "model_parameters": {},
        "cache_hit": False,
        "stream": False,
    }
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join([own, json.dumps(response), json.dumps(payload)]) + "\n")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = ingest(path, ledger=db, resume=False)
    assert (result.accepted, result.rejected) == (3, 0)
    with Ledger(db, sync=True) as ledger:
        rows = {e.source: e for e in ledger.events()}
    assert dict(rows["api"].price_context) == {"service_tier": "flex"}
    assert rows["api"].total_cost == Decimal("0.01625")
    assert dict(rows["ingest"].price_context) == {"service_tier": "priority"}
    assert rows["ingest"].total_cost == Decimal("0.065")
    assert dict(rows["litellm"].price_context) == {"service_tier": "flex"}
    assert rows["litellm"].total_cost == Decimal("0.01625")


def test_the_openai_sdk_through_the_transport_records_the_flex_price() -> None:
    body = {
        **chat_completion(
            "gpt-5-2025-08-07", usage={"prompt_tokens": 10_000, "completion_tokens": 2_000}
        ),
        "service_tier": "flex",
    }
    with FakeProvider() as fake, capture_costs() as costs:
        fake.enqueue("/chat/completions", Reply(json=body))
        client = openai.OpenAI(
            base_url=fake.openai_url,
            api_key="sk-test-0000",
            http_client=httpx.Client(transport=TrackingTransport()),
            max_retries=0,
        )
        client.chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}], service_tier="flex"
        )
        client.close()
    (event,) = list(costs)
    assert dict(event.price_context) == {"service_tier": "flex"}
    assert event.cost.total == Decimal("0.01625")


def test_whatif_prices_each_call_at_the_variant_it_was_served_at(tmp_path: Path) -> None:
    from costledger import whatif

    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(db, sync=True) as ledger:
        tracker = Tracker(ledger=ledger, log="off")
        tracker.record("gpt-5", USAGE, price_context={"service_tier": "priority"}, started_at=AT)
        tracker.record("gpt-5", USAGE, started_at=AT)
    # a book that does not list gpt-5: the defaults price it, at the tier it was served at
    result = whatif(db, {"some-other-model": {"input": "1", "output": "1"}})
    (row,) = result.rows
    assert (row.cost_then, row.cost_book, row.savings) == (
        Decimal("0.0975"),
        Decimal("0.0975"),
        Decimal("0"),
    )


def test_a_model_found_under_another_provider_takes_the_standard_price() -> None:
    # As genai-prices' own calc_price: an Azure deployment priced as OpenAI's gpt-5.2 does
    # not take OpenAI's tier prices (they are OpenAI's products, not Azure's)
    azure = Pricer().price(
        "gpt-5.2", USAGE, provider="azure", at=AT, price_context={"service_tier": "priority"}
    )
    openai = Pricer().price(
        "gpt-5.2", USAGE, provider="openai", at=AT, price_context={"service_tier": "priority"}
    )
    assert azure.total == Decimal("0.0455")
    assert openai.total == Decimal("0.091")
    assert azure.source is not None
    assert "[" not in azure.source


def test_the_source_names_only_what_selected_the_price() -> None:
    context = {"service_tier": "flex", "note": "sk-live-0123456789abcdef0123"}
    cost = Pricer().price("gpt-5", USAGE, at=AT, price_context=context)
    assert cost.source is not None
    assert cost.source.endswith(" [service_tier=flex]")


def test_a_secret_in_a_price_context_never_reaches_the_row(tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdef0123"
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(db, sync=True) as ledger:
        tracker = Tracker(ledger=ledger, log="off")
        event = tracker.record(
            "gpt-5", USAGE, price_context={"service_tier": "flex", "note": secret}, started_at=AT
        )
        assert event is not None
        assert event.cost.total == Decimal("0.01625")
        (stored,) = ledger.events()
    assert stored.price_context["service_tier"] == "flex"
    assert secret not in str(dict(stored.price_context))
    assert secret not in (stored.pricing_source or "")


def test_an_event_with_a_context_that_is_not_text_is_refused_naming_it() -> None:
    with pytest.raises(
        TypeError, match="price_context must map text to text, got 'service_tier': 1"
    ):
        UsageEvent(
            model="gpt-5",
            usage=USAGE,
            cost=Pricer().price("gpt-5", USAGE),
            price_context={"service_tier": 1},
        )  # type: ignore[dict-item]


def test_a_stored_context_that_is_not_text_still_reads(tmp_path: Path) -> None:
    import sqlite3

    db_path = tmp_path / "ledger.db"
    db = f"sqlite:///{db_path}"
    with Ledger(db, sync=True) as ledger:
        Tracker(ledger=ledger, log="off").record("gpt-5", USAGE, started_at=AT)
    with sqlite3.connect(db_path) as con:  # a row changed by hand
        con.execute("""UPDATE costledger_events SET price_context = '{"service_tier": 1}'""")
    with Ledger(db, sync=True) as ledger:
        (stored,) = ledger.events()
        event = stored.to_event()
    assert dict(event.price_context) == {}
    assert Pricer().reprice(event).cost.total == Decimal("0.0325")


def test_prices_show_gives_a_variants_rates() -> None:
    from typer.testing import CliRunner

    from costledger.cli import app

    runner = CliRunner()
    args = ["prices", "show", "gpt-5", "--at", "2026-12-01", "-f", "json"]
    priority = runner.invoke(app, [*args, "--context", "service_tier=priority"])
    assert priority.exit_code == 0, priority.output
    card = json.loads(priority.stdout)
    assert (card["input"], card["cache_read"], card["output"]) == ("2.5", "0.25", "20")
    assert card["source"].endswith(" [service_tier=priority]")
    standard = json.loads(runner.invoke(app, args).stdout)
    assert (standard["input"], standard["output"]) == ("1.25", "10")
    bad = runner.invoke(app, [*args, "--context", "priority"])
    assert bad.exit_code == 2
    assert "expected KEY=VALUE such as service_tier=priority, got 'priority'" in bad.output


def test_rate_card_takes_a_price_context() -> None:
    card = Pricer().rate_card("gpt-5", at=AT, price_context={"processing": "batch"})
    assert card is not None
    assert (card.input, card.output) == (Decimal("0.625"), Decimal("5"))
    assert card.max_output_tokens == 128_000
