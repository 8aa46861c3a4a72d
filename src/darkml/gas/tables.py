"""The gas study's result tables in docs/gas.md, generated from a run's metrics.json so they cannot go stale.

    python -m darkml.gas.tables runs/gas-cpu --name cpu --update docs/gas.md

reads ``runs/gas-cpu/metrics.json``, keeps the numbers the tables need in
``docs/results/gas-<name>.json`` (committed: a test regenerates the tables from it and compares
them with the docs), and rewrites every block of ``docs/gas.md`` fenced by

    <!-- generated: gas-<name>-<table> -->
    ...
    <!-- end generated -->

Tables: ``table1`` (Table 1 with 68 % bootstrap intervals beside the paper and the noise floor),
``hotspots`` (the hot-spot error under each reading of the paper's definition, metrics.py),
``timings``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["PAPER", "extract", "render", "replace_generated", "update_markdown", "main"]

#: Table 1 of the paper (real MOPRA): GP, WMAE CNN, Poisson CNN
PAPER = {"pearson": (0.84, 0.87, 0.85), "scaled_abs_error": (0.0137, 0.0135, 0.0136),
         "hotspot_abs_error": (0.0238, 0.0257, 0.0263)}
LABELS = {"gp": "Matérn GP", "cnn_wmae": "WMAE CNN", "cnn_poisson": "Poisson CNN", "ring_linear": "per-ring linear",
          "physics_inverse": "physics inverse", "floor_conditional_median": "floor: MC median[13CO\\|12CO]",
          "floor_oracle_inverse": "floor: oracle inverse", "floor_target_noise": "bound: noise-free target"}
MAIN = ("gp", "cnn_wmae", "cnn_poisson")


def extract(metrics: dict[str, Any], command: str) -> dict[str, Any]:
    """The part of a run's metrics.json the tables use (small enough to commit)."""
    ev = metrics["evaluate"]
    keep = ("models", "noise_floor", "ratio_to_floor", "ranking", "hotspot_definitions", "hotspot", "n_test_planes")
    return {"command": command, "evaluate": {k: ev[k] for k in keep if k in ev},
            "timings_s": metrics.get("timings_s", {}), "dataset": {k: v for k, v in metrics.get("dataset", {}).items()
                                                                   if k in ("n_samples", "source", "pixels_per_tile")}}


def _ci(s: dict[str, Any], digits: int) -> str:
    if s is None or s.get("value") is None:
        return "—"
    v = f"{s['value']:.{digits}f}"
    if s.get("lo") is None:
        return v
    return f"{v} [{s['lo']:.{digits}f}, {s['hi']:.{digits}f}]"


def _table1(res: dict[str, Any]) -> str:
    ev = res["evaluate"]
    ratio = ev.get("ratio_to_floor", {})
    hs = ev.get("hotspot_definitions", {}).get(f"{ev.get('hotspot', 'plane')}/hot", {})
    rows = ["| model | correlation | scaled abs. error | hot-spot error | hot / scaled | error / floor |",
            "|---|---|---|---|---|---|"]
    names = [n for n in LABELS if n in ev["models"]]
    best = {m: min((ev["models"][n][m]["value"], n) for n in MAIN if n in ev["models"]
                   and ev["models"][n][m]["value"] is not None)[1] for m in ("scaled_abs_error", "hotspot_abs_error")}
    best["pearson"] = max((ev["models"][n]["pearson"]["value"], n) for n in MAIN if n in ev["models"])[1]
    for n in names:
        m = ev["models"][n]
        cells = []
        for k, d in (("pearson", 3), ("scaled_abs_error", 4), ("hotspot_abs_error", 4)):
            c = _ci(m[k], d)
            cells.append(f"**{c}**" if best.get(k) == n else c)
        r = hs.get(n, {}).get("ratio_of_medians")
        f = ratio.get(n)
        rows.append(f"| {LABELS[n]} | {' | '.join(cells)} | {'—' if r is None else f'{r:.2f}'} | "
                    f"{'—' if f is None else f'{f:.2f}'} |")
    p = PAPER
    rows.append(f"| *paper (real MOPRA): GP / WMAE / Poisson* | *{' / '.join(map(str, p['pearson']))}* | "
                f"*{' / '.join(map(str, p['scaled_abs_error']))}* | *{' / '.join(map(str, p['hotspot_abs_error']))}* | "
                f"*{' / '.join(f'{h / s:.2f}' for h, s in zip(p['hotspot_abs_error'], p['scaled_abs_error']))}* | |")
    return "\n".join(rows)


def _hotspots(res: dict[str, Any]) -> str:
    ev = res["evaluate"]
    defs = ev.get("hotspot_definitions", {})
    names = [n for n in (*MAIN, "floor_conditional_median", "floor_target_noise") if n in ev["models"]]
    head = "| hot spots: threshold over / error averaged over | " + " | ".join(LABELS[n] for n in names) + \
           " | hot pixels | planes with hot spots |"
    rows = [head, "|" + "---|" * (len(names) + 3)]
    what = {"bin": "velocity bin", "bin_normalised": "bin of max-normalised planes", "plane": "plane"}
    for key, d in defs.items():
        rule, norm, *denom = key.split("/")
        cells = []
        for n in names:
            h, r = d[n]["hotspot_abs_error"]["value"], d[n]["ratio_of_medians"]
            cells.append("—" if h is None else f"{h:.4f} ({r:.2f}×)")
        any_n = d[names[0]]
        tag = " **(used)**" if rule == ev.get("hotspot") and norm == "hot" else ""
        over = "hot spots" if norm == "hot" else "all pixels (formula verbatim)"
        over += ", errors / the bin's maximum" if denom else ""
        tag = "" if denom else tag
        rows.append(f"| {what[rule]} / {over}{tag} | "
                    + " | ".join(cells) + f" | {100 * any_n['hot_pixel_fraction']:.1f} % | {any_n['planes_with_hot_spots']} |")
    return "\n".join(rows)


def _timings(res: dict[str, Any]) -> str:
    t = res.get("timings_s", {})
    keys = [k for k in ("simulate", "train/gp", "train/hpsearch", "train/cnn_wmae", "train/cnn_poisson", "evaluate",
                        "report") if k in t]
    total = sum(t[k] for k in ("simulate", "train", "evaluate", "report") if k in t)
    return ("| " + " | ".join(keys) + " | total |\n|" + "---|" * (len(keys) + 1) + "\n| "
            + " | ".join(f"{t[k]:.0f} s" for k in keys) + f" | {total / 60:.1f} min |")


TABLES = {"table1": _table1, "hotspots": _hotspots, "timings": _timings}


def render(res: dict[str, Any], table: str) -> str:
    return TABLES[table](res)


def replace_generated(text: str, key: str, render_block) -> tuple[str, int]:
    """Rewrite every ``<!-- generated: KEY -->`` … ``<!-- end generated -->`` block of ``text``
    whose key matches the regular expression ``key``; ``render_block(match)`` gives the new
    content. Returns the new text and the number of blocks rewritten."""
    pat = re.compile(r"(<!-- generated: " + key + r" -->)\n.*?(<!-- end generated -->)", re.S)
    return pat.subn(lambda m: f"{m.group(1)}\n{render_block(m)}\n{m.group(m.lastindex)}", text)


def update_markdown(text: str, name: str, res: dict[str, Any]) -> tuple[str, int]:
    """Replace every ``gas-<name>-<table>`` block; returns the new text and the number of blocks."""
    return replace_generated(text, "gas-" + re.escape(name) + r"-(\w+)", lambda m: render(res, m.group(2)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate the gas study's docs tables from a run's metrics.json")
    ap.add_argument("run_dir", nargs="?", help="run directory (omit it to render from the committed --results file)")
    ap.add_argument("--name", default="cpu", help="table set name: blocks gas-<name>-<table>")
    ap.add_argument("--command", default=None, help="the command that made the run (recorded beside the numbers)")
    ap.add_argument("--results", default=None, help="JSON kept for the docs (default docs/results/gas-<name>.json)")
    ap.add_argument("--update", default=None, help="markdown file whose generated blocks are rewritten")
    args = ap.parse_args(argv)
    results = Path(args.results or f"docs/results/gas-{args.name}.json")
    if args.run_dir:
        metrics = json.loads((Path(args.run_dir) / "metrics.json").read_text())
        command = args.command or f"darkml gas run --preset {args.name} --run-dir {args.run_dir}"
        res = extract(metrics, command)
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(res, indent=1) + "\n")
    else:
        res = json.loads(results.read_text())
    if args.update:
        path = Path(args.update)
        new, n = update_markdown(path.read_text(), args.name, res)
        path.write_text(new)
        print(f"{path}: {n} generated tables rewritten from {results}")
    else:
        for t in TABLES:
            print(f"## {t}\n{render(res, t)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
