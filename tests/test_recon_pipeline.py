"""recon.pipeline.reconstruct and recon.preprocess: counts in, volume out, slabs, errors."""

from __future__ import annotations

import numpy as np
import pytest

from recon.fdk import fdk
from recon.pipeline import ReconResult, reconstruct
from recon.preprocess import flat_dark_correct, line_integrals_from_counts, minus_log, split_by_image_key
from tests._recon_analytic import Cylinder, Sphere, line_integrals
from twin.errors import XrmInputError
from twin.geometry import ScanGeometry


@pytest.fixture(scope="module")
def scan():
    g = ScanGeometry(source_object_mm=20.0, object_detector_mm=60.0, objective="flat-panel", pixel_um=200.0,
                     cols=48, rows=40, n_views=120)
    objs = [Sphere((0.2, 0.1, 0.1), 0.5, 0.3), Cylinder((-0.3, -0.2, -0.1), 0.3, 0.8, 0.5)]
    p = line_integrals(g, objs)
    flat_level, dark_level = 2.0e4, 100.0
    gain = 1 + 0.02 * np.random.default_rng(0).standard_normal((g.rows, g.cols))
    flats = np.stack([flat_level * gain + dark_level] * 3)
    darks = np.full((2, g.rows, g.cols), dark_level)
    counts = flat_level * gain[None] * np.exp(-p) + dark_level
    return g, p, counts, flats, darks


def test_flat_dark_and_log_recover_line_integrals(scan):
    g, p, counts, flats, darks = scan
    q = line_integrals_from_counts(counts, flats, darks)
    assert np.allclose(q, p, atol=1e-4)
    assert np.allclose(minus_log(flat_dark_correct(counts, flats, darks)), q)
    with pytest.raises(XrmInputError, match="dark fields are missing"):
        flat_dark_correct(counts, flats, None)
    with pytest.raises(XrmInputError, match="flat <= dark"):
        flat_dark_correct(counts, darks[:1], flats)
    with pytest.raises(XrmInputError, match="shape"):
        flat_dark_correct(counts, flats[:, :-1], darks)


def test_split_by_image_key_names_what_is_missing(scan):
    g, p, counts, flats, darks = scan
    data = np.concatenate([darks, flats, counts])
    key = np.array([2] * 2 + [1] * 3 + [0] * len(counts))
    angles = np.concatenate([np.zeros(5), g.angles_deg])
    proj, f, d, a = split_by_image_key(data, key, angles)
    assert proj.shape == counts.shape and f.shape[0] == 3 and d.shape[0] == 2
    assert np.allclose(a, g.angles_deg)
    with pytest.raises(XrmInputError, match="flat fields"):
        split_by_image_key(data[2:][3:], key[5:], angles[5:])
    with pytest.raises(XrmInputError, match="rotation angles"):
        split_by_image_key(data, key, None)
    with pytest.raises(XrmInputError, match="image_key values"):
        split_by_image_key(data, np.where(key == 2, 7, key), angles)


def test_reconstruct_from_counts_in_slabs_equals_one_pass(scan):
    g, p, counts, flats, darks = scan
    one = fdk(p, g)
    res = reconstruct(counts, g, flats=flats, darks=darks, slab_voxels=7, truncation_mode=None,
                      progress=False)
    assert isinstance(res, ReconResult)
    assert res.volume.shape == one.shape and res.volume.dtype == np.float32
    assert np.max(np.abs(res.volume - one)) < 1e-3 * np.max(np.abs(one))
    # memory budget forces slabs automatically and still gives the same volume
    small = reconstruct(p, g, max_bytes=3_000_000, truncation_mode=None, progress=False)
    assert np.max(np.abs(small.volume - one)) < 1e-3 * np.max(np.abs(one))
    it = reconstruct(p, g, algorithm="cgls", n_iter=3, progress=False)
    assert it.volume.shape == one.shape
    # float16 filtered projections, slab by slab: within 2^-12 of the largest value
    half = reconstruct(p, g, slab_voxels=7, truncation_mode=None, progress=False, filtered_dtype="float16")
    assert 0 < np.max(np.abs(half.volume - one)) <= 2.0 ** -12 * np.max(np.abs(one))


def test_reconstruct_bad_input(scan):
    g, p, counts, flats, darks = scan
    with pytest.raises(XrmInputError, match="shape"):
        reconstruct(p[:-1], g, progress=False)
    with pytest.raises(XrmInputError, match="dark fields are missing"):
        reconstruct(counts, g, flats=flats, progress=False)
    with pytest.raises(XrmInputError, match="algorithm"):
        reconstruct(p, g, algorithm="art", progress=False)
    with pytest.raises(XrmInputError, match=r"recon.filtered_dtype.*'half'"):
        reconstruct(p, g, filtered_dtype="half", progress=False)
    with pytest.raises(XrmInputError, match="GiB"):
        reconstruct(p, g, max_bytes=1000, progress=False)
    bad = p.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(XrmInputError, match="non-finite"):
        reconstruct(bad, g, progress=False)


def test_reconstruct_estimates_cor_and_extends_truncated_rows():
    g = ScanGeometry(source_object_mm=20.0, object_detector_mm=60.0, objective="flat-panel", pixel_um=200.0,
                     cols=64, rows=4, n_views=360)
    from recon.cor import apply_center_offset

    objs = [Cylinder((0.0, 0.0, 0.0), 1.2 * 64 * g.voxel_size_um / 1000, 10.0, 0.1),
            Sphere((0.2, -0.3, 0.0), 0.25, 0.2), Cylinder((-0.3, 0.25, 0.0), 0.15, 10.0, 0.3)]
    p = line_integrals(apply_center_offset(g, 2.0), objs)
    res = reconstruct(p, g, center="auto", vol_shape=(1, 64, 64), progress=False)
    assert abs(res.center_offset_px - 2.0) <= 0.5
    assert res.geometry.axis_offset_mm == pytest.approx(res.center_offset_px * g.voxel_size_um / 1000)
    naive = reconstruct(p, res.geometry, vol_shape=(1, 64, 64), truncation_mode=None, progress=False)
    yy, xx = np.mgrid[:64, :64] - 31.5
    ring = (np.hypot(xx, yy) > 24) & (np.hypot(xx, yy) < 30)
    # truncation handling removes the bright rim of naive FDK at the edge of the field of view
    assert np.mean(res.volume[0][ring]) < 0.9 * np.mean(naive.volume[0][ring])
    assert abs(np.mean(res.volume[0][ring]) / 0.1 - 1) < 0.1


def test_reconstruct_applies_ring_and_beam_hardening_options(scan):
    g, p, counts, flats, darks = scan
    plain = reconstruct(p, g, truncation_mode=None, progress=False).volume
    # a monochromatic "spectrum" makes the linearisation the identity
    mono = {"energies_kev": np.array([60.0]), "weights": np.array([1.0]), "mu_ref_per_mm": np.array([0.3])}
    same = reconstruct(p, g, truncation_mode=None, beam_hardening_spectrum=mono, progress=False).volume
    assert np.max(np.abs(same - plain)) < 1e-3 * np.max(plain)
    rr = reconstruct(p, g, truncation_mode=None, ring_removal={"wavelet": "db4", "level": 3}, progress=False)
    assert rr.volume.shape == plain.shape and np.all(np.isfinite(rr.volume))
    with pytest.raises(XrmInputError, match="truncation mode"):
        reconstruct(p, g, truncation_mode="mirror", progress=False)


def test_views_in_chunks_give_the_same_volume(scan, monkeypatch):
    """On the CPU the pipeline extends, filters and backprojects a chunk of views at a time;
    chunks of 8 views (15 chunks) give the volume of the default chunks (30 views), truncation
    extension included (float32 summation order only)."""
    from recon import fdk as fdk_mod
    from recon import preprocess

    g, p, counts, flats, darks = scan
    whole = {}
    for mode in (None, "chord"):
        whole[mode] = reconstruct(counts, g, flats=flats, darks=darks, truncation_mode=mode,
                                  progress=False).volume
    monkeypatch.setattr(fdk_mod, "FDK_CHUNK_BYTES", 1)
    monkeypatch.setattr(fdk_mod, "FDK_MIN_CHUNK_BYTES", 1)
    monkeypatch.setattr(preprocess, "_CHUNK_PIXELS", 1000)  # and the -log in chunks of 1 view
    assert fdk_mod.fdk_view_chunk(g.rows, 3 * g.cols, g.n_views, 1) == 8
    for mode in (None, "chord"):
        got = reconstruct(counts, g, flats=flats, darks=darks, truncation_mode=mode, progress=False).volume
        assert np.max(np.abs(got - whole[mode])) < 1e-5 * np.max(np.abs(whole[mode])), mode
    # the flat/dark correction and -log in chunks: the formula, written here in float64
    ref = -np.log(np.maximum((counts - darks.mean(0)) / (flats.mean(0) - darks.mean(0)), 1e-6))
    np.testing.assert_allclose(line_integrals_from_counts(counts, flats, darks), ref, rtol=1e-6, atol=1e-6)
