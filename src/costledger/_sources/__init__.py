"""Readers of other tools' records of a call (no third-party import): shared by the live
integrations and by ``costledger ingest``, so a call reads the same either way."""
