"""``tracking()`` takes attribution names as ``costledger.attribute`` does: a numeric, UUID
or bytes id is text, and a falsy one (``user=0``) is still an id."""

from __future__ import annotations

import inspect
import uuid

import pytest
from langchain_fakes import UsageChatModel

import costledger
from costledger import Tracker
from costledger.testing import InMemoryLedger
from costledger_langchain import tracking


def test_numeric_and_falsy_ids_are_attributed() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    model = UsageChatModel()
    org = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with tracking(tracker, user=0, team=7, project=org, feature=b"search", tags=[b"vip", 3]):
        model.invoke("hi")
    with tracking(tracker, user=42), tracking(team=0):
        model.invoke("hi")
    assert costledger.drain_deferred(10)
    rows = [(e.user, e.team, e.project, e.feature, list(e.tags)) for e in tracker.ledger.events()]
    assert rows == [
        ("0", "7", "12345678-1234-5678-1234-567812345678", "search", ["vip", "3"]),
        ("42", "0", None, None, []),
    ]


def test_a_name_without_text_is_refused_naming_the_field() -> None:
    class NoText:
        def __str__(self) -> str:
            raise ValueError("no text")

    with (
        pytest.raises(TypeError, match="attribute\\(\\) team must be text"),
        tracking(team=NoText()),
    ):
        pass


def test_annotations_are_those_of_costledger_attribute() -> None:
    ours = inspect.signature(tracking).parameters
    theirs = inspect.signature(costledger.attribute).parameters
    for name in ("user", "team", "project", "feature", "tags"):
        assert ours[name].annotation == theirs[name].annotation, name
        assert ours[name].default == theirs[name].default, name
