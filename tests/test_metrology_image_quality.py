"""CNR, MTF (edge method) and NPS against closed forms."""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.special import erfc

from recon import image_quality as iq
from twin.errors import XrmInputError


def _gauss_edge_cylinder(sigma, n=128, R=40.0, nz=8, noise=0.01, seed=0):
    yy, xx = np.mgrid[:n, :n]
    rr = np.hypot(yy - 63.3, xx - 64.1)
    img = 0.5 * erfc((rr - R) / (sigma * math.sqrt(2))) * 2.0 + 0.5
    rng = np.random.default_rng(seed)
    return np.repeat(img[None], nz, 0) + rng.normal(0, noise, (nz, n, n))


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.5])
def test_mtf_of_gaussian_edge(sigma):
    vs = 5.0
    m = iq.mtf_edge_cylinder(_gauss_edge_cylinder(sigma), vs)
    f = m["freq_per_voxel"]
    ref = np.exp(-2 * math.pi ** 2 * sigma ** 2 * f ** 2)
    sel = ref >= 0.05
    assert np.abs(m["mtf"][sel] - ref[sel]).max() < 0.02
    f50 = math.sqrt(math.log(2) / (2 * math.pi ** 2 * sigma ** 2)) / (vs / 1000)
    assert abs(m["mtf50_per_mm"] / f50 - 1) < 0.03
    assert abs(m["radius_vox"] - 40.0) < 0.5
    assert abs(m["center_row"] - 63.3) < 0.1 and abs(m["center_col"] - 64.1) < 0.1


def test_nps_of_white_noise_is_variance_times_voxel_volume():
    rng = np.random.default_rng(1)
    sigma, vs = 0.05, 4.0
    v = rng.normal(0.7, sigma, (64, 64, 64))
    nps = iq.nps_3d(v, vs, roi_vox=32, detrend="plane")
    dv = (vs / 1000) ** 3
    assert nps["n_rois"] == 8
    assert abs(nps["nps"].mean() / (sigma ** 2 * dv) - 1) < 0.02
    assert abs(nps["variance"] / sigma ** 2 - 1) < 0.02
    # difference of two scans: NPS halved back to one scan's
    w = rng.normal(0.7, sigma, (64, 64, 64))
    nd = iq.nps_3d(v - w, vs, roi_vox=32, detrend="mean", difference=True)
    assert abs(nd["nps"].mean() / (sigma ** 2 * dv) - 1) < 0.03


def test_nps_of_filtered_noise_follows_transfer_function():
    rng = np.random.default_rng(2)
    sigma, vs, n = 1.0, 2.0, 32
    stack = np.concatenate([ndi.gaussian_filter(rng.normal(0, sigma, (n, n, n)), 1.0, mode="wrap")
                            for _ in range(24)])
    nps = iq.nps_3d(stack, vs, roi_vox=n, detrend="mean")
    delta = np.zeros((n, n, n))
    delta[0, 0, 0] = 1
    H2 = np.abs(np.fft.fftn(ndi.gaussian_filter(delta, 1.0, mode="wrap"))) ** 2
    ref = np.fft.fftshift(sigma ** 2 * (vs / 1000) ** 3 * H2)
    fr_r, nps_r = iq.nps_radial(nps)
    ref_r = iq.nps_radial({"nps": ref, "freq_per_mm": nps["freq_per_mm"]})[1]
    sel = ref_r > 0.05 * ref_r.max()
    sel[0] = False  # the DC bin is removed by the mean detrending
    assert np.all(np.abs(nps_r[sel] / ref_r[sel] - 1) < 0.1)


def test_cnr_grows_as_sqrt_of_averaged_frames():
    rng = np.random.default_rng(3)
    lab = np.zeros((40, 40, 40), np.uint8)
    lab[:, :, :20] = 1
    lab[:, :, 20:] = 2
    mu = np.where(lab == 1, 1.0, 0.6)
    sigma = 0.2
    cnrs = {}
    for N in (1, 4, 16):
        frames = mu[None] + rng.normal(0, sigma, (N,) + mu.shape)
        cnrs[N] = iq.cnr(frames.mean(0), lab == 1, lab == 2)
    for N in (4, 16):
        assert abs(cnrs[N] / cnrs[1] / math.sqrt(N) - 1) < 0.05
    assert abs(cnrs[1] - 0.4 / sigma) / (0.4 / sigma) < 0.05


def test_cnr_pairs_touching_only():
    lab = np.zeros((20, 20, 30), np.uint8)
    lab[4:16, 4:16, 2:10] = 1
    lab[4:16, 4:16, 10:18] = 2
    lab[4:16, 4:16, 22:28] = 3  # touches air only
    rng = np.random.default_rng(4)
    vol = np.array([0.0, 1.0, 2.0, 3.0])[lab] + rng.normal(0, 0.1, lab.shape)
    res = iq.cnr_pairs(vol, lab, {1: "cathode", 2: "separator", 3: "can"})
    assert set(res) == {"air/cathode", "air/separator", "air/can", "cathode/separator"}
    assert abs(res["cathode/separator"]["cnr"] - 10.0) < 1.0


def test_cdf_blocks_white_noise():
    rng = np.random.default_rng(5)
    img = rng.normal(2.0, 0.1, (4, 128, 128))
    c = iq.cdf_blocks(img, sizes=(1, 4, 16))
    for n, v in zip(c["block_vox"], c["cdf"]):
        assert abs(v / (3 * 0.1 / n / 2.0) - 1) < 0.15


def test_bad_inputs():
    with pytest.raises(XrmInputError):
        iq.nps_3d(np.zeros((10, 10, 10)), 1.0, roi_vox=32)
    with pytest.raises(XrmInputError, match="isotropic"):
        iq.mtf_edge_cylinder(_gauss_edge_cylinder(1.0), (1, 1, 2))
    with pytest.raises(XrmInputError, match="3-D"):
        iq.cnr(np.zeros((4, 4)), np.ones((4, 4), bool), np.ones((4, 4), bool))


def test_mtf_on_tube_outer_edge():
    """A can-like tube: the outer edge is used, the inner edge stays out of the window."""
    sigma, n = 1.5, 128
    yy, xx = np.mgrid[:n, :n]
    rr = np.hypot(yy - 63.3, xx - 64.1)
    s2 = sigma * math.sqrt(2)
    img = 0.5 * erfc((rr - 45) / s2) - 0.5 * erfc((rr - 25) / s2)  # wall from r=25 to r=45
    vol = np.repeat(img[None], 8, 0) + np.random.default_rng(6).normal(0, 0.01, (8, n, n))
    m = iq.mtf_edge_cylinder(vol, 1000.0)
    f = m["freq_per_voxel"]
    ref = np.exp(-2 * math.pi ** 2 * sigma ** 2 * f ** 2)
    sel = ref >= 0.05
    assert abs(m["radius_vox"] - 45) < 0.5 and abs(m["inner_radius_vox"] - 25) < 0.5
    assert np.abs(m["mtf"][sel] - ref[sel]).max() < 0.02


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.5])
def test_edge_blur_at_interface_recovers_the_gaussian_of_analytic_edges(sigma):
    """Blurred sphere and oblique plane written analytically (erf of the exact distance to the
    true surface); the truth indicator is the voxelised shape. Fitted sigma within 2 %."""
    from scipy.special import ndtr

    rng = np.random.default_rng(3)
    n = 80
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    c = n / 2 + rng.uniform(-0.5, 0.5, 3)
    r = np.sqrt((x - c[2]) ** 2 + (y - c[1]) ** 2 + (z - c[0]) ** 2)
    nrm = np.array([0.31, 0.52, 0.80])
    nrm /= np.linalg.norm(nrm)
    d_plane = (x - n / 2) * nrm[2] + (y - n / 2) * nrm[1] + (z - n / 2) * nrm[0] + 0.23
    interior = np.zeros((n, n, n), bool)
    interior[8:-8, 8:-8, 8:-8] = True
    for dist in (r - 25.0, d_plane):
        vol = 0.2 + 1.3 * ndtr(-dist / sigma) + rng.normal(0, 0.02, dist.shape)
        near = (np.abs(dist) < 4 + 2 * sigma) & interior
        res = iq.edge_blur_at_interface(vol.astype(np.float32), dist <= 0, near, 5.0)
        assert res["sigma_vox"] == pytest.approx(sigma, rel=0.02)
        assert res["sigma_um"] == pytest.approx(5.0 * res["sigma_vox"])
        assert res["contrast"] == pytest.approx(1.3, rel=0.02)


def test_edge_blur_needs_both_sides():
    vol = np.zeros((8, 8, 8), np.float32)
    inside = np.zeros((8, 8, 8), bool)
    with pytest.raises(XrmInputError, match="both sides"):
        iq.edge_blur_at_interface(vol, inside, np.ones_like(inside), 1.0)


def test_touching_pairs_slab_by_slab_equals_a_brute_force_count():
    """Face contacts counted slab by slab equal a direct count over every voxel pair."""
    from recon.image_quality import touching_pairs

    rng = np.random.default_rng(7)
    lab = rng.integers(0, 5, (13, 9, 11)).astype(np.uint8)
    lab[lab == 4] = 0
    lab[6:, :, :] = np.where(lab[6:] == 3, 0, lab[6:])  # label 3 only in the first planes
    lab[0, 0, 0], lab[12, 8, 10] = 9, 9                  # label 9 touches only what is beside it
    counts = {}
    for ax in range(3):
        a, b = np.moveaxis(lab, ax, 0)[:-1].ravel(), np.moveaxis(lab, ax, 0)[1:].ravel()
        for u, w in zip(a.tolist(), b.tolist()):
            if u != w and u > 0 and w > 0:
                key = (min(u, w), max(u, w))
                counts[key] = counts.get(key, 0) + 1
    for slab in (1, 2, 5, 32):
        for need in (1, 3, 40):
            want = sorted(k for k, c in counts.items() if c >= need)
            assert touching_pairs(lab, min_contact_voxels=need, slab=slab) == want, (slab, need)
    assert touching_pairs(np.zeros((4, 4, 4), np.uint8)) == []
