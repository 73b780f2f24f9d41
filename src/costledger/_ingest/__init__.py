"""``costledger ingest``: usage log lines (costledger's own, LiteLLM's, raw provider
responses) into the ledger, idempotently, resumably, at a six-figure line rate.

docs/ingestion.md describes the formats, the rejects file and the checkpoints.
"""

from __future__ import annotations

from ._convert import FORMATS, detect, response_event_id
from ._run import (
    DEFAULT_BATCH_LINES,
    DEFAULT_MAX_LINE_BYTES,
    IngestError,
    IngestInterrupted,
    IngestProgress,
    IngestResult,
    InputResult,
    Reject,
    default_checkpoint_dir,
    ingest,
)

__all__ = [
    "DEFAULT_BATCH_LINES",
    "DEFAULT_MAX_LINE_BYTES",
    "FORMATS",
    "IngestError",
    "IngestInterrupted",
    "IngestProgress",
    "IngestResult",
    "InputResult",
    "Reject",
    "default_checkpoint_dir",
    "detect",
    "ingest",
    "response_event_id",
]
