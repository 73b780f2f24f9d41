"""Read token usage out of any provider's response into the canonical ``Usage``, in one pass.

Every provider counts differently: OpenAI's ``prompt_tokens`` include cached tokens,
Anthropic's and Bedrock's ``input_tokens`` exclude them, Gemini bills thoughts on top of
``candidatesTokenCount``. This module is the one boundary where all of them become the
canonical convention (see ``costledger._usage``), so no token is ever counted twice.
``docs/usage-conventions.md`` maps every raw field to its canonical field.

The shape is read from the payload's own fields, never from the caller's word alone:
reading a payload under the wrong convention is exactly the double-counting bug this
module exists to prevent. ``provider`` only breaks ties between shapes that the fields
fit equally, and names the shape then.

Nothing here imports an SDK: dicts, Mappings, pydantic models (OpenAI, Anthropic,
LiteLLM, LangChain, google-genai) and plain objects are read by duck typing. Pydantic
models are read through their ``__dict__`` because ``getattr`` of an absent field costs
microseconds there (pydantic's ``__getattr__`` raises), and this runs on every call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, NoReturn

from ._errors import UsageError
from ._events import short_repr
from ._usage import MAX_TOKENS, TOKEN_FIELDS, Usage, check_count

__all__ = ["PROVIDER_HINTS", "SHAPES", "ResponseInfo", "extract_usage", "read_response"]

#: The shapes this module reads, as reported in ``ResponseInfo.provider``.
SHAPES: Final = (
    "openai",
    "openai_responses",
    "openai_realtime",
    "anthropic",
    "gemini",
    "bedrock",
    "langchain",
    "litellm",
    "costledger",
)

_OPENAI_FAMILY: Final = ("openai", "openai_responses", "openai_realtime")
_GEMINI: Final = ("gemini",)
_BEDROCK: Final = ("bedrock",)
_LANGCHAIN: Final = ("langchain",)

#: ``provider`` values understood as a preference between shapes (case-insensitive).
#: Any other value (``"groq"``, ``"mistral"``...) is ignored and the shape is detected.
PROVIDER_HINTS: Final[Mapping[str, tuple[str, ...]]] = {
    "openai": _OPENAI_FAMILY,
    "openai_chat": ("openai",),
    "openai_responses": ("openai_responses",),
    "openai_realtime": ("openai_realtime",),
    "azure": _OPENAI_FAMILY,
    "azure_openai": _OPENAI_FAMILY,
    "anthropic": ("anthropic",),
    "gemini": _GEMINI,
    "google": _GEMINI,
    "google_genai": _GEMINI,
    "vertex_ai": _GEMINI,
    "vertex": _GEMINI,
    "bedrock": _BEDROCK,
    "bedrock_converse": _BEDROCK,
    "aws_bedrock": _BEDROCK,
    "langchain": _LANGCHAIN,
    "litellm": ("litellm",),
    "costledger": ("costledger",),
}

_MISSING: Final[Any] = object()

Getter = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What one response says about itself: its usage, and who answered.

    ``model`` is the model the provider reports (often a dated snapshot of the one
    requested); ``response_id`` the provider's id of the response; ``provider`` the
    shape the usage was read as (one of ``SHAPES``); ``price_context`` how the call was
    served where the provider says so (``{"service_tier": "flex"}``, ``{"speed":
    "fast"}``, ``{"processing": "batch"}``: the keys ``Pricer.price`` takes).
    """

    usage: Usage
    model: str | None = None
    response_id: str | None = None
    provider: str | None = None
    price_context: Mapping[str, str] | None = None


def extract_usage(payload: Any, provider: str | None = None) -> Usage:
    """Return the canonical ``Usage`` of a response or of its usage part.

    Raises ``UsageError`` naming the field path and the value when the payload
    carries no usage or a count is not a whole number of tokens >= 0.
    """
    return read_response(payload, provider).usage


def read_response(payload: Any, provider: str | None = None) -> ResponseInfo:
    """Read usage, model and response id from a response in one pass.

    ``payload`` may be a whole response (dict or SDK object: ChatCompletion, Response,
    Message, AIMessage, LLMResult, ModelResponse, a Gemini or Bedrock response), only its
    usage part, or the JSON text of either. ``provider`` is a hint (see ``PROVIDER_HINTS``).
    """
    hints: tuple[str, ...] = ()
    if provider:
        hints = PROVIDER_HINTS.get(provider.lower(), ()) if isinstance(provider, str) else ()
    if isinstance(payload, (str, bytes, bytearray)):
        payload = _parse_json(payload)
    return _read(payload, hints, "")


# --- locating the usage part ---------------------------------------------------------


# The ids LangChain gives a message no provider id was given for (``lc_run-<run id>``,
# older ``run-<run id>``, ``lc_<uuid>``): no provider knows them.
LANGCHAIN_STAND_IN_IDS: Final = ("run-", "lc_")

# The keys ``_read`` looks for around a usage part, in its order below.
_WRAPPER_KEYS: Final = frozenset(
    (
        "usage",
        "usageMetadata",
        "usage_metadata",
        "generations",
        "token_usage",
        "response",
        "message",
    )
)


def _read(payload: Any, hints: tuple[str, ...], where: str) -> ResponseInfo:
    if type(payload) is dict:
        if _WRAPPER_KEYS.isdisjoint(payload):
            # A usage part itself (a LangChain message's usage_metadata, an OpenAI usage
            # dict), as the end of this function reads it: one C test instead of the
            # seven look-ups for a response around it.
            usage, shape = _read_usage(payload, where, hints, None)
            return ResponseInfo(usage, provider=shape)
        get: Getter = payload.get
    elif isinstance(payload, Usage):
        return ResponseInfo(payload, provider="costledger")
    else:
        get = _getter(payload)

    node = get("usage", _MISSING)
    if node is not _MISSING:
        at = f"{where}.usage" if where else "usage"
        if node is None:
            raise _no_usage(payload, f"{at!r} is None")
        info = _read_usage(node, at, hints, payload)
        response_id = _text(get("id", None))
        if response_id is None:  # Bedrock: the id is boto3's request id
            meta = get("ResponseMetadata", None)
            if meta is not None:
                response_id = _text(_getter(meta)("RequestId", None))
        # (a plain dict that says nothing of its tier is the common case: two look-ups)
        says = (
            type(payload) is not dict
            or type(node) is not dict
            or "service_tier" in payload
            or "service_tier" in node
            or "speed" in node
        )
        served = _served(get, node) if says else None
        return ResponseInfo(info[0], _text(get("model", None)), response_id, info[1], served)

    node = get("usageMetadata", _MISSING)
    if node is not _MISSING:
        at = _join(where, "usageMetadata")
        if node is None:
            raise _no_usage(payload, f"{at!r} is None")
        usage = _read_gemini(node, at)
        return ResponseInfo(
            usage, _text(get("modelVersion", None)), _text(get("responseId", None)), "gemini"
        )

    node = get("usage_metadata", _MISSING)
    if node is not _MISSING:
        return _read_usage_metadata(payload, get, node, where)

    generations = get("generations", _MISSING)
    if generations is not _MISSING:
        return _read_llm_result(generations, get("llm_output", None), hints, where)

    node = get("token_usage", _MISSING)
    if node is not _MISSING and node is not None:  # LangChain llm_output, response_metadata
        at = _join(where, "token_usage")
        usage, shape = _read_usage(node, at, hints, payload)
        model = _text(get("model_name", None)) or _text(get("model", None))
        return ResponseInfo(usage, model, _text(get("id", None)), shape)

    for key in ("response", "message"):  # a Responses stream event; a LangChain generation
        inner = get(key, None)
        if inner is not None and not isinstance(inner, (str, bytes, int, float)):
            if key == "message" and get("generation_info", _MISSING) is _MISSING:
                continue  # an Anthropic message_start event's usage is not final
            return _read(inner, hints, _join(where, key))

    usage, shape = _read_usage(payload, where, hints, None)
    return ResponseInfo(usage, provider=shape)


def _read_usage_metadata(payload: Any, get: Getter, node: Any, where: str) -> ResponseInfo:
    """``usage_metadata``: a LangChain message, or a google-genai response (snake_case).

    The wrapper decides the shape here, not the ``provider`` hint: a LangChain run of
    ChatAnthropic says "anthropic" but carries LangChain's convention."""
    at = _join(where, "usage_metadata")
    metadata = get("response_metadata", _MISSING)
    if metadata is _MISSING:  # google-genai
        if node is None:
            raise _no_usage(payload, f"{at!r} is None")
        usage, shape = _read_usage(node, at, _GEMINI, None)
        return ResponseInfo(
            usage, _text(get("model_version", None)), _text(get("response_id", None)), shape
        )
    meta = _getter(metadata) if metadata is not None else _empty_get
    if node is None:
        # No usage_metadata (an old integration): the provider's raw usage may still be there.
        for key in ("token_usage", "usage"):
            raw = meta(key, None)
            if raw is not None:
                node, at = raw, _join(where, f"response_metadata.{key}")
                break
        else:
            raise _no_usage(payload, f"{at!r} is None")
    usage, shape = _read_usage(node, at, _LANGCHAIN, None)
    model = _text(meta("model_name", None)) or _text(meta("model", None))
    response_id = _text(meta("id", None))
    if response_id is None:
        message_id = _text(get("id", None))
        # LangChain fills a missing id with its own run id, which no provider knows.
        if message_id is not None and not message_id.startswith(LANGCHAIN_STAND_IN_IDS):
            response_id = message_id
    # ChatOpenAI keeps the response's service_tier in response_metadata, ChatAnthropic
    # the provider's own usage (with its service_tier and speed) under "usage"
    served = _served(meta, meta("usage", None))
    return ResponseInfo(usage, model, response_id, shape, served)


def _read_llm_result(
    generations: Any, llm_output: Any, hints: tuple[str, ...], where: str
) -> ResponseInfo:
    """A LangChain ``LLMResult`` (list of lists) or ``ChatResult`` (list of generations).

    Each inner list holds the candidates of one prompt; LangChain puts the usage of the
    whole call on the first candidate's message, so only that one is read per prompt.
    """
    total: Usage | None = None
    first: ResponseInfo | None = None
    if isinstance(generations, (list, tuple)):
        for i, candidates in enumerate(generations):
            if isinstance(candidates, (list, tuple)):
                if not candidates:
                    continue
                generation, at = candidates[0], _join(where, f"generations[{i}][0].message")
            else:
                generation, at = candidates, _join(where, f"generations[{i}].message")
            message = _getter(generation)("message", None)
            if message is None or _getter(message)("usage_metadata", None) is None:
                continue
            info = _read(message, hints, at)
            first = first or info
            total = info.usage if total is None else total + info.usage
            if not isinstance(candidates, (list, tuple)):
                break  # ChatResult: candidates of one prompt share one usage
    if total is not None and first is not None:
        model, response_id = first.model, first.response_id
        if llm_output is not None and model is None:
            out = _getter(llm_output)
            model = _text(out("model_name", None)) or _text(out("model", None))
        return ResponseInfo(total, model, response_id, first.provider, first.price_context)
    if llm_output is not None:
        return _read(llm_output, hints, _join(where, "llm_output"))
    raise UsageError(
        "no token usage found in a LangChain result: no generation message has "
        "usage_metadata and llm_output is None (streams need stream_usage=True)",
        field=_join(where, "generations"),
        value=None,
    )


def price_context_of(response: Any) -> dict[str, str] | None:
    """The price context a whole response states (see ``_served``): for entry points that
    read the usage part on its own (LiteLLM's records)."""
    if response is None or isinstance(response, (str, bytes, int, float)):
        return None
    get = response.get if type(response) is dict else _getter(response)
    return _served(get, get("usage", None))


def _served(get: Getter, usage: Any) -> dict[str, str] | None:
    """How the call was served, where that changes its price, from a response's
    ``service_tier`` (OpenAI: "default", "flex", "priority", ...) and its usage part's
    ``service_tier`` and ``speed`` (Anthropic: "standard", "priority", "batch"; "fast"),
    under genai-prices' keys: Anthropic's "batch" tier is ``processing="batch"``.
    Values are kept as the provider wrote them; ``None`` when nothing says."""
    context: dict[str, str] = {}
    tier = get("service_tier", None)
    if isinstance(tier, str) and tier:
        context["service_tier"] = tier
    if usage is not None and not isinstance(usage, (Usage, str, bytes, int, float)):
        used = usage.get if type(usage) is dict else _getter(usage)
        tier = used("service_tier", None)
        if isinstance(tier, str) and tier:
            if tier == "batch":
                context["processing"] = "batch"
            else:
                context.setdefault("service_tier", tier)
        speed = used("speed", None)
        if isinstance(speed, str) and speed:
            context["speed"] = speed
    return context or None


# --- detecting the shape of a usage part ---------------------------------------------


def _read_usage(node: Any, where: str, hints: tuple[str, ...], response: Any) -> tuple[Usage, str]:
    if type(node) is dict:
        get: Getter = node.get
    elif isinstance(node, Usage):
        return node, "costledger"
    else:
        get = _getter(node)
    shape = _detect(node, get, hints, response)
    if shape is None:
        raise _no_usage(node, f"{where or 'the payload'} has no token counts")
    return _READERS[shape](get, where), shape


def _detect(node: Any, get: Getter, hints: tuple[str, ...], response: Any) -> str | None:
    if get("prompt_tokens", _MISSING) is not _MISSING or (
        get("completion_tokens", _MISSING) is not _MISSING
    ):
        if (
            "litellm" in hints
            or type(node).__module__.startswith("litellm")
            or get("cache_read_input_tokens", _MISSING) is not _MISSING
            or get("cache_creation_input_tokens", _MISSING) is not _MISSING
        ):
            return "litellm"
        return "openai"
    if get("input_tokens", _MISSING) is not _MISSING or (
        get("output_tokens", _MISSING) is not _MISSING
    ):
        return _detect_input_output(get, hints, response)
    if (
        get("promptTokenCount", _MISSING) is not _MISSING
        or get("candidatesTokenCount", _MISSING) is not _MISSING
        or get("prompt_token_count", _MISSING) is not _MISSING
        or get("candidates_token_count", _MISSING) is not _MISSING
        or get("totalTokenCount", _MISSING) is not _MISSING
        or get("total_token_count", _MISSING) is not _MISSING
    ):
        return "gemini"
    if get("inputTokens", _MISSING) is not _MISSING or (
        get("outputTokens", _MISSING) is not _MISSING
    ):
        return "bedrock"
    return None


_ANTHROPIC_MARKERS: Final = (
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
)
_CANONICAL_MARKERS: Final = (
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)
_INPUT_OUTPUT_SHAPES: Final = ("anthropic", "openai_responses", "langchain", "costledger")


def _detect_input_output(get: Getter, hints: tuple[str, ...], response: Any) -> str:
    """Several shapes name their counts ``input_tokens``/``output_tokens``; their detail
    fields tell them apart, and only a bare pair (read alike by all) is left to hints."""
    for key in _ANTHROPIC_MARKERS:
        if get(key, _MISSING) is not _MISSING:
            return "anthropic"
    if get("input_tokens_details", _MISSING) is not _MISSING:
        return "openai_responses"
    details = get("output_tokens_details", _MISSING)
    if details is not _MISSING:
        if details is not None and _getter(details)("thinking_tokens", _MISSING) is not _MISSING:
            return "anthropic"
        return "openai_responses"
    details = get("input_token_details", _MISSING)
    if details is _MISSING:
        details = get("output_token_details", _MISSING)
    if details is not _MISSING:
        if details is not None:
            detail = _getter(details)
            if detail("cached_tokens", _MISSING) is not _MISSING or (
                detail("audio_tokens", _MISSING) is not _MISSING
                or detail("text_tokens", _MISSING) is not _MISSING
            ):
                return "openai_realtime"
        return "langchain"
    for key in _CANONICAL_MARKERS:
        if get(key, _MISSING) is not _MISSING:
            return "costledger"
    if response is not None:
        wrapper = _getter(response)
        if wrapper("type", None) == "message":
            return "anthropic"
        if wrapper("object", None) == "response":
            return "openai_responses"
    for hint in hints:
        if hint in _INPUT_OUTPUT_SHAPES:
            return hint
    return "langchain" if get("total_tokens", _MISSING) is not _MISSING else "anthropic"


# --- the readers: one per shape ------------------------------------------------------

# Keys only Perplexity's chat usage has: its top-level reasoning_tokens are beside
# completion_tokens (billed at a rate of their own), not a part of them.
_PERPLEXITY_MARKERS = ("citation_tokens", "num_search_queries")


def _read_chat(mirrors: bool, get: Getter, where: str) -> Usage:
    """OpenAI Chat Completions; also LiteLLM, which follows its convention for every
    provider (for Anthropic and Bedrock, LiteLLM adds the cache tokens into
    ``prompt_tokens`` and mirrors them in ``cache_read_input_tokens`` /
    ``cache_creation_input_tokens``: those are read as a fallback, never added)."""
    prompt = _required(get("prompt_tokens", _MISSING), where, "prompt_tokens")
    completion = get("completion_tokens", _MISSING)
    # Embedding responses have no completion_tokens at all; an explicit None is an error.
    completion = 0 if completion is _MISSING else _required(completion, where, "completion_tokens")
    cache_read = cache_write = write_1h = reasoning = audio_in = audio_out = 0
    read_path, write_path, reasoning_path = _CHAT_PATHS[2], _CHAT_PATHS[3], _CHAT_PATHS[5]
    details = get("prompt_tokens_details", None)
    if details is not None:
        detail = _getter(details)
        cache_read = _optional(detail("cached_tokens", None), where, read_path)
        cache_write = _optional(detail("cache_write_tokens", None), where, write_path)
        if not cache_write and detail("cache_creation_tokens", None) is not None:
            write_path = "prompt_tokens_details.cache_creation_tokens"  # LiteLLM's mirror
            cache_write = _optional(detail("cache_creation_tokens", None), where, write_path)
        audio_in = _optional(detail("audio_tokens", None), where, _CHAT_PATHS[6])
        ttl = detail("cache_creation_token_details", None)  # LiteLLM, from Anthropic
        if ttl is not None:
            write_1h = _optional(
                _getter(ttl)("ephemeral_1h_input_tokens", None), where, _CHAT_PATHS[4]
            )
    elif get("prompt_cache_hit_tokens", None) is not None:  # DeepSeek; inside prompt_tokens
        read_path = "prompt_cache_hit_tokens"
        cache_read = _optional(get(read_path, None), where, read_path)
    if mirrors:
        if not cache_read and get("cache_read_input_tokens", None) is not None:
            read_path = "cache_read_input_tokens"
            cache_read = _optional(get(read_path, None), where, read_path)
        if not cache_write and get("cache_creation_input_tokens", None) is not None:
            write_path = "cache_creation_input_tokens"
            cache_write = _optional(get(write_path, None), where, write_path)
    details = get("completion_tokens_details", None)
    if details is not None:
        detail = _getter(details)
        reasoning = _optional(detail("reasoning_tokens", None), where, reasoning_path)
        audio_out = _optional(detail("audio_tokens", None), where, _CHAT_PATHS[7])
    elif get("reasoning_tokens", None) is not None:  # a few gateways report it at the top
        reasoning_path = "reasoning_tokens"
        reasoning = _optional(get(reasoning_path, None), where, reasoning_path)
    if reasoning:
        # OpenAI's completion_tokens include reasoning. Some OpenAI-compatible APIs report
        # it beside them instead: xAI, whose total_tokens then counts it on top, and
        # Perplexity (told by its citation_tokens / num_search_queries), whose does not.
        total = get("total_tokens", None)
        if (
            reasoning_path == "reasoning_tokens"
            and any(get(key, None) is not None for key in _PERPLEXITY_MARKERS)
        ) or (
            type(total) is int
            and total != prompt + completion
            and total == prompt + completion + reasoning
        ):
            completion += reasoning
    paths = _CHAT_PATHS
    if cache_read + cache_write > prompt or reasoning > completion:  # name the real source
        paths = (*paths[:2], read_path, write_path, paths[4], reasoning_path, *paths[6:])
    return _build(
        prompt,
        completion,
        cache_read,
        cache_write,
        write_1h,
        reasoning,
        audio_in,
        audio_out,
        where,
        paths,
    )


_CHAT_PATHS: Final = (
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details.cached_tokens",
    "prompt_tokens_details.cache_write_tokens",
    "prompt_tokens_details.cache_creation_token_details.ephemeral_1h_input_tokens",
    "completion_tokens_details.reasoning_tokens",
    "prompt_tokens_details.audio_tokens",
    "completion_tokens_details.audio_tokens",
)


def _read_responses(get: Getter, where: str) -> Usage:
    """OpenAI Responses API: ``input_tokens`` include cached, ``output_tokens`` reasoning."""
    input_ = _required(get("input_tokens", _MISSING), where, "input_tokens")
    output = _required(get("output_tokens", _MISSING), where, "output_tokens")
    cache_read = cache_write = reasoning = 0
    details = get("input_tokens_details", None)
    if details is not None:
        detail = _getter(details)
        cache_read = _optional(detail("cached_tokens", None), where, _RESPONSES_PATHS[2])
        cache_write = _optional(detail("cache_write_tokens", None), where, _RESPONSES_PATHS[3])
    details = get("output_tokens_details", None)
    if details is not None:
        reasoning = _optional(
            _getter(details)("reasoning_tokens", None), where, _RESPONSES_PATHS[5]
        )
    return _build(
        input_, output, cache_read, cache_write, 0, reasoning, 0, 0, where, _RESPONSES_PATHS
    )


_RESPONSES_PATHS: Final = (
    "input_tokens",
    "output_tokens",
    "input_tokens_details.cached_tokens",
    "input_tokens_details.cache_write_tokens",
    "",
    "output_tokens_details.reasoning_tokens",
    "",
    "",
)


def _read_realtime(get: Getter, where: str) -> Usage:
    """OpenAI Realtime ``response.done`` usage (note: ``input_token_details``, singular)."""
    input_ = _required(get("input_tokens", _MISSING), where, "input_tokens")
    output = _required(get("output_tokens", _MISSING), where, "output_tokens")
    cache_read = audio_in = audio_out = 0
    details = get("input_token_details", None)
    if details is not None:
        detail = _getter(details)
        cache_read = _optional(detail("cached_tokens", None), where, _REALTIME_PATHS[2])
        audio_in = _optional(detail("audio_tokens", None), where, _REALTIME_PATHS[6])
    details = get("output_token_details", None)
    if details is not None:
        audio_out = _optional(_getter(details)("audio_tokens", None), where, _REALTIME_PATHS[7])
    return _build(input_, output, cache_read, 0, 0, 0, audio_in, audio_out, where, _REALTIME_PATHS)


_REALTIME_PATHS: Final = (
    "input_tokens",
    "output_tokens",
    "input_token_details.cached_tokens",
    "",
    "",
    "",
    "input_token_details.audio_tokens",
    "output_token_details.audio_tokens",
)


def _read_anthropic(get: Getter, where: str) -> Usage:
    """Anthropic Messages: ``input_tokens`` EXCLUDE cache reads and cache writes."""
    uncached = _required(get("input_tokens", _MISSING), where, "input_tokens")
    output = _required(get("output_tokens", _MISSING), where, "output_tokens")
    cache_read = _optional(get("cache_read_input_tokens", None), where, "cache_read_input_tokens")
    cache_write = _optional(
        get("cache_creation_input_tokens", None), where, "cache_creation_input_tokens"
    )
    write_1h = reasoning = 0
    ttl = get("cache_creation", None)
    if ttl is not None:
        split = _getter(ttl)
        write_5m = _optional(
            split("ephemeral_5m_input_tokens", None),
            where,
            "cache_creation.ephemeral_5m_input_tokens",
        )
        write_1h = _optional(split("ephemeral_1h_input_tokens", None), where, _ANTHROPIC_PATHS[4])
        if get("cache_creation_input_tokens", None) is None:
            cache_write = write_5m + write_1h
        else:
            _check_split(
                write_5m, write_1h, cache_write, where, "cache_creation", _ANTHROPIC_PATHS[3]
            )
    details = get("output_tokens_details", None)
    if details is not None:
        reasoning = _optional(_getter(details)("thinking_tokens", None), where, _ANTHROPIC_PATHS[5])
    return _build(
        uncached + cache_read + cache_write,
        output,
        cache_read,
        cache_write,
        write_1h,
        reasoning,
        0,
        0,
        where,
        _ANTHROPIC_PATHS,
    )


_ANTHROPIC_PATHS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens",
    "output_tokens_details.thinking_tokens",
    "",
    "",
)


def _read_gemini(node: Any, where: str) -> Usage:
    return _read_gemini_fields(_getter(node), where)


def _read_gemini_fields(get: Getter, where: str) -> Usage:
    """Gemini (AI Studio, Vertex AI; REST camelCase or google-genai snake_case).

    ``cachedContentTokenCount`` is inside ``promptTokenCount``; ``thoughtsTokenCount``
    and ``toolUsePromptTokenCount`` are billed on top of the candidates and the prompt.
    """
    names = _GEMINI_SNAKE if where.endswith("usage_metadata") else _GEMINI_CAMEL
    if get(names[0], _MISSING) is _MISSING:
        other = _GEMINI_CAMEL if names is _GEMINI_SNAKE else _GEMINI_SNAKE
        for key in other[:6]:
            if get(key, _MISSING) is not _MISSING:
                names = other
                break
    prompt = _required(get(names[0], _MISSING), where, names[0])
    output_key, output_details_key = names[1], names[9]
    candidates = get(output_key, None)
    if candidates is None and get(names[7], None) is not None:  # the Live API
        output_key, output_details_key = names[7], names[10]
        candidates = get(output_key, None)
    candidates = _optional(candidates, where, output_key)
    thoughts = _optional(get(names[2], None), where, names[2])
    cached = _optional(get(names[3], None), where, names[3])
    tool_use = _optional(get(names[4], None), where, names[4])
    output = candidates + thoughts
    if thoughts:
        total = get(names[5], None)
        # Some Vertex responses counted thoughts inside candidates; their total then
        # holds them once. An explicit, consistent total is the only sure sign.
        if type(total) is int and total == prompt + tool_use + candidates:
            output = candidates
    audio_in = _modality(get(names[6], None), where, names[6]) + _modality(
        get(names[8], None), where, names[8]
    )
    audio_out = _modality(get(output_details_key, None), where, output_details_key)
    return _build(
        prompt + tool_use,
        output,
        cached,
        0,
        0,
        thoughts,
        audio_in,
        audio_out,
        where,
        (names[0], output_key, names[3], "", "", names[2], names[6], output_details_key),
    )


_GEMINI_CAMEL: Final = (
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "totalTokenCount",
    "promptTokensDetails",
    "responseTokenCount",
    "toolUsePromptTokensDetails",
    "candidatesTokensDetails",
    "responseTokensDetails",
)
_GEMINI_SNAKE: Final = (
    "prompt_token_count",
    "candidates_token_count",
    "thoughts_token_count",
    "cached_content_token_count",
    "tool_use_prompt_token_count",
    "total_token_count",
    "prompt_tokens_details",
    "response_token_count",
    "tool_use_prompt_tokens_details",
    "candidates_tokens_details",
    "response_tokens_details",
)


def _modality(items: Any, where: str, key: str) -> int:
    """Sum the audio ``tokenCount`` of a Gemini ``*TokensDetails`` list."""
    if not items:
        return 0
    if not isinstance(items, (list, tuple)):
        raise UsageError(
            f"usage field {_join(where, key)!r} must be a list of modality counts, "
            f"got {short_repr(items)}",
            field=_join(where, key),
            value=items,
        )
    total = 0
    for i, item in enumerate(items):
        get = _getter(item)
        kind = get("modality", None)
        kind = getattr(kind, "value", kind)  # google-genai's MediaModality enum
        if kind == "AUDIO":
            name = "tokenCount"
            count = get(name, _MISSING)
            if count is _MISSING:
                name = "token_count"
                count = get(name, None)
            total += _optional(count, where, f"{key}[{i}].{name}")
    return total


def _read_bedrock(get: Getter, where: str) -> Usage:
    """AWS Bedrock Converse: ``inputTokens`` EXCLUDE cache reads and writes, as Anthropic's."""
    uncached = _required(get("inputTokens", _MISSING), where, "inputTokens")
    output = _required(get("outputTokens", _MISSING), where, "outputTokens")
    read_key, write_key = "cacheReadInputTokens", "cacheWriteInputTokens"
    cache_read = get(read_key, None)
    if cache_read is None:  # InvokeModel's spelling
        read_key = "cacheReadInputTokenCount"
        cache_read = get(read_key, None)
    cache_write = get(write_key, None)
    if cache_write is None:
        write_key = "cacheWriteInputTokenCount"
        cache_write = get(write_key, None)
    cache_read = _optional(cache_read, where, read_key)
    cache_write = _optional(cache_write, where, write_key)
    write_1h = 0
    details = get("cacheDetails", None)
    if details:
        if not isinstance(details, (list, tuple)):
            raise UsageError(
                f"usage field {_join(where, 'cacheDetails')!r} must be a list, "
                f"got {short_repr(details)}",
                field=_join(where, "cacheDetails"),
                value=details,
            )
        for i, item in enumerate(details):
            detail = _getter(item)
            if detail("ttl", None) == "1h":
                write_1h += _optional(
                    detail("inputTokens", None), where, f"cacheDetails[{i}].inputTokens"
                )
    return _build(
        uncached + cache_read + cache_write,
        output,
        cache_read,
        cache_write,
        write_1h,
        0,
        0,
        0,
        where,
        _BEDROCK_PATHS
        if read_key == _BEDROCK_PATHS[2] and write_key == _BEDROCK_PATHS[3]
        else (*_BEDROCK_PATHS[:2], read_key, write_key, *_BEDROCK_PATHS[4:]),
    )


_BEDROCK_PATHS: Final = (
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
    "cacheDetails[ttl=1h].inputTokens",
    "",
    "",
    "",
)


def _read_langchain(get: Getter, where: str) -> Usage:
    """LangChain ``UsageMetadata``: ``input_tokens`` include cache reads and writes.

    ``ephemeral_5m/1h_input_tokens`` split the cache writes (they are not more tokens; a
    ``cache_creation`` of 0 beside them, as langchain-anthropic now gives, does not cancel them);
    ``priority``/``flex`` keys count tokens served at that service tier, also not more
    tokens, and under such a tier langchain-openai renames ``cache_read`` and
    ``reasoning`` to ``priority_cache_read``, ``flex_reasoning``...
    """
    input_ = _required(get("input_tokens", _MISSING), where, "input_tokens")
    output = _required(get("output_tokens", _MISSING), where, "output_tokens")
    cache_read = cache_write = write_1h = reasoning = audio_in = audio_out = 0
    read_key, reasoning_key = "cache_read", "reasoning"
    details = get("input_token_details", None)
    if details is not None:
        detail = _getter(details)
        read_key, value = _tiered(details, detail, "cache_read")
        cache_read = _optional(value, where, f"input_token_details.{read_key}")
        write_5m = _optional(
            detail("ephemeral_5m_input_tokens", None),
            where,
            "input_token_details.ephemeral_5m_input_tokens",
        )
        write_1h = _optional(detail("ephemeral_1h_input_tokens", None), where, _LANGCHAIN_PATHS[4])
        # Recent langchain-anthropic (langchain PR #35845) sets ``cache_creation`` to 0 when
        # it gives the 5m/1h split, older versions give the total and the split: the writes
        # are the larger of the two (a split without its total is all of them), and
        # _build still refuses more cache reads and writes than input tokens.
        cache_write = max(
            _optional(detail("cache_creation", None), where, _LANGCHAIN_PATHS[3]),
            write_5m + write_1h,
        )
        audio_in = _optional(detail("audio", None), where, _LANGCHAIN_PATHS[6])
    details = get("output_token_details", None)
    if details is not None:
        detail = _getter(details)
        reasoning_key, value = _tiered(details, detail, "reasoning")
        reasoning = _optional(value, where, f"output_token_details.{reasoning_key}")
        audio_out = _optional(detail("audio", None), where, _LANGCHAIN_PATHS[7])
    paths = _LANGCHAIN_PATHS
    if read_key != "cache_read" or reasoning_key != "reasoning":
        paths = (
            *paths[:2],
            f"input_token_details.{read_key}",
            *paths[3:5],
            f"output_token_details.{reasoning_key}",
            *paths[6:],
        )
    return _build(
        input_,
        output,
        cache_read,
        cache_write,
        write_1h,
        reasoning,
        audio_in,
        audio_out,
        where,
        paths,
    )


_LANGCHAIN_PATHS: Final = (
    "input_tokens",
    "output_tokens",
    "input_token_details.cache_read",
    "input_token_details.cache_creation",
    "input_token_details.ephemeral_1h_input_tokens",
    "output_token_details.reasoning",
    "input_token_details.audio",
    "output_token_details.audio",
)


def _check_split(
    write_5m: int, write_1h: int, cache_write: int, where: str, split: str, total: str
) -> None:
    """The 5-minute and 1-hour parts split the cache writes; they are not more of them."""
    if write_5m + write_1h > cache_write:
        path = _join(where, split)
        raise UsageError(
            f"usage {path!r} splits {write_5m} (5m) + {write_1h} (1h) cache-write tokens, "
            f"more than {_join(where, total)!r} = {cache_write}",
            field=path,
            value=write_5m + write_1h,
        )


def _tiered(details: Any, detail: Getter, key: str) -> tuple[str, Any]:
    """``key``, or its service-tier variant (``priority_<key>``) when only that is there."""
    value = detail(key, _MISSING)
    if value is not _MISSING or not isinstance(details, Mapping):
        return key, None if value is _MISSING else value
    suffix = "_" + key
    for name, tiered in details.items():
        if isinstance(name, str) and name.endswith(suffix):
            return name, tiered
    return key, None


def _read_canonical(get: Getter, where: str) -> Usage:
    """costledger's own convention (``Usage.as_dict()``), e.g. read back from a log line."""
    names = _CANONICAL_FIELDS
    input_, output = (_required(get(name, _MISSING), where, name) for name in names[:2])
    cache_read, cache_write, write_1h, reasoning, audio_in, audio_out = (
        _optional(get(name, None), where, name) for name in names[2:]
    )
    return _build(
        input_,
        output,
        cache_read,
        cache_write,
        write_1h,
        reasoning,
        audio_in,
        audio_out,
        where,
        names,
    )


_CANONICAL_FIELDS: Final = TOKEN_FIELDS

_READERS: Final[Mapping[str, Callable[[Getter, str], Usage]]] = {
    "openai": partial(_read_chat, False),
    "litellm": partial(_read_chat, True),
    "openai_responses": _read_responses,
    "openai_realtime": _read_realtime,
    "anthropic": _read_anthropic,
    "gemini": _read_gemini_fields,
    "bedrock": _read_bedrock,
    "langchain": _read_langchain,
    "costledger": _read_canonical,
}


# --- counts, invariants, and errors that name the raw field --------------------------


def _build(
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    write_1h: int,
    reasoning: int,
    audio_in: int,
    audio_out: int,
    where: str,
    paths: tuple[str, ...],
) -> Usage:
    if (
        cache_read + cache_write > input_tokens
        or write_1h > cache_write
        or reasoning > output_tokens
        or audio_in > input_tokens
        or audio_out > output_tokens
        # MAX_TOKENS: every other count is a part of one of these two (checked above), so
        # they bound every count, and the sums (Anthropic's and Bedrock's input plus cache,
        # Gemini's candidates plus thoughts) too: two comparisons per read, not one per field.
        or input_tokens > _MAX
        or output_tokens > _MAX
    ):
        _raise_inconsistent(
            (
                input_tokens,
                output_tokens,
                cache_read,
                cache_write,
                write_1h,
                reasoning,
                audio_in,
                audio_out,
            ),
            where,
            paths,
        )
    # Every count is already checked (type, sign, MAX_TOKENS, parts within their whole):
    # skip Usage.__post_init__ checking them again, which would double the cost of a read.
    usage: Usage = _new_object(Usage)
    _set(usage, "input_tokens", input_tokens)
    _set(usage, "output_tokens", output_tokens)
    _set(usage, "cache_read_tokens", cache_read)
    _set(usage, "cache_write_tokens", cache_write)
    _set(usage, "cache_write_1h_tokens", write_1h)
    _set(usage, "reasoning_tokens", reasoning)
    _set(usage, "input_audio_tokens", audio_in)
    _set(usage, "output_audio_tokens", audio_out)
    return usage


_new_object = object.__new__
_set = object.__setattr__
_MAX: Final = MAX_TOKENS


def _raise_inconsistent(values: tuple[int, ...], where: str, paths: tuple[str, ...]) -> NoReturn:
    input_, cache_read, cache_write = values[0], values[2], values[3]
    shown = [short_repr(v) for v in values]  # a count past 4,300 digits has no str()

    def name(i: int) -> str:
        return repr(_join(where, paths[i])) if paths[i] else "(derived)"

    if cache_read + cache_write > input_:
        part = 2 if cache_read else 3
        parts = " + ".join(f"{name(i)} = {shown[i]}" for i in (2, 3) if values[i])
        raise UsageError(
            f"usage {parts} exceed the input they are part of: {name(0)} gives {shown[0]} "
            "input tokens in all",
            field=_join(where, paths[part]),
            value=values[part],
        )
    checks = (
        (4, 3, "cache writes"),
        (5, 1, "output"),
        (6, 0, "input"),
        (7, 1, "output"),
    )
    for part, whole, what in checks:
        if values[part] > values[whole]:
            raise UsageError(
                f"usage field {name(part)} = {shown[part]} exceeds the {what} it is part of: "
                f"{name(whole)} gives {shown[whole]}",
                field=_join(where, paths[part]),
                value=values[part],
            )
    # Past MAX_TOKENS: a part of the input or output first (a raw count, such as Anthropic's
    # cache_read_input_tokens), else the whole, which may be a sum of raw counts.
    for part in (2, 3, 6, 5, 7, 0, 1):
        if values[part] > _MAX and (paths[part] or part < 2):
            if part < 2:
                what = "input" if part == 0 else "output"
                raise UsageError(
                    f"usage field {name(part)} gives {shown[part]} {what} tokens in all, "
                    "more than the 10^16 one call may count",
                    field=_join(where, paths[part]),
                    value=values[part],
                )
            raise UsageError(
                f"usage field {name(part)} must be at most 10^16 tokens, got {shown[part]}",
                field=_join(where, paths[part]),
                value=values[part],
            )
    raise AssertionError("called with consistent counts")  # pragma: no cover


def _required(value: Any, where: str, key: str) -> int:
    if type(value) is int and value >= 0:
        return value
    if value is _MISSING or value is None:
        path = _join(where, key)
        state = "missing" if value is _MISSING else "None"
        raise UsageError(f"usage field {path!r} is required, got {state}", field=path, value=None)
    return _coerce(value, where, key)


def _optional(value: Any, where: str, key: str) -> int:
    if type(value) is int and value >= 0:
        return value
    if value is None or value is _MISSING:
        return 0
    return _coerce(value, where, key)


def _coerce(value: Any, where: str, key: str) -> int:
    """The slow path: ``check_count``'s rules (int subclasses and digit strings pass;
    bools, floats and counts past ``MAX_TOKENS`` never do)."""
    return check_count(_join(where, key), value)


def _no_usage(payload: Any, detail: str) -> UsageError:
    # Only the type and key names: a payload's values may hold prompts or keys.
    if isinstance(payload, Mapping):
        keys = sorted(str(k) for k in payload)[:12]
        seen = f"a mapping with keys {keys}"
    else:
        seen = f"a {type(payload).__module__}.{type(payload).__qualname__}"
    return UsageError(
        f"no token usage found ({detail}) in {seen}; expected an OpenAI, Anthropic, Gemini, "
        "Bedrock, LangChain or LiteLLM response or usage object",
        field=None,
        value=None,
    )


def _parse_json(payload: str | bytes | bytearray) -> Any:
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise UsageError(
            f"usage payload is text but not JSON ({exc})", field=None, value=None
        ) from None
    except RecursionError:  # json's decoder recurses once per level of nesting
        raise UsageError(
            "usage payload is text nested too deeply for Python's JSON parser to read "
            "(no response nests that deep)",
            field=None,
            value=None,
        ) from None


# --- duck-typed access ---------------------------------------------------------------


def _getter(node: Any) -> Getter:
    """A ``get(key, default)`` for a dict, a Mapping, a pydantic model or any object."""
    cls = type(node)
    if cls is dict:
        mapping: Mapping[str, Any] = node
        return mapping.get
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _kind_of(cls)
    if kind is _PYDANTIC:
        values: dict[str, Any] = node.__dict__
        extra = node.__pydantic_extra__
        return partial(_get_with_extra, values, extra) if extra else values.get
    if kind is _MAPPING:
        mapping = node
        return mapping.get
    return partial(getattr, node)


_MAPPING: Final = "mapping"
_PYDANTIC: Final = "pydantic"
_OBJECT: Final = "object"
# What kind of node each class is; an ABC isinstance check per node costs more than the
# read it guards. Bounded, in case classes are made on the fly.
_KINDS: Final[dict[type, str]] = {}


def _kind_of(cls: type) -> str:
    if issubclass(cls, Mapping):
        kind = _MAPPING
    elif getattr(cls, "__pydantic_fields__", None) is not None and (
        "__dict__" in dir(cls) and hasattr(cls, "__pydantic_extra__")
    ):
        # pydantic v2 keeps field values in __dict__ and extra fields in
        # __pydantic_extra__; getattr of an absent name raises in its __getattr__.
        kind = _PYDANTIC
    else:
        kind = _OBJECT
    if len(_KINDS) < 1024:
        _KINDS[cls] = kind
    return kind


def _get_with_extra(values: dict[str, Any], extra: dict[str, Any], key: str, default: Any) -> Any:
    value = values.get(key, _MISSING)
    return extra.get(key, default) if value is _MISSING else value


def _empty_get(key: str, default: Any) -> Any:
    return default


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
