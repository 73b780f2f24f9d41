"""How the usage of a streamed response adds up, from its events in order.

One piece of code for every entry point that sees a stream event by event: the HTTP
transport's scanners (the events parsed from the server-sent-event bytes, plain dicts)
and ``@track_cost`` on a stream (the SDKs' event objects, or dicts). Each provider
spreads a stream's usage differently:

- OpenAI chat (and OpenAI-compatible servers, LiteLLM, Gemini's ``usageMetadata``): the
  last chunk with a usage part has the whole usage (Groq: under ``x_groq.usage``); the
  SDK's ``chat.completions.stream()`` helper wraps each chunk in a ``ChunkEvent``
  (``type="chunk"``, the chunk under ``.chunk``);
- OpenAI Responses: the ``response.completed`` / ``incomplete`` / ``failed`` event
  carries the whole response, its usage under ``response.usage``;
- Anthropic Messages: ``message_start`` has the input usage and the model, each
  ``message_delta`` the CUMULATIVE output so far (and, lately, cumulative input and
  cache counts). Later values replace earlier ones; adding them would double count;
- LangChain message chunks: ``usage_metadata`` is an increment (LangChain adds chunks
  with ``+``), except for the providers that repeat a running total on every chunk
  (``is_cumulative``). A stream of several model calls (an agent's steps) is read call by
  call, by the chunks' message id, and the calls are added.

A stream may also carry several billed responses (a generator that yields two whole
responses, or streams two requests one after the other: a tool loop). A response ends
where the next begins: at an Anthropic ``message_start``, at a whole response (an OpenAI
``ChatCompletion`` / ``Response``, an Anthropic ``Message``, a Bedrock Converse response,
a LangChain ``AIMessage``: whole ones are never running totals), or at an item whose
response id (``id``, Gemini's ``responseId``) differs from the one before. Items with the
same id, or without one, are the same response's (chunks that repeat the usage so far
replace it); a response seen again under its id (a stream's events, then the message made
of them) counts once.

``StreamUsage.payloads()`` is then one provider-shaped payload per response for
``read_response``; ``payload()`` the last one (a reader of one HTTP response's stream).
Nothing here imports an SDK or LangChain: objects are read by duck typing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ._extract import LANGCHAIN_STAND_IN_IDS, _getter
from ._usage import Usage

__all__ = ["RESPONSES_FINAL", "StreamUsage", "add_usage", "ends_stream", "is_cumulative"]

#: The Responses API events that end a stream, each with the whole response.
RESPONSES_FINAL: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})

_NOT_COUNTS: Final = (str, bytes, int, float)


class StreamUsage:
    """The usage a stream has shown so far; ``see`` each event, then ``payloads()``.

    ``see`` returns whether the event gave usage (or started an Anthropic message). A
    later event of the same response that gives the whole usage replaces what an earlier
    one gave; an event of a new response (see the module docstring) keeps the one before
    as done. ``ended``: the stream's last event was seen (Anthropic's ``message_stop``, a
    Responses API ``response.completed`` / ``incomplete`` / ``failed``), so a consumer
    that stops after it stopped a finished call, not a cancelled one.
    """

    __slots__ = (
        "_done",
        "_final",
        "_key",
        "_lc_calls",
        "_lc_current",
        "_lc_ids",
        "_lc_metadata",
        "_lc_usages",
        "_message",
        "_whole",
        "ended",
    )

    def __init__(self) -> None:
        self.ended = False
        # The responses done before the current one: (their id or None, their payload).
        self._done: list[tuple[Any, Any]] = []
        self._final: Any = None  # the current response's payload (LangChain's: at the end)
        self._key: Any = None  # the current response's id, if it has one
        self._whole = False  # the current payload is a whole response (no chunk follows)
        self._message: dict[str, Any] | None = None  # an Anthropic message being merged
        # LangChain usages by model call (a stream may carry several: an agent's steps),
        # each call a group (``_LangChainCall``); see ``_lc_group``. Their metadata likewise.
        self._lc_usages: dict[Any, list[Mapping[str, Any]]] | None = None
        self._lc_metadata: dict[Any, dict[str, Any]] = {}
        self._lc_ids: dict[str, _LangChainCall] = {}  # every id seen -> its call's group
        self._lc_current: _LangChainCall | None = None  # the group chunks last went to
        self._lc_calls: list[_LangChainCall] = []  # the chunk groups, in order

    def see(self, event: Any) -> bool:
        get = event.get if type(event) is dict else _getter(event)
        etype = get("type", None)
        if type(etype) is str:
            if etype == "message_start":
                self.ended = False  # a next message (a tool loop's) has begun
                return self.message_start(get("message", None))
            if etype == "response.created":
                self.ended = False
            if etype == "message_delta":
                return self.message_delta(get("usage", None))
            if etype in RESPONSES_FINAL:
                response = get("response", None)
                if response is not None:
                    self.ended = True
                return self.response_final(response)
            if etype == "message_stop":
                self.ended = True
                return False
            if etype == "chunk":  # the OpenAI SDK's chat.completions.stream() ChunkEvent
                chunk = get("chunk", None)
                if chunk is not None and chunk is not event:
                    return self.see(chunk)
        usage = get("usage", None)
        if _gives(usage, event):
            self._next(get("id", None), _is_whole(get, etype))
            self._final = event
            return True
        groq = get("x_groq", None)  # Groq puts stream usage there
        if groq is not None:
            usage = groq.get("usage") if type(groq) is dict else _getter(groq)("usage", None)
            if _gives(usage, groq):
                self._next(get("id", None), False)
                if type(event) is dict:
                    self._final = {**event, "usage": usage}
                else:
                    self._final = {"id": get("id", None), "model": get("model", None)}
                    self._final["usage"] = usage
                return True
            return False
        usage = get("usage_metadata", _MISSING)
        if usage is not _MISSING:
            metadata = get("response_metadata", _MISSING)
            if metadata is not _MISSING:  # a LangChain message (chunk)
                whole = type(etype) is str and not etype.endswith("Chunk")
                return self._langchain(usage, metadata, get("id", None), whole)
            if usage is not None:  # google-genai: each chunk has the usage so far
                self._next(get("response_id", None), False)
                self._final = event
                return True
            return False
        if get("usageMetadata", None) is not None:  # Gemini (REST): the usage so far
            self._next(get("responseId", None), False)
            self._final = event
            return True
        return False

    def take(self, usage: Usage | Any) -> None:
        """A whole usage given (a ``Usage``, or a payload ``@track_cost(usage=...)``
        answered for an item): replaces what came before in the current response (a
        running total: nothing tells one ``Usage`` from the next response's)."""
        self._next(None, False)
        self._final = usage

    # -- where one response ends and the next begins ---------------------------------------

    def _next(self, key: Any, whole: bool) -> None:
        """An item with usage (``key``: its response id; ``whole``: a whole response) is
        about to be kept: if it is another response's, the current one is done."""
        if not (type(key) is str and key):  # "" (some servers' ids) is no id
            key = None
        if self._final is None:
            self._key, self._whole = key, whole
            return
        if type(key) is str and key == self._key:
            self._whole = whole
            return  # the same response again: it replaces what it gave
        if whole or self._whole or (type(key) is str and type(self._key) is str):
            self._end_current()
        self._key, self._whole = key, whole

    def _end_current(self) -> None:
        """The current response is done: kept with the ones before it, then forgotten."""
        for key, payload in self._current():
            self._done.append((key, payload))
        self._final = None
        self._key = None
        self._whole = False
        self._message = None
        self._lc_usages = None
        self._lc_metadata = {}
        self._lc_ids = {}
        self._lc_current = None
        self._lc_calls = []

    # -- one kind of event each ------------------------------------------------------------

    def message_start(self, message: Any) -> bool:
        """Anthropic ``message_start``: the input usage and the model; starts the message."""
        if message is None or isinstance(message, (*_NOT_COUNTS, list, tuple)):
            return False
        get = message.get if type(message) is dict else _getter(message)
        message_id = get("id", None)
        self._next(message_id, True)  # a message_start always begins a response
        self._whole = False  # its message_delta events follow
        self._message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": get("model", None),
            "usage": _fields(get("usage", None)) or {},
        }
        self._final = self._message
        return True

    def message_delta(self, usage: Any) -> bool:
        """Anthropic ``message_delta``: cumulative counts, each replacing the one before."""
        fields = _fields(usage) if usage is not None else None
        if fields is None:
            return False
        if self._message is None:
            self._next(None, False)
            self._message = {"type": "message", "model": None, "usage": {}}
        target = self._message["usage"]
        for key, value in fields.items():
            if value is not None:
                target[key] = value
        self._final = self._message
        return True

    def response_final(self, response: Any) -> bool:
        """A Responses API stream's last event: the whole response, with its usage."""
        if response is None or isinstance(response, (*_NOT_COUNTS, list, tuple)):
            return False
        if type(response) is dict:
            if not isinstance(response.get("usage"), dict):
                return False
            response_id = response.get("id")
        else:
            get = _getter(response)
            if get("usage", None) is None:
                return False
            response_id = get("id", None)
        self._next(response_id, True)
        self._final = response
        return True

    def _langchain(self, usage: Any, metadata: Any, message_id: Any, whole: bool) -> bool:
        if self._final is not None and self._final is not _LANGCHAIN:
            self._end_current()  # after another provider's response: a response of its own
        key: Any = self._lc_group(message_id if type(message_id) is str else None, whole)
        if metadata and isinstance(metadata, Mapping):
            self._lc_metadata.setdefault(key, {}).update(metadata)
        if not usage:
            return False
        groups = self._lc_usages
        if groups is None:
            groups = self._lc_usages = {}
        group = groups.get(key)
        if group is None or whole:  # a whole message seen again replaces itself
            groups[key] = [usage]
        else:
            group.append(usage)
        self._final = _LANGCHAIN
        self._key, self._whole = None, True  # anything else after it is another response
        return True

    def _lc_group(self, message_id: str | None, whole: bool) -> _LangChainCall:
        """The model call a LangChain message (chunk) belongs to.

        Chunks of one call may carry different ids: ``BaseChatModel.stream`` gives a chunk
        without one the id ``lc_run-<run id>``, so a provider that sends its id on the
        first chunk only (or the last) mixes the two, which LangChain's own chunk addition
        merges (a provider id over an ``lc_run-`` one). So a chunk joins the call it last
        went to unless that call already has another id of the same kind (a provider id, a
        LangChain one): then it is the next call's (a tool loop's second stream). A chunk
        with no id joins the last call. A whole message (``AIMessage``) is a call of its
        own (seen again under its id, it replaces itself)."""
        if not message_id:
            message_id = None
        if whole:
            if message_id is not None and message_id in self._lc_ids:
                return self._lc_ids[message_id]
            group = _LangChainCall(whole=True)
            group.take(message_id)
            if message_id is not None:
                self._lc_ids[message_id] = group
            return group
        if message_id is not None:
            known = self._lc_ids.get(message_id)
            if known is not None and not known.whole:
                self._lc_current = known
                return known
        current = self._lc_current
        if message_id is not None and current is not None:
            # A second id joins the call that lacks one of its kind, when only one does:
            # chunks of calls interleaved (parallel branches yielding into one stream)
            # cannot be told apart by it, and are then not guessed into another call.
            open_calls = [c for c in self._lc_calls if c.can_take(message_id)]
            current = open_calls[0] if len(open_calls) == 1 else None
        if current is None:
            current = _LangChainCall(whole=False)
            self._lc_calls.append(current)
        self._lc_current = current
        if message_id is not None:
            current.take(message_id)
            self._lc_ids[message_id] = current
        return current

    # -- the end ---------------------------------------------------------------------------

    def _current(self) -> list[tuple[Any, Any]]:
        """The current response's payload (with its id): LangChain's, one per model call."""
        final = self._final
        if final is _LANGCHAIN:
            # Each model call's chunks (one message id) are added up, or their last taken
            # if they repeat a running total.
            calls = []
            for key, usages in (self._lc_usages or {}).items():
                if is_cumulative(usages):
                    total = add_usage({}, usages[-1])
                else:
                    total = {}
                    for usage in usages:
                        total = add_usage(total, usage)
                message_id = key.provider_id
                payload = {
                    "id": message_id,
                    "usage_metadata": total,
                    "response_metadata": self._lc_metadata.get(key, {}),
                }
                calls.append((message_id, payload))
            return calls
        message = self._message
        if final is None or (final is message and not message.get("usage")):
            return []  # nothing yet, or an Anthropic stream cut before any usage
        return [(self._key if type(self._key) is str else None, final)]

    def payloads(self) -> list[Any]:
        """Each response's usage as one payload ``read_response`` reads, in order: a
        response seen again under the same id counts once, as it was seen last."""
        seen: dict[str, int] = {}
        out: list[Any] = []
        for key, payload in (*self._done, *self._current()):
            if type(key) is str and key:
                at = seen.get(key)
                if at is not None:
                    out[at] = payload
                    continue
                seen[key] = len(out)
            out.append(payload)
        return out

    def payload(self) -> Any:
        """The last response's usage as one payload ``read_response`` reads, or ``None``
        (a reader of one response's stream: the HTTP transport)."""
        current = self._current()
        if current:
            return current[-1][1]
        return self._done[-1][1] if self._done else None


def ends_stream(event: Any) -> bool:
    """Whether ``event`` is a stream's last (``StreamUsage.ended``), for a reader that does
    not pass its events to ``StreamUsage.see`` (``@track_cost(usage=...)``)."""
    etype = event.get("type") if type(event) is dict else getattr(event, "type", None)
    if etype == "message_stop":
        return True
    return type(etype) is str and etype in RESPONSES_FINAL


_MISSING: Final[Any] = object()
_LANGCHAIN: Final[Any] = object()  # the payload is the sum of LangChain chunk usages


class _LangChainCall:
    """One LangChain model call of a stream: the ids its messages carried, at most one of
    each kind (the provider's; LangChain's ``lc_run-`` stand-in)."""

    __slots__ = ("langchain_id", "provider_id", "whole")

    def __init__(self, *, whole: bool) -> None:
        self.whole = whole
        self.provider_id: str | None = None
        self.langchain_id: str | None = None

    def can_take(self, message_id: str) -> bool:
        if message_id.startswith(LANGCHAIN_STAND_IN_IDS):
            return self.langchain_id in (None, message_id)
        return self.provider_id in (None, message_id)

    def take(self, message_id: str | None) -> None:
        if message_id is None:
            return
        if message_id.startswith(LANGCHAIN_STAND_IN_IDS):
            self.langchain_id = message_id
        else:
            self.provider_id = message_id


# What a whole response (never a chunk) says it is: OpenAI's ``object`` (a chat
# completion, a Responses API response, a legacy completion, embeddings), Anthropic's
# ``type`` (a ``Message``), Bedrock Converse's ``stopReason`` (its stream's usage is in a
# ``metadata`` event, never beside one).
_WHOLE_OBJECTS: Final = frozenset({"chat.completion", "response", "text_completion", "list"})


def _is_whole(get: Any, etype: Any) -> bool:
    """Whether an item with a usage part is a whole response, by its own marker."""
    if etype == "message":
        return True
    kind = get("object", None)
    if type(kind) is str:
        return kind in _WHOLE_OBJECTS
    return type(get("stopReason", None)) is str


def _gives(usage: Any, holder: Any) -> bool:
    """Whether a usage part is there: a non-empty dict, or (in an object, not in parsed
    JSON) any value that is not a number, text or list."""
    if type(usage) is dict:
        return bool(usage)
    if usage is None or type(holder) is dict:
        return False
    return not isinstance(usage, (*_NOT_COUNTS, list, tuple))


def _fields(usage: Any) -> dict[str, Any] | None:
    """A usage part's fields as a new dict (a dict's copy, an object's attributes)."""
    if type(usage) is dict:
        return dict(usage)
    if usage is None or isinstance(usage, _NOT_COUNTS):
        return None
    if isinstance(usage, Mapping):
        return dict(usage)
    values = getattr(usage, "__dict__", None)
    if not isinstance(values, dict):
        return None
    fields = {k: v for k, v in values.items() if not k.startswith("_")}
    extra = getattr(usage, "__pydantic_extra__", None)
    if extra:
        fields.update(extra)
    return fields


def is_cumulative(usages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether LangChain stream chunks carried running totals rather than increments.

    Increments report the prompt once (OpenAI on the final chunk, Anthropic on the
    first); running totals repeat it on every chunk with output growing.
    """
    if len(usages) < 2:
        return False
    last_in = last_out = -1
    repeats = 0
    for usage in usages:
        inp = usage.get("input_tokens") or 0
        out = usage.get("output_tokens") or 0
        if inp < last_in or out < last_out:
            return False
        if inp > 0:
            repeats += 1
        last_in, last_out = inp, out
    return repeats >= 2


def add_usage(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    """Two LangChain usage increments added, as ``AIMessageChunk.__add__`` adds them:
    counts added key by key, nested details likewise; any other value is the later one."""
    total = dict(left)
    for key, value in right.items():
        have = total.get(key)
        if have is None:
            total[key] = add_usage({}, value) if isinstance(value, Mapping) else value
        elif _is_count(have) and _is_count(value):
            total[key] = have + value
        elif isinstance(have, Mapping) and isinstance(value, Mapping):
            total[key] = add_usage(have, value)
        elif value is not None:
            total[key] = value
    return total


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
