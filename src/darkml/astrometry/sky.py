"""Sky maps of the astrometric-lensing study: signal on a HEALPix grid, survey noise, projection.

**Signal** (:func:`signal_map`): sources at the centres of the pixels of a RING-ordered HEALPix
grid (``nside`` configurable; the paper uses 128 for Fig. 3 and 32 for the datasets), at
D_i = infinity with v_i = 0. Each subhalo contributes only to pixels whose centre lies within
``max_angle_deg`` (20°, as in the paper) of the subhalo centre; contributions add linearly.
The output is (mu_l, mu_b) in µas/yr, components along each SOURCE pixel's own (e_l, e_b)
(see :mod:`darkml.astrometry.lensing`); the deflection (µas) and acceleration (µas/yr^2) maps
are available with ``quantity=``.

How it is fast: for every subhalo the pixels of its disc are found without a per-subhalo
Python loop — a vectorised ring search (:func:`disc_runs`: for each subhalo and each HEALPix
ring crossing its disc, the contiguous run of pixels within the disc's longitude half-width,
which is exactly the set of pixel centres within ``max_angle_deg``). For the velocity the runs
become a dense (subhalo, slot) table of pixels (:func:`disc_slots`, two cumulative sums), so a
block of consecutive subhalos is evaluated with its per-subhalo quantities broadcast along the
slots and only the pixel basis gathered; eq. (3) runs in float64 torch on the chosen device
(:func:`darkml.astrometry.lensing.velocity_far`, the ~3 % of pairs with b < 1.05 r_s then
re-evaluated with the careful NFW forms) and is scattered into the map with ``index_add_``.
Other quantities use the same table flattened to (subhalo, pixel) pairs (as
:func:`expand_runs` gives them). Blocks hold about ``max_pairs`` slots to stay in cache (CPU)
or bound memory (GPU); :func:`signal_maps` puts several maps through the same blocks.
``compile=True`` fuses the search and the per-slot kernel with ``torch.compile``. ``threads``
(default 1) sets torch's CPU threads for the call.

**Noise** (:func:`add_noise`, Sec. III A): the quasar count of each pixel is Poisson with mean
N_q / N_pix; each quasar's measured proper motion is Normal(signal, sigma_u) per component; the
pixel value is their mean, drawn directly as Normal(signal, sigma_u / sqrt(n)). Pixels with
n = 0 carry no measurement: their value is set to 0 (the expectation of a noise-only pixel)
and the counts are returned so that a mask channel can be built. At nside 32 the mean count
is >= 8,138 for all scenarios of Table I, so empty pixels do not occur in practice.

**Projection** (:func:`projection_index`, :func:`project`): the CNNs see a plate carrée image
of ``height`` x ``width`` pixels (default 64 x 128) in Galactic coordinates: row i has latitude
b_i = 90° - (i + 1/2) 180°/H (row 0 is the north), column j has longitude
l_j = 180° - (j + 1/2) 360°/W (column 0 at l = +180°, l increasing to the left as on the sky;
the image centre is the Galactic centre). Each image pixel takes the value of the HEALPix pixel
containing its centre (``healpy.ang2pix``), so projection is a gather by a precomputed index
and works on numpy arrays or torch tensors of any batch shape. The vector components stay
(mu_l, mu_b): +mu_l points towards increasing l, i.e. towards the LEFT of the image.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..learn.devices import resolve_device as _resolve_device
from . import lensing
from .config import SCENARIOS
from .discs import (  # noqa: F401
    _dense_runs,
    _Grid,
    _grid,
    check_nside,
    disc_pairs,
    disc_runs,
    disc_slots,
    expand_runs,
    pixel_basis,
)

log = logging.getLogger(__name__)

__all__ = [
    "SCENARIOS",
    "QUANTITIES",
    "resolve_device",
    "pixel_basis",
    "signal_map",
    "signal_maps",
    "subhalo_power",
    "disc_pairs",
    "disc_slots",
    "disc_runs",
    "expand_runs",
    "check_nside",
]

#: the quantities :func:`signal_map` can compute and their units
QUANTITIES = {"velocity": "µas/yr", "deflection": "µas", "acceleration": "µas/yr^2"}




def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error (``sky.device``)."""
    return _resolve_device(name, field="sky.device")










_NEED = ("l", "b", "distance", "v_l", "v_b", "v_r", "r_s", "rho_s")


def _catalogue_tensors(cats: Sequence[Mapping[str, Any]], device: torch.device) -> dict[str, Any]:
    """Per-subhalo table of one or several catalogues (concatenated; ``map`` = catalogue index)."""
    cols: dict[str, list[np.ndarray]] = {c: [] for c in _NEED}
    maps = []
    for i, cat in enumerate(cats):
        missing = [c for c in _NEED if c not in cat]
        if missing:
            raise KeyError(f"subhalo catalogue lacks column(s) {missing} (needs {list(_NEED)})")
        n = None
        for c in _NEED:
            v = np.asarray(cat[c], dtype=np.float64).reshape(-1)
            if n is not None and len(v) != n:
                raise ValueError(f"subhalo catalogue column {c!r} has {len(v)} rows, expected {n}")
            n = len(v)
            cols[c].append(v)
        maps.append(np.full(n or 0, i, dtype=np.int64))
    a = {c: torch.as_tensor(np.concatenate(v) if v else np.zeros(0), device=device) for c, v in cols.items()}
    lon, lat = torch.deg2rad(a["l"]), torch.deg2rad(a["b"])
    cl, sl, cb, sb = torch.cos(lon), torch.sin(lon), torch.cos(lat), torch.sin(lat)
    lhat = torch.stack([cb * cl, cb * sl, sb])
    e_l = torch.stack([-sl, cl, torch.zeros_like(cl)])
    e_b = torch.stack([-sb * cl, -sb * sl, cb])
    vel = a["v_l"] * e_l + a["v_b"] * e_b + a["v_r"] * lhat  # (3, n) km/s relative to the Sun
    pos = a["distance"] * lhat  # (3, n) kpc
    r_s, rho_s = a["r_s"], a["rho_s"]
    if bool((r_s <= 0).any()) or bool((rho_s <= 0).any()) or bool((a["distance"] <= 0).any()):
        raise ValueError("subhalo catalogue: r_s, rho_s and distance must all be > 0")
    amp = -lensing.K_VELOCITY * 4.0 * math.pi * rho_s * r_s**3
    table = torch.cat([pos, vel, amp[None], (1.0 / r_s**2)[None], r_s[None], rho_s[None]]).contiguous()
    return {"table": table, "theta": math.pi / 2 - lat, "phi": torch.remainder(lon, 2 * math.pi), "n": len(r_s),
            "map": torch.as_tensor(np.concatenate(maps) if maps else np.zeros(0, np.int64), device=device)}












def _geometry(table: torch.Tensor, basis: torch.Tensor, sub: torch.Tensor, pix: torch.Tensor):
    """(b_l, b_b, v_l, v_b) of each pair in the source pixel's basis (see lensing.impact_geometry)."""
    return _project(*(table[i].index_select(0, sub) for i in range(6)),
                    *(basis[i].index_select(0, pix) for i in range(5)))


def _project(Rx, Ry, Rz, Vx, Vy, Vz, elx, ely, ebx, eby, ebz):
    """Subhalo position R [kpc] and velocity V [km/s] on a source pixel's (e_l, e_b): (b_l, b_b, v_l, v_b)."""
    b_l = Rx * elx + Ry * ely
    b_b = Rx * ebx + Ry * eby + Rz * ebz
    v_l = Vx * elx + Vy * ely
    v_b = Vx * ebx + Vy * eby + Vz * ebz
    return b_l, b_b, v_l, v_b


#: x^2 below which the "mixed" path evaluates pairs in float64 (1 - F loses digits near x = 1 in float32)
MIXED_CAREFUL_X2 = 4.0
PRECISIONS = ("double", "mixed")


def _velocity_slots(cols: torch.Tensor, basis: torch.Tensor, pix: torch.Tensor, count: torch.Tensor,
                    slots: torch.Tensor, mixed: bool = False):
    """Eq. (3) far branch for a block of subhalos' disc slots: (mu_l, mu_b), NaN in mu_l where care is needed.

    ``cols`` (8, nb): R_x,y,z, V_x,y,z, amp, 1/r_s^2 of nb consecutive subhalos (broadcast along
    their slots: no per-pair gathers); ``pix`` (nb, width) and the pixel ``count`` (nb, 1) from
    :func:`disc_slots`, ``slots`` = arange(width), both float64 (the pixel basis is the only
    gather; slots >= count are not pairs and get 0). Pairs that need care get mu_l = NaN, mu_b =
    0, and are evaluated separately in float64: x^2 < 1.1, or with ``mixed`` x^2 <
    MIXED_CAREFUL_X2, the rest then in float32 (geometry stays float64, the output is
    accumulated in float64; error ~1e-7 of a ~1,200-subhalo map's maximum). Purely elementwise
    after the gathers, so ``torch.compile`` fuses it into one loop. (The flag rides in mu_l
    because a compiled CPU kernel writes a separate bool mask several times slower than all the
    arithmetic.)
    """
    valid = slots < count
    b_l, b_b, v_l, v_b = _project(*(c[:, None] for c in cols[:6]), *(basis[i][pix] for i in range(5)))
    amp, inv = cols[6][:, None], cols[7][:, None]
    if mixed:
        low = (b_l * b_l + b_b * b_b) * inv < MIXED_CAREFUL_X2
        b_l, b_b, v_l, v_b, amp, inv = (t.to(torch.float32) for t in (b_l, b_b, v_l, v_b, amp, inv))
    mu_l, mu_b, low_far = lensing.velocity_far(b_l, b_b, v_l, v_b, amp, inv)
    if not mixed:
        low = low_far
    mu_l = torch.where(valid, torch.where(low, torch.nan, mu_l.to(torch.float64)), 0.0)
    mu_b = torch.where(valid & ~low, mu_b.to(torch.float64), 0.0)
    return mu_l, mu_b


_COMPILED: dict[tuple[str, str], Any] = {}
_EAGER = {"runs": None, "velocity": None}  # filled below (functions defined above)


def _fn(name: str, compile: bool, dev: torch.device):
    """The eager function ``name`` or its ``torch.compile`` version (cached per device type)."""
    eager = _EAGER[name]
    if not compile:
        return eager
    key = (name, dev.type)
    if key not in _COMPILED:
        # the gather indices are in range by construction (ring search + disc_slots; the eager
        # path, which checks them, gives the same maps in the tests), so the compiled CPU loops
        # skip inductor's per-element bounds assertion
        _COMPILED[key] = torch.compile(eager, dynamic=True, options={"assert_indirect_indexing": False})
    return _COMPILED[key]


def _call(name: str, compile: bool, dev: torch.device, *args):
    fn = _fn(name, compile, dev)
    if fn is _EAGER[name]:
        return fn(*args)
    try:
        return fn(*args)
    except Exception as err:  # no compiler, or it failed: eager from now on in this process
        msg = str(err).splitlines()[0] if str(err) else ""
        log.warning("torch.compile of %s failed (%s: %s); using eager mode", name, type(err).__name__, msg)
        for k in list(_EAGER):
            _COMPILED[(k, dev.type)] = _EAGER[k]
        return _EAGER[name](*args)


def _velocity_careful(grid: _Grid, table: torch.Tensor, sub: torch.Tensor, pix: torch.Tensor):
    """Eq. (3) for pairs with x^2 < 1.1 via lensing.velocity_kernel (NFW series / x < 1 branch)."""
    b_l, b_b, v_l, v_b = _geometry(table, grid.basis, sub, pix)
    return lensing.velocity_kernel(b_l, b_b, v_l, v_b, table[6].index_select(0, sub), table[7].index_select(0, sub))


def _pair_values(grid: _Grid, table: torch.Tensor, runs, quantity: str, max_pairs: int, compile: bool,
                 precision: str = "double"):
    """Yield (sub, pix, q_l, q_b) for all (subhalo, disc pixel) pairs, blocks of about ``max_pairs``.

    ``runs`` = :func:`_dense_runs`. Velocity blocks are dense (subhalos, slots) arrays whose
    slots past a disc's pixel count carry value 0 (harmless to ``index_add_``); the other quantities
    and the careful velocity pairs come as 1-D pair arrays. Consumers flatten.
    """
    run_pix0, run_cnt = runs
    n = run_cnt.shape[0]
    if n == 0:
        return
    width = max(int(run_cnt.sum(1).max()), 1)
    nb = max(1, max_pairs // width)
    dev = table.device
    slots = torch.arange(width, device=dev)
    slots_f = slots.to(torch.float64)
    careful = []
    for s0 in range(0, n, nb):
        s1 = min(n, s0 + nb)
        pix, count = disc_slots(run_pix0[s0:s1], run_cnt[s0:s1], slots, grid.npix)
        sub = torch.arange(s0, s1, device=dev)[:, None].expand_as(pix)
        if quantity == "velocity":
            q_l, q_b = _call("velocity", compile, dev, table[:8, s0:s1], grid.basis, pix, count.to(torch.float64),
                             slots_f, precision == "mixed")
            low = torch.isnan(q_l)
            if bool(low.any()):
                careful.append((sub[low], pix[low]))
                q_l.masked_fill_(low, 0.0)
        else:
            valid = slots < count
            sub, pix = sub[valid], pix[valid]
            b_l, b_b, v_l, v_b = _geometry(table, grid.basis, sub, pix)
            r_s, rho_s = table[8].index_select(0, sub), table[9].index_select(0, sub)
            if quantity == "deflection":
                q_l, q_b = lensing.deflection(b_l, b_b, rho_s, r_s)
            else:
                q_l, q_b = lensing.acceleration(b_l, b_b, v_l, v_b, rho_s, r_s)
        yield sub, pix, q_l, q_b
    if careful:  # all pairs with x^2 < 1.1 (mixed: < 4) of the map at once, in float64
        sub = torch.cat([c[0] for c in careful])
        pix = torch.cat([c[1] for c in careful])
        yield (sub, pix, *_velocity_careful(grid, table, sub, pix))


_EAGER.update(runs=_dense_runs, velocity=_velocity_slots)


def _validate(nside: int, max_angle_deg: float, quantity: str, precision: str = "double") -> None:
    check_nside(nside)
    if precision not in PRECISIONS:
        raise ValueError(f"precision = {precision!r}: must be one of {list(PRECISIONS)}")
    if not 0 < max_angle_deg <= 90:
        raise ValueError(f"max_angle_deg = {max_angle_deg}: must be in (0, 90] (sources behind the observer are not lensed)")
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity = {quantity!r}: must be one of {sorted(QUANTITIES)}")


@contextlib.contextmanager
def _cpu_threads(n: int | None, dev: torch.device):
    """Temporarily run torch's CPU ops with ``n`` intra-op threads (None: leave the setting alone)."""
    if n is None or dev.type != "cpu" or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _default_pairs(dev: torch.device, compile: bool = False) -> int:
    # eager CPU: cache-sized batches (each op is a separate pass); compiled CPU: one fused loop
    # per batch, so fewer, larger batches (less per-call overhead); CUDA: large batches
    return 2**23 if dev.type == "cuda" else (2**18 if compile else 2**16)


def signal_maps(catalogues: Sequence[Mapping[str, Any]], nside: int = 32, max_angle_deg: float = 20.0,
                device: str | torch.device = "cpu", quantity: str = "velocity", max_pairs: int | None = None,
                as_tensor: bool = False, compile: bool = False, threads: int | None = 1,
                precision: str = "double") -> np.ndarray | torch.Tensor:
    """Noiseless lensing maps (n_maps, 2, npix) of several subhalo populations, computed together.

    Same as :func:`signal_map` for each catalogue, but all (subhalo, pixel) pairs of all maps go
    through the same batches — fewer kernel launches (use it on GPUs). Results are identical to
    calling :func:`signal_map` per catalogue up to the summation order of overlapping subhalos
    (~1e-16 relative). Parameters as in :func:`signal_map`.
    """
    _validate(nside, max_angle_deg, quantity, precision)
    dev = resolve_device(device)
    grid = _grid(int(nside), str(dev))
    t = _catalogue_tensors(catalogues, dev)
    out = torch.zeros(2, len(catalogues), grid.npix, dtype=torch.float64, device=dev)
    flat_l, flat_b = out[0].view(-1), out[1].view(-1)  # (map, pixel) -> map * npix + pixel
    offset = t["map"] * grid.npix
    with _cpu_threads(threads, dev):
        runs = _call("runs", compile, dev, grid, t["theta"], t["phi"], math.radians(max_angle_deg))
        for sub, pix, q_l, q_b in _pair_values(grid, t["table"], runs, quantity, max_pairs or _default_pairs(dev, compile), compile,
                                               precision):
            target = (pix if len(catalogues) == 1 else pix + offset[sub]).reshape(-1)
            flat_l.index_add_(0, target, q_l.reshape(-1))
            flat_b.index_add_(0, target, q_b.reshape(-1))
    out = out.permute(1, 0, 2).contiguous()
    return out if as_tensor else out.cpu().numpy()


def signal_map(catalogue: Mapping[str, Any], nside: int = 32, max_angle_deg: float = 20.0,
               device: str | torch.device = "cpu", quantity: str = "velocity", max_pairs: int | None = None,
               as_tensor: bool = False, compile: bool = False, threads: int | None = 1,
               precision: str = "double") -> np.ndarray | torch.Tensor:
    """Noiseless lensing map (2, npix) of one subhalo population on a RING HEALPix grid.

    ``catalogue``: mapping with columns l, b [deg], distance [kpc], v_l, v_b, v_r [km/s],
    r_s [kpc], rho_s [Msun/kpc^3] (as from :func:`darkml.astrometry.population.draw_population`;
    extra columns are ignored). Returns (mu_l, mu_b) [µas/yr] for ``quantity='velocity'``
    (deflection [µas] / acceleration [µas/yr^2] otherwise), float64 numpy on the CPU (a torch
    tensor on ``device`` with ``as_tensor=True``). ``max_pairs`` bounds the (subhalo, pixel)
    pairs processed at once (default 2^16 on CPU — cache-sized — and 2^23 on CUDA).
    ``compile=True`` fuses the disc search and the per-pair velocity kernel with
    ``torch.compile`` (needs a C++ compiler on CPU, Triton on CUDA; about 2x faster on CPU; the
    first call in a process compiles for 20-90 s unless the on-disk inductor cache has it). If
    compilation fails the eager functions are used. Both paths agree to ~1e-15 relative. On CPU the sum over subhalos is
    deterministic; on CUDA ``index_add_`` uses atomics (bitwise run-to-run differences ~1e-16).
    ``threads``: torch intra-op CPU threads used during the call (default 1: the per-pair
    operations are short, and parallel map generation uses worker processes; on a shared
    machine OpenMP barriers make 2 threads slower than 1). ``None`` keeps the global setting.
    ``precision``: ``"double"`` (default, float64 throughout, ~1e-11 of the independent
    reference) or ``"mixed"`` (velocity only: eq. (3) in float32 for pairs with x^2 >= 4,
    float64 geometry, near pairs and sums; ~2x faster on CPU, ~1e-7 of the map's maximum —
    far below the float32 the datasets store).
    """
    out = signal_maps([catalogue], nside, max_angle_deg, device, quantity, max_pairs, True, compile, threads,
                      precision)[0]
    return out if as_tensor else out.cpu().numpy()


def subhalo_power(catalogue: Mapping[str, Any], nside: int = 32, max_angle_deg: float = 20.0,
                  device: str | torch.device = "cpu", quantity: str = "velocity") -> np.ndarray:
    """Each subhalo's own signal power on the grid: sum over its disc pixels of |mu|^2, shape (n_sub,).

    Units (µas/yr)^2 for the velocity. Used to rank lenses by how visible they are
    (attribution.py).
    """
    _validate(nside, max_angle_deg, quantity)
    dev = resolve_device(device)
    grid = _grid(int(nside), str(dev))
    t = _catalogue_tensors([catalogue], dev)
    power = torch.zeros(t["n"], dtype=torch.float64, device=dev)
    with _cpu_threads(1, dev):
        runs = _dense_runs(grid, t["theta"], t["phi"], math.radians(max_angle_deg))
        for sub, _, q_l, q_b in _pair_values(grid, t["table"], runs, quantity, _default_pairs(dev), False):
            power.index_add_(0, sub.reshape(-1), (q_l * q_l + q_b * q_b).reshape(-1))
    return power.cpu().numpy()














