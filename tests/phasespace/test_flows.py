"""Flows: exact preprocessing Jacobian, normalisation, and a fit to an analytic Gaussian."""

import math

import numpy as np
import pytest
import torch

from darkml.phasespace.flows import (
    BallPreprocess,
    PhaseSpaceFlow,
    SupportError,
    TrainSettings,
    check_support,
    count_parameters,
    flow_spec,
    load_member,
    log_f_and_grads,
    member_split,
    train_member,
)
from darkml.phasespace.mocks import OBSERVER_KPC, uniform_ball


def test_preprocess_log_jacobian_matches_autograd():
    pre = BallPreprocess(OBSERVER_KPC, 3.5, mean=(0.1, -0.2, 0.3), std=(1.5, 0.7, 2.0)).double()
    rng = np.random.default_rng(0)
    pts = uniform_ball(5, OBSERVER_KPC, 3.4, rng).tolist() + [[OBSERVER_KPC[0] + 1e-5, 0.0, OBSERVER_KPC[2]]]
    for p in pts:
        x = torch.tensor(p, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(lambda t: pre(t[None])[0][0], x)
        _, ladj = pre(x[None])
        assert ladj.item() == pytest.approx(torch.linalg.slogdet(J)[1].item(), abs=1e-6)
        np.testing.assert_allclose(pre.inverse(pre(x[None])[0])[0].numpy(), p, atol=1e-9)


def _random_flow(seed=0, transforms=2, hidden=(16, 16)):
    rng = np.random.default_rng(seed)
    x = uniform_ball(2000, OBSERVER_KPC, 3.5, rng)
    v = rng.normal([0, 220, 0], [40, 30, 25], size=(2000, 3))
    torch.manual_seed(seed)
    return PhaseSpaceFlow(flow_spec(x, v, OBSERVER_KPC, 3.5, transforms=transforms, hidden=hidden)).double().eval()


def test_flow_densities_are_normalised():
    m = _random_flow()
    rng = np.random.default_rng(1)
    # ∫_ball ν d^3x = 1: importance sampling with a uniform proposal on the ball
    pts = torch.tensor(uniform_ball(60_000, OBSERVER_KPC, 3.5, rng))
    with torch.no_grad():
        nu = torch.exp(m.log_nu(pts)).numpy()
    vol = 4 / 3 * math.pi * 3.5**3
    assert vol * nu.mean() == pytest.approx(1.0, abs=4 * vol * nu.std() / math.sqrt(len(nu)))
    # ∫ p(v|x) d^3v = 1 at two positions: a broad Gaussian proposal
    for x0 in (OBSERVER_KPC, (6.0, 1.0, 1.0)):
        q = torch.distributions.Normal(torch.tensor([0.0, 220.0, 0.0], dtype=torch.float64), 120.0)
        vs = q.sample((60_000,))
        with torch.no_grad():
            lp = m.log_p_v(vs, torch.tensor([x0], dtype=torch.float64).expand(len(vs), 3))
        w = torch.exp(lp - q.log_prob(vs).sum(-1)).numpy()
        assert w.mean() == pytest.approx(1.0, abs=4 * w.std() / math.sqrt(len(w)) + 1e-3)


def test_gradients_match_finite_differences():
    m = _random_flow()
    x = torch.tensor([[8.5, 0.3, 0.2], [7.0, -1.0, -0.5]], dtype=torch.float64)
    v = torch.tensor([[10.0, 230.0, -5.0], [-30.0, 200.0, 20.0]], dtype=torch.float64)
    _, gx, gv = log_f_and_grads(m.log_prob, x, v)
    h = 1e-5
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        with torch.no_grad():
            fx = (m.log_prob(x + e, v) - m.log_prob(x - e, v)) / (2 * h)
            fv = (m.log_prob(x, v + e * 100) - m.log_prob(x, v - e * 100)) / (200 * h)
        np.testing.assert_allclose(gx[:, i].numpy(), fx.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(gv[:, i].numpy(), fv.numpy(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_flow_learns_a_gaussian(tmp_path, schedule):
    """Positions: a Gaussian blob well inside the ball; velocities: a correlated Gaussian whose mean
    depends linearly on x. The trained flow must match both analytic log densities, with either
    learning-rate schedule (the cosine one runs every epoch: patience does not stop it)."""
    rng = np.random.default_rng(2)
    n = 4000
    cov_x = np.diag([0.6, 0.4, 0.3]) ** 2
    x = rng.multivariate_normal(OBSERVER_KPC, cov_x, size=n)
    A = np.array([[10.0, 0, 0], [0, 0, 0], [0, 0, 10.0]])
    L = np.array([[30.0, 0, 0], [10.0, 20.0, 0], [0, 5.0, 15.0]])
    mu_v = lambda xx: np.array([0.0, 220.0, 0.0]) + (xx - OBSERVER_KPC) @ A.T  # noqa: E731
    v = mu_v(x) + rng.standard_normal((n, 3)) @ L.T
    settings = TrainSettings(batch_size=200, lr=3e-3, max_epochs=25, patience=2 if schedule == "cosine" else 5,
                             plateau_patience=3, bootstrap=False, accelerator="cpu", devices=1, schedule=schedule,
                             warmup_fraction=0.05)
    res = train_member(x, v, dict(observer=OBSERVER_KPC, radius=3.5, transforms=3, hidden=(32, 32)), settings,
                       tmp_path / "m0", member=0, seed=0, log_dir=tmp_path / "logs")
    if schedule == "cosine":
        assert res.epochs == 25
    model = load_member(res.best_path).double()
    xt = rng.multivariate_normal(OBSERVER_KPC, cov_x, size=500)
    vt = mu_v(xt) + rng.standard_normal((500, 3)) @ L.T
    px = torch.distributions.MultivariateNormal(torch.tensor(OBSERVER_KPC, dtype=torch.float64), torch.tensor(cov_x))
    pv = torch.distributions.MultivariateNormal(torch.tensor(mu_v(xt)), scale_tril=torch.tensor(L))
    with torch.no_grad():
        lnu = model.log_nu(torch.tensor(xt))
        lpv = model.log_p_v(torch.tensor(vt), torch.tensor(xt))
    err_x = (lnu - px.log_prob(torch.tensor(xt))).abs().mean().item()
    err_v = (lpv - pv.log_prob(torch.tensor(vt))).abs().mean().item()
    print(f'mean |Δ log ν| = {err_x:.3f}, mean |Δ log p(v|x)| = {err_v:.3f}')
    assert err_x < 0.15 and err_v < 0.15, (err_x, err_v)
    # sampling from p(v|x) reproduces the conditional mean
    with torch.no_grad():
        vs = model.sample_v(torch.tensor([OBSERVER_KPC], dtype=torch.float64), 4000)[0].numpy()
    np.testing.assert_allclose(vs.mean(0), [0.0, 220.0, 0.0], atol=4.0)


def test_member_split_is_deterministic_and_bootstrapped():
    a = member_split(1000, 1, 0, 0.2, True)
    b = member_split(1000, 1, 0, 0.2, True)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    tr, va = a
    assert len(va) == 200 and len(tr) == 800
    assert len(np.unique(tr)) < 800  # resampled with replacement
    assert not set(tr) & set(va)
    assert not np.array_equal(member_split(1000, 2, 0, 0.2, True)[1], va)


def test_support_check():
    check_support([OBSERVER_KPC], OBSERVER_KPC, 3.5)
    with pytest.raises(SupportError, match="outside the data's support"):
        check_support([[8.122, 0.0, 3.4]], OBSERVER_KPC, 3.5, reach=0.4)


def test_spec_validation():
    x = np.zeros((10, 3)) + OBSERVER_KPC
    with pytest.raises(ValueError, match="flow model"):
        flow_spec(x, x, OBSERVER_KPC, 3.5, model="realnvp")
    m = _random_flow(hidden=(8,))
    assert count_parameters(m) > 0


def test_z_stretch_preprocessing_is_invertible_with_exact_jacobian():
    import math

    from darkml.phasespace.flows import BallPreprocess

    pre = BallPreprocess([8.122, 0.0, 0.0208], 3.5, z_stretch=0.3)
    x = torch.tensor([[8.5, 0.3, 0.5], [7.0, -1.0, -1.2], [8.122, 0.0, 0.0], [9.0, 1.0, 2.0]], dtype=torch.float64)
    z, ladj = pre(x)
    assert torch.allclose(pre.inverse(z), x, atol=1e-12)
    for k in range(len(x)):
        J = torch.autograd.functional.jacobian(lambda t: pre(t[None])[0][0], x[k])
        assert ladj[k].item() == pytest.approx(math.log(abs(torch.linalg.det(J).item())), abs=1e-10)
    # the stretch's log-Jacobian has curvature -1/s^2 in z at the mid-plane
    zs = torch.tensor([-1e-3, 0.0, 1e-3], dtype=torch.float64)
    pts = torch.stack([torch.full_like(zs, 8.122), torch.zeros_like(zs), zs], dim=1)
    ls = pre._stretch(pts)[1]
    assert ((ls[0] - 2 * ls[1] + ls[2]) / 1e-6).item() == pytest.approx(-1 / 0.3**2, rel=1e-4)


def test_density_module_refuses_an_unknown_schedule():
    from darkml.phasespace.flows import DensityModule

    spec = _random_flow().spec
    with pytest.raises(ValueError, match="schedule = 'step'"):
        DensityModule(spec, schedule="step")
