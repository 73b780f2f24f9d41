"""``Client`` / ``AsyncClient``: a small OpenAI-compatible client on plain httpx, tracked.

For code that talks to an OpenAI-compatible API without an SDK. Every attempt
goes through a ``TrackingTransport``, so each one that reaches the provider is
recorded once (a retried 429 is an error event with no cost, then the success).
Retries are tenacity strategies, replaceable and composable.
"""

from __future__ import annotations

import json
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, Retrying, stop_after_attempt
from tenacity.retry import retry_base
from tenacity.wait import wait_base

from .._redact import redact_url
from .._tracker import Tracker, check_tracker
from ._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    error_for_status,
    scrub,
)
from ._httpx import AsyncTrackingTransport, TrackingTransport
from ._retry import retry_if_transient, wait_retry_after

__all__ = ["AsyncChatStream", "AsyncClient", "ChatStream", "Client"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Like the OpenAI SDK: a long read timeout (reasoning models think for minutes), a short connect.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)

T = TypeVar("T")
JSON = dict[str, Any]


class _Base:
    """Configuration and error translation shared by ``Client`` and ``AsyncClient``."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        max_retries: int,
        retry: retry_base | None,
        wait: wait_base | None,
    ) -> None:
        base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if not isinstance(base, str) or not base.startswith(("http://", "https://")):
            shown = repr(redact_url(base)) if isinstance(base, str) else repr(base)
            raise ValueError(f"base_url must be an http(s) URL, got {shown}")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ValueError(
                "api_key is missing: pass api_key=... or set OPENAI_API_KEY in the environment"
            )
        if not isinstance(key, str):
            raise ValueError(f"api_key must be a string, got a {type(key).__name__}")
        if not all("!" <= c <= "~" for c in key):
            # Never the key itself: it goes in a header, where these characters are illegal.
            raise ValueError(
                "api_key contains whitespace, control or non-ASCII characters (a trailing "
                "newline from a file?): pass the key alone"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        self.base_url = base.rstrip("/")
        self._api_key = key
        self.max_retries = max_retries
        self.retry: retry_base = retry if retry is not None else retry_if_transient()
        self.wait: wait_base = wait if wait is not None else wait_retry_after()
        self._where = httpx.URL(self.base_url).host or self.base_url

    def __repr__(self) -> str:  # never the key, nor a password in the URL
        return f"{type(self).__name__}(base_url={redact_url(self.base_url)!r})"

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def _retry_kwargs(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "retry": self.retry,
            "wait": self.wait,
            "reraise": True,
        }

    def _transport_error(self, exc: httpx.RequestError | httpx.StreamError) -> APIError:
        """The ``APIError`` for an httpx error. Raise it outside the ``except`` block that
        caught ``exc`` (see ``_sending``): chained, it would keep the request and its key."""
        detail = scrub(f"{type(exc).__name__}: {exc}", self._api_key)
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(f"{self._where} did not answer in time ({detail})")
        if isinstance(exc, httpx.LocalProtocolError):
            # Refused before sending (an illegal header value...): no retry can cure it.
            return APIError(f"the request to {self._where} is not valid HTTP ({detail})")
        if isinstance(exc, (httpx.StreamError, httpx.DecodingError)):
            # DecodingError: a body that does not decode by its Content-Encoding.
            return APIError(f"the response from {self._where} cannot be read ({detail})")
        if not isinstance(exc, httpx.TransportError):  # TooManyRedirects, a future RequestError
            return APIError(f"the request to {self._where} failed ({detail})")
        return APIConnectionError(f"could not reach {self._where} ({detail})")

    def _sending(self, send: Callable[[], T]) -> T:
        """``send()``, its httpx errors raised as ``APIError`` with no chained cause or context.

        ``RequestError``: every error of sending a request and reading its response
        (``DecodingError`` included, raised above the transport), each of which keeps the
        request, and its key, in ``exc.request``."""
        error: APIError
        try:
            return send()
        except httpx.RequestError as exc:
            error = self._transport_error(exc)
        raise error

    async def _asending(self, send: Callable[[], Awaitable[T]]) -> T:
        error: APIError
        try:
            return await send()
        except httpx.RequestError as exc:
            error = self._transport_error(exc)
        raise error

    def _status_error(self, response: httpx.Response, body: bytes) -> APIStatusError:
        return error_for_status(
            response.status_code,
            response.reason_phrase,
            response.headers,
            body,
            where=self._where,
            secret=self._api_key,
        )

    def _json(self, response: httpx.Response) -> JSON:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise APIError(
                f"{self._where} answered HTTP {response.status_code} with a body that is not "
                "a JSON object"
            )
        return data

    def _chunk(self, line: str) -> JSON | None:
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            return _DONE
        try:
            chunk = json.loads(data)
        except ValueError:
            return None
        if not isinstance(chunk, dict):
            return None
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise APIError(f"{self._where} failed mid-stream: {scrub(str(message), self._api_key)}")
        return chunk


_DONE: JSON = {}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _messages(messages: Any) -> list[Any]:
    """``messages`` as a list of message dicts, or a ``ValueError`` saying what is wrong.

    A plain string is refused rather than taken as one user message: the OpenAI API (and
    its SDK) take a list, and ``list("Hello")`` would send five one-letter messages."""
    if isinstance(messages, (str, bytes, bytearray, Mapping)) or not isinstance(messages, Iterable):
        raise ValueError(
            "messages must be a list of message dicts such as "
            f"[{{'role': 'user', 'content': 'Hi'}}], got {_show(messages)}"
        )
    items = list(messages)
    for i, message in enumerate(items):
        if not isinstance(message, Mapping):
            raise ValueError(
                f"messages[{i}] must be a message dict such as "
                f"{{'role': 'user', 'content': 'Hi'}}, got {_show(message)}"
            )
    return [m if isinstance(m, dict) else dict(m) for m in items]


def _token_ids(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _embeddings_input(value: Any) -> str | list[Any]:
    """``input`` of an embeddings call: a string, or a list of strings or of token ids."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(
            f"input must be a string or a list of strings (or of token ids), got {_show(value)}"
        )
    items = list(value)
    for i, item in enumerate(items):
        if isinstance(item, str) or _token_ids(item):
            continue
        if isinstance(item, (list, tuple)) and all(_token_ids(t) for t in item):
            continue
        raise ValueError(
            f"input[{i}] must be a string, a token id or a list of token ids, got {_show(item)}"
        )
    return items


def _responses_input(value: Any) -> str | list[Any]:
    """``input`` of a Responses API call: a string, or a list of input items."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(
        "input must be a string or a list of input items such as "
        f"[{{'role': 'user', 'content': 'Hi'}}], got {_show(value)}"
    )


def _body(model: str, params: Mapping[str, Any], **fields: Any) -> JSON:
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if params.get("stream"):
        raise ValueError("stream=True is not supported here: use stream_chat() to stream")
    return {"model": model, **fields, **params}


class ChatStream:
    """The chunks of a streamed chat completion, as dicts. ``close()`` (or ``with``) ends it.

    With usage tracking on, the last chunk has empty ``choices`` and carries ``usage``.
    """

    def __init__(self, response: httpx.Response, client: _Base) -> None:
        self._response = response
        self._client = client

    def __iter__(self) -> Iterator[JSON]:
        # Errors once chunks flow (a read timeout, a cut connection) are APIErrors too,
        # raised after the except block so that they keep no reference to the request.
        error: APIError | None = None
        try:
            for line in self._response.iter_lines():
                chunk = self._client._chunk(line)
                if chunk is _DONE:
                    return
                if chunk is not None:
                    yield chunk
        except (httpx.RequestError, httpx.StreamError) as exc:
            error = self._client._transport_error(exc)
        finally:
            self._response.close()
        if error is not None:
            raise error

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Client(_Base):
    """An OpenAI-compatible client on httpx whose every call is cost-tracked.

    >>> client = Client()                 # OPENAI_BASE_URL / OPENAI_API_KEY from the environment
    >>> reply = client.chat("gpt-4o-mini", [{"role": "user", "content": "Hi"}])

    ``max_retries`` retries (after the first attempt) on 408, 409, 429, 5xx, timeouts
    and connection errors, waiting as long as ``Retry-After`` says (on any status; an
    error asking for more than 60 s is raised at once), else with exponential backoff
    and jitter. ``retry`` / ``wait`` replace the tenacity strategies
    (``retry_if_transient()``, ``wait_retry_after()``). ``transport`` is the
    httpx transport to send through (wrapped in a ``TrackingTransport``).
    Errors raise ``APIError`` subclasses; the API key never appears in them.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        tracker: Tracker | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        retry: retry_base | None = None,
        wait: wait_base | None = None,
        provider: str | None = None,
        include_usage: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # named as the host wrote it, not as the transport made of it
        check_tracker("Client()", tracker)
        super().__init__(base_url, api_key, max_retries=max_retries, retry=retry, wait=wait)
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={**(headers or {}), **self._auth_headers()},
            transport=TrackingTransport(
                transport, tracker=tracker, include_usage=include_usage, provider=provider
            ),
        )

    def chat(self, model: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> JSON:
        """``POST /chat/completions``; returns the response as a dict."""
        return self._post("/chat/completions", _body(model, params, messages=_messages(messages)))

    def responses(self, model: str, input: Any, **params: Any) -> JSON:
        """``POST /responses`` (the Responses API); returns the response as a dict."""
        return self._post("/responses", _body(model, params, input=_responses_input(input)))

    def embeddings(self, model: str, input: str | Sequence[str], **params: Any) -> JSON:
        """``POST /embeddings``; returns the response as a dict."""
        return self._post("/embeddings", _body(model, params, input=_embeddings_input(input)))

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **params: Any
    ) -> ChatStream:
        """``POST /chat/completions`` with ``stream: true``; iterate the result for chunks.

        The request is sent (and retried) now; once chunks flow, nothing is retried.
        """
        params = {k: v for k, v in params.items() if k != "stream"}
        body = {**_body(model, params, messages=_messages(messages)), "stream": True}
        response = self._retrying(lambda: self._open_stream("/chat/completions", body))
        return ChatStream(response, self)

    def _retrying(self, attempt_fn: Callable[[], T]) -> T:
        for attempt in Retrying(**self._retry_kwargs()):
            with attempt:
                return attempt_fn()
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _post(self, path: str, body: JSON) -> JSON:
        return self._retrying(lambda: self._post_once(path, body))

    def _post_once(self, path: str, body: JSON) -> JSON:
        response = self._sending(lambda: self._http.post(path, json=body))
        if response.status_code >= 400:
            raise self._status_error(response, response.content)
        return self._json(response)

    def _open_stream(self, path: str, body: JSON) -> httpx.Response:
        request = self._http.build_request("POST", path, json=body)
        response = self._sending(lambda: self._http.send(request, stream=True))
        if response.status_code >= 400:
            try:
                content = response.read()
            finally:
                response.close()
            raise self._status_error(response, content)
        return response

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncChatStream:
    """The async twin of ``ChatStream``: ``async for chunk in stream``."""

    def __init__(self, response: httpx.Response, client: _Base) -> None:
        self._response = response
        self._client = client

    async def __aiter__(self) -> AsyncIterator[JSON]:
        error: APIError | None = None
        try:
            async for line in self._response.aiter_lines():
                chunk = self._client._chunk(line)
                if chunk is _DONE:
                    return
                if chunk is not None:
                    yield chunk
        except (httpx.RequestError, httpx.StreamError) as exc:
            error = self._client._transport_error(exc)
        finally:
            await self._response.aclose()
        if error is not None:
            raise error

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncClient(_Base):
    """The async twin of ``Client``: same arguments, ``await`` each method.

    >>> stream = await client.stream_chat("gpt-4o-mini", messages)
    >>> async for chunk in stream: ...
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        tracker: Tracker | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: retry_base | None = None,
        wait: wait_base | None = None,
        provider: str | None = None,
        include_usage: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # named as the host wrote it, not as the transport made of it
        check_tracker("AsyncClient()", tracker)
        super().__init__(base_url, api_key, max_retries=max_retries, retry=retry, wait=wait)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            headers={**(headers or {}), **self._auth_headers()},
            transport=AsyncTrackingTransport(
                transport, tracker=tracker, include_usage=include_usage, provider=provider
            ),
        )

    async def chat(self, model: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> JSON:
        body = _body(model, params, messages=_messages(messages))
        return await self._post("/chat/completions", body)

    async def responses(self, model: str, input: Any, **params: Any) -> JSON:
        return await self._post("/responses", _body(model, params, input=_responses_input(input)))

    async def embeddings(self, model: str, input: str | Sequence[str], **params: Any) -> JSON:
        return await self._post("/embeddings", _body(model, params, input=_embeddings_input(input)))

    async def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **params: Any
    ) -> AsyncChatStream:
        params = {k: v for k, v in params.items() if k != "stream"}
        body = {**_body(model, params, messages=_messages(messages)), "stream": True}
        async for attempt in AsyncRetrying(**self._retry_kwargs()):
            with attempt:
                response = await self._open_stream("/chat/completions", body)
                return AsyncChatStream(response, self)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def _post(self, path: str, body: JSON) -> JSON:
        async for attempt in AsyncRetrying(**self._retry_kwargs()):
            with attempt:
                return await self._post_once(path, body)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def _post_once(self, path: str, body: JSON) -> JSON:
        response = await self._asending(lambda: self._http.post(path, json=body))
        if response.status_code >= 400:
            raise self._status_error(response, response.content)
        return self._json(response)

    async def _open_stream(self, path: str, body: JSON) -> httpx.Response:
        request = self._http.build_request("POST", path, json=body)
        response = await self._asending(lambda: self._http.send(request, stream=True))
        if response.status_code >= 400:
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            raise self._status_error(response, content)
        return response

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
