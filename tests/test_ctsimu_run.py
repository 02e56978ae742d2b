"""CTSimU runner: intensity supersampling at edges, bands, grey values and noise."""

from __future__ import annotations

import numpy as np
import pytest

from twin.ctsimu.reader import read_scenario
from twin.ctsimu.run import band_vectors, simulate_images
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
    """A 2 mm tungsten edge through the middle of a pixel column lets half the flux through."""
    sc = _edge_scenario(tmp_path, 0.5)  # edge (x = 0) through the centre of column 3
    imgs = simulate_images(sc, supersample=4, arch="cpu")
    t = imgs["projections"][0] / imgs["flats"][0]
    assert t[:, :3].max() < 1e-6          # behind the block
    assert np.allclose(t[:, 4:], 1.0)      # free beam
    np.testing.assert_allclose(t[:, 3], 0.5, atol=0.02)


def test_band_vectors_tile_the_detector():
    vec = np.array([[0, -100, 0, 0, 100, 0, 0.1, 0, 0, 0, 0, 0.1]], float)
    rows, cols, ss = 6, 4, 3
    full = band_vectors(vec, rows, cols, ss, 0, rows)
    a = band_vectors(vec, rows, cols, ss, 0, 2)
    b = band_vectors(vec, rows, cols, ss, 2, rows)

    def centres(v, n_rows, n_cols):
        r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
        return (v[0, 3:6] + (c[..., None] - (n_cols - 1) / 2) * v[0, 6:9]
                + (r[..., None] - (n_rows - 1) / 2) * v[0, 9:12])

    whole = centres(full, rows * ss, cols * ss)
    np.testing.assert_allclose(np.concatenate([centres(a, 2 * ss, cols * ss), centres(b, 4 * ss, cols * ss)]), whole)
    # sub-pixel means are the pixel centres
    np.testing.assert_allclose(whole.reshape(rows, ss, cols, ss, 3).mean(axis=(1, 3)), centres(vec, rows, cols))


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
