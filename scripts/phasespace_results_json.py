"""Collect the phase-space runs behind docs/phasespace.md into docs/results/phasespace-cpu.json.

    python scripts/phasespace_results_json.py OUT.json RUN_DIR... [--wall RUN=SECONDS ...] [--command RUN="..."]

For every run: stars and members per dataset, the acceleration and density rows at the Sun
(with stat. and syst.), the accuracy summary, the dark-matter rows and, where the run tilted ν,
the tilt's per-member held-out gains and Wald p-values — all read from the run's metrics.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summarise(run_dir: str) -> dict:
    met = json.loads((Path(run_dir) / "metrics.json").read_text())
    meas = met["measure"]
    out = {
        "n_stars": {k: v["n_stars"] for k, v in met.get("train", {}).items() if isinstance(v, dict) and "n_stars" in v},
        "members": meas["cost"]["members"],
        "sun_acceleration_kpc_per_gyr2": meas["sun_acceleration"],
        "sun_density_1e7_msun_per_kpc3": meas["sun_density"],
        "accuracy": meas["accuracy"],
        "dark_matter": meas.get("dark_matter"),
    }
    if "nu_tilt" in meas:
        out["nu_tilt"] = {name: {k: t[k] for k in ("terms", "width_kpc", "val_gain_nats_per_star", "p_value") if k in t}
                          for name, t in meas["nu_tilt"].items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--wall", nargs="*", default=[], help="RUN=SECONDS (wall time of the run's command)")
    ap.add_argument("--command", nargs="*", default=[], help='RUN="the command that made it"')
    a = ap.parse_args(argv)
    doc = {"commands": dict(c.split("=", 1) for c in a.command),
           "wall_s": {k: float(v) for k, v in (w.split("=", 1) for w in a.wall)},
           "runs": {r: summarise(r) for r in a.runs}}
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}: {len(a.runs)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
