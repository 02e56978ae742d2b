"""Local thickness (recon.thickness) against analytic shapes, brute force and peers."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from recon.thickness import containment_table, local_thickness_um, squared_edt_voxels, thickness_stats
from twin.errors import XrmInputError


def _grid(n):
    return np.mgrid[:n, :n, :n].astype(float)


def _brute_force(mask):
    """Independent reference: every mask voxel is a centre; one SciPy EDT per squared radius."""
    d2 = np.rint(ndi.distance_transform_edt(mask) ** 2).astype(int)
    out = np.zeros(mask.shape)
    for D in np.unique(d2[d2 > 0]):
        covered = ndi.distance_transform_edt(d2 != D) ** 2 < D - 1e-9
        out[covered] = np.maximum(out[covered], 2 * np.sqrt(D))
    return out


@pytest.mark.parametrize("pad", [0, 4])
def test_matches_brute_force_on_random_blob(pad):
    rng = np.random.default_rng(1)
    m = ndi.gaussian_filter(rng.random((40, 40, 40)), 2.5) > 0.5
    m = np.pad(m, ((pad, pad + 3), (pad, 0), (0, pad)))  # touching edges / inside (cropped)
    ours = local_thickness_um(m, 1.0)
    ref = _brute_force(m)
    assert np.abs(ours - ref).max() < 1e-4


def test_containment_table_by_enumeration():
    tab = containment_table(60)
    g = np.arange(-8, 9)
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    n2 = (p ** 2).sum(1)
    for k, o in enumerate(((0, 0, 1), (0, 1, 1), (1, 1, 1))):
        for D in (1, 2, 5, 17, 60):
            inside = p[n2 < D]
            assert tab[k, D] == ((inside - np.array(o)) ** 2).sum(1).max() + 1


@pytest.mark.parametrize("T", [5, 6, 11, 20])
def test_plate_within_one_voxel(T):
    m = np.zeros((48, 24, 24), bool)
    m[10:10 + T] = True
    t = local_thickness_um(m, 2.5)
    assert abs(t[m].mean() / 2.5 - T) <= 1.0
    assert np.all(np.abs(t[m] / 2.5 - T) <= 1.0)
    assert np.all(t[~m] == 0)


@pytest.mark.parametrize("wall", [6.0, 10.0])
def test_tube_wall_within_one_voxel(wall):
    n = 72
    z, y, x = _grid(n)
    r2 = (x - 35.3) ** 2 + (y - 35.8) ** 2
    m = (r2 >= 20.0 ** 2) & (r2 <= (20.0 + wall) ** 2)
    t = local_thickness_um(m, 1.0)
    assert abs(t[m].mean() - wall) <= 1.0
    assert abs(np.median(t[m]) - wall) <= 1.0


def test_rod_and_sphere_diameter():
    n = 56
    z, y, x = _grid(n)
    rng = np.random.default_rng(3)
    o = n / 2 - 0.5 + rng.uniform(-0.5, 0.5, 3)
    rod = (x - o[2]) ** 2 + (y - o[1]) ** 2 <= 20.0 ** 2
    t = local_thickness_um(rod, 1.0)
    assert abs(t[rod].mean() - 40.0) <= 1.0
    ball = (x - o[2]) ** 2 + (y - o[1]) ** 2 + (z - o[0]) ** 2 <= 20.0 ** 2
    t = local_thickness_um(ball, 1.0)
    # a ball's centre falls between voxel centres: measured bias about -1 voxel (module doc)
    assert abs(t[ball].mean() - 40.0) <= 1.5
    assert abs(np.median(t[ball]) - 40.0) <= 1.5


def test_units_scale_with_voxel_size():
    m = np.zeros((30, 16, 16), bool)
    m[5:14] = True
    a = local_thickness_um(m, 1.0)
    b = local_thickness_um(m, 3.6)
    np.testing.assert_allclose(b, a * 3.6, rtol=1e-6)


def test_thick_plate_uses_exact_level_dilation():
    m = np.zeros((100, 64, 64), bool)
    m[20:80] = True  # 60 voxels: the many-centre level goes through the EDT path
    t = local_thickness_um(m, 1.0)
    assert np.all(np.abs(t[m] - 60.0) <= 1.0)


def test_stats_and_histogram():
    m = np.zeros((40, 20, 20), bool)
    m[10:17] = True
    st = thickness_stats(m, 2.0, bins=10)
    assert st["n_voxels"] == m.sum()
    assert sum(st["histogram"]["counts"]) == m.sum()
    assert abs(st["mean"] - 8 * 2.0) <= 2.0  # 7 voxels, faces on voxel faces -> 8 (odd T)
    assert st["min"] <= st["median"] <= st["max"]


def test_bad_input():
    m = np.zeros((10, 10, 10), bool)
    m[3:6] = True
    with pytest.raises(XrmInputError, match="isotropic"):
        local_thickness_um(m, (1.0, 1.0, 2.0))
    with pytest.raises(XrmInputError, match="voxel_size_um"):
        local_thickness_um(m, None)
    with pytest.raises(XrmInputError, match="3-D"):
        local_thickness_um(m[0], 1.0)
    with pytest.raises(XrmInputError, match="empty"):
        thickness_stats(np.zeros_like(m), 1.0)
    with pytest.raises(XrmInputError, match="no background"):
        local_thickness_um(np.ones_like(m), 1.0)
    assert local_thickness_um(np.ones_like(m), 1.0, border="background").max() > 0
    assert local_thickness_um(m, (2.0, 2.0, 2.0)).max() > 0


def _peer_shapes():
    n = 64
    z, y, x = _grid(n)
    r2 = (x - 31.7) ** 2 + (y - 32.2) ** 2
    rng = np.random.default_rng(1)
    blob = ndi.gaussian_filter(rng.random((48, 48, 48)), 3) > 0.5
    return {"tube": (r2 <= 28 ** 2) & (r2 >= 18 ** 2), "rod": r2 <= 15 ** 2, "blob": blob}


@pytest.mark.parametrize("name", ["tube", "rod", "blob"])
def test_porespy_mean_within_2pct(name):
    ps = pytest.importorskip("porespy")
    m = _peer_shapes()[name]
    ours = local_thickness_um(m, 1.0)[m].mean()
    dt = ndi.distance_transform_edt(m)
    # PoreSpy returns the radius to background voxel centres: diameter = 2 r. "legacy" with
    # every distinct EDT value is its exact (not integer-binned) mode.
    r = ps.filters.local_thickness(m, dt=dt, method="legacy", sizes=np.unique(dt[m]))
    assert abs(2 * r[m].mean() - ours) / ours < 0.02


@pytest.mark.parametrize("name", ["tube", "rod"])
def test_localthickness_mean_within_2pct(name):
    lt = pytest.importorskip("localthickness")
    m = _peer_shapes()[name]
    ours = local_thickness_um(m, 1.0)[m].mean()
    theirs = lt.local_thickness(m)  # radius-like (Dahl & Dahl 2023 dilation): diameter = 2 r
    assert abs(2 * theirs[m].mean() - ours) / ours < 0.02


def test_squared_edt_equals_scipy_and_the_edt_peer():
    """The Taichi squared EDT under the local thickness gives SciPy's integers (and the `edt`
    package's, when installed) on a smooth foam, with both borders."""
    rng = np.random.default_rng(5)
    m = ndi.gaussian_filter(rng.random((32, 40, 36)), 2) > 0.5
    ref = np.rint(ndi.distance_transform_edt(m) ** 2).astype(np.int64)
    np.testing.assert_array_equal(squared_edt_voxels(m), ref)
    refb = np.rint(ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1, 1:-1] ** 2)
    np.testing.assert_array_equal(squared_edt_voxels(m, border="background"), refb)
    try:
        import edt
    except ImportError:
        return
    np.testing.assert_array_equal(squared_edt_voxels(m), np.rint(edt.edtsq(m)))
    np.testing.assert_array_equal(squared_edt_voxels(m, border="background"),
                                  np.rint(edt.edtsq(m, black_border=True)))
