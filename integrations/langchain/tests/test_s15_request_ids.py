"""The request id the LangChain handler records is the provider's, never an id LangChain
made up for the message: ``lc_run-<run id>`` (langchain-core's ``LC_ID_PREFIX``),
``run-<run id>`` (older versions) and ``lc_<uuid>`` (``LC_AUTO_PREFIX``, its ``ensure_id``).
The same rule as costledger's own reader of LangChain messages (``LANGCHAIN_STAND_IN_IDS``).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_fakes import UsageChatModel, expected_cost, usage_metadata

from costledger import Tracker, drain_deferred
from costledger.testing import InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler


class IdChatModel(UsageChatModel):
    """Answers with ``message_id`` on the message and ``metadata_id`` as
    ``response_metadata["id"]`` (each left out when ``None``)."""

    message_id: str | None = None
    metadata_id: str | None = None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        metadata: dict[str, Any] = {"model_name": self.snapshot}
        if self.metadata_id is not None:
            metadata["id"] = self.metadata_id
        message = AIMessage(
            content="forty two",
            id=self.message_id,
            usage_metadata=usage_metadata(1000, 200),
            response_metadata=metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.mark.parametrize(
    ("message_id", "metadata_id", "expected"),
    [
        ("chatcmpl-abc123", None, "chatcmpl-abc123"),
        ("msg_01XFDUDYJgAACzvnptvVoYEL", None, "msg_01XFDUDYJgAACzvnptvVoYEL"),
        (None, None, None),  # LangChain gives the message lc_run-<run id>
        ("run-5f1c6a4e-1c64-4b8e-9a39-6a2d0c3a9f10", None, None),
        ("lc_2b4f7a1c-8d2e-4f0a-9c3b-5e6d7f8a9b0c", None, None),
        ("lc_2b4f7a1c-8d2e-4f0a-9c3b-5e6d7f8a9b0c", "chatcmpl-xyz", "chatcmpl-xyz"),
    ],
)
def test_the_request_id_is_the_providers_only(
    message_id: str | None, metadata_id: str | None, expected: str | None
) -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    model = IdChatModel(message_id=message_id, metadata_id=metadata_id)
    model.invoke("hi", config={"callbacks": [CostLedgerCallbackHandler(tracker)]})
    drain_deferred()
    [event] = tracker.ledger.events()  # type: ignore[attr-defined]
    assert (event.request_id, event.total_cost) == (expected, expected_cost(1000, 200))
