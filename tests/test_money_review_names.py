"""Google's resource spelling of a model name, ``models/gemini-2.5-pro`` (the google-genai
SDK, the REST API, LangChain's ChatGoogleGenerativeAI), is the model ``gemini-2.5-pro``."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from costledger import Pricer, Tracker, Usage
from costledger._pricing._names import ModelName, split_name
from costledger.testing import InMemoryLedger

AT = datetime(2026, 12, 1, tzinfo=timezone.utc)
USAGE = Usage(input_tokens=10_000, output_tokens=1_000)
GEMINI_25_PRO = Decimal("0.0225")  # 10000 x $1.25 + 1000 x $10, per MTok
GEMINI_25_FLASH = Decimal("0.0055")  # 10000 x $0.30 + 1000 x $2.50, per MTok


@pytest.mark.parametrize(
    ("model", "provider", "name"),
    [
        (
            "models/gemini-2.5-pro",
            None,
            ModelName("models/gemini-2.5-pro", "gemini-2.5-pro", None, True),
        ),
        (
            "models/gemini-2.5-pro",
            "google",
            ModelName("models/gemini-2.5-pro", "gemini-2.5-pro", "google", True),
        ),
        (
            "gemini/models/gemini-2.5-flash",
            None,
            ModelName("gemini/models/gemini-2.5-flash", "gemini-2.5-flash", "gemini", True),
        ),
        (
            "Models/Gemini-2.5-Pro",
            None,
            ModelName("Models/Gemini-2.5-Pro", "Gemini-2.5-Pro", None, True),
        ),
        # not Google's resource prefix: left whole
        (
            "meta-models/Muse-Glimmer-30B",
            None,
            ModelName("meta-models/Muse-Glimmer-30B", "meta-models/Muse-Glimmer-30B", None, False),
        ),
        ("models/", None, ModelName("models/", "models/", None, False)),
    ],
)
def test_split_name_strips_models_prefix(model: str, provider: str | None, name: ModelName) -> None:
    assert split_name(model, provider) == name


@pytest.mark.parametrize("provider", [None, "google", "google_genai", "gemini", "vertex_ai"])
def test_models_prefix_is_priced_as_the_model(provider: str | None) -> None:
    cost = Pricer().price("models/gemini-2.5-pro", USAGE, provider=provider, at=AT)
    assert cost.status == "priced"
    assert cost.total == GEMINI_25_PRO
    assert cost.model == "gemini-2.5-pro"


def test_tracker_prices_a_gemini_response_named_as_a_resource() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    response = {
        "modelVersion": "models/gemini-2.5-flash",
        "usageMetadata": {"promptTokenCount": 10_000, "candidatesTokenCount": 1_000},
    }
    event = tracker.record(
        "models/gemini-2.5-flash", payload=response, provider="google_genai", started_at=AT
    )
    assert event.cost.total == GEMINI_25_FLASH
    assert event.model == "models/gemini-2.5-flash"  # stored as given


def test_a_book_entry_under_the_short_name_prices_the_resource_name() -> None:
    pricer = Pricer(overrides={"gemini-2.5-pro": {"input": "1", "output": "8"}})
    cost = pricer.price("models/gemini-2.5-pro", USAGE, provider="google", at=AT)
    assert cost.total == Decimal("0.018")
