"""Guards from a configuration file, so tools that do not run the application (the
``costledger budget status`` command, a LiteLLM proxy config) know its budgets.

```toml
guard_store = "redis://cache:6379/0"

[[budget]]
limit = "500 USD"
period = "month"
per = "team"
tz = "Europe/Berlin"

[[rate_limit]]
limit = "60/minute"
per = "user"

[[token_rate_limit]]
limit = "200k/minute"
per = "model"
```

Each table takes the keyword arguments of its class (``Budget``, ``RateLimit``,
``TokenRateLimit``); ``warn_at`` is a list of fractions and ``where`` a table.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from .._redact import redact_url
from ._budget import Budget
from ._ratelimit import RateLimit, TokenRateLimit

__all__ = ["GuardConfig", "guards_from_config"]

_KINDS: dict[str, type[Any]] = {
    "budget": Budget,
    "rate_limit": RateLimit,
    "token_rate_limit": TokenRateLimit,
}
_PLURALS = {
    "budgets": "budget",
    "rate_limits": "rate_limit",
    "token_rate_limits": "token_rate_limit",
}
_NOT_FROM_FILES = {"clock", "estimator"}


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Guards read from a configuration: pass both to ``Tracker(guards=..., guard_store=...)``."""

    guards: tuple[Budget | RateLimit | TokenRateLimit, ...]
    guard_store: str | None

    def __repr__(self) -> str:
        # The store URL may carry its password (redis://:pw@cache): never shown.
        store = None if self.guard_store is None else redact_url(self.guard_store)
        return f"GuardConfig(guards={self.guards!r}, guard_store={store!r})"


def guards_from_config(source: Mapping[str, Any] | str | os.PathLike[str]) -> GuardConfig:
    """Build guards from a mapping, or a ``.toml`` / ``.json`` file of the same shape.

    Bad input raises ``ValueError`` naming the entry and the field, e.g.
    ``budget[2].period: period must be 'hour', 'day', ...``.
    """
    data = _load(source) if not isinstance(source, Mapping) else source
    where = str(source) if not isinstance(source, Mapping) else "guard config"
    unknown = set(data) - {"guard_store", *_KINDS, *_PLURALS}
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected guard_store,"
            " budget, rate_limit, token_rate_limit"
        )
    store = data.get("guard_store")
    if store is not None and not isinstance(store, str):
        raise ValueError(f"{where}: guard_store must be a URL string, got {store!r}")
    guards: list[Budget | RateLimit | TokenRateLimit] = []
    for key, value in data.items():
        kind = _PLURALS.get(key, key)
        if kind not in _KINDS:
            continue
        entries = [value] if isinstance(value, Mapping) else value
        if not isinstance(entries, list):
            raise ValueError(f"{where}: {key} must be a table or a list of tables, got {value!r}")
        for i, entry in enumerate(entries, 1):
            guards.append(_build(kind, i, entry))
    return GuardConfig(tuple(guards), store)


def _build(kind: str, index: int, entry: Any) -> Budget | RateLimit | TokenRateLimit:
    label = f"{kind}[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{label} must be a table of settings, got {entry!r}")
    kwargs = dict(entry)
    if "limit" not in kwargs:
        raise ValueError(f"{label}.limit is missing")
    for name in _NOT_FROM_FILES & set(kwargs):
        raise ValueError(f"{label}.{name} cannot come from a configuration file")
    cls = _KINDS[kind]
    known = _fields(cls)
    for name in sorted(set(kwargs) - known):
        raise ValueError(
            f"{label}.{name}: unknown field {name!r}; {kind} takes"
            f" {', '.join(sorted(known - _NOT_FROM_FILES))}"
        )
    if "warn_at" in kwargs and isinstance(kwargs["warn_at"], list):
        kwargs["warn_at"] = tuple(str(v) for v in kwargs["warn_at"])
    for name in ("wait", "reservation_ttl"):  # durations, not money: seconds as a float
        if isinstance(kwargs.get(name), Decimal):
            kwargs[name] = float(kwargs[name])
    limit = kwargs.pop("limit")
    try:
        guard: Budget | RateLimit | TokenRateLimit = cls(limit, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{label}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{label}.{_field_of(exc, kwargs)}: {exc}") from None
    return guard


def _fields(cls: type[Any]) -> set[str]:
    """The keyword arguments a guard class takes (``limit`` included)."""
    import inspect

    return {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _field_of(exc: ValueError, kwargs: Mapping[str, Any]) -> str:
    text = str(exc)
    for name in (
        "period",
        "per",
        "warn_at",
        "tz",
        "where",
        "on_store_error",
        "wait",
        "name",
        "reservation_ttl",
        "hard",
    ):
        if name in kwargs and text.startswith(name):
            return name
    return "limit"


def _load(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"guard config {p}: cannot read it: {exc.strerror}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw, parse_float=Decimal)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10 only
                import tomli as tomllib  # type: ignore[import-not-found]  # not on 3.11+
            data = tomllib.loads(raw.decode("utf-8"), parse_float=Decimal)
    except ValueError as exc:
        raise ValueError(f"guard config {p}: not valid {p.suffix or 'TOML'}: {exc}") from None
    except RecursionError:  # json and tomllib recurse per level of nesting
        raise ValueError(
            f"guard config {p}: not valid {p.suffix or 'TOML'}: its values are nested too "
            "deeply to read"
        ) from None
    if not isinstance(data, Mapping):
        raise ValueError(f"guard config {p}: the top level must be a table")
    return data
