"""LiteLLM's ``StandardLoggingPayload`` (``kwargs["standard_logging_object"]``) -> a call's fields.

One reader for both places that see these payloads: the live ``CostLedgerLogger`` (it
has the payload in memory) and ``costledger ingest`` (one payload per JSON line, as
LiteLLM's loggers and proxies write them). No ``litellm`` import: the payload is a
plain mapping (LiteLLM declares it as a ``TypedDict``).

What is read, and from where (LiteLLM 1.x field names):

===================  ==========================================================
call id              ``litellm_call_id``, else ``id``; a failed attempt's is
                     derived from it and the attempt's ``startTime`` (see
                     ``failed_attempt_id``), the call id kept in metadata
model / provider     ``model`` (less a leading ``<provider>/``, see
                     ``bare_model``) / ``custom_llm_provider``
response model, id   ``response.model`` / ``response.id``
usage                ``metadata.usage_object``, else ``response.usage``, else
                     ``hidden_params.usage_object``, else ``prompt_tokens`` +
                     ``completion_tokens`` (LiteLLM's usage follows OpenAI's
                     convention for every provider: cache reads inside
                     ``prompt_tokens``)
status, error        ``status`` (``success`` / ``failure``),
                     ``error_information.error_class``, ``error_str``
time, latency        ``startTime`` / ``endTime`` (epoch seconds)
cache hit, stream    ``cache_hit``, ``stream``
reported cost        ``response_cost`` (LiteLLM's own price, kept for comparison),
                     none when ``response_cost_failure_debug_info`` is set
                     (LiteLLM could not price the model: its ``0.0`` is a
                     placeholder)
attribution          ``metadata.requester_metadata`` (the proxy caller's own
                     metadata), ``metadata.spend_logs_metadata``, the proxy key's
                     ``user_api_key_end_user_id`` / ``_user_id`` / ``_team_id``,
                     ``end_user`` or ``model_parameters.user``, ``request_tags``
===================  ==========================================================

Prompts and responses in the payload (``messages``, ``response`` content) are never
read beyond the response's ``model``, ``id`` and ``usage``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final, TypeGuard

from .._errors import UsageError, short_repr
from .._events import CallStatus
from .._extract import price_context_of
from .._http._errors import MIN_SECRET, without_secrets
from .._redact import redact_text

__all__ = [
    "BEDROCK_ROUTES",
    "INTERNAL_METADATA_KEYS",
    "LiteLLMCall",
    "attribution_values",
    "bare_model",
    "call_secrets",
    "error_message",
    "failed_attempt_id",
    "is_standard_logging_payload",
    "litellm_cost_failed",
    "proxy_request_metadata",
    "read_standard_logging_payload",
    "reported_cost",
    "without_route",
]

# Keys of LiteLLM's request metadata that are LiteLLM's own bookkeeping (router, proxy auth,
# logging), not attribution the caller gave. The proxy's caller metadata is in
# ``requester_metadata`` instead.
INTERNAL_METADATA_KEYS: Final = frozenset(
    {
        "hidden_params",
        # the Router's: the deployment it chose, its retries and fallbacks
        "model_group",
        "model_group_size",
        "model_group_alias",
        "model_info",
        "deployment",
        "deployment_model_name",
        "api_base",
        "caching_groups",
        "previous_models",
        "original_model_group",
        "attempted_fallbacks",
        "attempted_retries",
        "max_retries",
        "request_retry_count",
        "routing_plugin_signals",
        # LiteLLM's marks on its own sub-calls, proxy retries and batches, Responses websockets
        "internal_call_origin",
        "billed_retry_attempt",
        "batch_enqueued_token_limit",
        "responses_websocket_call_id",
        # the raw request as a curl command, prompt and all (litellm.log_raw_request_response)
        "raw_request",
        "endpoint",
        "headers",
        "requester_metadata",
        "requester_ip_address",
        "requester_custom_headers",
        "user_agent",
        "spend_logs_metadata",
        "global_max_parallel_requests",
        "applied_guardrails",
        "guardrails",
        "prompt_id",
        "prompt_variables",
        "team_alias",
        "team_id",
        "costledger",
        "usage_object",
        "prompt_management_metadata",
        "mcp_tool_call_metadata",
        "vector_store_request_metadata",
        "routing_decision",
        "cold_storage_object_key",
        "kubernetes_pod_routing",
        "used_client_oauth_token",
        "is_silent_experiment",
    }
)
_INTERNAL_PREFIXES: Final = ("user_api_key", "litellm_", "x-", "_")
_ATTRIBUTION_KEYS: Final = ("user", "team", "project", "feature")
_SCALARS: Final = (str, int, float, bool)
_PLAIN_CALL_TYPES: Final = frozenset({"completion", "acompletion"})
_CANCELLED_CLASSES: Final = frozenset({"CancelledError", "GeneratorExit", "KeyboardInterrupt"})
_MAX_ERROR_TEXT: Final = 500
_PROXY_KEY_FIELDS: Final = (
    "user_api_key_user_id",
    "user_api_key_team_id",
    "user_api_key_end_user_id",
)
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_UTC: Final = timezone.utc


# Not frozen: one is built for every ingested LiteLLM line, and a frozen dataclass's
# __init__ (object.__setattr__ per field) costs three times as much. Treat it as read-only.
@dataclass(slots=True)
class LiteLLMCall:
    """What a ``StandardLoggingPayload`` says about one call, ready for ``Tracker.record``.

    ``usage`` is the usage part to read with ``read_response`` (LiteLLM's
    OpenAI-convention dict), ``None`` when the payload reports none (a failed call).
    ``attribution`` holds loose values for ``Attribution.from_mapping``; ``metadata``
    the call's own extra fields (``litellm_call_type``, ``litellm_model_group``,
    ``error_message``).
    """

    call_id: str
    model: str | None
    provider: str | None
    response_model: str | None
    request_id: str | None
    usage: Mapping[str, Any] | None
    status: CallStatus
    error_type: str | None
    started_at: datetime | None
    latency_ms: float | None
    cache_hit: bool
    streamed: bool
    reported_cost: Decimal | None
    attribution: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    price_context: Mapping[str, str] | None = None


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # LiteLLM's records are plain dicts; the ABC check costs a microsecond, so try dict first.
    return type(value) is dict or isinstance(value, Mapping)


def _is_list(value: Any) -> TypeGuard[Sequence[Any]]:
    return type(value) in (list, tuple) or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    )


def call_secrets(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys a LiteLLM call was sent with (the ``kwargs`` LiteLLM hands a callback:
    ``api_key``, resolved from the environment when the caller gave none, and the
    ``api_key`` of ``litellm_params``, a Router deployment's): a server may echo the key
    it was sent, in its error or its answer, whatever the key's shape."""
    found: list[str] = []
    params = kwargs.get("litellm_params")
    for key in (kwargs.get("api_key"), params.get("api_key") if _is_map(params) else None):
        if isinstance(key, str) and len(key.strip()) >= MIN_SECRET and key not in found:
            found.append(key)
    return tuple(found)


def error_message(text: str, secrets: Sequence[str] = ()) -> str:
    """LiteLLM's ``error_str`` as a call's metadata keeps it: without the call's own keys
    (``secrets``) and anything of a key's shape, then cut to 500 characters. Scrubbed
    first: a key cut in half would match no rule, and its first half would be kept."""
    return redact_text(without_secrets(text, secrets))[:_MAX_ERROR_TEXT]


def _fail(key: str, value: Any, expected: str) -> UsageError:
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:120] + "..."
    return UsageError(
        f"LiteLLM payload field {key!r} must be {expected}, got {shown}", field=key, value=value
    )


def _opt_text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise _fail(key, value, "a string or null")
    return value


def _flag(payload: Mapping[str, Any], key: str) -> bool:
    value = payload.get(key)
    if value is None:
        return False
    if type(value) is not bool:
        raise _fail(key, value, "true, false or null")
    return value


def _epoch(payload: Mapping[str, Any], key: str, *, required: bool) -> float | None:
    value = payload.get(key)
    if value is None and not required:
        return None
    if type(value) is not float and type(value) is not int:
        raise _fail(key, value, "epoch seconds (a number)")
    assert isinstance(value, (int, float))
    if not math.isfinite(value) or value <= 0:
        raise _fail(key, value, "epoch seconds (a positive finite number)")
    if value >= _YEAR_10000:
        raise _fail(key, value, "epoch seconds, not milliseconds (a time before the year 10000)")
    return float(value)


_YEAR_10000 = 253_402_300_800  # 10000-01-01T00:00:00Z in epoch seconds


def is_standard_logging_payload(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` looks like a ``StandardLoggingPayload`` (cheap key test)."""
    return "litellm_call_id" in record or (
        "custom_llm_provider" in record and "startTime" in record
    )


def bare_model(model: str | None, provider: str | None) -> str | None:
    """``model`` without a leading ``<provider>/``: ``"openai/gpt-4o-mini"`` with provider
    ``"openai"`` is ``"gpt-4o-mini"``, ``"bedrock/anthropic.claude-..."`` is
    ``"anthropic.claude-..."``.

    LiteLLM's payload names the model as the caller or the Router deployment wrote it: a
    plain call logs ``gpt-4o-mini``, a cache hit of the same call or a Router deployment
    ``openai/gpt-4o-mini``. Routing strips that prefix (``litellm.get_llm_provider``), and
    so does costledger, so one model is recorded under one name.

    A Bedrock model may name the API LiteLLM calls it through ahead of its id
    (``bedrock/converse/anthropic.claude-...``, ``invoke/``, ``chat_completions/``...,
    ``BEDROCK_ROUTES``): that segment is dropped too, as LiteLLM drops it to look the
    model up, so the call is recorded (and priced) under the id whatever the route.
    """
    if model and provider and len(model) > len(provider) + 1 and model.startswith(provider + "/"):
        model = model[len(provider) + 1 :]
    return without_route(model, provider) if model else model


def without_route(model: str, provider: str | None) -> str:
    """A Bedrock ``model`` (as LiteLLM routes it, its provider prefix gone) without a
    leading API route segment (``converse/anthropic.claude-...`` is
    ``anthropic.claude-...``); any other model as it is."""
    if provider and provider.lower() == "bedrock":
        route, slash, rest = model.partition("/")
        if slash and rest and route.lower() in BEDROCK_ROUTES:
            return rest
    return model


BEDROCK_ROUTES: Final = frozenset(
    {
        "converse",
        "converse_like",
        "invoke",
        "async_invoke",
        "chat_completions",
        "openai",
        "mantle",
        "claude_platform",
    }
)
"""LiteLLM's Bedrock API routes, written as a leading segment of the model
(``bedrock/<route>/<model id>``); its ``agent/`` and ``agentcore/`` routes name an agent,
not a model, and are kept."""


def failed_attempt_id(call_id: str, started: float | None) -> str:
    """The event id of one failed attempt of LiteLLM call ``call_id``.

    LiteLLM's retries and fallbacks (the Router's, ``completion(fallbacks=...)``, every
    LiteLLM Proxy request) run under one ``litellm_call_id``: each failed attempt is
    logged as a failure, the attempt that answered as the success. The call id is kept
    for the success; a failed attempt gets ``<call id>:failed:<its start, epoch
    microseconds>``, the same for LiteLLM's duplicate reports of that attempt, in the
    live logger and in ``costledger ingest``, so recording it twice adds nothing.
    """
    if started is None:
        return f"{call_id}:failed"
    return f"{call_id}:failed:{round(started * 1_000_000)}"


def reported_cost(
    value: Any, *, failed: bool, has_usage: bool, unpriced: bool = False
) -> Decimal | None:
    """LiteLLM's ``response_cost`` as exact money, or ``None`` when it says nothing.

    A float goes through its shortest ``repr`` (``1.35e-05`` -> ``Decimal("0.0000135")``),
    never through its binary expansion. A failed call's ``0.0`` with no usage is LiteLLM's
    placeholder, not a price. ``unpriced``: LiteLLM could not price the call's model (see
    ``litellm_cost_failed``), so its figure (``0.0``, or only a guardrail's cost) is no
    price of the call either. ``UsageError`` for a value that is not a number.
    """
    if value is None or unpriced:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise _fail("response_cost", value, "a number or null")
    if failed and not has_usage and not value:
        return None
    try:
        amount = Decimal(value) if isinstance(value, (str, Decimal, int)) else Decimal(repr(value))
    except (InvalidOperation, ValueError):
        raise _fail("response_cost", value, "a number or null") from None
    if not amount.is_finite():
        raise _fail("response_cost", value, "a finite number")
    return amount


def litellm_cost_failed(payload: Mapping[str, Any]) -> bool:
    """Whether LiteLLM failed to price the call the payload logs (a model it has no price
    for): it then sets ``response_cost_failure_debug_info`` and leaves ``response_cost``
    at its ``0.0`` placeholder (plus any guardrail's cost), which is no price of the call."""
    info = payload.get("response_cost_failure_debug_info")
    return info is not None and info != {}


def proxy_request_metadata(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """The caller's own metadata out of LiteLLM's (proxy or payload) request metadata.

    On a LiteLLM Proxy, and in every ``StandardLoggingPayload``, the caller's metadata
    is ``requester_metadata``; the rest is LiteLLM's (key hashes, headers, spend) and
    must not become attribution. The proxy key's owner and team are passed on under
    ``_user_api_key_*`` names for ``attribution_values``. Plain SDK metadata (no
    proxy fields) is returned as it is.
    """
    requester = metadata.get("requester_metadata")
    spend = metadata.get("spend_logs_metadata")
    if not (_is_map(requester) or "user_api_key_hash" in metadata):
        if not _is_map(spend):
            return metadata
        # an SDK call's metadata: its spend_logs_metadata counts as the logged payload's
        # does (ingest reads that), the call's own keys over it
        sdk: dict[str, Any] = {k: v for k, v in spend.items() if isinstance(k, str)}
        sdk.update(metadata)
        return sdk
    merged: dict[str, Any] = {}
    if _is_map(spend):  # LiteLLM's documented channel for custom keys on a logged call
        merged.update((k, v) for k, v in spend.items() if isinstance(k, str))
    if _is_map(requester):
        merged.update(requester)
    for key in _PROXY_KEY_FIELDS:
        if metadata.get(key) is not None:
            merged.setdefault(f"_{key}", metadata[key])
    return merged


def attribution_values(
    metadata: Any, user: Any = None, payload: Mapping[str, Any] = _EMPTY
) -> dict[str, Any]:
    """Attribution from a LiteLLM request: its ``metadata`` (see ``proxy_request_metadata``),
    the OpenAI ``user`` (the end user), and the payload's ``end_user`` and ``request_tags``.

    ``user``, ``team``, ``project``, ``feature`` and ``tags`` keys are taken as such, any
    other plain value as metadata (LiteLLM's own keys are skipped), and a ``costledger``
    mapping as extra metadata. The proxy key's end user, then owner, is the user and its
    team the team, where the request named none.
    """
    values: dict[str, Any] = {}
    if _is_map(metadata):
        for key, value in metadata.items():
            if not isinstance(key, str):
                continue
            if key in _ATTRIBUTION_KEYS:
                if value is not None:
                    values[key] = value
            elif key == "tags":
                if value is not None:
                    values["tags"] = value
            elif key in INTERNAL_METADATA_KEYS or key.startswith(_INTERNAL_PREFIXES):
                continue
            elif value is None or isinstance(value, _SCALARS):
                values[key] = value
        extra = metadata.get("costledger")
        if _is_map(extra):
            values.update({str(k): v for k, v in extra.items()})
        if "user" not in values and metadata.get("_user_api_key_end_user_id") is not None:
            values["user"] = metadata["_user_api_key_end_user_id"]
        if "team" not in values and metadata.get("_user_api_key_team_id") is not None:
            values["team"] = metadata["_user_api_key_team_id"]
        if "user" not in values and metadata.get("_user_api_key_user_id") is not None:
            values["user"] = metadata["_user_api_key_user_id"]
    if "user" not in values:
        end_user = payload.get("end_user") or user
        if end_user:
            values["user"] = end_user
    if "tags" in values:
        tags = _tags(values["tags"])
        if tags is None:
            del values["tags"]
        else:
            values["tags"] = tags
    if "tags" not in values:
        request_tags = payload.get("request_tags")
        if request_tags is not None and request_tags != "":
            tags = _tags(request_tags, "payload 'request_tags'")
            if tags is not None:
                values["tags"] = tags
    return values


def _tag_text(item: Any) -> str | None:
    """A tag list's item as text: a string, or a finite number written as text. ``True`` /
    ``False`` (a ``bool`` is an ``int``) and NaN or infinities are not tags."""
    if isinstance(item, str):
        return item
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float) and math.isfinite(item):
        return str(item)
    if isinstance(item, Decimal) and item.is_finite():
        return str(item)
    return None


def _tags(value: Any, field: str = "request metadata 'tags'") -> list[str] | None:
    """Tags as a list of strings: a string is one tag, a list (tuple, set) its strings and
    finite numbers as text. Anything else (a number, ``True``, a mapping, such an item of
    the list, NaN) is left out, and reported once (naming ``field``), rather than failing
    the call's record."""
    if isinstance(value, str):
        return [value]
    if _is_list(value) or isinstance(value, (set, frozenset)):
        kept = [text for text in map(_tag_text, value) if text is not None]
        if len(kept) != len(value):
            _report_tags(value, field)
        return kept
    if value is not None:
        _report_tags(value, field)
    return None


def _report_tags(value: Any, field: str) -> None:
    try:
        from .._logging import warn_once

        warn_once(
            f"litellm.tags:{field}:{type(value).__name__}",
            f"LiteLLM {field} must be a string or a list of strings; "
            "what is not was left out of the call's tags",
            value=short_repr(value, 120),
        )
    except Exception:  # a warning must never cost the call its record
        pass


def _usage_part(payload: Mapping[str, Any], response: Any, failed: bool) -> Any:
    meta = payload.get("metadata")
    usage = meta.get("usage_object") if _is_map(meta) else None
    if not usage and _is_map(response):
        usage = response.get("usage")
    if not usage:
        hidden = payload.get("hidden_params")
        usage = hidden.get("usage_object") if _is_map(hidden) else None
    if usage:
        if not _is_map(usage):
            raise _fail("metadata.usage_object", usage, "an object of token counts")
        return usage
    if failed:
        return None  # a failed call with no usage cost nothing we know of
    prompt, completion = payload.get("prompt_tokens"), payload.get("completion_tokens")
    if prompt is None and completion is None:
        return None
    return {"prompt_tokens": prompt or 0, "completion_tokens": completion or 0}


def _error(payload: Mapping[str, Any]) -> tuple[str, CallStatus]:
    info = payload.get("error_information")
    if _is_map(info):
        error_class = info.get("error_class")
        if isinstance(error_class, str) and error_class:
            return error_class, "cancelled" if error_class in _CANCELLED_CLASSES else "error"
    return "Exception", "error"


def read_standard_logging_payload(payload: Mapping[str, Any]) -> LiteLLMCall:
    """Read one ``StandardLoggingPayload`` into a ``LiteLLMCall``.

    Strict about what it uses: a field of the wrong type raises ``UsageError`` naming
    the field and the value (fields it does not use are not looked at).
    """
    if not _is_map(payload):
        raise UsageError(
            f"a LiteLLM payload must be an object, got {type(payload).__name__}",
            field=None,
            value=payload,
        )
    call_id = _opt_text(payload, "litellm_call_id") or _opt_text(payload, "id")
    if call_id is None:
        raise _fail("litellm_call_id", payload.get("litellm_call_id"), "a non-empty string")
    status_text = payload.get("status", "success")
    if status_text not in ("success", "failure"):
        raise _fail("status", status_text, "'success' or 'failure'")
    failed = status_text == "failure"
    start = _epoch(payload, "startTime", required=True)
    end = _epoch(payload, "endTime", required=False)
    response = payload.get("response")
    if not _is_map(response):
        response = _EMPTY  # redacted ("redacted-by-litellm"), a text completion, or absent

    status: CallStatus = "ok"
    error_type: str | None = None
    metadata: dict[str, Any] = {}
    call_type = _opt_text(payload, "call_type")
    if call_type is not None and call_type not in _PLAIN_CALL_TYPES:
        metadata["litellm_call_type"] = call_type
    model_group = _opt_text(payload, "model_group")
    if model_group:
        metadata["litellm_model_group"] = model_group
    if failed:
        error_type, status = _error(payload)
        message = _opt_text(payload, "error_str")
        if message:
            metadata["error_message"] = error_message(message)
        metadata["litellm_call_id"] = call_id
        call_id = failed_attempt_id(call_id, start)

    usage = _usage_part(payload, response, failed)
    response_model = request_id = None
    if not failed:
        response_model = _opt_text(response, "model")
        request_id = _opt_text(response, "id")
        if request_id is None:
            # the payload's ``id`` is the response's id when there was one, else the call id
            logged = _opt_text(payload, "id")
            if logged is not None and logged != call_id and "_cache_hit" not in logged:
                request_id = logged
    raw_meta = payload.get("metadata")
    if raw_meta is not None and not _is_map(raw_meta):
        raise _fail("metadata", raw_meta, "an object or null")
    params = payload.get("model_parameters")
    end_user = params.get("user") if _is_map(params) else None
    values = attribution_values(
        proxy_request_metadata(raw_meta) if raw_meta else None, end_user, payload
    )
    latency = None if end is None or start is None else max((end - start) * 1000.0, 0.0)
    provider = _opt_text(payload, "custom_llm_provider")
    return LiteLLMCall(
        call_id=call_id,
        model=bare_model(_opt_text(payload, "model"), provider),
        provider=provider,
        response_model=response_model,
        request_id=request_id,
        usage=usage,
        status=status,
        error_type=error_type,
        started_at=None if start is None else datetime.fromtimestamp(start, _UTC),
        latency_ms=latency,
        cache_hit=_flag(payload, "cache_hit"),
        streamed=_flag(payload, "stream"),
        reported_cost=reported_cost(
            payload.get("response_cost"),
            failed=failed,
            has_usage=usage is not None,
            unpriced=litellm_cost_failed(payload),
        ),
        attribution=values,
        metadata=metadata,
        price_context=None if failed or not response else price_context_of(response),
    )
