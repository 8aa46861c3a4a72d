"""The torch backend against lenstronomy: profiles, and whole images for all three classes."""

import numpy as np
import pytest
import torch

from darkml.config import validate
from darkml.lensing import fast
from darkml.lensing.params import LensingSimConfig, class_labels, draw_records
from darkml.lensing.simulate import noise_lenstronomy, render_lenstronomy


def _cfg(instrument: str = "euclid", **image):
    inst = {"euclid": {}, "hst": dict(name="hst", pixel_scale=0.08, psf_fwhm=0.08, exposure_time=5400.0, num_exposures=1,
                                      read_noise=4.0, ccd_gain=2.5, zero_point=25.96)}[instrument]
    return validate(LensingSimConfig, {"instrument": inst, "image": image}, prefix="lensing")


@pytest.mark.parametrize("instrument", ["euclid", "hst"])
def test_torch_matches_lenstronomy_pixel_by_pixel_for_all_classes(instrument):
    """The acceptance test: same records, both backends, |diff| <= 1e-3 of each image's peak."""
    cfg = _cfg(instrument)
    rec = draw_records(cfg, np.random.default_rng([11, 0]), class_labels(0, 6))  # 2 per class
    ref = render_lenstronomy(rec, cfg)
    got = fast.render_torch(rec, cfg, device="cpu", batch_size=4)  # float32, two batches
    assert got.shape == ref.shape == (6, 1, 64, 64)
    for i in range(len(rec)):
        peak = ref[i].max()
        err = np.abs(got[i] - ref[i]).max() / peak
        assert err < 1e-3, f"class {rec.labels[i]}: max |torch - lenstronomy| = {err:.2e} of the peak"
    assert set(rec.labels) == {0, 1, 2}
    # noise: drawn once from the record's seed, applied identically
    sigma, t = fast.noise_sigmas(cfg.instrument)
    z = torch.as_tensor(fast.noise_fields(rec.scalars["noise_seed"], 64))
    noisy_t = fast.add_noise_torch(torch.as_tensor(ref), z, sigma, t).numpy()
    noisy_l = ref + noise_lenstronomy(ref, rec, cfg)
    assert np.allclose(noisy_t, noisy_l, rtol=0, atol=1e-6 * ref.max())  # z fields are float32


def test_float64_agreement_is_at_round_off():
    cfg = _cfg("euclid", num_pix=24, supersampling=3)
    rec = draw_records(cfg, np.random.default_rng(4), class_labels(0, 3))
    ref = render_lenstronomy(rec, cfg)
    got = fast.render_torch(rec, cfg, dtype=torch.float64)
    assert np.abs(got - ref).max() < 1e-9 * ref.max()


def test_macro_deflection_matches_lenstronomy_including_round_lens():
    from lenstronomy.LensModel.lens_model import LensModel

    lm = LensModel(["SIE", "SHEAR"])
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 500)
    y = rng.uniform(-3, 3, 500)
    for e1, e2, cx in ((0.1, 0.0, 0.0), (-0.05, 0.17, 0.2), (0.0, 0.0, -0.1), (1e-6, 0.0, 0.0)):
        sc = {"lens_theta_E": np.array([1.6]), "lens_e1": np.array([e1]), "lens_e2": np.array([e2]),
              "lens_x": np.array([cx]), "lens_y": np.array([0.05]), "shear_g1": np.array([0.04]), "shear_g2": np.array([-0.02])}
        L = {k: torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1) for k, v in fast._lens_scalars(sc).items()}
        bx, by = fast._macro_deflection(torch.as_tensor(x), torch.as_tensor(y), L["cx"], L["cy"], L["cos"], L["sin"],
                                        L["q"], L["b"], L["s"], L["eps"], L["g1"], L["g2"])
        ax, ay = x - bx.numpy(), y - by.numpy()  # the kernel returns source-plane positions
        kw = [dict(theta_E=1.6, e1=e1, e2=e2, center_x=cx, center_y=0.05), dict(gamma1=0.04, gamma2=-0.02)]
        rx, ry = lm.alpha(x, y, kw)
        assert np.allclose(ax[0], rx, atol=1e-8) and np.allclose(ay[0], ry, atol=1e-8)
        # ray-shooting: lenstronomy's ray_shooting gives the same source-plane positions
        sx, sy = lm.ray_shooting(x, y, kw)
        assert np.allclose(bx.numpy()[0], sx, atol=1e-8) and np.allclose(by.numpy()[0], sy, atol=1e-8)


def test_point_mass_block_matches_analytic_deflection():
    rng = np.random.default_rng(1)
    gx = torch.as_tensor(rng.uniform(-2, 2, 300))
    gy = torch.as_tensor(rng.uniform(-2, 2, 300))
    px, py = rng.uniform(-2, 2, (2, 1, 8))
    te = rng.uniform(0, 0.1, (1, 8))
    zero = torch.zeros(1, 300, dtype=torch.float64)
    for fn in (fast._point_mass_block, fast._point_mass_block_inplace):
        bx, by = fn(zero.clone(), zero.clone(), gx, gy, torch.as_tensor(px), torch.as_tensor(py), torch.as_tensor(te**2))
        ax, ay = -bx, -by  # the kernel subtracts the deflection
        dx = gx.numpy()[:, None] - px[0][None]
        dy = gy.numpy()[:, None] - py[0][None]
        r2 = dx**2 + dy**2
        assert np.allclose(ax.numpy()[0], (te[0] ** 2 * dx / r2).sum(1), rtol=1e-12)
        assert np.allclose(ay.numpy()[0], (te[0] ** 2 * dy / r2).sum(1), rtol=1e-12)


def test_flux_is_conserved_for_a_negligible_lens():
    """No lensing (1e3 Msun lens), source inside the field: image flux = 10^(-0.4 (m - ZP)) e-/s."""
    cfg = validate(LensingSimConfig, {"lens": {"halo_mass": [1e3, 1e3], "shear": [0, 0]},
                                      "source": {"center": 0.05, "magnitude": [20, 20]}}, prefix="lensing")
    rec = draw_records(cfg, np.random.default_rng(0), np.array([0, 0]))
    img = fast.render_torch(rec, cfg, dtype=torch.float64)
    expect = 10 ** (-0.4 * (20 - 25.72))
    assert img.reshape(2, -1).sum(1) == pytest.approx([expect, expect], rel=3e-3)


def test_batching_order_and_device_errors():
    cfg = _cfg("euclid", num_pix=32)
    rec = draw_records(cfg, np.random.default_rng(5), class_labels(0, 7))
    a = fast.render_torch(rec, cfg, batch_size=7)
    b = fast.render_torch(rec, cfg, batch_size=2)
    c = fast.render_torch(rec.subset([5]), cfg)
    assert np.allclose(a, b, rtol=0, atol=1e-6 * a.max())
    assert np.allclose(a[5], c[0], rtol=0, atol=1e-6 * a.max())
    with pytest.raises(ValueError, match="must be cpu, cuda or auto"):
        fast.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fast.resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    cfg = _cfg("euclid")
    rec = draw_records(cfg, np.random.default_rng(6), class_labels(0, 6))
    cpu = fast.simulate_torch(rec, cfg, device="cpu")
    gpu = fast.simulate_torch(rec, cfg, device="cuda")
    assert np.abs(cpu - gpu).max() < 1e-4 * cpu.max()


@pytest.mark.slow
def test_compiled_kernels_match_eager():
    cfg = _cfg("euclid")
    rec = draw_records(cfg, np.random.default_rng(7), class_labels(0, 9))
    eager = fast.render_torch(rec, cfg, batch_size=4)
    comp = fast.render_torch(rec, cfg, batch_size=4, compile=True)
    assert np.abs(eager - comp).max() < 1e-5 * eager.max()


def test_profiles_own_their_names_and_feed_both_backends():
    """Each profile maps its record columns to lenstronomy's keywords and to its kernel's
    parameters; the two backends take their parameter layout from the profiles."""
    from darkml.lensing import profiles as P
    from darkml.lensing.params import SCALAR_FIELDS

    for prof in (P.SIE, P.Shear, P.Sersic):
        assert set(prof.columns.values()) <= set(SCALAR_FIELDS), prof
        assert set(prof.ranges) == set(prof.columns.values()), prof
    assert fast._LENS_KEYS == P.SIE.kernel_keys + P.Shear.kernel_keys and fast._SRC_KEYS == P.Sersic.kernel_keys
    sc = {c: np.array([0.1 * (k + 1)]) for k, c in enumerate(SCALAR_FIELDS)}
    kw = P.Shear.lenstronomy_kwargs(sc, 0)
    assert kw == {"gamma1": sc["shear_g1"][0], "gamma2": sc["shear_g2"][0], "ra_0": 0.0, "dec_0": 0.0}
    # a round SIE (e = 0) has q = 1 within the cap and b·eps equal to theta_E
    sie = P.SIE.kernel_params({**sc, "lens_e1": np.zeros(1), "lens_e2": np.zeros(1)})
    assert sie["q"][0] == pytest.approx(0.99999999) and sie["b"][0] * sie["eps"][0] == pytest.approx(sc["lens_theta_E"][0])
    pm = P.PointMass.kernel_params({"x": np.array([1.0]), "y": np.array([2.0]), "theta_E": np.array([0.3])})
    assert list(pm) == list(P.PointMass.kernel_keys) and pm["theta_E2"][0] == pytest.approx(0.09)
