"""``serve``: the dashboard live on a local port (stdlib ``http.server`` in a thread).

The page is the very page ``dashboard -o`` writes; it polls ``/data.json`` and redraws
with what has landed in the ledger since. Only loopback by default; requests whose
``Host`` header names another host are refused, so a web page elsewhere cannot read the
ledger through the browser (DNS rebinding). Bound to any other address, it asks every
request for an access token (made at random unless given): in the URL's ``token=`` once,
after which the browser holds it in a cookie, or as ``Authorization: Bearer <token>``.

Each connection has a thread of its own, at most ``max_connections`` at once (one more is
answered 503 at once and closed), and must send its request line and headers within
``request_timeout`` seconds; a client that stops taking the answer for that long is
dropped too. So idle or half-sent connections cannot take every thread and descriptor.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from ._data import Dashboard
from ._data import _build as build_from
from ._page import plotly_js, render_dashboard, to_json

if TYPE_CHECKING:
    from .._guards import Budget
    from .._ledger import Ledger
    from .._tracker import Tracker

__all__ = ["DashboardServer", "serve_dashboard"]

_log = logging.getLogger("costledger.dashboard")


_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
# a request line's query (any parameter may be the token, percent-encoded or not)
_TOKEN_IN_URL = re.compile(r"(\?)[^\s]*")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_BUSY_TEXT = b"busy: too many connections to this dashboard; try again\n"
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BUSY_TEXT)).encode() + b"\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\n" + _BUSY_TEXT
)
_CHUNK = 64 * 1024
"""An answer is written in pieces this big, each within ``request_timeout``: a slow
reader is served, one that stops reading is dropped."""


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``slots`` of them at once."""

    daemon_threads = True
    # close() (and Ctrl-C) does not wait for connections still open: an idle one would
    # hold it for up to request_timeout, and the threads end with the process anyway
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], slots: int
    ) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: none will give the slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """503 and close, on the listening thread: it never waits on this client."""
        with suppress(OSError):
            request.setblocking(False)
            request.send(_BUSY)
        self.shutdown_request(request)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _RequestReader(io.RawIOBase):
    """A connection's reading side that gives up ``seconds`` after it was accepted: the
    request line and headers must have arrived by then (a socket timeout alone is per
    read, and a client sending a byte at a time would never meet it)."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


def _check_limits(request_timeout: object, max_connections: object) -> None:
    if (
        isinstance(request_timeout, bool)
        or not isinstance(request_timeout, (int, float))
        or not 0 < request_timeout <= 3600
    ):
        raise ValueError(
            f"request_timeout must be a number of seconds above 0, at most 3600, "
            f"got {request_timeout!r}"
        )
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise ValueError(f"max_connections must be a positive int, got {max_connections!r}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be a positive int, got {max_connections!r}")


class DashboardServer:
    """Serve ``compute()``'s dashboard on ``http://host:port/``, fresh on every poll.

    >>> server = DashboardServer(lambda: build_dashboard(ledger), port=0).start()
    >>> server.url          # 'http://127.0.0.1:54321/'
    >>> server.close()

    ``compute`` is called at most once per ``min_interval`` seconds (concurrent pollers
    share one computation). ``port=0`` picks a free port. ``serve_forever()`` runs in
    the calling thread instead of ``start()``'s background thread.

    ``token``: the access token every request must carry (``?token=`` in the URL, then a
    cookie; or ``Authorization: Bearer``). ``None``: none on loopback, a random one on any
    other address (``server.url`` carries it); ``""``: none at all.

    ``request_timeout``: seconds a connection has to send its request line and headers
    (then it is closed), and to take each 64 KiB of the answer. ``max_connections``: how
    many connections are served at once; one more is answered 503 and closed at once.
    """

    def __init__(
        self,
        compute: Callable[[], Dashboard],
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        refresh_seconds: float = 5.0,
        min_interval: float = 0.5,
        token: str | None = None,
        request_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        if token is not None and (
            not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token or "-")
        ):
            raise ValueError(  # the value is not shown: it is meant to be a secret
                "token must be text of letters, digits and - _ . ~ (it goes into a URL and "
                f"a cookie), got {type(token).__name__} of {len(str(token))} characters"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a host name or address, got {host!r}")
        _check_limits(request_timeout, max_connections)
        self.request_timeout = float(request_timeout)
        self.max_connections = max_connections
        render_dashboard(
            {}, live=True, refresh_seconds=refresh_seconds, plotly_url="x"
        )  # checks it
        self._compute = compute
        self._on_close: list[Callable[[], None]] = []
        self.refresh_seconds = refresh_seconds
        self.min_interval = float(min_interval)
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None
        self._took = 0.0
        self._thread: threading.Thread | None = None
        server_class = _IPv6Server if ":" in host else _Server
        self._httpd = server_class((host.strip("[]"), port), self._handler(), max_connections)
        self.host = host.strip("[]")
        self.port = int(self._httpd.server_address[1])
        # From the address actually bound, not the spelling given: "LOCALHOST", "127.1" and
        # "0x7f.1" are loopback too, and must keep the Host check (DNS rebinding) on.
        self.loopback = _is_loopback(str(self._httpd.server_address[0]))
        if token is None:
            token = "" if self.loopback else secrets.token_urlsafe(24)
        self.token = token
        # the cookie a browser keeps it in: one per port (cookies ignore ports)
        self._cookie = f"costledger_dashboard_{self.port}"

    @property
    def url(self) -> str:
        """The page's address (with ``?token=`` when the server asks for one)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?{urlencode({'token': self.token})}" if self.token else ""
        return f"http://{host}:{self.port}/{query}"

    # -- running -------------------------------------------------------------------------------
    def start(self) -> DashboardServer:
        """Serve in a daemon thread; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="costledger-dashboard", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until ``close()`` (from another thread) or Ctrl-C."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def close(self) -> None:
        """Stop serving and release the port (and a ledger ``serve_dashboard`` opened)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        while self._on_close:
            self._on_close.pop()()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- content -------------------------------------------------------------------------------
    def data_json(self) -> bytes:
        """The current payload as JSON bytes, recomputed at most every ``min_interval``
        seconds, and never more often than it takes to compute (a slow ledger is not kept
        busy by its own dashboard)."""
        with self._lock:
            started = time.monotonic()
            cached = self._cached
            if cached is not None and started - cached[0] < max(self.min_interval, self._took):
                return cached[1]
            body = to_json(self._compute().payload()).encode("utf-8")
            done = time.monotonic()
            self._took = done - started
            self._cached = (done, body)
            return body

    def page(self) -> bytes:
        """The live page, with the current data in it; without when the ledger cannot be
        read now (the page then asks ``/data.json`` for it, and says it is retrying)."""
        try:
            payload: dict[str, Any] | None = json.loads(self.data_json())
        except Exception as exc:  # the ledger failed: serve the page, which retries
            _log.warning("costledger dashboard: computing the data failed: %r", exc)
            payload = None
        html = render_dashboard(
            payload,
            live=True,
            refresh_seconds=self.refresh_seconds,
            data_url="data.json",
            plotly_url="plotly.min.js",
        )
        return html.encode("utf-8")

    def _token_given(self, query: str, headers: Any) -> tuple[bool, bool]:
        """Whether a request carries the token, and whether in its URL (then the reply
        sets the cookie). Compared in constant time."""
        if not self.token:
            return True, False
        expected = self.token.encode("utf-8")
        given = parse_qs(query).get("token", [])
        if given:
            return hmac.compare_digest(given[-1].encode("utf-8"), expected), True
        auth = headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected):
            return True, False
        for header in headers.get_all("Cookie") or []:
            for part in header.split(";"):
                name, _, value = part.strip().partition("=")
                if name == self._cookie and hmac.compare_digest(value.encode(), expected):
                    return True, False
        return False, False

    def _allowed_host(self, header: str | None) -> bool:
        if not self.loopback:
            return True  # bound to a public address on purpose: any name may reach it
        if not header:
            return False
        try:
            name = urlsplit(f"//{header}").hostname or ""
        except ValueError:  # "[::1", "evil.com]": no host name at all
            return False
        return _is_loopback(name)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        js_cache: dict[str, tuple[bytes, str]] = {}

        def plotly() -> tuple[bytes, str]:
            if "js" not in js_cache:
                body = plotly_js().encode("utf-8")
                js_cache["js"] = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            return js_cache["js"]

        class Handler(BaseHTTPRequestHandler):
            server_version = "costledger-dashboard"
            sys_version = ""

            def setup(self) -> None:
                super().setup()
                self.rfile.close()  # its reference would keep the socket open after close
                self.rfile = io.BufferedReader(
                    _RequestReader(self.connection, server.request_timeout)
                )

            def log_message(self, format: str, *args: Any) -> None:
                # the request line may carry the access token (?token=): never logged
                shown = tuple(
                    _TOKEN_IN_URL.sub(r"\1[REDACTED]", a) if isinstance(a, str) else a for a in args
                )
                _log.debug("dashboard %s " + format, self.address_string(), *shown)

            def _send(
                self,
                status: int,
                body: bytes,
                content_type: str,
                extra: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "no-referrer")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                try:
                    # each write's own limit (the request's deadline was for reading it)
                    self.connection.settimeout(server.request_timeout)
                    self.end_headers()
                    if self.command != "HEAD":
                        view = memoryview(body)
                        for start in range(0, len(view), _CHUNK):
                            self.wfile.write(view[start : start + _CHUNK])
                except ConnectionError:  # the browser went away (reload, tab closed): fine
                    self.close_connection = True
                except TimeoutError:  # it stopped taking the answer: dropped, quietly
                    self.close_connection = True

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                hosts = self.headers.get_all("Host") or []
                # two Host headers: which one a proxy or browser honoured is unknown
                if len(hosts) > 1 or not server._allowed_host(self.headers.get("Host")):
                    self._send(403, b"forbidden host\n", "text/plain; charset=utf-8")
                    return
                parts = urlsplit(self.path)
                allowed, in_url = server._token_given(parts.query, self.headers)
                if not allowed:
                    self._send(
                        401,
                        b"this dashboard asks for its access token: open the URL costledger"
                        b" serve printed (?token=...)\n",
                        "text/plain; charset=utf-8",
                        {"Cache-Control": "no-store"},
                    )
                    return
                if in_url:  # kept by the browser for the page's own requests
                    cookie = f"{server._cookie}={server.token}; Path=/; HttpOnly; SameSite=Strict"
                    rest = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"]
                    # a path of this server only ("//host", "/\\host" would be another's)
                    where = "/" + parts.path.lstrip("/\\") + (f"?{urlencode(rest)}" if rest else "")
                    self._send(303, b"", "text/plain", {"Location": where, "Set-Cookie": cookie})
                    return
                # Only working out the answer is guarded: a failed write is the client
                # leaving (see _send), not a failed computation, and gets no 500.
                try:
                    reply = self._reply(parts.path)
                except Exception as exc:  # the ledger failed: say so, keep serving
                    _log.warning("costledger dashboard: computing the data failed: %r", exc)
                    body = to_json({"error": f"{type(exc).__name__}: {exc}"}).encode()
                    reply = (500, body, "application/json", {"Cache-Control": "no-store"})
                self._send(*reply)

            def _reply(self, path: str) -> tuple[int, bytes, str, dict[str, str]]:
                no_store = {"Cache-Control": "no-store"}
                if path in ("/", "/index.html"):
                    return 200, server.page(), "text/html; charset=utf-8", no_store
                if path == "/data.json":
                    return 200, server.data_json(), "application/json", no_store
                if path == "/plotly.min.js":
                    body, etag = plotly()
                    if self.headers.get("If-None-Match") == etag:
                        return 304, b"", "text/javascript", {"ETag": etag}
                    cache = {"ETag": etag, "Cache-Control": "max-age=86400"}
                    return 200, body, "text/javascript; charset=utf-8", cache
                if path == "/favicon.ico":
                    return 204, b"", "image/x-icon", {}
                return 404, b"not found\n", "text/plain; charset=utf-8", {}

        return Handler


def serve_dashboard(
    ledger: Ledger | str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    refresh_seconds: float = 5.0,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
    budgets: Sequence[Budget] | None = None,
    tracker: Tracker | None = None,
    top_n: int = 20,
    token: str | None = None,
    **filters: str | Sequence[str] | None,
) -> DashboardServer:
    """Serve the live dashboard of ``ledger`` from a background thread; returns the running
    server (``server.url``; ``server.close()`` stops it).

    Arguments as for ``build_dashboard``; relative times (``"7d"``, ``"this-month"``) are
    read again on every refresh. A bad selection raises here, before anything listens.
    ``token`` as for ``DashboardServer``: a random one, in ``server.url``, when ``host``
    is not loopback.
    """
    from .._ledger import Ledger
    from .._tracker import check_tracker

    check_tracker("serve_dashboard()", tracker)  # before a ledger is opened for it
    opened = ledger if isinstance(ledger, Ledger) else Ledger(ledger, sync=True)
    try:

        def compute() -> Dashboard:
            opened._fresh()  # what this process recorded is in the figures
            return build_from(
                opened,
                since=since,
                until=until,
                budgets=budgets,
                tracker=tracker,
                top_n=top_n,
                max_groups=20,
                max_models=10,
                max_burns=6,
                now=None,
                filters=filters,
            )

        compute()
        server = DashboardServer(
            compute, host=host, port=port, refresh_seconds=refresh_seconds, token=token
        )
    except BaseException:
        if opened is not ledger:
            opened.close()
        raise
    if opened is not ledger:
        server._on_close.append(opened.close)
    return server.start()
