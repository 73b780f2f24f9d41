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
from collections.abc import Mapping
from typing import Any

from .._errors import CostLedgerError

__all__ = [
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
    that looks like a key); ``error_type`` / ``error_code`` its machine-readable kind.
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
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.provider_message = provider_message
        self.error_type = error_type
        self.error_code = error_code
        self.request_id = request_id


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

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: the provider failed; retried, then raised."""


_BY_STATUS: Mapping[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitedByProvider,
}

# Key-looking tokens: "sk-...", "sk-ant-...", "key-...", and masked echoes like "sk-abc***xyz".
_KEYLIKE = re.compile(r"\b(?:sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_\-*.]{4,}", re.IGNORECASE)


def scrub(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` and without anything that looks like an API key."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
        except ValueError:
            pass
        else:
            if ms >= 0:
                return ms / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    return seconds if seconds >= 0 else None


def _provider_error(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from OpenAI's ``{"error": {...}}`` or Anthropic's
    ``{"type": "error", "error": {...}}`` error bodies."""
    try:
        obj = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:500] or None), None, None
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
        message = scrub(message, secret)
    request_id = headers.get("x-request-id") or headers.get("request-id")
    status = f"HTTP {status_code} {reason}".rstrip()
    said = f": {message}" if message else ""
    if status_code == 401:
        text = (
            f"{where} rejected the API key ({status}){said}. "
            "Check the api_key argument or the OPENAI_API_KEY environment variable."
        )
    elif status_code == 429:
        retry_after = parse_retry_after(headers)
        wait = f" (retry after {retry_after:g} s)" if retry_after is not None else ""
        text = f"{where} is rate limiting this key ({status}){wait}{said}"
    else:
        text = f"{where} answered {status}{said}"
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "provider_message": message,
        "error_type": etype,
        "error_code": code,
        "request_id": request_id,
    }
    if status_code == 429:
        return RateLimitedByProvider(text, retry_after=parse_retry_after(headers), **kwargs)
    cls = _BY_STATUS.get(status_code) or (ServerError if status_code >= 500 else APIStatusError)
    return cls(text, **kwargs)
