"""Polynomial float32 transcendentals of the compiled lensing kernels against float64 numpy."""

import numpy as np
import pytest
import torch

from darkml.lensing import fast, fastmath
from darkml.lensing.params import pixel_grid

RNG = np.random.default_rng(2024)
EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _rel(got: torch.Tensor, ref: np.ndarray) -> float:
    got = got.double().numpy()
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-300)))


def test_log2_over_the_normal_range():
    x = np.concatenate([10 ** RNG.uniform(-37, 38, 100_000), RNG.uniform(0.5, 2.0, 100_000),
                        [1.0, 2.0, 0.5, np.sqrt(2), 1 - 1e-7, 1 + 2e-7]]).astype(np.float32)
    err = np.abs(fastmath.log2(_t(x)).double().numpy() - np.log2(x.astype(np.float64)))
    # a few ulp of the result, and absolute 2 eps near x = 1 where log2 -> 0
    assert np.all(err <= 4 * EPS32 * np.maximum(np.abs(np.log2(x.astype(np.float64))), 1.0))
    assert fastmath.log2(_t([1.0, 2.0, 0.25])).tolist() == pytest.approx([0.0, 1.0, -2.0], abs=1e-7)


def test_exp2_relative_error_and_underflow():
    y = np.concatenate([RNG.uniform(-125.9, 126.9, 200_000), np.arange(-126, 127)]).astype(np.float32)
    assert _rel(fastmath.exp2(_t(y)), np.exp2(y.astype(np.float64))) < 3 * EPS32
    assert fastmath.exp2(_t([-127.0, -300.0, 0.0])).tolist() == [0.0, 0.0, 1.0]


def test_log1p_keeps_relative_precision_for_small_arguments():
    z = np.concatenate([10 ** RNG.uniform(-12, 6, 100_000), -(10 ** RNG.uniform(-12, -0.05, 100_000)),
                        [1e-30, -1e-30, 0.5, -0.5]]).astype(np.float32)
    assert _rel(fastmath.log1p(_t(z)), np.log1p(z.astype(np.float64))) < 3 * EPS32


def test_atan_ratio_all_signs_and_magnitudes():
    u = (RNG.standard_normal(200_000) * 10 ** RNG.uniform(-8, 8, 200_000)).astype(np.float32)
    v = (10 ** RNG.uniform(-10, 6, 200_000)).astype(np.float32)
    u[:4], v[:4] = [0.0, 1.0, -1.0, 1e-20], [1.0, 1.0, 1.0, 1e-20]
    ref = np.arctan2(u.astype(np.float64), v.astype(np.float64))
    assert _rel(fastmath.atan_ratio(_t(u), _t(v)), ref) < 3 * EPS32


def test_atanh_ratio_including_tiny_arguments():
    w = RNG.uniform(-0.95, 0.95, 200_000) * 10 ** RNG.uniform(-9, 0, 200_000)
    v = 10 ** RNG.uniform(-3, 3, 200_000)
    u, v = (w * v).astype(np.float32), v.astype(np.float32)
    ref = np.arctanh(u.astype(np.float64) / v.astype(np.float64))
    got = fastmath.atanh_ratio(_t(u), _t(v))
    # relative precision holds down to |w| = 1e-9; near |w| -> 1 the float32 input itself limits it
    assert _rel(got, ref) < 1e-5
    small = np.abs(ref) < 0.5
    assert _rel(got[torch.from_numpy(small)], ref[small]) < 4 * EPS32


def test_fast_math_is_used_only_inside_compiled_float32_kernels():
    x = torch.ones(3)
    assert not fastmath.use_fast_math(x)  # eager: torch's own functions
    assert not fastmath.use_fast_math(x.double())


def test_ray_grid_planes_hold_the_sub_pixel_positions():
    npx, s, d = 5, 3, 0.1
    gx, gy = fast.ray_grid(npx, d, s)
    g = pixel_grid(npx, d, s)
    assert gx.shape == gy.shape == (s * s * npx * npx,)
    for k in RNG.integers(0, len(gx), 50):
        plane, pix = divmod(int(k), npx * npx)
        i, j = divmod(plane, s)
        row, col = divmod(pix, npx)
        assert gx[k] == g[col * s + j] and gy[k] == g[row * s + i]
    # the sub-pixel average (sum over planes) equals the average pool of the image-ordered grid
    img = np.add.outer(g**2, 3 * g)  # f(y, x) = y^2 + 3x on the (ns, ns) image
    pooled = img.reshape(npx, s, npx, s).mean((1, 3))
    planes = (gy.numpy() ** 2 + 3 * gx.numpy()).reshape(s * s, npx, npx).mean(0)
    assert np.allclose(planes, pooled, rtol=1e-13)
