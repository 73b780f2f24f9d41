"""The worst case the LangChain handler reserves counts every answer and every bound tool.

A call asking for ``n`` answers is billed ``n`` times its output; tools bound with
``bind_tools`` (or ``bind``) are sent, and billed, as input beside the messages. The
handler used to reserve one answer and the messages only, so a hard budget let through
calls it could not pay for (8 threads at n=4 spent 1.28 USD of a 1 USD budget).

Real LangChain runtime, real Tracker and budgets (in-memory store); only the models are
fakes. Model ``m`` is priced 10 USD / MTok in, 20 USD / MTok out, and has no tiktoken
encoding, so its prompt is counted by the estimate's heuristic: ceil(characters / 4) + 16.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.llms import LLM
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

from costledger import Budget, BudgetExceeded, Estimator, Pricer, Tracker, drain_deferred
from costledger._guards._estimate import heuristic_tokens
from costledger.testing import InMemoryLedger, MemoryStore
from costledger_langchain import CostLedgerCallbackHandler

IN = Decimal(10) / 1_000_000
OUT = Decimal(20) / 1_000_000


def _pricer(max_output_tokens: int | None = None) -> Pricer:
    entry: dict[str, Any] = {"input": "10", "output": "20"}
    if max_output_tokens is not None:
        entry["max_output_tokens"] = max_output_tokens
    return Pricer({"m": entry}, genai_prices=False, litellm=False)


def _prompt_tokens(text: str) -> int:
    """The prompt's input tokens as the guards count them without a tokenizer (model "m")."""
    return heuristic_tokens(text)


class Guarded:
    """A Tracker with a money budget and a token budget, and what each held during the
    last model call (read by the model while it runs, from the budgets' own status)."""

    def __init__(self, money: str = "100 USD", pricer: Pricer | None = None) -> None:
        self.money = Budget(money, "month", name="s13b-money")
        self.tokens = Budget("1000M tokens", "month", name="s13b-tokens")
        self.ledger = InMemoryLedger()
        self.tracker = Tracker(
            self.ledger,
            pricer or _pricer(),
            guards=[self.money, self.tokens],
            guard_store=MemoryStore(),
            log="off",
        )
        self.handler = CostLedgerCallbackHandler(self.tracker)
        self.held: list[tuple[Decimal, Decimal]] = []

    def probe(self) -> None:
        # the earlier calls' settles, queued for the background worker, first: a call
        # reserves at once now, so what is held includes theirs until they settle
        drain_deferred()
        [money] = self.money.status(self.tracker)
        [tokens] = self.tokens.status(self.tracker)
        self.held.append((money.reserved, tokens.reserved))

    @property
    def config(self) -> Any:
        return {"callbacks": [self.handler]}


class ChoicesChatModel(BaseChatModel):
    """Reports its parameters the way ChatOpenAI does (``_default_params`` in
    ``invocation_params``, ``bind_tools`` binding OpenAI-format tools), and answers each
    of its ``n`` / ``candidate_count`` choices with the usage the provider bills."""

    model_name: str = "m"
    params: dict[str, Any] = Field(default_factory=dict)
    input_tokens: int = 5
    delay: float = 0.0
    probe: Callable[[], None] | None = None

    @property
    def _llm_type(self) -> str:
        return "s13b-choices"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, **self.params}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = {"type": "function", "function": {"name": tool_choice}}
        return super().bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.probe is not None:
            self.probe()
        if self.delay:
            time.sleep(self.delay)
        choices = max(self.params.get("n", 1), self.params.get("candidate_count", 1))
        per_choice = self.params.get("max_tokens") or self.params.get("max_output_tokens") or 50
        output = per_choice * choices
        generations = [
            ChatGeneration(
                message=AIMessage(
                    content=f"answer {i}",
                    usage_metadata={
                        "input_tokens": self.input_tokens,
                        "output_tokens": output,
                        "total_tokens": self.input_tokens + output,
                    },
                    response_metadata={"model_name": self.model_name},
                )
            )
            for i in range(choices)
        ]
        return ChatResult(generations=generations, llm_output={"model_name": self.model_name})


class BestOfLLM(LLM):
    """A completion model reporting ``n`` and ``best_of`` as langchain-openai's ``OpenAI``
    does: the provider generates (and bills) ``best_of`` completions and returns ``n``."""

    model_name: str = "m"
    params: dict[str, Any] = Field(default_factory=dict)
    probe: Callable[[], None] | None = None

    @property
    def _llm_type(self) -> str:
        return "s13b-best-of"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, **self.params}

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        if self.probe is not None:
            self.probe()
        return "done"


# -- several answers ------------------------------------------------------------------------------


def test_n_multiplies_the_output_reserved() -> None:
    guarded = Guarded()
    prompt = _prompt_tokens("Human: hello")  # 19
    for n in (1, 4):
        model = ChoicesChatModel(params={"max_tokens": 1000, "n": n}, probe=guarded.probe)
        model.invoke("hello", config=guarded.config)
    drain_deferred()
    assert guarded.held == [
        (prompt * IN + 1000 * OUT, Decimal(prompt + 1000)),  # 0.02019 USD
        (prompt * IN + 4000 * OUT, Decimal(prompt + 4000)),  # 0.08019 USD
    ]
    assert guarded.held[1][0] == Decimal("0.08019")


def test_n_given_at_invoke_time_counts() -> None:
    guarded = Guarded()
    model = ChoicesChatModel(params={"max_tokens": 300}, probe=guarded.probe)
    model.invoke("hello", config=guarded.config, n=3)
    assert guarded.held == [(19 * IN + 900 * OUT, Decimal(19 + 900))]


def test_candidate_count_multiplies_the_output_reserved() -> None:
    # ChatGoogleGenerativeAI reports its n as candidate_count, its limit as max_output_tokens.
    guarded = Guarded()
    model = ChoicesChatModel(
        params={"max_output_tokens": 200, "candidate_count": 3}, probe=guarded.probe
    )
    model.invoke("hello", config=guarded.config)
    assert guarded.held == [(19 * IN + 600 * OUT, Decimal(19 + 600))]


def test_several_answers_without_a_limit_reserve_the_models_limit_each() -> None:
    guarded = Guarded(pricer=_pricer(max_output_tokens=700))
    ChoicesChatModel(params={"n": 2}, probe=guarded.probe).invoke("hello", config=guarded.config)
    ChoicesChatModel(params={}, probe=guarded.probe).invoke("hello", config=guarded.config)
    assert guarded.held == [
        (19 * IN + 1400 * OUT, Decimal(19 + 1400)),
        (19 * IN + 700 * OUT, Decimal(19 + 700)),  # one answer: the estimate's own fallback
    ]


def test_several_answers_of_a_model_without_a_limit_reserve_the_default_each() -> None:
    guarded = Guarded()  # m has no max_output_tokens: the estimator's 4096 per answer
    ChoicesChatModel(params={"n": 2}, probe=guarded.probe).invoke("hello", config=guarded.config)
    assert guarded.held == [(19 * IN + 8192 * OUT, Decimal(19 + 8192))]


def test_best_of_on_a_completion_model_reserves_every_completion_generated() -> None:
    guarded = Guarded()
    prompt = _prompt_tokens("say hi")  # 18
    BestOfLLM(params={"max_tokens": 100, "n": 2, "best_of": 5}, probe=guarded.probe).invoke(
        "say hi", config=guarded.config
    )
    BestOfLLM(params={"max_tokens": 100, "n": 3}, probe=guarded.probe).invoke(
        "say hi", config=guarded.config
    )
    assert guarded.held == [
        (prompt * IN + 500 * OUT, Decimal(prompt + 500)),
        (prompt * IN + 300 * OUT, Decimal(prompt + 300)),
    ]


def test_a_hard_budget_is_not_overshot_by_calls_with_several_answers() -> None:
    # Each call: 19 tokens estimated in + 4 x 1000 out = 0.08019 USD reserved; billed
    # 5 in + 4000 out = 0.08005 USD. Twelve fit in 1 USD, the thirteenth never can: the
    # reservations held plus the spend settled never pass the limit, whatever the threads'
    # interleaving. Reserving one answer (0.02019 USD) let calls past the limit.
    guarded = Guarded(money="1 USD")
    model = ChoicesChatModel(params={"max_tokens": 1000, "n": 4}, delay=0.02)
    admitted: list[int] = []
    refused: list[int] = []

    def worker() -> None:
        for _ in range(10):
            try:
                model.invoke("hello", config=guarded.config)
                admitted.append(1)
            except BudgetExceeded:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drain_deferred()
    assert (len(admitted), len(refused)) == (12, 68)
    spent = [event.total_cost or Decimal(0) for event in guarded.ledger.events()]
    assert spent == [Decimal("0.08005")] * 12
    assert sum(spent, Decimal(0)) == Decimal("0.96060")


# -- bound tools ----------------------------------------------------------------------------------


def _big_tools(count: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "d" * 2000,
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string", "description": "p" * 1000}},
                },
            },
        }
        for i in range(count)
    ]


def test_bound_tools_are_counted_as_input() -> None:
    guarded = Guarded()
    tools = _big_tools(40)
    model = ChoicesChatModel(params={"max_tokens": 100}, probe=guarded.probe)
    model.invoke("hello", config=guarded.config)
    model.bind_tools(tools, tool_choice="tool_3").invoke("hello", config=guarded.config)
    sent = json.dumps(
        {
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "tool_3"}},
        },
        ensure_ascii=False,
    )
    with_tools = _prompt_tokens("Human: hello\n" + sent)
    assert with_tools == 31717  # 126,790 characters of schema: ~31.7k tokens billed as input
    assert guarded.held == [
        (19 * IN + 100 * OUT, Decimal(19 + 100)),
        (with_tools * IN + 100 * OUT, Decimal(with_tools + 100)),
    ]
    assert guarded.held[1][0] == Decimal("0.31917")


class Answer(BaseModel):
    """The structured answer."""

    city: str
    population: int


def test_functions_and_pydantic_values_are_counted_as_the_provider_receives_them() -> None:
    # A schema class bound as response_format (with_structured_output's json_schema mode
    # before ChatOpenAI converts it) counts as its JSON schema; legacy functions as given.
    guarded = Guarded()
    functions = [convert_to_openai_tool(Answer)["function"]]
    model = ChoicesChatModel(params={"max_tokens": 100}, probe=guarded.probe)
    model.bind(functions=functions, function_call={"name": "Answer"}).invoke(
        "hello", config=guarded.config
    )
    model.bind(response_format=Answer).invoke("hello", config=guarded.config)
    first = _prompt_tokens(
        "Human: hello\n" + json.dumps({"functions": functions, "function_call": {"name": "Answer"}})
    )
    second = _prompt_tokens(
        "Human: hello\n" + json.dumps({"response_format": Answer.model_json_schema()})
    )
    assert guarded.held == [
        (first * IN + 100 * OUT, Decimal(first + 100)),
        (second * IN + 100 * OUT, Decimal(second + 100)),
    ]
    assert second > 19 + 20  # the schema, not the class's name


def test_a_bound_pydantic_object_counts_as_its_fields() -> None:
    # ChatGoogleGenerativeAI binds google.genai Tool objects (Pydantic models).
    guarded = Guarded()
    tool = Answer(city="x" * 400, population=1)
    ChoicesChatModel(params={"max_tokens": 100}, probe=guarded.probe).bind(tools=[tool]).invoke(
        "hello", config=guarded.config
    )
    text = "Human: hello\n" + json.dumps({"tools": [{"city": "x" * 400, "population": 1}]})
    assert guarded.held == [
        (_prompt_tokens(text) * IN + 100 * OUT, Decimal(_prompt_tokens(text) + 100))
    ]


@pytest.mark.parametrize("value", [[], None, ""])
def test_empty_tool_parameters_add_nothing(value: Any) -> None:
    guarded = Guarded()
    ChoicesChatModel(params={"max_tokens": 100}, probe=guarded.probe).bind(
        tools=value, tool_choice=value
    ).invoke("hello", config=guarded.config)
    assert guarded.held == [(19 * IN + 100 * OUT, Decimal(19 + 100))]


def test_tools_and_answers_without_guards_reserve_nothing_and_record_the_call() -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, _pricer(), log="off")
    assert tracker.has_guards is False
    ChoicesChatModel(params={"max_tokens": 10, "n": 2}).bind_tools(_big_tools(2)).invoke(
        "hello", config={"callbacks": [CostLedgerCallbackHandler(tracker)]}
    )
    drain_deferred()
    [event] = ledger.events()
    assert event.total_cost == 5 * IN + 20 * OUT


def test_a_bound_value_json_cannot_write_still_counts_as_its_text() -> None:
    guarded = Guarded()
    loop: list[Any] = ["x" * 100]
    loop.append(loop)  # a cycle: json.dumps refuses it
    ChoicesChatModel(params={"max_tokens": 100}, probe=guarded.probe).bind(tools=loop).invoke(
        "hello", config=guarded.config
    )
    text = "Human: hello\n" + str({"tools": loop})
    assert guarded.held == [
        (_prompt_tokens(text) * IN + 100 * OUT, Decimal(_prompt_tokens(text) + 100))
    ]


def test_several_answers_without_a_limit_use_the_guards_own_default_output() -> None:
    # The handler passes n as choices=: the guard's estimator multiplies its own default
    # (it used to take the shared default's 4096 per answer, whatever the guard said).
    guarded = Guarded()
    estimator = Estimator(default_output_tokens=50)
    guarded.money = Budget("100 USD", "month", name="s14-money", estimator=estimator)
    guarded.tokens = Budget("1000M tokens", "month", name="s14-tokens", estimator=estimator)
    guarded.tracker = Tracker(
        guarded.ledger,
        _pricer(),
        guards=[guarded.money, guarded.tokens],
        guard_store=MemoryStore(),
        log="off",
    )
    guarded.handler = CostLedgerCallbackHandler(guarded.tracker)
    ChoicesChatModel(params={"n": 3}, probe=guarded.probe).invoke("hello", config=guarded.config)
    assert guarded.held == [(19 * IN + 150 * OUT, Decimal(19 + 150))]
