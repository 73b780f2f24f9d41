"""The transports for ``httpx``: thin bindings of ``_core`` to httpx's classes."""

from __future__ import annotations

from typing import cast

import httpx

from .._tracker import Tracker
from ._core import (
    AsyncTrackingBase,
    Flavour,
    SyncTrackingBase,
    TrackedAsyncStream,
    TrackedSyncStream,
)

__all__ = ["AsyncTrackingTransport", "TrackingTransport"]


class _SyncStream(TrackedSyncStream, httpx.SyncByteStream):
    pass


class _AsyncStream(TrackedAsyncStream, httpx.AsyncByteStream):
    pass


_FLAVOUR = Flavour(httpx, _SyncStream, _AsyncStream)


class TrackingTransport(SyncTrackingBase, httpx.BaseTransport):
    """An httpx transport that records the cost of every model call it carries.

    >>> client = httpx.Client(transport=TrackingTransport())
    >>> openai.OpenAI(http_client=client)

    Wraps ``transport`` (default ``httpx.HTTPTransport()``). POSTs to
    ``/chat/completions``, ``/completions``, ``/responses``, ``/embeddings`` and
    ``/v1/messages`` are tracked, streams included; everything else passes through
    untouched. ``include_usage`` adds ``stream_options.include_usage`` to OpenAI
    chat streams that lack it (the consumer then sees one extra final chunk, with
    empty ``choices``, that carries the usage). ``provider`` overrides the provider
    read from the host. A guard's refusal is raised before any network I/O.
    """

    _flavour = _FLAVOUR
    _counterpart = "Httpx2TrackingTransport"

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        tracker: Tracker | None = None,
        include_usage: bool = True,
        provider: str | None = None,
    ) -> None:
        super().__init__(
            transport if transport is not None else httpx.HTTPTransport(),
            tracker=tracker,
            include_usage=include_usage,
            provider=provider,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return cast(httpx.Response, self._handle(request))

    def close(self) -> None:
        self.transport.close()


class AsyncTrackingTransport(AsyncTrackingBase, httpx.AsyncBaseTransport):
    """The async twin of ``TrackingTransport`` (default ``httpx.AsyncHTTPTransport()``)."""

    _flavour = _FLAVOUR
    _counterpart = "AsyncHttpx2TrackingTransport"

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        tracker: Tracker | None = None,
        include_usage: bool = True,
        provider: str | None = None,
    ) -> None:
        super().__init__(
            transport if transport is not None else httpx.AsyncHTTPTransport(),
            tracker=tracker,
            include_usage=include_usage,
            provider=provider,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return cast(httpx.Response, await self._handle(request))

    async def aclose(self) -> None:
        await self.transport.aclose()
