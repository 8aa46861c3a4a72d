"""Lens and light profiles as classes: each owns its parameter names (the record columns), the
config ranges they are drawn from, the mapping to lenstronomy's profile and keyword names, and
the per-image parameters of its torch kernel.

=============  ===================  ===============================================  ==================
profile        lenstronomy          record columns (units)                           drawn from (config)
=============  ===================  ===============================================  ==================
``SIE``        ``SIE``              lens_theta_E ["], lens_e1, lens_e2, lens_x/y ["]  lens.halo_mass,
                                                                                     lens.ellipticity,
                                                                                     lens.center
``Shear``      ``SHEAR``            shear_g1, shear_g2 (about the origin)             lens.shear
``PointMass``  ``POINT_MASS``       point-mass table: theta_E ["], x, y ["]           cdm.*, axion.*
``Sersic``     ``SERSIC_ELLIPSE``   src_amp, src_R ["], src_n, src_e1, src_e2,        source.*
                                    src_x/y ["]
=============  ===================  ===============================================  ==================

The lenstronomy backend (:mod:`.simulate`) builds its keyword lists with
:meth:`Profile.lenstronomy_kwargs`; the torch backend (:mod:`.fast`) stacks
:meth:`Profile.kernel_params` into its parameter matrix in the order of ``kernel_keys`` (SIE
and shear share one fused deflection kernel, ``fast._macro``; point masses ``fast._point_masses``;
the Sérsic source ``fast._source``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from .params import sersic_bn

__all__ = ["Profile", "SIE", "Shear", "PointMass", "Sersic", "SIE_CORE_ARCSEC", "LENS_PROFILES", "SOURCE_PROFILE"]

#: lenstronomy's SIE core s_scale [arcsec]
SIE_CORE_ARCSEC = 1e-10


def _xp(x):
    """numpy, or torch for tensors: ``kernel_params`` run on either (torch keeps gradients, which
    the macro-model refit of :mod:`.detectability` differentiates through)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def _clip(x, lo=None, hi=None):
    if _xp(x) is np:
        return np.clip(x, lo, hi)
    return x.clamp(min=lo, max=hi)


class Profile:
    """One profile: lenstronomy name, keyword -> record column map, constants, config ranges."""

    lenstronomy: ClassVar[str]
    #: lenstronomy keyword -> record column
    columns: ClassVar[Mapping[str, str]]
    #: lenstronomy keywords with fixed values
    constants: ClassVar[Mapping[str, float]] = {}
    #: record column -> the config field whose range it is drawn from
    ranges: ClassVar[Mapping[str, str]] = {}
    #: per-image parameters of the torch kernel, in the order the kernel takes them
    kernel_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def lenstronomy_kwargs(cls, table: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
        """lenstronomy's keyword dict for row ``i`` of a column table (record scalars or point masses)."""
        return {**{kw: table[col][i] for kw, col in cls.columns.items()}, **cls.constants}

    @classmethod
    def kernel_params(cls, sc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError


class SIE(Profile):
    """Singular isothermal ellipsoid (the NIE of Keeton & Kochanek with lenstronomy's 1e-10″
    core), θ_E in the product-average convention, q capped at 0.99999999."""

    lenstronomy = "SIE"
    columns = {"theta_E": "lens_theta_E", "e1": "lens_e1", "e2": "lens_e2", "center_x": "lens_x",
               "center_y": "lens_y"}
    ranges = {"lens_theta_E": "lens.halo_mass", "lens_e1": "lens.ellipticity", "lens_e2": "lens.ellipticity",
              "lens_x": "lens.center", "lens_y": "lens.center"}
    kernel_keys = ("cx", "cy", "cos", "sin", "q", "b", "s", "eps")

    @classmethod
    def kernel_params(cls, sc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        e1, e2 = sc["lens_e1"], sc["lens_e2"]
        xp = _xp(e1)
        phi = xp.arctan2(e2, e1) / 2
        c = _clip(xp.hypot(e1, e2), hi=0.9999)
        q = _clip((1 - c) / (1 + c), hi=0.99999999)
        theta_major = sc["lens_theta_E"] / xp.sqrt((1.0 + q**2) / (2.0 * q))
        b = theta_major * xp.sqrt((1 + q**2) / 2)
        s = SIE_CORE_ARCSEC / xp.sqrt(q)
        eps = xp.sqrt(1.0 - q**2)
        return {"cx": sc["lens_x"], "cy": sc["lens_y"], "cos": xp.cos(phi), "sin": xp.sin(phi), "q": q,
                "b": b / eps, "s": s, "eps": eps}


class Shear(Profile):
    """External shear about the origin."""

    lenstronomy = "SHEAR"
    columns = {"gamma1": "shear_g1", "gamma2": "shear_g2"}
    constants = {"ra_0": 0.0, "dec_0": 0.0}
    ranges = {"shear_g1": "lens.shear", "shear_g2": "lens.shear"}
    kernel_keys = ("g1", "g2")

    @classmethod
    def kernel_params(cls, sc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"g1": sc["shear_g1"], "g2": sc["shear_g2"]}


class PointMass(Profile):
    """A point mass, α = θ_E² (x − x_i)/|x − x_i|² (CDM subhalos; the points of an axion vortex)."""

    lenstronomy = "POINT_MASS"
    columns = {"theta_E": "theta_E", "center_x": "x", "center_y": "y"}
    ranges = {"theta_E": "cdm.mass_range / axion.vortex_mass", "x": "cdm.position / axion", "y": "cdm.position / axion"}
    kernel_keys = ("x", "y", "theta_E2")

    @classmethod
    def kernel_params(cls, pm: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"x": pm["x"], "y": pm["y"], "theta_E2": pm["theta_E"] ** 2}


class Sersic(Profile):
    """Elliptical Sérsic source I = amp exp(−b_n((R/R_s)^{1/n} − 1)) with lenstronomy's b_n."""

    lenstronomy = "SERSIC_ELLIPSE"
    columns = {"amp": "src_amp", "R_sersic": "src_R", "n_sersic": "src_n", "e1": "src_e1", "e2": "src_e2",
               "center_x": "src_x", "center_y": "src_y"}
    ranges = {"src_amp": "source.magnitude", "src_R": "source.r_sersic", "src_n": "source.n_sersic",
              "src_e1": "source.ellipticity", "src_e2": "source.ellipticity", "src_x": "source.center",
              "src_y": "source.center"}
    kernel_keys = ("sx", "sy", "c11", "c12", "c22", "amp", "rs2", "bn", "half_inv_n")

    @classmethod
    def kernel_params(cls, sc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        e1, e2 = sc["src_e1"], sc["src_e2"]
        xp = _xp(e1)
        norm = xp.sqrt(_clip(xp.abs(1 - e1**2 - e2**2), lo=1e-6))
        n = sc["src_n"]
        return {"sx": sc["src_x"], "sy": sc["src_y"], "c11": (1 - e1) / norm, "c12": -e2 / norm,
                "c22": (1 + e1) / norm, "amp": sc["src_amp"], "rs2": _clip(sc["src_R"], lo=1e-4) ** 2,
                "bn": sersic_bn(n), "half_inv_n": 0.5 / n}


#: the macro lens model in the order of lenstronomy's profile list (point masses follow)
LENS_PROFILES: tuple[type[Profile], ...] = (SIE, Shear)
SOURCE_PROFILE: type[Profile] = Sersic
