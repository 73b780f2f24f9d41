"""Track the cost of model calls at the HTTP layer, whatever client makes them.

Transports, to put under any httpx or httpx2 client (the OpenAI and Anthropic SDKs
take one as ``http_client=``)::

    import httpx2, anthropic, openai
    from costledger.http import Httpx2TrackingTransport, TrackingTransport

    openai.OpenAI(http_client=httpx.Client(transport=TrackingTransport()))
    anthropic.Anthropic(http_client=httpx2.Client(transport=Httpx2TrackingTransport()))

and a small OpenAI-compatible ``Client`` / ``AsyncClient`` on httpx with retries,
for code without an SDK.

``TrackingTransport`` / ``AsyncTrackingTransport`` are for ``httpx``;
``Httpx2TrackingTransport`` / ``AsyncHttpx2TrackingTransport`` for ``httpx2`` (loaded on
first use; ``pip install httpx2`` if it is missing). The client and its tenacity
retry strategies are loaded on first use too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._http._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedByProvider,
    ServerError,
)
from ._http._httpx import AsyncTrackingTransport, TrackingTransport
from ._http._sdk import araise_guard_refusals, raise_guard_refusals

if TYPE_CHECKING:
    from ._http._client import AsyncChatStream, AsyncClient, ChatStream, Client
    from ._http._httpx2 import AsyncHttpx2TrackingTransport, Httpx2TrackingTransport
    from ._http._retry import is_transient, retry_if_transient, wait_retry_after

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChatStream",
    "AsyncClient",
    "AsyncHttpx2TrackingTransport",
    "AsyncTrackingTransport",
    "AuthenticationError",
    "BadRequestError",
    "ChatStream",
    "Client",
    "Httpx2TrackingTransport",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedByProvider",
    "ServerError",
    "TrackingTransport",
    "araise_guard_refusals",
    "is_transient",
    "raise_guard_refusals",
    "retry_if_transient",
    "wait_retry_after",
]

_LAZY: dict[str, str] = {
    "AsyncChatStream": "._http._client",
    "AsyncClient": "._http._client",
    "ChatStream": "._http._client",
    "Client": "._http._client",
    "AsyncHttpx2TrackingTransport": "._http._httpx2",
    "Httpx2TrackingTransport": "._http._httpx2",
    "is_transient": "._http._retry",
    "retry_if_transient": "._http._retry",
    "wait_retry_after": "._http._retry",
}


if not TYPE_CHECKING:  # a misspelt name must fail type checks, not resolve to Any

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'costledger.http' has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(module, "costledger"), name)
        except ModuleNotFoundError as exc:
            if module.endswith("_httpx2") and exc.name in ("httpx2", "httpcore2"):
                raise ImportError(
                    f"costledger.http.{name} needs httpx2, which is not installed: "
                    "pip install httpx2"
                ) from exc
            raise
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(__all__)
