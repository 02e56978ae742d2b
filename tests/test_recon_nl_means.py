"""Non-local means in Taichi kernels (recon.nl_means) against scikit-image and a direct sum.

The independent reference is written here from the definition: for every pixel and every
shift of the whole search window, the patch distance summed term by term in float64, the
weight from the published Schraudolph constants, the weighted mean. The kernels compute one
half of the window and read each weight twice; the reference does not.
"""

import numpy as np
import pytest

from recon.denoise import nl_means
from recon.nl_means import batch_slices, fast_expf, half_window, nl_means_slices
from twin.errors import XrmInputError


def _schraudolph_expf(y):
    """Schraudolph (1999) in float32: the int32 bits A*y + B with A = 2^23/ln 2, B = 127*2^23 - 486411."""
    a = np.float32(2.0 ** 23 / np.log(2.0))
    b = np.int32(127 * 2 ** 23 - 486411)
    return ((a * np.float32(y)).astype(np.int32) + b).view(np.float32).astype(np.float64)


def _direct_nl_means(img, patch_size, patch_distance, h, sigma):
    """The weighted mean over the whole window, every patch sum written out (float64)."""
    s = patch_size + (1 - patch_size % 2)
    o, d = s // 2, patch_distance
    pad = o + d + 1
    p = np.pad(img.astype(np.float64), pad, mode="reflect")
    ny, nx = img.shape
    num = np.zeros((ny, nx))
    den = np.zeros((ny, nx))
    for tr in range(-d, d + 1):
        for tc in range(-d, d + 1):
            dist = np.zeros((ny, nx))
            for a in range(-o + 1, o + 1):
                for b in range(-o + 1, o + 1):
                    here = p[pad + a:pad + a + ny, pad + b:pad + b + nx]
                    there = p[pad + a + tr:pad + a + tr + ny, pad + b + tc:pad + b + tc + nx]
                    dist += (here - there) ** 2 - 2 * sigma ** 2
            dist = np.maximum(dist, 0) / (h * h * s * s)
            w = np.zeros((ny, nx))
            near = dist <= 5.0  # farther patches weigh 0
            w[near] = [_schraudolph_expf(-v) for v in dist[near]]
            num += w * p[pad + tr:pad + tr + ny, pad + tc:pad + tc + nx]
            den += w
    return num / den


def _noisy_slices(nz, ny, nx, noise, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:ny, :nx]
    clean = ((np.hypot(y - ny / 2, x - nx / 2) < ny / 4) + 0.3 * (x > 0.75 * nx)).astype(np.float32)
    return np.stack([clean + noise * rng.standard_normal(clean.shape).astype(np.float32) for _ in range(nz)])


def test_fast_expf_is_schraudolphs_exponential():
    y = -np.linspace(0, 5, 501)
    got = fast_expf(y).astype(np.float64)
    np.testing.assert_array_equal(got, [_schraudolph_expf(v) for v in y])
    assert np.max(np.abs(got / np.exp(y) - 1)) < 0.04  # the approximation's known bound


def test_half_window_and_its_mirror_cover_the_search_window_once():
    for d in (1, 3, 8):
        half = half_window(d)
        full = set(half) | {(-a, -b) for a, b in half} | {(0, 0)}
        assert len(half) == ((2 * d + 1) ** 2 - 1) // 2
        assert full == {(a, b) for a in range(-d, d + 1) for b in range(-d, d + 1)}


@pytest.mark.parametrize("patch_size, patch_distance, h, sigma", [
    (5, 4, 0.075, 0.15),  # the paper's patch, a shorter search
    (4, 3, 0.1, 0.1),  # an even patch size is made odd, as scikit-image does
    (3, 2, 0.3, 0.0),  # no noise variance subtracted
])
def test_kernels_equal_a_direct_float64_sum(patch_size, patch_distance, h, sigma):
    vol = _noisy_slices(2, 30, 26, 0.15, seed=1)
    got = nl_means_slices(vol, patch_size=patch_size, patch_distance=patch_distance, h=h, sigma=sigma)
    for z in range(len(vol)):
        want = _direct_nl_means(vol[z], patch_size, patch_distance, h, sigma)
        np.testing.assert_allclose(got[z], want, rtol=0, atol=2e-6)  # float32 sums of 289 weights


@pytest.mark.parametrize("patch_size, patch_distance, h, sigma", [
    (5, 8, 0.075, 0.15),  # the paper's kernel 17 and smoothing 0.5
    (7, 3, 0.2, 0.0),
    (4, 5, 0.1, 0.1),
])
def test_kernels_equal_scikit_image_fast_mode(patch_size, patch_distance, h, sigma):
    from skimage.restoration import denoise_nl_means

    vol = _noisy_slices(3, 96, 80, 0.15, seed=2)
    got = nl_means_slices(vol, patch_size=patch_size, patch_distance=patch_distance, h=h, sigma=sigma)
    want = np.stack([denoise_nl_means(s, patch_size=patch_size, patch_distance=patch_distance,
                                      h=h, sigma=sigma, fast_mode=True) for s in vol])
    assert got.dtype == np.float32 and got.shape == vol.shape
    span = float(vol.max() - vol.min())
    assert np.max(np.abs(got - want)) <= 1e-5 * span


def test_batches_and_repeats_give_the_same_bytes():
    vol = _noisy_slices(5, 40, 36, 0.2, seed=3)
    kw = dict(patch_size=5, patch_distance=4, h=0.1, sigma=0.2)
    whole = nl_means_slices(vol, **kw)
    budgets = [1 << 10, 60_000, 110_000, 160_000, 1 << 30]  # one slice needs 52 400 bytes
    per_batch = [batch_slices(vol.shape, 5, 4, b) for b in budgets]
    assert per_batch == [1, 1, 2, 3, 5]  # batches of 1, 2, 3 (and 2 left) or all 5 slices
    for budget in budgets:
        assert nl_means_slices(vol, batch_bytes=budget, **kw).tobytes() == whole.tobytes()
    assert nl_means_slices(vol, **kw).tobytes() == whole.tobytes()
    assert nl_means_slices(vol[2], **kw).tobytes() == whole[2].tobytes()  # a 2-D slice alone


def test_the_gpu_path_gives_the_cpu_path_bytes(monkeypatch):
    """The CUDA code path (Taichi ndarrays kept for all shifts, flat loops, quarter batches)
    run on the CPU: the same bytes as the CPU's row loops."""
    from recon import nl_means as module

    vol = _noisy_slices(6, 40, 36, 0.2, seed=6)
    kw = dict(patch_size=5, patch_distance=4, h=0.1, sigma=0.2)
    cpu = nl_means_slices(vol, **kw)
    batches = []
    monkeypatch.setattr(module, "DEVICE_PATH", True)
    gpu_way = nl_means_slices(vol, progress=batches.append, **kw)
    assert batches == [2, 2, 2]  # at least four batches' worth: ceil(6 / 4) = 2 slices each
    assert gpu_way.tobytes() == cpu.tobytes()


def test_a_constant_image_stays_constant_and_smooth_noise_drops():
    flat = np.full((1, 32, 32), 0.7, np.float32)
    # a mean of 289 equal values in float32 sums: within 289 x 2^-24 (the worst-case bound)
    np.testing.assert_allclose(nl_means_slices(flat, h=0.05, sigma=0.0), flat, rtol=289 * 2.0 ** -24)
    noisy = _noisy_slices(2, 64, 64, 0.1, seed=4)
    out = nl_means_slices(noisy, patch_size=5, patch_distance=8, h=0.5 * 0.1, sigma=0.1)
    inside = (slice(None), slice(26, 38), slice(26, 38))
    assert out[inside].std() < 0.5 * noisy[inside].std()


def test_denoise_backends_agree_and_bad_input_is_refused():
    vol = _noisy_slices(3, 48, 48, 0.1, seed=5)
    done = {"skimage": [], "taichi": []}
    sk = nl_means(vol, kernel_size=9, smoothing=0.5, sigma=0.1, backend="skimage", progress=done["skimage"].append)
    ti_ = nl_means(vol, kernel_size=9, smoothing=0.5, sigma=0.1, backend="taichi", progress=done["taichi"].append)
    assert sum(done["skimage"]) == sum(done["taichi"]) == len(vol)  # every slice reported once
    assert np.max(np.abs(sk - ti_)) <= 1e-5 * float(vol.max() - vol.min())
    # auto on the CPU is scikit-image, byte for byte
    assert nl_means(vol, kernel_size=9, smoothing=0.5, sigma=0.1).tobytes() == sk.tobytes()
    with pytest.raises(XrmInputError, match="backend must be one of auto, skimage, taichi"):
        nl_means(vol, backend="cupy")
    with pytest.raises(XrmInputError, match="per_slice=False"):
        nl_means(vol, per_slice=False, backend="taichi")
    with pytest.raises(XrmInputError, match="h must be > 0"):
        nl_means_slices(vol, h=0.0, sigma=0.1)
    with pytest.raises(XrmInputError, match="sigma must be >= 0"):
        nl_means_slices(vol, h=0.1, sigma=float("nan"))
    with pytest.raises(XrmInputError, match="2-D or 3-D"):
        nl_means_slices(vol[None], h=0.1, sigma=0.1)
    bad = vol.copy()
    bad[1, 5, 7] = np.nan
    with pytest.raises(XrmInputError, match="non-finite"):
        nl_means_slices(bad, h=0.1, sigma=0.1)
