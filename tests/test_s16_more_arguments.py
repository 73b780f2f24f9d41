"""The last public functions taking ``tracker=`` check it, as the entry points do
(1d1e572): a ledger URL given as the tracker failed later with an AttributeError."""

from __future__ import annotations

from typing import Any

import pytest

from costledger import budget_status
from costledger._dashboard import build_dashboard, serve_dashboard

URL = "sqlite:///costs.db"
HINT = "(for a ledger URL: tracker=Tracker(Ledger(url)))"


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("budget_status()", lambda: budget_status(URL)),
        ("build_dashboard()", lambda: build_dashboard("sqlite://", tracker=URL)),
        ("serve_dashboard()", lambda: serve_dashboard("sqlite://", tracker=URL)),
    ],
)
def test_a_tracker_that_is_not_one_is_refused_naming_the_function(name: str, call: Any) -> None:
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value) == (
        f"{name} tracker must be a costledger Tracker or None, got str '{URL}' {HINT}"
    )
