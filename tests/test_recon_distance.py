"""Exact distance and feature transforms (recon.distance) against SciPy and a brute force."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from recon.distance import edt, nearest_background, squared_edt
from twin.errors import XrmInputError

SHAPES = [(5, 6, 7), (1, 1, 9), (13, 1, 4), (20, 30, 40), (3, 50, 2), (1, 17, 1)]


def _masks():
    rng = np.random.default_rng(11)
    for shape in SHAPES:
        for p in (0.05, 0.5, 0.97):
            m = rng.random(shape) < p
            if m.all():
                m.flat[rng.integers(m.size)] = False
            yield m


def _brute_d2(m, border="open"):
    """Squared distance of every voxel to the nearest False voxel by enumeration."""
    bg = np.argwhere(~m)
    if border == "background":  # outside planes: the nearest outside voxel is straight out
        P = np.indices(m.shape).reshape(3, -1).T
        out_d = np.min(np.concatenate([P + 1, np.array(m.shape) - P], axis=1), axis=1) ** 2
    pts = np.indices(m.shape).reshape(3, -1).T
    d2 = np.full(len(pts), np.iinfo(np.int64).max)
    for s in range(0, len(bg), 256):
        diff = pts[:, None, :] - bg[None, s:s + 256, :]
        d2 = np.minimum(d2, (diff ** 2).sum(-1).min(1))
    if border == "background":
        d2 = np.minimum(d2, out_d)
    return d2.reshape(m.shape)


def test_squared_edt_equals_scipy_and_a_brute_force():
    for m in _masks():
        ref = np.rint(ndi.distance_transform_edt(m) ** 2).astype(np.int64)
        got = squared_edt(m)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, ref, err_msg=str(m.shape))
        if m.size <= 400:
            np.testing.assert_array_equal(got, _brute_d2(m))


def test_background_border_equals_scipy_on_a_padded_mask_and_a_brute_force():
    for m in _masks():
        ref = np.rint(ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1, 1:-1] ** 2)
        got = squared_edt(m, border="background")
        np.testing.assert_array_equal(got, ref, err_msg=str(m.shape))
        if m.size <= 400:
            np.testing.assert_array_equal(got, _brute_d2(m, "background"))
    # all foreground is fine with a background border: distance to the nearest face
    full = np.ones((3, 4, 5), bool)
    np.testing.assert_array_equal(squared_edt(full, border="background"), _brute_d2(full, "background"))


def test_edt_is_the_square_root():
    m = next(iter(_masks()))
    np.testing.assert_allclose(edt(m), ndi.distance_transform_edt(m), rtol=1e-6)


def test_nearest_background_points_at_a_nearest_false_voxel():
    for m in _masks():
        d2, idx = nearest_background(m)
        ref = np.rint(ndi.distance_transform_edt(m) ** 2).astype(np.int64)
        np.testing.assert_array_equal(d2, ref)
        assert not m.ravel()[idx.ravel()].any()  # every feature is background
        z = np.stack(np.unravel_index(idx, m.shape))
        np.testing.assert_array_equal(((z - np.indices(m.shape)) ** 2).sum(0), ref)
        np.testing.assert_array_equal(idx[~m], np.flatnonzero(~m))  # background: itself


def test_large_distances_are_exact():
    """One background voxel in a corner: distances up to 3 * 299^2 (beyond float32's exact
    integers would be 2^24; int arithmetic keeps them exact)."""
    m = np.ones((300, 300, 300), bool)
    m[0, 0, 0] = False
    got = squared_edt(m)
    z, y, x = 299, 150, 7
    assert got[z, y, x] == z * z + y * y + x * x
    assert got.max() == 3 * 299 ** 2


def test_device_arrays_path_gives_the_same_result(monkeypatch):
    """The GPU code path (volume kept in Taichi ndarrays across passes and chunks) run on the
    CPU, with a scratch budget small enough to need many chunks."""
    import recon.distance as rd
    from twin import runtime

    rng = np.random.default_rng(2)
    m = rng.random((9, 21, 33)) < 0.8
    want_d2, want_idx = nearest_background(m)
    monkeypatch.setattr(runtime, "current_arch", lambda: "cuda")
    monkeypatch.setitem(rd._SCRATCH_BUDGET, "cuda", 2000)
    d2, idx = nearest_background(m)
    np.testing.assert_array_equal(d2, want_d2)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(squared_edt(m, border="background"),
                                  np.rint(ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1, 1:-1] ** 2))


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(XrmInputError, match="no background"):
        squared_edt(np.ones((2, 3, 4), bool))
    with pytest.raises(XrmInputError, match="no False voxel"):
        nearest_background(np.ones((2, 3, 4), bool))
    with pytest.raises(XrmInputError, match="border must be one of"):
        squared_edt(np.zeros((2, 2, 2), bool), border="mirror")
    with pytest.raises(XrmInputError, match="3-D"):
        squared_edt(np.zeros((4, 4), bool))
    with pytest.raises(XrmInputError, match="dtype"):
        squared_edt(np.zeros((2, 2, 2), np.float32))
