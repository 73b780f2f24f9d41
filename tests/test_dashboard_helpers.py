"""Shared pieces of the dashboard tests: a known history, and headless Chromium driven over
the Chrome DevTools Protocol (no tests here; the name keeps it with the files it serves)."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import Cost, Usage, UsageEvent

UTC = timezone.utc
IN_CI = os.environ.get("CI", "").lower() == "true"
NOW = datetime(2025, 3, 20, 12, 0, tzinfo=UTC)
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-pro", "o3")
AMOUNTS = ("0.1", "0.2", "0.0000000375", "1234.000000000000000001", "0.000000000000000001")


def history(n: int = 300, seed: int = 5, *, now: datetime = NOW) -> list[UsageEvent]:
    """Random events over the 40 days before ``now``: amounts float addition gets wrong,
    unpriced and not-priced calls, errors, users and features with and without a value,
    a few calls in EUR."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ts = now - timedelta(seconds=rng.randrange(1, 86400 * 40), microseconds=i)
        inp = rng.randrange(0, 5000)
        cache_read = rng.randrange(0, inp + 1)
        cache_write = rng.randrange(0, inp - cache_read + 1)
        out = rng.randrange(0, 2000)
        usage = Usage(
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            reasoning_tokens=rng.randrange(0, out + 1),
        )
        model = rng.choice(MODELS)
        roll = rng.random()
        if roll < 0.85:
            total = Decimal(rng.randrange(0, 10**9)) * Decimal("1E-17") + Decimal(
                rng.choice(AMOUNTS)
            )
            currency = "EUR" if rng.random() < 0.05 else "USD"
            cost = Cost(status="priced", total=total, input=total, currency=currency, source="t")
        elif roll < 0.95:
            cost = Cost.unknown(model)
        else:
            cost = Cost(status="not_priced")
        events.append(
            UsageEvent(
                model=model,
                response_model=rng.choice([None, model + "-2025"]),
                usage=usage,
                cost=cost,
                timestamp=ts,
                status=rng.choice(["ok", "ok", "ok", "error"]),
                provider=rng.choice(["openai", "anthropic"]),
                source="api",
                user=rng.choice(["alice", "bob", "carol", "dan", None]),
                team=rng.choice(["search", "chat"]),
                feature=rng.choice(["search", "summarise", "chat", None]),
                tags=tuple(rng.sample(["a", "b", "c"], rng.randrange(0, 3))),
            )
        )
    return events


def priced(
    total: str,
    *,
    at: datetime,
    model: str = "gpt-4o",
    user: str | None = "alice",
    feature: str | None = "search",
    currency: str = "USD",
    **usage: int,
) -> UsageEvent:
    amount = Decimal(total)
    return UsageEvent(
        model=model,
        usage=Usage(**usage) if usage else Usage(input_tokens=100, output_tokens=10),
        cost=Cost(status="priced", total=amount, input=amount, currency=currency, source="t"),
        timestamp=at,
        provider="openai",
        user=user,
        feature=feature,
    )


# -- headless Chromium over the DevTools Protocol -----------------------------------------------


def chromium_path() -> str:
    """The Chromium binary; skips (or fails under CI=true) when it is not installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    reason = "chromium is not installed (apt-get install chromium) "
    if IN_CI:
        pytest.fail(reason + "and CI=true requires the browser tests")
    pytest.skip(reason + "so the browser tests cannot run")


class Browser:
    """One headless Chromium page, driven with CDP over a websocket.

    Collects console errors (``console.error``, uncaught exceptions, log entries of level
    error) and every URL the page requested."""

    def __init__(self, binary: str, *, width: int = 1400, height: int = 2400) -> None:
        from websockets.sync.client import connect

        self._dir = tempfile.mkdtemp(prefix="costledger-chromium-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={self._dir}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._port()
            page = self._page_target(port)
            self._stack = contextlib.ExitStack()
            self.ws = self._stack.enter_context(
                connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
            )
        except BaseException:
            self._stop()
            raise
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable")

    def _port(self) -> int:
        marker = Path(self._dir) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if marker.exists():
                text = marker.read_text().split()
                if text:
                    return int(text[0])
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port in 60 s")

    @staticmethod
    def _page_target(port: int) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return dict(pages[0])
            if time.monotonic() > deadline:
                raise TimeoutError("chromium shows no page target")
            time.sleep(0.1)

    def send(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} in {timeout} s")
            message = json.loads(self.ws.recv(timeout=left))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def pump(self, seconds: float) -> None:
        """Collect events for a while."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                return
            if "method" in message:
                self.events.append(message)

    def navigate(self, url: str, timeout: float = 60) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout=timeout)

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        result = self.send(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(
                f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()"
            )
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} still false after {timeout} s")
            self.pump(0.1)

    def errors(self) -> list[str]:
        found = []
        for e in self.events:
            method, params = e["method"], e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails"))[:2000])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:2000])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(json.dumps(params["entry"])[:2000])
        return found

    def requested(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def screenshot(self, path: str | os.PathLike[str]) -> None:
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        Path(path).write_bytes(base64.b64decode(shot["data"]))

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self._stop()


def browser_session() -> Iterator[Browser]:
    binary = chromium_path()
    try:
        import websockets.sync.client  # noqa: F401  (the CDP client; a dev dependency)
    except ImportError:
        if IN_CI:
            pytest.fail("the websockets package is missing and CI=true requires browser tests")
        pytest.skip("the websockets package is missing (pip install websockets)")
    browser = Browser(binary)
    try:
        yield browser
    finally:
        browser.close()
