"""A token count too long for Python to write as text (past 4,300 digits) is refused with
the ``UsageError`` naming its field, like any count past 10^16, not with the bare
``ValueError`` Python raised while the error message was being written."""

from __future__ import annotations

from typing import Any

import pytest

from costledger import Usage, UsageError, extract_usage

HUGE = 10**5000  # repr() and str() raise ValueError for it
SHOWN = "<int of about 5001 digits>"


def test_usage_refuses_a_huge_count_naming_the_field() -> None:
    with pytest.raises(UsageError) as caught:
        Usage(input_tokens=HUGE)
    assert (caught.value.field, str(caught.value)) == (
        "input_tokens",
        f"usage field 'input_tokens' must be at most 10^16 tokens, got {SHOWN}",
    )


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        (
            {"prompt_tokens": HUGE, "completion_tokens": 1},
            "prompt_tokens",
            f"usage field 'prompt_tokens' gives {SHOWN} input tokens in all, more than the "
            "10^16 one call may count",
        ),
        (
            {"prompt_tokens": "9" * 5000, "completion_tokens": 1},
            "prompt_tokens",
            "usage field 'prompt_tokens' must be at most 10^16 tokens, got '" + "9" * 76 + "...",
        ),
        (
            {
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": HUGE},
            },
            "prompt_tokens_details.cached_tokens",
            f"usage 'prompt_tokens_details.cached_tokens' = {SHOWN} exceed the input they are "
            "part of: 'prompt_tokens' gives 5 input tokens in all",
        ),
        (
            {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": HUGE},
            "cache_read_input_tokens",
            f"usage field 'cache_read_input_tokens' must be at most 10^16 tokens, got {SHOWN}",
        ),
    ],
)
def test_extract_usage_refuses_a_huge_count_naming_the_field(
    payload: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        extract_usage(payload)
    assert (caught.value.field, str(caught.value)) == (field, message)


def test_a_digit_string_with_thousands_of_leading_zeros_is_its_number() -> None:
    usage = extract_usage({"prompt_tokens": "0" * 5000 + "12", "completion_tokens": "007"})
    assert (usage.input_tokens, usage.output_tokens) == (12, 7)
