"""``Tracker``'s arguments are checked where it is built: a ledger given as a database URL
(the form ``report`` and ``top`` take) records there, and a ledger, pricer, logger, guard
or callback that is not one is a ``TypeError`` naming the argument and the value, where it
used to fail at every call in the background (a ledger URL: every call lost, one
rate-limited warning; a guard spec: every call let through)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from costledger import Budget, Ledger, Pricer, Tracker, Usage, configure, get_tracker
from costledger._tracker import Call
from costledger.testing import InMemoryLedger, MemoryStore

# gpt-4o-mini: 0.15 USD per million input tokens, 0.60 output.
COST_10_20 = Decimal("0.0000135")


def _stored(url: str) -> list[tuple[str, Decimal | None]]:
    with Ledger(url, sync=True) as ledger:
        return [(e.model or "", e.total_cost) for e in ledger.events()]


def test_a_ledger_url_records_to_that_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    tracker = Tracker(url, log="off")
    assert isinstance(tracker.ledger, Ledger)
    for _ in range(3):
        tracker.record("gpt-4o-mini", Usage(10, 20))
    assert tracker.ledger.flush(timeout=30)
    tracker.ledger.close()
    assert _stored(url) == [("gpt-4o-mini", COST_10_20)] * 3


def test_a_sqlalchemy_url_and_configure_ledger_url_record_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    tracker = Tracker(sqlalchemy.engine.make_url(url), log="off")
    tracker.record("gpt-4o-mini", Usage(10, 20))
    tracker.ledger.close()  # type: ignore[attr-defined]
    from costledger import _tracker

    before = _tracker._default
    try:
        configured = configure(ledger=url, log="off")
        assert get_tracker() is configured
        configured.record("gpt-4o-mini", Usage(10, 20))
        configured.ledger.close()  # type: ignore[attr-defined]
    finally:
        _tracker._set_default(before)
    assert _stored(url) == [("gpt-4o-mini", COST_10_20)] * 2


def test_a_bad_ledger_url_is_refused_naming_the_ledger() -> None:
    with pytest.raises(ValueError, match=r"^Tracker ledger: database url 'nonsense' is not a"):
        Tracker("nonsense")


def test_building_a_tracker_with_a_url_opens_nothing(tmp_path: Path) -> None:
    Tracker(f"sqlite:///{tmp_path / 'sub' / 'costs.db'}", log="off")
    assert list(tmp_path.iterdir()) == []


def test_import_costledger_still_does_not_import_sqlalchemy() -> None:
    code = "import sys, costledger; costledger.Tracker(); print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"ledger": 5},
            "Tracker ledger must be a Ledger, a database URL or an object with record(event), "
            "got int 5",
        ),
        (
            {"pricer": "x"},
            "Tracker pricer must be a Pricer (or an object with price()), got str 'x'",
        ),
        (
            {"logger": "x"},
            "Tracker logger must be a UsageLogger (or an object with emit()), got str 'x'",
        ),
        (
            {"guards": ["0.000001 USD/day"]},
            "Tracker guards must be guards (Budget, RateLimit, TokenRateLimit, or objects with "
            "reserve, settle and release), got str '0.000001 USD/day' (no reserve, settle, "
            "release)",
        ),
        (
            {"guards": "10 USD/day"},
            "Tracker guards must be a list of guards (guards=[Budget(...)]), got str '10 USD/day'",
        ),
        (
            {"guards": Budget("1 USD", "day")},
            "Tracker guards must be a list of guards (guards=[Budget(...)]), got Budget "
            "Budget('1 USD/day', hard=True)",
        ),
        (
            {"alerts": print},
            "Tracker alerts must be a list of callbacks (alerts=[callback]), got "
            "builtin_function_or_method <built-in function print>",
        ),
    ],
)
def test_what_is_not_a_ledger_pricer_logger_guard_or_callback_is_refused(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError) as info:
        Tracker(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_an_object_with_the_methods_is_accepted() -> None:
    class Guard:
        def reserve(self, call: Call, tracker: Tracker) -> None:
            return None

        def settle(self, token: object, event: object) -> None: ...

        def release(self, token: object) -> None: ...

    guard = Guard()
    tracker = Tracker(InMemoryLedger(), Pricer(), [guard], log="off", alerts=[print])
    assert tracker.guards == (guard,)
    assert tracker.alerts == (print,)
    assert tracker.record("gpt-4o-mini", Usage(10, 20)).cost.total == COST_10_20


# -- log= ------------------------------------------------------------------------------------


@pytest.mark.parametrize("log", ["bogus", "stdot", "strucltog"])
def test_log_text_that_is_no_keyword_and_no_path_is_refused(log: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        Tracker(InMemoryLedger(), log=log)
    assert str(info.value) == (
        "Tracker log must be 'auto', 'off', 'stdout', 'stderr', 'structlog' or a file path, "
        f"got {log!r}; for a file without a suffix in this directory, write './{log}'"
    )


def test_log_keywords_paths_and_streams_are_accepted(tmp_path: Path) -> None:
    assert repr(Tracker(InMemoryLedger(), log=" Off ").logger) == "UsageLogger(output='off')"
    path = tmp_path / "usage.jsonl"
    tracker = Tracker(InMemoryLedger(), log=str(path))
    tracker.record("gpt-4o-mini", Usage(10, 20))
    tracker.logger.close()
    assert '"costledger.cost.total":"0.00001350"' in path.read_text().replace(" ", "")
    Tracker(InMemoryLedger(), log=tmp_path / "usage")  # a PathLike
    Tracker(InMemoryLedger(), log=str(tmp_path / "usage"))  # a directory in it
    Tracker(InMemoryLedger(), log=sys.stderr)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Tracker log must be .*got int 123$"):
        Tracker(InMemoryLedger(), log=123)  # type: ignore[arg-type]


# -- astart -------------------------------------------------------------------------------------


def test_astart_has_the_signature_of_start() -> None:
    start = inspect.signature(Tracker.start)
    astart = inspect.signature(Tracker.astart)
    wanted = [p for p in start.parameters.values() if p.name != "_reserve"]
    assert list(astart.parameters.values()) == wanted


def test_astart_reserves_with_the_given_arguments() -> None:
    import asyncio

    from costledger import BudgetExceeded

    tracker = Tracker(
        InMemoryLedger(),
        guards=[Budget("0.01 USD", "day")],
        guard_store=MemoryStore(),
        log="off",
    )

    async def main() -> tuple[str, str | None]:
        call = await tracker.astart(
            source="api", model="gpt-4o-mini", call_id="c-1", estimate=Decimal("0.004")
        )
        event = tracker.finish(call, usage=Usage(10, 20))
        assert event is not None
        assert event.cost.total == COST_10_20
        with pytest.raises(BudgetExceeded):
            await tracker.astart(source="api", model="gpt-4o-mini", estimate=Decimal("0.02"))
        return call.id, call.model

    assert asyncio.run(main()) == ("c-1", "gpt-4o-mini")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"ledger": InMemoryLedger},
            "Tracker ledger must be an instance, got the class InMemoryLedger",
        ),
        ({"pricer": Pricer}, "Tracker pricer must be an instance, got the class Pricer"),
        ({"guards": [Budget]}, "Tracker guards must be an instance, got the class Budget"),
    ],
)
def test_a_class_where_an_instance_belongs_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        Tracker(log="off", **kwargs)
