"""Shared fixtures: server URLs for the backends the tests run against.

A test that needs PostgreSQL or Redis skips with a clear reason when the URL is unset; under
``CI=true`` an unset or unreachable server fails the run instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _server_url(var: str) -> str:
    url = os.environ.get(var)
    if not url:
        if IN_CI:
            pytest.fail(f"{var} is not set, and CI=true requires every backend")
        pytest.skip(f"{var} is not set; export it to run this test")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    try:
        with socket.create_connection((host, port or 0), timeout=2):
            pass
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"{var}={url} is unreachable under CI=true: {exc}")
        pytest.skip(f"{var}={url} is unreachable: {exc}")
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _server_url("COSTLEDGER_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _server_url("COSTLEDGER_TEST_REDIS_URL")
