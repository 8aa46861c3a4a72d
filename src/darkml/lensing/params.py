"""Strong-lensing parameter records: the configuration and the per-image parameter draw.

A *record* is everything needed to re-render one image: the main lens (SIE + external
shear), the Sérsic source, the substructure (a CDM subhalo catalogue, or the parameters of an
axion vortex) and the seed of its noise field. Records are drawn here, once, with numpy, as a
pure function of ``(config, rng, labels)``; both image backends (``simulate.py`` with
lenstronomy and ``fast.py`` with torch) render the *same* records, so they can be compared
pixel by pixel and a dataset can be re-simulated from its stored records.

Units: angles in arcsec, masses in Msun, axion mass in eV, magnitudes AB-like relative to the
instrument zero point (1 e-/s), images in e-/s per pixel. Every distribution is documented in
``docs/lensing-data.md``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from darkml.physics import constants as const

from .config import (  # noqa: F401 (re-exported: the records' config types)
    MAX_POINT_MASSES,
    AxionCfg,
    CDMCfg,
    CosmologyCfg,
    DatasetCfg,
    ImageCfg,
    InstrumentCfg,
    LensingSimConfig,
    MainLensCfg,
    Range,
    mean_subhalo_mass,
    SourceCfg,
)

__all__ = [
    "CLASS_NAMES",
    "MAX_POINT_MASSES",
    "SCALAR_FIELDS",
    "InstrumentCfg",
    "ImageCfg",
    "CosmologyCfg",
    "MainLensCfg",
    "SourceCfg",
    "CDMCfg",
    "AxionCfg",
    "DatasetCfg",
    "LensingSimConfig",
    "Records",
    "RecordError",
    "einstein_radius",
    "sersic_bn",
    "sersic_amp_from_magnitude",
    "sersic_total_flux",
    "subhalo_masses",
    "mean_subhalo_mass",
    "vortex_half_length",
    "draw_records",
    "check_records",
    "point_masses",
    "noise_fields",
    "noise_sigmas",
    "psf_kernel",
    "psf_kernel_1d",
    "pixel_grid",
    "class_labels",
]

#: label -> class name (label 0, 1, 2)
CLASS_NAMES = ("no_substructure", "cdm", "axion")



class RecordError(ValueError):
    """A parameter record is non-finite or unphysical (e.g. a degenerate draw)."""
























# ---------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _theta_e_unit(H0: float, Om0: float, Ob0: float, z_lens: float, z_source: float) -> float:
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=H0, Om0=Om0, Ob0=Ob0)
    d_l = cosmo.angular_diameter_distance(z_lens).value * const.MPC
    d_s = cosmo.angular_diameter_distance(z_source).value * const.MPC
    d_ls = cosmo.angular_diameter_distance(z_lens, z_source).value * const.MPC
    theta = math.sqrt(4 * const.G * const.M_SUN / const.C**2 * d_ls / (d_l * d_s))
    return theta / const.ARCSEC


def einstein_radius(mass_msun, cosmology: CosmologyCfg | None = None):
    """Einstein radius [arcsec] of a point mass [Msun]: sqrt(4GM/c^2 D_ls/(D_l D_s)).

    Distances are angular-diameter distances in flat LCDM (astropy); broadcasts over mass.
    """
    c = cosmology or CosmologyCfg()
    unit = _theta_e_unit(c.H0, c.Om0, c.Ob0, c.z_lens, c.z_source)
    return unit * np.sqrt(np.asarray(mass_msun, dtype=np.float64))


def sersic_bn(n):
    """b_n of the Sérsic profile in lenstronomy's approximation 1.9992 n - 0.3271 (floored);
    numpy, or torch for a tensor (differentiable)."""
    if hasattr(n, "clamp"):
        return (1.9992 * n - 0.3271).clamp(min=1e-5)
    return np.maximum(1.9992 * np.asarray(n, dtype=np.float64) - 0.3271, 1e-5)


def sersic_total_flux(amp, r_sersic, n_sersic):
    """Total flux [e-/s] of I(R) = amp exp(-b_n((R/R_s)^(1/n) - 1)), R the product-average radius.

    F = amp 2 pi n R_s^2 e^{b_n} b_n^{-2n} Gamma(2n); the product-average elliptical radius has
    unit Jacobian, so F does not depend on the ellipticity.
    """
    n = np.asarray(n_sersic, dtype=np.float64)
    bn = sersic_bn(n)
    return np.asarray(amp) * 2 * np.pi * n * np.asarray(r_sersic) ** 2 * np.exp(bn) * bn ** (-2 * n) * special.gamma(2 * n)


def sersic_amp_from_magnitude(magnitude, r_sersic, n_sersic, zero_point):
    """Sérsic amplitude [e-/s/arcsec^2 at R_s] giving total magnitude ``magnitude``."""
    flux = 10.0 ** (-0.4 * (np.asarray(magnitude, dtype=np.float64) - zero_point))
    return flux / sersic_total_flux(1.0, r_sersic, n_sersic)


def subhalo_masses(u, mass_min: float, mass_max: float, slope: float):
    """Inverse-CDF draw from dN/dM ∝ M**slope on [mass_min, mass_max] (Msun) for uniforms u."""
    u = np.asarray(u, dtype=np.float64)
    beta = slope + 1.0
    if abs(beta) < 1e-12:  # dN/dM ∝ 1/M: log-uniform
        return mass_min * (mass_max / mass_min) ** u
    lo, hi = mass_min**beta, mass_max**beta
    return (lo + u * (hi - lo)) ** (1.0 / beta)


def vortex_half_length(m_axion_ev, length_scale: float = 0.06):
    """Vortex half-length [arcsec] = length_scale * 1e-22 eV / (2 m_a) (DeepLense, halo at z=0.5)."""
    return length_scale * 1e-22 / (2.0 * np.asarray(m_axion_ev, dtype=np.float64))


def class_labels(start: int, n: int) -> np.ndarray:
    """Labels of samples ``start .. start+n-1``: classes interleave (k % 3), so any prefix is balanced."""
    return (np.arange(start, start + n, dtype=np.int64) % 3).astype(np.int64)


# ---------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------
#: per-image scalar fields of a record, in storage order (the ``params`` array columns)
SCALAR_FIELDS = (
    "label",
    "lens_mass", "lens_theta_E", "lens_e1", "lens_e2", "lens_x", "lens_y", "shear_g1", "shear_g2",
    "src_mag", "src_amp", "src_R", "src_n", "src_e1", "src_e2", "src_x", "src_y",
    "n_sub", "sub_mass_total",
    "log10_m_axion", "vortex_angle", "vortex_L_half", "vortex_mass", "vortex_n",
    "noise_seed",
)
#: columns of the CDM subhalo catalogue (``index`` is the position within the record batch)
SUBHALO_FIELDS = ("index", "x", "y", "mass", "theta_E")


@dataclass
class Records:
    """A batch of parameter records (struct of arrays).

    ``scalars[name]`` has shape (B,) for every name in :data:`SCALAR_FIELDS`;
    ``subhalos[name]`` are 1-D columns of the CDM catalogue, ``index`` in [0, B).
    """

    scalars: dict[str, np.ndarray]
    subhalos: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(len(self.scalars["label"]))

    @property
    def labels(self) -> np.ndarray:
        return self.scalars["label"].astype(np.int64)

    def subset(self, idx) -> "Records":
        idx = np.asarray(idx, dtype=np.int64)
        scal = {k: v[idx] for k, v in self.scalars.items()}
        remap = np.full(len(self), -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        keep = np.isin(self.subhalos["index"], idx)
        sub = {k: v[keep] for k, v in self.subhalos.items()}
        sub["index"] = remap[sub["index"]]
        order = np.argsort(sub["index"], kind="stable")
        return Records(scal, {k: v[order] for k, v in sub.items()})

    def params_array(self) -> np.ndarray:
        """(B, len(SCALAR_FIELDS)) float64 matrix in storage order."""
        return np.stack([np.asarray(self.scalars[k], dtype=np.float64) for k in SCALAR_FIELDS], axis=1)

    @classmethod
    def from_arrays(cls, params: np.ndarray, noise_seed: np.ndarray, subhalos: dict[str, np.ndarray]) -> "Records":
        scal = {k: params[:, j].copy() for j, k in enumerate(SCALAR_FIELDS)}
        scal["noise_seed"] = np.asarray(noise_seed, dtype=np.int64)
        scal["label"] = scal["label"].astype(np.int64)
        return cls(scal, {k: np.asarray(subhalos[k]) for k in SUBHALO_FIELDS})


def _uniform(rng: np.random.Generator, r: Range, n: int) -> np.ndarray:
    return rng.uniform(r[0], r[1], n) if r[1] > r[0] else np.full(n, float(r[0]))


def _polar(rng: np.random.Generator, modulus: Range, n: int) -> tuple[np.ndarray, np.ndarray]:
    mod = _uniform(rng, modulus, n)
    ang = rng.uniform(0.0, np.pi, n)  # ellipticity/shear orientation; spin-2 -> 2*angle
    return mod * np.cos(2 * ang), mod * np.sin(2 * ang)


def draw_records(cfg: LensingSimConfig, rng: np.random.Generator, labels: np.ndarray) -> Records:
    """Draw one record per entry of ``labels`` (0 none, 1 CDM, 2 axion): a pure function of
    ``(cfg, rng state, labels)``. Every class draws every main-lens/source parameter in the same
    order, so the three classes share one main-lens and source distribution.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or np.any((labels < 0) | (labels > 2)):
        raise RecordError("labels must be a 1-D array of 0 (none), 1 (CDM) or 2 (axion)")
    n = len(labels)
    L, S, C, A, I = cfg.lens, cfg.source, cfg.cdm, cfg.axion, cfg.instrument
    s: dict[str, np.ndarray] = {"label": labels.copy()}
    # main lens
    s["lens_mass"] = _uniform(rng, L.halo_mass, n)
    s["lens_theta_E"] = einstein_radius(s["lens_mass"], cfg.cosmology)
    s["lens_e1"], s["lens_e2"] = _polar(rng, L.ellipticity, n)
    s["lens_x"] = rng.uniform(-L.center, L.center, n) if L.center > 0 else np.zeros(n)
    s["lens_y"] = rng.uniform(-L.center, L.center, n) if L.center > 0 else np.zeros(n)
    s["shear_g1"], s["shear_g2"] = _polar(rng, L.shear, n)
    if L.mode == "fixed":  # the scripts' lens; drawn above anyway so both modes share the rest of the stream
        F = L.fixed
        s["lens_mass"] = np.full(n, F.halo_mass)
        s["lens_theta_E"] = einstein_radius(s["lens_mass"], cfg.cosmology)
        s["lens_e1"], s["lens_e2"] = np.full(n, F.e1), np.full(n, F.e2)
        s["shear_g1"], s["shear_g2"] = np.full(n, F.gamma1), np.full(n, F.gamma2)
    # source
    s["src_mag"] = _uniform(rng, S.magnitude, n)
    s["src_R"] = _uniform(rng, S.r_sersic, n)
    s["src_n"] = _uniform(rng, S.n_sersic, n)
    s["src_e1"], s["src_e2"] = _polar(rng, S.ellipticity, n)
    s["src_x"] = rng.uniform(-S.center, S.center, n)
    s["src_y"] = rng.uniform(-S.center, S.center, n)
    if S.mode == "fixed":  # the scripts' source (the centre stays random); same stream as random
        FS = S.fixed
        s["src_mag"], s["src_R"], s["src_n"] = np.full(n, FS.magnitude), np.full(n, FS.r_sersic), np.full(n, FS.n_sersic)
        s["src_e1"], s["src_e2"] = np.full(n, FS.e1), np.full(n, FS.e2)
    s["src_amp"] = sersic_amp_from_magnitude(s["src_mag"], s["src_R"], s["src_n"], I.zero_point)
    # fixed-length draws first (counts, axion parameters, noise seeds) so that every class
    # consumes the stream identically up to the variable-length subhalo catalogue
    counts = rng.poisson(C.mean_number, n)  # drawn in both count modes (same stream)
    if C.count == "fixed":
        counts = np.full(n, int(C.mean_number))
    counts = np.where(labels == 1, counts, 0)
    is_ax = labels == 2
    log10_m = _uniform(rng, A.log10_mass, n)
    angle = rng.uniform(0.0, np.pi, n)
    s["noise_seed"] = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    # CDM subhalo catalogue (label 1)
    if counts.max(initial=0) > C.max_number:
        bad = int(np.argmax(counts))
        raise RecordError(
            f"record {bad}: {int(counts[bad])} subhalos drawn > cdm.max_number = {C.max_number}; raise the cap "
            f"(hard limit {MAX_POINT_MASSES}) or lower cdm.mean_number"
        )
    total = int(counts.sum())
    index = np.repeat(np.arange(n, dtype=np.int64), counts)
    mass = subhalo_masses(rng.uniform(0.0, 1.0, total), C.mass_min, C.mass_max, C.slope)
    radius = rng.uniform(C.r_min, C.r_max, total)
    phi = rng.uniform(0.0, 2 * np.pi, total)
    sub = {
        "index": index,
        "x": s["lens_x"][index] + radius * np.cos(phi),
        "y": s["lens_y"][index] + radius * np.sin(phi),
        "mass": mass,
        "theta_E": einstein_radius(mass, cfg.cosmology),
    }
    s["n_sub"] = counts.astype(np.float64)
    s["sub_mass_total"] = np.bincount(index, weights=mass, minlength=n)
    # axion vortex (label 2)
    s["log10_m_axion"] = np.where(is_ax, log10_m, np.nan)
    s["vortex_angle"] = np.where(is_ax, angle, 0.0)
    s["vortex_L_half"] = np.where(is_ax, vortex_half_length(10.0**log10_m, A.length_scale), 0.0)
    s["vortex_mass"] = np.where(is_ax, A.vortex_mass, 0.0)
    s["vortex_n"] = np.where(is_ax, A.n_points, 0).astype(np.float64)
    rec = Records(s, sub)
    check_records(rec)
    return rec


_POSITIVE = ("lens_theta_E", "src_amp", "src_R", "src_n")


def check_records(rec: Records) -> None:
    """Raise :class:`RecordError` naming the record and field if anything is non-finite/unphysical."""
    for k in SCALAR_FIELDS:
        v = np.asarray(rec.scalars[k], dtype=np.float64)
        bad = ~np.isfinite(v)
        if k == "log10_m_axion":
            bad = bad & (rec.labels == 2)
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordError(f"record {i}: {k} = {v[i]!r} is not finite (degenerate parameter draw)")
    for k in _POSITIVE:
        v = rec.scalars[k]
        if np.any(v <= 0):
            i = int(np.argmax(v <= 0))
            raise RecordError(f"record {i}: {k} = {v[i]!r} must be > 0")
    e_l = np.hypot(rec.scalars["lens_e1"], rec.scalars["lens_e2"])
    e_s = np.hypot(rec.scalars["src_e1"], rec.scalars["src_e2"])
    if np.any(e_l >= 0.9) or np.any(e_s >= 0.9):
        raise RecordError("a record has |e| >= 0.9 (lens or source ellipticity out of range)")
    for k in ("x", "y", "mass", "theta_E"):
        v = rec.subhalos[k]
        if v.size and not np.all(np.isfinite(v)):
            raise RecordError(f"subhalo catalogue column {k} has non-finite values (degenerate draw)")
    if rec.subhalos["theta_E"].size and np.any(rec.subhalos["theta_E"] < 0):
        raise RecordError("subhalo theta_E must be >= 0")
    npm = np.bincount(rec.subhalos["index"], minlength=len(rec)) + rec.scalars["vortex_n"].astype(np.int64)
    if npm.max(initial=0) > MAX_POINT_MASSES:
        i = int(np.argmax(npm))
        raise RecordError(f"record {i}: {int(npm[i])} point masses > limit {MAX_POINT_MASSES}")


def point_masses(rec: Records, cosmology: CosmologyCfg | None = None) -> dict[str, np.ndarray]:
    """All point masses of a record batch: the CDM catalogue plus the vortex points.

    A vortex of ``vortex_n`` equal masses ``vortex_mass / vortex_n`` is placed evenly
    (``linspace``) on the segment of half-length ``vortex_L_half`` through the lens centre at
    position angle ``vortex_angle``. Returns columns ``index, x, y, theta_E`` sorted by index.
    """
    idx = [rec.subhalos["index"]]
    xs, ys, te = [rec.subhalos["x"]], [rec.subhalos["y"]], [rec.subhalos["theta_E"]]
    nv = rec.scalars["vortex_n"].astype(np.int64)
    for i in np.nonzero(nv > 0)[0]:
        k = int(nv[i])
        t = np.linspace(-1.0, 1.0, k) * rec.scalars["vortex_L_half"][i] if k > 1 else np.zeros(1)
        a = rec.scalars["vortex_angle"][i]
        idx.append(np.full(k, i, dtype=np.int64))
        xs.append(rec.scalars["lens_x"][i] + t * np.cos(a))
        ys.append(rec.scalars["lens_y"][i] + t * np.sin(a))
        te.append(np.full(k, float(einstein_radius(rec.scalars["vortex_mass"][i] / k, cosmology))))
    index = np.concatenate(idx).astype(np.int64)
    order = np.argsort(index, kind="stable")
    return {
        "index": index[order],
        "x": np.concatenate(xs)[order],
        "y": np.concatenate(ys)[order],
        "theta_E": np.concatenate(te)[order],
    }


# ---------------------------------------------------------------------------------------
# instrument: grid, PSF, noise
# ---------------------------------------------------------------------------------------
def pixel_grid(num_pix: int, pixel_scale: float, supersampling: int = 1) -> np.ndarray:
    """1-D coordinates [arcsec] of (sub-)pixel centres; the image centre is (0, 0).

    Pixel j spans [(j - (n-1)/2 - 1/2) d, (j - (n-1)/2 + 1/2) d]; its s sub-pixels sit at
    offsets (k + 1/2)/s - 1/2 pixels (lenstronomy's make_subgrid convention). Image arrays
    are indexed [row = y, column = x] with x and y increasing with the index.
    """
    s = int(supersampling)
    j = np.arange(num_pix * s)
    return ((j // s) - (num_pix - 1) / 2.0 + ((j % s) + 0.5) / s - 0.5) * pixel_scale


def psf_kernel_1d(instrument: InstrumentCfg) -> np.ndarray:
    """1-D factor g of the PSF kernel (:func:`psf_kernel` = outer(g, g)), unit sum."""
    sigma = instrument.psf_fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    r = max(int(round(instrument.psf_truncation * sigma / instrument.pixel_scale)), 1)
    x = np.arange(-r, r + 1) * instrument.pixel_scale
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def psf_kernel(instrument: InstrumentCfg) -> np.ndarray:
    """Gaussian PSF point-sampled at pixel centres, radius round(truncation*sigma/pixel) >= 1
    pixels, normalised to unit sum (lenstronomy's kernel_gaussian convention)."""
    g = psf_kernel_1d(instrument)
    return np.outer(g, g)


def noise_sigmas(instrument: InstrumentCfg) -> tuple[float, float]:
    """(background sigma [e-/s per pixel], total exposure [s]).

    sigma_bkg = sqrt(N_exp RN^2 + t_tot * sky * pixel^2) / t_tot with sky = 10^(-0.4(mu_sky - ZP))
    e-/s/arcsec^2; a pixel with mean f [e-/s] has noise sigma sqrt(sigma_bkg^2 + max(f,0)/t_tot)
    (Gaussian limit of the Poisson term, as lenstronomy's ``estimate_noise``).
    """
    t_tot = instrument.exposure_time * instrument.num_exposures
    sky = 10.0 ** (-0.4 * (instrument.sky_brightness - instrument.zero_point)) * instrument.pixel_scale**2
    sigma = math.sqrt(instrument.num_exposures * instrument.read_noise**2 + t_tot * sky) / t_tot
    return sigma, t_tot


def noise_fields(noise_seeds, num_pix: int) -> np.ndarray:
    """Standard-normal fields (B, 1, n, n) float32, one per record.

    Record i's field is ``torch.empty(1, n, n).normal_(generator=torch.Generator("cpu")
    .manual_seed(noise_seed[i]))``: always drawn on the CPU (so CPU and CUDA runs share them) and
    used unchanged by both backends.
    """
    import torch

    seeds = np.asarray(noise_seeds, dtype=np.int64)
    out = torch.empty((len(seeds), 1, num_pix, num_pix), dtype=torch.float32)
    g = torch.Generator(device="cpu")
    for i, sd in enumerate(seeds):
        g.manual_seed(int(sd))
        out[i].normal_(generator=g)
    return out.numpy()
