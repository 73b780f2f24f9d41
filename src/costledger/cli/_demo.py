"""``costledger demo``: simulated calls through every entry point, then a cost report. Offline.

LangChain and LiteLLM run when their integrations (``costledger-langchain``,
``costledger-litellm``) are installed; otherwise the report says they were skipped and what
to install.

The demo writes to its own ledger, ``./costledger.db`` unless ``--db`` names another, never
to ``$COSTLEDGER_DATABASE_URL`` (demo rows do not belong in a real ledger). Each run tags its
calls ``demo-run-<id>``; the report covers this run's calls only, and says what else the
ledger holds and the ``costledger report`` commands that show it again.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import typer

from .._redact import redact_url

DEMO_USERS = ("alice", "bob", "carol")
DEMO_DB = "sqlite:///costledger.db"
LITELLM_TIMEOUT = 10.0
"""Seconds to wait for LiteLLM's logging thread to record this run's calls."""


def demo(
    db: str = typer.Option(
        DEMO_DB,
        "--db",
        help="Ledger URL (default: the SQLite file costledger.db here; never "
        "$COSTLEDGER_DATABASE_URL, so demo calls stay out of a real ledger).",
    ),
) -> None:
    """Send simulated calls through the public API and every entry point (LangChain and
    LiteLLM when costledger-langchain and costledger-litellm are installed; the report names
    any skipped); print a cost report of this run's calls and the commands that show it
    again."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    import costledger
    from costledger import Ledger, Tracker, Usage, attribute, track_cost

    console = Console()
    run_tag = f"demo-run-{uuid.uuid4().hex[:8]}"
    ledger = Ledger(db)
    tracker = Tracker(ledger, log="off", project="demo", tags=[run_tag])
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

    # 4. LangChain and LiteLLM, when their integrations are installed; the report says
    # which were skipped and what to install.
    skipped: list[tuple[str, str]] = []
    if _installed("costledger_langchain"):
        ran += _demo_langchain(tracker)
    else:
        skipped.append(("langchain", "costledger-langchain"))
    if _installed("costledger_litellm"):
        ran += _demo_litellm(tracker, run_tag)
    else:
        skipped.append(("litellm", "costledger-litellm"))

    ledger.flush()
    rows = ledger.summary(by=["model"], tag=run_tag)
    everything = ledger.summary()
    table = Table(
        title="costledger demo: this run's calls",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    # Two-line headers keep the table in 80 columns.
    columns = ("model", "calls", "input", "cached", "cache\nwrite", "output", "cost\n(USD)")
    for col in columns:  # amounts are never cut short; a long model name folds
        if col == "model":
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right", no_wrap=True)
    total = Decimal(0)
    unpriced = 0
    calls = 0
    for row in rows:
        cost = row.cost
        unpriced += row.unpriced
        calls += row.requests
        total += cost
        if row.unpriced == row.requests:
            cost_text = "unpriced"
        elif row.unpriced:
            cost_text = f"{_money(cost)} + {row.unpriced} unpriced"
        else:
            cost_text = _money(cost)
        table.add_row(
            str(row.model),
            str(row.requests),
            str(row.input_tokens),
            str(row.cache_read_tokens),
            str(row.cache_write_tokens),
            str(row.output_tokens),
            cost_text,
        )
    console.print(table)
    console.print(f"entry points: {', '.join(ran)}")
    if skipped:
        names = ", ".join(name for name, _ in skipped)
        packages = " ".join(package for _, package in skipped)
        console.print(
            f"skipped: {names} (integration not installed: pip install {packages})",
            soft_wrap=True,
        )
    console.print(
        f"total: {_money(total)} USD"
        + (f"  ({unpriced} unpriced call{'s' if unpriced != 1 else ''})" if unpriced else "")
    )
    in_ledger = sum(row.requests for row in everything)
    earlier = in_ledger - calls
    where = _ledger_name(db)
    if earlier > 0:
        console.print(
            f"ledger: {where} keeps every run: {calls} calls from this run (tag {run_tag}),"
            f" {earlier} from earlier runs",
            soft_wrap=True,
        )
    else:
        console.print(
            f"ledger: {where}, {calls} calls, all from this run (tag {run_tag});"
            " a new run adds its own",
            soft_wrap=True,
        )
    env_db = os.environ.get("COSTLEDGER_DATABASE_URL", "").strip()
    if env_db and env_db != db:
        console.print(
            "note: the demo does not write to $COSTLEDGER_DATABASE_URL; "
            "the commands below read its ledger with --db",
            soft_wrap=True,
        )
    shown = _shell_url(db)
    console.print(
        f"this run again: costledger report --db {shown} --by model --tag {run_tag}",
        soft_wrap=True,
    )
    console.print(f"whole ledger:   costledger report --db {shown} --by model", soft_wrap=True)
    ledger.close()
    _ = costledger  # the demo goes through the public package only


def _ledger_name(db: str) -> str:
    """The ledger's file (absolute) for a SQLite URL, else the URL without its password
    (in the userinfo or as ``?password=``)."""
    from sqlalchemy.engine import make_url

    from .._ledger._engine import display_url

    try:
        url = make_url(db)
    except Exception:  # pragma: no cover - Ledger(db) has already read it
        return redact_url(db)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return os.path.abspath(str(url.database))
    return display_url(url)


def _shell_url(db: str) -> str:
    """``db`` as a shell word to paste: quoted, and a password never printed (it reads
    ``***``: put the real URL in ``$COSTLEDGER_DATABASE_URL`` or type it)."""
    import shlex

    return shlex.quote(redact_url(db))


def _money(amount: Decimal) -> str:
    """Exact, without trailing zeros or exponent notation (0.0250086, not 2.50086E-2)."""
    from .._reports._common import exact_text

    return exact_text(amount)


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

    class DemoChatOpenAI(GenericFakeChatModel):
        """Reports itself as ChatOpenAI does: provider ``openai``, model ``gpt-4o``."""

        def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
            params = super()._get_ls_params(stop=stop, **kwargs)
            params["ls_provider"] = "openai"
            params["ls_model_name"] = "gpt-4o"
            return params

    model = DemoChatOpenAI(messages=answers())
    handler = CostLedgerCallbackHandler(tracker=tracker)
    for user in DEMO_USERS:
        model.invoke(
            "Capital of France?",
            config={"callbacks": [handler], "metadata": {"user": user, "feature": "geo"}},
        )
    return ["langchain"]


def _demo_litellm(tracker: Any, run_tag: str) -> list[str]:
    """LiteLLM with its offline ``mock_response`` (10 prompt, 20 completion tokens)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map download
    import litellm

    from costledger_litellm import CostLedgerLogger

    litellm.telemetry = False
    logger = CostLedgerLogger(tracker=tracker)
    users = DEMO_USERS[:2]
    for user in users:
        # The logger's own wrapper runs the guards first, then LiteLLM, whose callback records.
        logger.completion(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "2 + 2?"}],
            mock_response="4",
            metadata={"user": user, "feature": "calculator"},
            callbacks=[logger],
        )

    # LiteLLM reports sync calls on its own logging thread, just after returning them:
    # wait for this run's own calls (by the run's tag), not for any earlier run's.
    def landed() -> bool:
        found = tracker.ledger.events(source="litellm", tag=run_tag)
        return sum(1 for _ in found) >= len(users)

    if not _wait_until(landed, LITELLM_TIMEOUT):
        print(
            f"warning: LiteLLM had not recorded this run's {len(users)} calls after "
            f"{LITELLM_TIMEOUT:g} s; the report may miss some",
            file=sys.stderr,
        )
    return ["litellm"]


def _installed(module: str) -> bool:
    """Whether ``module`` (an integration package) can be imported here."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, a module without a spec
        return False


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _attribute(**values: Any) -> Any:
    from costledger import attribute

    return attribute(**values)
