"""Price book files Python's parsers cannot read, and the pricer's and spans' model names.

A price book nested deeper than Python's parsers recurse raised a bare ``RecursionError``,
and a JSON or TOML integer of more than 4,300 digits Python's "Exceeds the limit (4300
digits)" ``ValueError``: neither named the file (``costledger whatif -p`` printed
``error: RecursionError: ...``). Both are now a ``PriceBookError`` naming the file, and, in
JSON, the model and the field of the long integer. A bad ``per_request`` is described as
the fee per call it is, not as a price per million tokens.

The unknown-model warning showed the whole model name (a 100,000-character name gave a
100,153-character line) and, being a direct ``logger.warning``, skipped the scrubbing of
costledger's other warnings: a key a server echoed in its model name reached the log. The
OpenTelemetry span's name (``llm.usage {model}``) and attributes of an event that was not
scrubbed (``span_attributes`` is public) carried it too.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import costledger.otel
from costledger import Cost, PriceBookError, Pricer, Usage, UsageEvent, drain_deferred
from costledger._attribution import EMPTY
from costledger._tracker import Call
from costledger.cli import app

KEY = "sk-ant-api03-PLANTanthr0picKey11223344aabbccdd"
AT = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _book(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _refused(path: Path) -> str:
    with pytest.raises(PriceBookError) as caught:
        Pricer(path)
    return str(caught.value)


# -- price book files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", "[" * 100_000),
        ("deep_objects.json", '{"m": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001),
        ("deep.toml", "m = {input = " + "[" * 100_000 + "]" * 100_000 + ", output = 1}"),
    ],
)
def test_a_book_nested_too_deeply_is_an_error_naming_the_file(
    tmp_path: Path, name: str, text: str
) -> None:
    path = _book(tmp_path, name, text)
    assert _refused(path) == (
        f"price book {str(path)!r} is not valid {path.suffix[1:]}: its values are nested too "
        "deeply to read (a book nests a few levels: model, tiers or variants, prices)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"gpt-4o-mini": {"input": 1' + "0" * 5000 + ', "output": 1}}',
            "model 'gpt-4o-mini' field 'input' is 10^12 or more, too large to be a price, "
            'got <int of 5001 digits> (USD per million tokens, e.g. "0.15")',
        ),
        (
            '{"m": {"input": 1, "output": -' + "7" * 1_000_000 + "}}",
            "model 'm' field 'output' must not be negative, got <negative int of 1000000 "
            'digits> (USD per million tokens, e.g. "0.15")',
        ),
        (
            '{"m": {"input": 1, "output": 1, "tiers": [{"above": 1'
            + "0" * 4300
            + ', "input": 2, "output": 2}]}}',
            "model 'm' field 'tiers[0].above' must be below 10,000,000,000,000,000 prompt "
            "tokens (no call's prompt is larger, so the tier could never apply), got <int of "
            "4301 digits>",
        ),
        (
            '{"m": {"input": 1, "output": 1, "max_input_tokens": 9' + "9" * 5000 + "}}",
            "model 'm' field 'max_input_tokens' must be a positive whole number of tokens up "
            "to 10,000,000,000,000,000, got <int of 5001 digits>",
        ),
    ],
)
def test_a_json_integer_too_long_for_python_names_the_file_model_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _book(tmp_path, "book.json", text)
    assert _refused(path) == f"override: {path}: {message}"


def test_a_json_integer_of_4300_digits_is_still_read_as_itself(tmp_path: Path) -> None:
    digits = "1" + "0" * 4299  # the longest Python's int() reads
    path = _book(tmp_path, "book.json", '{"m": {"input": 1, "output": 1, "max_input_tokens": ')
    path.write_text(path.read_text() + digits + "}}")
    assert _refused(path) == (
        f"override: {path}: model 'm' field 'max_input_tokens' must be a positive whole number "
        f"of tokens up to 10,000,000,000,000,000, got {digits}"
    )


def test_a_toml_integer_too_long_for_python_is_an_error_naming_the_file(tmp_path: Path) -> None:
    text = '["gpt-4o-mini"]\ninput = 1' + "0" * 5000 + "\noutput = 1\n"
    path = _book(tmp_path, "book.toml", text)
    assert _refused(path) == (
        f"price book {str(path)!r} is not valid toml: a whole number in it has more than 4,300 "
        "digits, more than Python reads (no price or token limit is that long)"
    )


def test_a_mapping_nested_deeper_than_repr_recurses_is_shown_cut() -> None:
    value: Any = 1
    for _ in range(100_000):
        value = [value]
    with pytest.raises(PriceBookError) as caught:
        Pricer({"m": {"input": value, "output": 1}})
    assert str(caught.value) == (
        "override: mapping: model 'm' field 'input' must be a number or a numeric string, "
        'got [[[[...]]]] (USD per million tokens, e.g. "0.15")'
    )


def test_the_cli_names_the_book_file_it_cannot_read(tmp_path: Path) -> None:
    path = _book(tmp_path, "deep.json", "[" * 100_000)
    result = CliRunner().invoke(
        app, ["whatif", "--db", f"sqlite:///{tmp_path / 'w.db'}", "-p", str(path)]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: price book {str(path)!r} is not valid json: its values are nested too deeply "
        "to read (a book nests a few levels: model, tiers or variants, prices)"
    )


@pytest.mark.parametrize(
    ("entry", "field", "shown"),
    [
        ({"input": 0, "output": 0, "per_request": "-1"}, "per_request", "'-1'"),
        (
            {
                "input": 0,
                "output": 0,
                "variants": [{"when": {"service_tier": "flex"}, "per_request": "x"}],
            },
            "variants[0].per_request",
            "'x'",
        ),
    ],
)
def test_a_bad_per_request_fee_is_described_as_a_fee_per_call(
    entry: dict[str, Any], field: str, shown: str
) -> None:
    with pytest.raises(PriceBookError) as caught:
        Pricer({"web-search": entry})
    why = "must not be negative" if shown == "'-1'" else "is not a number"
    assert str(caught.value) == (
        f"override: mapping: model 'web-search' field {field!r} {why}, got {shown} "
        '(USD per call, e.g. "0.002")'
    )


# -- the unknown-model warning ---------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture, model: str, provider: str | None) -> list[Any]:
    pricer = Pricer(genai_prices=True, litellm=True)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        usage = Usage(input_tokens=10, output_tokens=5)
        cost = pricer.price(model, usage, provider=provider, at=AT)
        drain_deferred()
    assert cost.status == "unknown_model"
    return [r for r in caplog.records if r.name == "costledger"]


def test_the_unknown_model_warning_shows_a_key_in_the_model_name_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = _warnings(caplog, f"gpt-4o-mini-{KEY}", f"openai-{KEY}")
    assert records[0].getMessage() == (
        "costledger: no price for model 'gpt-4o-mini-[REDACTED]' (provider 'openai-[REDACTED]'); "
        "the call is recorded as unknown_model with no amount (not $0). Add the model to a "
        "price book and re-price the events."
    )
    assert (records[0].costledger_model, records[0].costledger_provider) == (
        "gpt-4o-mini-[REDACTED]",
        "openai-[REDACTED]",
    )
    for record in records:  # the "did you mean" hint too, if one follows
        assert "PLANT" not in record.getMessage()
        assert "PLANT" not in repr(vars(record))


def test_the_unknown_model_warning_cuts_a_long_model_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = _warnings(caplog, "x" * 100_000, None)
    assert records[0].getMessage() == (
        f"costledger: no price for model '{'x' * 197}...'; the call is recorded as unknown_model "
        "with no amount (not $0). Add the model to a price book and re-price the events."
    )
    assert records[0].costledger_model == "x" * 197 + "..."
    assert not [r for r in records if "x" * 198 in r.getMessage()]  # nor a hint after it


def test_a_key_cut_by_the_warning_is_scrubbed_before_the_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the key starts 190 characters in: cut first, its head would match no rule
    records = _warnings(caplog, "m" * 189 + "-" + KEY, None)
    assert records[0].costledger_model == "m" * 189 + "-[REDACTED]"
    assert records[0].getMessage() == (
        f"costledger: no price for model '{'m' * 189}-[REDACTED]'; the call is recorded as "
        "unknown_model with no amount (not $0). Add the model to a price book and re-price "
        "the events."
    )


# -- OpenTelemetry ---------------------------------------------------------------------


def _event(**fields: Any) -> UsageEvent:
    return UsageEvent(
        model="gpt-4o-mini",
        usage=Usage(input_tokens=10, output_tokens=5),
        cost=Cost("priced", total=Decimal("0.0000045"), currency="USD"),
        timestamp=AT,
        **fields,
    )


def test_span_attributes_scrub_a_key_in_the_model_and_id() -> None:
    attributes = costledger.otel.span_attributes(
        _event(
            response_model=f"gpt-4o-mini-{KEY}",
            request_id=f"chatcmpl-{KEY}",
            price_context={"service_tier": f"flex-{KEY}"},
            provider="openai",
        )
    )
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini-[REDACTED]"
    assert attributes["gen_ai.response.id"] == "chatcmpl-[REDACTED]"
    assert attributes["costledger.price_context.service_tier"] == "flex-[REDACTED]"
    assert attributes["openai.response.service_tier"] == "flex-[REDACTED]"
    assert not [key for key, value in attributes.items() if "PLANT" in str(value)]


def test_the_span_name_scrubs_a_key_in_the_model() -> None:
    # The Tracker's events reach the span maker scrubbed; an event that was not (built by
    # hand, read back from a log) is scrubbed by the span maker itself.
    with costledger.otel.capture_spans() as captured:
        maker = costledger.otel._installed
        assert maker is not None
        call = Call(source="api", model="gpt-4o-mini", provider="openai", attribution=EMPTY)
        maker.finished(call, _event(response_model=f"gpt-4o-mini-{KEY}"))
        [span] = captured.spans
    assert span.name == "llm.usage gpt-4o-mini-[REDACTED]"
    assert re.search("PLANT", str(dict(span.attributes or {}))) is None
