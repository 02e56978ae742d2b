"""recon.slabs: SciPy's filters on several threads give SciPy's single-thread results exactly."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from recon import slabs


@pytest.fixture(scope="module")
def grey():
    rng = np.random.default_rng(3)
    return ndi.gaussian_filter(rng.random((37, 29, 41)), 1.5).astype(np.float32) + \
        rng.normal(0, 0.05, (37, 29, 41)).astype(np.float32)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("sigma,mode", [(0.5, "reflect"), (2.3, "nearest"), ((1.0, 0.0, 3.0), "constant"),
                                        (4.0, "mirror")])
def test_gaussian_equals_scipy(grey, threads, sigma, mode):
    want = ndi.gaussian_filter(grey, sigma, mode=mode)
    got = slabs.gaussian_filter(grey, sigma, mode=mode, threads=threads)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_gaussian_in_place_and_float64(grey):
    want = ndi.gaussian_filter(grey, 1.2)
    buf = grey.copy()
    assert slabs.gaussian_filter(buf, 1.2, output=buf, threads=3) is buf
    np.testing.assert_array_equal(buf, want)
    g64 = grey.astype(np.float64)
    np.testing.assert_array_equal(slabs.gaussian_filter(g64, 0.8, threads=2), ndi.gaussian_filter(g64, 0.8))
    # the filter changed the values (a check that could fail: the in-place path is not a copy)
    assert np.abs(buf - grey).max() > 1e-3


def test_gaussian_large_default_threads_equals_scipy():
    rng = np.random.default_rng(0)
    v = rng.random((130, 128, 128), dtype=np.float32)  # above MIN_PARALLEL_VOXELS
    assert v.size >= slabs.MIN_PARALLEL_VOXELS
    np.testing.assert_array_equal(slabs.gaussian_filter(v, 0.7), ndi.gaussian_filter(v, 0.7))


@pytest.mark.parametrize("threads", [2, 5])
@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("connectivity", [1, 3])
@pytest.mark.parametrize("border_value", [0, 1])
def test_morphology_equals_scipy(grey, threads, iterations, connectivity, border_value):
    smooth = ndi.gaussian_filter(grey, 2.0)
    m = smooth > np.median(smooth)  # blobs a few voxels across
    st = ndi.generate_binary_structure(3, connectivity)
    for ours, theirs in ((slabs.binary_erosion, ndi.binary_erosion), (slabs.binary_dilation, ndi.binary_dilation)):
        want = theirs(m, st, iterations=iterations, border_value=border_value)
        got = ours(m, st, iterations=iterations, border_value=border_value, threads=threads)
        np.testing.assert_array_equal(got, want)
        assert got.any() and not got.all()


def test_morphology_default_structure_and_thin_slabs():
    # 40 planes over 5 threads x 4 blocks: slabs of 2 planes against a reach of 4
    rng = np.random.default_rng(1)
    m = rng.random((40, 16, 16)) > 0.3
    np.testing.assert_array_equal(slabs.binary_erosion(m, iterations=4, threads=5),
                                  ndi.binary_erosion(m, iterations=4))
    np.testing.assert_array_equal(slabs.binary_dilation(~m, iterations=2, threads=5),
                                  ndi.binary_dilation(~m, iterations=2))


@pytest.mark.parametrize("max_label", [0, 4, 9])
def test_find_objects_equals_scipy(max_label):
    lab = np.zeros((50, 20, 30), np.int32)
    lab[3:7, 2:5, 1:9] = 1
    lab[10:45, 0:20, 5:6] = 3  # spans every slab
    lab[44:50, 10:12, 29:30] = 2
    lab[0, 0, 0] = 6  # labels 4 and 5 absent
    lab[49, 19, 0] = 6
    want = ndi.find_objects(lab, max_label=max_label)
    got = slabs.find_objects(lab, max_label=max_label, threads=3)
    assert got == want
    assert slabs.find_objects(lab > 0, threads=2) == ndi.find_objects((lab > 0).view(np.uint8))


def test_map_in_processes_reads_the_parents_arrays_and_keeps_order():
    big = np.arange(1000, dtype=np.float64)

    def work(i):  # a closure over an array of the parent: forked, not pickled
        if i == 7:
            raise ValueError("item 7")
        return float(big[i * 10:(i + 1) * 10].sum()), i

    items = [3, 1, 4, 0, 5, 9, 2, 6]
    want = [work(i) for i in items]
    assert slabs.map_in_processes(work, items, 3) == want
    assert slabs.map_in_processes(work, items, 1) == want
    with pytest.raises(ValueError, match="item 7"):
        slabs.map_in_processes(work, [1, 7, 2], 2)


def test_forked_workers_memory_is_counted_under_tracemalloc():
    import tracemalloc

    def work(i):
        a = np.ones(8_000_000, np.uint8)  # 8 MB on the worker
        return int(a[::1000].sum()) + i

    tracemalloc.start()
    try:
        slabs.forked_peak_bytes(reset=True)
        base = tracemalloc.get_traced_memory()[0]
        assert slabs.map_in_processes(work, [0, 1, 2, 3, 4], 2) == [8000 + i for i in range(5)]
        got = slabs.forked_peak_bytes(reset=True) - base
    finally:
        tracemalloc.stop()
    assert 16e6 <= got < 17e6  # two workers at once, 8 MB each
    assert slabs.forked_peak_bytes() == 0  # reset


@pytest.mark.parametrize("connectivity", [1, 2, 3])
@pytest.mark.parametrize("threads", [2, 5])
def test_small_components_equal_a_whole_volume_labelling(connectivity, threads):
    rng = np.random.default_rng(connectivity)
    m = rng.random((60, 23, 31)) < 0.3  # many components crossing every slab face
    st = ndi.generate_binary_structure(3, connectivity)
    comp, n = ndi.label(m, structure=st)
    sizes = np.bincount(comp.ravel())
    for min_voxels in (2, 8, 200):
        want = (sizes < min_voxels)[comp] & m
        got = slabs.small_components(m, st, min_voxels, threads=threads)
        np.testing.assert_array_equal(got, want)
    # components joined across slab faces: one long rod is not small, its slab pieces would be
    rod = np.zeros((60, 5, 5), bool)
    rod[:, 2, 2] = True
    assert not slabs.small_components(rod, st, 30, threads=threads).any()
    assert slabs.small_components(rod, st, 61, threads=threads).sum() == 60


@pytest.mark.parametrize("connectivity", [1, 2, 3])
@pytest.mark.parametrize("threads", [2, 3, 5])
def test_label_equals_scipy_numbers_and_all(connectivity, threads):
    rng = np.random.default_rng(10 + connectivity)
    m = rng.random((47, 19, 26)) < {1: 0.3, 2: 0.15, 3: 0.08}[connectivity]  # below percolation
    st = ndi.generate_binary_structure(3, connectivity)
    want, n_want = ndi.label(m, structure=st)
    got, n_got = slabs.label(m, st, threads=threads)
    assert n_got == n_want and n_want > 20
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    empty, n0 = slabs.label(np.zeros((20, 4, 4), bool), threads=threads)
    assert n0 == 0 and not empty.any()


@pytest.mark.parametrize("order", [(2, 0, 0), (1, 1, 0), (0, 1, 1), 1])
def test_gaussian_derivatives_equal_scipy(grey, order):
    want = ndi.gaussian_filter(grey, 1.7, order=order, mode="nearest")
    np.testing.assert_array_equal(slabs.gaussian_filter(grey, 1.7, order=order, mode="nearest", threads=3), want)
    assert np.abs(want).max() > 0


def _map_in_a_daemon(queue):
    queue.put(slabs.map_in_processes(lambda i: i * i, [1, 2, 3, 4], 2))


def test_map_in_processes_inside_a_daemonic_process_runs_the_items_there():
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_map_in_a_daemon, args=(q,), daemon=True)
    proc.start()
    got = q.get(timeout=60)
    proc.join(timeout=60)
    assert got == [1, 4, 9, 16] and proc.exitcode == 0


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_map_planes_covers_every_plane_once_in_order(threads):
    seen = slabs.map_planes(lambda a, b: (a, b), 37, 10 ** 8, threads=threads)
    assert [a for a, _ in seen] == sorted(a for a, _ in seen)
    assert seen[0][0] == 0 and seen[-1][1] == 37
    assert all(b == a2 for (_, b), (a2, _) in zip(seen[:-1], seen[1:]))  # contiguous, no overlap
    assert len(seen) == (1 if threads == 1 else min(37, threads * 4))
    # below MIN_PARALLEL_VOXELS (and no thread count given): one call
    assert slabs.map_planes(lambda a, b: (a, b), 37, 1000) == [(0, 37)]


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_masked_values_and_nonzero_equal_numpy(grey, threads):
    m = grey > np.percentile(grey, 70)
    np.testing.assert_array_equal(slabs.masked_values(grey, m, threads=threads), grey[m])
    want = np.nonzero(m)
    got = slabs.nonzero(m, dtype=np.int32, threads=threads)
    assert all(g.dtype == np.int32 for g in got)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    empty = np.zeros_like(m)
    assert slabs.masked_values(grey, empty, threads=threads).size == 0
    assert all(g.size == 0 for g in slabs.nonzero(empty, threads=threads))
    # a view (not contiguous): the same as numpy on it
    np.testing.assert_array_equal(slabs.masked_values(grey[:, ::2], m[:, ::2], threads=threads), grey[:, ::2][m[:, ::2]])


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_counts_and_equality_masks_equal_numpy(grey, threads):
    lab = np.digitize(grey, np.percentile(grey, [20, 50, 80])).astype(np.int16)
    for k in range(5):  # label 4 is absent
        want = lab == k
        got = slabs.equal_mask(lab, k, threads=threads)
        assert got.dtype == bool and np.array_equal(got, want)
        assert slabs.count_equal(lab, k, threads=threads) == int(np.count_nonzero(want))
        assert slabs.count_nonzero(want, threads=threads) == int(np.count_nonzero(want))
    assert slabs.count_nonzero(grey, threads=threads) == int(np.count_nonzero(grey))
    assert slabs.count_nonzero(lab[:, 0, 0], threads=threads) == int(np.count_nonzero(lab[:, 0, 0]))  # 1-D


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, bool])
def test_count_labels_on_threads_equals_bincount(monkeypatch, dtype):
    from recon.segmentation import count_labels
    from twin.errors import XrmInputError

    monkeypatch.setenv("XRM_TWIN_THREADS", "3")
    rng = np.random.default_rng(5)
    top = 2 if dtype is bool else 120
    a = rng.integers(0, top, (150, 130, 120)).astype(dtype)  # above MIN_PARALLEL_VOXELS
    assert a.size >= slabs.MIN_PARALLEL_VOXELS
    want = np.bincount(a.ravel().astype(np.int64), minlength=200)
    got = count_labels(a, 200)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(count_labels(a), want[:top])
    if dtype is not bool and np.issubdtype(dtype, np.signedinteger):
        a[149, 129, 119] = -1  # in the last chunk only
        with pytest.raises(XrmInputError, match=">= 0"):
            count_labels(a)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, bool])
def test_present_labels_equal_np_unique(monkeypatch, dtype):
    from recon.segmentation import present_labels

    monkeypatch.setenv("XRM_TWIN_THREADS", "3")
    rng = np.random.default_rng(6)
    a = rng.choice([0, 1, 3, 9] if dtype is not bool else [0, 1], (150, 130, 120)).astype(dtype)
    assert a.size >= slabs.MIN_PARALLEL_VOXELS
    for arr in (a, a[:, :, :1] * 0):  # several labels; only zeros
        got, want = present_labels(arr), np.unique(arr)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    if np.issubdtype(dtype, np.signedinteger):  # negative values: np.unique's path
        b = a.copy()
        b[0, 0, 0] = -2
        np.testing.assert_array_equal(present_labels(b), np.unique(b))
