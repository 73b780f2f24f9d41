"""Two calls a LiteLLM Proxy logged under one ``litellm_call_id`` (a client sending its
``x-litellm-call-id`` again) are two events on ingest, ``<id>`` and ``<id>:2``, as the live
integration records them; the same call logged twice stays one, and so does a file ingested
again, resumed, or ingested into the ledger the live integration wrote. Real files, real
SQLite, real ``litellm`` Router calls through the real proxy hook for the live side."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before LiteLLM is imported

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from costledger._ingest import ingest
from costledger._ledger._engine import resolve_url
from costledger._pricing import Pricer

from .ingest_support import pricer

__all__ = ["pricer"]  # fixtures

# gpt-4o-mini, 1000 input and 100 output tokens: 1000 * $0.15/M + 100 * $0.60/M
_CALL_COST = Decimal("0.00021")


def _payload(call_id: str, response_id: str | None, start: float, **extra: Any) -> bytes:
    response: dict[str, Any] = {
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
    }
    if response_id is not None:
        response["id"] = response_id
    return orjson.dumps(
        {
            "litellm_call_id": call_id,
            "status": "success",
            "custom_llm_provider": "openai",
            "model": "gpt-4o-mini",
            "startTime": start,
            "endTime": start + 0.5,
            "response": response,
            **extra,
        }
    )


def _rows(url: str) -> dict[str, tuple[str | None, Decimal | None]]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, request_id, total_cost FROM costledger_events"
            ).all()
            return {r[0]: (r[1], None if r[2] is None else Decimal(r[2])) for r in rows}
    finally:
        engine.dispose()


T = 1748779200.25
A = _payload("call-7", "chatcmpl-a", T)
B = _payload("call-7", "chatcmpl-b", T + 2)
C = _payload("call-7", "chatcmpl-c", T + 4)


def test_a_second_call_under_one_call_id_is_stored_as_id_2(tmp_path: Path, pricer: Pricer) -> None:
    """It was counted a duplicate of the first: one call of two in the ledger."""
    log = tmp_path / "proxy.jsonl"
    log.write_bytes(A + b"\n" + B + b"\n")
    url = f"sqlite:///{tmp_path / 'l.db'}"

    result = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")

    assert (result.accepted, result.duplicates, result.rejected) == (2, 0, 0)
    assert result.costs == {"USD": 2 * _CALL_COST}
    assert _rows(url) == {
        "call-7": ("chatcmpl-a", _CALL_COST),
        "call-7:2": ("chatcmpl-b", _CALL_COST),
    }
    assert result.inputs[0].notes == (
        "1 LiteLLM call(s) logged under a litellm_call_id another call (another response id) "
        "already has were stored as <call id>:<n>, as the live integration stores a proxy "
        "call id a client sent again",
    )

    # read again from the start, and as a rotated copy: nothing added
    again = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck", resume=False)
    assert (again.accepted, again.duplicates, again.inputs[0].notes) == (0, 2, ())
    copy = tmp_path / "proxy.jsonl.1"
    copy.write_bytes(log.read_bytes())
    assert ingest(copy, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck").accepted == 0
    assert len(_rows(url)) == 2


def test_the_ids_do_not_depend_on_where_a_run_resumed(tmp_path: Path, pricer: Pricer) -> None:
    """Each line in a batch of its own, over three runs of a growing log, gives the ids one
    run over the whole log gives; a call logged twice (a shipper's retry) stays one."""
    log = tmp_path / "proxy.jsonl"
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    log.write_bytes(A + b"\n")
    assert ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, batch_lines=1).accepted == 1
    with log.open("ab") as out:
        out.write(B + b"\n" + A + b"\n")
    second = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, batch_lines=1)
    assert (second.inputs[0].resumed_at_line, second.accepted, second.duplicates) == (2, 1, 1)
    with log.open("ab") as out:
        out.write(C + b"\n" + B + b"\n")
    third = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, batch_lines=1)
    assert (third.accepted, third.duplicates) == (1, 1)

    expected = {
        "call-7": ("chatcmpl-a", _CALL_COST),
        "call-7:2": ("chatcmpl-b", _CALL_COST),
        "call-7:3": ("chatcmpl-c", _CALL_COST),
    }
    assert _rows(url) == expected
    once_url = f"sqlite:///{tmp_path / 'once.db'}"
    once = ingest(log, ledger=once_url, pricer=pricer, checkpoint_dir=ck)
    assert (once.accepted, once.duplicates) == (3, 2)
    assert _rows(once_url) == expected


def test_without_response_ids_the_start_tells_two_calls_apart(
    tmp_path: Path, pricer: Pricer
) -> None:
    log = tmp_path / "proxy.jsonl"
    first = _payload("call-8", None, T)
    second = _payload("call-8", None, T + 1)
    log.write_bytes(b"\n".join([first, second, first, second]) + b"\n")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    result = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")
    assert (result.accepted, result.duplicates) == (2, 2)
    assert _rows(url) == {"call-8": (None, _CALL_COST), "call-8:2": (None, _CALL_COST)}


def test_a_failed_attempt_keeps_its_own_id(tmp_path: Path, pricer: Pricer) -> None:
    """A failure is ``<id>:failed:<start>`` already: never renumbered, and never taken for
    the call's success."""
    failure = orjson.dumps(
        {
            "litellm_call_id": "call-9",
            "status": "failure",
            "custom_llm_provider": "openai",
            "model": "gpt-4o-mini",
            "startTime": T,
            "endTime": T + 0.5,
            "error_information": {"error_class": "RateLimitError"},
        }
    )
    log = tmp_path / "proxy.jsonl"
    log.write_bytes(failure + b"\n" + failure + b"\n" + _payload("call-9", "r-9", T + 1) + b"\n")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    result = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")
    assert (result.accepted, result.duplicates) == (2, 1)
    assert _rows(url) == {
        "call-9": ("r-9", _CALL_COST),
        "call-9:failed:1748779200250000": (None, None),
    }


# -- the live integration's ids ------------------------------------------------------------------

litellm = pytest.importorskip("litellm")
costledger_litellm = pytest.importorskip("costledger_litellm")

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

from costledger import Budget, Tracker  # noqa: E402
from costledger._ledger import Ledger  # noqa: E402

_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


class _PayloadFile(CustomLogger):
    """Writes every ``standard_logging_object`` as one JSON line, as a log shipper would."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.count = 0
        self._lock = threading.Lock()

    def _write(self, kwargs: Any) -> None:
        line = orjson.dumps(kwargs["standard_logging_object"], default=str)
        with self._lock, self.path.open("ab") as f:
            f.write(line + b"\n")
            self.count += 1

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._write(kwargs)


@pytest.fixture
def isolated_litellm() -> Iterator[None]:
    saved = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    for name in _CALLBACK_LISTS:
        setattr(litellm, name, [])
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(litellm, name, value)


async def _wait(condition: Any) -> None:
    import asyncio

    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("LiteLLM's callbacks did not all run")


@pytest.mark.usefixtures("isolated_litellm")
async def test_the_ids_match_the_live_integrations_for_a_resent_proxy_call_id(
    tmp_path: Path, pricer: Pricer
) -> None:
    """The real proxy hook opens a resent call id's second request as ``<id>:2``; the same
    requests' logged payloads, ingested into the live ledger, are duplicates of those two
    events, and into an empty one give the same two ids."""
    try:
        from litellm.proxy._types import UserAPIKeyAuth
    except ImportError as exc:  # the proxy's types need fastapi
        pytest.skip(f"LiteLLM Proxy types unavailable: {exc}")
    call_id = f"client-req-{uuid.uuid4()}"
    live_url = f"sqlite:///{tmp_path / 'live.db'}"
    payloads = _PayloadFile(tmp_path / "proxy.jsonl")
    with Ledger(live_url, sync=True) as live:
        budget = Budget("10 USD", "day", per="team", name=f"s13-{uuid.uuid4()}")
        tracker = Tracker(live, guards=[budget], log="off")
        logger = costledger_litellm.CostLedgerLogger(tracker)
        litellm.callbacks = [logger, payloads]
        router = litellm.Router(
            model_list=[
                {
                    "model_name": "gpt-4o-mini",
                    "litellm_params": {
                        "model": "gpt-4o-mini",
                        "api_key": "sk-t",
                        "mock_response": "4",
                    },
                }
            ]
        )
        key = UserAPIKeyAuth(team_id="search")
        for _ in range(2):
            data = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "What is 2 + 2?"}],
                "litellm_call_id": call_id,
            }
            await logger.async_pre_call_hook(key, None, data, "acompletion")
            await router.acompletion(**data)
        await _wait(lambda: payloads.count == 2 and len(list(live.events())) == 2)
        live_ids = {e.id: e.request_id for e in live.events()}
    assert set(live_ids) == {call_id, f"{call_id}:2"}

    into_live = ingest(payloads.path, ledger=live_url, pricer=pricer, checkpoint_dir=tmp_path)
    assert (into_live.accepted, into_live.duplicates, into_live.rejected) == (0, 2, 0)

    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = ingest(payloads.path, ledger=fresh_url, pricer=pricer, checkpoint_dir=tmp_path)
    assert (fresh.accepted, fresh.duplicates) == (2, 0)
    assert {i: r for i, (r, _) in _rows(fresh_url).items()} == live_ids
