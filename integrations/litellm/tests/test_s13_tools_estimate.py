"""The guards' worst case counts what a request sends besides its messages' text: the
tool schemas (``tools``, ``functions``) and the tool calls of earlier assistant turns."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from litellm_support import RecordingGuard, litellm_isolated, offline

import costledger_litellm
from costledger.testing import CapturedCosts, capture_costs

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order by its number",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup_order", "arguments": '{"order": "A-17"}'},
}


@pytest.fixture
def guard() -> RecordingGuard:
    return RecordingGuard()


@pytest.fixture
def costs(guard: RecordingGuard) -> Iterator[CapturedCosts]:
    with capture_costs(guards=[guard]) as captured:
        yield captured


def test_tool_schemas_and_earlier_tool_calls_are_in_the_estimated_prompt(
    costs: CapturedCosts, guard: RecordingGuard
) -> None:
    messages = [
        {"role": "user", "content": "Where is order A-17?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
    ]
    costledger_litellm.completion(
        model="gpt-4o-mini", messages=messages, tools=[TOOL], mock_response="It shipped."
    )
    assert guard.reserved[0]["prompt_text"] == "\n".join(
        ["Where is order A-17?", json.dumps([CALL]), "shipped", json.dumps([TOOL])]
    )
    assert len(costs.events) == 1


def test_legacy_functions_are_counted_too(costs: CapturedCosts, guard: RecordingGuard) -> None:
    functions = [TOOL["function"]]
    costledger_litellm.completion(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        functions=functions,
        mock_response="Hello",
    )
    assert guard.reserved[0]["prompt_text"] == "Hi\n" + json.dumps(functions)


def test_a_structured_outputs_schema_and_tool_choice_are_counted(
    costs: CapturedCosts, guard: RecordingGuard
) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        city: str
        population: int

    costledger_litellm.completion(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Largest city?"}],
        tools=[TOOL],
        tool_choice="auto",
        response_format=Answer,
        mock_response='{"city": "Tokyo", "population": 37000000}',
    )
    assert guard.reserved[0]["prompt_text"] == "\n".join(
        [
            "Largest city?",
            json.dumps([TOOL]),
            json.dumps("auto"),
            json.dumps(Answer.model_json_schema()),
        ]
    )
