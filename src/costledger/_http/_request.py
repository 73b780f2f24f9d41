"""What the transport reads from a request: which endpoint, which provider, which model.

Only POSTs to the model endpoints are tracked; the check is a few string
comparisons so every other request passes through at next to no cost.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._redact import SECRET_QUERY_KEYS
from ._errors import MIN_SECRET

__all__ = [
    "Kind",
    "TrackedRequest",
    "endpoint_kind",
    "provider_for",
    "read_request",
    "request_secrets",
    "with_stream_usage",
]

Kind = Literal["chat", "completions", "responses", "embeddings", "messages"]

# Path suffix -> endpoint kind. Order matters: "/chat/completions" before "/completions".
_SUFFIXES: tuple[tuple[str, Kind], ...] = (
    ("/chat/completions", "chat"),
    ("/responses", "responses"),
    ("/embeddings", "embeddings"),
    ("/v1/messages", "messages"),
    ("/completions", "completions"),
)

_FAST_HOSTS: Mapping[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
}


_ANY_SUFFIX = tuple(suffix for suffix, _ in _SUFFIXES)


def endpoint_kind(method: str, path: str) -> Kind | None:
    """The model endpoint a request targets, or ``None`` to pass it through untracked."""
    if method != "POST":
        return None
    if not path.endswith(_ANY_SUFFIX):  # one C-level test for the common miss
        if not path.endswith("/"):
            return None
        path = path.rstrip("/")
    for suffix, kind in _SUFFIXES:
        if path.endswith(suffix):
            return kind
    return None


# Base URL -> provider id, from genai-prices' own URL patterns (the ids the Pricer knows).
_provider_cache: dict[str, str | None] = {}
_provider_lock = threading.Lock()
_patterns: list[tuple[re.Pattern[str], str]] | None = None


def _provider_patterns() -> list[tuple[re.Pattern[str], str]]:
    global _patterns
    if _patterns is None:
        found: list[tuple[re.Pattern[str], str]] = []
        try:
            from genai_prices import data

            for p in data.providers:
                try:
                    found.append((re.compile(p.api_pattern), p.id))
                except (re.error, TypeError):
                    continue
        except Exception:  # no genai-prices data: fall back to the defaults
            found = []
        _patterns = found
    return _patterns


def provider_for(scheme: str, host: str, path: str, kind: Kind, default: str | None) -> str:
    """The provider id of a request: ``default`` if set, else from the host, else by endpoint.

    ``api.openai.com`` is ``openai``; ``api.anthropic.com`` and any ``/v1/messages`` are
    ``anthropic``; other hosts are looked up in genai-prices' provider URL patterns
    (``api.groq.com`` is ``groq``); anything else is taken as OpenAI-compatible.
    """
    if default:
        return default
    if kind == "messages":
        return "anthropic"
    fast = _FAST_HOSTS.get(host)
    if fast is not None:
        return fast
    if scheme == "https":
        base = f"https://{host}{path}"
        try:
            found = _provider_cache[base]
        except KeyError:
            found = None
            for pattern, provider in _provider_patterns():
                if pattern.match(base):
                    found = provider
                    break
            with _provider_lock:
                if len(_provider_cache) > 512:  # bounded: base URLs are few in practice
                    _provider_cache.clear()
                _provider_cache[base] = found
        if found is not None:
            return found
    return "openai"


@dataclass(frozen=True, slots=True)
class TrackedRequest:
    """A tracked request as the transport understood it."""

    kind: Kind
    provider: str
    model: str | None
    stream: bool
    max_output_tokens: int | None
    body: Mapping[str, Any] | None
    # The request's own credentials, to scrub from anything stored about its response.
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def choices(self) -> int:
        """The answers it generates, each up to ``max_output_tokens`` (``n``, or
        ``best_of`` where larger), for the guards' worst case (read only when there are
        guards: their module is loaded then)."""
        if self.body is None:
            return 1
        from .._guards._estimate import requested_choices

        return requested_choices(self.body, ("n", "best_of"))

    def prompt_text(self) -> str | None:
        """The text of the prompt, for the guards' worst-case estimate (never stored)."""
        if self.body is None:
            return None
        parts: list[str] = []
        body = self.body
        if self.kind == "chat":
            _messages_text(body.get("messages"), parts)
        elif self.kind == "messages":
            _content_text(body.get("system"), parts)
            _messages_text(body.get("messages"), parts)
        elif self.kind == "responses":
            _content_text(body.get("instructions"), parts)
            inp = body.get("input")
            if isinstance(inp, list):
                _messages_text(inp, parts)
            else:
                _content_text(inp, parts)
        else:  # embeddings, completions: a string or a list of strings
            _content_text(body.get("input" if self.kind == "embeddings" else "prompt"), parts)
        return "\n".join(parts) if parts else None


def _messages_text(messages: Any, out: list[str]) -> None:
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                _content_text(message.get("content"), out)
                if message.get("type") == "input_text":  # a bare Responses API part
                    _content_text(message.get("text"), out)
            else:
                _content_text(message, out)


def _content_text(content: Any, out: list[str]) -> None:
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)


def _first_int(body: Mapping[str, Any], keys: Iterable[str]) -> int | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


_MAX_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def read_request(
    kind: Kind, content: bytes | None, *, provider: str, secrets: tuple[str, ...] = ()
) -> TrackedRequest:
    """Read model, stream flag and output cap from a JSON request body (if it is one)."""
    body: Mapping[str, Any] | None = None
    if content:
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            body = parsed
    if body is None:
        return TrackedRequest(kind, provider, None, False, None, None, secrets)
    model = body.get("model")
    return TrackedRequest(
        kind=kind,
        provider=provider,
        model=model if isinstance(model, str) else None,
        stream=body.get("stream") is True,
        max_output_tokens=_first_int(body, _MAX_KEYS),
        body=body,
        secrets=secrets,
    )


# The headers that carry a provider key: OpenAI-style bearer, Azure, Anthropic, Gemini.
_KEY_HEADERS = ("api-key", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key")


def request_secrets(
    headers: Mapping[str, str], params: Iterable[tuple[str, str]] = ()
) -> tuple[str, ...]:
    """The credential values a request sends (in its headers, and in its URL's query
    ``params``: Gemini's ``?key=``), to keep out of what is stored about it."""
    found: list[str] = []
    for name, value in params:
        if name.lower() in SECRET_QUERY_KEYS and len(value.strip()) >= MIN_SECRET:
            found.append(value.strip())
    auth = headers.get("authorization")
    if auth:
        _scheme, _, token = auth.strip().partition(" ")  # "Bearer <key>", "Basic <...>"
        value = token.strip() or auth.strip()
        if len(value) >= MIN_SECRET:
            found.append(value)
    for name in _KEY_HEADERS:
        key = (headers.get(name) or "").strip()
        if len(key) >= MIN_SECRET:
            found.append(key)
    return tuple(found)


def with_stream_usage(request: TrackedRequest) -> bytes | None:
    """The body with ``stream_options.include_usage`` set, or ``None`` if nothing to change.

    Only OpenAI-style chat/completions streams need it: without it they carry no usage.
    An explicit ``include_usage: false`` is respected.
    """
    body = request.body
    if body is None or not request.stream or request.kind not in ("chat", "completions"):
        return None
    options = body.get("stream_options")
    if isinstance(options, Mapping):
        if "include_usage" in options:
            return None
        new_options = {**options, "include_usage": True}
    elif options is None:
        new_options = {"include_usage": True}
    else:
        return None
    new_body = {**body, "stream_options": new_options}
    text = json.dumps(new_body, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (a "\ud83d" escape: half an emoji cut by a JS client) is
        # valid JSON but not UTF-8: keep it escaped, as it came.
        return json.dumps(new_body, separators=(",", ":")).encode()
