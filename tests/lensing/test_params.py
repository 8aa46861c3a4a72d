"""Parameter records: closed forms against independent computations, draw statistics, bad input."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from darkml.config import ConfigError, validate
from darkml.lensing import params as P
from darkml.lensing.params import LensingSimConfig, RecordError, Records, draw_records


def cfg(**over):
    data = {}
    for k, v in over.items():
        sec, _, field = k.partition("__")
        data.setdefault(sec, {})[field] = v
    return validate(LensingSimConfig, data, prefix="lensing")


# ---- closed forms -----------------------------------------------------------------------
def test_einstein_radius_matches_lenstronomy_critical_density():
    from astropy.cosmology import FlatLambdaCDM
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    lc = LensCosmo(0.5, 1.0, cosmo=FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05))
    for m in (1e6, 3e8, 1e12):
        # point mass: M = pi theta_E^2 Sigma_crit (Sigma_crit in Msun/arcsec^2)
        expect = math.sqrt(m / (math.pi * lc.sigma_crit_angle))
        assert P.einstein_radius(m) == pytest.approx(expect, rel=1e-3)
    # angular-diameter distances: 1e12 Msun at z=0.5 -> z=1 is 1.66", not the 1.2" of the
    # luminosity-distance formula used by the public scripts
    assert P.einstein_radius(1e12) == pytest.approx(1.665, abs=0.005)


def test_subhalo_mass_function_matches_quadrature_cdf():
    rng = np.random.default_rng(0)
    m = P.subhalo_masses(rng.uniform(size=200_000), 1e6, 1e10, -1.9)
    assert m.min() >= 1e6 and m.max() <= 1e10
    norm = integrate.quad(lambda x: x**-1.9, 1e6, 1e10, limit=200, points=[1e7, 1e8, 1e9])[0]
    for edge in (3e6, 1e7, 1e8, 1e9):
        cdf = integrate.quad(lambda x: x**-1.9, 1e6, edge, limit=200)[0] / norm
        assert np.mean(m < edge) == pytest.approx(cdf, abs=3e-3)
    # log-uniform limit (slope -1)
    m1 = P.subhalo_masses(rng.uniform(size=100_000), 1e6, 1e10, -1.0)
    assert np.mean(m1 < 1e8) == pytest.approx(0.5, abs=5e-3)


def test_sersic_total_flux_matches_quadrature_and_lenstronomy():
    from lenstronomy.LightModel.light_model import LightModel

    amp, rs, n, e1, e2 = 2.0, 0.3, 1.3, 0.12, -0.07
    model = LightModel(["SERSIC_ELLIPSE"])
    kw = dict(amp=amp, R_sersic=rs, n_sersic=n, e1=e1, e2=e2, center_x=0.0, center_y=0.0)
    closed = P.sersic_total_flux(amp, rs, n)
    # radial quadrature of the round profile (b_n in lenstronomy's approximation)
    bn = 1.9992 * n - 0.3271
    radial = integrate.quad(lambda r: 2 * np.pi * r * amp * np.exp(-bn * ((r / rs) ** (1 / n) - 1)), 0, 50, limit=400)[0]
    assert closed == pytest.approx(radial, rel=1e-8)
    # the elliptical profile, summed by lenstronomy on a fine grid, has the same total flux
    g = (np.arange(2000) - 999.5) * 0.008
    xx, yy = np.meshgrid(g, g)
    grid_sum = model.surface_brightness(xx.ravel(), yy.ravel(), [kw]).sum() * 0.008**2
    assert closed == pytest.approx(grid_sum, rel=2e-3)
    amp20 = P.sersic_amp_from_magnitude(20.0, rs, n, 25.72)
    assert P.sersic_total_flux(amp20, rs, n) == pytest.approx(10 ** (0.4 * 5.72), rel=1e-10)


def test_vortex_half_length_follows_the_facts_file():
    assert P.vortex_half_length([1e-24, 1e-23, 1e-22]) == pytest.approx([3.0, 0.3, 0.03])


def test_pixel_grid_and_psf_match_lenstronomy_conventions():
    from lenstronomy.Util import kernel_util, util

    for n, d, s in ((64, 0.101, 1), (64, 0.08, 2), (5, 0.3, 3)):
        x, y = util.make_grid(n, d)
        xs, ys = util.make_subgrid(x, y, s)
        g = P.pixel_grid(n, d, s)
        assert np.allclose(util.array2image(xs)[0], g, atol=1e-12)
        assert np.allclose(util.array2image(ys)[:, 0], g, atol=1e-12)
    for inst in (P.InstrumentCfg(), P.InstrumentCfg(pixel_scale=0.08, psf_fwhm=0.08)):
        k = P.psf_kernel(inst)
        ref = kernel_util.kernel_gaussian(len(k), inst.pixel_scale, inst.psf_fwhm)
        assert np.allclose(k, ref / ref.sum(), atol=1e-12)
        sigma = inst.psf_fwhm / 2.3548
        assert len(k) == 2 * max(round(5 * sigma / inst.pixel_scale), 1) + 1


def test_noise_sigma_matches_lenstronomy_and_hand_formula():
    from lenstronomy.SimulationAPI.observation_api import SingleBand

    inst = P.InstrumentCfg()
    sigma, t = P.noise_sigmas(inst)
    band = SingleBand(pixel_scale=0.101, exposure_time=566.0, magnitude_zero_point=25.72, read_noise=4.2, ccd_gain=3.1,
                      sky_brightness=22.3, seeing=0.16, num_exposures=4, data_count_unit="e-")
    assert sigma == pytest.approx(band.background_noise, rel=1e-12)
    sky_e = 10 ** (-0.4 * (22.3 - 25.72)) * 0.101**2 * 2264.0  # sky electrons per pixel
    assert sigma == pytest.approx(math.sqrt(sky_e + 4 * 4.2**2) / 2264.0, rel=1e-12)
    assert t == 2264.0


# ---- the draw ------------------------------------------------------------------------------
def test_draw_is_deterministic_and_classes_share_main_lens_and_source():
    c = LensingSimConfig()
    labels = P.class_labels(0, 30)
    a = draw_records(c, np.random.default_rng([5, 2]), labels)
    b = draw_records(c, np.random.default_rng([5, 2]), labels)
    assert np.array_equal(a.params_array(), b.params_array(), equal_nan=True)
    for k in a.subhalos:
        assert np.array_equal(a.subhalos[k], b.subhalos[k])
    assert list(labels[:6]) == [0, 1, 2, 0, 1, 2]
    # same stream, different classes: identical main lens and source, only substructure differs
    none = draw_records(c, np.random.default_rng(3), np.zeros(20, int))
    cdm = draw_records(c, np.random.default_rng(3), np.ones(20, int))
    for k in ("lens_theta_E", "lens_e1", "shear_g2", "src_amp", "src_x", "src_n", "noise_seed"):
        assert np.array_equal(none.scalars[k], cdm.scalars[k])
    assert none.subhalos["x"].size == 0 and cdm.subhalos["x"].size > 0


def test_cdm_counts_positions_and_axion_labels():
    c = LensingSimConfig(cdm=P.CDMCfg(count="poisson", slope=-1.9))
    rec = draw_records(c, np.random.default_rng(0), P.class_labels(0, 6000))
    lab = rec.labels
    counts = np.bincount(rec.subhalos["index"], minlength=len(rec))
    assert counts[lab != 1].sum() == 0
    n = counts[lab == 1]
    assert n.mean() == pytest.approx(25, abs=0.5)  # Poisson: mean = variance = 25
    assert n.var() == pytest.approx(25, rel=0.15)
    # the default (the scripts' draw): exactly 25 per CDM image, same stream otherwise
    fixed = draw_records(LensingSimConfig(), np.random.default_rng(0), P.class_labels(0, 6000))
    nf = np.bincount(fixed.subhalos["index"], minlength=len(fixed))
    assert np.all(nf[lab == 1] == 25) and nf[lab != 1].sum() == 0
    assert np.array_equal(fixed.scalars["src_x"], rec.scalars["src_x"])
    r = np.hypot(rec.subhalos["x"] - rec.scalars["lens_x"][rec.subhalos["index"]],
                 rec.subhalos["y"] - rec.scalars["lens_y"][rec.subhalos["index"]])
    assert r.min() >= 0.25 and r.max() <= 2.0
    assert stats.kstest(r, stats.uniform(0.25, 1.75).cdf).pvalue > 1e-3
    lm = rec.scalars["log10_m_axion"]
    assert np.all(np.isnan(lm[lab != 2]))
    assert lm[lab == 2].min() >= -24 and lm[lab == 2].max() <= -22
    assert stats.kstest(lm[lab == 2], stats.uniform(-24, 2).cdf).pvalue > 1e-3
    th = rec.scalars["lens_theta_E"]
    assert th.min() >= P.einstein_radius(8e11) - 1e-12 and th.max() <= P.einstein_radius(1.2e12) + 1e-12


def test_vortex_point_masses_line_and_total_mass():
    c = LensingSimConfig()
    rec = draw_records(c, np.random.default_rng(1), np.array([2, 0, 2]))
    pm = P.point_masses(rec)
    for i in (0, 2):
        sel = pm["index"] == i
        assert sel.sum() == 100
        x, y = pm["x"][sel], pm["y"][sel]
        ang = rec.scalars["vortex_angle"][i]
        # on the line through the lens centre at the vortex angle, spanning +-L_half evenly
        assert np.allclose(-np.sin(ang) * x + np.cos(ang) * y, 0, atol=1e-12)
        t = np.cos(ang) * x + np.sin(ang) * y
        assert t.min() == pytest.approx(-rec.scalars["vortex_L_half"][i]) and t.max() == pytest.approx(rec.scalars["vortex_L_half"][i])
        # theta_E^2 is linear in mass: the points' theta_E^2 add up to that of 3e10 Msun
        assert np.sum(pm["theta_E"][sel] ** 2) == pytest.approx(P.einstein_radius(3e10) ** 2, rel=1e-12)
    assert not np.any(pm["index"] == 1)


def test_records_subset_and_roundtrip():
    c = LensingSimConfig()
    rec = draw_records(c, np.random.default_rng(2), P.class_labels(0, 12))
    sub = rec.subset([4, 1])
    assert list(sub.labels) == [1, 1]
    assert np.array_equal(sub.subhalos["x"][sub.subhalos["index"] == 0], rec.subhalos["x"][rec.subhalos["index"] == 4])
    back = Records.from_arrays(rec.params_array(), rec.scalars["noise_seed"], rec.subhalos)
    assert np.array_equal(back.params_array(), rec.params_array(), equal_nan=True)


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "over, words",
    [
        ({"lens__halo_mass": [2e12, 1e12]}, "inverted range"),
        ({"source__r_sersic": [0.3, 0.1]}, "inverted range"),
        ({"axion__log10_mass": [-22, -24]}, "inverted range"),
        ({"image__num_pix": 0}, "must be > 0"),
        ({"image__num_pix": -5}, "must be > 0"),
        ({"cdm__mass_min": 1e10, "cdm__mass_max": 1e6}, "mass_min"),
        ({"cdm__mean_number": 5000}, "too many subhalos"),
        ({"cdm__max_number": 50000}, "<= 10000"),
        ({"cosmology__z_source": 0.3}, "z_source"),
        ({"dataset__backend": "galfit"}, "unknown backend"),
        ({"dataset__chunk_size": 100}, "multiple of 3"),
        ({"source__n_sersic": [0.1, 1.0]}, "n_sersic"),
    ],
)
def test_bad_config_is_one_clear_line(over, words):
    with pytest.raises(ConfigError) as exc:
        cfg(**over)
    msg = str(exc.value)
    assert words in msg and "\n" not in msg


def test_degenerate_records_are_rejected():
    c = LensingSimConfig()
    rec = draw_records(c, np.random.default_rng(0), P.class_labels(0, 6))
    rec.scalars["src_R"][3] = np.nan
    with pytest.raises(RecordError, match="record 3: src_R"):
        P.check_records(rec)
    rec = draw_records(c, np.random.default_rng(0), P.class_labels(0, 6))
    rec.scalars["lens_theta_E"][0] = 0.0
    with pytest.raises(RecordError, match="lens_theta_E"):
        P.check_records(rec)
    rec = draw_records(c, np.random.default_rng(0), P.class_labels(0, 6))
    rec.subhalos["x"][0] = np.inf
    with pytest.raises(RecordError, match="subhalo"):
        P.check_records(rec)
    with pytest.raises(RecordError, match="labels"):
        draw_records(c, np.random.default_rng(0), np.array([0, 3]))


# ---- the papers' population, the fixed lens and their bad input ------------------------------
def test_default_population_is_the_scripts_and_its_mean_mass_matches_the_draw():
    c = P.CDMCfg()
    assert (c.count, c.mean_number, c.slope, c.mass_min, c.mass_max) == ("fixed", 25, -0.9, 1e6, 1e10)
    # closed form <M> of M^-0.9 on [1e6, 1e10] against quadrature and a large draw
    num = integrate.quad(lambda m: m**0.1, 1e6, 1e10, limit=200)[0]
    den = integrate.quad(lambda m: m**-0.9, 1e6, 1e10, limit=200)[0]
    assert P.mean_subhalo_mass(1e6, 1e10, -0.9) == pytest.approx(num / den, rel=1e-6)
    assert c.mean_total_mass() == pytest.approx(3.78e10, rel=0.01)  # the facts: ~3.6-3.8e10 per image
    m = P.subhalo_masses(np.random.default_rng(0).uniform(size=400_000), 1e6, 1e10, -0.9)
    assert m.mean() == pytest.approx(P.mean_subhalo_mass(1e6, 1e10, -0.9), rel=0.01)
    assert P.mean_subhalo_mass(1e6, 1e10, -1.0) == pytest.approx((1e10 - 1e6) / math.log(1e4), rel=1e-12)
    assert P.CDMCfg(count="poisson", slope=-1.9).mean_total_mass() == pytest.approx(3.4e8, rel=0.02)


def test_fixed_lens_holds_the_scripts_lens_and_shares_the_stream():
    from darkml.lensing.config import MainLensCfg

    fixed = LensingSimConfig(lens=MainLensCfg(mode="fixed"))
    rnd = LensingSimConfig()
    labels = P.class_labels(0, 30)
    a = draw_records(fixed, np.random.default_rng(4), labels)
    b = draw_records(rnd, np.random.default_rng(4), labels)
    assert np.all(a.scalars["lens_theta_E"] == P.einstein_radius(1e12))
    assert np.all(a.scalars["lens_e1"] == 0.1) and np.all(a.scalars["lens_e2"] == 0.0)
    assert np.all(a.scalars["shear_g1"] == 0.05) and np.all(a.scalars["shear_g2"] == 0.0)
    assert np.unique(b.scalars["lens_theta_E"]).size == 30
    for k in ("src_x", "src_amp", "noise_seed"):  # everything after the lens is the same draw
        assert np.array_equal(a.scalars[k], b.scalars[k])
    # a saved config (every field listed, the default ranges too) loads again
    assert LensingSimConfig.model_validate(fixed.model_dump()).lens.mode == "fixed"
    # the scripts' source: fixed except its centre, same stream
    fs = LensingSimConfig(lens=MainLensCfg(mode="fixed"), source=P.SourceCfg(mode="fixed"))
    c = draw_records(fs, np.random.default_rng(4), labels)
    assert np.all(c.scalars["src_R"] == 0.25) and np.all(c.scalars["src_n"] == 1.0)
    assert np.all(c.scalars["src_e1"] == -0.1) and np.all(c.scalars["src_e2"] == 0.1)
    assert np.all(c.scalars["src_mag"] == 20.0)
    assert np.array_equal(c.scalars["src_x"], a.scalars["src_x"]) and np.unique(c.scalars["src_x"]).size == 30


@pytest.mark.parametrize("section, values, message", [
    ("lens", {"mode": "fixed", "halo_mass": (1e12, 1.1e12)}, "lens.halo_mass is a range but lens.mode = fixed"),
    ("lens", {"mode": "fixed", "shear": (0.0, 0.05)}, "lens.shear is a range but lens.mode = fixed"),
    ("lens", {"mode": "fix"}, "choose random"),
    ("source", {"mode": "fixed", "r_sersic": (0.1, 0.2)}, "source.r_sersic is a range but source.mode = fixed"),
    ("cdm", {"slope": -1.9, "mass_min": 0.0}, "diverges at M -> 0"),
    ("cdm", {"mass_min": 1e10, "mass_max": 1e6}, "must be < cdm.mass_max"),
    ("cdm", {"mean_number": -1}, "greater than or equal to 0"),
    ("cdm", {"mean_number": 2.5}, "whole number"),
    ("cdm", {"count": "binomial"}, "choose fixed"),
])
def test_population_and_lens_bad_input(section, values, message):
    from pydantic import ValidationError

    from darkml.lensing.config import MainLensCfg

    cls = {"lens": MainLensCfg, "cdm": P.CDMCfg, "source": P.SourceCfg}[section]
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        cls(**values)


def test_sensitivity_points_are_checked_before_any_work():
    from pydantic import ValidationError

    from darkml.lensing.config import SensitivityCfg

    with pytest.raises(ValidationError, match=r"sensitivity.slopes: -1.5: .*diverges at M -> 0"):
        LensingSimConfig(cdm=P.CDMCfg(mass_min=0.0, slope=-0.5), sensitivity=SensitivityCfg(slopes=[-0.9, -1.5]))
    with pytest.raises(ValidationError, match="must lie in"):
        SensitivityCfg(slopes=[-7.0])
    assert SensitivityCfg(slopes=[-0.9, -1.9]).slopes == [-1.9, -0.9]
