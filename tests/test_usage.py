"""``Usage``'s bound on a token count: 10^16 per field, so the ledger's 64-bit sums of a
group's tokens cannot be reached by a handful of calls (see docs/ledger.md, Exactness)."""

from __future__ import annotations

import pytest

from costledger import Usage, UsageError
from costledger._usage import MAX_TOKENS, TOKEN_FIELDS, check_count


def test_the_bound_is_ten_to_the_fifteen_and_holds_exactly() -> None:
    assert MAX_TOKENS == 10_000_000_000_000_000
    top = Usage(
        input_tokens=MAX_TOKENS,
        output_tokens=MAX_TOKENS,
        cache_read_tokens=MAX_TOKENS // 2,
        cache_write_tokens=MAX_TOKENS // 2,
        cache_write_1h_tokens=MAX_TOKENS // 2,
        reasoning_tokens=MAX_TOKENS,
        input_audio_tokens=MAX_TOKENS,
        output_audio_tokens=MAX_TOKENS,
    )
    assert top.input_tokens == top.output_tokens == 10_000_000_000_000_000
    assert check_count("input_tokens", str(MAX_TOKENS)) == MAX_TOKENS


@pytest.mark.parametrize("field", TOKEN_FIELDS)
@pytest.mark.parametrize("value", [MAX_TOKENS + 1, 2**62, 2**64, str(MAX_TOKENS + 1)])
def test_a_count_past_the_bound_names_the_field_and_the_value(field: str, value: object) -> None:
    with pytest.raises(UsageError) as info:
        Usage(**{field: value})  # type: ignore[arg-type]
    # the value as given: a digit string is shown (and kept) as that text
    assert str(info.value) == f"usage field {field!r} must be at most 10^16 tokens, got {value!r}"
    assert (info.value.field, info.value.value) == (field, value)


def test_a_sum_past_the_bound_is_refused_too() -> None:
    half = Usage(input_tokens=MAX_TOKENS // 2 + 1)
    with pytest.raises(UsageError, match="'input_tokens' must be at most 10"):
        half + half
