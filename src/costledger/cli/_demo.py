"""``costledger demo``: simulated calls through every entry point, then a cost report. Offline."""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer

from .._cost import money_text

DEMO_USERS = ("alice", "bob", "carol")


def demo(
    db: str = typer.Option(
        "sqlite:///costledger.db", "--db", help="Ledger URL (default: a SQLite file here)."
    ),
) -> None:
    """Send simulated calls through the public API and every entry point; print a cost report."""
    from rich.console import Console
    from rich.table import Table

    import costledger
    from costledger import Ledger, Tracker, Usage, attribute, track_cost

    console = Console()
    ledger = Ledger(db)
    tracker = Tracker(ledger, log="off", project="demo")
    ran: list[str] = []

    # 1. The public API: a finished call recorded in one step.
    for i, user in enumerate(DEMO_USERS):
        tracker.record(
            "gpt-4o-mini",
            Usage(input_tokens=1200 + 100 * i, output_tokens=300, cache_read_tokens=1024),
            provider="openai",
            attribution={"user": user, "feature": "search"},
        )
    tracker.record(
        "claude-sonnet-4-20250514",
        Usage(input_tokens=5000, output_tokens=800, cache_read_tokens=4000, cache_write_tokens=500),
        provider="anthropic",
        attribution={"user": "alice", "feature": "summarise"},
    )
    tracker.record("my-private-finetune", Usage(input_tokens=100, output_tokens=10))
    ran.append("api")

    # 2. The decorator, on a function returning an OpenAI-shaped response.
    @track_cost(tracker=tracker, feature="chat")
    def answer(question: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-demo",
            "model": "gpt-4.1-2025-04-14",
            "usage": {"prompt_tokens": 40 + len(question), "completion_tokens": 25},
        }

    with attribute(user="bob"):
        for q in ("what is a ledger?", "why Decimal?"):
            answer(q)
    ran.append("decorator")

    # 3. The HTTP transport, against an in-process OpenAI-compatible endpoint.
    if importlib.util.find_spec("costledger.http") is not None:
        ran += _demo_http(tracker)

    # 4. LangChain and LiteLLM, when their integrations are installed.
    if importlib.util.find_spec("costledger_langchain") is not None:
        ran += _demo_langchain(tracker)
    if importlib.util.find_spec("costledger_litellm") is not None:
        ran += _demo_litellm(tracker)

    ledger.flush()
    rows = ledger.summary(by=["model"])
    table = Table(title=f"costledger demo: {Path(db.split('///')[-1]).name}")
    for col in ("model", "requests", "input", "cached", "output", "cost (USD)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    total = Decimal(0)
    unpriced = 0
    for row in rows:
        cost = row.cost
        unpriced += row.unpriced
        total += cost
        table.add_row(
            str(row.model),
            str(row.requests),
            str(row.input_tokens),
            str(row.cache_read_tokens),
            str(row.output_tokens),
            f"{_money(cost)} + {row.unpriced} unpriced" if row.unpriced else _money(cost),
        )
    console.print(table)
    console.print(f"entry points: {', '.join(ran)}")
    console.print(
        f"total: {_money(total)} USD" + (f"  ({unpriced} unpriced calls)" if unpriced else "")
    )
    ledger.close()
    _ = costledger  # the demo goes through the public package only


def _money(amount: Decimal) -> str:
    """Exact, without trailing zeros or exponent notation (0.0250086, not 2.50086E-2)."""
    from .._reports._common import canonical

    return money_text(canonical(amount))


def _demo_http(tracker: Any) -> list[str]:
    """An httpx client whose transport tracks OpenAI-compatible calls (served in-process)."""
    import httpx

    from costledger.http import TrackingTransport

    def provider(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-demo-http",
                "object": "chat.completion",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                "usage": {
                    "prompt_tokens": 2048,
                    "completion_tokens": 120,
                    "prompt_tokens_details": {"cached_tokens": 1536},
                },
            },
        )

    transport = TrackingTransport(httpx.MockTransport(provider), tracker=tracker)
    with (
        httpx.Client(transport=transport, base_url="https://api.openai.com/v1") as client,
        _attribute(user="carol", feature="http"),
    ):
        client.post(
            "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
    return ["http"]


def _demo_langchain(tracker: Any) -> list[str]:
    """A LangChain chat model (a fake one that reports usage like ChatOpenAI) and the handler."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from costledger_langchain import CostLedgerCallbackHandler

    def answers() -> Any:
        while True:
            yield AIMessage(
                content="Paris.",
                usage_metadata={
                    "input_tokens": 900,
                    "output_tokens": 60,
                    "total_tokens": 960,
                    "input_token_details": {"cache_read": 512},
                },
                response_metadata={"model_name": "gpt-4o-2024-08-06"},
            )

    model = GenericFakeChatModel(messages=answers())
    handler = CostLedgerCallbackHandler(tracker=tracker)
    for user in DEMO_USERS:
        model.invoke(
            "Capital of France?",
            config={"callbacks": [handler], "metadata": {"user": user, "feature": "geo"}},
        )
    return ["langchain"]


def _demo_litellm(tracker: Any) -> list[str]:
    """LiteLLM with its offline ``mock_response`` (10 prompt, 20 completion tokens)."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map download
    import litellm

    from costledger_litellm import CostLedgerLogger

    litellm.telemetry = False
    logger = CostLedgerLogger(tracker=tracker)
    for user in DEMO_USERS[:2]:
        # The logger's own wrapper runs the guards first, then LiteLLM, whose callback records.
        logger.completion(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "2 + 2?"}],
            mock_response="4",
            metadata={"user": user, "feature": "calculator"},
            callbacks=[logger],
        )
    _wait_until(lambda: sum(1 for _ in tracker.ledger.events(source="litellm")) >= 2)
    return ["litellm"]


def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    """LiteLLM reports sync calls on its own logging thread, just after returning them."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tracker_ready = condition()
        if tracker_ready:
            return
        time.sleep(0.02)


def _attribute(**values: Any) -> Any:
    from costledger import attribute

    return attribute(**values)
