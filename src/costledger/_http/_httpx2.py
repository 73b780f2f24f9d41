"""The transports for ``httpx2``, the HTTP library of the current OpenAI and Anthropic SDKs.

Thin bindings of ``_core`` to httpx2's classes, like ``_httpx`` for httpx.
Imported only when asked for, so httpx2 stays optional.
"""

from __future__ import annotations

from typing import cast

import httpx2

from .._tracker import Tracker
from ._core import (
    AsyncTrackingBase,
    Flavour,
    SyncTrackingBase,
    TrackedAsyncStream,
    TrackedSyncStream,
)

__all__ = ["AsyncHttpx2TrackingTransport", "Httpx2TrackingTransport"]


class _SyncStream(TrackedSyncStream, httpx2.SyncByteStream):
    pass


class _AsyncStream(TrackedAsyncStream, httpx2.AsyncByteStream):
    pass


_FLAVOUR = Flavour(httpx2, _SyncStream, _AsyncStream)


class Httpx2TrackingTransport(SyncTrackingBase, httpx2.BaseTransport):
    """``TrackingTransport`` for ``httpx2.Client`` (what ``anthropic.Anthropic`` requires).

    >>> client = httpx2.Client(transport=Httpx2TrackingTransport())
    >>> anthropic.Anthropic(http_client=client)

    Same arguments and behaviour as ``TrackingTransport``; wraps ``transport``
    (default ``httpx2.HTTPTransport()``).
    """

    _flavour = _FLAVOUR
    _counterpart = "TrackingTransport"

    def __init__(
        self,
        transport: httpx2.BaseTransport | None = None,
        *,
        tracker: Tracker | None = None,
        include_usage: bool = True,
        provider: str | None = None,
    ) -> None:
        super().__init__(
            transport if transport is not None else httpx2.HTTPTransport(),
            tracker=tracker,
            include_usage=include_usage,
            provider=provider,
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return cast(httpx2.Response, self._handle(request))

    def close(self) -> None:
        self.transport.close()


class AsyncHttpx2TrackingTransport(AsyncTrackingBase, httpx2.AsyncBaseTransport):
    """``AsyncTrackingTransport`` for ``httpx2.AsyncClient``.

    Wraps ``transport`` (default ``httpx2.AsyncHTTPTransport()``).
    """

    _flavour = _FLAVOUR
    _counterpart = "AsyncTrackingTransport"

    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport | None = None,
        *,
        tracker: Tracker | None = None,
        include_usage: bool = True,
        provider: str | None = None,
    ) -> None:
        super().__init__(
            transport if transport is not None else httpx2.AsyncHTTPTransport(),
            tracker=tracker,
            include_usage=include_usage,
            provider=provider,
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return cast(httpx2.Response, await self._handle(request))

    async def aclose(self) -> None:
        await self.transport.aclose()
