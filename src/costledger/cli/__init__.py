"""The ``costledger`` command line: a thin typer layer over the Python API.

A command is one line in ``COMMANDS``: its name and ``module:attribute``, where the
attribute is a command function or a ``typer.Typer`` of subcommands. Shared options
(``--db``, ``--since``/``--until``, filters, ``--format``) are in ``_options.py``; errors
become one line and an exit code in ``_app.py``.
"""

from __future__ import annotations

from importlib import import_module

import typer

from ._app import app, main

COMMANDS: tuple[tuple[str, str], ...] = (
    ("report", "_report:report"),
    ("top", "_report:top"),
    ("whatif", "_whatif:whatif"),
    ("reprice", "_whatif:reprice"),
    ("export", "_export:export"),
    ("ingest", "_ingest:ingest"),
    ("prices", "_prices:app"),
    ("budget", "_budget:app"),
    ("db", "_db:app"),
    ("demo", "_demo:demo"),
    ("dashboard", "_dashboard:dashboard"),
    ("serve", "_dashboard:serve"),
)


def _register(name: str, target: str) -> None:
    module, _, attr = target.partition(":")
    obj = getattr(import_module(f".{module}", __name__), attr)
    if isinstance(obj, typer.Typer):
        app.add_typer(obj, name=name)
    else:
        app.command(name)(obj)


for _name, _target in COMMANDS:
    _register(_name, _target)


__all__ = ["COMMANDS", "app", "main"]
