"""Gaussian-process regression of Sec. 2.2 (gpytorch): 9-pixel 12CO lines -> 13CO at their centre.

Kernel (zero mean):

    k(x1, x2) = nu0 alpha (1 + sqrt(3) r) exp(-sqrt(3) r) + nu1 + nu2 delta(x1, x2),   r = |x1 - x2| / l

i.e. ``ScaleKernel(MaternKernel(nu=1.5)) + ConstantKernel`` with the white-noise term
``nu2`` as the Gaussian likelihood's noise. For every velocity bin two GPs are trained, on
horizontal patches ``x[i, j-4:j+4]`` and on vertical patches ``x[i-4:i+4, j]`` centred on a
stride-8 grid of the training tiles (the paper's 7840 pairs per bin for 40 tiles of 120 px);
the prediction at a pixel is the mean of the two. All GPs are one batched gpytorch model
(batch = 2 orientations x bins) trained by Adam on the exact marginal likelihood.

A bin with fewer than ``min_active`` non-zero training targets (rings that only appear
inside the test region: the inner rings are crossed only near l = 350 deg) is predicted by
a *pooled* GP trained on patches drawn from all bins; which bins did so is recorded.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import gpytorch
import numpy as np
import torch

from .patches import PatchPlanes, grid_centres, line_patches, pad_planes

log = logging.getLogger(__name__)

__all__ = ["MaternWhiteGP", "fit_exact_gp", "posterior_weights", "matern32_constant", "predict_mean", "LinePatchGP", "ORIENTATIONS"]

ORIENTATIONS = ("horizontal", "vertical")


class MaternWhiteGP(gpytorch.models.ExactGP):
    """Batched zero-mean GP with a Matérn-3/2 + constant kernel (white noise in the likelihood)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, likelihood: gpytorch.likelihoods.GaussianLikelihood):
        super().__init__(x, y, likelihood)
        batch = x.shape[:-2]
        self.mean_module = gpytorch.means.ZeroMean(batch_shape=batch)
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(nu=1.5, batch_shape=batch), batch_shape=batch
        ) + gpytorch.kernels.ConstantKernel(batch_shape=batch)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def hyperparameters(self) -> dict[str, np.ndarray]:
        """Matérn amplitude nu0*alpha, length scale l, constant nu1 and white noise nu2 per batch member."""
        scale, const = self.covar_module.kernels
        return {
            "outputscale": scale.outputscale.detach().cpu().numpy().reshape(-1),
            "lengthscale": scale.base_kernel.lengthscale.detach().cpu().numpy().reshape(-1),
            "constant": const.constant.detach().cpu().numpy().reshape(-1),
            "noise": self.likelihood.noise.detach().cpu().numpy().reshape(-1),
        }


def fit_exact_gp(x: torch.Tensor, y: torch.Tensor, iters: int = 100, lr: float = 0.05, seed: int = 0,
                 max_cholesky: int = 20000) -> tuple[MaternWhiteGP, list[float]]:
    """Fit a batched :class:`MaternWhiteGP` to ``x`` ``(B, n, d)``, ``y`` ``(B, n)`` by Adam on
    the exact marginal log-likelihood (Cholesky up to ``max_cholesky`` points). Returns the
    model (eval mode) and the per-step loss (negative mll per point, summed over the batch)."""
    torch.manual_seed(seed)
    batch = x.shape[:-2]
    lik = gpytorch.likelihoods.GaussianLikelihood(batch_shape=batch)
    model = MaternWhiteGP(x, y, lik)
    model.train()
    lik.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    hist = []
    with gpytorch.settings.max_cholesky_size(max_cholesky):
        for _ in range(iters):
            opt.zero_grad()
            loss = -mll(model(x), y).sum()
            loss.backward()
            opt.step()
            hist.append(float(loss.detach()))
    model.eval()
    lik.eval()
    return model, hist


@torch.no_grad()
def posterior_weights(model: MaternWhiteGP) -> torch.Tensor:
    """alpha = (K(X, X) + nu2 I)^-1 y per batch member (Cholesky in float64), so that the
    posterior mean at x* is K(x*, X) alpha (zero prior mean)."""
    x = model.train_inputs[0]
    y = model.train_targets
    k = model.covar_module(x, x).to_dense().double()
    noise = model.likelihood.noise.double().reshape(*k.shape[:-2], 1)
    k = k + torch.diag_embed(noise.expand(*k.shape[:-1]))
    chol, info = torch.linalg.cholesky_ex(k)
    jitter = 1e-8
    while bool(info.any()) and jitter < 1e-1:                 # add jitter until positive definite
        eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
        chol, info = torch.linalg.cholesky_ex(k + jitter * k.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None] * eye)
        jitter *= 10
    return torch.cholesky_solve(y.double()[..., None], chol)[..., 0].to(x.dtype)


def matern32_constant(x1: torch.Tensor, x2: torch.Tensor, outputscale, lengthscale, constant) -> torch.Tensor:
    """Cross-covariance ``nu0 alpha (1 + sqrt3 r) exp(-sqrt3 r) + nu1`` (Sec. 2.2), r = |x1 - x2| / l.

    ``x1`` ``(m, d)``, ``x2`` ``(n, d)``; scalars (or 0-d tensors) for one GP -> ``(m, n)``.
    """
    r = torch.cdist(x1, x2) / lengthscale
    s3r = math.sqrt(3.0) * r
    return outputscale * (1.0 + s3r) * torch.exp(-s3r) + constant


@torch.no_grad()
def predict_mean(model: MaternWhiteGP, x: torch.Tensor | list, chunk: int = 4096, alpha: torch.Tensor | None = None,
                 members: list[int] | None = None) -> list[torch.Tensor] | torch.Tensor:
    """Posterior mean ``K(x, X) alpha`` of batch members.

    ``x`` is ``(B, m, d)`` (every member) or a list of ``(m_i, d)`` tensors for ``members``
    (then a list of ``(m_i,)`` is returned), evaluated in chunks of ``chunk`` points. Only
    the cross-covariance is computed -- gpytorch's predictive call also builds the m x m
    test covariance, which dominates for whole maps; tests check both agree.
    """
    model.eval()
    if alpha is None:
        alpha = posterior_weights(model)
    xt = model.train_inputs[0]
    hp = {k: torch.as_tensor(v, device=xt.device) for k, v in model.hyperparameters().items()}
    as_list = isinstance(x, (list, tuple))
    xs = list(x) if as_list else [x[i] for i in range(x.shape[0])]
    mem = members if members is not None else list(range(len(xs)))
    outs = []
    for xi, m in zip(xs, mem):
        parts = []
        for a in range(0, xi.shape[0], chunk):
            k = matern32_constant(xi[a:a + chunk], xt[m], hp["outputscale"][m], hp["lengthscale"][m], hp["constant"][m])
            parts.append(k @ alpha[m])
        outs.append(torch.cat(parts) if parts else xi.new_zeros(0))
    return outs if as_list else torch.stack(outs)


@dataclass
class LinePatchGP:
    """The paper's GP predictor for all bins: fit on training planes, predict whole planes.

    Planes are in scaled units (``PatchPlanes``); ``rings`` lists the bin indices.
    """

    patch: int = 9
    stride: int = 8
    max_train_points: int = 7840
    iters: int = 100
    lr: float = 0.05
    min_active: int = 20
    predict_chunk: int = 2048
    seed: int = 0
    n_rings: int = 17
    device: str = "cpu"
    member_of_ring: dict[int, int] = field(default_factory=dict)   # ring -> batch member (per orientation)
    pooled_rings: list[int] = field(default_factory=list)
    model: MaternWhiteGP | None = None
    history: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0

    # ---- training -----------------------------------------------------------
    def _training_sets(self, planes: PatchPlanes) -> tuple[dict[int, dict[str, np.ndarray]], int]:
        p, h, w = planes.shape
        half = self.patch // 2
        gi, gj = grid_centres(h, w, self.stride, half)
        padded = pad_planes(torch.as_tensor(planes.src), half)
        sets: dict[int, dict[str, np.ndarray]] = {}
        for k in range(self.n_rings):
            idx = np.nonzero(planes.ring == k)[0]
            if idx.size == 0:
                continue
            pp = torch.as_tensor(np.repeat(idx, gi.size))
            ii = torch.as_tensor(np.tile(gi, idx.size))
            jj = torch.as_tensor(np.tile(gj, idx.size))
            sets[k] = {
                "horizontal": line_patches(padded, pp, ii, jj, self.patch, half, "horizontal").numpy(),
                "vertical": line_patches(padded, pp, ii, jj, self.patch, half, "vertical").numpy(),
                "y": planes.tgt[pp.numpy(), ii.numpy(), jj.numpy()],
            }
        n = min(min((len(s["y"]) for s in sets.values()), default=0), self.max_train_points)
        return sets, n

    def fit(self, planes: PatchPlanes) -> "LinePatchGP":
        t0 = time.perf_counter()
        sets, n = self._training_sets(planes)
        if n == 0:
            raise ValueError("GP: no training patches (empty training region?)")
        rng = np.random.default_rng([self.seed, 11])
        active = [k for k, s in sets.items() if int(np.count_nonzero(s["y"])) >= self.min_active]
        self.pooled_rings = [k for k in range(self.n_rings) if k not in active]
        members: list[dict[str, np.ndarray]] = []
        for k in active:
            s = sets[k]
            sel = rng.choice(len(s["y"]), size=n, replace=False) if len(s["y"]) > n else np.arange(n)
            members.append({o: s[o][sel] for o in (*ORIENTATIONS, "y")})
        # pooled GP: patches from every bin that has signal (all bins if none has)
        pool_from = active or list(sets)
        allx = {o: np.concatenate([sets[k][o] for k in pool_from]) for o in (*ORIENTATIONS, "y")}
        sel = rng.choice(len(allx["y"]), size=min(n, len(allx["y"])), replace=False)
        if sel.size < n:
            sel = np.resize(sel, n)
        members.append({o: allx[o][sel] for o in (*ORIENTATIONS, "y")})
        self.member_of_ring = {k: i for i, k in enumerate(active)}
        pooled = len(members) - 1
        for k in self.pooled_rings:
            self.member_of_ring[k] = pooled
        m = len(members)
        x = torch.as_tensor(np.stack([np.stack([mb[o] for mb in members]) for o in ORIENTATIONS]), dtype=torch.float32)
        y = torch.as_tensor(np.stack([np.stack([mb["y"] for mb in members])] * 2), dtype=torch.float32)
        x = x.reshape(2 * m, n, self.patch).to(self.device)
        y = y.reshape(2 * m, n).to(self.device)
        log.info("GP: fitting %d batched GPs (%d bins + pooled, 2 orientations) on %d patches each; pooled bins %s",
                 2 * m, len(active), n, self.pooled_rings)
        self.model, self.history = fit_exact_gp(x, y, iters=self.iters, lr=self.lr, seed=self.seed,
                                                max_cholesky=max(20000, n + 1))
        self.fit_seconds = time.perf_counter() - t0
        return self

    # ---- prediction ---------------------------------------------------------
    def predict(self, planes: PatchPlanes) -> np.ndarray:
        """Mean of the horizontal and vertical GP predictions at every pixel ``(P, H, W)`` (scaled units, >= 0)."""
        if self.model is None:
            raise RuntimeError("GP: call fit() (or load()) before predict()")
        p, h, w = planes.shape
        half = self.patch // 2
        padded = pad_planes(torch.as_tensor(planes.src, dtype=torch.float32), half).to(self.device)
        n_members = self.model.train_inputs[0].shape[0] // 2
        out = np.zeros((p, h, w), dtype=np.float32)
        ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        ii, jj = torch.as_tensor(ii.ravel(), device=self.device), torch.as_tensor(jj.ravel(), device=self.device)
        by_member: dict[int, list[int]] = {}
        for q in range(p):
            by_member.setdefault(self.member_of_ring.get(int(planes.ring[q]), n_members - 1), []).append(q)
        alpha = posterior_weights(self.model)
        for mem, qs in by_member.items():
            pp = torch.as_tensor(np.repeat(qs, h * w), device=self.device)
            i2, j2 = ii.repeat(len(qs)), jj.repeat(len(qs))
            xh = line_patches(padded, pp, i2, j2, self.patch, half, "horizontal")
            xv = line_patches(padded, pp, i2, j2, self.patch, half, "vertical")
            mh, mv = predict_mean(self.model, [xh, xv], self.predict_chunk, alpha, [mem, n_members + mem])
            out[qs] = (0.5 * (mh + mv)).clamp_min(0.0).reshape(len(qs), h, w).cpu().numpy()
        return out

    # ---- persistence --------------------------------------------------------
    def state(self) -> dict[str, Any]:
        assert self.model is not None
        return {
            "config": {k: getattr(self, k) for k in ("patch", "stride", "max_train_points", "iters", "lr", "min_active",
                                                      "predict_chunk", "seed", "n_rings")},
            "member_of_ring": self.member_of_ring,
            "pooled_rings": self.pooled_rings,
            "train_x": self.model.train_inputs[0].cpu(),
            "train_y": self.model.train_targets.cpu(),
            "state_dict": {k: v.cpu() for k, v in self.model.state_dict().items()},
            "history": self.history,
            "fit_seconds": self.fit_seconds,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str = "cpu") -> "LinePatchGP":
        gp = cls(**state["config"], device=device)
        gp.member_of_ring = {int(k): int(v) for k, v in state["member_of_ring"].items()}
        gp.pooled_rings = list(state["pooled_rings"])
        x, y = state["train_x"], state["train_y"]
        lik = gpytorch.likelihoods.GaussianLikelihood(batch_shape=x.shape[:-2])
        gp.model = MaternWhiteGP(x, y, lik)
        gp.model.load_state_dict(state["state_dict"])
        gp.model = gp.model.to(device)
        gp.model.eval()
        lik.eval()
        gp.history = list(state.get("history", []))
        gp.fit_seconds = float(state.get("fit_seconds", 0.0))
        return gp
