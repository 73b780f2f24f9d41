"""The LangChain entry point: one callback handler that turns model runs into Tracker calls.

LangChain tells a handler three things about a model call: it started
(``on_chat_model_start`` / ``on_llm_start``, with metadata and tags), it
streamed a chunk (``on_llm_new_token``, or ``on_stream_event`` per protocol event on
the ``stream_events(version="v3")`` path), and it ended (``on_llm_end`` /
``on_llm_error``, with neither metadata nor tags). The handler keeps what the
start said in a bounded map keyed by run id, and closes the Tracker call at the
end. Everything else (usage reading, pricing, guards, storage) is the Tracker's.

The run map is shared by every handler instance in the process, so two handlers
in one run tree (the same one attached at two levels, or two instances) still
record each model call once: the first to see a run owns it; the others only
add their totals to it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import operator
import sys
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook

from costledger import GuardRefusal, Tracker, Usage, UsageEvent, attribute, get_tracker
from costledger._attribution import _tags, check_attribution_keywords
from costledger._errors import short_repr
from costledger._extract import LANGCHAIN_STAND_IN_IDS, price_context_of
from costledger._streams import add_usage as _add_usage
from costledger._streams import is_cumulative as _is_cumulative
from costledger._tracker import check_tracker, defer, drain_events

if TYPE_CHECKING:
    from types import CodeType, FrameType

    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

    from costledger._events import CallStatus
    from costledger._tracker import Call

__all__ = [
    "MAX_IN_FLIGHT",
    "CostLedgerCallbackHandler",
    "CostTotals",
    "tracking",
]

MAX_IN_FLIGHT = 10_000
"""Model runs the handler remembers between start and end; past it the oldest is dropped."""

# Tags LangChain adds to child runs on its own (sequence steps, map keys, branches, LangGraph
# steps, LangSmith flags, with_retry's attempt number). They describe the graph, not who the
# call is for.
_INTERNAL_TAG_PREFIXES = (
    "seq:step:",
    "map:key:",
    "branch:",
    "condition:",
    "graph:step:",
    "langsmith:",
    "retry:attempt:",
)
_PLAIN_KEYS = frozenset(("user", "team", "project", "feature", "user_id"))
_PREFIX = "costledger_"
_PREFIX_LEN = len(_PREFIX)
# metadata key sets seen (in order) -> whether none of them can carry attribution
_KEYS_WITHOUT_ATTRIBUTION: dict[tuple[Any, ...], bool] = {}
_MAX_TOKEN_PARAMS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Answers generated per call: OpenAI-style ``n`` (chat and completions; Groq, Fireworks,
# DeepSeek... reuse BaseChatOpenAI), completions' ``best_of`` (generated and billed, ``n``
# of them returned), Google's ``candidate_count`` (ChatGoogleGenerativeAI's ``n``).
_CHOICE_PARAMS = ("n", "best_of", "candidate_count")
# Bound by bind_tools / with_structured_output and sent (and billed) as input beside the
# messages, in the provider's own format by the time LangChain reports invocation_params.
_TOOL_PARAMS = ("tools", "functions", "tool_choice", "function_call", "response_format")
_MODEL_PARAMS = ("model", "model_name", "model_id", "deployment_name")
_RESPONSE_MODEL_KEYS = ("model_name", "model", "model_id")
_CANCELLED = (GeneratorExit, asyncio.CancelledError, KeyboardInterrupt)
_NO_USAGE = Usage()
_get_running_loop = asyncio._get_running_loop  # C, and None outside a loop (no exception)
_current_task = asyncio.current_task


class CostTotals:
    """A live, exact running total of the model calls seen in a scope.

    Like the object ``get_openai_callback`` yields, but for every provider and in
    ``Decimal``. Updated as each call ends; safe to read from any thread.

    ``total_cost`` adds up priced calls only; calls no price book knows are
    counted in ``unpriced`` (never as $0). Tokens of LangChain cache hits are not
    added (they were not billed); the hits are counted in ``cache_hits``.
    ``events`` keeps the most recent ``max_events`` events; the counts and money
    cover every call however many there were.
    """

    def __init__(self, *, max_events: int | None = 10_000) -> None:
        self._lock = threading.Lock()
        self._events: deque[UsageEvent] = deque(
            maxlen=_checked_max_events(max_events, "CostTotals()")
        )
        self._total_cost = Decimal(0)
        self._input_tokens = 0
        self._output_tokens = 0
        self._cache_read_tokens = 0
        self._cache_write_tokens = 0
        self._reasoning_tokens = 0
        self._requests = 0
        self._errors = 0
        self._cache_hits = 0
        self._unpriced = 0
        self._by_model: dict[str | None, Decimal] = {}

    def add(self, event: UsageEvent) -> None:
        """Count one finished call (the handler does this; tests and tools may too)."""
        usage = event.usage
        cost = event.cost.total
        model = event.response_model or event.model
        with self._lock:
            self._events.append(event)
            self._requests += 1
            if event.status != "ok":
                self._errors += 1
            if event.cache_hit:
                self._cache_hits += 1
            else:
                self._input_tokens += usage.input_tokens
                self._output_tokens += usage.output_tokens
                self._cache_read_tokens += usage.cache_read_tokens
                self._cache_write_tokens += usage.cache_write_tokens
                self._reasoning_tokens += usage.reasoning_tokens
            if cost is None:
                if event.status == "ok" or event.usage.total_tokens:
                    self._unpriced += 1
            else:
                self._total_cost += cost
                self._by_model[model] = self._by_model.get(model, Decimal(0)) + cost

    # Every read first lets calls finished in the background land, so a total read right
    # after a call includes it (not their guards' settles: a store's round trips, which a
    # total does not need and an event loop reading it would wait on).
    @property
    def total_cost(self) -> Decimal:
        drain_events()
        return self._total_cost

    @property
    def input_tokens(self) -> int:
        drain_events()
        return self._input_tokens

    @property
    def output_tokens(self) -> int:
        drain_events()
        return self._output_tokens

    @property
    def cache_read_tokens(self) -> int:
        drain_events()
        return self._cache_read_tokens

    @property
    def cache_write_tokens(self) -> int:
        drain_events()
        return self._cache_write_tokens

    @property
    def reasoning_tokens(self) -> int:
        drain_events()
        return self._reasoning_tokens

    @property
    def requests(self) -> int:
        drain_events()
        return self._requests

    @property
    def errors(self) -> int:
        drain_events()
        return self._errors

    @property
    def cache_hits(self) -> int:
        drain_events()
        return self._cache_hits

    @property
    def unpriced(self) -> int:
        drain_events()
        return self._unpriced

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def events(self) -> list[UsageEvent]:
        """The recorded events, oldest first (a copy)."""
        drain_events()
        with self._lock:
            return list(self._events)

    def by_model(self) -> dict[str | None, Decimal]:
        """Money per model (the dated snapshot the provider answered with, when it said)."""
        drain_events()
        with self._lock:
            return dict(self._by_model)

    def __repr__(self) -> str:
        drain_events()
        return self._text()

    def _text(self) -> str:
        """The figures as they stand, without waiting for calls still being finished."""
        with self._lock:
            return (
                f"CostTotals(total_cost={self._total_cost!s}, requests={self._requests}, "
                f"input_tokens={self._input_tokens}, output_tokens={self._output_tokens}, "
                f"cache_hits={self._cache_hits}, errors={self._errors}, "
                f"unpriced={self._unpriced})"
            )


class _Run:
    """What ``on_*_start`` learnt about a model run, kept until its end."""

    __slots__ = (
        "batched",
        "call",
        "last_chunk",
        "owner",
        "sinks",
        "stream_usages",
        "streamed",
        "tracker",
    )

    def __init__(
        self, call: Call, tracker: Tracker, sinks: tuple[CostTotals, ...], batched: bool = False
    ) -> None:
        self.call = call
        self.tracker = tracker
        self.sinks = sinks
        # One prompt of a completion LLM's batch (BaseLLM.generate with several prompts).
        self.batched = batched
        self.streamed = False
        self.last_chunk: object = None
        self.stream_usages: list[Mapping[str, Any]] | None = None
        # The task whose BaseChatModel.agenerate started the run (async only): see _TaskRuns.
        self.owner: _TaskRuns | None = None

    def add_to_sinks(self, event: UsageEvent) -> None:
        for sink in self.sinks:
            sink.add(event)


class _RunMap:
    """Model runs in flight, by LangChain run id, bounded.

    Keyed by the run id's integer: ``UUID.__hash__`` is Python code, and this map is
    touched several times per call. Adding and popping a run are single ``OrderedDict``
    operations on an int key, done in C and so atomic under the GIL: no lock on the
    call path. The lock only serializes the rare multi-step work (another handler
    joining a run, evicting the oldest runs past ``max_size``).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._runs: OrderedDict[int, _Run] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: UUID) -> _Run | None:
        return self._runs.get(run_id.int)

    def join(self, run_id: UUID, sinks: tuple[CostTotals, ...]) -> bool:
        """Add ``sinks`` to a run another handler already owns; False if no one does."""
        with self._lock:
            run = self._runs.get(run_id.int)
            if run is None:
                return False
            missing = tuple(s for s in sinks if s not in run.sinks)
            if missing:
                run.sinks = run.sinks + missing
            return True

    def add(self, run_id: UUID, run: _Run) -> list[_Run]:
        """Remember ``run``; returns the runs pushed out (or ``run`` itself if already owned)."""
        runs = self._runs
        if runs.setdefault(run_id.int, run) is not run:
            return [run]
        if len(runs) <= self.max_size:
            return _NONE_EVICTED
        evicted: list[_Run] = []
        with self._lock:
            while len(runs) > self.max_size:
                try:
                    evicted.append(runs.popitem(last=False)[1])
                except KeyError:  # emptied meanwhile by the runs' own ends
                    break
        return evicted

    def pop(self, run_id: UUID) -> _Run | None:
        return self._runs.pop(run_id.int, None)

    def __contains__(self, run_id: UUID) -> bool:
        # Lock-free: a dict membership test is atomic, and a hit is re-checked under the lock.
        return run_id.int in self._runs

    def __len__(self) -> int:
        return len(self._runs)


_NONE_EVICTED: list[_Run] = []  # never appended to: returned when nothing was pushed out
_runs = _RunMap(MAX_IN_FLIGHT)


# -- runs a cancelled ainvoke leaves open -------------------------------------------------------
class _TaskRuns:
    """The runs ``BaseChatModel.agenerate`` (behind ``ainvoke``, ``abatch``) started in one
    asyncio task and has not ended; or, with guards, the runs a sync ``generate``
    (``BaseChatModel``'s, ``BaseLLM``'s behind ``llm.batch``) started in one thread
    (``ref`` is ``None``: see ``_sync_owner``).

    ``agenerate`` ends its runs itself, in that task, after ``await asyncio.gather(...)``
    outside any ``try``: a cancellation delivered there (``asyncio.wait_for``,
    ``asyncio.timeout``, ``task.cancel()``, Ctrl-C under ``asyncio.run``) leaves its runs
    with neither ``on_llm_end`` nor ``on_llm_error``. Such a run can no longer end once
    its ``agenerate`` frame is gone, which is certain when the task is done (a
    done-callback), was destroyed unfinished (a weakref callback), or starts another run
    while that frame is not on its stack: a task runs one stack at a time, and an
    ``agenerate`` still awaiting its model would be on it (the timeout was caught in that
    same task: ``asyncio.timeout``, ``wait_for`` on 3.12+). It is then recorded
    ``cancelled`` and its guard reservations released.

    Streams are not kept here: ``astream`` ends its run in a ``try`` of its own, and a v3
    stream ends in a LangChain task of its own, after the task that started it.

    Only the task's own event loop thread touches an entry while the task lives (the
    handler runs inline there), then only the thread that finds it gone: single dict
    operations, no lock (nothing here may block a GC callback).
    """

    __slots__ = ("ref", "runs")

    def __init__(self, ref: weakref.ref[asyncio.Task[Any]] | None) -> None:
        self.ref = ref
        # the run id's int -> (the run id, id() of the agenerate frame that started it)
        self.runs: dict[int, tuple[UUID, int]] = {}

    def task_done(self, task: asyncio.Task[Any]) -> None:
        """The task finished: no frame of it is left to end its runs."""
        try:
            if self.ref is not None:
                _task_runs.pop(self.ref, None)
            if self.runs:
                _end_abandoned(self, list(self.runs.values()))
        except Exception as exc:
            _report("langchain.task_done", exc)


# weakref(task) -> its entry; a weakref so a task destroyed unfinished is not kept alive
_task_runs: dict[weakref.ref[asyncio.Task[Any]], _TaskRuns] = {}
# Entries of tasks destroyed unfinished (a weakref callback, maybe inside the GC: it only
# appends), ended at the next async run's start.
_tasks_gone: deque[weakref.ref[asyncio.Task[Any]]] = deque()
# How far above the handler ``agenerate`` may be (LangChain's callback manager calls in
# between, and handler subclasses that override on_chat_model_start).
_OWNER_DEPTH = 16


@functools.cache
def _agenerate_code() -> CodeType | None:
    """The code of ``BaseChatModel.agenerate``, unwrapped (instrumentation may wrap it)."""
    try:
        from langchain_core.language_models.chat_models import BaseChatModel

        code: CodeType = inspect.unwrap(BaseChatModel.agenerate).__code__
        return code
    except Exception as exc:  # a langchain-core without it: runs end as before
        _report("langchain.agenerate_code", exc)
        return None


def _async_owner(task: asyncio.Task[Any]) -> tuple[_TaskRuns | None, int]:
    """A run starts in ``task``: end the task's runs that can no longer end (before the
    new run's guards count their reservations), and return the task's entry and the id
    of the ``agenerate`` frame starting this run, or ``(None, 0)`` when something else
    starts it (a stream, a sync call, a LangChain path without ``agenerate``)."""
    if _tasks_gone:
        _end_gone_tasks()
    entry = _task_runs.get(weakref.ref(task))
    open_runs = entry.runs if entry is not None else None
    on_stack: set[int] | None = set() if open_runs else None
    code = _agenerate_code()
    owner_frame = 0
    frame: FrameType | None = sys._getframe(1)
    depth = 0
    while frame is not None:
        if on_stack is not None:
            on_stack.add(id(frame))
        elif depth > _OWNER_DEPTH:
            break
        if not owner_frame and frame.f_code is code:
            owner_frame = id(frame)
            if on_stack is None:
                break
        frame = frame.f_back
        depth += 1
    if entry is not None and on_stack is not None:
        # A frame id seen on the stack that belongs to a new frame at a dead one's
        # address keeps that run for later (the task's end): never ends a live one.
        stale = [item for item in entry.runs.values() if item[1] not in on_stack]
        if stale:
            _end_abandoned(entry, stale)
    if not owner_frame:
        return None, 0
    if entry is None:
        ref = weakref.ref(task, _tasks_gone.append)
        entry = _TaskRuns(ref)
        task.add_done_callback(entry.task_done)
        _task_runs[ref] = entry
    return entry, owner_frame


@functools.cache
def _generate_codes() -> tuple[CodeType, ...]:
    """The code of the sync ``generate`` of ``BaseChatModel`` and of ``BaseLLM``, which
    start every prompt's run before they call the model, unwrapped."""
    codes: list[CodeType] = []
    try:
        from langchain_core.language_models import BaseChatModel, BaseLLM

        for cls in (BaseChatModel, BaseLLM):
            codes.append(inspect.unwrap(cls.generate).__code__)
    except Exception as exc:  # a langchain-core without them: batches end as before
        _report("langchain.generate_code", exc)
    return tuple(codes)


_thread_runs = threading.local()


def _sync_owner() -> tuple[_TaskRuns | None, int]:
    """The thread's entry and the id of the sync ``generate`` frame starting this run, or
    ``(None, 0)`` when something else starts it (``stream``, a path without ``generate``).

    Asked only when the tracker has guards: what it serves is releasing reservations
    (``_refused``, ``_release_unsent``). A thread runs one stack, so the runs of one
    ``generate`` call are those carrying its frame's id until they end."""
    codes = _generate_codes()
    frame: FrameType | None = sys._getframe(2)
    depth = 0
    while frame is not None and depth <= _OWNER_DEPTH:
        if frame.f_code in codes:
            entry: _TaskRuns | None = getattr(_thread_runs, "entry", None)
            if entry is None:
                entry = _thread_runs.entry = _TaskRuns(None)
            return entry, id(frame)
        frame = frame.f_back
        depth += 1
    return None, 0


def _release_unsent(owner: _TaskRuns, run: _Run, frame_id: int) -> None:
    """A prompt of a sync chat ``generate`` (started by frame ``frame_id``) failed:
    ``generate`` calls its prompts in turn and ends only the failed one, so the prompts
    after it, never sent, are released. (``BaseLLM.generate`` sends its prompts together
    and ends each: ``run.batched``; an async owner's runs end on their own.)"""
    if owner.ref is None and not run.batched and owner.runs:
        _release_batch(owner, frame_id)


def _end_gone_tasks() -> None:
    """End the open runs of tasks destroyed unfinished (queued by their weakref's callback)."""
    while _tasks_gone:
        gone = _task_runs.pop(_tasks_gone.popleft(), None)
        if gone is not None and gone.runs:
            _end_abandoned(gone, list(gone.runs.values()))


def _end_abandoned(entry: _TaskRuns, items: Iterable[tuple[UUID, int]]) -> None:
    """Record runs whose ``agenerate`` was cancelled as ``cancelled`` (their latency runs
    until this noticed it), once: a run LangChain ended meanwhile is no longer in the map."""
    for run_id, _frame in items:
        try:
            entry.runs.pop(run_id.int, None)
            run = _runs.pop(run_id)
            if run is not None:
                run.owner = None
                _end(run, None, "cancelled", asyncio.CancelledError())
        except Exception as exc:
            _report("langchain.cancelled_run", exc)


# _begin's answer: tracker, owner task, owner frame, model, provider, attribution, prompt
# text, output limit, choices
_Begun = tuple[
    Tracker,
    _TaskRuns | None,
    int,
    str | None,
    str | None,
    Any,
    str | None,
    int | None,
    int,
]


def _refused(owner: _TaskRuns | None, owner_frame: int, background: bool = False) -> None:
    """A guard refused a run: the other prompts its ``agenerate`` started are released
    (``background``, from an async start: off the event loop)."""
    if owner is not None:
        try:
            _release_batch(owner, owner_frame, background)
        except Exception as exc:  # the refusal must reach the host unchanged
            _report("langchain.release_batch", exc)


@functools.cache
def _ahandle_code() -> CodeType | None:
    """The code of LangChain's async dispatch of one callback to one handler, which awaits
    a coroutine function it looks up (``None``: a langchain-core without it)."""
    try:
        from langchain_core.callbacks import manager

        code: CodeType = inspect.unwrap(manager._ahandle_event_for_handler).__code__
        return code
    except Exception:
        return None


def _async_dispatch(frame: FrameType | None) -> bool:
    """Whether ``frame`` (the one looking a callback up) is LangChain's async dispatch."""
    return frame is not None and frame.f_code is _ahandle_code() is not None


def _release_batch(entry: _TaskRuns, owner_frame: int, background: bool = False) -> None:
    """A guard refused one prompt of an ``agenerate`` batch: the prompts it started before
    are never sent, so they are released and not recorded (as a refused call is not).
    ``background`` (an async start): a Redis or SQL store's reservations are given back
    on costledger's settle threads, never on the event loop (``Tracker.cancel``)."""
    for key, (run_id, frame_id) in list(entry.runs.items()):
        if frame_id == owner_frame:
            del entry.runs[key]
            run = _runs.pop(run_id)
            if run is not None:
                run.owner = None
                run.tracker.cancel(run.call, background=background)


class _StartCallback:
    """A run's start callback (``on_chat_model_start``, ``on_llm_start``), looked up by
    LangChain by name: the coroutine function ``async_name`` when the look-up is LangChain's
    async dispatcher's and the handler's tracker has guards, else the method ``sync_name``.
    Set on an instance (``mock.patch.object``), what was set."""

    def __init__(self, sync_name: str, async_name: str) -> None:
        self.sync_name = sync_name
        self.async_name = async_name
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, handler: Any, owner: type | None = None) -> Any:
        if handler is None:
            return self
        replaced = handler.__dict__.get(self.name)
        if replaced is not None:
            return replaced
        loop_runs = _get_running_loop() is not None
        if loop_runs and _async_dispatch(sys._getframe(1)) and handler._guarded():
            return getattr(handler, self.async_name)
        return getattr(handler, self.sync_name)

    def __set__(self, handler: Any, value: Callable[..., Any]) -> None:
        handler.__dict__[self.name] = value

    def __delete__(self, handler: Any) -> None:
        handler.__dict__.pop(self.name, None)


class CostLedgerCallbackHandler(BaseCallbackHandler):
    """Record the exact cost of every LangChain model call, once, through a costledger Tracker.

    >>> handler = CostLedgerCallbackHandler()
    >>> model.invoke("Hi", config={"callbacks": [handler]})
    >>> handler.totals.total_cost
    Decimal('0.00027')

    Attach it anywhere (a ``config``, a model's ``callbacks=``, ``with_config``)
    or use ``tracking()``. ``handler.totals`` counts everything the handler saw; it
    keeps the last ``max_events`` events themselves (none by default: a handler often
    lives as long as the process, and the ledger has them all). ``tracker`` defaults
    to the process default Tracker (``costledger.configure``), looked up at each call.

    Guards run before the model is called: a ``BudgetExceeded`` or ``RateLimited``
    stops the call. Any other failure of tracking is logged and swallowed. When
    several handlers see one run, the first records it with its Tracker; the others
    only add it to their totals.
    """

    # LangChain re-raises any exception of a handler with raise_error: only a guard's
    # refusal may leave this class, every other path catches and reports.
    raise_error = True
    # Called in the caller's thread or event loop, never through an executor: the
    # handler does only small locked dict work, and the ledger write is a queue put.
    run_inline = True

    def __init__(self, tracker: Tracker | None = None, *, max_events: int | None = 0) -> None:
        self._tracker = check_tracker("CostLedgerCallbackHandler()", tracker)
        self.totals = CostTotals(
            max_events=_checked_max_events(max_events, "CostLedgerCallbackHandler()")
        )
        self._sinks: tuple[CostTotals, ...] = (self.totals,)

    @property
    def tracker(self) -> Tracker:
        """The Tracker calls are recorded with (the process default unless one was given)."""
        return self._tracker if self._tracker is not None else get_tracker()

    def __repr__(self) -> str:
        # Never waits for the background worker: LangChain takes the repr of a model's
        # callbacks when it serializes the model (its first call), on the caller's thread.
        return f"CostLedgerCallbackHandler(totals={self.totals._text()})"

    # Events the handler has no use for: LangChain skips calling them at all.
    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    # -- start --------------------------------------------------------------------------------
    # LangChain looks each callback up by name. In an async run with guards, the lookup
    # made by LangChain's async dispatcher gets a coroutine function, which it awaits: the
    # guards then run through ``Tracker.astart``, whose store round trips (Redis, SQL) and
    # a budget's first reservation of a period (a ledger read) run off the event loop.
    # Any other lookup (a sync run, which would swallow a refusal raised from a coroutine)
    # gets the plain method.
    on_chat_model_start = _StartCallback("_on_chat_model_start", "_aon_chat_model_start")
    on_llm_start = _StartCallback("_on_llm_start", "_aon_llm_start")

    def _guarded(self) -> bool:
        # in the callback's look-up, where LangChain re-raises what this handler raises
        try:
            tracker = self._tracker if self._tracker is not None else get_tracker()
            return bool(tracker.has_guards)
        except Exception as exc:  # the sync start reports it, and records the call
            _report("langchain.guarded", exc)
            return False

    def _on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start(run_id, parent_run_id, tags, metadata, kwargs, messages, None)
        except GuardRefusal:
            raise
        except Exception as exc:
            _report("langchain.on_chat_model_start", exc)

    async def _aon_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            await self._astart(run_id, parent_run_id, tags, metadata, kwargs, messages, None)
        except GuardRefusal:
            raise
        except Exception as exc:
            _report("langchain.on_chat_model_start", exc)

    def _on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start(run_id, parent_run_id, tags, metadata, kwargs, None, prompts)
        except GuardRefusal:
            raise
        except Exception as exc:
            _report("langchain.on_llm_start", exc)

    async def _aon_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            await self._astart(run_id, parent_run_id, tags, metadata, kwargs, None, prompts)
        except GuardRefusal:
            raise
        except Exception as exc:
            _report("langchain.on_llm_start", exc)

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
        messages: list[list[BaseMessage]] | None,
        prompts: list[str] | None,
    ) -> None:
        begun = self._begin(run_id, tags, metadata, kwargs, messages, prompts)
        if begun is None:
            return  # another handler in this run tree owns the call
        tracker, owner, owner_frame, model, provider, attribution, prompt, limit, n = begun
        try:
            call = tracker.start(
                source="langchain",
                model=model,
                provider=provider,
                attribution=attribution,
                run_id=str(run_id),
                parent_run_id=None if parent_run_id is None else str(parent_run_id),
                prompt_text=prompt,
                max_output_tokens=limit,
                choices=n,
            )
        except GuardRefusal:
            _refused(owner, owner_frame)
            raise
        self._register(run_id, call, tracker, owner, owner_frame, kwargs, prompts)

    async def _astart(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
        messages: list[list[BaseMessage]] | None,
        prompts: list[str] | None,
    ) -> None:
        """``_start`` with the guards awaited (``Tracker.astart``)."""
        begun = self._begin(run_id, tags, metadata, kwargs, messages, prompts)
        if begun is None:
            return
        tracker, owner, owner_frame, model, provider, attribution, prompt, limit, n = begun
        try:
            call = await tracker.astart(
                source="langchain",
                model=model,
                provider=provider,
                attribution=attribution,
                run_id=str(run_id),
                parent_run_id=None if parent_run_id is None else str(parent_run_id),
                prompt_text=prompt,
                max_output_tokens=limit,
                choices=n,
            )
        except GuardRefusal:
            _refused(owner, owner_frame, background=True)
            raise
        self._register(run_id, call, tracker, owner, owner_frame, kwargs, prompts)

    def _begin(
        self,
        run_id: UUID,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
        messages: list[list[BaseMessage]] | None,
        prompts: list[str] | None,
    ) -> _Begun | None:
        """What a run's start needs before the guards: the tracker, the task and
        ``agenerate`` frame that started it (async), and ``Tracker.start``'s model,
        provider, attribution, prompt text, output limit and choices; ``None`` when
        another handler in this run tree owns the call."""
        if run_id in _runs and _runs.join(run_id, self._sinks):
            return None
        owner: _TaskRuns | None = None
        owner_frame = 0
        loop = _get_running_loop()
        if loop is not None:  # one C call on the sync path, which needs nothing more
            try:
                task = _current_task(loop)
                if task is not None:
                    owner, owner_frame = _async_owner(task)
            except Exception as exc:  # an odd task type: the call is still recorded
                _report("langchain.task_runs", exc)
        elif _tasks_gone:  # a task destroyed unfinished, its loop gone: no async start to come
            try:
                _end_gone_tasks()
            except Exception as exc:
                _report("langchain.task_runs", exc)
        tracker = self._tracker if self._tracker is not None else get_tracker()
        if owner is None and tracker.has_guards:
            try:
                owner, owner_frame = _sync_owner()
            except Exception as exc:
                _report("langchain.sync_owner", exc)
        metadata = metadata or {}
        params: Mapping[str, Any] = kwargs.get("invocation_params") or {}
        model = metadata.get("ls_model_name") or _first_str(params, _MODEL_PARAMS)
        provider = metadata.get("ls_provider")
        prompt_text: str | None = None
        max_output_tokens: int | None = None
        choices = 1
        if tracker.has_guards:
            prompt_text = _prompt_text(messages, prompts, params)
            max_output_tokens = _max_output_tokens(params, metadata)
            from costledger._guards._estimate import requested_choices  # loaded: guards

            choices = requested_choices(params, _CHOICE_PARAMS)
        try:
            attribution = _attribution(metadata, tags)
        except Exception as exc:  # the call is still guarded and recorded, unattributed
            _report("langchain.attribution", exc)
            attribution = None
        return (
            tracker,
            owner,
            owner_frame,
            model if isinstance(model, str) else None,
            provider if isinstance(provider, str) else None,
            attribution,
            prompt_text,
            max_output_tokens,
            choices,
        )

    def _register(
        self,
        run_id: UUID,
        call: Call,
        tracker: Tracker,
        owner: _TaskRuns | None,
        owner_frame: int,
        kwargs: dict[str, Any],
        prompts: list[str] | None,
    ) -> None:
        """Keep a started run until its end."""
        batch_size = kwargs.get("batch_size")
        batched = prompts is not None and isinstance(batch_size, int) and batch_size > 1
        run = _Run(call, tracker, self._sinks, batched)
        for dropped in _runs.add(run_id, run):
            if dropped is run:  # a racing duplicate start: keep the first
                tracker.cancel(call)
                _runs.join(run_id, self._sinks)
                owner = None
                continue
            # A run that never ended (a framework bug or a lost callback): free its
            # guard reservations and say so, rather than grow without bound.
            dropped.tracker.cancel(dropped.call)
            _report(
                "langchain.run_map",
                OverflowError(
                    f"more than {_runs.max_size} LangChain model runs in flight; "
                    f"dropped the oldest (run_id={dropped.call.run_id}) without recording it"
                ),
                model=dropped.call.model,
            )
        if owner is not None:
            run.owner = owner
            owner.runs[run_id.int] = (run_id, owner_frame)

    # -- stream -------------------------------------------------------------------------------
    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            run = _runs.get(run_id)
            if run is None:
                return
            run.streamed = True
            # Models whose _stream reports each chunk themselves get it reported twice
            # (once more by BaseChatModel.stream): the same chunk object, seen once.
            if chunk is None or chunk is run.last_chunk:
                return
            run.last_chunk = chunk
            message = getattr(chunk, "message", None)
            usage = getattr(message, "usage_metadata", None)
            if usage:
                if run.stream_usages is None:
                    run.stream_usages = []
                run.stream_usages.append(usage)
        except Exception as exc:
            _report("langchain.on_llm_new_token", exc)

    def on_stream_event(
        self,
        event: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """A protocol event of ``stream_events(version="v3")`` / ``astream_events``, or of
        an ``invoke`` langchain-core (1.x) routes through that path when a v2 streaming
        handler is attached. There ``on_llm_new_token`` comes only if the model's own
        ``_stream`` reports its chunks.

        The events carry no usage per chunk: langchain-core adds the chunks' usage up into
        ``message-finish``, the message ``on_llm_end`` gets too. So this only notes that the
        call streamed; usage is read at the end, corrected for running totals from the
        chunks ``on_llm_new_token`` saw, if any. Called per event (several per chunk): one
        dict lookup.
        """
        try:
            run = _runs.get(run_id)
            if run is not None:
                run.streamed = True
        except Exception as exc:
            _report("langchain.on_stream_event", exc)

    # -- end ----------------------------------------------------------------------------------
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            run = _runs.pop(run_id)
            if run is not None:
                if run.owner is not None:
                    run.owner.runs.pop(run_id.int, None)
                _end(run, response, "ok", None)
        except Exception as exc:
            _report("langchain.on_llm_end", exc)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            run = _runs.pop(run_id)
            if run is not None:
                owner = run.owner
                if owner is not None:
                    started = owner.runs.pop(run_id.int, None)
                    if started is not None:
                        _release_unsent(owner, run, started[1])
                cancelled = isinstance(error, _CANCELLED)
                _end(run, kwargs.get("response"), "cancelled" if cancelled else "error", error)
        except Exception as exc:
            _report("langchain.on_llm_error", exc)


def _end(
    run: _Run, response: LLMResult | None, status: CallStatus, error: BaseException | None
) -> None:
    """A model run ended: the clock and the message's parts are taken now, everything else
    runs on costledger's background worker, so the model call pays for none of the
    reading, pricing or storing.

    The parts are picked here because LangChain's LLM cache swaps a cached generation's
    message for a copy marked as a cache hit when it replays it, and the cached
    generation is the one this response holds (the dicts themselves are not changed).
    Only the parts are kept, not the message: each object held until the worker runs is
    one more for the host's cyclic GC to scan.

    A tracker whose ledger is durable (``Ledger(durable=True)``) reads and prices the run
    here instead, and ``Tracker.finish(defer=True)`` appends the event to the durable
    spool before the model call returns to the host (it survives the process being
    killed); the guards' settle and the rest still run on the worker, never on an event
    loop this callback may run on."""
    message, llm_output = _first_message(response)
    if message is None:
        usage_metadata: Any = None
        response_metadata: Mapping[str, Any] = _NO_METADATA
        message_id: Any = None
    else:
        usage_metadata = getattr(message, "usage_metadata", None)
        response_metadata = getattr(message, "response_metadata", None) or _NO_METADATA
        message_id = getattr(message, "id", None)
    if getattr(run.tracker, "_durable", False):
        parts = _ResultParts(usage_metadata, response_metadata, message_id, llm_output)
        _finish_off_path(run, parts, status, error, run.call.elapsed_ms(), True)
    else:
        if run.call.reservations:  # the guards of the next calls wait for its settle
            run.tracker.handing_off(run.call)
        # the parts as loose arguments: one object fewer for the host's GC until the
        # worker runs (_ResultParts is made there)
        defer(
            _finish_deferred,
            run,
            usage_metadata,
            response_metadata,
            message_id,
            llm_output,
            status,
            error,
            run.call.elapsed_ms(),
        )


class _ResultParts(NamedTuple):
    """What the worker needs of a model run's result."""

    usage_metadata: Any
    response_metadata: Mapping[str, Any]
    message_id: Any
    llm_output: Mapping[str, Any] | None


_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def _finish_deferred(
    run: _Run,
    usage_metadata: Any,
    response_metadata: Mapping[str, Any],
    message_id: Any,
    llm_output: Mapping[str, Any] | None,
    status: CallStatus,
    error: BaseException | None,
    latency_ms: float,
) -> None:
    parts = _ResultParts(usage_metadata, response_metadata, message_id, llm_output)
    _finish_off_path(run, parts, status, error, latency_ms)


def _finish_off_path(
    run: _Run,
    parts: _ResultParts,
    status: CallStatus,
    error: BaseException | None,
    latency_ms: float,
    durable: bool = False,
) -> None:
    """Finish the run (on the worker; on the host's thread when ``durable``, where
    ``finish(defer=True)`` stores the event at once and queues the rest)."""
    try:
        _finish(run, parts, status=status, error=error, latency_ms=latency_ms, defer=durable)
    except Exception as exc:
        # A result this handler could not read: the call is still recorded, without usage
        # (and its guard reservations released), rather than lost.
        _report(f"langchain.on_llm_{'end' if status == 'ok' else 'error'}", exc)
        run.tracker.finish(
            run.call,
            status=status,
            error=error,
            latency_ms=latency_ms,
            on_event=run.add_to_sinks,
            defer=durable,
        )


def _finish(
    run: _Run,
    parts: _ResultParts,
    *,
    status: CallStatus,
    error: BaseException | None,
    latency_ms: float,
    defer: bool = False,
) -> None:
    usage_metadata: Any = parts.usage_metadata
    response_metadata = parts.response_metadata
    llm_output = parts.llm_output
    cache_hit = False
    if usage_metadata and "total_cost" in usage_metadata:
        # langchain-core (>= 0.3.73) marks a replayed LLM-cache entry this way; the
        # key is not part of UsageMetadata and no provider sets it.
        cache_hit = usage_metadata.get("total_cost") == 0
        usage_metadata = {k: v for k, v in usage_metadata.items() if k != "total_cost"}
    stream_usages = run.stream_usages
    if stream_usages:
        if _is_cumulative(stream_usages):
            # Each chunk repeated the running total and LangChain summed them: take the last.
            usage_metadata = stream_usages[-1]
        elif not usage_metadata:
            # stream_events(version="v3") ends a failed or cancelled stream with a response
            # that has no usage (stream() hands over the chunks so far): add them up here.
            total: dict[str, Any] = {}
            usage_metadata = functools.reduce(_add_usage, stream_usages, total)
    payload: Any = None
    usage = None
    if usage_metadata and "input_tokens" in usage_metadata:
        payload = usage_metadata
    elif llm_output:  # a completion LLM, or an integration older than usage_metadata
        token_usage = llm_output.get("token_usage")
        if run.batched and isinstance(token_usage, Mapping) and not token_usage:
            # A completion LLM answers a batch of prompts in one request, and LangChain
            # (LLMResult.flatten) gives the first prompt's run that request's whole usage
            # and every other run an empty token_usage: counted there, nothing more here.
            # (Outside a batch an empty one is usage not reported, e.g. a streamed
            # completion: unknown, never a silent $0.)
            usage = _NO_USAGE
        else:
            payload = token_usage or llm_output.get("usage")
    # The payload is read by the Tracker from its own fields (a LangChain usage dict and
    # an OpenAI one say which they are); a bad one is recorded without usage, flagged.
    if cache_hit and not payload:  # a replayed answer whose usage was never known: still $0
        usage = _NO_USAGE
        payload = None
    run.tracker.finish(
        run.call,
        usage=usage,
        payload=payload or None,
        response_model=_response_model(response_metadata, llm_output),
        status=status,
        error=error,
        request_id=_request_id(parts.message_id, response_metadata),
        # A v3 cache hit replays the cached answer as stream events: not a streamed call.
        streamed=run.streamed and not cache_hit,
        cache_hit=cache_hit,
        latency_ms=latency_ms,
        # ChatOpenAI keeps the response's service_tier in response_metadata, ChatAnthropic
        # the provider's usage (its service_tier and speed) under response_metadata["usage"]
        price_context=price_context_of(response_metadata) or price_context_of(llm_output),
        on_event=run.add_to_sinks,
        defer=defer,
    )


def _first_message(response: LLMResult | None) -> tuple[Any, Mapping[str, Any] | None]:
    """The first choice's message (usage is reported once per response, not per choice)."""
    if response is None:
        return None, None
    llm_output = response.llm_output
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if message is not None and getattr(message, "usage_metadata", None):
                return message, llm_output
    if response.generations and response.generations[0]:
        return getattr(response.generations[0][0], "message", None), llm_output
    return None, llm_output


def _response_model(
    response_metadata: Mapping[str, Any], llm_output: Mapping[str, Any] | None
) -> str | None:
    for source in (response_metadata, llm_output or {}):
        for key in _RESPONSE_MODEL_KEYS:
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _request_id(message_id: Any, response_metadata: Mapping[str, Any]) -> str | None:
    value = response_metadata.get("id")
    if isinstance(value, str) and value:
        return value
    value = message_id
    if isinstance(value, str) and value and not value.startswith(LANGCHAIN_STAND_IN_IDS):
        return value
    return None


def _first_str(values: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = values.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _attribution(metadata: Mapping[str, Any], tags: list[str] | None) -> dict[str, Any] | None:
    """Attribution from a run's metadata and tags.

    ``costledger_user`` (``_team``, ``_project``, ``_feature``, ``_tags``) win over
    the plain ``user`` (...) keys; ``user_id`` stands in for ``user``. Any other
    ``costledger_<key>`` becomes event metadata ``<key>``. Other LangChain metadata
    (``ls_*``, the app's own keys) is not copied: it may be large or private.
    """
    if not tags:
        # The common case: metadata keys that name no attribution (LangChain's own ls_*
        # keys). A model's runs repeat one set of keys: known sets are remembered.
        keys = tuple(metadata)
        none_found = _KEYS_WITHOUT_ATTRIBUTION.get(keys)
        if none_found is None:
            none_found = _PLAIN_KEYS.isdisjoint(keys) and not any(
                isinstance(key, str) and key.startswith(_PREFIX) for key in keys
            )
            if len(_KEYS_WITHOUT_ATTRIBUTION) < 256:
                _KEYS_WITHOUT_ATTRIBUTION[keys] = none_found
        if none_found:
            return None
    plain: dict[str, Any] | None = None
    prefixed: dict[str, Any] | None = None
    for key, value in metadata.items():  # one pass: this runs on every model call
        if value is None:
            continue
        if key in _PLAIN_KEYS:
            if plain is None:
                plain = {}
            plain[key] = value
        elif isinstance(key, str) and key.startswith(_PREFIX) and len(key) > _PREFIX_LEN:
            if prefixed is None:
                prefixed = {}
            prefixed[key[_PREFIX_LEN:]] = value
    run_tags = (
        [t for t in tags if not (isinstance(t, str) and t.startswith(_INTERNAL_TAG_PREFIXES))]
        if tags
        else []
    )
    if plain is None and prefixed is None and not run_tags:
        return None
    values: dict[str, Any] = {}
    if plain is not None:
        user_id = plain.pop("user_id", None)
        values.update(plain)
        if user_id is not None:
            values.setdefault("user", user_id)
    if prefixed is not None:
        extra_tags = prefixed.pop("tags", ())
        values.update(prefixed)
        if extra_tags:
            # read as the core reads tags: bytes decoded, one string one tag
            for tag in _tags(extra_tags, strict=False):
                if tag not in run_tags:
                    run_tags.append(tag)
    if run_tags:
        values["tags"] = run_tags
    return values


def _prompt_text(
    messages: list[list[BaseMessage]] | None,
    prompts: list[str] | None,
    params: Mapping[str, Any],
) -> str:
    """The call's input as the guards' estimate counts it: the messages (or prompts), then
    the bound tools' schemas, which the provider bills as input too (40 tools can be
    tens of thousands of tokens, more than the conversation)."""
    if prompts is not None:
        text = "\n".join(prompts)
    else:
        from langchain_core.messages import get_buffer_string

        text = "\n".join(get_buffer_string(m) for m in messages or ())
    tools = _tools_text(params)
    return f"{text}\n{tools}" if tools else text


def _tools_text(params: Mapping[str, Any]) -> str:
    bound = {key: params[key] for key in _TOOL_PARAMS if _present(params.get(key))}
    if not bound:
        return ""
    from costledger._guards._estimate import request_json_text  # the guarded path only

    return request_json_text(bound)


def _present(value: Any) -> bool:
    """Bound and not empty (``tools=[]`` sends no schema)."""
    if value is None:
        return False
    try:
        return bool(value)
    except Exception:  # a value with no truth value (an array): it is there
        return True


def _max_output_tokens(params: Mapping[str, Any], metadata: Mapping[str, Any]) -> int | None:
    """One answer's output limit, as the call sets it (``None``: the guards' estimate
    takes the model's limit from the price data, else its default)."""
    for source, keys in ((params, _MAX_TOKEN_PARAMS), (metadata, ("ls_max_tokens",))):
        for key in keys:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _checked_max_events(value: Any, owner: str) -> int | None:
    """``max_events`` as ``owner`` (``"CostTotals()"``, the handler) takes it: ``None``
    (keep every event) or a count of at least 0 (an int, or an integer type such as
    numpy's, by ``__index__``). A bool is refused though Python counts it as an int:
    ``True`` would keep one event, surely not what was meant."""
    if value is None:
        return None
    expected = f"{owner} max_events must be an int >= 0 or None"
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)
    except TypeError:
        raise TypeError(f"{expected}, got {type(value).__name__} {short_repr(value)}") from None
    if count < 0:
        raise ValueError(f"{expected}, got {short_repr(value)}")
    if count > sys.maxsize:  # the deque would raise OverflowError, naming nothing
        raise ValueError(
            f"{owner} max_events must be at most sys.maxsize "
            f"({sys.maxsize}), got {short_repr(value)}"
        )
    return count


def _report(where: str, exc: BaseException, **context: Any) -> None:
    try:
        from costledger._logging import report_failure

        report_failure(where, exc, **context)
    except Exception:  # reporting must never break the host either
        pass


# -- tracking() ---------------------------------------------------------------------------------
# One ContextVar and one configure hook for the life of the process: LangChain keeps every
# registered hook forever, so registering per use (as get_usage_metadata_callback does) grows
# the list and the work of every later run.
_tracking_handler: ContextVar[CostLedgerCallbackHandler | None] = ContextVar(
    "costledger_langchain_tracking", default=None
)
register_configure_hook(_tracking_handler, inheritable=True)


@contextmanager
def tracking(
    tracker: Tracker | None = None,
    *,
    user: object = None,
    team: object = None,
    project: object = None,
    feature: object = None,
    tags: Iterable[object] | str | bytes | None = (),
    **metadata: Any,
) -> Iterator[CostTotals]:
    """Track every LangChain model call inside the block, and yield its live total.

    >>> with tracking(feature="search") as totals:
    ...     chain.invoke({"question": q})
    >>> totals.total_cost, totals.requests
    (Decimal('0.000213'), 2)

    No handler needs attaching: LangChain adds one to every run started in this
    context (threads LangChain starts for ``batch`` and asyncio tasks inherit it).
    Attribution arguments apply to the calls inside, as ``costledger.attribute``
    does (the same types: a numeric or UUID id is text). Nested blocks each get their
    own total and feed the outer ones too.
    """
    check_attribution_keywords("tracking", metadata, ("tracker",))
    check_tracker("tracking()", tracker)  # named as written, not as the handler it makes
    outer = _tracking_handler.get()
    if tracker is None and outer is not None:
        tracker = outer._tracker
    handler = CostLedgerCallbackHandler(tracker, max_events=None)
    if outer is not None:
        handler._sinks = (*outer._sinks, handler.totals)
    with ExitStack() as stack:
        # ``is not None``: a falsy id (user=0) is still an id
        named = user is not None or team is not None or project is not None
        if named or feature is not None or tags or metadata:
            stack.enter_context(
                attribute(
                    user=user, team=team, project=project, feature=feature, tags=tags, **metadata
                )
            )
        token = _tracking_handler.set(handler)
        try:
            yield handler.totals
        finally:
            _tracking_handler.reset(token)
