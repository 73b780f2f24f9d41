"""The dashboard page: one HTML file holding the data, the page's script and Plotly itself."""

from __future__ import annotations

import json
import os
import re
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ._data import Dashboard

__all__ = ["plotly_js", "render_dashboard", "to_json", "write_dashboard"]

_MARK = "/*COSTLEDGER:{}*/"
_HTML_MARK = "<!--COSTLEDGER:{}-->"
_MARKS = re.compile(r"/\*COSTLEDGER:(?:CSS|DATA|OPTIONS|JS)\*/|<!--COSTLEDGER:PLOTLY-->")


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The Plotly.js bundle shipped with the ``plotly`` package (no network needed)."""
    try:
        import plotly  # noqa: F401  (first: a missing extra is named 'plotly', not a submodule)
        from plotly.offline import get_plotlyjs
    except ModuleNotFoundError as exc:  # the ``dashboard`` extra
        from .._errors import missing_extra

        # ImportError, as for every other extra, with the line the command line prints
        raise missing_extra(exc, "the dashboard", "dashboard") from None
    return str(get_plotlyjs())


def to_json(payload: Any) -> str:
    """JSON safe to place inside a ``<script>`` element (no ``<``, ``>``, ``&`` as such)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _payload(data: Dashboard | dict[str, Any] | None) -> dict[str, Any] | None:
    return data.payload() if isinstance(data, Dashboard) else data


def render_dashboard(
    data: Dashboard | dict[str, Any] | None,
    *,
    live: bool = False,
    refresh_seconds: float = 5.0,
    data_url: str = "data.json",
    plotly_url: str | None = None,
) -> str:
    """The page for ``data`` (a ``Dashboard`` or its ``payload()``).

    By default Plotly is inlined, so the file is viewable with no network at all.
    ``plotly_url`` loads it from that (relative) URL instead, as ``serve`` does.
    ``live``: the page polls ``data_url`` every ``refresh_seconds`` and redraws.
    ``data=None`` (live pages only): no data yet, the page asks ``data_url`` at once.
    """
    if data is None and not live:
        raise ValueError("data=None is for a live page (live=True), which fetches its data")
    if isinstance(refresh_seconds, bool) or not isinstance(refresh_seconds, (int, float)):
        raise ValueError(f"refresh_seconds must be a number, got {refresh_seconds!r}")
    if not 0.2 <= refresh_seconds <= 3600:
        raise ValueError(f"refresh_seconds must be between 0.2 and 3600, got {refresh_seconds!r}")
    if plotly_url is None:
        plotly_tag = "<script>" + plotly_js() + "</script>"
    else:
        plotly_tag = f'<script src="{_attr(plotly_url)}"></script>'
    options = {"live": bool(live), "refresh_seconds": refresh_seconds, "data_url": data_url}
    parts = {
        _MARK.format("CSS"): _asset("page.css"),
        _MARK.format("DATA"): to_json(_payload(data)),
        _MARK.format("OPTIONS"): to_json(options),
        _MARK.format("JS"): _asset("page.js"),
        _HTML_MARK.format("PLOTLY"): plotly_tag,
    }
    # One pass over the template: what is put in is never scanned again, so a model or user
    # named like a mark (or Plotly's 4 MB) cannot be taken for one.
    template = _asset("page.html")
    for mark in parts:
        if template.count(mark) != 1:
            raise RuntimeError(f"page template lost its {mark} mark")
    return _MARKS.sub(lambda m: parts[m.group(0)], template)


def _attr(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def write_dashboard(data: Dashboard | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the self-contained page to ``path`` (atomically: a reader never sees half a file).

    The page is first written to a new file next to ``path``, created exclusively under an
    unguessable name (a link planted in a shared directory cannot redirect it), with the
    mode a plain ``open`` gives (0666 less the umask), then renamed over ``path``. An
    ``OSError`` names ``path`` (``FileNotFoundError`` naming its directory too when that is
    missing), never the temporary file."""
    from .._reports._export import replacing

    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(target)!r}: directory {str(target.parent)!r} is missing"
        )
    html = render_dashboard(data).encode("utf-8")
    with replacing(target, ".tmp") as f:
        f.write(html)
    return target
