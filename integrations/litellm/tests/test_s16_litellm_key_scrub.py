"""A server that echoes the key it was sent: the LiteLLM entry points keep that key out of
what they record.

LiteLLM hands its callbacks the call's key (``kwargs["api_key"]``, resolved from the
environment when the caller gave none; a Router deployment's also in ``litellm_params``),
but ``CostLedgerLogger`` scrubbed LiteLLM's ``error_str`` by key shapes only: a rejected
Azure key (32 hex digits) or a short ``sk-`` key came back in "Incorrect API key provided:
<key>" and was stored in the row's ``metadata["error_message"]``, the usage log line and
the span. The call's own key is now removed from the error message, the model, the
response model and the request id before they are recorded (as the HTTP transport does
with its request's key), on the callback path and on the wrappers' (which record the
answer LiteLLM returns them, without the key). LiteLLM's ``error_str`` was also cut to 500
characters before it was scrubbed, so a key straddling the cut lost the tail that made it
match a rule and its head was kept; it is scrubbed first now, in ``costledger ingest`` too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from litellm_support import MESSAGES, Sentinel, litellm_isolated, offline, wait_until
from s15_server import LocalServer, json_answer, server

import costledger_litellm
from costledger import Tracker, UsageEvent, drain_deferred
from costledger._sources.litellm_payload import read_standard_logging_payload
from costledger.testing import InMemoryLedger
from costledger_litellm import CostLedgerLogger
from costledger_litellm._logger import _attempt_keys

__all__ = ["litellm_isolated", "offline", "server"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

AZURE = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # 32 hex digits: no key shape a rule knows
SHORT = "sk-PLANTshort12"  # 12 characters after sk-: shorter than the sk- rule's 16
OPENAI = "sk-proj-PLANTop3nAiKey9x8y7z6w5v4u3t2s1r0q"


class Recorded:
    def __init__(self) -> None:
        self.ledger = InMemoryLedger()
        self.log = io.StringIO()
        self.tracker = Tracker(self.ledger, log=self.log)

    def events(self) -> list[UsageEvent]:
        return list(self.ledger.events())

    def text(self) -> str:
        """Everything stored or logged of the calls."""
        return self.log.getvalue() + repr(self.events())


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    _attempt_keys.clear()  # another test's abandoned stream may have left its call's key
    yield Recorded()
    _attempt_keys.clear()


def _rejecting(server: LocalServer) -> None:
    """A 401 quoting the key the request was sent, as some gateways answer."""

    def respond(path: str, body: Any) -> tuple[int, dict[str, str], str]:
        key = server.sent_key
        return json_answer(
            {
                "error": {
                    "message": f"Incorrect API key provided: {key}. You can find your API key "
                    "at https://x",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            status=401,
        )

    server.respond = respond


def _echoing(server: LocalServer) -> None:
    """An answer whose model and id quote the key the request was sent."""

    def respond(path: str, body: Any) -> tuple[int, dict[str, str], str]:
        key = server.sent_key
        return json_answer(
            {
                "id": f"chatcmpl-{key}",
                "object": "chat.completion",
                "created": 1,
                "model": f"gpt-4o-mini-{key}",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "4"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
            }
        )

    server.respond = respond


@pytest.fixture
def keyed_server(server: LocalServer) -> LocalServer:
    """``server`` with ``sent_key``: the key each test's call sends (set by the test)."""
    server.sent_key = ""  # type: ignore[attr-defined]
    return server


ERROR_MESSAGE = (
    "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API key "
    "provided: [redacted]. You can find your API key at https://x"
)


@pytest.mark.parametrize("key", [AZURE, SHORT])
def test_an_error_quoting_the_calls_key_is_recorded_without_it(
    keyed_server: LocalServer, recorded: Recorded, key: str
) -> None:
    keyed_server.sent_key = key  # type: ignore[attr-defined]
    _rejecting(keyed_server)
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(recorded.tracker), sentinel]

    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_key=key,
            api_base=keyed_server.base + "/v1",
            num_retries=0,
        )

    sentinel.wait()
    drain_deferred()
    [event] = recorded.events()
    assert (event.status, event.error_type) == ("error", "AuthenticationError")
    assert event.metadata["error_message"] == ERROR_MESSAGE
    assert key not in recorded.text()
    assert json.loads(recorded.log.getvalue())["costledger.metadata"]["error_message"] == (
        ERROR_MESSAGE
    )


def test_an_answer_quoting_the_calls_key_in_its_model_and_id_is_recorded_without_it(
    keyed_server: LocalServer, recorded: Recorded
) -> None:
    keyed_server.sent_key = AZURE  # type: ignore[attr-defined]
    _echoing(keyed_server)
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(recorded.tracker), sentinel]

    litellm.completion(
        model="openai/gpt-4o-mini",
        messages=MESSAGES,
        api_key=AZURE,
        api_base=keyed_server.base + "/v1",
    )

    sentinel.wait()
    wait_until(lambda: len(recorded.events()) == 1)
    [event] = recorded.events()
    assert (event.model, event.response_model, event.request_id) == (
        "gpt-4o-mini",
        "gpt-4o-mini-[redacted]",
        "chatcmpl-[redacted]",
    )
    assert AZURE not in recorded.text()


def test_the_wrapper_records_an_answer_without_the_key_from_the_environment(
    keyed_server: LocalServer, recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wrapper records the answer LiteLLM returns to it, which does not carry the key;
    # the key, resolved by LiteLLM from the environment, is seen before the attempt.
    monkeypatch.setenv("OPENAI_API_KEY", AZURE)
    keyed_server.sent_key = AZURE  # type: ignore[attr-defined]
    _echoing(keyed_server)

    CostLedgerLogger(recorded.tracker).completion(
        model="openai/gpt-4o-mini", messages=MESSAGES, api_base=keyed_server.base + "/v1"
    )

    drain_deferred()
    [event] = recorded.events()
    assert (event.response_model, event.request_id) == (
        "gpt-4o-mini-[redacted]",
        "chatcmpl-[redacted]",
    )
    assert AZURE not in recorded.text()
    assert len(_attempt_keys) == 0  # taken by the record: no key is kept after the call


def test_the_wrapper_forgets_the_key_of_a_call_that_failed(
    keyed_server: LocalServer, recorded: Recorded
) -> None:
    keyed_server.sent_key = SHORT  # type: ignore[attr-defined]
    _rejecting(keyed_server)
    sentinel = Sentinel()
    litellm.callbacks = [sentinel]

    with pytest.raises(litellm.AuthenticationError):
        costledger_litellm.CostLedgerLogger(recorded.tracker).completion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_key=SHORT,
            api_base=keyed_server.base + "/v1",
            num_retries=0,
        )

    sentinel.wait()
    drain_deferred()
    [event] = recorded.events()
    assert event.metadata["error_message"] == ERROR_MESSAGE
    assert SHORT not in recorded.text()
    assert len(_attempt_keys) == 0


def test_a_router_deployments_key_is_removed_from_its_error(
    keyed_server: LocalServer, recorded: Recorded
) -> None:
    keyed_server.sent_key = AZURE  # type: ignore[attr-defined]
    _rejecting(keyed_server)
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(recorded.tracker), sentinel]
    router = litellm.Router(
        model_list=[
            {
                "model_name": "support",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_key": AZURE,
                    "api_base": keyed_server.base + "/v1",
                },
            }
        ],
        num_retries=0,
    )

    with pytest.raises(litellm.AuthenticationError):
        router.completion(model="support", messages=MESSAGES)

    sentinel.wait()
    drain_deferred()
    events = recorded.events()
    assert events
    assert {event.metadata["error_message"] for event in events} == {ERROR_MESSAGE}
    assert AZURE not in recorded.text()


def test_an_error_message_is_scrubbed_before_it_is_cut() -> None:
    # The key starts 485 characters in: cut at 500 first, "sk-proj-PLANTop" would be
    # kept, too short for the sk- rule to know.
    error = "x" * 480 + " key " + OPENAI + " rejected"
    call = read_standard_logging_payload(
        {
            "litellm_call_id": "call-1",
            "status": "failure",
            "startTime": 1_780_000_000.0,
            "endTime": 1_780_000_001.0,
            "model": "gpt-4o-mini",
            "custom_llm_provider": "openai",
            "error_str": error,
            "error_information": {"error_class": "BadRequestError"},
        }
    )
    assert call.metadata["error_message"] == "x" * 480 + " key [REDACTED] reje"  # 500
