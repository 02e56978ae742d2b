"""Detectability of the truth defects in a reconstruction: blur, noise, contrast, d', POD.

A synthetic "reconstruction" with known physics: an Al-like host cylinder (mu 2 /mm) holding 36
air voids of 1-8 voxel diameters, rendered with partial volumes (3x3x3 sub-voxels), blurred by
a Gaussian of 1 voxel and given white noise of sd 0.25 /mm. `twin.measure.measure` must find the
blur, noise and contrast that went in, and its d' must equal an independent frequency integral
of the ball's analytic Fourier transform written here.
"""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from twin.measure import measure

VS, MU, BLUR, NOISE, N = 5.0, 2.0, 1.0, 0.25, 64


def _synthetic(seed=0, nvoids=36):
    rng = np.random.default_rng(seed)
    ss = 3
    g = (np.arange(N * ss) + 0.5) / ss - 0.5
    Z, Y, X = np.meshgrid(g, g, g, indexing="ij", sparse=True)
    c0 = (N - 1) / 2
    host_f = ((X - c0) ** 2 + (Y - c0) ** 2 <= 22 ** 2) & (Z >= 6) & (Z <= N - 7)
    voids_f = np.zeros(host_f.shape, bool)
    z, y, x = np.mgrid[:N, :N, :N].astype(float)
    lab = (((x - c0) ** 2 + (y - c0) ** 2 <= 22 ** 2) & (z >= 6) & (z <= N - 7)).astype(np.int32)
    rows, cents = [], []
    while len(rows) < nvoids:
        d = float(np.exp(rng.uniform(np.log(1.0), np.log(8.0))))
        c = rng.uniform([14, c0 - 13, c0 - 13], [N - 15, c0 + 13, c0 + 13])
        if any(np.linalg.norm(c - o) < (d + od) / 2 + 4 for o, od in cents):
            continue
        cents.append((c, d))
        voids_f |= (X - c[2]) ** 2 + (Y - c[1]) ** 2 + (Z - c[0]) ** 2 <= (d / 2) ** 2
        lab[(x - c[2]) ** 2 + (y - c[1]) ** 2 + (z - c[0]) ** 2 <= (d / 2) ** 2] = 2
        rows.append({"type": "void", "label": 2, "size_um": d * VS,
                     "center_mm": [float(c[2] * VS / 1e3), float(c[1] * VS / 1e3), float(c[0] * VS / 1e3)]})
    frac = (host_f & ~voids_f).reshape(N, ss, N, ss, N, ss).mean((1, 3, 5))
    vol = ndi.gaussian_filter(MU * frac, BLUR) + rng.normal(0, NOISE, (N, N, N))
    truth = {"labels": lab, "voxel_size_um": VS, "origin_mm": (0.0, 0.0, 0.0),
             "materials": [{"label": 0, "name": "air", "material": "air", "density_g_cm3": 0.0012},
                           {"label": 1, "name": "electrode", "material": "Al", "density_g_cm3": 2.7},
                           {"label": 2, "name": "void", "material": "air", "density_g_cm3": 0.0012}],
             "defects": rows}
    return vol.astype(np.float32), truth


@pytest.fixture(scope="module")
def scored():
    vol, truth = _synthetic()
    return measure(vol, VS, (0.0, 0.0, 0.0), truth=truth, kvp=80.0)


def test_blur_noise_and_contrast_are_what_went_in(scored):
    det = scored["detectability"]
    blur = det["edge_blur"]
    assert blur["pair"] == "air/electrode"
    # true blur of a partial-volume edge: Gaussian 1 voxel and the voxel box (variance 1/12);
    # the fit reads about 5 % high there (documented in recon.image_quality)
    assert blur["sigma_vox"] == pytest.approx(math.sqrt(BLUR ** 2 + 1 / 12), rel=0.10)
    (task,) = det["tasks"]
    assert task["kind"] == "void" and task["host"] == "electrode"
    assert task["contrast_per_mm"] == pytest.approx(-MU, rel=0.03)
    assert task["noise_variance"] == pytest.approx(NOISE ** 2, rel=0.15)


def test_dprime_equals_an_independent_frequency_integral(scored):
    """d'^2 = C^2 / (sigma^2 dv) * integral |S(f)|^2 TTF(f)^2 d^3f for white noise, S the ball's
    transform times the voxel-average sinc per axis, over the voxel grid's band."""
    (t,) = scored["detectability"]["tasks"]
    d_mm, R = VS / 1000.0, t["size_um"] / 2000.0
    nf = 161
    f1 = np.linspace(-0.5 / d_mm, 0.5 / d_mm, nf)
    fz, fy, fx = np.meshgrid(f1, f1, f1, indexing="ij", sparse=True)
    fr = np.sqrt(fx ** 2 + fy ** 2 + fz ** 2)
    k = 2 * np.pi * np.maximum(fr, 1e-9) * R
    ball = 4 / 3 * np.pi * R ** 3 * 3 * (np.sin(k) - k * np.cos(k)) / k ** 3
    box = np.sinc(fx * d_mm) * np.sinc(fy * d_mm) * np.sinc(fz * d_mm)
    ttf = np.exp(-2 * np.pi ** 2 * (t["ttf_sigma_um"] / 1000.0) ** 2 * fr ** 2)
    df3 = (f1[1] - f1[0]) ** 3
    integral = float(((ball * box * ttf) ** 2).sum() * df3)
    d2 = t["contrast_per_mm"] ** 2 * integral / (t["noise_variance"] * d_mm ** 3)
    assert t["dprime_npw"] == pytest.approx(math.sqrt(d2), rel=0.03)
    assert t["auc_npw"] == pytest.approx(0.5 * math.erfc(-t["dprime_npw"] / 2), rel=1e-9)


def test_pod_and_recall_by_size(scored):
    pod = scored["detectability"]["pod"]["void"]
    assert pod["n"] == 36 and pod["size_key"] == "size_um"
    assert sum(b["n"] for b in pod["recall_by_size"]) == 36
    small = [b for b in pod["recall_by_size"] if b["max_vox"] is not None and b["max_vox"] <= 2]
    assert small and all(b["recall"] == 0.0 for b in small)  # below 2 voxels: blurred away
    assert pod["recall_at_least_3_vox"] >= 0.8
    # the POD curve crosses 50 % between 1.5 and 3.5 voxels, a90/95 above a90 above a50
    assert 1.5 * VS < pod["a50_um"] < 3.5 * VS
    assert pod["a50_um"] < pod["a90_um"] <= pod["a90_95_um"]
    assert len(pod["a_um"]) == len(pod["hit"]) == 36


def test_noisier_scan_detects_less():
    """Doubling the noise raises a50 (the same voids, the same blur)."""
    vol_lo, truth = _synthetic()
    rng = np.random.default_rng(7)
    vol_hi = vol_lo + rng.normal(0, 0.45, vol_lo.shape).astype(np.float32)
    lo = measure(vol_lo, VS, (0.0, 0.0, 0.0), truth=truth, kvp=80.0)["detectability"]
    hi = measure(vol_hi, VS, (0.0, 0.0, 0.0), truth=truth, kvp=80.0)["detectability"]
    assert hi["pod"]["void"]["n_hits"] < lo["pod"]["void"]["n_hits"]
    assert hi["tasks"][0]["dprime_npw"] < 0.7 * lo["tasks"][0]["dprime_npw"]


def test_grey_calibration_recovers_energy_and_offset_of_an_interior_scan():
    """Greys = xraydb mu at 90 keV + 0.70 /mm (an interior scan's offset): the fit returns
    both, so a phase that was not measured (KOH) reads its table mu plus the offset. Before,
    the table mu went in alone and a KOH crack in NiMH paste read 12x its contrast."""
    from twin.defect_scores import grey_calibration, table_contrast_per_mm
    from twin.materials import get_material

    mats = {"paste": {"material": "nimh_positive", "density_g_cm3": 3.257},
            "foil": {"material": "Ni", "density_g_cm3": 8.91},
            "separator": {"material": "nimh_separator", "density_g_cm3": 1.134},
            "koh": {"material": "KOH_30wt", "density_g_cm3": 1.29}}

    def mu(name, e):
        m = mats[name]
        return float(np.ravel(get_material(m["material"], m["density_g_cm3"]).mu_per_mm(e))[0])

    greys = {n: mu(n, 90.0) + 0.70 for n in ("paste", "foil", "separator")}
    e, off = grey_calibration(greys, mats, 160.0)
    assert e == pytest.approx(90.0, abs=1.0)
    assert off == pytest.approx(0.70, abs=0.005)
    assert table_contrast_per_mm("paste", "koh", mats, e) == pytest.approx(
        mu("paste", 90.0) - mu("koh", 90.0), rel=0.02)
    assert grey_calibration({"paste": 1.0}, mats, 160.0) is None


def test_edge_blur_of_a_layer_fits_one_of_its_faces():
    """A layer 120 voxels thick in a host: the interface is two faces, and the median of its
    voxels lies mid-layer, with no host within the fitting crop (it used to fail there with
    'the mask has no background voxel', at 512^3 of the 120-cycle NiMH cell). The fit on one
    face recovers the Gaussian written analytically (erf profile of each face)."""
    from scipy.special import ndtr

    from twin.defect_scores import edge_blur

    sigma, nx = 1.5, 240
    x = np.arange(nx, dtype=float)
    lo, hi = 59.5, 179.5  # faces between voxels 59|60 and 179|180
    host = ndtr((lo - x) / sigma) + ndtr((x - hi) / sigma)
    profile = 0.4 + 1.1 * host
    rng = np.random.default_rng(2)
    vol = np.broadcast_to(profile, (48, 48, nx)) + rng.normal(0, 0.01, (48, 48, nx))
    labels = np.where((x < 60) | (x >= 180), 1, 2).astype(np.int16)
    t_grid = np.ascontiguousarray(np.broadcast_to(labels, (48, 48, nx)))
    res = edge_blur(vol.astype(np.float32), t_grid, np.ones(t_grid.shape, bool), (1, 2), 5.0)
    assert res is not None
    assert res["sigma_vox"] == pytest.approx(sigma, rel=0.03)
