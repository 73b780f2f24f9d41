"""LiteLLM lines' attribution is cached by value (``_convert._attribution_of``): the cached
answer is always the one ``Attribution.from_mapping`` gives, for values that are equal
but of other types (``1``, ``True``, ``"1"``, ``1.0``) too."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from costledger._attribution import Attribution
from costledger._ingest import _convert
from costledger._ingest._convert import _attribution_of

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, 2, -1, 0.0, -0.0, 1.0, float("nan"), "", "1", "0", "a", "b"]),
    st.text(max_size=4),
)
_value = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=3),
    st.dictionaries(st.sampled_from(["x", "tags"]), _scalar, max_size=2),
)
_key = st.sampled_from(["user", "team", "project", "feature", "tags", "region", "n", "metadata"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.dictionaries(_key, _value, max_size=5), min_size=1, max_size=6))
def test_cached_attribution_is_from_mappings(values: list[dict[str, Any]]) -> None:
    _convert._ATTRIBUTIONS.clear()
    for _ in range(2):  # the second time from the cache, where it was cached
        for mapping in values:
            assert _attribution_of(mapping) == Attribution.from_mapping(mapping)


def test_equal_values_of_other_types_are_not_one_entry() -> None:
    _convert._ATTRIBUTIONS.clear()
    for user in (1, True, "1", 1.0, None):
        mapping = {"user": user, "team": "t", "tags": ["a", "b"], "flag": user}
        assert _attribution_of(mapping) == Attribution.from_mapping(mapping)
    for tags in (["1"], ["1", "1"], [], ["a", "b"], ["b", "a"]):
        mapping = {"user": "u", "tags": tags}
        assert _attribution_of(mapping) == Attribution.from_mapping(mapping)


def test_a_litellm_proxys_attribution_is_cached() -> None:
    _convert._ATTRIBUTIONS.clear()
    mapping = {"user": "u-1", "team": "search", "feature": "chat", "tags": ["prod"]}
    first = _attribution_of(mapping)
    assert _attribution_of(dict(mapping)) is first
    assert first == Attribution(user="u-1", team="search", feature="chat", tags=("prod",))
