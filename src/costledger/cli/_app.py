"""The root ``costledger`` command: one line per error, never a traceback, fixed exit codes.

Exit codes: 0 done; 1 bad input (a file, a database, a price book), nothing matched or an
optional dependency not installed (the line says what to ``pip install``);
2 usage error (an unknown option, a value an option cannot take); 141 the reader of the
output went away (``costledger report | head``): the command stops quietly, with the code
a shell gives a program that SIGPIPE ends; 130 interrupted (Ctrl-C), with
``error: interrupted`` (a command may say more). ``COSTLEDGER_DEBUG=1`` lets an unexpected
error raise with its traceback.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup

from ._output import printable

try:  # typer >= 0.20 vendors click; older versions use click itself
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as _cx  # type: ignore[no-redef]

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "app",
    "error_line",
    "main",
]

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what ``cat``, ``git`` or ``grep`` end with when ``| head`` stops reading."""
EXIT_INTERRUPTED = 130
"""128 + SIGINT: Ctrl-C."""


class CliError(Exception):
    """A failure the command explains in one line (exit code 1 unless told otherwise)."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def error_line(exc: BaseException) -> str:
    """One clear line for an error: the first line of its message, without driver noise."""
    try:
        from sqlalchemy.exc import StatementError

        if isinstance(exc, StatementError) and exc.orig is not None:
            exc = exc.orig
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        pass
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0].strip()
    marker = "(Background on this error"
    if marker in first:
        first = first[: first.index(marker)].strip()
    return first


# The optional packages behind each extra (``pip install 'costledger[EXTRA]'``), by the
# top-level module a missing one is reported under.
_EXTRA_OF_MODULE = {
    "psycopg": "postgres",
    "redis": "redis",
    "pyarrow": "parquet",
    "plotly": "dashboard",
    "tiktoken": "tokens",
    "opentelemetry": "otel",
}


def _missing_dependency_line(exc: ImportError) -> str | None:
    """One line saying what to ``pip install`` when ``exc`` is a missing optional package
    (already explained by ``costledger._errors.missing_extra``, or one of the extras'
    packages); ``None`` for any other import error (a bug, a broken installation)."""
    line = error_line(exc)
    if "pip install" in line:
        return line
    top = (exc.name or "").split(".")[0]
    extra = _EXTRA_OF_MODULE.get(top)
    if extra is None or not isinstance(exc, ModuleNotFoundError):
        return None
    from .._errors import missing_extra

    return error_line(missing_extra(exc, "this command", extra))


def _say(message: str) -> None:
    # A message may quote data (a user name, a file's line): its control characters are
    # shown escaped, as in tables, line breaks kept.
    shown = "\n".join(printable(line) for line in message.split("\n"))
    typer.echo(f"error: {shown}", err=True)


class _PipeClosed(Exception):
    """stdout's reader went away (``| head``); raised instead of the ``BrokenPipeError``,
    which click would turn into exit 1."""


class _Interrupted(Exception):
    """Ctrl-C during a command; raised instead of the ``KeyboardInterrupt``, which typer
    turns into exit 130 without a word."""


def _drop_stdout() -> None:
    """Send what is left for stdout nowhere, so that no later write or the interpreter's
    final flush fails again (and prints "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's runner)
        pass


_KEPT: list[object] = []
"""Buffered stdouts that could not be detached: kept alive, since collecting one closes
the file descriptor under it."""


def _buffer_stdout() -> io.TextIOWrapper | None:
    """Under ``python -u`` or ``PYTHONUNBUFFERED``, ``sys.stdout`` writes straight to the
    file, and a write the pipe takes only part of (its reader, ``| head``, went away
    meanwhile) is cut short without an error: the rest of the output is dropped, the
    closed pipe never seen, and the command would end with 0. For the command's run,
    ``sys.stdout`` is put behind a buffered writer, which writes the rest and raises the
    ``BrokenPipeError`` (exit 141, as for buffered output); lines still go out as they are
    written. Returns the unbuffered ``sys.stdout`` to put back, or ``None`` when it was
    buffered already (or is not a file: a test's runner)."""
    out = sys.stdout
    raw = getattr(out, "buffer", None)
    if not isinstance(out, io.TextIOWrapper) or not isinstance(raw, io.RawIOBase):
        return None
    try:
        sys.stdout = io.TextIOWrapper(
            io.BufferedWriter(raw),
            encoding=out.encoding,
            errors=out.errors,
            line_buffering=True,
        )
    except (OSError, ValueError, LookupError):  # pragma: no cover - an unusual stdout
        return None
    return out


def _restore_stdout(unbuffered: io.TextIOWrapper) -> None:
    """Put the unbuffered ``sys.stdout`` back, detaching the buffered one from the file
    without closing it."""
    buffered = sys.stdout
    sys.stdout = unbuffered
    if not isinstance(buffered, io.TextIOWrapper):  # pragma: no cover - replaced meanwhile
        return
    try:
        buffered.flush()
    except BrokenPipeError:
        _drop_stdout()  # the rest goes nowhere, as for buffered output
    except (OSError, ValueError):  # a closed or unusual stdout
        pass
    layer: io.TextIOWrapper | io.BufferedIOBase = buffered
    try:
        layer = buffered.detach()
        layer.detach()
    except (OSError, ValueError):  # pragma: no cover - the file already failed twice
        _KEPT.append(layer)


class _Argument(TyperArgument):
    """An argument shown in the usage line as click shows one: ``MODEL``, ``[N]``,
    ``FILE...`` (not typer's ``{model}`` or ``{FILE...}...``)."""

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return [name if self.required else f"[{name}]"]


def _flow(text: str | None) -> str | None:
    """``text`` with each paragraph on one line: typer's rich help keeps a docstring's
    single line breaks (after the first paragraph, and in the commands list), which
    then wrap again mid-sentence at the terminal's width. A paragraph starting with
    ``\\b`` keeps its lines, as click's own formatting does."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


def _polish(command: Any, name: str) -> None:
    """Help as written, for ``command`` and its subcommands: paragraphs flow; a flag shows
    no ``<bool>`` type (it takes no value); an argument's usage reads ``MODEL``."""
    command.help = _flow(command.help)
    params = list(command.params)
    help_option = command.get_help_option(command.context_class(command, info_name=name))
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # typer's rich help prints the metavar in place of the type
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
    for sub_name, sub in getattr(command, "commands", {}).items():
        _polish(sub, sub_name)


class _RootGroup(TyperGroup):
    """Runs the command, then turns every way it can fail into one line and an exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _polish(self, self.name or "costledger")

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _PipeClosed from None
        except KeyboardInterrupt:
            raise _Interrupted from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        unbuffered = _buffer_stdout()
        try:
            code = _run(self, args, prog_name, complete_var, windows_expand_args, extra)
            try:
                sys.stdout.flush()  # the end of the output may still be buffered
            except BrokenPipeError:
                _drop_stdout()
                code = EXIT_BROKEN_PIPE
            except (OSError, ValueError):  # a closed or unusual stdout: nothing more to say
                pass
        finally:
            if unbuffered is not None:
                _restore_stdout(unbuffered)
        if standalone_mode:
            sys.exit(code)
        return code


def _run(
    group: TyperGroup,
    args: Sequence[str] | None,
    prog_name: str | None,
    complete_var: str | None,
    windows_expand_args: bool,
    extra: dict[str, Any],
) -> int:
    from .._errors import CostLedgerError

    debug = os.environ.get("COSTLEDGER_DEBUG", "") not in ("", "0")
    try:
        rv = TyperGroup.main(
            group,
            args=args,
            prog_name=prog_name,
            complete_var=complete_var,
            standalone_mode=False,
            windows_expand_args=windows_expand_args,
            **extra,
        )
    except _cx.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message(), err=True)
        return EXIT_USAGE
    except _cx.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _say(exc.format_message().replace("\n", " ") + hint)
        return EXIT_USAGE
    except _cx.ClickException as exc:
        _say(exc.format_message().replace("\n", " "))
        return exc.exit_code
    except typer.Abort:
        _say("aborted")
        return EXIT_BAD_INPUT
    except CliError as exc:
        _say(str(exc))
        return exc.code
    except _PipeClosed:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except (KeyboardInterrupt, _Interrupted):
        _say("interrupted")
        return EXIT_INTERRUPTED
    except ImportError as exc:
        if debug:
            raise
        line = _missing_dependency_line(exc)
        if line is None:
            _say(f"{type(exc).__name__}: {error_line(exc)} (COSTLEDGER_DEBUG=1 shows where)")
        else:  # an optional dependency not installed: the user's to fix, not a bug
            _say(line)
        return EXIT_BAD_INPUT
    except (CostLedgerError, ValueError, TypeError, OSError, LookupError) as exc:
        if debug:
            raise
        _say(error_line(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:
        if debug:
            raise
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            _say(f"database: {error_line(exc)}")
        else:
            _say(f"{type(exc).__name__}: {error_line(exc)} (COSTLEDGER_DEBUG=1 shows where)")
        return EXIT_BAD_INPUT
    return rv if isinstance(rv, int) else EXIT_OK


app = typer.Typer(
    name="costledger",
    cls=_RootGroup,
    help="Exact LLM cost tracking: reports, what-if re-pricing, ingestion, budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("costledger")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        from .. import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"costledger {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print the installed version (costledger X.Y.Z) and exit.",
    ),
) -> None:
    """Exact LLM cost tracking: reports, what-if re-pricing, ingestion, budgets."""


def main() -> None:
    app()
