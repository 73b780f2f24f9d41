from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costledger import Usage, UsageError


def test_defaults_are_zero_and_properties_split_input() -> None:
    u = Usage(input_tokens=1000, output_tokens=50, cache_read_tokens=600, cache_write_tokens=100)
    assert u.uncached_input_tokens == 300
    assert u.cache_write_5m_tokens == 100
    assert u.total_tokens == 1050
    assert Usage() == Usage(0, 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": True}, "output_tokens"),
        ({"input_tokens": 1.5}, "input_tokens"),
        ({"input_tokens": "ten"}, "input_tokens"),
        ({"input_tokens": 5, "cache_read_tokens": 6}, "cache_read_tokens"),
        ({"input_tokens": 5, "cache_read_tokens": 3, "cache_write_tokens": 3}, "cache_read_tokens"),
        ({"output_tokens": 5, "reasoning_tokens": 6}, "reasoning_tokens"),
        (
            {"input_tokens": 9, "cache_write_tokens": 2, "cache_write_1h_tokens": 3},
            "cache_write_1h_tokens",
        ),
        ({"input_tokens": 1, "input_audio_tokens": 2}, "input_audio_tokens"),
        ({"output_tokens": 1, "output_audio_tokens": 2}, "output_audio_tokens"),
    ],
)
def test_bad_values_name_the_field_and_value(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(UsageError) as info:
        Usage(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


def test_digit_strings_are_accepted_as_counts() -> None:
    assert Usage(input_tokens="12", output_tokens=" 3 ") == Usage(12, 3)  # type: ignore[arg-type]


def test_frozen() -> None:
    u = Usage(1, 1)
    with pytest.raises(AttributeError):
        u.input_tokens = 2  # type: ignore[misc]


counts = st.integers(min_value=0, max_value=10**9)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    cache_read = draw(counts)
    cache_write = draw(counts)
    cache_1h = draw(st.integers(0, cache_write))
    audio_in = draw(counts)
    inp = cache_read + cache_write + draw(counts)
    reasoning = draw(counts)
    out = reasoning + draw(counts)
    return Usage(
        input_tokens=max(inp, audio_in),
        output_tokens=out,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=cache_1h,
        reasoning_tokens=reasoning,
        input_audio_tokens=audio_in,
        output_audio_tokens=draw(st.integers(0, out)),
    )


@given(usages(), usages())
def test_addition_is_fieldwise(a: Usage, b: Usage) -> None:
    s = a + b
    for name, value in s.as_dict().items():
        assert value == getattr(a, name) + getattr(b, name)
    assert s.uncached_input_tokens == a.uncached_input_tokens + b.uncached_input_tokens
