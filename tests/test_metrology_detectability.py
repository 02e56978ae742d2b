"""d' (NPW/PW) against the closed form in white noise and a Monte-Carlo observer."""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from recon import detectability as dt
from twin.errors import XrmInputError


def test_task_signal_volumes():
    vs = 2.0
    s = dt.task_signal("void", 20.0, vs, shape=(24, 24, 24))
    assert abs(s.sum() * vs ** 3 / (math.pi / 6 * 20.0 ** 3) - 1) < 0.02
    c = dt.task_signal("crack", 30.0, vs, thickness_um=2.0, orientation=(0, 1, 1), shape=(32,) * 3)
    assert abs(c.sum() * vs ** 3 / (math.pi * 15.0 ** 2 * 2.0) - 1) < 0.05


def test_npw_white_noise_closed_form():
    vs, sigma, dC = 5.0, 0.02, 0.01
    shape = (32, 32, 32)
    s = dt.task_signal("void", 30.0, vs, shape=shape)
    r = dt.detectability({"kind": "void", "size_um": 30.0, "contrast_per_mm": dC}, vs,
                         nps=sigma ** 2, shape=shape)
    closed = dC * math.sqrt((s ** 2).sum()) / sigma  # = Rose SNR for a binary signal
    assert abs(r["dprime_npw"] / closed - 1) < 1e-9
    assert abs(r["dprime_pw"] / closed - 1) < 1e-9  # PW = NPW in white noise
    assert abs(r["auc_npw"] - 0.5 * math.erfc(-closed / 2)) < 1e-12
    assert dt.rose_snr(dC / sigma, 100) == pytest.approx(dC / sigma * 10)


def test_npw_correlated_noise_and_blur_matches_monte_carlo():
    vs, sigma, dC, b = 5.0, 0.02, 0.01, 1.0
    shape = (32, 32, 32)
    s = dt.task_signal("void", 30.0, vs, shape=shape)
    # analytic NPS of white noise through the discrete Gaussian filter (periodic)
    delta = np.zeros(shape)
    delta[0, 0, 0] = 1
    H = np.fft.fftn(ndi.gaussian_filter(delta, 1.0, mode="wrap"))
    dv = (vs / 1000) ** 3
    nps = {"nps": np.fft.fftshift(sigma ** 2 * dv * np.abs(H) ** 2),
           "freq_per_mm": np.fft.fftshift(np.fft.fftfreq(32, d=vs / 1000))}
    Hb = np.fft.fftn(ndi.gaussian_filter(delta, b, mode="wrap"))
    fz, fy, fx, df3 = dt.frequency_grid(shape, vs)
    W = dt.task_function(s, dC, vs)
    d_formula = dt.dprime_npw(W, np.abs(Hb), np.fft.ifftshift(nps["nps"]), df3)
    # Monte Carlo NPW observer: template = expected (blurred) signal
    rng = np.random.default_rng(0)
    sig = ndi.gaussian_filter(s * dC, b, mode="wrap")
    n_trials = 800
    t0 = np.empty(n_trials)
    t1 = np.empty(n_trials)
    for i in range(n_trials):
        n0 = ndi.gaussian_filter(rng.normal(0, sigma, shape), 1.0, mode="wrap")
        n1 = ndi.gaussian_filter(rng.normal(0, sigma, shape), 1.0, mode="wrap")
        t0[i] = (sig * n0).sum()
        t1[i] = (sig * (sig + n1)).sum()
    d_mc = (t1.mean() - t0.mean()) / math.sqrt(0.5 * (t0.var() + t1.var()))
    se = math.sqrt((2 + d_mc ** 2 / 2) / n_trials)  # standard error of an estimated d'
    assert abs(d_mc - d_formula) < 3 * se
    # the high-level API (half spectrum, plane blocks, NPS interpolated from its measured grid,
    # a radial TTF(|f|)) against the whole-grid formula with the same NPS and TTF: the NPS grid
    # points are the task grid's, so only rounding separates them
    ttf = dt.gaussian_ttf(b * vs)
    fr = np.sqrt(fz ** 2 + fy ** 2 + fx ** 2)
    d_grid = dt.dprime_npw(W, ttf(fr), np.fft.ifftshift(nps["nps"]), df3)
    assert abs(d_grid / d_formula - 1) < 0.02  # the continuous Gaussian TTF ~ the discrete blur
    r = dt.detectability({"kind": "void", "size_um": 30.0, "contrast_per_mm": dC}, vs, nps=nps,
                         mtf=ttf, shape=shape)
    assert abs(r["dprime_npw"] / d_grid - 1) < 1e-9
    d_pw = dt.dprime_pw(W, ttf(fr), np.fft.ifftshift(nps["nps"]), df3)
    assert abs(r["dprime_pw"] / d_pw - 1) < 1e-9


@pytest.mark.parametrize("shape", [(12, 10, 9), (11, 13, 16)])
def test_half_spectrum_planes_are_the_full_dft(shape):
    """|F| rebuilt from rfftn's half equals |fftn| on odd and even grids (W(-f) = W(f))."""
    rng = np.random.default_rng(1)
    s = rng.random(shape)
    full = np.abs(np.fft.fftn(s))
    half = dt.task_function(s, 1.0, 1000.0, half=True)
    assert half.shape == shape[:2] + (shape[2] // 2 + 1,)
    rebuilt = np.concatenate([dt._full_planes(half, k0, min(k0 + 5, shape[0]), shape[2])
                              for k0 in range(0, shape[0], 5)])
    np.testing.assert_allclose(rebuilt, full, rtol=1e-12, atol=1e-12 * full.max())


def test_dprime_grows_with_size_and_falls_with_noise():
    vs = 4.0
    base = {"kind": "void", "contrast_per_mm": 0.05}
    d = [dt.detectability({**base, "size_um": s}, vs, nps=0.01, shape=(32,) * 3)["dprime_npw"]
         for s in (8.0, 16.0, 32.0)]
    assert d[0] < d[1] < d[2]
    # d' scales as 1/sigma: variance x4 halves d'
    a = dt.detectability({**base, "size_um": 16.0}, vs, nps=0.01, shape=(32,) * 3)["dprime_npw"]
    b = dt.detectability({**base, "size_um": 16.0}, vs, nps=0.04, shape=(32,) * 3)["dprime_npw"]
    assert a / b == pytest.approx(2.0, rel=1e-9)


def test_bad_task():
    with pytest.raises(XrmInputError, match="unknown task"):
        dt.task_signal("bubble", 10.0, 1.0)
    with pytest.raises(XrmInputError, match="contrast_per_mm"):
        dt.detectability({"kind": "void", "size_um": 10.0}, 1.0, nps=0.1)
