"""One masking of database and store URLs for every message: userinfo passwords and
secret query parameters alike."""

from __future__ import annotations

import pytest

from costledger._guards._store import display_url as store_display
from costledger._ledger._engine import display_url as ledger_display
from costledger._ledger._engine import resolve_url
from costledger._redact import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://u:pw@h/db?password=hunter2&sslmode=require",
            "postgresql+psycopg://u:***@h/db?password=***&sslmode=require",
        ),
        (
            "postgresql+psycopg://u@h/db?PassWord=hunter2",
            "postgresql+psycopg://u@h/db?PassWord=***",
        ),
        ("sqlite:////tmp/l.db?secret=s3", "sqlite:////tmp/l.db?secret=***"),
    ],
)
def test_ledger_urls_hide_query_passwords(url: str, shown: str) -> None:
    assert ledger_display(resolve_url(url)) == shown


def test_stores_and_ledgers_share_one_masking() -> None:
    assert store_display is redact_url
    assert (
        redact_url("unix:///tmp/r.sock?password=x&db=3") == "unix:///tmp/r.sock?password=***&db=3"
    )
