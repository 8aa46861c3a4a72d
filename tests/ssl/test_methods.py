"""Self-supervised pre-training: augmentations keep the physics, encoders and heads have the
right shapes, every method learns on a tiny problem without collapsing."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from darkml.learn import views as ssl
from darkml.learn.dihedral import rotate_d4
from darkml.learn.ssl import METHODS, build_method
from darkml.learn.ssl.module import embedding_std
from darkml.learn.views import (
    ViewAugment,
    add_noise,
    blur_psf,
    local_crops,
    rotate,
    shift,
)
from darkml.ssl.data import toy_images
from darkml.ssl.encoders import FineTuneModel, build_encoder


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _gaussian(n=64, cu=0.0, cv=0.0, su=2.0, sv=5.0, phi=0.3):
    """Elliptical Gaussian; covariance R(phi) diag(su², sv²) R(phi)^T in centred (row, col) coordinates."""
    c = (n - 1) / 2
    u, v = np.mgrid[0:n, 0:n].astype(float) - c
    R = np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
    cov = R @ np.diag([su**2, sv**2]) @ R.T
    P = np.linalg.inv(cov)
    du, dv = u - cu, v - cv
    img = np.exp(-0.5 * (P[0, 0] * du**2 + 2 * P[0, 1] * du * dv + P[1, 1] * dv**2))
    return torch.tensor(img, dtype=torch.float32)[None, None], cov


def _moments(img):
    a = img[0, 0].double().numpy()
    n = a.shape[0]
    c = (n - 1) / 2
    u, v = np.mgrid[0:n, 0:n].astype(float) - c
    f = a.sum()
    mu, mv = (a * u).sum() / f, (a * v).sum() / f
    cuu = (a * (u - mu) ** 2).sum() / f
    cvv = (a * (v - mv) ** 2).sum() / f
    cuv = (a * (u - mu) * (v - mv)).sum() / f
    return f, np.array([mu, mv]), np.array([[cuu, cuv], [cuv, cvv]])


# ---------------------------------------------------------------------------------------
# augmentations
# ---------------------------------------------------------------------------------------
def test_d4_flip_and_shift_only_permute_pixels():
    x = torch.rand(6, 1, 16, 16, generator=_gen())
    k = torch.tensor([0, 1, 2, 3, 1, 2])
    flip = torch.tensor([False, True, False, True, False, True])
    for y in (rotate_d4(x, k, flip), shift(x, torch.tensor([0, 1, -2, 3, 5, -7]), torch.tensor([2, 0, 1, -3, 4, 15]))):
        # the same multiset of pixel values per image: flux and pixel statistics conserved exactly
        assert torch.equal(torch.sort(y.flatten(1))[0], torch.sort(x.flatten(1))[0])
    # four quarter turns are the identity; a shift and its inverse too
    y = x
    for _ in range(4):
        y = rotate_d4(y, torch.ones(6, dtype=torch.long))
    assert torch.equal(y, x)
    s = shift(shift(x, torch.full((6,), 3), torch.full((6,), -5)), torch.full((6,), -3), torch.full((6,), 5))
    assert torch.equal(s, x)
    # a shift moves a point source by exactly (dy, dx)
    p = torch.zeros(1, 1, 16, 16)
    p[0, 0, 4, 5] = 1
    assert shift(p, torch.tensor([2]), torch.tensor([-3]))[0, 0, 6, 2] == 1


def test_quarter_turn_matches_continuous_rotation_and_is_counter_clockwise():
    img, _ = _gaussian(64, cu=3.0, cv=-5.0)
    # the D4 part is exact and consistent with the resampled residual on either side of 45°
    assert torch.equal(rotate(img, torch.tensor([math.pi / 2])), torch.rot90(img, 1, dims=(-2, -1)))
    a = rotate(img, torch.tensor([math.pi / 4 - 1e-4]))
    b = rotate(img, torch.tensor([math.pi / 4 + 1e-4]))
    assert (a - b).abs().max() < 2e-3
    # the centroid (u, v) = (3, -5) moves to R(theta) (u, v)
    th = 0.4
    _, m, _ = _moments(rotate(img, torch.tensor([th])))
    exp = np.array([3 * math.cos(th) + 5 * math.sin(th), 3 * math.sin(th) - 5 * math.cos(th)])
    assert np.allclose(m, exp, atol=0.05)


def test_continuous_rotation_conserves_flux_and_rotates_shape():
    img, cov = _gaussian(64, su=2.0, sv=5.0, phi=0.3)
    f0, _, q0 = _moments(img)
    th = 0.7
    f1, m1, q1 = _moments(rotate(img, torch.tensor([th])))
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    assert abs(f1 / f0 - 1) < 2e-3  # compact centred source: flux kept to bilinear accuracy
    assert np.allclose(m1, 0, atol=0.02)
    # second moments transform as a tensor: Q' = R Q R^T (bilinear smoothing adds < ~1/6 px²)
    assert np.allclose(q1, R @ q0 @ R.T, atol=0.2)
    assert abs(np.trace(q1) - np.trace(q0)) < 0.35 and abs(np.linalg.det(q1) / np.linalg.det(q0) - 1) < 0.08
    # and the measured Q of the unrotated image is the analytic covariance
    assert np.allclose(q0, cov, atol=1e-3)


def test_psf_change_conserves_flux_and_adds_variance():
    p = torch.zeros(2, 1, 64, 64)
    p[:, 0, 32, 32] = 1.0
    sig = torch.tensor([1.5, 2.5])
    out = blur_psf(p, sig)
    for i, s in enumerate(sig.tolist()):
        f, m, q = _moments(out[i : i + 1])
        assert abs(f - 1) < 1e-5  # unit-sum kernel
        assert np.allclose(m, [0.5, 0.5], atol=1e-4)  # centred on the pixel (32, 32) = centre + 0.5
        assert np.allclose(q, np.diag([s**2, s**2]), rtol=1e-3, atol=1e-4)  # variance of the kernel = sigma²
    # Gaussian PSFs compose: variances add
    a = blur_psf(blur_psf(p[:1], torch.tensor([1.2])), torch.tensor([1.6]))
    b = blur_psf(p[:1], torch.tensor([2.0]))
    assert torch.allclose(a, b, atol=1e-6)
    # an extended image keeps its flux too, and sigma = 0 is the identity
    x = torch.rand(3, 1, 32, 32, generator=_gen(1))
    assert torch.allclose(blur_psf(x, torch.tensor([0.7, 1.3, 2.0])).sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=1e-5)
    assert torch.allclose(blur_psf(x, torch.zeros(3)), x, atol=1e-6)


def test_noise_is_zero_mean_with_the_requested_sigma():
    x = torch.ones(4, 1, 64, 64)
    sig = torch.tensor([0.01, 0.05, 0.1, 0.0])
    y = add_noise(x, sig, _gen(3))
    d = (y - x).flatten(1)
    n = d.shape[1]
    for i, s in enumerate(sig.tolist()):
        if s == 0:
            assert torch.equal(d[i], torch.zeros(n))
            continue
        assert abs(float(d[i].mean())) < 5 * s / math.sqrt(n)  # total flux kept in expectation
        assert abs(float(d[i].std()) / s - 1) < 0.05


def test_local_crops_are_windows_at_native_scale():
    H = 20
    base = (torch.arange(H)[:, None] * 100 + torch.arange(H)[None, :]).float()  # pixel value encodes (row, col)
    x = base.expand(5, 1, H, H).clone()
    c = local_crops(x, 7, _gen(5))
    assert c.shape == (5, 1, 7, 7)
    for i in range(5):
        r0, c0 = divmod(int(c[i, 0, 0, 0]), 100)
        assert torch.equal(c[i, 0], base[r0 : r0 + 7, c0 : c0 + 7])
    with pytest.raises(ValueError, match="local crop size"):
        local_crops(x, 21, _gen())


def test_view_augment_reproducible_and_flux_preserving():
    x = torch.as_tensor(toy_images(4, seed=1, size=32).images)
    aug = ViewAugment("d4", flip=True, shift_px=3)
    a, b = aug(x, _gen(7)), aug(x, _gen(7))
    assert torch.equal(a, b) and not torch.equal(a, aug(x, _gen(8)))
    assert torch.allclose(a.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=1e-5)  # D4 + circular shift: exact
    full = ViewAugment("continuous", True, 2, (0.01, 0.02), (0.0, 1.0))
    y = full(x, _gen(9))
    assert y.shape == x.shape and torch.isfinite(y).all()
    # one image (C, H, W), as the fine-tuning dataset calls it
    assert aug(x[0], _gen(1)).shape == x[0].shape
    with pytest.raises(ValueError, match="rotate"):
        ViewAugment("colour")
    with pytest.raises(ValueError, match="noise_sigma"):
        ViewAugment(noise_sigma=(0.1, 0.01))
    with pytest.raises(ValueError, match="Generator"):
        aug(x, None)


def test_method_views_are_physical():
    # a view is geometry, PSF and noise only: no colour/brightness/contrast fields exist at all
    assert {f.name for f in dataclasses.fields(ViewAugment)} == {"rotate", "flip", "shift_px", "noise_sigma", "psf_sigma_px"}
    for m in METHODS:
        assert isinstance(ssl.default_views(m), ViewAugment)
    assert ssl.default_views("simclr-noise").rotate == "none" and ssl.default_views("simclr-noise").noise_sigma[1] > 0
    assert ssl.default_views("simclr-rotation").rotate == "continuous" and ssl.default_views("simclr-rotation").noise_sigma == (0, 0)


# ---------------------------------------------------------------------------------------
# encoders and heads
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet-tiny", "vit-tiny", "resnet18"])
def test_encoder_shapes(name):
    enc = build_encoder(name, image_size=64, patch_size=8, seed=0)
    x = torch.randn(2, 1, 64, 64, generator=_gen())
    assert enc(x).shape == (2, enc.out_dim)
    # smaller (local-crop) inputs work at the native pixel scale
    assert enc(x[..., :32, :32]).shape == (2, enc.out_dim)


def test_paper_encoders_configuration():
    vit = build_encoder("vit", image_size=64, patch_size=8)
    assert vit.depth == 12 and vit.n_tokens == 65 and vit.out_dim == 384
    assert build_encoder("vit", image_size=64, patch_size=32).n_tokens == 5
    r50 = build_encoder("resnet50")
    assert r50.out_dim == 2048 and r50.net.conv1.in_channels == 1
    with pytest.raises(ValueError, match="patch_size"):
        build_encoder("vit", image_size=64, patch_size=7)
    with pytest.raises(ValueError, match="unknown"):
        build_encoder("resnet101")
    # seeded initialisation is reproducible
    a, b = build_encoder("resnet-tiny", seed=3), build_encoder("resnet-tiny", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_finetune_heads_classification_and_regression():
    from darkml.learn import (
        ArrayDataset,
        ClassifierModule,
        RegressorModule,
        make_loader,
        predict,
    )

    x = torch.randn(5, 1, 32, 32, generator=_gen())
    enc = build_encoder("resnet-tiny", image_size=32, seed=0)
    cls = FineTuneModel(enc, 3, hidden=16)
    reg = FineTuneModel(enc, 1, hidden=0)
    assert cls(x).shape == (5, 3) and reg(x).shape == (5, 1)
    loader = make_loader(ArrayDataset(x.numpy(), np.zeros(5, np.int64)), 4, shuffle=False)
    p = predict(ClassifierModule(cls, num_classes=3, lr=1e-3), loader, device="cpu")
    assert p.shape == (5, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    v = predict(RegressorModule(reg, lr=1e-3, target_mean=-23.0, target_std=0.6), loader, device="cpu")
    assert v.shape == (5,)
    # a frozen encoder gets no gradient and stays in eval mode
    frozen = FineTuneModel(build_encoder("resnet-tiny", image_size=32, seed=0), 3, freeze_encoder=True).train()
    frozen(x).sum().backward()
    assert all(q.grad is None for q in frozen.encoder.parameters()) and not frozen.encoder.training


# ---------------------------------------------------------------------------------------
# collapse diagnostic and learning
# ---------------------------------------------------------------------------------------
def test_collapse_index_limits():
    g = _gen(11)
    iso = torch.randn(4000, 32, generator=g)
    # uniform directions on the sphere: each coordinate has variance 1/d, so std * sqrt(d) = 1
    assert abs(embedding_std(iso) - 1) < 0.03
    assert embedding_std(torch.ones(64, 32) * 3.0) == pytest.approx(0.0, abs=1e-6)
    # everything along one direction with a little jitter: nearly collapsed
    v = torch.randn(32, generator=g)
    assert embedding_std(v + 0.01 * torch.randn(256, 32, generator=g)) < 0.05


#: a stated threshold: after the steps below, the collapse index of the representation and of
#: the projector outputs (DINO: the teacher's centred, sharpened distribution) on the clean toy
#: images must stay above this (collapsed = 0, isotropic = 1; the freshly initialised
#: resnet-tiny sits at ≈ 0.8 in training mode).
COLLAPSE_THRESHOLD = 0.3


def _fixed_loss(m, x):
    centre = m.criterion.center.clone() if hasattr(m.criterion, "center") else None
    with torch.no_grad():
        loss = m.ssl_loss(x, _gen(999))[0].item()
    if centre is not None:
        m.criterion.center.copy_(centre)
    return loss


@pytest.mark.parametrize("method", list(METHODS))
def test_method_learns_without_collapse(method):
    x = torch.as_tensor(toy_images(8, seed=0, size=32).images)
    enc = build_encoder("resnet-tiny", image_size=32, seed=0)
    torch.manual_seed(0)
    m = build_method(method, enc, proj_hidden=64, proj_dim=32, out_dim=64, bottleneck_dim=16, local_size=16, n_local=2)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3, weight_decay=1e-4)
    before = _fixed_loss(m, x)
    t_init = next(m.representation_encoder().parameters()).detach().clone()
    for step in range(15):
        m.momentum_update()
        loss, h, z = m.ssl_loss(x, _gen(step))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _fixed_loss(m, x)
    assert after < before, f"{method}: loss on fixed views did not decrease ({before:.3f} -> {after:.3f})"
    h, z = m.embed(x)  # DINO: teacher features and its centred, sharpened distribution
    assert embedding_std(h) > COLLAPSE_THRESHOLD and embedding_std(z) > COLLAPSE_THRESHOLD
    if method in ("byol", "dino"):  # the target/teacher is an exponential moving average of the online net
        tgt = m.target_encoder if method == "byol" else m.teacher_encoder
        assert not any(p.requires_grad for p in tgt.parameters())
        assert not torch.equal(next(tgt.parameters()), t_init)  # it followed the online network
        online = [p.detach().clone() for p in m.encoder.parameters()]
        old = [p.detach().clone() for p in tgt.parameters()]
        m.momentum_update()
        mom = m.momentum  # outside a trainer the schedule stays at its start value
        for o, t, new in zip(online, old, tgt.parameters()):
            assert torch.allclose(new, mom * t + (1 - mom) * o, atol=1e-6)


def test_vit_methods_run():
    """The ViT trains under the two methods with the most moving parts (EMA teacher + local crops)."""
    x = torch.as_tensor(toy_images(2, seed=0, size=32).images)
    for method in ("dino", "byol"):
        enc = build_encoder("vit-tiny", image_size=32, patch_size=8, seed=0)
        m = build_method(method, enc, proj_hidden=32, proj_dim=16, out_dim=32, bottleneck_dim=8, local_size=16, n_local=2)
        loss, h, z = m.ssl_loss(x, _gen())
        loss.backward()
        assert torch.isfinite(loss) and h.shape[1] == 64
        assert m.encoder.patch.weight.grad is not None


@pytest.mark.slow
def test_collapse_index_detects_simsiam_without_stop_gradient():
    """Negative control: SimSiam with the stop-gradient removed collapses (Chen & He 2021);
    the projector-output collapse index (eval mode) falls well below the stop-gradient run's."""
    x = torch.as_tensor(toy_images(16, seed=0, size=32).images)
    out = {}
    for stop in (True, False):
        enc = build_encoder("resnet-tiny", image_size=32, seed=0)
        torch.manual_seed(0)
        m = build_method("simsiam", enc, proj_hidden=64, proj_dim=32)
        if not stop:
            def loss_fn(x, g, m=m):
                v = torch.cat([m.views(x, g), m.views(x, g)])
                h = m.encoder(v)
                z = m.projection(h)
                p = m.prediction(z)
                z0, z1 = z.chunk(2)
                p0, p1 = p.chunk(2)
                return 0.5 * (m.criterion(p0, z1) + m.criterion(p1, z0)), h, z0
            m.ssl_loss = loss_fn
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=1e-4)
        for step in range(60):
            loss, _, _ = m.ssl_loss(x, _gen(step))
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            out[stop] = embedding_std(m.prediction(m.projection(m.encoder(x))))
    assert out[False] < 0.5 * out[True], out
