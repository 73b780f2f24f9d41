"""Who a call is for: user, team, project, feature, tags and free metadata, carried in contextvars.

``attribute(...)`` works as a context manager and as a decorator (sync and async functions,
generators and async generators: a generator's code sees the scope at each step, the code
that consumes it between steps does not). Because the state lives in a ``ContextVar``, it
follows asyncio tasks and threads that copy the context (``contextvars.copy_context().run``,
LangChain's executor), and never leaks between requests.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import AsyncGeneratorType, GeneratorType, MappingProxyType, TracebackType
from typing import Any, TypeVar

__all__ = ["ATTRIBUTION_KEYS", "Attribution", "attribute", "current_attribution"]

ATTRIBUTION_KEYS: tuple[str, ...] = ("user", "team", "project", "feature")

_EMPTY_META: Mapping[str, Any] = MappingProxyType({})
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Attribution:
    """An immutable set of attribution values; ``merge`` lets the more specific side win."""

    user: str | None = None
    team: str | None = None
    project: str | None = None
    feature: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_META)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Attribution:
        """Build from loose keyword values: the four keys, ``tags``, everything else is metadata."""
        if not values:
            return EMPTY
        meta = {k: v for k, v in values.items() if k not in ATTRIBUTION_KEYS and k != "tags"}
        tags = values.get("tags") or ()
        if isinstance(tags, str):
            tags = (tags,)
        return cls(
            user=_opt_str(values.get("user")),
            team=_opt_str(values.get("team")),
            project=_opt_str(values.get("project")),
            feature=_opt_str(values.get("feature")),
            tags=tuple(str(t) for t in tags),
            metadata=MappingProxyType(meta) if meta else _EMPTY_META,
        )

    def merge(self, other: Attribution) -> Attribution:
        """``other`` (the more specific scope) wins per key; tags are united in order."""
        if other is EMPTY:
            return self
        if self is EMPTY:
            return other
        tags = self.tags + tuple(t for t in other.tags if t not in self.tags)
        meta: Mapping[str, Any]
        if other.metadata and self.metadata:
            meta = MappingProxyType({**self.metadata, **other.metadata})
        else:
            meta = other.metadata or self.metadata
        return Attribution(
            user=other.user if other.user is not None else self.user,
            team=other.team if other.team is not None else self.team,
            project=other.project if other.project is not None else self.project,
            feature=other.feature if other.feature is not None else self.feature,
            tags=tags,
            metadata=meta,
        )


EMPTY = Attribution()

_current: ContextVar[Attribution] = ContextVar("costledger_attribution", default=EMPTY)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def current_attribution() -> Attribution:
    """The attribution in force in this context (what ``attribute`` scopes have set)."""
    return _current.get()


class attribute:
    """Attribute every call inside a scope, as a context manager or a decorator.

    >>> with attribute(user="u-42", feature="search", tags=["beta"]):
    ...     chain.invoke(question)

    Nested scopes merge: the inner one wins per key and tags accumulate.
    """

    __slots__ = ("_attribution", "_tokens")

    def __init__(
        self,
        *,
        user: str | None = None,
        team: str | None = None,
        project: str | None = None,
        feature: str | None = None,
        tags: Iterable[str] = (),
        **metadata: Any,
    ) -> None:
        self._attribution = Attribution(
            user=user,
            team=team,
            project=project,
            feature=feature,
            tags=tuple(str(t) for t in ([tags] if isinstance(tags, str) else tags)),
            metadata=MappingProxyType(metadata) if metadata else _EMPTY_META,
        )
        self._tokens: list[Token[Attribution]] = []

    def __enter__(self) -> Attribution:
        merged = _current.get().merge(self._attribution)
        self._tokens.append(_current.set(merged))
        return merged

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> Attribution:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                # A token per call, not the shared list: the decorated function may run
                # concurrently in many tasks or threads.
                token = _current.set(_current.get().merge(self._attribution))
                try:
                    return await func(*args, **kwargs)
                finally:
                    _current.reset(token)

            return async_wrapper  # type: ignore[return-value]

        attribution = self._attribution

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _current.set(_current.get().merge(attribution))
            try:
                result = func(*args, **kwargs)
            finally:
                _current.reset(token)
            # A generator (from a generator function, or from a wrapper such as
            # ``@track_cost`` that returns one) does its work when it is resumed, later.
            if isinstance(result, GeneratorType):
                return _scoped_gen(result, attribution)
            if isinstance(result, AsyncGeneratorType):
                return _scoped_agen(result, attribution)
            return result

        return wrapper  # type: ignore[return-value]


# A generator's body runs in the context of whoever resumes it, one step at a time. The scope
# is set around each step (next, send, throw, close) and reset before the item is handed out,
# so the generator's code sees it and the consumer's code between steps does not.


def _scoped_gen(
    gen: Generator[Any, Any, Any], attribution: Attribution
) -> Generator[Any, Any, Any]:
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        token = _current.set(_current.get().merge(attribution))
        try:
            item = gen.send(sent) if thrown is None else gen.throw(thrown)
        except StopIteration as stop:
            return stop.value
        finally:
            _current.reset(token)
        thrown = None
        try:
            sent = yield item
        except GeneratorExit:
            token = _current.set(_current.get().merge(attribution))
            try:
                gen.close()
            finally:
                _current.reset(token)
            raise
        except BaseException as exc:  # forwarded, as ``yield from`` does
            thrown = exc


async def _scoped_agen(
    agen: AsyncGenerator[Any, Any], attribution: Attribution
) -> AsyncGenerator[Any, Any]:
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        token = _current.set(_current.get().merge(attribution))
        try:
            item = await (agen.asend(sent) if thrown is None else agen.athrow(thrown))
        except StopAsyncIteration:
            return
        finally:
            _current.reset(token)
        thrown = None
        try:
            sent = yield item
        except GeneratorExit:
            token = _current.set(_current.get().merge(attribution))
            try:
                await agen.aclose()
            finally:
                _current.reset(token)
            raise
        except BaseException as exc:
            thrown = exc
