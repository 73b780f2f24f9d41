"""``costledger serve`` on any address but loopback asks for an access token.

Bound to loopback, the server answers only requests naming a loopback host (DNS
rebinding); bound to another address anyone who could reach it read the whole ledger
(users, features, costs). It now makes a random token (or takes ``token=``) and asks every
request for it: in the URL once (then a cookie the page's own requests carry), or as
``Authorization: Bearer``. The token is never written to the server's log.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from costledger._dashboard import DashboardServer, build_dashboard
from costledger._ledger import Ledger

from .test_dashboard_helpers import NOW, priced


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(f"sqlite:///{tmp_path}/dash.db", sync=True)
    opened.record(priced("0.25", at=NOW - timedelta(hours=1)))
    yield opened
    opened.close()


def _get(port: int, path: str, **headers: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def test_loopback_asks_for_no_token_unless_given_one(ledger: Ledger) -> None:
    with DashboardServer(lambda: build_dashboard(ledger, now=NOW), port=0) as server:
        assert server.token == ""
        assert server.url == f"http://127.0.0.1:{server.port}/"
        assert _get(server.port, "/data.json").status == 200
    with DashboardServer(
        lambda: build_dashboard(ledger, now=NOW), port=0, token="s3cret"
    ) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/?token=s3cret"
        assert _get(server.port, "/data.json").status == 401
        assert _get(server.port, "/data.json", Authorization="Bearer s3cret").status == 200


def test_any_other_address_asks_for_a_random_token(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="costledger.dashboard")
    with DashboardServer(
        lambda: build_dashboard(ledger, now=NOW), host="0.0.0.0", port=0, min_interval=0
    ) as server:
        assert not server.loopback
        token = parse_qs(urlsplit(server.url).query)["token"][0]
        assert token == server.token
        assert len(token) >= 32
        port = server.port
        for path in ("/", "/data.json", "/plotly.min.js", "/?token=wrong"):
            refused = _get(port, path)
            assert refused.status == 401, path
            assert b"access token" in refused.read()
        assert _get(port, "/data.json", Authorization="Bearer wrong").status == 401
        # the URL's token once: a cookie for the page's own requests, the token out of the URL
        opened = _get(port, f"/data.json?token={token}&x=1")
        assert opened.status == 303
        assert opened.getheader("Location") == "/data.json?x=1"
        cookie = opened.getheader("Set-Cookie") or ""
        assert cookie == (f"costledger_dashboard_{port}={token}; Path=/; HttpOnly; SameSite=Strict")
        name_value = cookie.split(";")[0]
        data = _get(port, "/data.json", Cookie=f"other=1; {name_value}")
        assert data.status == 200
        assert json.loads(data.read())["totals"][0]["cost"] == "0.25"
        assert _get(port, "/", Cookie=name_value).status == 200
        assert _get(port, "/data.json", Authorization=f"Bearer {token}").status == 200
        assert _get(port, "/data.json", Cookie=f"{name_value}x").status == 401
        # a percent-encoded name is the token too; a path naming another host is not
        # where the redirect goes
        encoded = _get(port, f"/\\evil.example/?%74oken={token}")
        assert encoded.status == 303
        assert encoded.getheader("Location") == "/evil.example/"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "?[REDACTED]" in logged
    assert token not in logged


def test_a_token_that_cannot_go_into_a_url_and_a_cookie_is_refused(ledger: Ledger) -> None:
    for bad in ("a b", "x;y", "é"):
        with pytest.raises(ValueError, match="token must be text of letters, digits") as err:
            DashboardServer(lambda: build_dashboard(ledger, now=NOW), port=0, token=bad)
        assert bad not in str(err.value)  # a secret, even a malformed one, is not shown
    with DashboardServer(
        lambda: build_dashboard(ledger, now=NOW), host="0.0.0.0", port=0, token=""
    ) as server:
        assert server.token == ""
        assert _get(server.port, "/data.json").status == 200
