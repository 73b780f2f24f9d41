"""costledger at the HTTP layer, offline: the OpenAI and Anthropic SDKs, and a plain client.

Run: python examples/http_example.py

No API key and no network: a local fake provider (``tests/_fake_provider.py``) answers
on 127.0.0.1 in OpenAI's and Anthropic's real shapes, streams included. Each call's
exact cost is recorded in a SQLite ledger and printed.

Run it from a checkout of costledger (the fake provider lives in its tests), with the
SDKs it calls: ``pip install -e '.[dev]'`` installs them (openai, anthropic, httpx2).
"""

from __future__ import annotations

import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai

import costledger
from costledger import Budget, BudgetExceeded, Ledger, UsageEvent, attribute
from costledger.http import (
    Client,
    Httpx2TrackingTransport,
    TrackingTransport,
    raise_guard_refusals,
)
from costledger.testing import capture_costs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests._fake_provider import FakeProvider, openai_error

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]


def show(label: str, event: UsageEvent) -> None:
    usage = event.usage
    print(
        f"{label:<22} {event.response_model or event.model:<28} "
        f"{usage.input_tokens:>5} in ({usage.cache_read_tokens} cached) "
        f"{usage.output_tokens:>4} out  {event.status:<9} "
        + (f"${event.cost.total:f}" if event.cost.total is not None else f"({event.error_type})")
    )


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeProvider() as fake,
        capture_costs(isolate=False) as captured,  # to print each call as it is recorded
    ):
        ledger = Ledger(f"sqlite:///{tmp}/costs.db")
        costledger.configure(ledger=ledger, log="off", team="search")

        # 1. The OpenAI SDK: one transport under its httpx2 client, every call tracked.
        # (Closing an SDK client closes the httpx2 client it was given.)
        with openai.OpenAI(
            base_url=fake.openai_url,
            api_key="sk-example",
            http_client=httpx2.Client(transport=Httpx2TrackingTransport()),
        ) as gpt:
            with attribute(user="ada", feature="greeting"):
                gpt.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            show("openai chat", captured.events[-1])

            # 2. A stream: usage is read from its last chunk as it passes, nothing is buffered.
            # (The transport asked for that chunk: stream_options.include_usage.)
            stream = gpt.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            show(f"openai stream {text!r}", captured.events[-1])

            # 3. The Anthropic SDK, the same way; its middleware lets a budget's refusal through.
            with (
                anthropic.Anthropic(
                    base_url=fake.base_url,
                    api_key="sk-ant-example",
                    http_client=httpx2.Client(transport=Httpx2TrackingTransport()),
                    middleware=[raise_guard_refusals],
                ) as claude,
                claude.messages.stream(
                    model="claude-3-5-haiku-20241022", max_tokens=300, messages=MESSAGES
                ) as messages,
            ):
                messages.get_final_message()
            show("anthropic stream", captured.events[-1])

            # 4. Plain httpx: any client, the same tracking (TrackingTransport is for httpx).
            with httpx.Client(transport=TrackingTransport()) as http:
                http.post(
                    f"{fake.openai_url}/embeddings",
                    json={"model": "text-embedding-3-small", "input": "hello"},
                )
            show("httpx embeddings", captured.events[-1])

            # 5. No SDK: costledger's own client; a 429 is retried after its Retry-After.
            fake.enqueue("/chat/completions", openai_error(429, retry_after="0.05"))
            with Client(fake.openai_url, "sk-example") as client:
                client.chat("gpt-4o-mini", MESSAGES)
            show("client (429)", captured.events[-2])
            show("client (retried)", captured.events[-1])

            # 6. A budget refuses a call before any request leaves the process.
            costledger.configure(ledger=ledger, log="off", guards=[Budget("0.000001 USD", "day")])
            sent = len(fake.requests)
            try:
                gpt.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=500)
            except BudgetExceeded as refusal:
                print(
                    f"{'budget':<22} refused: {refusal} ({len(fake.requests) - sent} requests sent)"
                )

        ledger.flush()
        rows = list(ledger.events())
        total = sum((r.total_cost for r in rows if r.total_cost is not None), Decimal(0))
        print(f"ledger: {len(rows)} calls recorded, ${total} in all")
        ledger.close()


if __name__ == "__main__":
    main()
