"""``python -m costledger._ingest``: the ledger writer process of an ingestion (``_sink``)."""

import sys

from ._sink import serve

sys.exit(serve())
