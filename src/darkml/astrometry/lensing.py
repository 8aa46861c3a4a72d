"""Astrometric lensing of distant sources by NFW subhalos: deflection, velocity, acceleration.

Units: impact parameters in kpc, velocities in km/s, NFW parameters in Msun/kpc^3 and kpc;
outputs in µas (deflection), µas/yr (proper motion) and µas/yr^2 (acceleration).

Geometry (sources at D_i = infinity with v_i = 0, as in the paper's Sec. II C). For a source in
direction n (unit vector) and a lens at heliocentric position R = D_l l_hat moving with
V = v_lens - v_sun (3-D, heliocentric), the impact parameter is the exact perpendicular offset of
the lens centre from the line of sight, b = R - (R.n) n, a vector in the source's tangent
plane pointing from the line of sight towards the lens centre (|b| = D_l sin(theta), theta the
angle between source and lens; the paper's flat-sky D_l theta differs by < 2 % at 20°). Because
the source is at infinity its direction n does not change as the observer moves, so
b(t) = b0 + v_il t exactly, with v_il = V - (V.n) n: eq. (4) with D_l / D_i = 0. The 2-D vectors
are expressed in the SOURCE's basis (e_l, e_b) at n (e_l towards increasing Galactic longitude,
e_b towards increasing latitude): b = (R.e_l, R.e_b), v_il = (V.e_l, V.e_b) — see
:func:`impact_geometry`. Outputs are (l, b) components along the source's e_l, e_b, what an
observer of that source measures (the l component is mu_l* = cos(b) dl/dt).

With k = 4 G / c^2 and (1 - D_l / D_i) = 1:

* eq. (1)  Δθ = -k M(b)/b  b_hat (the image is displaced away from the lens);
* eq. (3)  μ  = -k { M'(b) ḃ / b  b_hat + M(b)/b^2 [v_il - 2 ḃ b_hat] },  ḃ = b_hat . v_il (eq. 5);
* eq. (6)  a  = -k { M'' ḃ^2/b b_hat + M'/b^2 [2ḃ v_il + b̈ b - 4ḃ^2 b_hat]
                      - 2M/b^3 [2ḃ v_il + b̈ b - 3ḃ^2 b_hat] },  b̈ = (|v_il|^2 - ḃ^2)/b (eq. 7).

Note on eq. (6): the paper prints "+3|ḃ|^2 b_hat" in the last bracket; differentiating eq. (3)
gives "-3" (d/dt of -2M ḃ/b^2 b_hat contributes +6 M ḃ^2/b^3 b_hat). We implement the
derivative, and the tests check eq. (6) against a finite difference of eq. (3).

Implementation: the functions take and return separate component tensors (structure of
arrays), broadcast, and run on the device of their inputs, so sky.py evaluates all (subhalo,
pixel) pairs of a map in one call on CPU or CUDA. :func:`velocity` is the hot path of the
maps: it writes eq. (3) as μ = -k [c1 (b.v) b + c2 v] with c2 = M/b^2, c1 = (M' b - 2M)/b^4,
evaluates the NFW closed form (x > 1 branch, atan) for every pair and re-evaluates the few pairs
with x^2 < 1.1 (x < 1 and the series band near x = 1) with :mod:`darkml.physics.nfw`'s careful
evaluation. :func:`deflection` and :func:`acceleration` use :func:`darkml.physics.nfw.projected_mass`
throughout, so the finite-difference test of eq. (3) against eq. (1) compares two separate
evaluations of the NFW terms.

b = 0 (a source exactly behind a lens centre, a set of measure zero) is guarded: b_hat is taken
as 0 and M, M', M'' are evaluated at b = 1e-12 r_s, so results stay finite (the deflection is 0
there; the velocity keeps its finite v_il M/b^2 term at b = 1e-12 r_s).
"""

from __future__ import annotations

import math

import torch

from ..physics import constants as k
from ..physics.nfw import X_MIN, _cylinder_terms, projected_mass

__all__ = ["impact_geometry", "deflection", "velocity", "velocity_far", "velocity_kernel", "acceleration", "K_LENS", "K_VELOCITY"]

#: 4 G Msun / (c^2 kpc): deflection [rad] = K_LENS * M [Msun] / b [kpc]
K_LENS = k.FOUR_G_OVER_C2_KPC_PER_MSUN
#: μ [µas/yr] = K_VELOCITY * (Msun / kpc^2) * (km/s): K_LENS with rad -> µas and km/s -> kpc/yr
K_VELOCITY = K_LENS * k.MUAS_PER_RAD * k.KPC_PER_YR_PER_KMS
_LN2 = math.log(2.0)
_RSQRT_1P1 = 1.0 / math.sqrt(1.1)


def impact_geometry(e_l: torch.Tensor, e_b: torch.Tensor, lens_pos_kpc: torch.Tensor,
                    lens_vel_kms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b_l, b_b [kpc], v_l, v_b [km/s]): impact parameter and eq. (4) velocity in the source basis.

    ``e_l, e_b`` (..., 3): the source's tangent basis; ``lens_pos_kpc`` (..., 3) heliocentric
    position D_l l_hat; ``lens_vel_kms`` (..., 3) heliocentric velocity v_lens - v_sun. Projecting
    onto e_l, e_b (both perpendicular to n) removes the line-of-sight components, so b_l, b_b
    are the components of R - (R.n) n and v_l, v_b those of V - (V.n) n.
    """
    return ((lens_pos_kpc * e_l).sum(-1), (lens_pos_kpc * e_b).sum(-1),
            (lens_vel_kms * e_l).sum(-1), (lens_vel_kms * e_b).sum(-1))


def _b_and_unit(b_l: torch.Tensor, b_b: torch.Tensor, r_s: torch.Tensor):
    b_l, b_b, r_s = torch.broadcast_tensors(b_l, b_b, r_s)
    b = torch.hypot(b_l, b_b)
    inv = torch.where(b > 0, 1.0 / torch.where(b > 0, b, torch.ones_like(b)), torch.zeros_like(b))
    bb = torch.maximum(b, X_MIN * r_s)
    return b, bb, b_l * inv, b_b * inv


def deflection(b_l: torch.Tensor, b_b: torch.Tensor, rho_s, r_s) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1): apparent displacement (Δθ_l, Δθ_b) [µas] of a source at impact parameter (b_l, b_b) [kpc].

    (b_l, b_b) points from the line of sight towards the lens centre; ``rho_s`` [Msun/kpc^3] and
    ``r_s`` [kpc] broadcast.
    """
    r_s = torch.as_tensor(r_s, dtype=b_l.dtype, device=b_l.device)
    b, bb, hl, hb = _b_and_unit(b_l, b_b, r_s)
    M = projected_mass(bb, rho_s, r_s)
    amp = -K_LENS * k.MUAS_PER_RAD * M / bb
    return amp * hl, amp * hb


def velocity_far(b_l: torch.Tensor, b_b: torch.Tensor, v_l: torch.Tensor, v_b: torch.Tensor,
                 amp: torch.Tensor, inv_rs2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (3) for pairs with x^2 = (b/r_s)^2 >= 1.1: (μ_l, μ_b [µas/yr], mask of pairs with x^2 < 1.1).

    Purely elementwise (it can be compiled and fused); the values where the returned mask is
    True are NOT valid and must be replaced (:func:`velocity_kernel` does). ``amp`` =
    -K_VELOCITY * 4 pi rho_s r_s^3 and ``inv_rs2`` = 1/r_s^2 are precomputed per subhalo.
    For x^2 >= 1.1, F = arccos(1/x) / sqrt(x^2 - 1) is well conditioned (relative error < 1e-15).
    """
    x2 = torch.addcmul(b_l * b_l, b_b, b_b).mul_(inv_rs2).clamp_min_(X_MIN * X_MIN)
    ib2 = inv_rs2 / x2  # 1 / b^2 (b >= 1e-12 r_s): the only division
    bv = torch.addcmul(b_l * v_l, b_b, v_b)
    rt = torch.rsqrt((x2 - 1.0).clamp_min_(0.1))  # 1 / sqrt(x^2 - 1)
    F = torch.acos(torch.rsqrt(x2).clamp_max_(_RSQRT_1P1)).mul_(rt)
    m = torch.log(x2).mul_(0.5).sub_(_LN2).add_(F)  # ln(x/2) + F = M / (4 pi rho_s r_s^3)
    xg2 = (1.0 - F).mul_(x2).mul_(rt * rt)  # x^2 g(u) = M' b / (4 pi rho_s r_s^3)
    c2 = m * amp * ib2  # ∝ M / b^2
    c1 = (xg2 - 2.0 * m) * amp * bv * (ib2 * ib2)  # ∝ (M' b - 2M) (b.v) / b^4
    return c2 * v_l + c1 * b_l, c2 * v_b + c1 * b_b, x2 < 1.1


def velocity_kernel(b_l: torch.Tensor, b_b: torch.Tensor, v_l: torch.Tensor, v_b: torch.Tensor,
                    amp: torch.Tensor, inv_rs2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (3) for 1-D pair arrays with per-pair amp = -K_VELOCITY 4 pi rho_s r_s^3 and inv_rs2 = 1/r_s^2.

    :func:`velocity_far` for all pairs, then the pairs with x^2 < 1.1 (x < 1 and the series band
    around x = 1) re-evaluated with :mod:`darkml.physics.nfw`'s careful closed form / series.
    Lengths in kpc, velocities in km/s, output µas/yr.
    """
    mu_l, mu_b, low = velocity_far(b_l, b_b, v_l, v_b, amp, inv_rs2)
    idx = low.nonzero(as_tuple=True)[0]
    if idx.numel():
        bl, bb, vl, vb, a, inv = (t.expand_as(b_l).index_select(0, idx) for t in (b_l, b_b, v_l, v_b, amp, inv_rs2))
        x2 = torch.addcmul(bl * bl, bb, bb).mul_(inv).clamp_min_(X_MIN * X_MIN)
        b2 = x2 / inv
        bv = torch.addcmul(bl * vl, bb, vb)
        x = torch.sqrt(x2)
        m, xg = _cylinder_terms(x, 1)
        c2 = m * a / b2
        c1 = (x * xg - 2.0 * m) * a * bv / (b2 * b2)
        mu_l = mu_l.index_put((idx,), c2 * vl + c1 * bl)
        mu_b = mu_b.index_put((idx,), c2 * vb + c1 * bb)
    return mu_l, mu_b


def velocity(b_l: torch.Tensor, b_b: torch.Tensor, v_l: torch.Tensor, v_b: torch.Tensor, rho_s, r_s) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (3): lensing-induced proper motion (μ_l, μ_b) [µas/yr].

    (b_l, b_b) [kpc]: impact parameter towards the lens; (v_l, v_b) [km/s]: effective lens
    velocity v_il of eq. (4), in the same basis; ``rho_s`` [Msun/kpc^3], ``r_s`` [kpc]. All
    broadcast against each other.
    """
    dt, dev = b_l.dtype, b_l.device
    rho_s = torch.as_tensor(rho_s, dtype=dt, device=dev)
    r_s = torch.as_tensor(r_s, dtype=dt, device=dev)
    b_l, b_b, v_l, v_b, rho_s, r_s = torch.broadcast_tensors(b_l, b_b, v_l, v_b, rho_s, r_s)
    amp = -K_VELOCITY * 4.0 * math.pi * rho_s * r_s**3
    shape = b_l.shape
    mu_l, mu_b = velocity_kernel(b_l.reshape(-1), b_b.reshape(-1), v_l.reshape(-1), v_b.reshape(-1), amp.reshape(-1),
                                 (1.0 / r_s**2).reshape(-1))
    return mu_l.reshape(shape), mu_b.reshape(shape)


def acceleration(b_l: torch.Tensor, b_b: torch.Tensor, v_l: torch.Tensor, v_b: torch.Tensor, rho_s, r_s) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (6) (sign-corrected, see module docstring): lensing-induced acceleration (a_l, a_b) [µas/yr^2]."""
    r_s = torch.as_tensor(r_s, dtype=b_l.dtype, device=b_l.device)
    b, bb, hl, hb = _b_and_unit(b_l, b_b, r_s)
    vl = v_l * k.KPC_PER_YR_PER_KMS
    vb = v_b * k.KPC_PER_YR_PER_KMS
    M, M1, M2 = projected_mass(bb, rho_s, r_s, order=2)
    bdot = hl * vl + hb * vb  # eq. (5)
    bddot = (vl * vl + vb * vb - bdot**2) / bb  # eq. (7)
    bl, bbv = hl * bb, hb * bb
    out = []
    for h, v, bc in ((hl, vl, bl), (hb, vb, bbv)):
        common = 2.0 * bdot * v + bddot * bc
        term1 = M2 * bdot**2 / bb * h
        term2 = M1 / bb**2 * (common - 4.0 * bdot**2 * h)
        term3 = 2.0 * M / bb**3 * (common - 3.0 * bdot**2 * h)
        out.append(-K_LENS * k.MUAS_PER_RAD * (term1 + term2 - term3))
    return out[0], out[1]
