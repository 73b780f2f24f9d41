"""``costledger budget status``: where each budget stands this period.

Budgets live in code (``Tracker(guards=[Budget(...)])``), so the command is told where to
find them: ``--config module:attr`` names a ``Tracker``, a ``Budget``, a list of them, or a
function returning one of those; ``--budgets FILE.toml`` lists them in a file::

    [[budget]]
    limit = "100 USD"
    period = "month"
    per = "team"            # optional: user, team, project, feature, model, provider, tag
    hard = true
    warn_at = [0.5, 0.8, 1.0]
    tz = "UTC"
    name = "team monthly"
    where = { project = "assistant" }

The file is read as ``guards_from_config`` reads it (every ``Budget`` argument a file
can give, ``reservation_ttl`` included; ``guard_store = "redis://..."`` at the top; rate
limits are skipped). Without either, ``$COSTLEDGER_BUDGETS`` (a TOML path or
``module:attr``) is used. Spend comes from the guard store (``--guard-store``, else the
file's ``guard_store``) and, for counters it does not have, from the ledger (``--db``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._cost import money_text
from ._app import EXIT_BAD_INPUT, EXIT_USAGE, CliError
from ._options import Db, Format, OutputFormat, open_ledger
from ._output import Col, emit

if TYPE_CHECKING:
    from .._guards import Budget, BudgetStatus
    from .._tracker import Tracker

__all__ = ["app", "budget_source", "load_budget_file", "load_config"]

BUDGETS_ENV = "COSTLEDGER_BUDGETS"

app = typer.Typer(help="Budgets: where each one stands this period.", no_args_is_help=True)


def load_budget_file(path: str | os.PathLike[str]) -> tuple[list[Budget], str | None]:
    """The budgets of a guard configuration file (TOML or JSON, read by
    ``guards_from_config``, numbers kept exact) and its ``guard_store`` (or None)."""
    from .._guards import Budget, guards_from_config

    file = Path(path)
    try:
        config = guards_from_config(file)
    except ValueError as exc:
        raise CliError(f"budgets file {str(file)!r}: {exc}") from None
    budgets = [g for g in config.guards if isinstance(g, Budget)]
    if not budgets:
        raise CliError(f"budgets file {str(file)!r} has no [[budget]] tables")
    return budgets, config.guard_store


def load_config(spec: str) -> Any:
    """The object ``module:attr`` names (the current directory is importable), called
    if it is a plain function."""
    from .._guards import Budget
    from .._tracker import Tracker

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"--config must look like module:attr, got {spec!r}", EXIT_USAGE)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"--config {spec!r}: cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"--config {spec!r}: {module_name!r} has no {attr!r}") from None
    if callable(obj) and not isinstance(obj, (Tracker, Budget, type)):
        obj = obj()
    return obj


def budget_source(
    config: str | None, budgets_file: Path | None, guard_store: str | None
) -> tuple[Any, str | None]:
    """The budgets to show (``--config``, ``--budgets``, else ``$COSTLEDGER_BUDGETS``;
    ``None`` when none is given) and the guard store they count in: ``--guard-store``,
    else the budgets file's own ``guard_store``."""
    if config is not None and budgets_file is not None:
        raise CliError("give --config or --budgets, not both", EXIT_USAGE)
    if config is None and budgets_file is None:
        env = os.environ.get(BUDGETS_ENV, "").strip()
        if not env:
            return None, guard_store
        if ":" in env and not Path(env).exists():
            config = env
        else:
            budgets_file = Path(env)
    if budgets_file is not None:
        budgets, file_store = load_budget_file(budgets_file)
        return budgets, guard_store if guard_store is not None else file_store
    assert config is not None
    return load_config(config), guard_store


def _tracker_and_budgets(
    source: Any, db: str | None, guard_store: str | None, ledger: Any
) -> tuple[Tracker, list[Budget] | None]:
    from .._guards import Budget
    from .._tracker import Tracker

    if isinstance(source, Tracker):
        return source, None
    if isinstance(source, Budget):
        budgets = [source]
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        budgets = list(source)
        if not all(isinstance(b, Budget) for b in budgets):
            raise CliError("the budgets given must all be costledger Budget objects")
    else:
        raise CliError(
            f"expected a Tracker, a Budget or a list of Budgets, got {type(source).__name__}"
        )
    return Tracker(ledger, guards=budgets, guard_store=guard_store, log="off"), budgets


_COLS = (
    Col("budget", "budget"),
    Col("key", "key"),
    Col("spent", "spent", "amount"),
    Col("reserved", "reserved", "amount"),
    Col("remaining", "remaining", "amount"),
    Col("limit", "limit", "amount"),
    Col("used", "used", "share"),
    Col("unit", "unit"),
    Col("period", "period"),
    Col("resets_at", "resets at (UTC)"),  # converted to UTC by _status_dict
)


NO_KEY_YET = "(none yet)"
"""The key shown for a per-key budget that has no key with spend yet this period."""


def _utc(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat() if moment is not None else None


def _status_dict(s: BudgetStatus, placeholder: bool = False) -> dict[str, Any]:
    if placeholder:
        key = NO_KEY_YET
    elif s.key is not None:
        key = s.key
    else:
        key = "(all)" if s.per is None else "(none)"
    return {
        "budget": s.budget,
        "per": s.per,
        "key": key,
        "unit": s.unit,
        "limit": money_text(s.limit),
        "spent": money_text(s.spent),
        "reserved": money_text(s.reserved),
        "remaining": money_text(s.remaining),
        "used": format(s.used.quantize(Decimal("0.000001")), "f"),
        "period": s.period,
        # In UTC, as the table's header says (a budget's own zone is in its name).
        "period_start": _utc(s.period_start),
        "resets_at": _utc(s.resets_at),
        "hard": s.hard,
    }


def _whole(value: Decimal) -> int | Decimal:
    """A token amount as the whole number it is (a fraction, which no count has, stays)."""
    return int(value) if value == value.to_integral_value() else value


def _rows(tracker: Tracker, chosen: list[Budget] | None) -> list[tuple[BudgetStatus, bool]]:
    """Each budget's rows; a per-key budget without any key yet this period gets one row
    (nothing spent, the whole limit remaining), marked as a placeholder. Empty only when
    there are no budgets at all."""
    from .._guards import Budget, budget_status

    budgets = [g for g in (tracker.guards if chosen is None else chosen) if isinstance(g, Budget)]
    shown: list[tuple[BudgetStatus, bool]] = []
    for budget in budgets:
        mine = budget_status(tracker, [budget])
        if mine:
            shown.extend((s, False) for s in mine)
        else:
            # Key None: the calls without a key, none of which has spent anything either.
            shown.extend((s, True) for s in budget.status(tracker, keys=[None]))
    return shown


@app.command("status")
def status(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="module:attr of a Tracker, a Budget, a list of Budgets or a function "
            "returning one.",
            show_default=False,
        ),
    ] = None,
    budgets_file: Annotated[
        Path | None,
        typer.Option(
            "--budgets",
            "-b",
            # help is rich markup: "[\\[budget]]" shows "[[budget]]" ("[budget]" is a tag)
            help="A TOML file of [\\[budget]] tables.",
            show_default=False,
        ),
    ] = None,
    guard_store: Annotated[
        str | None,
        typer.Option(
            "--guard-store",
            help="Guard store URL (redis://..., postgresql://..., sqlite:///...) "
            "(default: the --budgets file's guard_store, else memory: counted from the "
            "ledger).",
            show_default=False,
        ),
    ] = None,
    db: Db = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Spent, reserved and remaining of every budget and key, this period."""
    source, guard_store = budget_source(config, budgets_file, guard_store)
    if source is None:
        raise CliError(
            f"no budgets: give --budgets FILE.toml or --config module:attr (or set ${BUDGETS_ENV})",
            EXIT_USAGE,
        )
    from .._tracker import Tracker

    if isinstance(source, Tracker):
        shown = _rows(source, None)
    else:
        with open_ledger(db) as ledger:
            tracker, chosen = _tracker_and_budgets(source, db, guard_store, ledger)
            shown = _rows(tracker, chosen)
    if not shown:
        raise CliError("no budgets found", EXIT_BAD_INPUT)
    rows = [_status_dict(s, placeholder) for s, placeholder in shown]
    if fmt is OutputFormat.table:
        for r, (s, _) in zip(rows, shown, strict=True):
            if s.unit == "tokens":  # a count of tokens, not money: 90, not 90.00
                for name in ("spent", "reserved", "remaining", "limit"):
                    r[name] = _whole(getattr(s, name))
    emit(
        fmt,
        rows,
        _COLS,
        fields=[
            "budget",
            "per",
            "key",
            "unit",
            "limit",
            "spent",
            "reserved",
            "remaining",
            "used",
            "period",
            "period_start",
            "resets_at",
            "hard",
        ],
        title="budgets",
    )
