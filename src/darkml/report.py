"""One self-contained ``report.html`` per run: figures embedded as base64 PNG, tables, config.

Usage::

    rep = Report("Astrometric lensing — quick")
    rep.add_text("<p>…</p>")
    rep.add_figure(fig, "ROC curves per scenario", name="roc")   # also saved to figures/roc.png
    rep.add_table(rows, "AUC per scenario")
    rep.add_config(config_dict)
    rep.write(run.report_path, figures_dir=run.figures)

The page needs nothing but a browser: no scripts, no external CSS or images.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import os
import platform
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import __version__
from .runs import atomic_write_bytes, atomic_write_text, to_jsonable

log = logging.getLogger(__name__)

__all__ = ["Report", "fmt_ci", "figure_overlaps", "FigureLayoutError"]


class FigureLayoutError(AssertionError):
    """A report figure has panels, colour bars or legends that cover one another."""


def figure_overlaps(fig: Any, tol_px: float = 1.0) -> list[str]:
    """Pairs of a figure's panels, colour bars, insets and legends that cover one another.

    Every visible axes (panels and colour bars alike) is a box in display pixels; an inset
    (an axes in another's ``child_axes``) may only lie inside its parent; a legend may only
    lie inside its own axes (or, for a figure legend, outside every axes). Overlaps of less
    than ``tol_px`` pixels in either direction (touching edges) are ignored. Returns one line
    per offending pair; empty when the layout is clean.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [a for a in fig.axes if a.get_visible()]
    parent = {id(c): a for a in axes for c in getattr(a, "child_axes", [])}
    axes += [c for a in list(axes) for c in getattr(a, "child_axes", []) if c.get_visible() and c not in axes]

    def name(a) -> str:
        label = a.get_label() or ""
        title = a.get_title() or a.get_ylabel() or a.get_xlabel() or label
        is_cbar = label == "<colorbar>" or getattr(a, "_colorbar", None) is not None
        kind = "colour bar" if is_cbar else ("inset" if id(a) in parent else "panel")
        return f"{kind} {title!r}" if title and title != "<colorbar>" else f"{kind} #{axes.index(a)}"

    def overlap(b1, b2) -> bool:
        w = min(b1.x1, b2.x1) - max(b1.x0, b2.x0)
        h = min(b1.y1, b2.y1) - max(b1.y0, b2.y0)
        return w > tol_px and h > tol_px

    def inside(b, outer) -> bool:
        return b.x0 >= outer.x0 - tol_px and b.x1 <= outer.x1 + tol_px and b.y0 >= outer.y0 - tol_px and b.y1 <= outer.y1 + tol_px

    boxes = [(a, a.get_window_extent(renderer)) for a in axes]
    out = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            pa, pb = parent.get(id(a)), parent.get(id(b))
            if pa is b or pb is a:
                child, box, outer = (a, ba, bb) if pa is b else (b, bb, ba)
                if not inside(box, outer):
                    out.append(f"{name(child)} sticks out of its parent {name(parent[id(child)])}")
                continue
            if overlap(ba, bb):
                out.append(f"{name(a)} overlaps {name(b)}")
    legends = [(a, a.get_legend()) for a in axes if a.get_legend() is not None]
    legends += [(None, lg) for lg in getattr(fig, "legends", [])]
    for owner, lg in legends:
        if not lg.get_visible():
            continue
        bl = lg.get_window_extent(renderer)
        for a, ba in boxes:
            if a is owner or (owner is not None and parent.get(id(a)) is owner):
                continue
            if overlap(bl, ba):
                where = f"legend of {name(owner)}" if owner is not None else "figure legend"
                out.append(f"{where} covers {name(a)}")
    return out

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;color:#222;line-height:1.45;padding:0 1rem}
h1{border-bottom:2px solid #334;padding-bottom:.3rem}h2{margin-top:2.2rem;color:#234}
figure{margin:1.2rem 0;text-align:center}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.92rem;color:#444;margin-top:.4rem}
table{border-collapse:collapse;margin:1rem 0;font-size:.92rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}caption{caption-side:top;font-weight:600;text-align:left;padding:.3rem 0}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.85rem;border:1px solid #e1e4e8}
.meta{color:#666;font-size:.85rem}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem .8rem}
"""


def fmt_ci(d: Mapping[str, Any] | float | None, digits: int = 3) -> str:
    """Format ``{"value","lo","hi"}`` as ``0.723 [0.701, 0.744]``."""
    if d is None:
        return "–"
    if isinstance(d, Mapping):
        v, lo, hi = d.get("value"), d.get("lo"), d.get("hi")
        if v is None:
            return "–"
        if lo is None or hi is None:
            return f"{v:.{digits}g}" if abs(v) < 1e-3 else f"{v:.{digits}f}"
        if abs(v) < 1e-3 and v != 0:
            return f"{v:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    try:
        v = float(d)
    except (TypeError, ValueError):
        return html.escape(str(d))
    return f"{v:.{digits}g}" if (v != 0 and abs(v) < 1e-3) or abs(v) >= 1e5 else f"{v:.{digits}f}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "figure"


class Report:
    """Accumulates sections, then writes one HTML file."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._n_fig = 0

    def add_heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def add_text(self, content: str, raw_html: bool = True) -> None:
        """Add a paragraph; ``content`` is HTML unless ``raw_html=False``."""
        self._parts.append(content if raw_html else f"<p>{html.escape(content)}</p>")

    def add_note(self, text: str) -> None:
        self._parts.append(f'<p class="note">{html.escape(text)}</p>')

    def add_figure(self, fig: Any, caption: str = "", name: str | None = None, figures_dir: Path | None = None, dpi: int = 110) -> None:
        """Embed a matplotlib figure (or PNG bytes / a PNG path); optionally save it too."""
        self._n_fig += 1
        if isinstance(fig, (bytes, bytearray)):
            png = bytes(fig)
        elif isinstance(fig, (str, Path)):
            png = Path(fig).read_bytes()
        else:
            bad = figure_overlaps(fig)
            if bad:
                msg = f"figure {name or caption[:40]!r}: " + "; ".join(bad)
                if os.environ.get("DARKML_STRICT_FIGURES"):
                    raise FigureLayoutError(msg)
                log.warning("%s", msg)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
            png = buf.getvalue()
            import matplotlib.pyplot as plt

            plt.close(fig)
        if figures_dir is not None:
            fname = f"{name or _slug(caption) or f'figure-{self._n_fig}'}.png"
            atomic_write_bytes(Path(figures_dir) / fname, png)
        b64 = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>Figure {self._n_fig}. {html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}"/>{cap}</figure>')

    def add_table(self, rows: Iterable[Mapping[str, Any]], caption: str = "", columns: list[str] | None = None) -> None:
        rows = list(rows)
        if not rows:
            self.add_note(f"{caption}: no rows")
            return
        cols = columns or list(dict.fromkeys(k for r in rows for k in r))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = []
        for r in rows:
            cells = []
            for c in cols:
                v = r.get(c, "")
                cells.append(f"<td>{fmt_ci(v) if isinstance(v, (Mapping, float)) else html.escape(str(v))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def add_config(self, cfg: Any, title: str = "Configuration") -> None:
        import yaml

        text = yaml.safe_dump(to_jsonable(cfg), sort_keys=False)
        self.add_heading(title)
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def add_timings(self, timings: Mapping[str, float], title: str = "Timings") -> None:
        rows = [{"stage": k, "wall time [s]": f"{float(v):.1f}"} for k, v in timings.items()]
        self.add_heading(title)
        self.add_table(rows)

    def add_json(self, obj: Any, title: str) -> None:
        self.add_heading(title)
        self._parts.append(f"<pre>{html.escape(json.dumps(to_jsonable(obj), indent=2)[:20000])}</pre>")

    def render(self) -> str:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        meta = f"darkml {__version__} · generated {stamp} · Python {platform.python_version()} on {platform.machine()}"
        sub = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{sub}<p class='meta'>{meta}</p>"
            + "\n".join(self._parts)
            + "</body></html>"
        )

    def add_provenance(self, info: Mapping[str, Any]) -> None:
        """Where the run came from (its ``run.json``): versions, commit, machine, commands, stages."""
        git = info.get("git") or {}
        pk = info.get("packages", {})
        rows = [{"item": "darkml", "value": info.get("darkml", "")},
                {"item": "git commit", "value": (git.get("commit", "") + (" (dirty)" if git.get("dirty") else ""))
                 if git else "not a checkout"},
                {"item": "Python / torch / CUDA", "value": f"{info.get('python', '')} / {pk.get('torch', '–')} / "
                                                           f"{(info.get('cuda') or {}).get('version') or 'none'}"},
                {"item": "machine", "value": f"{info.get('machine', {}).get('processor', '')}, "
                                             f"{info.get('machine', {}).get('cpu_count', '?')} CPUs"},
                {"item": "seed", "value": info.get("seed")}]
        rows += [{"item": f"command ({i.get('time', '')})", "value": i.get("command", "")}
                 for i in info.get("invocations", [])[-5:]]
        self.add_heading("Provenance")
        self.add_table(rows, "From run.json (which also lists every key package's version).")
        stages = [{"stage": k, "status": v.get("status"), "start": v.get("start"), "end": v.get("end"),
                   "wall time [s]": v.get("wall_s")} for k, v in info.get("stages", {}).items()]
        if stages:
            self.add_table(stages, "Stages")

    def write(self, path: Path | str) -> Path:
        """Write the report; a ``run.json`` beside it (a run directory) adds the provenance section."""
        info_path = Path(path).parent / "run.json"
        if info_path.is_file() and not any("<h2>Provenance</h2>" in part for part in self._parts):
            try:
                self.add_provenance(json.loads(info_path.read_text()))
            except (ValueError, OSError):  # pragma: no cover - an unreadable run.json never blocks a report
                log.warning("could not read %s for the report's provenance section", info_path)
        path = atomic_write_text(path, self.render())
        log.info("report written to %s", path)
        return path
