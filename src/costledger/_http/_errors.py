"""Errors of ``costledger.http.Client``: one class per thing the caller can act on.

No error ever carries the API key: messages are built from the status, the host
and the provider's own message with any key-looking string scrubbed out (some
providers echo part of a rejected key back), and no exception keeps the request
(whose headers hold the key).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, overload

from .._errors import CostLedgerError
from .._redact import _SHAPES, REDACTED, _replace_shape

__all__ = [
    "MIN_SECRET",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedByProvider",
    "ServerError",
    "error_for_status",
    "parse_retry_after",
    "scrub",
    "without_secret",
    "without_secrets",
]


class APIError(CostLedgerError):
    """A provider call made by ``costledger.http.Client`` failed."""


class APIConnectionError(APIError):
    """The provider could not be reached (connection refused, reset, DNS...)."""


class APITimeoutError(APIConnectionError):
    """The provider did not answer in time."""


class APIStatusError(APIError):
    """The provider answered with an error status.

    ``provider_message`` is the provider's own explanation (scrubbed of anything
    that looks like a key); ``error_type`` / ``error_code`` its machine-readable kind;
    ``retry_after`` how long the provider asked to wait, in seconds, if it said
    (``Retry-After`` / ``retry-after-ms``, on any status).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        provider_message: str | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.provider_message = provider_message
        self.error_type = error_type
        self.error_code = error_code
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the request was malformed; the message says what the provider objected to."""


class AuthenticationError(APIStatusError):
    """401: the API key was rejected (the key itself is never shown)."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but may not use this model or endpoint."""


class NotFoundError(APIStatusError):
    """404: unknown model or endpoint (check the model name and ``base_url``)."""


class RateLimitedByProvider(APIStatusError):
    """429 from the provider, still there after the retries.

    ``retry_after`` is how long the provider asked to wait, in seconds, if it said.
    Not to be confused with ``costledger.RateLimited``, raised by costledger's own guards.
    """


class ServerError(APIStatusError):
    """5xx: the provider failed; retried, then raised."""


_BY_STATUS: Mapping[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitedByProvider,
}

# Key-looking tokens: "sk-...", "key-...", "pk_live_...", and masked echoes like "sk-abc***xyz".
# A match is a key only when its tail looks like one (see _keylike): ordinary words such as
# "key-value", "key_name" or "pk_lookup_table" are kept, so a provider's message still names
# the field it objected to.
_KEYLIKE = re.compile(
    r"\b(?:sk|pk|rk|key|api[-_]?key)[-_](?P<tail>[A-Za-z0-9_\-*.]{4,})", re.IGNORECASE
)
_MARK = "[redacted]"
# A fragment of the secret this long at its start or end is redacted too (a provider that
# quotes a cut key, or a message cut short): long enough that no other text holds one by chance.
_FRAGMENT = 10


def _keylike(match: re.Match[str]) -> str:
    whole = match.group("tail")
    tail = whole.rstrip(".")  # a sentence's full stop is kept
    # A masked echo ("sk-abc***xyz", "sk-...xyz"), or a tail with a digit among 8 or more
    # characters, as random keys have; "key-value", "key_name", "pk_lookup_table" have none.
    if "*" in tail or "..." in tail or (len(tail) >= 8 and any(c.isdigit() for c in tail)):
        return _MARK + whole[len(tail) :]
    return match.group(0)


def _shape(match: re.Match[str]) -> str:
    return _replace_shape(match).replace(REDACTED, _MARK)


def _secret_forms(secret: str) -> list[str]:
    """The secret as it may appear in a message: as is, and escaped as ``repr`` shows it
    (an h11 "Illegal header value b'Bearer <key>\\n'" error quotes the header's bytes)."""
    forms = {
        secret,
        repr(secret)[1:-1],
        repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
        secret.strip(),
    }
    return sorted((f for f in forms if f), key=len, reverse=True)


def _scrub_fragments(text: str, secret: str) -> str:
    """Redact any run of ``_FRAGMENT`` or more characters of the secret's start or end."""
    if len(secret) < 2 * _FRAGMENT:
        return text
    for piece, at_start in ((secret[:_FRAGMENT], True), (secret[-_FRAGMENT:], False)):
        start = text.find(piece)
        while start >= 0:
            if at_start:
                end = start + _FRAGMENT
                while (
                    end < len(text)
                    and end - start < len(secret)
                    and (text[end] == secret[end - start])
                ):
                    end += 1
                text = text[:start] + _MARK + text[end:]
            else:
                begin = start
                tail_at = len(secret) - _FRAGMENT
                while begin > 0 and tail_at > 0 and text[begin - 1] == secret[tail_at - 1]:
                    begin -= 1
                    tail_at -= 1
                text = text[:begin] + _MARK + text[start + _FRAGMENT :]
                start = begin
            start = text.find(piece, start + len(_MARK))
    return text


def without_secret(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` (in full, escaped, or a long piece of its start or end)."""
    if secret:
        for form in _secret_forms(secret):
            text = text.replace(form, _MARK)
        text = _scrub_fragments(text, secret.strip())
    return text


MIN_SECRET = 8
"""The shortest credential worth looking for: a shorter one ("none", a placeholder) would
only blank out ordinary text."""


@overload
def without_secrets(text: str, secrets: Sequence[str]) -> str: ...
@overload
def without_secrets(text: str | None, secrets: Sequence[str]) -> str | None: ...
def without_secrets(text: str | None, secrets: Sequence[str]) -> str | None:
    """``text`` (from a response: a model, an error, an id) without any of ``secrets``, the
    call's own credentials: a server may echo the key it was sent (``without_secret``)."""
    if text is None:
        return None
    for secret in secrets:
        text = without_secret(text, secret)
    return text


def scrub(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` (in full, escaped, or a long piece of its start or end)
    and without anything that looks like an API key."""
    text = without_secret(text, secret)
    text = _SHAPES.sub(_shape, text)
    return _KEYLIKE.sub(_keylike, text)


_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
"""A delay as HTTP writes it: digits (RFC 9110 says whole seconds; a fraction is taken).
``float()`` alone would also take ``1_0``, ``inf``, ``nan`` and ``1e3``."""


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    value = headers.get("retry-after-ms")
    if value and _SECONDS.fullmatch(value.strip()):
        return float(value) / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    return seconds if seconds >= 0 else None


_MAX_MESSAGE = 500


def _provider_error(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from OpenAI's ``{"error": {...}}`` or Anthropic's
    ``{"type": "error", "error": {...}}`` error bodies."""
    try:
        obj = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return (text or None), None, None
    if not isinstance(obj, dict):
        return None, None, None
    error = obj.get("error", obj)
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return None, None, None
    message, etype, code = error.get("message"), error.get("type"), error.get("code")
    return (
        message if isinstance(message, str) else None,
        etype if isinstance(etype, str) else None,
        code if isinstance(code, str) else None,
    )


def error_for_status(
    status_code: int,
    reason: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    where: str,
    secret: str | None,
) -> APIStatusError:
    """The error to raise for an error response. Never includes ``secret``."""
    message, etype, code = _provider_error(body)
    if message is not None:
        # Scrubbed whole, then cut: cutting first could leave half a key that no rule knows.
        message = scrub(message, secret)[:_MAX_MESSAGE] or None
    request_id = headers.get("x-request-id") or headers.get("request-id")
    status = f"HTTP {status_code} {reason}".rstrip()
    retry_after = parse_retry_after(headers)
    wait = f" (retry after {retry_after:g} s)" if retry_after is not None else ""
    said = f": {message}" if message else ""
    if status_code == 401:
        text = (
            f"{where} rejected the API key ({status}){said}. "
            "Check the api_key argument or the OPENAI_API_KEY environment variable."
        )
    elif status_code == 429:
        text = f"{where} is rate limiting this key ({status}){wait}{said}"
    else:
        text = f"{where} answered {status}{wait}{said}"
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "provider_message": message,
        "error_type": etype,
        "error_code": code,
        "request_id": request_id,
        "retry_after": retry_after,
    }
    cls = _BY_STATUS.get(status_code) or (ServerError if status_code >= 500 else APIStatusError)
    return cls(text, **kwargs)
