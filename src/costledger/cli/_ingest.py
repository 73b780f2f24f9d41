"""``costledger ingest FILE...``: usage log lines into the ledger (see docs/ingestion.md)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._cost import money_text
from ._app import EXIT_INTERRUPTED, EXIT_USAGE, CliError
from ._options import Db, Format, OutputFormat

if TYPE_CHECKING:
    from .._ingest import IngestProgress, IngestResult, InputResult

__all__ = ["ingest"]

_MAX_SHOWN_REJECTS = 3
_INTERRUPTED = (
    "interrupted: every batch committed before stays; run the same command again to resume"
)


def ingest(
    files: Annotated[
        list[str],
        typer.Argument(
            help="JSON-lines files (.gz read as such); - reads stdin.",
            metavar="FILE...",
            show_default=False,
        ),
    ],
    db: Db = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects",
            help="Write rejected lines here, for all inputs, appended "
            "(default: <input>.rejects.jsonl next to each input).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Read from the start, ignoring the checkpoint (adds nothing twice either way).",
        ),
    ] = False,
    max_line_bytes: Annotated[
        int,
        typer.Option("--max-line-bytes", min=1, help="Reject longer lines without reading them."),
    ] = 1 << 20,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Lines per committed transaction.")
    ] = 20_000,
    price_book: Annotated[
        Path | None,
        typer.Option(
            "--price-book",
            help="Price LiteLLM payloads and responses with this price book first "
            "(the Pricer(overrides=...) format).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint-dir",
            help="Where resume checkpoints live (default: ~/.costledger/ingest).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="The time of responses that carry none (Anthropic messages and batch "
            "results, embeddings), which prices them too: an ISO date or time "
            "(2025-06-01T12:00Z) or the forms of --since (default: when the run starts).",
            show_default=False,
        ),
    ] = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Ingest usage log lines: costledger's own, LiteLLM payloads, raw provider responses.

    Idempotent: an event already in the ledger is not added again. Resumable: a run
    continues after the last batch an earlier run committed. Bad lines go to the rejects
    file with their line number and reason; they never stop the run. Exits 0 when done,
    1 when nothing could be read or every line was rejected.
    """
    from .._ingest import IngestError, IngestInterrupted
    from .._ingest import ingest as run_ingest
    from .._ingest._run import rejects_clash
    from .._pricing import Pricer

    inputs = list(files)
    if inputs.count("-") > 1:
        raise CliError("stdin (-) can be read only once", code=EXIT_USAGE)
    for name in inputs:
        if name != "-" and not Path(name).is_file():
            what = "is not a file" if Path(name).exists() else "does not exist"
            raise typer.BadParameter(f"{name!r} {what}", param_hint="'FILE...'")
    if rejects is not None and (clash := rejects_clash(inputs, rejects)) is not None:
        raise typer.BadParameter(
            f"{str(rejects)!r} is also an input ({clash!r}): the rejected lines would be "
            "appended to that log; write them elsewhere",
            param_hint="'--rejects'",
        )
    moment = None
    if now is not None:
        from .._reports import parse_when

        try:
            moment = parse_when(now, "since", field="--now")
        except ValueError as exc:  # "--now: cannot read ...": click names the option itself
            raise typer.BadParameter(
                str(exc).removeprefix("--now: "), param_hint="'--now'"
            ) from None
    pricer = Pricer(overrides=price_book) if price_book is not None else None
    show_progress = fmt is OutputFormat.table and sys.stderr.isatty()
    with _Progress(show_progress) as progress, _unknown_models_in_summary():
        try:
            result = run_ingest(
                inputs,
                ledger=db,
                pricer=pricer,
                rejects=rejects,
                resume=not restart,
                checkpoint_dir=checkpoint_dir,
                max_line_bytes=max_line_bytes,
                batch_lines=batch_size,
                progress=progress.update if show_progress else None,
                now=moment,
            )
        except IngestError as exc:
            progress.stop()
            _print(exc.result, fmt)
            raise CliError(str(exc)) from None
        except KeyboardInterrupt as exc:  # Ctrl-C: what was committed, and how to go on
            progress.stop()
            if isinstance(exc, IngestInterrupted):
                _print(exc.result, fmt)
            raise CliError(_INTERRUPTED, code=EXIT_INTERRUPTED) from None
    _print(result, fmt)
    if not result.ok:
        raise CliError(_failure(result))


def _failure(result: IngestResult) -> str:
    if result.errors:
        return "; ".join(result.errors)
    if result.lines:
        # the rejects files this run wrote to (an input's file may exist from an earlier
        # run while this run rejected nothing of it)
        where = list(
            dict.fromkeys(r.rejects_path for r in result.inputs if r.rejected and r.rejects_path)
        )
        see = f"; reasons in {', '.join(where)}" if where else ""
        return f"every line was rejected ({result.rejected:,} lines){see}"
    if result.inputs and all(r.skipped for r in result.inputs):
        return "nothing to read: every input is a rejects file costledger wrote (skipped)"
    return "nothing to read: the input is empty"


@contextlib.contextmanager
def _unknown_models_in_summary() -> Iterator[None]:
    """The pricer warns once per unknown model; the summary lists them all, with counts."""

    def keep(record: logging.LogRecord) -> bool:
        return getattr(record, "costledger_event", None) != "unknown_model"

    logger = logging.getLogger("costledger")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


# -- output -------------------------------------------------------------------------------------


def _money(costs: Any) -> str:
    from ._output import money_cell

    if not costs:
        return "0.00"
    return ", ".join(f"{money_cell(amount)} {currency}" for currency, amount in costs.items())


def _input_doc(r: InputResult) -> dict[str, Any]:
    return {
        "input": r.input,
        "lines": r.lines,
        "accepted": r.accepted,
        "duplicates": r.duplicates,
        "rejected": r.rejected,
        "unpriced": r.unpriced,
        "blank": r.blank,
        "incomplete": r.incomplete,
        "costs": {c: money_text(a) for c, a in r.costs.items()},
        "formats": dict(r.formats),
        "unpriced_models": dict(r.unpriced_models),
        "resumed_at_line": r.resumed_at_line,
        "offset": r.offset,
        "rejects_file": r.rejects_path,
        "first_rejects": [
            {"line": j.line, "reason": j.reason, "field": j.field} for j in r.first_rejects
        ],
        "error": r.error,
        "notes": list(r.notes),
        "skipped": r.skipped,
    }


def _print(result: IngestResult, fmt: OutputFormat) -> None:
    from ._output import Col, emit, note

    docs = [_input_doc(r) for r in result.inputs]
    totals = {
        "input": "total",
        "lines": result.lines,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": result.rejected,
        "unpriced": result.unpriced,
        "cost": _money(result.costs),
    }
    if fmt is OutputFormat.json:
        document = {
            "lines": result.lines,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
            "unpriced": result.unpriced,
            "costs": {c: money_text(a) for c, a in result.costs.items()},
            "seconds": round(result.seconds, 3),
            "lines_per_second": round(result.lines_per_second),
            "ok": result.ok,
            "inputs": docs,
        }
        emit(fmt, [], [], document=document)
        return
    rows = [{**d, "cost": _money(r.costs)} for d, r in zip(docs, result.inputs, strict=True)]
    if fmt is OutputFormat.csv:
        fields = ["input", "lines", "accepted", "duplicates", "rejected", "unpriced", "blank"]
        emit(
            fmt,
            [{**d, **_cost_columns(r.costs)} for d, r in zip(docs, result.inputs, strict=True)],
            [],
            fields=[*fields, *_currencies(result)],
        )
        return
    cols = [
        Col("input", "input"),
        Col("lines", "lines", "int"),
        Col("accepted", "accepted", "int"),
        Col("duplicates", "duplicates", "int"),
        Col("rejected", "rejected", "int"),
        Col("unpriced", "unpriced", "int"),
        Col("cost", "cost of accepted", "text"),
    ]
    emit(fmt, rows, cols, footer=[totals] if len(rows) > 1 else ())
    for r in result.inputs:
        if r.skipped:
            note(f"{r.input}: {r.skipped}")
        if r.resumed_at_line is not None:
            note(f"{r.input}: resumed at line {r.resumed_at_line:,} (--restart reads it all again)")
        if r.incomplete:
            note(f"{r.input}: the last line has no newline yet; left for the next run")
        if r.rejected:
            where = f" (all in {r.rejects_path})" if r.rejects_path else ""
            note(f"{r.input}: {r.rejected:,} rejected line(s){where}, e.g.:")
            for j in r.first_rejects[:_MAX_SHOWN_REJECTS]:
                note(f"  line {j.line}: {j.reason}")
        if r.unpriced_models:
            models = ", ".join(f"{m} ({n:,})" for m, n in sorted(r.unpriced_models.items()))
            note(
                f"{r.input}: no price for {models}; add them to a price book and run "
                "'costledger reprice'"
            )
        if r.error:
            note(f"{r.input}: {r.error}")
    if result.seconds > 0 and result.lines:
        note(
            f"{result.lines:,} lines in {result.seconds:.1f} s "
            f"({result.lines_per_second:,.0f} lines/s)"
        )


def _currencies(result: IngestResult) -> list[str]:
    return [f"cost_{c}" for c in sorted(result.costs)] or ["cost_USD"]


def _cost_columns(costs: Any) -> dict[str, str]:
    return {f"cost_{c}": money_text(Decimal(a)) for c, a in costs.items()}


# -- progress -----------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar on stderr (bytes of each input), or nothing off a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[lines]:>12,} lines  {task.fields[rejected]:,} rejected"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=False,
            )
            self._bar.start()
        return self

    def update(self, p: IngestProgress) -> None:
        bar = self._bar
        if bar is None:
            return
        task = self._tasks.get(p.input)
        if task is None:
            from rich.markup import escape

            from ._output import printable

            name = Path(p.input).name or p.input
            if len(name) > 32:
                name = "..." + name[-29:]
            name = escape(printable(name))  # a file name, not markup nor terminal controls
            task = self._tasks[p.input] = bar.add_task(name, total=p.size, lines=0, rejected=0)
        bar.update(task, completed=p.position, lines=p.lines, rejected=p.rejected)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __exit__(self, *exc: object) -> None:
        self.stop()
