"""Segmentation and per-component metrology against analytic shapes."""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from recon import metrology as me
from recon.segmentation import (check_labels, label_instances, remove_islands, same_grid,
                                segment_multiotsu)
from twin.errors import XrmInputError


def _ball(n, center, r):
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    return (x - center[2]) ** 2 + (y - center[1]) ** 2 + (z - center[0]) ** 2 <= r * r


@pytest.mark.parametrize("r,seed", [(20.0, 0), (24.5, 1)])
def test_sphere_volume_and_surface(r, seed):
    n = int(2 * r) + 10
    c = n / 2 + np.random.default_rng(seed).uniform(-0.5, 0.5, 3)
    lab = _ball(n, c, r).astype(np.uint8)
    vs = 3.6
    res = me.measure_components(lab, vs, {1: "ball"}, thickness=False)["ball"]
    r_mm = r * vs / 1000
    assert abs(res["volume_mm3"] / (4 / 3 * math.pi * r_mm ** 3) - 1) < 0.01
    assert abs(res["surface_mm2"] / (4 * math.pi * r_mm ** 2) - 1) < 0.02
    assert abs(res["surface_to_volume_per_mm"] / (3 / r_mm) - 1) < 0.03


def test_grey_surface_of_blurred_noisy_ball():
    n, r, vs = 56, 20.0, 2.0
    c = np.array([27.3, 27.8, 27.6])
    ss = 4
    g = np.mgrid[:n * ss, :n * ss, :n * ss].astype(np.float32)
    g = (g + 0.5) / ss - 0.5
    fine = ((g[0] - c[0]) ** 2 + (g[1] - c[1]) ** 2 + (g[2] - c[2]) ** 2) <= r * r
    grey = fine.reshape(n, ss, n, ss, n, ss).mean((1, 3, 5))
    grey = ndi.gaussian_filter(grey, 1.2) * 2.0 + 0.3
    grey += np.random.default_rng(0).normal(0, 0.05, grey.shape)
    lab = _ball(n, c, r).astype(np.uint8)
    res = me.measure_components(lab, vs, {1: "ball"}, grey=grey, thickness=False)["ball"]
    assert abs(res["surface_mm2"] / (4 * math.pi * (r * vs / 1000) ** 2) - 1) < 0.02


def test_measure_components_keys_and_tube():
    n = 64
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    r2 = (x - 31.6) ** 2 + (y - 32.3) ** 2
    tube = (r2 >= 20 ** 2) & (r2 <= 28 ** 2) & (z >= 4) & (z < 60)
    lab = tube.astype(np.uint8)
    vs = 2.0
    res = me.measure_components(lab, vs, {1: "can"})
    can = res["can"]
    for k in ("volume_mm3", "surface_mm2", "surface_to_volume_per_mm", "thickness_um"):
        assert k in can
    assert set(can["thickness_um"]) >= {"mean", "std"}
    assert abs(can["thickness_um"]["mean"] / vs - 8.0) <= 1.0  # wall 8 voxels
    # analytic tube: lateral + two annular ends
    h, ro, ri = 56 * vs / 1000, 28 * vs / 1000, 20 * vs / 1000
    area = 2 * math.pi * (ro + ri) * h + 2 * math.pi * (ro ** 2 - ri ** 2)
    vol = math.pi * (ro ** 2 - ri ** 2) * h
    assert abs(can["volume_mm3"] / vol - 1) < 0.01
    # the sharp rims of the end faces are rounded by the smoothing: a few % low
    assert abs(can["surface_mm2"] / area - 1) < 0.03


def test_porosity_and_size_distribution():
    n = 80
    solid = np.ones((n, n, n), bool)
    diam = [6.0, 10.0, 14.0]
    for d, c in zip(diam, ([20, 20, 20], [40, 50, 40], [60, 30, 60])):
        solid &= ~_ball(n, np.array(c) + 0.3, d / 2)
    phi = me.porosity(solid)
    pores = ~solid
    assert abs(phi - pores.sum() / pores.size) < 1e-12
    sd = me.size_distribution_um(pores, 1.5)
    assert sd["n"] == 3
    got = sorted(sd["diameter_um"])
    for g, d in zip(got, diam):
        assert abs(g / (d * 1.5) - 1) < 0.08  # voxelised small balls


def test_layers_along_axis():
    lab = np.zeros((60, 20, 20), np.uint8)
    lab[5:15] = 1
    lab[15:18] = 2
    lab[18:40] = 1
    prof = me.layer_profile(lab, 2.0, axis="z", names={1: "electrode", 2: "foil"})
    assert len(prof["position_mm"]) == 60 and prof["fraction"]["foil"][16] == 1.0
    layers = me.layers_along_axis(lab == 1, 2.0, axis="z")
    assert [round(L["thickness_um"]["mean"]) for L in layers] == [20, 44]
    tmap = me.column_thickness_map_um(lab == 2, 2.0, axis="z")
    assert tmap.shape == (20, 20) and np.all(tmap == 6.0)


def test_write_tiff_and_ply(tmp_path):
    import tifffile

    from recon.thickness import local_thickness_um

    m = _ball(30, np.array([15.2, 14.8, 15.1]), 9)
    t = local_thickness_um(m, 2.0)
    p = me.write_thickness_tiff(tmp_path / "t.tif", t, voxel_size_um=2.0)
    np.testing.assert_array_equal(tifffile.imread(p), t)
    ply = me.write_thickness_ply(tmp_path / "t.ply", m, t, 2.0, origin_mm=(1, 2, 3))
    head = ply.read_bytes()[:400].decode("ascii", "ignore")
    assert head.startswith("ply") and "thickness_um" in head


def test_multiotsu_segmentation_and_islands():
    rng = np.random.default_rng(0)
    n = 48
    truth = np.zeros((n, n, n), np.uint8)
    truth[:, :, 16:32] = 1
    truth[:, :, 32:] = 2
    mu = np.array([0.0, 0.5, 1.5])[truth] + rng.normal(0, 0.08, truth.shape)
    lab, thr = segment_multiotsu(mu.astype(np.float32), 3, min_island_voxels=10)
    assert thr.shape == (2,)
    assert np.mean(lab == truth) > 0.999
    noisy = truth.copy()
    noisy[10, 10, 5] = 2  # a one-voxel island
    clean = remove_islands(noisy, 5)
    assert clean[10, 10, 5] == 0
    inst, k = label_instances(truth == 2, min_voxels=1)
    assert k == 1 and inst.max() == 1


def test_slab_histogram_thresholds_equal_scikit_image_on_every_masked_voxel():
    """multiotsu_thresholds accumulates its histogram slab by slab; scikit-image, given the
    masked voxels as one array, must find the same thresholds. apply_thresholds equals
    np.digitize."""
    from skimage.filters import threshold_multiotsu

    from recon.segmentation import apply_thresholds, multiotsu_thresholds

    rng = np.random.default_rng(4)
    v = (np.array([0.1, 0.6, 1.4, 2.0])[rng.integers(0, 4, (70, 33, 41))]
         + rng.normal(0, 0.15, (70, 33, 41))).astype(np.float32)
    mask = rng.random(v.shape) < 0.7
    for classes in (2, 3, 4):
        want = threshold_multiotsu(v[mask], classes=classes, nbins=256)
        got = multiotsu_thresholds(v, classes, mask=mask, slab=16)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_array_equal(apply_thresholds(v, got), np.digitize(v, np.sort(got)))
    np.testing.assert_allclose(multiotsu_thresholds(v, 3, slab=7), threshold_multiotsu(v, classes=3),
                               rtol=1e-6)
    with pytest.raises(XrmInputError, match="selects no voxel"):
        multiotsu_thresholds(v, 3, mask=np.zeros(v.shape, bool))
    with pytest.raises(XrmInputError, match="constant"):
        multiotsu_thresholds(np.ones((4, 4, 4), np.float32), 3)


def test_bad_inputs():
    lab = np.zeros((10, 10, 10), np.uint8)
    with pytest.raises(XrmInputError, match="empty segmentation"):
        me.measure_components(lab, 1.0, {1: "a"})
    lab[2:5] = 1
    with pytest.raises(XrmInputError, match="absent"):
        me.measure_components(lab, 1.0, {1: "a", 2: "b"})
    ok = me.measure_components(lab, 1.0, {1: "a", 2: "b"}, allow_missing=True, thickness=False)
    assert ok["b"]["volume_mm3"] == 0.0
    with pytest.raises(XrmInputError, match="isotropic"):
        me.measure_components(lab, (1.0, 1.0, 1.5), {1: "a"})
    with pytest.raises(XrmInputError, match="voxel_size_um"):
        me.measure_components(lab, None, {1: "a"})
    with pytest.raises(XrmInputError, match="integer"):
        check_labels(lab.astype(float))
    with pytest.raises(XrmInputError, match="another grid"):
        same_grid((10, 10, 10), 2.0, (0, 0, 0), (10, 10, 10), 2.5, (0, 0, 0))
    with pytest.raises(XrmInputError, match="another grid"):
        same_grid((10, 10, 10), 2.0, (0, 0, 0), (10, 10, 10), 2.0, (0.1, 0, 0))
    same_grid((10, 10, 10), 2.0, (0, 0, 0), (10, 10, 10), (2.0, 2.0, 2.0), (0, 0, 0))


def test_cut_faces_at_the_field_of_view():
    lab = np.zeros((80, 60, 60), np.uint8)
    lab[20:50] = 1  # a slab cut by the four side faces of the array
    vs = 1000.0  # 1 mm voxels: areas in voxel units
    open_area = me.surface_area_mm2(lab == 1, vs)
    closed = me.surface_area_mm2(lab == 1, vs, cut_faces=True)
    assert abs(open_area / (2 * 60 * 60) - 1) < 0.01
    # closed: + the four cut faces; its 12 sharp edges are rounded by the smoothing (-2 %)
    assert abs(closed / (2 * 60 * 60 + 4 * 60 * 30) - 1) < 0.03
    grey = ndi.gaussian_filter(lab.astype(np.float32), 1.0)
    g = me.surface_area_mm2(lab == 1, vs, grey=grey, level=0.5)
    assert abs(g / (2 * 60 * 60) - 1) < 0.01


def test_pore_size_distribution_of_two_pore_sizes():
    n = 90
    pores = _ball(n, np.array([25.3, 25.1, 25.4]), 10) | _ball(n, np.array([62.2, 62.6, 62.1]), 20)
    psd = me.pore_size_distribution_um(pores, 1.0, bins=np.arange(0, 50, 2.0))
    frac = np.asarray(psd["volume_fraction"])
    centres = np.arange(1, 49, 2.0)
    # volume-weighted: the big pore (diameter 40) holds 8/9 of the pore volume
    assert abs(frac[centres > 30].sum() - 8 / 9) < 0.03
    assert abs(psd["d50_um"] - 40) <= 1.5


def test_viridis_without_matplotlib_matches_matplotlib(monkeypatch):
    """The PLY colours of a node without matplotlib are within 6/255 of matplotlib's viridis."""
    import builtins

    from matplotlib import colormaps

    x = np.linspace(-0.1, 1.1, 2001)
    want = colormaps["viridis"](np.clip(x, 0, 1))[:, :3] * 255
    real_import = builtins.__import__

    def no_mpl(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    got = me.viridis_rgb8(x).astype(float)
    assert np.abs(got - want).max() <= 6.0
    assert np.abs(got - want).mean() <= 1.5


def test_fill_from_nearest_matches_a_brute_force_nearest_voxel():
    """Slab-wise refilling gives every dropped voxel the label of a nearest kept voxel
    (brute force over all kept voxels; ties may go either way), also across dropped regions
    thicker than the halo."""
    from recon.segmentation import fill_from_nearest

    rng = np.random.default_rng(11)
    lab = rng.integers(1, 4, (20, 9, 10)).astype(np.uint8)
    drop = rng.random(lab.shape) < 0.3
    drop[5:14] = True                      # a dropped block 9 planes thick
    drop[5:14, 4, 4] = False               # with one kept voxel inside
    kept = np.argwhere(~drop)
    for slab, halo in ((2, 1), (3, 2), (32, 16)):
        got = fill_from_nearest(lab, drop, slab=slab, halo=halo)
        assert np.array_equal(got[~drop], lab[~drop])
        for z, y, x in np.argwhere(drop):
            d2 = ((kept - (z, y, x)) ** 2).sum(axis=1)
            nearest = {int(lab[tuple(k)]) for k in kept[d2 == d2.min()]}
            assert int(got[z, y, x]) in nearest, (slab, halo, z, y, x)
    with pytest.raises(XrmInputError, match="no voxel is kept"):
        fill_from_nearest(lab, np.ones(lab.shape, bool))


def test_surface_area_slab_by_slab_equals_the_whole_mesh():
    """Meshing a few cube layers at a time gives the area of scikit-image's whole mesh."""
    from scipy import ndimage as ndi
    from skimage import measure

    rng = np.random.default_rng(0)
    m = ndi.gaussian_filter(rng.random((70, 64, 64)).astype(np.float32), 3) > 0.5
    grey = ndi.gaussian_filter(m.astype(np.float32), 1) + rng.normal(0, 0.05, m.shape).astype(np.float32)
    for kw in ({"cut_faces": False}, {"cut_faces": True}, {"grey": grey, "level": 0.5}):
        verts, faces = me.surface_mesh(m, 5.0, **kw)
        whole = measure.mesh_surface_area(verts, faces)
        assert whole > 0.5  # mm^2
        for slab in (1, 3, 64):
            assert abs(me.surface_area_mm2(m, 5.0, slab=slab, **kw) / whole - 1) < 1e-7, (kw.keys(), slab)


def test_surface_area_on_worker_processes_is_the_one_process_area():
    """Slabs meshed on forked worker processes: the area equals the one-process area to the
    last bit (same slabs, summed in slab order) and scikit-image's whole mesh to 1e-7."""
    from scipy import ndimage as ndi
    from skimage import measure

    rng = np.random.default_rng(2)
    m = ndi.gaussian_filter(rng.random((150, 48, 48)).astype(np.float32), 3) > 0.5
    grey = ndi.gaussian_filter(m.astype(np.float32), 1) + rng.normal(0, 0.05, m.shape).astype(np.float32)
    for kw in ({"cut_faces": False}, {"grey": grey, "level": 0.5}):
        one = me.surface_area_mm2(m, 5.0, slab=8, workers=1, **kw)
        verts, faces = me.surface_mesh(m, 5.0, **kw)
        assert abs(one / measure.mesh_surface_area(verts, faces) - 1) < 1e-7
        for workers in (2, 3):
            assert me.surface_area_mm2(m, 5.0, slab=8, workers=workers, **kw) == one, (kw.keys(), workers)


def test_indicator_field_slabs_equal_the_whole_padded_smoothed_field():
    """surface_area_mm2 builds the smoothed indicator a slab at a time: every slab, the
    padding-only ones included, equals the planes of np.pad + gaussian_filter of the whole."""
    rng = np.random.default_rng(5)
    for shape in ((1, 7, 5), (9, 12, 11), (30, 8, 9)):
        sub = rng.random(shape) > 0.5
        for sigma in (0.0, 0.3, 0.7, 1.5):
            for mode in ("edge", "constant"):
                whole = np.pad(sub, me._PAD, mode=mode).astype(np.float32)
                if sigma > 0:
                    whole = ndi.gaussian_filter(whole, sigma)
                for step in (1, 2, 5, 64):
                    for z0 in range(0, whole.shape[0], step):
                        z1 = min(z0 + step + 1, whole.shape[0])
                        part = me._indicator_field(sub, sigma, mode, z0, z1)
                        assert np.array_equal(part, whole[z0:z1]), (shape, sigma, mode, step, z0)


def test_chunked_counts_and_lookups_equal_numpy(monkeypatch):
    """count_labels and lookup_labels work in chunks (their int64 temporaries are a chunk's);
    with a chunk smaller than the array they equal np.bincount and fancy indexing."""
    from recon import segmentation as seg

    monkeypatch.setattr(seg, "_CHUNK", 1000)
    rng = np.random.default_rng(6)
    lab = rng.integers(0, 300, (13, 17, 19)).astype(np.int32)
    np.testing.assert_array_equal(seg.count_labels(lab), np.bincount(lab.ravel()))
    np.testing.assert_array_equal(seg.count_labels(lab[:, ::2], 400), np.bincount(lab[:, ::2].ravel(), minlength=400))
    table = rng.random(300).astype(np.float32)
    got = seg.lookup_labels(table, lab)
    assert got.dtype == np.float32 and got.shape == lab.shape
    np.testing.assert_array_equal(got, table[lab])
    assert seg.count_labels(np.zeros((0, 3, 3), np.uint8), 4).tolist() == [0, 0, 0, 0]
    with pytest.raises(XrmInputError, match=">= 0"):
        seg.count_labels(np.array([[[1, -1]]]))


def test_hysteresis_threshold_equals_scikit_image():
    """recon.segmentation.hysteresis_threshold keeps what skimage's apply_hysteresis_threshold
    keeps (components of > low holding a voxel > high, face-connected)."""
    from skimage.filters import apply_hysteresis_threshold

    from recon.segmentation import hysteresis_threshold

    rng = np.random.default_rng(7)
    for shape in ((40, 33, 35), (70, 20, 25)):
        img = ndi.gaussian_filter(rng.standard_normal(shape), 1.5).astype(np.float32)
        for low, high in ((0.05, 0.2), (0.1, 0.1), (-0.05, 0.3), (0.5, 0.9)):
            want = apply_hysteresis_threshold(img, low, high)
            got = hysteresis_threshold(img, low, high)
            assert got.dtype == bool and np.array_equal(got, want), (shape, low, high)
            assert 0 < want.sum() < want.size or low == 0.5
        inside = rng.random(shape) > 0.3  # a mask: as if the rest were below low
        want = apply_hysteresis_threshold(np.where(inside, img, -1.0), 0.05, 0.2)
        assert np.array_equal(hysteresis_threshold(img, 0.05, 0.2, mask=inside), want)
    with pytest.raises(XrmInputError, match="low"):
        hysteresis_threshold(img, 0.3, 0.1)


def test_label_instances_in_the_smallest_type_equal_int32():
    rng = np.random.default_rng(8)
    m = ndi.gaussian_filter(rng.standard_normal((30, 31, 32)), 1.0) > 0.6
    ref, n = label_instances(m, connectivity=3, min_voxels=2)
    small, n2 = label_instances(m, connectivity=3, min_voxels=2, dtype="smallest")
    assert n == n2 and 0 < n < 256 and ref.dtype == np.int32 and small.dtype == np.uint8
    np.testing.assert_array_equal(small, ref)
    # sizes are in decreasing order (label 1 the largest), as the docstring says
    sizes = np.bincount(ref.ravel())[1:]
    assert np.all(np.diff(sizes) <= 0)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_block_majority_is_the_padded_block_mean(monkeypatch, threads):
    """Each output voxel: at least half of its factor^3 block set (False padding), on one or
    two threads (the volume is above recon.slabs' size floor)."""
    from scipy import ndimage as ndi

    monkeypatch.setenv("XRM_TWIN_THREADS", threads)
    rng = np.random.default_rng(8)
    m = ndi.gaussian_filter(rng.random((131, 128, 127)).astype(np.float32), 1.5) > 0.5
    for f in (2, 3):
        pad = np.pad(m, [(0, (-n) % f) for n in m.shape])
        nz, ny, nx = (n // f for n in pad.shape)
        want = pad.reshape(nz, f, ny, f, nx, f).mean(axis=(1, 3, 5)) >= 0.5
        got = me.block_majority(m, f)
        assert got.shape == want.shape == tuple(-(-n // f) for n in m.shape)
        np.testing.assert_array_equal(got, want)
        assert 0.2 < got.mean() < 0.8


def test_volume_histogram_on_threads_equals_one_numpy_histogram(monkeypatch):
    """Slabs on threads, numpy's uniform-bin path in float64: the counts of np.histogram on
    all the (masked) values with float64 linspace edges, values lying on the edges included."""
    from recon.segmentation import volume_histogram

    monkeypatch.setenv("XRM_TWIN_THREADS", "3")
    monkeypatch.setattr("recon.slabs.MIN_PARALLEL_VOXELS", 1)
    rng = np.random.default_rng(8)
    v = rng.normal(1.0, 0.3, (50, 21, 23)).astype(np.float32)
    edges = np.linspace(float(v.min()), float(v.max()), 65)
    on_edges = np.clip(edges.astype(np.float32), v.min(), v.max())
    v.reshape(-1)[:on_edges.size] = on_edges  # values on (float32-rounded) edges
    v.reshape(-1)[on_edges.size:2 * on_edges.size] = np.nextafter(on_edges, np.float32(np.inf)).clip(v.min(), v.max())
    mask = rng.random(v.shape) < 0.8
    mask.reshape(-1)[:2 * on_edges.size] = True
    for m in (None, mask):
        vals = v.ravel() if m is None else v[m]
        want_edges = np.linspace(float(vals.min()), float(vals.max()), 65)
        counts, got_edges = volume_histogram(v, 64, mask=m, slab=3)
        np.testing.assert_array_equal(got_edges, want_edges)
        np.testing.assert_array_equal(counts, np.histogram(vals, bins=want_edges)[0])
        assert counts.sum() == vals.size
