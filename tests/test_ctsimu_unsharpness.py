"""SRb <-> Gaussian PSF: the 1-D duplex-wire model against the CTSimU toolbox's own code.

``twin.ctsimu.unsharpness`` defines the detector blur for a CTSimU basic spatial resolution
SRb from a model of the duplex-wire IQI (ISO 19232-5, read as ASTM E2002 says). The model
is checked here against two independent pieces of the toolbox: the ASTM E2002 dip and
interpolation code (``ctsimu.image_analysis.isrb.Interpolation``, which the 2D-DW-1
evaluation uses) and its line-profile code (``ctsimu.image.Image.lineProfile``) on a
synthetic 2-D image of tilted wires.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from twin.ctsimu import unsharpness as us
from twin.errors import XrmInputError


def test_gaussian_lsf_without_pixels_scales_with_sigma():
    """No pixels: the 20 % dip falls at a fixed multiple of sigma (1.414), whatever sigma."""
    ratios = [us.srb_of_sigma_mm(s, 0.0) / s for s in (0.01, 0.05, 0.2)]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)
    assert ratios[0] == pytest.approx(1.4143, abs=2e-3)
    # the old mapping (Gaussian MTF of 20 % at 1/(2 SRb)) is sharper than the definition
    assert 1.0 / ratios[0] > 0.571 * 1.2


def test_pixels_alone_and_round_trip():
    """The pixel floor scales with the pitch; sigma_for_srb inverts srb_of_sigma."""
    assert us.pixel_limited_srb_mm(0.05) == pytest.approx(0.656 * 0.05, rel=2e-3)
    assert us.pixel_limited_srb_mm(0.1) == pytest.approx(2 * us.pixel_limited_srb_mm(0.05), rel=1e-3)
    for srb, p in [(0.075, 0.05), (0.15, 0.05), (0.05, 0.02), (0.3, 0.1)]:
        s = us.sigma_for_srb_mm(srb, p)
        assert 0 < s < srb
        assert us.srb_of_sigma_mm(s, p) == pytest.approx(srb, rel=1e-6)
    assert us.sigma_for_srb_mm(0.03, 0.05) == 0.0
    assert "below what pixels" in us.srb_shortfall_note(0.03, 0.05, "u")
    assert us.srb_shortfall_note(0.075, 0.05, "u") is None
    with pytest.raises(XrmInputError):
        us.sigma_for_srb_mm(-0.1, 0.05)


def test_srb_barely_above_the_pixel_floor_is_quick_and_sane():
    """A requested SRb just above what the pixels show needs a sigma near 0: the root search
    then tries tiny sigmas, which must not refine the model's grid without bound (it once
    built grids of ~1e9 points there)."""
    import time

    p = 0.05
    floor = us.pixel_limited_srb_mm(p)
    for rel in (1e-9, 1e-6, 1e-3):
        t0 = time.perf_counter()
        s = us.sigma_for_srb_mm(floor * (1 + rel), p)
        assert time.perf_counter() - t0 < 20.0
        assert 0.0 < s < 0.1 * p  # a blur far below a pixel
        assert us.srb_of_sigma_mm(s, p) == pytest.approx(floor * (1 + rel), rel=1e-5)
    # the grid of a tiny sigma is the one of the wires and pixels
    x, _ = us.pair_depth_profile(0.66 * p, 1e-9, p)
    assert len(x) < 1e5


def test_dip_grows_with_the_diameter():
    s, p = 0.05, 0.05
    d = np.array([0.04, 0.06, 0.08, 0.1, 0.15, 0.2])
    dips = [us.pair_dip(x, s, p) for x in d]
    assert np.all(np.diff(dips) > 0)
    assert dips[0] == 0.0 and dips[-1] > 0.9  # merged minima -> no dip; large pair resolved


def _toolbox_isrb(gv: np.ndarray, pos_px: np.ndarray, pitch_mm: float) -> float:
    pytest.importorskip("ctsimu")
    from ctsimu.image_analysis.isrb import Interpolation

    tool = Interpolation(im=np.zeros((2, 2)), pixelsize=pitch_mm, SOD=1000.0, SDD=1000.0, wire_length=15,
                         wire_spacing=list(us.ISO_19232_5_DIAMETERS_MM))
    tool.measure, tool.ind = gv, pos_px
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tool.calc_dips(prominence=100)  # as test2D_DW_1
        tool.interpolate()
    return float(tool.dip20)


@pytest.mark.parametrize("srb_mm,pitch_mm", [(0.075, 0.05), (0.15, 0.05), (0.1, 0.1), (0.05, 0.02),
                                             (0.2, 0.05)])
def test_toolbox_interpolation_finds_the_requested_srb(srb_mm, pitch_mm):
    """A detector with ``sigma_for_srb_mm(SRb, p)`` shows iSRb = SRb to the toolbox.

    The IQI profile (13 ISO 19232-5 pairs, 3.9 mm apart, sampled every 0.1 px over the
    2D-DW-1 profile length) goes through the toolbox's ASTM E2002 code: its peak search,
    its background fit, its dip formula and its quadratic interpolation at 20 %. Its
    interpolation between the discrete pairs costs up to about 1.5 %.
    """
    sigma = us.sigma_for_srb_mm(srb_mm, pitch_mm)
    n_px = int(round(52.5 / pitch_mm))
    pos = (np.arange(n_px * 10) + 0.5) * 0.1
    x = (pos - n_px / 2) * pitch_mm
    gv = 60000.0 * (1.0 - 0.5 * us.duplex_iqi_profile(x, sigma, pitch_mm))
    isrb = _toolbox_isrb(gv, pos, pitch_mm)
    assert isrb == pytest.approx(srb_mm, rel=0.02)


def test_old_mapping_fails_the_toolbox():
    """sigma = 0.571 SRb (the former mapping) reads 10-20 % sharp, as 2D-DW-1 found."""
    p = 0.05
    n_px = int(round(52.5 / p))
    pos = (np.arange(n_px * 10) + 0.5) * 0.1
    x = (pos - n_px / 2) * p
    for srb in (0.075, 0.15):
        gv = 60000.0 * (1.0 - 0.5 * us.duplex_iqi_profile(x, 0.571 * srb, p))
        assert _toolbox_isrb(gv, pos, p) < 0.9 * srb


def test_profile_of_tilted_wires_is_the_two_box_model():
    """The toolbox's line profile across tilted wires equals G (x) box (x) box.

    A 2-D image of three wire pairs tilted by 3 deg (as in 2D-DW-1) is rendered on
    10 x 10 sub-pixels, blurred by the Gaussian PSF and integrated over pixels (the
    detector), then read with ``Image.lineProfile`` (20 px wide, 0.1 px bins). Its dips
    match :func:`pair_dip` (pixel aperture and the phase average of the tilted read-out,
    two boxes) to 0.3 %; with one box only they would be off by 1-4 %.
    """
    pytest.importorskip("ctsimu")
    from ctsimu.image import Image

    p, sigma, sub = 0.05, 0.049, 10
    diam = (0.2, 0.13, 0.1)
    ny, nx = 40, 70
    t = np.deg2rad(3.0)
    yy, xx = np.meshgrid((np.arange(ny * sub) + 0.5) / sub, (np.arange(nx * sub) + 0.5) / sub, indexing="ij")
    cx, cy = nx / 2, ny / 2
    s_mm = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) * p  # across the wires
    centres, pos = [], -0.9
    length = np.zeros_like(s_mm)
    for d in diam:
        centres.append(pos + d)
        length += us.pair_path_length_mm(s_mm - centres[-1], d)
        pos += 2 * d + 0.3
    depth = gaussian_filter(length, sigma / p * sub, mode="constant")
    img = Image()
    img.shape(nx, ny, 0, img.getInternalDataType())
    img.px = 1.0 - depth.reshape(ny, sub, nx, sub).mean(axis=(1, 3))
    half = 30
    with contextlib.redirect_stdout(io.StringIO()):
        prof, pos_px, _ = img.lineProfile(x0=cx - half * np.cos(t), y0=cy - half * np.sin(t),
                                          x1=cx + half * np.cos(t), y1=cy + half * np.sin(t),
                                          width=20, resolution=0.1)
    s_prof = (np.asarray(pos_px) - half) * p
    measured = 1.0 - np.asarray(prof)
    for c, d in zip(centres, diam):
        sel = (s_prof > c - 2 * d) & (s_prof < c + 2 * d)
        seg, xs = measured[sel], s_prof[sel]
        left, right = seg[xs < c], seg[xs >= c]
        a, b = left.max(), right.max()
        i_a, i_b = int(np.argmax(left)), len(left) + int(np.argmax(right))
        mid = seg[i_a:i_b + 1].min()
        dip_toolbox_profile = (a + b - 2 * mid) / (a + b)
        assert dip_toolbox_profile == pytest.approx(us.pair_dip(d, sigma, p), abs=3e-3)
        # one box (pixel aperture, no phase average) is measurably different
        one_box = us.pair_dip(d, float(np.hypot(sigma, p / np.sqrt(12))), 0.0)
        assert abs(one_box - dip_toolbox_profile) > 0.005


def test_strong_contrast_changes_srb_little():
    """Platinum at the 2D-DW-1 spectrum (T = 0.54 through 0.1 mm) vs the linear limit: < 2 %."""
    mu_per_mm = 6.2  # Pt near 126 keV, the mean energy of the 2D-DW-1 beam
    tr = lambda length: np.exp(-mu_per_mm * length)  # noqa: E731
    for srb, p in [(0.075, 0.05), (0.15, 0.05)]:
        s = us.sigma_for_srb_mm(srb, p)
        assert us.srb_of_sigma_mm(s, p, transmission=tr) == pytest.approx(srb, rel=0.02)


def test_runner_uses_the_mapping(tmp_path):
    """detector_blur_sigma_px is sigma_for_srb_mm per axis; a too-fine SRb is noted."""
    from dataclasses import replace

    from twin.ctsimu.reader import read_scenario
    from twin.ctsimu.run import detector_blur_sigma_px, unsharpness_notes
    from twin.ctsimu.writer import export_scenario
    from twin.scenario import validate

    data = {"name": "blur", "source": {"monochromatic_kev": 50.0},
            "geometry": {"source_object_mm": 100.0, "object_detector_mm": 100.0, "objective": "flat-panel",
                         "projections": 1},
            "detector": {"pixels": [8, 6], "pixel_um": 50.0, "ideal": True, "flats": 1, "darks": 0},
            "phantom": {"kind": "parts", "parts": [
                {"shape": "box", "center_mm": [0.0, 0.0, 0.0], "size_mm": [0.1, 0.1, 0.1], "material": "W"}]}}
    spec = validate(data, str(tmp_path / "blur.toml"))
    sc = read_scenario(export_scenario(spec, tmp_path / "blur.json")["path"])
    sc = replace(sc, detector=replace(sc.detector, srb_mm=0.15))
    rows, cols = detector_blur_sigma_px(sc)
    assert cols == pytest.approx(us.sigma_for_srb_mm(0.15, sc.pitch_u_mm) / sc.pitch_u_mm)
    assert rows == pytest.approx(us.sigma_for_srb_mm(0.15, sc.pitch_v_mm) / sc.pitch_v_mm)
    assert unsharpness_notes(sc) == []
    fine = replace(sc, detector=replace(sc.detector, srb_mm=0.02))
    assert detector_blur_sigma_px(fine) == (0.0, 0.0)
    assert len(unsharpness_notes(fine)) == 1
