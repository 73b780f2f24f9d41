"""The tokenizer-free estimate errs high on text full of IDs, not only on prose.

It used to be ``ceil(characters / 4)``: UUID lists tokenize at about 1.9 characters a
token, base64 at 1.5, hex at 1.7 and lists of small numbers at 1, so a hard budget
reserved half of what such a prompt cost (o200k_base counts the UUID list below at
39,493 tokens; the heuristic said 18,524). It is used for every model without a local
tokenizer (Claude, Gemini, Mistral, and OpenAI models when tiktoken's files are missing).

The real counts below are OpenAI's o200k_base, checked against tiktoken when its
encoding is on this machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from decimal import Decimal

import pytest

from costledger import Budget, BudgetExceeded, Tracker, Usage
from costledger._guards._estimate import _load_encoding, heuristic_tokens
from costledger.testing import InMemoryLedger, MemoryStore

PROSE = (
    "The committee met on Tuesday to review the budget for the coming year. Several members"
    " raised concerns about the rising cost of cloud services, and the treasurer promised a"
    " detailed report before the next meeting. After a short break, the discussion turned to"
    " hiring: two engineers will join the platform team in spring, and a designer in summer.\n"
) * 20
CODE = (
    "def settle(self, call: Call, cost: Decimal | None) -> None:\n"
    '    """Settle a call\'s reservation at what it cost."""\n'
    "    for key in self._keys(call):\n"
    "        units = to_units(cost or Decimal(0), tokens=self.tokens)\n"
    "        if units > self._limit_units:\n"
    "            log.warning('over budget: %s %d', key, units)\n"
    "        self._store.settle(self._counter(key), call.id, units)\n"
) * 20


def _digest(count: int) -> bytes:
    return b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(count))


SAMPLES = {
    "prose": PROSE,
    "code": CODE,
    "json": json.dumps(
        [
            {"id": str(uuid.UUID(int=i * 104729 + 7)), "user": f"u-{i * 37 % 1000}", "n": i}
            for i in range(200)
        ]
    ),
    "uuids": "Deduplicate these request ids: "
    + " ".join(str(uuid.UUID(int=i * 7919 + 13)) for i in range(2000)),
    "base64": base64.b64encode(_digest(1000)).decode(),
    "hex": "\n".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(500)),
    "digits": ", ".join(str(i % 10) for i in range(5000)),
    "numbers": ", ".join(str(i * 7919 % 1000003) for i in range(3000)),
    "cjk": "Python（派森）语言是一种功能强大而完善的通用型计算机程序设计语言，"
    "已经具有十多年的发展历史，成熟且稳定。这种语言具有非常简捷而清晰的语法特点，"
    "适合完成各种高层任务，几乎可以在所有的操作系统中运行。" * 10,
    "emoji": "great job 🎉🎉 see you 👋 " * 100 + "👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷 " * 50,
}
# o200k_base, the tokenizer of OpenAI's current models
O200K = {
    "prose": 1320,
    "code": 1900,
    "json": 7532,
    "uuids": 39493,
    "base64": 29177,
    "hex": 18797,
    "digits": 14998,
    "numbers": 11995,
    "cjk": 680,
    "emoji": 2151,
}
# what the heuristic counts (16 tokens of message framing included)
HEURISTIC = {
    "prose": 1751,
    "code": 2596,
    "json": 12944,
    "uuids": 72754,
    "base64": 33703,
    "hex": 28005,
    "digits": 15014,
    "numbers": 23675,
    "cjk": 986,
    "emoji": 3566,
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_heuristic_counts_at_least_the_real_tokens(name: str) -> None:
    text = SAMPLES[name]
    assert heuristic_tokens(text) == HEURISTIC[name]
    assert heuristic_tokens(text) - 16 >= O200K[name]


def test_prose_is_not_counted_absurdly_high() -> None:
    # 1.31 times o200k here, as before: ceil(characters / 4) is the larger count for prose
    assert heuristic_tokens(PROSE) == -(-len(PROSE) // 4) + 16
    assert Decimal(heuristic_tokens(PROSE) - 16) / O200K["prose"] < Decimal("1.4")


def test_a_floor_of_the_old_count() -> None:
    assert heuristic_tokens("") == 16
    assert heuristic_tokens("a" * 400) == 100 + 16  # ceil(characters / 4)
    assert heuristic_tokens("漢" * 300) == 300 + 16  # ceil(UTF-8 bytes / 3)
    assert heuristic_tokens("Human: hello") == 3 + 16
    assert heuristic_tokens("1, 2, 3, 4") == 10 + 16  # 4 digits, 3 commas, 3 spaces
    assert heuristic_tokens("\ud800 lone surrogate") == 6 + 16  # counted, not an error


def test_the_real_counts_are_o200k() -> None:
    encoding = _load_encoding("o200k_base")
    if encoding is None:
        pytest.skip("no local o200k_base encoding file (tiktoken cache or LiteLLM's copy)")
    for name, text in SAMPLES.items():
        assert len(encoding.encode_ordinary(text)) == O200K[name], name


def test_a_hard_token_budget_holds_with_a_prompt_of_ids() -> None:
    # Claude has no local tokenizer: the heuristic counts the prompt. Each call is billed
    # 39,493 input tokens (what o200k counts; Claude's tokenizer counts no fewer).
    prompt = SAMPLES["uuids"]
    budget = Budget("150k tokens", "day")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=MemoryStore(), log="off")
    calls = []
    refused = None
    for _ in range(10):
        try:
            calls.append(
                tracker.start(
                    source="api",
                    model="claude-sonnet-4-5",
                    provider="anthropic",
                    prompt_text=prompt,
                    max_output_tokens=100,
                )
            )
        except BudgetExceeded as exc:
            refused = exc
            break
    assert refused is not None
    for call in calls:
        tracker.finish(call, usage=Usage(input_tokens=39493, output_tokens=100))
    # each reserves 72,754 + 100 tokens: two fit in 150k (the old count reserved 18,624:
    # 8 calls went through and spent 316,744 tokens of the 150k)
    assert len(calls) == 2
    assert budget.status(tracker)[0].spent == 2 * (39493 + 100)
