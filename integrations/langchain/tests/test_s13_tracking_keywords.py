"""``tracking(**metadata)``: a keyword close to its own parameters is a misspelling."""

from __future__ import annotations

import pytest

from costledger import Tracker
from costledger.testing import InMemoryLedger
from costledger_langchain import tracking


def test_a_misspelt_tracker_keyword_is_refused() -> None:
    mine = Tracker(InMemoryLedger(), log="off")
    with (
        pytest.raises(
            TypeError,
            match=r"unexpected keyword argument 'traker': did you mean 'tracker'\?",
        ),
        tracking(traker=mine),
    ):
        pass
    with pytest.raises(TypeError, match=r"'tag': did you mean 'tags'\?"), tracking(tag="x"):
        pass


def test_free_metadata_still_passes() -> None:
    with tracking(env="prod", region="eu") as totals:
        pass
    assert totals.requests == 0
