"""Text that both databases store: no NUL character, no lone surrogate.

PostgreSQL's ``text`` and ``jsonb`` take no NUL character, and neither database driver
can encode a lone surrogate (``"\\ud83d"``, half of a UTF-16 pair: what a string cut in
the middle of an emoji, or JSON with such an escape, holds) as UTF-8: either made the
database reject the whole event. Every text the ledger stores, in a column or inside
its JSON, is cleaned here when the row is built: NUL is left out, a lone surrogate
becomes U+FFFD (the replacement character), and a surrogate pair held as two code
points becomes the one character it encodes. The same on SQLite and PostgreSQL.

No SQLAlchemy here: the rows of ``Ledger.record`` and of ``costledger ingest`` are built
with it in the caller's thread.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Final

from ._rows import COLUMNS

__all__ = ["TEXT_COLUMNS", "clean_row", "clean_text", "encodes"]

TEXT_COLUMNS: Final = (
    "id",
    "source",
    "provider",
    "model",
    "response_model",
    "status",
    "error_type",
    "request_id",
    "trace_id",
    "run_id",
    "parent_run_id",
    "user",
    "team",
    "project",
    "feature",
    "pricing_status",
    "currency",
    "pricing_source",
    "priced_model",
    "priced_provider",
)
"""The columns of free text (the timestamp and the amounts are text the ledger writes
itself; ``tags``, ``metadata`` and ``price_context`` are JSON, cleaned by its encoder)."""


def encodes(text: str) -> bool:
    """``text`` holds no surrogate: it encodes as UTF-8. Cheap for ASCII text (``isascii``
    is O(1) in CPython), so call it after that test."""
    try:
        text.encode("utf-8")  # only a surrogate fails
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """``text`` without NUL, each lone surrogate as U+FFFD (a pair as its character);
    ``text`` itself when there is nothing to clean."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if text.isascii() or encodes(text):
        return text
    # UTF-16 holds a surrogate as itself: a pair decodes to its character, a lone one
    # to U+FFFD
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


TEXT_INDEXES: Final = tuple((COLUMNS.index(name), name) for name in TEXT_COLUMNS)
"""Each text column's index in a SQLite-form row, with its name."""
_ROW_TEXTS: Final = tuple(i for i, _ in TEXT_INDEXES)
_row_texts: Final = operator.itemgetter(*_ROW_TEXTS)
_join: Final = "".join


def clean_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A SQLite-form row (``COLUMNS`` order) with its text columns cleaned (``clean_text``);
    ``row`` itself, the common case, when none needs it.

    On the hot path of ``Ledger.record`` and ``costledger ingest``: the texts are checked
    all at once, joined (one C call) and looked at as one string.
    ``ValueError`` when an id holds nothing but NUL characters."""
    try:
        joined = _join(filter(None, _row_texts(row)))
    except TypeError:  # a value that is not text (a number for a user): each on its own
        return _clean_row(row)
    if "\x00" not in joined and (joined.isascii() or encodes(joined)):
        return row
    return _clean_row(row)


def _clean_row(row: Sequence[Any]) -> tuple[Any, ...]:
    values = list(row)
    for i in _ROW_TEXTS:
        value = values[i]
        if isinstance(value, str):
            values[i] = clean_text(value)
    if not values[0] and row[0]:
        raise ValueError(f"UsageEvent id must be a non-empty string, got {row[0]!r}")
    return tuple(values)
