"""``@track_cost`` on what a plain function returns, and ``@attribute`` on generators:
review fixes, with the real LiteLLM, LangChain runtime and SDK types, the real pricer.

- LiteLLM's ``CustomStreamWrapper`` is iterated with ``for`` (``completion``) or
  ``async for`` (``acompletion``, or ``completion`` from async code): its proxy does both;
- a stream of several LangChain model calls (an agent's steps) is read call by call;
- only LLM SDK streams are streams: a file, ``iter(list)`` are responses, handed back as
  they are; a returned coroutine never awaited warns once, naming the host's coroutine;
- a ``with attribute(...)`` around a ``yield`` in an ``@attribute`` generator holds for
  the steps it spans.
"""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pytest

from costledger import Attribution, Usage, attribute, track_cost
from costledger._attribution import current_attribution
from costledger.testing import CapturedCosts

M = Decimal(1_000_000)
GPT4O_MINI = "gpt-4o-mini-2024-07-18"
HI: Any = [{"role": "user", "content": "hi"}]


def summary(costs: CapturedCosts) -> list[tuple[Any, ...]]:
    return [
        (e.status, e.streamed, e.usage, e.response_model, e.cost.total, dict(e.metadata))
        for e in costs.events
    ]


# -- LiteLLM's CustomStreamWrapper: sync and async iteration -------------------------------------


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network
    import litellm as module

    return module


# LiteLLM's mock stream of "hello there" to "hi": 8 prompt and 2 completion tokens on its
# usage chunk; gpt-4o-mini: 0.15 input, 0.60 output per million.
MOCK_STREAM_USAGE = Usage(input_tokens=8, output_tokens=2)
MOCK_STREAM_COST = (8 * Decimal("0.15") + 2 * Decimal("0.60")) / M
assert Decimal("0.0000024") == MOCK_STREAM_COST
OK_STREAM = ("ok", True, MOCK_STREAM_USAGE, "gpt-4o-mini", MOCK_STREAM_COST, {})


def _text(chunks: list[Any]) -> str:
    return "".join((c.choices[0].delta.content or "") if c.choices else "" for c in chunks)


def test_litellm_stream_from_a_plain_def_iterates_sync_and_async(
    litellm: ModuleType, costs: CapturedCosts
) -> None:
    def kwargs() -> dict[str, Any]:
        return {
            "model": "gpt-4o-mini",
            "messages": HI,
            "mock_response": "hello there",
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    @track_cost
    def ask() -> Any:
        return litellm.completion(**kwargs())

    @track_cost
    def aask() -> Any:  # a plain def returning acompletion's coroutine
        return litellm.acompletion(**kwargs())

    @track_cost
    async def aask_async() -> Any:  # an async def returning the awaited stream
        return await litellm.acompletion(**kwargs())

    assert _text(list(ask())) == "hello there"  # for chunk in ...
    with ask() as stream:  # LiteLLM's own context manager
        assert stream.completion_stream is not None  # the wrapper's own attributes
        assert _text(list(stream)) == "hello there"

    async def main() -> list[str]:
        texts = [_text([c async for c in await aask()])]
        async with await aask_async() as astream:
            texts.append(_text([c async for c in astream]))
        texts.append(_text([c async for c in ask()]))  # completion's stream, async for
        return texts

    assert asyncio.run(main()) == 3 * ["hello there"]
    assert summary(costs) == 5 * [OK_STREAM]


def test_litellm_stream_closed_early_either_way_is_cancelled(
    litellm: ModuleType, costs: CapturedCosts
) -> None:
    def kwargs() -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "messages": HI, "mock_response": "hello there"}

    @track_cost
    def ask() -> Any:
        return litellm.completion(**kwargs(), stream=True)

    @track_cost
    def aask() -> Any:
        return litellm.acompletion(**kwargs(), stream=True)

    stream = ask()
    next(stream)
    stream.close()  # before the usage: nothing known to price

    async def main() -> None:
        astream = await aask()
        await astream.__anext__()
        await astream.aclose()

    asyncio.run(main())
    assert summary(costs) == 2 * [("cancelled", True, Usage(), None, None, {})]


def test_returned_coroutine_never_awaited_warns_once_naming_the_hosts(
    litellm: ModuleType, costs: CapturedCosts
) -> None:
    @track_cost
    def ask() -> Any:
        return litellm.acompletion(model="gpt-4o-mini", messages=HI, mock_response="hello")

    async def main() -> list[Any]:
        # what accepts a coroutine accepts it: a task, gather, awaited
        task = asyncio.create_task(ask())
        gathered = await asyncio.gather(ask())
        awaited = ask()
        answer = await awaited
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await awaited
        return [await task, *gathered, answer]

    answers = asyncio.run(main())
    assert asyncio.run(ask()).usage.prompt_tokens == 10
    assert [a.usage.completion_tokens for a in answers] == [20, 20, 20]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        never = ask()
        del never
        gc.collect()
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == [
        "coroutine 'acompletion' was never awaited"
    ]
    # mock_response: 10 prompt and 20 completion tokens
    cost = (10 * Decimal("0.15") + 20 * Decimal("0.60")) / M
    assert summary(costs) == 4 * [("ok", False, Usage(10, 20), "gpt-4o-mini", cost, {})] + [
        (
            "cancelled",
            False,
            Usage(),
            None,
            None,
            {"costledger.usage_error": "no usage: never awaited"},
        )
    ]


# -- LangChain: a stream of several model calls ---------------------------------------------------


def _usage(inp: int, out: int) -> dict[str, int]:
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}


def _chat_model() -> Any:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    class Model(BaseChatModel):
        """Streams three words with usage the way providers do (LangChain's runtime sets
        each call's chunks one message id)."""

        input_tokens: int
        output_tokens: int
        stream_usage: Literal["final", "cumulative", "delta"]

        def _generate(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None = None,
            run_manager: CallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="x"))])

        def _stream(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None = None,
            run_manager: CallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> Iterator[ChatGenerationChunk]:
            inp, out = self.input_tokens, self.output_tokens
            for i in range(3):
                usage: Any = None
                if self.stream_usage == "cumulative":  # the prompt each time, output so far
                    usage = _usage(inp, out * (i + 1) // 3)
                elif self.stream_usage == "delta" and i == 0:  # Anthropic's way
                    usage = _usage(inp, 0)
                yield ChatGenerationChunk(message=AIMessageChunk(content="w", usage_metadata=usage))
            usage = None
            if self.stream_usage == "final":
                usage = _usage(inp, out)
            elif self.stream_usage == "delta":
                usage = _usage(0, out)
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata=usage,
                    response_metadata={"model_name": GPT4O_MINI, "finish_reason": "stop"},
                )
            )

        @property
        def _llm_type(self) -> str:
            return "two-calls-fake"

    return Model


# Two calls: 1000 in / 50 out, then 1200 in / 80 out (the prompt grew with the answer).
TWO_CALLS_USAGE = Usage(input_tokens=2200, output_tokens=130)
TWO_CALLS_COST = (2200 * Decimal("0.15") + 130 * Decimal("0.60")) / M
assert Decimal("0.000408") == TWO_CALLS_COST


@pytest.mark.parametrize("stream_usage", ["final", "cumulative", "delta"])
def test_a_stream_of_two_langchain_calls_adds_both(stream_usage: str, costs: CapturedCosts) -> None:
    pytest.importorskip("langchain_core")
    model = _chat_model()
    first = model(input_tokens=1000, output_tokens=50, stream_usage=stream_usage)
    second = model(input_tokens=1200, output_tokens=80, stream_usage=stream_usage)

    @track_cost
    def agent() -> Iterator[Any]:
        yield from first.stream("step 1")
        yield from second.stream("step 2")

    @track_cost
    async def aagent() -> AsyncIterator[Any]:
        async for chunk in first.astream("step 1"):
            yield chunk
        async for chunk in second.astream("step 2"):
            yield chunk

    async def consume() -> list[Any]:
        return [c async for c in aagent()]

    for chunks in (list(agent()), asyncio.run(consume())):
        assert len({c.id for c in chunks}) == 2  # one message id per call
    assert summary(costs) == 2 * [("ok", True, TWO_CALLS_USAGE, GPT4O_MINI, TWO_CALLS_COST, {})]


def test_langchain_chunks_of_two_calls_by_message_id(costs: CapturedCosts) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessageChunk

    def chunks(message_id: str, inp: int, out: int) -> list[AIMessageChunk]:
        meta = {"model_name": GPT4O_MINI}
        usage: Any = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
        return [
            AIMessageChunk(content="a", id=message_id, response_metadata=meta),
            AIMessageChunk(
                content="",
                id=message_id,
                response_metadata={**meta, "finish_reason": "stop"},
                usage_metadata=usage,
            ),
        ]

    @track_cost
    def agent() -> Iterator[AIMessageChunk]:
        yield from chunks("run-1", 1000, 50)
        yield from chunks("run-2", 1200, 80)

    list(agent())
    assert summary(costs) == [("ok", True, TWO_CALLS_USAGE, GPT4O_MINI, TWO_CALLS_COST, {})]


# -- only LLM SDK streams are streams -------------------------------------------------------------


def test_other_iterators_are_responses_handed_back_as_they_are(
    tmp_path: Path, costs: CapturedCosts
) -> None:
    path = tmp_path / "prompt.txt"
    path.write_text("hello\nworld\n")
    items = [{"a": 1}]

    @track_cost(model="gpt-4o-mini")
    def prompt_file() -> io.TextIOWrapper:
        return open(path)  # the caller closes it

    @track_cost(model="gpt-4o-mini")
    def rows() -> Iterator[list[str]]:
        return csv.reader(["a,b", "c,d"])

    @track_cost(model="gpt-4o-mini")
    def listed() -> Iterator[dict[str, int]]:
        return iter(items)

    with prompt_file() as f:
        assert isinstance(f, io.TextIOWrapper)  # the file itself, no proxy
        assert f.read() == "hello\nworld\n"
    assert list(rows()) == [["a", "b"], ["c", "d"]]
    it = listed()
    assert type(it) is type(iter([]))
    assert list(it) == items
    gc.collect()
    # responses, read at once: no usage in them (never "cancelled, never iterated")
    assert [(e.status, e.streamed, e.usage, dict(e.metadata)) for e in costs.events] == 3 * [
        ("ok", False, Usage(), {"costledger.tracking_error": "UsageError"})
    ]


def test_a_stream_object_is_known_by_its_class(costs: CapturedCosts) -> None:
    from openai.types.chat import ChatCompletionChunk

    usage_chunk = ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": GPT4O_MINI,
            "choices": [],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
        }
    )

    class Stream:  # an SDK stream's name (a Stainless SDK we do not know by module)
        def __init__(self) -> None:
            self._items = iter([usage_chunk])

        def __iter__(self) -> Stream:
            return self

        def __next__(self) -> Any:
            return next(self._items)

    class Events:  # or its own method
        def __init__(self) -> None:
            self._iterator = self.__stream__()

        def __stream__(self) -> Iterator[Any]:
            yield usage_chunk

        def __iter__(self) -> Events:
            return self

        def __next__(self) -> Any:
            return next(self._iterator)

    @track_cost
    def ask(kind: type) -> Any:
        return kind()

    for kind in (Stream, Events):
        stream = ask(kind)
        assert not isinstance(stream, kind)  # behind the proxy
        assert not hasattr(stream, "__aiter__")  # a sync stream stays sync
        assert list(stream) == [usage_chunk]
    cost = (1000 * Decimal("0.15") + 200 * Decimal("0.60")) / M
    usage = Usage(input_tokens=1000, output_tokens=200)
    assert summary(costs) == 2 * [("ok", True, usage, GPT4O_MINI, cost, {})]


# -- @attribute generators: a scope the body holds open across a yield ---------------------------

SEARCH = attribute(feature="search")
RESPONSE = {"model": GPT4O_MINI, "usage": {"prompt_tokens": 1000, "completion_tokens": 200}}
RESPONSE_COST = (1000 * Decimal("0.15") + 200 * Decimal("0.60")) / M


@track_cost
def ask_model() -> dict[str, Any]:
    return RESPONSE


def _seen() -> tuple[str | None, str | None, str | None, tuple[str, ...]]:
    a = current_attribution()
    return a.user, a.team, a.feature, a.tags


def test_a_scope_held_across_yields_in_an_attribute_generator(costs: CapturedCosts) -> None:
    @attribute(team="t1")
    def steps() -> Iterator[Any]:
        with SEARCH:
            yield _seen()
            ask_model()
            with attribute(tags=["deep"]):
                yield _seen()
                yield _seen()
            yield _seen()
        ask_model()
        yield _seen()

    g = steps()
    assert next(g) == (None, "t1", "search", ())
    assert current_attribution() == Attribution()  # the consumer never sees it
    with attribute(user="u1"):  # what is in force at a step fills the gaps
        assert next(g) == ("u1", "t1", "search", ("deep",))
    assert current_attribution() == Attribution()
    assert next(g) == (None, "t1", "search", ("deep",))
    assert next(g) == (None, "t1", "search", ())
    assert next(g) == (None, "t1", None, ())  # left with its ``with``
    assert list(g) == []
    assert current_attribution() == Attribution()
    assert [(e.user, e.team, e.feature, e.cost.total) for e in costs.events] == [
        ("u1", "t1", "search", RESPONSE_COST),
        (None, "t1", None, RESPONSE_COST),
    ]


def test_a_scope_held_across_yields_in_an_attribute_async_generator(
    costs: CapturedCosts,
) -> None:
    @attribute(team="t1")
    async def steps() -> AsyncIterator[Any]:
        async with SEARCH:
            yield _seen()
            await asyncio.sleep(0)
            ask_model()
            yield _seen()
        yield _seen()

    async def main() -> list[Any]:
        seen = []
        g = steps()
        seen.append(await g.__anext__())
        seen.append(current_attribution())
        async with attribute(user="u1"):
            seen.append(await g.__anext__())
        seen.append(await g.__anext__())
        seen.append(current_attribution())
        return seen

    assert asyncio.run(main()) == [
        (None, "t1", "search", ()),
        Attribution(),
        ("u1", "t1", "search", ()),
        (None, "t1", None, ()),
        Attribution(),
    ]
    assert [(e.user, e.team, e.feature) for e in costs.events] == [("u1", "t1", "search")]


def test_a_held_scope_is_there_when_the_generator_is_closed() -> None:
    closed_under: list[Any] = []

    @attribute(team="t1")
    def steps() -> Iterator[Any]:
        with SEARCH:
            try:
                yield _seen()
            finally:
                closed_under.append(_seen())

    g = steps()
    next(g)
    g.close()
    assert closed_under == [(None, "t1", "search", ())]
    assert current_attribution() == Attribution()
