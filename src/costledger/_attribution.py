"""Who a call is for: user, team, project, feature, tags and free metadata, carried in contextvars.

``attribute(...)`` works as a context manager and as a decorator (sync and async functions,
generators and async generators: a generator's code sees the scope at each step, the code
that consumes it between steps does not). Because the state lives in a ``ContextVar``, it
follows asyncio tasks and threads that copy the context (``contextvars.copy_context().run``,
LangChain's executor), and never leaks between requests.

The variable holds a chain of frames, ``(attribution, owner, parent frame)``: the open scopes
of this context, innermost first. An ``attribute`` instance leaves its scope by restoring the
parent of its own innermost frame in the current context, so one instance (a module-level
``SEARCH = attribute(feature="search")``) can be entered by concurrent tasks and threads and
re-entered within one of them, at the cost of one ``ContextVar.set`` per enter and per exit.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import AsyncGeneratorType, GeneratorType, MappingProxyType, TracebackType
from typing import Any, TypeVar

from ._errors import short_repr as _short

__all__ = [
    "ATTRIBUTION_KEYS",
    "Attribution",
    "attribute",
    "check_attribution_keywords",
    "current_attribution",
]

ATTRIBUTION_KEYS: tuple[str, ...] = ("user", "team", "project", "feature")

_EMPTY_META: Mapping[str, Any] = MappingProxyType({})


def check_attribution_keywords(
    function: str, keywords: Mapping[str, Any], parameters: Iterable[str]
) -> None:
    """``TypeError`` for a keyword a function takes as attribution metadata
    (``**attribution``) that is surely a misspelt parameter: one close to a name of
    ``parameters`` or of the attribution keys (one slip: ``traker=``, ``modle=``, ``tag=``), or one
    whose value is a ``Tracker``. Taken as metadata, such a slip would skip a budget or
    record to another ledger, silently. Called once, where the function is set up."""
    from ._tracker import Tracker  # imported here: the tracker module imports this one

    names = [*parameters, *ATTRIBUTION_KEYS, "tags"]
    for key, value in keywords.items():
        if key in names:
            continue
        close = next((name for name in names if _one_slip(key, name)), None)
        if close is not None:
            raise TypeError(
                f"{function}() got an unexpected keyword argument {key!r}: did you mean "
                f"{close!r}? (keywords it does not take are attribution metadata; to "
                f"record metadata named {key!r}, pass metadata={{{key!r}: ...}})"
            )
        if isinstance(value, Tracker):
            advice = "; pass it as tracker=" if "tracker" in names else ""
            raise TypeError(
                f"{function}() got a Tracker as the keyword argument {key!r}, which it would "
                f"store as attribution metadata{advice}"
            )


def _metadata_of(keywords: dict[str, Any]) -> dict[str, Any]:
    """Metadata given as keywords, with a ``metadata={...}`` mapping's items among them (the
    way to give a name a function takes for a misspelt parameter; a keyword wins over the
    mapping's item of its name). A ``metadata=`` that is no mapping stays one item."""
    inner = keywords.get("metadata")
    if not isinstance(inner, Mapping):
        return keywords
    rest = {k: v for k, v in keywords.items() if k != "metadata"}
    return {**inner, **rest}


def _one_slip(key: str, name: str) -> bool:
    """``key`` is ``name`` with two neighbouring letters swapped (``modle``), or, for a key
    of five letters or more, one letter missing, added or changed (``traker``, ``provder``),
    or, for a shorter one, an ``s`` too many or too few (``tag``, ``logs``). Not ``trace``
    for ``tracker``, ``mode`` for ``model`` nor ``org`` for ``log``: names a host may well
    mean as metadata."""
    if key == name or abs(len(key) - len(name)) > 1:
        return False
    if len(key) == len(name):
        differ = [i for i, (a, b) in enumerate(zip(key, name, strict=True)) if a != b]
        if len(differ) == 1:
            return len(key) >= 5
        i = differ[0]
        return differ == [i, i + 1] and key[i] == name[i + 1] and key[i + 1] == name[i]
    if len(key) < 5:
        return key + "s" == name or key == name + "s"
    short, long = (key, name) if len(key) < len(name) else (name, key)
    i = next((i for i, (a, b) in enumerate(zip(short, long, strict=False)) if a != b), len(short))
    return short[i:] == long[i + 1 :]


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Attribution:
    """An immutable set of attribution values; ``merge`` lets the more specific side win."""

    user: str | None = None
    team: str | None = None
    project: str | None = None
    feature: str | None = None
    tags: tuple[str, ...] = ()
    # Left out of the hash (a mapping cannot be hashed; equal attributions have equal
    # names and tags all the same), still compared.
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_META, hash=False)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Attribution:
        """Build from loose keyword values: the four keys, ``tags``, everything else is metadata."""
        if not values:
            return EMPTY
        meta = _metadata_of(
            {k: v for k, v in values.items() if k not in ATTRIBUTION_KEYS and k != "tags"}
        )
        # Per-call attribution from an entry point (``start(attribution=...)``, the
        # decorator's ``attribution=`` callable): on the host's call path, so a value that
        # cannot be read is left out with a warning, never raised.
        return cls(
            user=_lenient_text("user", values.get("user")),
            team=_lenient_text("team", values.get("team")),
            project=_lenient_text("project", values.get("project")),
            feature=_lenient_text("feature", values.get("feature")),
            tags=_tags(values.get("tags"), strict=False),
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

# (attribution in force, the ``attribute`` instance whose scope set it or None for a
# decorated call or generator step, the frame it replaced or None at the root).
_Frame = tuple[Attribution, Any, Any]
_ROOT: _Frame = (EMPTY, None, None)

_current: ContextVar[_Frame] = ContextVar("costledger_attribution", default=_ROOT)


def _opt_str(value: Any) -> str | None:
    """A name as text: ``None``, a string, bytes decoded as UTF-8 (what redis-py and
    other byte-level clients return; an invalid sequence as U+FFFD), else ``str(value)``
    (a numeric, UUID or enum id)."""
    if value is None or value.__class__ is str:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _strict_text(name: str, value: Any) -> str | None:
    """``_opt_str`` for ``attribute()``'s names: a value without a text is a ``TypeError``
    naming the field (the host's own code, at the start of its block: the place to say
    so). An empty name is ``None``, as an empty tag is no tag (``team=""`` from an unset
    environment variable): "" and no name would be two report groups that print alike."""
    try:
        return _opt_str(value) or None
    except Exception as exc:
        raise TypeError(
            f"attribute() {name} must be text or have one, got {type(value).__name__} "
            f"{_short(value)} ({type(exc).__name__}: {exc})"
        ) from exc


def _lenient_text(name: str, value: Any) -> str | None:
    """``_opt_str`` for a name on a call's path: a value without a text is left out, with
    a warning; an empty one is ``None`` (``_strict_text``)."""
    try:
        return _opt_str(value) or None
    except Exception as exc:
        _warn(
            name,
            f"attribution {name} {type(value).__name__} {_short(value)} has no text "
            f"({type(exc).__name__}: {exc}); left out",
        )
        return None


def _tags(value: Any, *, strict: bool) -> tuple[str, ...]:
    """Tags as text: ``None`` is none, a string or bytes is one tag (an empty one: none),
    any other iterable gives one tag per item (bytes decoded, anything else ``str()``, an
    empty one left out).
    Anything else (a number, an object): ``TypeError`` naming ``tags`` when ``strict``,
    else no tags and a warning; an item without a text likewise (not strict: that item
    left out)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        one = _opt_str(value)
        return (one,) if one else ()
    try:
        items = list(value)
    except Exception as exc:
        if strict:
            raise TypeError(
                "attribute() tags must be a string, bytes or an iterable of them, got "
                f"{type(value).__name__} {_short(value)}"
            ) from exc
        _warn(
            "tags",
            "attribution tags must be a string, bytes or an iterable of them, got "
            f"{type(value).__name__} {_short(value)}; left out",
        )
        return ()
    tags: list[str] = []
    for item in items:
        try:
            text = _opt_str(item)
        except Exception as exc:
            if strict:
                raise TypeError(
                    f"attribute() tags: the tag {type(item).__name__} {_short(item)} has no "
                    f"text ({type(exc).__name__}: {exc})"
                ) from exc
            _warn(
                "tag",
                f"attribution tags: the tag {type(item).__name__} {_short(item)} has no text "
                f"({type(exc).__name__}: {exc}); left out",
            )
            continue
        if text is None:
            tags.append("None")  # as str(None) always gave
        elif text:
            tags.append(text)
    return tuple(tags)


def _warn(name: str, message: str) -> None:
    """A warning on the ``costledger`` logger, at most one a minute per field; never raises."""
    try:
        from ._logging import report_failure

        report_failure(f"attribution.{name}", TypeError(message))
    except Exception:
        pass


def current_attribution() -> Attribution:
    """The attribution in force in this context (what ``attribute`` scopes have set)."""
    return _current.get()[0]


class attribute:
    """Attribute every call inside a scope, as a context manager or a decorator.

    >>> with attribute(user="u-42", feature="search", tags=["beta"]):
    ...     chain.invoke(question)

    Nested scopes merge: the inner one wins per key and tags accumulate.
    """

    __slots__ = ("_attribution",)

    def __init__(
        self,
        *,
        user: object = None,
        team: object = None,
        project: object = None,
        feature: object = None,
        tags: Iterable[object] | str | bytes | None = (),
        **metadata: Any,
    ) -> None:
        # Coerced as ``Attribution.from_mapping`` does (a numeric, UUID or enum id from the
        # app's database is common): every consumer (guards' keys, rows, log lines) takes
        # the names as text. Metadata is kept as given, as everywhere else.
        # Bytes (what redis-py returns) are decoded as UTF-8. A value without a text, or
        # ``tags`` that are neither text nor an iterable of it, is a ``TypeError`` naming
        # the field, raised here, in the host's own code at the start of its block.
        self._attribution = Attribution(
            user=_strict_text("user", user),
            team=_strict_text("team", team),
            project=_strict_text("project", project),
            feature=_strict_text("feature", feature),
            tags=_tags(tags, strict=True),
            metadata=MappingProxyType(_metadata_of(metadata)) if metadata else _EMPTY_META,
        )

    def __enter__(self) -> Attribution:
        top = _current.get()
        merged = top[0].merge(self._attribution)
        _current.set((merged, self, top))
        return merged

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The scope state is per context, never on the instance: each task or thread that
        # entered this instance leaves its own innermost scope of it.
        top = _current.get()
        if top[1] is self:  # the usual case: the innermost scope is this one
            _current.set(top[2])
            return
        # Left out of order (a generator's ``with`` interleaved with its consumer's): the
        # scopes opened since go with it, as resetting a token would do. The search stops
        # at a decorated call or generator step (owner None): a scope opened beyond it was
        # already closed by that call's or step's own reset. Not found (a context that did
        # not enter this instance, or a scope already closed): nothing to restore here, and
        # never an error for the host.
        frame = top
        while frame[1] is not None:
            frame = frame[2]
            if frame[1] is self:
                _current.set(frame[2])
                return

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
                # A token per call: the decorated function may run concurrently in many
                # tasks or threads.
                top = _current.get()
                token = _current.set((top[0].merge(self._attribution), None, top))
                try:
                    return await func(*args, **kwargs)
                finally:
                    _current.reset(token)

            return async_wrapper  # type: ignore[return-value]

        attribution = self._attribution

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            top = _current.get()
            token = _current.set((top[0].merge(attribution), None, top))
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
# so the generator's code sees it and the consumer's code between steps does not. Scopes the
# body opened and left open at a ``yield`` (a ``with attribute(...)`` around it) are kept with
# the generator and set again above its own at the next step, merged with what is in force
# then, so the body sees them until it leaves them.


def _push(attribution: Attribution, held: tuple[_Frame, ...]) -> tuple[Token[_Frame], _Frame]:
    top = _current.get()
    pushed: _Frame = (top[0].merge(attribution), None, top)
    token = _current.set(pushed)
    if held:
        _restore(pushed, held)
    return token, pushed


def _restore(pushed: _Frame, held: tuple[_Frame, ...]) -> None:
    """Set the frames the body held open again above its step's own, each merged anew."""
    frame = pushed
    for attr, owner, _ in held:
        if isinstance(owner, attribute):
            attr = frame[0].merge(owner._attribution)
        frame = (attr, owner, frame)
    _current.set(frame)


def _held(pushed: _Frame) -> tuple[_Frame, ...]:
    """The frames the body left above its step's own, outermost first (usually none)."""
    frame = _current.get()
    if frame is pushed:
        return ()
    held = []
    while frame is not pushed:
        if frame is None:  # the step's frame is gone (reset by the body): nothing to keep
            return ()
        held.append(frame)
        frame = frame[2]
    held.reverse()
    return tuple(held)


def _scoped_gen(
    gen: Generator[Any, Any, Any], attribution: Attribution
) -> Generator[Any, Any, Any]:
    sent: Any = None
    thrown: BaseException | None = None
    held: tuple[_Frame, ...] = ()
    get, set_, reset = _current.get, _current.set, _current.reset
    while True:
        top = get()
        pushed: _Frame = (top[0].merge(attribution), None, top)
        token = set_(pushed)
        if held:
            _restore(pushed, held)
        try:
            item = gen.send(sent) if thrown is None else gen.throw(thrown)
        except StopIteration as stop:
            return stop.value
        finally:
            held = () if get() is pushed else _held(pushed)
            reset(token)
        thrown = None
        try:
            sent = yield item
        except GeneratorExit:
            token, _ = _push(attribution, held)
            try:
                gen.close()
            finally:
                reset(token)
            raise
        except BaseException as exc:  # forwarded, as ``yield from`` does
            thrown = exc


async def _scoped_agen(
    agen: AsyncGenerator[Any, Any], attribution: Attribution
) -> AsyncGenerator[Any, Any]:
    sent: Any = None
    thrown: BaseException | None = None
    held: tuple[_Frame, ...] = ()
    get, set_, reset = _current.get, _current.set, _current.reset
    while True:
        top = get()
        pushed: _Frame = (top[0].merge(attribution), None, top)
        token = set_(pushed)
        if held:
            _restore(pushed, held)
        try:
            item = await (agen.asend(sent) if thrown is None else agen.athrow(thrown))
        except StopAsyncIteration:
            return
        finally:
            held = () if get() is pushed else _held(pushed)
            reset(token)
        thrown = None
        try:
            sent = yield item
        except GeneratorExit:
            token, _ = _push(attribution, held)
            try:
                await agen.aclose()
            finally:
                reset(token)
            raise
        except BaseException as exc:
            thrown = exc
