"""``python -m costledger._ingest URL``: the ledger writer process of an ingestion (``_sink``)."""

import sys

from ._sink import serve

sys.exit(serve(sys.argv[1]))
