"""The worst-case estimate a guard reserves before a call.

Input tokens are counted with tiktoken for OpenAI-family models when its encoding
files are on this machine (tiktoken's own cache, or the copies LiteLLM ships), and
never downloaded: a guard must not reach the network on the call path. Otherwise the
heuristic below (``heuristic_tokens``), chosen to over-count rather than under-count.

Output tokens are the call's ``max_output_tokens``, else the model's output limit from
the price data, else ``Estimator.default_output_tokens``: one answer's worst case, times
the call's ``choices`` (the answers it generates: ``n``, ``best_of``,
``candidate_count``; each is billed). Money is the pricer's rate
card applied to both (``RateCard.estimate``); an explicit ``estimate=`` on the call wins.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import string
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._tracker import Call, Tracker

__all__ = [
    "DEFAULT_ESTIMATOR",
    "Estimate",
    "Estimator",
    "check_choices",
    "check_estimate",
    "check_estimator",
    "check_max_output_tokens",
    "count_tokens",
    "heuristic_tokens",
    "request_json_text",
    "requested_choices",
]

CHARS_PER_TOKEN = 4
"""The floor for ASCII text: never fewer tokens than ``ceil(characters / 4)``."""
BYTES_PER_TOKEN_NON_ASCII = 3
"""The floor for other text: never fewer tokens than ``ceil(UTF-8 bytes / 3)``."""
OVERHEAD_TOKENS = 16
"""Per call: role markers and message framing (a chat message costs 3-4 extra tokens)."""


def _byte_table(default: str, classes: dict[str, Iterable[int]]) -> bytes:
    """A ``bytes.translate`` table mapping each byte to the symbol of its class."""
    table = bytearray(default.encode() * 256)
    for symbol, codes in classes.items():
        for code in codes:
            table[code] = ord(symbol)
    return bytes(table)


def _codes(chars: str) -> list[int]:
    return [ord(char) for char in chars]


# Each UTF-8 byte as its class: "a" lower-case letter, "A" upper-case, "0" digit, "."
# punctuation, " " space, "\n" other whitespace and control characters; the first byte of a
# character beyond ASCII as "y" (2 bytes: accented Latin, Greek, Cyrillic, Hebrew, Arabic),
# "x" (3 bytes: CJK, kana, Indic, Thai, symbols), "K" (3 bytes from U+A000: Hangul
# syllables) or "F" (4 bytes: emoji, rare CJK); continuation bytes "?".
_KINDS = _byte_table(
    "?",
    {
        "a": _codes(string.ascii_lowercase),
        "A": _codes(string.ascii_uppercase),
        "0": _codes(string.digits),
        ".": _codes(string.punctuation),
        " ": [0x20],
        "\n": [*range(0x20), 0x7F],
        "y": range(0xC0, 0xE0),
        "x": [*range(0xE0, 0xEA), 0xEE, 0xEF],
        "K": range(0xEA, 0xEE),
        "F": range(0xF0, 0x100),
    },
)
# Letters ("a") and spaces (" ") against everything else ("-"): runs of either.
_RUNS = _byte_table("-", {"a": _codes(string.ascii_letters), " ": [0x20]})


def heuristic_tokens(text: str) -> int:
    """A tokenizer-free token count that errs high, for models without a local tokenizer.

    Tokenizers cut text into words, numbers and punctuation before merging what they
    know, and never merge across those cuts; text full of IDs (UUIDs, base64, hex, digit
    lists) has a cut every one or two characters. So the count is of the pieces a
    tokenizer cannot merge (the terms below), never less than ``ceil(characters / 4)``
    for ASCII text or ``ceil(UTF-8 bytes / 3)`` for other text, plus 16 tokens of
    message framing.

    Against OpenAI's o200k_base it gives 1.2-1.3 times the real count for English prose,
    1.35-1.7 for code, JSON, CSV, HTML and logs, 1.15-1.85 for UUIDs, base64 and hex,
    1.0-3.0 for numbers (a list of one-digit numbers is a token a character), 1.1-1.35
    for Chinese, Japanese and Korean text, 1.7-1.8 for emoji. Text a tokenizer handles
    worse than usual can still be under-counted: random letters with no digit or case
    change in them, random CJK characters. It runs in C (two ``bytes.translate``, a few
    ``count``), about 15 ns a character: it is on the call path of every guarded call.
    """
    if not text:
        return OVERHEAD_TOKENS
    data = text.encode("utf-8", "surrogatepass")
    kinds = data.translate(_KINDS)
    runs = data.translate(_RUNS)
    pieces = (
        # every digit: Gemini's, Mistral's and Llama 2's tokenizers split numbers into
        # digits (OpenAI's into groups of 3); every punctuation mark, newline or tab; a
        # space before a digit (not merged into it)
        kinds.count(b"0")
        + kinds.count(b".")
        + kinds.count(b"\n")
        + kinds.count(b" 0")
        # a change of case inside a word: cuts (``aB``) and, in random IDs and base64
        # (``aGVsbG8``), unknown pairs (``AB``, ``aBc``); a capitalised word is one piece
        + kinds.count(b"aA")
        + kinds.count(b"AA")
        + kinds.count(b"aAa")
        + kinds.count(b"AAa")
        # a word (a run of letters, with the space before it) and one more per 8 letters
        + runs.count(b"-a")
        + runs.count(b" a")
        + runs.startswith(b"a")
        + runs.count(b"a" * 8)
        # a run of spaces (indentation) before the next word, and one more per 16 spaces
        + runs.count(b"  -")
        + runs.count(b"  a")
        + runs.count(b" " * 16)
    )
    if data.isascii():
        floor = -(-len(data) // CHARS_PER_TOKEN)
    else:
        floor = -(-len(data) // BYTES_PER_TOKEN_NON_ASCII)
        # per character, in sixths of a token: 2 UTF-8 bytes 4/6, 3 bytes (CJK) 6/6,
        # Hangul syllables 9/6 (o200k gives Korean text about 1.2 tokens a character),
        # 4 bytes (emoji) 24/6: one a byte, the most a byte-level tokenizer gives
        sixths = (
            4 * kinds.count(b"y")
            + 6 * kinds.count(b"x")
            + 9 * kinds.count(b"K")
            + 24 * kinds.count(b"F")
        )
        pieces += -(-sixths // 6)
    return max(pieces, floor) + OVERHEAD_TOKENS


_OPENAI_PREFIXES = ("openai/", "azure/", "azure_ai/", "openrouter/openai/")
_ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_encodings: dict[str, Any] = {}
_encodings_lock = threading.Lock()


def request_json_text(value: Any) -> str:
    """``value`` (a request's tools, ``response_format``...) as the JSON a provider
    receives, for an integration's prompt text: counted for the worst case, never stored.
    ``ensure_ascii=False``: non-ASCII stays the UTF-8 the provider receives, which the
    estimate counts per byte, not six ASCII characters a character. A value JSON cannot
    walk (a cycle) counts as its text; one without even that as nothing (the guards still
    run, on the rest of the prompt)."""
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except Exception:
        try:
            return str(value)
        except Exception:
            return ""


def _json_default(value: Any) -> Any:
    """A value that is not JSON yet, as the provider's client would serialise it: a
    Pydantic schema class (``response_format``) as its JSON schema, a Pydantic object (a
    ``google.genai`` Tool) as its fields; anything else as its text."""
    try:
        if isinstance(value, type):
            schema = getattr(value, "model_json_schema", None) or getattr(value, "schema", None)
            if callable(schema):
                return schema()
        else:
            dump = getattr(value, "model_dump", None)
            if callable(dump):
                return dump(mode="json", exclude_none=True)
    except Exception:  # the estimate is never worth failing the guard over
        pass
    return str(value)


def _encoding_name(model: str) -> str | None:
    name = model
    for prefix in _OPENAI_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if "/" in name:
        return None
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        return str(tiktoken.encoding_name_for_model(name))
    except KeyError:
        return None


def _local_dirs() -> list[Path]:
    """Where an encoding file may already be: tiktoken's cache, then LiteLLM's bundled copies
    (found without importing litellm, which costs seconds)."""
    dirs = []
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]))
    dirs.append(Path(tempfile.gettempdir()) / "data-gym-cache")
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            dirs.append(Path(root) / "litellm_core_utils" / "tokenizers")
    return dirs


def _load_encoding(name: str) -> Any:
    """The tiktoken encoding ``name`` if its file is on this machine, else None. Cached."""
    if name in _encodings:
        return _encodings[name]
    with _encodings_lock:
        if name in _encodings:
            return _encodings[name]
        encoding = None
        try:
            import tiktoken

            key = hashlib.sha1(_ENCODING_URL.format(name).encode()).hexdigest()
            for folder in _local_dirs():
                if (folder / key).is_file():
                    encoding = _encoding_from(tiktoken, name, folder)
                    break
        except Exception:
            encoding = None
        _encodings[name] = encoding
        return encoding


def _encoding_from(tiktoken: Any, name: str, folder: Path) -> Any:
    # tiktoken reads files named by the hash of their URL from TIKTOKEN_CACHE_DIR; point it
    # at the folder that has the file for the one call that builds the encoding. The
    # encoding is then kept in tiktoken's registry, so this happens once per process.
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    try:
        return tiktoken.get_encoding(name)
    finally:
        if saved is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved


def count_tokens(text: str, model: str | None) -> tuple[int, str]:
    """Input tokens of ``text`` for ``model`` and how they were counted (``"tiktoken:<enc>"``
    or ``"heuristic"``)."""
    if model:
        name = _encoding_name(model)
        if name is not None:
            encoding = _load_encoding(name)
            if encoding is not None:
                return len(encoding.encode_ordinary(text)) + OVERHEAD_TOKENS, f"tiktoken:{name}"
    return heuristic_tokens(text), "heuristic"


def check_estimate(value: object) -> Decimal:
    """A call's ``estimate=`` as a ``Decimal`` amount of money >= 0: a ``Decimal``, an ``int``
    or a decimal string (``"0.05"``). A float is refused (it cannot hold money exactly), as
    is anything else: a guard must never run on an estimate it cannot read."""
    amount: Decimal | None = None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except ArithmeticError:
            amount = None
    elif isinstance(value, float):
        raise ValueError(
            "estimate must be a Decimal, an int or a decimal string such as '0.05', never a"
            f" float (which cannot hold money exactly), got {value!r}"
        )
    if amount is None or not amount.is_finite() or amount < 0:
        raise ValueError(
            "estimate must be a Decimal, an int or a decimal string such as '0.05': an"
            f" amount of money >= 0, got {value!r}"
        )
    return amount


def check_max_output_tokens(value: object) -> int:
    """A call's ``max_output_tokens=`` as a whole number of tokens >= 0 (an ``int``; a bool
    is not one, nor is a string or a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_output_tokens must be an int >= 0, got {value!r}")
    return int(value)


def requested_choices(request: Mapping[str, Any], keys: Sequence[str]) -> int:
    """The answers a request generates, each billed up to its output limit: the largest
    whole number above 1 among ``keys`` (``n``, ``best_of``: a legacy completion generates
    and bills ``best_of``, returns ``n``; Gemini's ``candidate_count``), else 1. Shared by
    the entry points that read a request's parameters (LangChain, LiteLLM, HTTP)."""
    choices = 1
    for key in keys:
        value = request.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > choices:
            choices = value
    return choices


def check_choices(value: object) -> int:
    """A call's ``choices=`` (the answers it generates) as a whole number >= 1 (an ``int``;
    a bool is not one, nor is a string or a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"choices must be an int >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A call's worst case: tokens in and out, and money (``None`` when the model has no
    price, in which case money guards reserve ``Estimator.default_reserve``)."""

    input_tokens: int
    output_tokens: int
    cost: Decimal | None
    currency: str
    method: str

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Estimator:
    """How guards estimate a call before it runs.

    ``default_output_tokens``: output when neither the call nor the price data gives a
    limit. ``default_input_tokens``: input when the entry point could not see the prompt
    (an opaque decorated function). ``default_reserve``: money reserved when the call has
    no estimate and no priced model; such a call also settles at this amount if it ends
    unpriced, so an unknown model cannot spend past a hard budget.
    """

    default_output_tokens: int = 4096
    default_input_tokens: int = 2000
    default_reserve: Decimal = Decimal("0.10")

    def __post_init__(self) -> None:
        for name in ("default_output_tokens", "default_input_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Estimator.{name} must be a whole number >= 0, got {value!r}")
        if not isinstance(self.default_reserve, Decimal) or self.default_reserve < 0:
            raise ValueError(
                f"Estimator.default_reserve must be a Decimal >= 0, got {self.default_reserve!r}"
            )

    def estimate(self, call: Call, tracker: Tracker) -> Estimate:
        cached = _last.__dict__.get("entry")
        if cached is not None and cached[0] is call and cached[1] is self:
            return cached[2]  # type: ignore[no-any-return]
        result = self._estimate(call, tracker)
        _last.entry = (call, self, result)
        return result

    def _estimate(self, call: Call, tracker: Tracker) -> Estimate:
        card = _rate_card(tracker, call) if call.model else None
        if call.prompt_text is not None:
            input_tokens, method = count_tokens(call.prompt_text, call.model)
        else:
            input_tokens, method = self.default_input_tokens, "default"
        output = call.max_output_tokens
        if output is None and card is not None:
            output = getattr(card, "max_output_tokens", None)
        if output is None:
            output = self.default_output_tokens
        # one answer's limit, times the answers generated (n, best_of, candidate_count):
        # each is billed
        output *= getattr(call, "choices", 1)
        currency = str(getattr(card, "currency", "USD"))
        if call.estimate is not None:
            return Estimate(input_tokens, output, call.estimate, currency, "explicit")
        cost: Decimal | None = None
        if card is not None:
            try:
                cost = card.estimate(input_tokens, output)
            except Exception:
                cost = None
        return Estimate(input_tokens, output, cost, currency, method)


DEFAULT_ESTIMATOR = Estimator()
"""Shared by every guard not given its own, so one call's prompt is counted once."""


def check_estimator(estimator: object) -> Estimator:
    """A guard's ``estimator=``: ``None`` (the shared default) or an ``Estimator`` (or an
    object with the same ``estimate(call, tracker)`` method), checked when the guard is
    made rather than failing on every call."""
    if estimator is None:
        return DEFAULT_ESTIMATOR
    if isinstance(estimator, Estimator) or (
        not isinstance(estimator, type) and callable(getattr(estimator, "estimate", None))
    ):
        return estimator  # type: ignore[return-value]
    raise ValueError(
        "estimator must be an Estimator (an object with an estimate(call, tracker) method),"
        f" got {estimator!r}"
    )


_last = threading.local()
"""The last estimate made on this thread: a Tracker runs every guard on a call in a row,
so a budget and a token limit on one call count its prompt once."""


def _rate_card(tracker: Tracker, call: Call) -> Any:
    """The model's rate card, or None (unknown model, or the pricer failed: the
    estimate then falls back to ``default_reserve``)."""
    if not call.model:
        return None
    try:
        return tracker.pricer.rate_card(call.model, provider=call.provider, at=call.started_at)
    except Exception:
        return None
