"""CTSimU runner: intensity supersampling at edges, bands, grey values and noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twin.ctsimu.reader import read_scenario
from twin.ctsimu.run import band_vectors, integrate_pixels, sample_grid_shape, simulate_images, subpixel_rule
from twin.ctsimu.writer import export_scenario
from twin.scenario import validate


def _edge_scenario(tmp_path, offset_px: float):
    data = {"name": "edge", "source": {"monochromatic_kev": 50.0},
            "geometry": {"source_object_mm": 100.0, "object_detector_mm": 100.0, "objective": "flat-panel",
                         "projections": 1, "detector_offset_px": [offset_px, 0.0]},
            "detector": {"pixels": [8, 6], "pixel_um": 100.0, "ideal": True, "flats": 1, "darks": 1},
            "phantom": {"kind": "parts", "parts": [
                {"shape": "box", "center_mm": [-1.0, 0.0, 0.0], "size_mm": [2.0, 2.0, 2.0], "material": "W"}]}}
    spec = validate(data, str(tmp_path / "edge.toml"))
    return read_scenario(export_scenario(spec, tmp_path / "edge.json")["path"])


def test_partial_pixel_coverage_averages_intensity(tmp_path):
    """A 2 mm tungsten edge 0.3 px into a pixel column lets 70 % of the flux through."""
    ss = 8
    sc = _edge_scenario(tmp_path, 0.7)
    # where the edge plane (x = 0, through the source) meets the detector, in column units
    v = sc.vectors[0]
    edge_col = -v[3] / v[6] + (sc.cols - 1) / 2.0
    assert edge_col == pytest.approx(2.8, abs=1e-9)  # column 3 spans [2.5, 3.5]: 0.3 px covered
    frac = edge_col - 2.5
    imgs = simulate_images(sc, supersample=ss, arch="cpu")
    t = imgs["projections"][0].astype(np.float64) / imgs["flats"][0]
    assert t[:, :3].max() < 1e-6          # behind the block
    assert np.allclose(t[:, 4:], 1.0)      # free beam
    # what the rule computes: the sub-rays at x < 0.3 (x = 0, 1/8, 2/8) are covered
    x, w = subpixel_rule(ss)
    assert 1.0 - w[x < frac].sum() == pytest.approx(0.6875, abs=1e-12)
    np.testing.assert_allclose(t[:, 3], 1.0 - w[x < frac].sum(), atol=1e-5)
    # against the physical 0.7: for ss >= 5 the weights summed through sub-ray k
    # (2 <= k <= ss - 3) are (k + 1/2) / ss, so the rule reads an edge between sub-rays k / ss
    # and (k + 1) / ss as lying at their midpoint (error <= 1 / (2 ss) = 0.0625 in general);
    # here k = 2, the edge at 0.3 is read at 2.5 / 8 = 0.3125: 0.0125 off
    assert np.abs(t[:, 3] - 0.7).max() <= 0.0125 + 1e-5


@pytest.mark.parametrize("ss", [2, 3, 4, 5, 6, 8, 24])
def test_subpixel_rule_integrates_the_pixel_aperture(ss):
    """Weights sum to 1 and integrate x, x^2, x^3 over the pixel exactly (box variance 1/12)."""
    x, w = subpixel_rule(ss)
    assert x[0] == 0.0 and x[-1] == 1.0 and np.all(w > 0)
    for k in range(4):
        assert (w * x ** k).sum() == pytest.approx(1.0 / (k + 1), abs=1e-12)
    var = (w * (x - 0.5) ** 2).sum()
    assert var == pytest.approx(1.0 / 12.0, abs=1e-12)


@pytest.mark.parametrize("ss", [1, 2, 3, 7])
def test_band_vectors_tile_the_detector(ss):
    """Bands of rows put their sub-rays exactly where the whole detector's are."""
    vec = np.array([[0, -100, 0, 0, 100, 0, 0.1, 0, 0, 0, 0, 0.1]], float)
    rows, cols = 6, 4

    def centres(v, n_rows, n_cols):
        r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
        return (v[0, 3:6] + (c[..., None] - (n_cols - 1) / 2) * v[0, 6:9]
                + (r[..., None] - (n_rows - 1) / 2) * v[0, 9:12])

    whole = centres(band_vectors(vec, rows, cols, ss, 0, rows), *sample_grid_shape(rows, cols, ss))
    a = centres(band_vectors(vec, rows, cols, ss, 0, 2), *sample_grid_shape(2, cols, ss))
    b = centres(band_vectors(vec, rows, cols, ss, 2, rows), *sample_grid_shape(4, cols, ss))
    shared = 0 if ss == 1 else 1  # the band border's sub-ray row is traced by both bands
    np.testing.assert_allclose(np.concatenate([a, b[shared:]]), whole)
    # sub-rays sit at k / ss of the pixel from its corner (ss >= 2) or at its centre
    pix = centres(vec, rows, cols)
    corner = pix[0, 0] - 0.5 * vec[0, 6:9] - 0.5 * vec[0, 9:12]
    x, _ = subpixel_rule(ss)
    np.testing.assert_allclose(whole[0, 0], corner + x[0] * vec[0, 6:9] + x[0] * vec[0, 9:12])
    np.testing.assert_allclose(whole[-1, -1], pix[-1, -1] + (x[-1] - 0.5) * (vec[0, 6:9] + vec[0, 9:12]))
    # a linear field integrates to its value at the pixel centre
    lin = whole @ np.array([0.3, 0.0, -0.7])
    np.testing.assert_allclose(integrate_pixels(lin, ss), pix @ np.array([0.3, 0.0, -0.7]), atol=1e-12)


def sampled_quadrant_coverage(n: int, tilt_h_deg: float, tilt_v_deg: float, k: int = 200) -> np.ndarray:
    """Covered fraction of each pixel of an n x n detector by a quadrant, by point sampling.

    Independent of :func:`twin.ctsimu.assets.edge_shadow_coverage` (no half-planes, no
    clipping): pixel units, x right (columns), y down (rows), corner at the centre of the
    central pixel, edges e_h = (-cos th, -sin th) (near-horizontal) and e_v = (-sin tv, cos tv)
    (near-vertical). A point p is inside when p = a e_h + b e_v with a, b >= 0; each pixel is
    sampled at the centres of a k x k grid (error below about 1 / k for a straight edge).
    """
    th, tv = np.deg2rad(tilt_h_deg), np.deg2rad(tilt_v_deg)
    basis = np.array([[-np.cos(th), -np.sin(tv)], [-np.sin(th), np.cos(tv)]])  # columns e_h, e_v
    inv = np.linalg.inv(basis)
    f = (np.arange(k) + 0.5) / k
    cov = np.zeros((n, n))
    for r in range(n):
        x = (np.arange(n)[:, None, None] + f[None, None, :] - n / 2.0) * np.ones((1, k, 1))
        y = (r + f[None, :, None] - n / 2.0) * np.ones((n, 1, k))
        ab = np.einsum("ij,jnuv->inuv", inv, np.stack([x, y]))
        cov[r] = ((ab[0] >= 0) & (ab[1] >= 0)).mean(axis=(1, 2))
    return cov


def test_every_clipped_pixel_reads_partly_covered(tmp_path):
    """CTSimU 2D-WE-2 on a 101 x 101 px detector against the exact pixel coverage.

    The reference is each pixel's area clipped by the edge's shadow (a quadrant tilted by
    3 deg, corner on the central pixel's centre; the solid angle varies by < 1e-6 across a
    pixel, so the area fraction is the intensity fraction;
    :func:`twin.ctsimu.assets.edge_shadow_coverage`, checked below). Every pixel the shadow covers
    by more than 1e-4 and less than 1 - 1e-4 must read partly covered (0 < GV < 60000 after
    flat-field correction), no pixel outside the shadow's border may, and the grey values
    must agree within the rule's coverage resolution (its largest sub-ray weight).
    """
    pytest.importorskip("ctsimu")  # the shipped scenario file
    import json

    import ctsimu

    from twin.ctsimu.assets import edge_shadow_coverage, prepare_test_folder

    scen = Path(ctsimu.__file__).parent / "evaluation" / "scenarios" / "2D-WE-2_2021-10-13v02r03dp.json"
    path = prepare_test_folder(scen, tmp_path / "scenario")
    data = json.loads(path.read_text())
    n = 101
    data["detector"]["columns"]["value"] = data["detector"]["rows"]["value"] = n
    ss = 24
    sc = read_scenario(data=data, base_dir=path.parent)
    imgs = simulate_images(sc, supersample=ss, arch="cpu")
    measured = imgs["projections"][0].astype(float) / imgs["flats"][0].astype(float) * 60000.0
    cov = edge_shadow_coverage(n, n, 3.0, 3.0)
    exact = 60000.0 * (1.0 - cov)

    partly = (measured > 0) & (measured < 60000)
    clear = (cov > 1e-4) & (cov < 1 - 1e-4)
    assert clear.sum() > n  # two edges, each across half the detector
    assert not np.any(clear & ~partly), np.argwhere(clear & ~partly)
    assert not np.any(partly & ((cov == 0) | (cov == 1))), np.argwhere(partly & ((cov == 0) | (cov == 1)))
    step = subpixel_rule(ss)[1].max() * 60000.0
    assert np.abs(measured - exact)[cov > 0].max() <= step + 1.0


def test_grey_values_and_snr(tmp_path):
    """imin/imax method, uint16 output and the SNR at imax of the CTSimU noise model."""
    sc = _edge_scenario(tmp_path, 0.5)
    from dataclasses import replace

    det = replace(sc.detector, imin=1000.0, imax=41000.0, snr_at_imax=50.0, bit_depth=16)
    sc = replace(sc, detector=det, cols=sc.cols, rows=sc.rows)
    imgs = simulate_images(sc, supersample=1, arch="cpu", seed=5)
    p = imgs["projections"][0]
    assert p.dtype == np.uint16
    free = p[:, 5:].astype(float)
    assert free.mean() == pytest.approx(41000, rel=0.02)
    assert free.std() == pytest.approx(40000 / 50, rel=0.35)  # 18 pixels: loose
    assert p[:, :3].mean() == pytest.approx(1000, abs=5)  # no signal -> imin, no noise


def test_edge_shadow_coverage_against_point_sampling():
    """twin.ctsimu.assets.edge_shadow_coverage (used by the validation script) against an
    independent point-sampled quadrant, for equal and unequal tilts (tilts in the order of
    edge_block_triangles: near-horizontal edge, near-vertical edge)."""
    from twin.ctsimu.assets import edge_shadow_coverage

    k = 200
    for th, tv in [(3.0, 3.0), (2.995896, 3.008236), (10.0, 25.0)]:
        cov = edge_shadow_coverage(41, 41, th, tv)
        ref = sampled_quadrant_coverage(41, th, tv, k=k)
        np.testing.assert_allclose(cov, ref, atol=0.4 / k)  # sampling: ~1e-4 found, 1 / k bound
    # the tilts are not interchangeable: the second one is the near-vertical edge's. At 10 / 25
    # deg, 15 px below the corner (row 35, corner at 20.5) that edge runs at x = -tan(25 deg) * 15
    # = -7.0 px, through the middle of column 13
    swapped = edge_shadow_coverage(41, 41, 25.0, 10.0)
    assert np.abs(swapped - sampled_quadrant_coverage(41, 10.0, 25.0)).max() > 0.5
    cov = edge_shadow_coverage(41, 41, 10.0, 25.0)
    assert cov[35, 13] == pytest.approx(0.5, abs=0.05) and cov[35, 12] == 1.0 and cov[35, 14] == 0.0
    cov = edge_shadow_coverage(41, 41)
    assert cov[:18, :].sum() == 0 and cov[:, 22:].sum() == 0 and cov[23:, :18].min() == 1.0  # left, below


def test_edge_stand_in_shadow_is_edge_shadow_coverage(tmp_path):
    """The WE stand-in block drawn with unequal tilts (0 and 10 deg) and projected through the
    2D-WE-2 geometry casts the shadow edge_shadow_coverage computes for the same tilts, and
    not the one with the tilts swapped (which edge of the block is the image's near-vertical
    one is fixed by the scenario's frames)."""
    pytest.importorskip("ctsimu")
    import json

    import ctsimu

    from twin.ctsimu.assets import edge_shadow_coverage, prepare_test_folder

    scen = Path(ctsimu.__file__).parent / "evaluation" / "scenarios" / "2D-WE-2_2021-10-13v02r03dp.json"
    path = prepare_test_folder(scen, tmp_path / "scenario", edge_tilts_deg=(0.0, 10.0))
    data = json.loads(path.read_text())
    n, ss = 61, 4
    data["detector"]["columns"]["value"] = data["detector"]["rows"]["value"] = n
    sc = read_scenario(data=data, base_dir=path.parent)
    imgs = simulate_images(sc, supersample=ss, arch="cpu")
    covered = 1.0 - imgs["projections"][0].astype(float) / imgs["flats"][0].astype(float)
    step = subpixel_rule(ss)[1].max()
    assert np.abs(covered - edge_shadow_coverage(n, n, 0.0, 10.0)).max() <= step + 1e-3
    assert np.abs(covered - edge_shadow_coverage(n, n, 10.0, 0.0)).max() > 0.9
