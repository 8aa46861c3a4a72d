"""Markdown tables of the strong-lensing CPU runs, from their metrics.json (docs/lensing-*.md).

    python scripts/lensing_cpu_tables.py lensmode runs/lensmode-fixed-fixed runs/lensmode-fixed-random …
    python scripts/lensing_cpu_tables.py detect runs/lensing-euclid-600 runs/lensing-euclid-physical-600 …
    python scripts/lensing_cpu_tables.py sensitivity runs/lensing-sensitivity
    python scripts/lensing_cpu_tables.py bench runs/equivariant-cpu-classify [runs/equivariant-cpu-regress]
    python scripts/lensing_cpu_tables.py ssl runs/ssl-cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from darkml.equivariant.config import PAPER_TABLE1, PAPER_TABLE2
from darkml.report import fmt_ci

NAMES = {"resnet50": "ResNet50", "c8": "C8 steerable CNN", "hnet": "Harmonic Net", "etn": "Equivariant Transformer"}


def _m(run: str) -> dict:
    return json.loads((Path(run) / "metrics.json").read_text())


def _cfg(run: str) -> dict:
    return yaml.safe_load((Path(run) / "config.yaml").read_text())


def _wall(run: str) -> str:
    info = json.loads((Path(run) / "run.json").read_text())
    secs = sum(float(s.get("wall_s", 0)) for s in info.get("stages", {}).values() if isinstance(s, dict))
    return f"{int(secs // 60)} min {int(secs % 60)} s" if secs else "?"


def lensmode(runs: list[str]) -> str:
    out = ["| main lens | source | macro AUC | accuracy | AUC no substructure / CDM / axion (one vs rest) |",
           "|---|---|---|---|---|"]
    for r in runs:
        over = _cfg(r)["data"].get("sim_overrides", [])
        lens = "random" if "lens.mode=random" in over else "fixed"
        src = "random" if "source.mode=random" in over else "fixed"
        t = _m(r)["benchmark"]["test"]["euclid"]["resnet50"]
        per = " / ".join(f"{t['roc'][c]['auc']:.3f}" for c in ("no_substructure", "cdm", "axion"))
        out.append(f"| {lens} | {src} | {fmt_ci(t['macro_auc'])} | {fmt_ci(t['accuracy'])} | {per} |")
    return "\n".join(out)


def detect(runs: list[str]) -> str:
    out = ["| preset | class | median total subhalo mass [Msun] | sqrt(χ²) raw | sqrt(χ²) refit | oracle AUC raw | oracle AUC refit |",
           "|---|---|---|---|---|---|---|"]
    for r in runs:
        m = _m(r)
        preset = _cfg(r).get("preset", Path(r).name)
        for cls, row in m["detectability"].items():
            q = lambda d: f"{d['median']:.3g} ({d['q16']:.3g}–{d['q84']:.3g})"  # noqa: E731
            mass = f"{row['median_sub_mass_total']:.3g}" if "median_sub_mass_total" in row else "–"
            out.append(f"| `{preset}` | {cls} | {mass} | {q(row['raw']['sqrt_chi2'])} | {q(row['refit']['sqrt_chi2'])} | "
                       f"{fmt_ci(row['raw']['oracle_auc'])} | {fmt_ci(row['refit']['oracle_auc'])} |")
    return "\n".join(out)


def sensitivity(run: str) -> str:
    rows = _m(run)["sensitivity"]["points"]
    out = ["| slope | median (mean) total subhalo mass per CDM image [Msun] | CNN AUC | oracle AUC, lens refitted | oracle AUC, lens known | median sqrt(χ²) refit / raw |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['slope']:+.1f} | {r['median_sub_mass_total']:.3g} ({r['mean_sub_mass_total']:.3g}) | "
                   f"{fmt_ci(r['cnn']['auc'])} | {fmt_ci(r['oracle_refit']['oracle_auc'])} | "
                   f"{fmt_ci(r['oracle_raw']['oracle_auc'])} | {r['oracle_refit']['sqrt_chi2']['median']:.3g} / "
                   f"{r['oracle_raw']['sqrt_chi2']['median']:.3g} |")
    return "\n".join(out) + f"\n\nWall time of the run: {_wall(run)}."


def bench(runs: list[str]) -> str:
    parts = []
    for r in runs:
        b = _m(r)["benchmark"]
        task = b["task"]
        for ds, models in b["test"].items():
            tr = b["training"][ds]
            if task == "classify":
                out = ["| model | parameters | accuracy | macro AUC | paper macro AUC | AUC no sub. / CDM / axion | train img/s | fit wall |",
                       "|---|---|---|---|---|---|---|---|"]
                for name, t in models.items():
                    per = " / ".join(f"{t['roc'][c]['auc']:.3f}" for c in ("no_substructure", "cdm", "axion"))
                    paper = PAPER_TABLE1.get((ds, name), (None, None))[1]
                    out.append(f"| {NAMES.get(name, name)} | {tr[name]['params']:,} | {fmt_ci(t['accuracy'])} | "
                               f"{fmt_ci(t['macro_auc'])} | {paper if paper else '–'} | {per} | "
                               f"{tr[name]['train_images_per_s']:.0f} | {tr[name]['fit_wall_s'] / 60:.1f} min |")
                    if name in b.get("tta", {}).get(ds, {}):
                        out.append(f"| {NAMES.get(name, name)} + C4 TTA | | {fmt_ci(b['tta'][ds][name]['accuracy'])} | "
                                   f"{fmt_ci(b['tta'][ds][name]['macro_auc'])} | | | | |")
            else:
                ref = b["reference"][ds]["rmse"]
                out = [f"| model | RMSE log10 m_a | MAE | paper RMSE | train img/s | fit wall |", "|---|---|---|---|---|---|"]
                for name, t in models.items():
                    paper = PAPER_TABLE2.get((ds, name), (None,))[0]
                    out.append(f"| {NAMES.get(name, name)} | {fmt_ci(t['rmse'])} | {fmt_ci(t['mae'])} | {paper} | "
                               f"{tr[name]['train_images_per_s']:.0f} | {tr[name]['fit_wall_s'] / 60:.1f} min |")
                out.append(f"| predict the training mean | {fmt_ci(ref)} | {fmt_ci(b['reference'][ds]['mae'])} | | | |")
                ceil = b.get("ceiling", {}).get(ds)
                if ceil:
                    out.append(f"| **Bayes-optimal oracle** (the ceiling) | **{fmt_ci(ceil['rmse'])}** | {fmt_ci(ceil['mae'])} | | | |")
            comp = b.get("comparison", {}).get(ds, {})
            if comp:
                key = "Δ macro AUC" if task == "classify" else "Δ RMSE"
                out.append("")
                out.append(f"Paired bootstrap {key} against ResNet50 (same test images, 68 %): " + "; ".join(
                    f"{NAMES.get(k.split('-minus-')[0], k)} {v['value']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]"
                    for k, v in comp.items()) + ".")
            de = b.get("data_efficiency", {}).get(ds, {})
            if de:
                key = "macro_auc" if task == "classify" else "rmse"
                out.append("")
                out.append(f"Data efficiency ({key}): " + "; ".join(
                    f"{NAMES.get(mname, mname)} " + ", ".join(f"{v['n_train']} images {fmt_ci(v[key])}" for v in fr.values())
                    for mname, fr in de.items()) + ".")
            out.append("")
            out.append(f"Wall time: {_wall(r)} (`{r}`).")
            parts.append("\n".join(out))
    return "\n\n".join(parts)


SSL_NAMES = {"supervised": "from scratch (supervised)", "simclr-rotation": "Contrastive (Rotational Pretext)",
             "simclr-noise": "Contrastive (Gaussian Noise Pretext)", "byol": "BYOL", "simsiam": "SimSiam", "dino": "DINO"}


def ssl(run: str) -> str:
    from darkml.ssl.config import PAPER_TABLES, paper_encoder

    m = _m(run)
    parts = []
    for inst, encs in m["results"].items():
        for enc, inits in encs.items():
            fracs = sorted({k for r in inits.values() for k in r.get("classify", {})}, key=float)
            head = " | ".join(f"{f} % labels" for f in fracs)
            out = [f"| {inst}, `{enc}` | {head} | linear probe | RMSE log10 m_a, fine-tuned | RMSE, probe | paper (supervised → SSL) |",
                   "|---" * (len(fracs) + 5) + "|"]
            for init, r in inits.items():
                cells = " | ".join(fmt_ci(r["classify"][f]["macro_auc"]) if f in r.get("classify", {}) else "–" for f in fracs)
                probe = r.get("probe", {})
                paper = PAPER_TABLES.get(inst, {}).get((init, paper_encoder(enc)))
                if init == "supervised":
                    paper_s = "–"
                else:
                    paper_s = f"{paper[0]:.3f} → {paper[1]:.3f}" if paper else "–"
                out.append(f"| {SSL_NAMES.get(init, init)} | {cells} | {fmt_ci(probe.get('macro_auc'))} | "
                           f"{fmt_ci(r.get('regress', {}).get('rmse'))} | {fmt_ci(probe.get('rmse'))} | {paper_s} |")
            ceil = m.get("ceiling", {}).get(inst)
            if ceil:
                blanks = " | ".join("" for _ in fracs)
                out.append(f"| **Bayes-optimal oracle** (the regression's ceiling) | {blanks} | | **{fmt_ci(ceil['rmse'])}** | | |")
            parts.append("\n".join(out))
    summ = m.get("summary", {}).get("ssl_ge_supervised", {})
    if summ:
        parts.append("SSL + fine-tuning ≥ from scratch (macro AUC): " + ", ".join(
            f"{k} % labels {v['count']} of {v['of']}" for k, v in summ.items()) + ".")
    parts.append(f"Wall time: {_wall(run)} (`{run}`).")
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", choices=["lensmode", "detect", "sensitivity", "bench", "ssl"])
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    many = {"lensmode": lensmode, "detect": detect, "bench": bench}  # tables over several runs
    print(many[a.table](a.runs) if a.table in many else {"sensitivity": sensitivity, "ssl": ssl}[a.table](a.runs[0]))


if __name__ == "__main__":
    main()
