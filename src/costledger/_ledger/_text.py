"""Text that both databases store: no NUL character, no lone surrogate.

PostgreSQL's ``text`` and ``jsonb`` take no NUL character, and neither database driver
can encode a lone surrogate (``"\\ud83d"``, half of a UTF-16 pair: what a string cut in
the middle of an emoji, or JSON with such an escape, holds) as UTF-8: either made the
database reject the whole event. Every text the ledger stores, in a column or inside
its JSON, is cleaned here when the row is built: NUL is left out, a lone surrogate
becomes U+FFFD (the replacement character), and a surrogate pair held as two code
points becomes the one character it encodes. The same on SQLite and PostgreSQL.

The texts a database indexes or groups by (``KEY_COLUMNS``, and each tag) hold at most
``KEY_TEXT_LIMIT`` characters: PostgreSQL refuses an index entry past 2704 bytes, which a
3,000-character model name or user reached, and the whole event with it. A longer text is
cut here too (``cut_text``), with a hash of the whole so that two long values stay apart,
and the row says which fields were cut (``CUT_NOTE`` in its metadata).

No SQLAlchemy here: the rows of ``Ledger.record`` and of ``costledger ingest`` are built
with it in the caller's thread.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Sequence
from typing import Any, Final

from ._rows import COLUMNS

__all__ = [
    "CUT_NOTE",
    "KEY_COLUMNS",
    "KEY_TEXT_LIMIT",
    "TEXT_COLUMNS",
    "clean_row",
    "clean_text",
    "cut_text",
    "encodes",
    "key_text",
]

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

KEY_COLUMNS: Final = (
    "id",
    "source",
    "provider",
    "model",
    "response_model",
    "status",
    "trace_id",
    "user",
    "team",
    "project",
    "feature",
    "pricing_status",
    "currency",
)
"""The text columns held to ``KEY_TEXT_LIMIT``: those the events table indexes (``id``,
``trace_id``, ``user``, ``team``, ``project``, ``feature``) and those a rollup groups by
(``_rollups.DIMENSIONS``). Each tag is held to it too."""

KEY_TEXT_LIMIT: Final = 256
"""The most characters a ``KEY_COLUMNS`` text or a tag holds: 1,024 bytes of UTF-8 at
most, well under PostgreSQL's 2,704 bytes for an index entry."""

CUT_NOTE: Final = "costledger.cut"
"""The metadata entry of a row whose texts were cut: the names of those fields."""

_HASH_CHARS: Final = 32  # 128 bits of SHA-256: two long values never share a cut text
_KEPT_CHARS: Final = KEY_TEXT_LIMIT - _HASH_CHARS - 1


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


def cut_text(text: str) -> str:
    """``text`` in at most ``KEY_TEXT_LIMIT`` characters: itself when it fits, else its
    first characters, ``~`` and 32 hex digits of the SHA-256 of the whole (UTF-8): the
    same text always gives the same cut (an id stays idempotent), two texts that differ
    anywhere give two cuts (an id stays unique, two users stay two groups)."""
    if len(text) <= KEY_TEXT_LIMIT:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{text[:_KEPT_CHARS]}~{digest[:_HASH_CHARS]}"


def key_text(text: str) -> str:
    """A ``KEY_COLUMNS`` text (an id, a user to look up) as a row stores it: cleaned
    (``clean_text``), then cut (``cut_text``)."""
    return cut_text(clean_text(text))


TEXT_INDEXES: Final = tuple((COLUMNS.index(name), name) for name in TEXT_COLUMNS)
"""Each text column's index in a SQLite-form row, with its name."""
_ROW_TEXTS: Final = tuple(i for i, _ in TEXT_INDEXES)
_row_texts: Final = operator.itemgetter(*_ROW_TEXTS)
_KEY_INDEXES: Final = tuple((COLUMNS.index(name), name) for name in KEY_COLUMNS)
_row_keys: Final = operator.itemgetter(*(i for i, _ in _KEY_INDEXES))
_I_TAGS: Final = COLUMNS.index("tags")
_I_METADATA: Final = COLUMNS.index("metadata")
_join: Final = "".join


def clean_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A SQLite-form row (``COLUMNS`` order) with its text columns cleaned (``clean_text``);
    ``row`` itself, the common case, when none needs it.

    On the hot path of ``Ledger.record`` and ``costledger ingest``: the texts are checked
    all at once, joined (one C call) and looked at as one string; the key texts' lengths
    one by one only when all the texts together pass ``KEY_TEXT_LIMIT``, the tags only
    when their JSON text does.
    ``ValueError`` when an id holds nothing but NUL characters."""
    try:
        joined = _join(filter(None, _row_texts(row)))
    except TypeError:  # a value that is not text (a number for a user): each on its own
        return _clean_row(row)
    clean = "\x00" not in joined and (joined.isascii() or encodes(joined))
    if clean and not _too_long(row, joined):
        return row
    return _clean_row(row)


def _too_long(row: tuple[Any, ...], joined: str) -> bool:
    """Whether a key text or a tag of a row whose texts are all ``str`` (or empty), and
    joined make ``joined``, pass ``KEY_TEXT_LIMIT``: none can when ``joined`` does not,
    and a tag only when the JSON text of the tags does."""
    tags = row[_I_TAGS]
    if tags.__class__ is str and len(tags) > KEY_TEXT_LIMIT:
        return True
    if len(joined) <= KEY_TEXT_LIMIT:
        return False
    return max(map(len, filter(None, _row_keys(row))), default=0) > KEY_TEXT_LIMIT


def _clean_row(row: Sequence[Any]) -> tuple[Any, ...]:
    values = list(row)
    for i in _ROW_TEXTS:
        value = values[i]
        if isinstance(value, str):
            values[i] = clean_text(value)
    if not values[0] and row[0]:
        raise ValueError(f"UsageEvent id must be a non-empty string, got {row[0]!r}")
    cut = [name for i, name in _KEY_INDEXES if _cut_at(values, i)]
    tags = values[_I_TAGS]
    if isinstance(tags, str) and len(tags) > KEY_TEXT_LIMIT:
        cut_tags = _cut_tags(tags)
        if cut_tags is not None:
            values[_I_TAGS] = cut_tags
            cut.append("tags")
    if cut:
        values[_I_METADATA] = _noted(values[_I_METADATA], cut)
    return tuple(values)


def _cut_at(values: list[Any], i: int) -> bool:
    """Cut the text at ``values[i]`` if it is too long; whether it was."""
    value = values[i]
    if isinstance(value, str) and len(value) > KEY_TEXT_LIMIT:
        values[i] = cut_text(value)
        return True
    return False


def _dump(value: Any) -> str:
    # as the ledger's JSON encoder writes it (``_money.dumps``), for values it wrote
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _cut_tags(text: str) -> str | None:
    """The JSON text of tags with each too long tag cut; ``None`` when none is."""
    tags = json.loads(text)
    if not isinstance(tags, list) or not any(
        isinstance(tag, str) and len(tag) > KEY_TEXT_LIMIT for tag in tags
    ):
        return None
    return _dump([cut_text(tag) if isinstance(tag, str) else tag for tag in tags])


def _noted(metadata: Any, cut: list[str]) -> str:
    """The metadata text of a row with ``CUT_NOTE`` set to the fields that were cut."""
    entries = json.loads(metadata) if isinstance(metadata, str) and metadata else {}
    if not isinstance(entries, dict):  # not the ledger's own text: kept, under a name
        entries = {"metadata": entries}
    entries[CUT_NOTE] = cut
    return _dump(entries)
