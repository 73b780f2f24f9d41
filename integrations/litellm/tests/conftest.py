"""Before any test module imports LiteLLM: its bundled price map, not a download.

(LiteLLM fetches its price map from the network at import unless this is set.) No
fixtures here: the LiteLLM tests import theirs from ``litellm_support``.
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
