"""SciPy's volume filters on every core, bit-identical to the single-threaded calls.

``scipy.ndimage`` releases the GIL inside its C loops but runs each call on one thread. On a
1024^3 volume the measure stage spends minutes in Gaussian filters, binary erosions and
dilations and bounding-box searches, one core busy while the others (fifteen on a GPU node)
wait. The functions here cut the volume into blocks that are independent for the operation
and run SciPy on the blocks in :func:`twin.runtime.host_threads` threads:

- :func:`gaussian_filter`: the separable passes one axis at a time, as SciPy does them (the
  z pass on blocks of columns, which hold whole z lines; the y and x passes on blocks of
  planes, which hold whole y and x lines), each in SciPy's own 1-D filter, so every output
  value is computed by the same arithmetic on the same values. No copy of the volume: the
  passes write into the output (which may be the input).
- :func:`binary_erosion`, :func:`binary_dilation`: slabs of planes grown by the
  structure's reach times the iterations (a voxel's result depends only on the voxels that
  close), each filtered whole and its core kept. Each thread holds one boolean slab.
- :func:`find_objects`: the bounding boxes of every slab, united.
- :func:`label`, :func:`small_components`: connected components, every slab labelled on its
  own and the labels that touch across slab faces joined
  (:func:`scipy.sparse.csgraph.connected_components`); numbered as SciPy numbers them, or
  the voxels of the components smaller than a size.
- :func:`map_in_processes`: for work that holds the GIL (scikit-image's marching cubes), the
  items go to forked worker processes, which read the parent's arrays without copying them.

Results equal the SciPy calls exactly (``tests/test_recon_slabs.py``); small arrays (under
:data:`MIN_PARALLEL_VOXELS`) and one thread go straight to SciPy.
"""

from __future__ import annotations

import math
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["gaussian_filter", "gaussian_filter1d", "binary_erosion", "binary_dilation",
           "find_objects", "label", "small_components", "map_in_processes", "forked_peak_bytes",
           "run_ranges", "even_ranges", "host_threads_for", "map_planes", "masked_values",
           "nonzero", "count_nonzero", "count_equal", "equal_mask", "MIN_PARALLEL_VOXELS"]

#: arrays with fewer voxels are filtered by one SciPy call (threads cost more than they save)
MIN_PARALLEL_VOXELS = 1 << 21
#: blocks per thread (uneven blocks and busy cores balance out)
_BLOCKS_PER_THREAD = 4


def _threads(threads: int | None, shape: Sequence[int]) -> int:
    """Threads to use: ``threads`` when given, else the host's for large arrays, else 1."""
    if threads is not None:
        return max(1, int(threads))
    if math.prod(shape) < MIN_PARALLEL_VOXELS:
        return 1
    from twin.runtime import host_threads

    return host_threads()


def host_threads_for(size: int) -> int:
    """Threads for work on an array of ``size`` elements: the host's (see :func:`_threads`)."""
    return _threads(None, (int(size),))


def even_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` (at most ``n``) contiguous ranges covering ``0..n``, as even as can be."""
    parts = max(1, min(int(parts), int(n)))
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def run_ranges(work: Callable[[int, int], object], ranges: list[tuple[int, int]], threads: int) -> list:
    """``work(a, b)`` for every range, on ``threads`` threads; results in range order."""
    if threads <= 1 or len(ranges) <= 1:
        return [work(a, b) for a, b in ranges]
    with ThreadPoolExecutor(max_workers=min(threads, len(ranges))) as pool:
        return list(pool.map(lambda r: work(*r), ranges))


def map_planes(work: Callable[[int, int], object], n_planes: int, size: int, *,
               threads: int | None = None) -> list:
    """``work(z0, z1)`` on ranges of planes covering ``0..n_planes``, results in plane order.

    On the host's threads for an array of ``size`` elements (:func:`_threads`: one call
    ``work(0, n_planes)`` below :data:`MIN_PARALLEL_VOXELS`). For numpy's element-wise work
    (comparisons, masks, boolean indexing, ``bincount``), which releases the GIL: each range
    must write only its own planes, so the result is the same on any number of threads.
    """
    n_threads = _threads(threads, (int(size),))
    if n_threads <= 1 or n_planes <= 1:
        return [work(0, int(n_planes))]
    return run_ranges(work, even_ranges(int(n_planes), n_threads * _BLOCKS_PER_THREAD), n_threads)


def masked_values(values: np.ndarray, mask: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """``values[mask]`` (a new 1-D array, raster order) gathered slab by slab on the threads.

    Parameters
    ----------
    values : ndarray, shape (nz, ny, nx)
    mask : ndarray of bool, same shape
    """
    v, m = np.asarray(values), np.asarray(mask, bool)
    n_threads = _threads(threads, v.shape)
    if v.ndim != 3 or v.shape != m.shape or n_threads <= 1:
        return v[m]
    ranges = even_ranges(v.shape[0], n_threads * _BLOCKS_PER_THREAD)
    counts = run_ranges(lambda a, b: int(np.count_nonzero(m[a:b])), ranges, n_threads)
    starts = np.cumsum([0] + counts)
    out = np.empty(int(starts[-1]), v.dtype)

    def gather(i: int, _: int) -> None:
        a, b = ranges[i]
        out[starts[i]:starts[i + 1]] = v[a:b][m[a:b]]

    run_ranges(gather, [(i, 0) for i in range(len(ranges))], n_threads)
    return out


def count_nonzero(values: np.ndarray, *, threads: int | None = None) -> int:
    """``np.count_nonzero(values)`` of an array of any shape, slab by slab on the threads (the
    per-slab counts are integers: the same total on any number of threads)."""
    v = np.asarray(values)
    if v.ndim < 2:
        return int(np.count_nonzero(v))
    return int(sum(map_planes(lambda a, b: int(np.count_nonzero(v[a:b])), v.shape[0], v.size,
                              threads=threads)))


def count_equal(values: np.ndarray, value, *, threads: int | None = None) -> int:
    """``np.count_nonzero(values == value)`` slab by slab on the threads, with a slab-sized
    temporary instead of a whole boolean volume."""
    v = np.asarray(values)
    if v.ndim < 2:
        return int(np.count_nonzero(v == value))
    return int(sum(map_planes(lambda a, b: int(np.count_nonzero(v[a:b] == value)), v.shape[0], v.size,
                              threads=threads)))


def equal_mask(values: np.ndarray, value, *, threads: int | None = None) -> np.ndarray:
    """``values == value`` (a new bool array of the same shape), slab by slab on the threads."""
    v = np.asarray(values)
    if v.ndim < 2:
        return v == value
    out = np.empty(v.shape, bool)
    map_planes(lambda a, b: np.equal(v[a:b], value, out=out[a:b]), v.shape[0], v.size, threads=threads)
    return out


def nonzero(mask: np.ndarray, *, dtype=np.int64, threads: int | None = None) -> tuple[np.ndarray, ...]:
    """``np.nonzero`` of a 3-D mask (raster order) slab by slab on the threads, as ``dtype``."""
    m = np.asarray(mask)
    parts = map_planes(lambda a, b: (a, np.nonzero(m[a:b])), m.shape[0], m.size, threads=threads)
    if len(parts) == 1:
        return tuple(i.astype(dtype, copy=False) for i in parts[0][1])
    z = np.concatenate([(idx[0] + a).astype(dtype) for a, idx in parts])
    return (z,) + tuple(np.concatenate([idx[k].astype(dtype, copy=False) for _, idx in parts])
                        for k in (1, 2))


def gaussian_filter1d(values: np.ndarray, sigma_vox: float, axis: int, *, output: np.ndarray,
                      order: int = 0, mode: str = "reflect", cval: float = 0.0, truncate: float = 4.0,
                      threads: int | None = None) -> np.ndarray:
    """:func:`scipy.ndimage.gaussian_filter1d` of a 3-D array along ``axis`` into ``output``
    (which may be ``values``), in blocks along another axis (every filtered line whole) on
    ``threads`` threads: the same values."""
    v = np.asarray(values)
    n_threads = _threads(threads, v.shape)
    along = 1 if axis == 0 else 0

    def work(a: int, b: int) -> None:
        sl = (slice(None), slice(a, b)) if along == 1 else (slice(a, b),)
        ndi.gaussian_filter1d(v[sl], sigma_vox, axis=axis, order=order, output=output[sl], mode=mode,
                              cval=cval, truncate=truncate)

    if n_threads <= 1 or v.ndim != 3:
        work(0, v.shape[along])
    else:
        run_ranges(work, even_ranges(v.shape[along], n_threads * _BLOCKS_PER_THREAD), n_threads)
    return output


def gaussian_filter(values: np.ndarray, sigma_vox: float | Sequence[float], *,
                    output: np.ndarray | None = None, order: int | Sequence[int] = 0,
                    mode: str = "reflect", cval: float = 0.0,
                    truncate: float = 4.0, threads: int | None = None) -> np.ndarray:
    """:func:`scipy.ndimage.gaussian_filter` of a 3-D array, on every core, same values.

    Parameters
    ----------
    values : ndarray of float, shape (nz, ny, nx)
    sigma_vox : float or sequence of 3 floats
        Gaussian standard deviation per axis (voxels).
    output : ndarray of float, shape (nz, ny, nx), optional
        Where to write (may be ``values`` itself: filtered in place). Default: a new array of
        ``values``' dtype (SciPy's default; float32 in, float32 out, each pass rounded).
    order : int or sequence of 3 ints
        Derivative order per axis, as in SciPy.
    mode, cval, truncate :
        As in SciPy (one mode for every axis).
    threads : int, optional
        Worker threads (default :func:`twin.runtime.host_threads` for arrays of at least
        :data:`MIN_PARALLEL_VOXELS` voxels, one below).

    Returns
    -------
    ndarray, shape (nz, ny, nx): ``output``, or the new array.
    """
    v = np.asarray(values)
    n_threads = _threads(threads, v.shape)
    if v.ndim != 3 or n_threads <= 1 or not np.issubdtype(v.dtype, np.floating):
        return ndi.gaussian_filter(v, sigma_vox, order=order, output=output, mode=mode, cval=cval,
                                   truncate=truncate)
    sig = np.broadcast_to(np.asarray(sigma_vox, float), (3,))
    orders = np.broadcast_to(np.asarray(order, int), (3,))
    out = np.empty(v.shape, v.dtype) if output is None else output
    if out.shape != v.shape:
        raise ValueError(f"output has shape {out.shape}, values {v.shape}")
    src = v
    for axis in range(3):
        if float(sig[axis]) <= 1e-15:  # SciPy skips such axes
            continue
        gaussian_filter1d(src, float(sig[axis]), axis, output=out, order=int(orders[axis]), mode=mode,
                          cval=cval, truncate=truncate, threads=n_threads)
        src = out
    if src is v and out is not v:  # every sigma zero: SciPy copies the input
        out[...] = v
    return out


def _morphology(fn, mask, structure, iterations: int, border_value: int, threads: int | None):
    m = np.asarray(mask, bool)
    n_threads = _threads(threads, m.shape)
    st = ndi.generate_binary_structure(m.ndim, 1) if structure is None else np.asarray(structure, bool)
    if m.ndim != 3 or n_threads <= 1 or int(iterations) < 1 or st.ndim != 3:
        return fn(m, st, iterations=iterations, border_value=border_value)
    reach = (st.shape[0] // 2) * int(iterations)  # planes that can change a voxel's result
    nz = m.shape[0]
    out = np.empty(m.shape, bool)
    # slabs of at least two reaches, so that the halos do not outweigh the work
    parts = min(n_threads * _BLOCKS_PER_THREAD, max(1, nz // max(2 * reach, 1)))

    def work(z0: int, z1: int) -> None:
        a, b = max(z0 - reach, 0), min(z1 + reach, nz)
        out[z0:z1] = fn(m[a:b], st, iterations=iterations, border_value=border_value)[z0 - a:z1 - a]

    run_ranges(work, even_ranges(nz, parts), n_threads)
    return out


def binary_erosion(mask: np.ndarray, structure: np.ndarray | None = None, *, iterations: int = 1,
                   border_value: int = 0, threads: int | None = None) -> np.ndarray:
    """:func:`scipy.ndimage.binary_erosion` of a 3-D mask on every core (same voxels).

    ``structure`` defaults to SciPy's (faces, 6-neighbours); ``iterations`` must be >= 1
    (SciPy's "until nothing changes" runs on one thread). Returns a new bool array.
    """
    return _morphology(ndi.binary_erosion, mask, structure, iterations, border_value, threads)


def binary_dilation(mask: np.ndarray, structure: np.ndarray | None = None, *, iterations: int = 1,
                    border_value: int = 0, threads: int | None = None) -> np.ndarray:
    """:func:`scipy.ndimage.binary_dilation` of a 3-D mask on every core (same voxels).

    Arguments as :func:`binary_erosion`.
    """
    return _morphology(ndi.binary_dilation, mask, structure, iterations, border_value, threads)


def find_objects(labels: np.ndarray, max_label: int = 0, *,
                 threads: int | None = None) -> list[tuple[slice, ...] | None]:
    """:func:`scipy.ndimage.find_objects` of a 3-D integer (or bool) array on every core.

    The boxes of every slab of planes, shifted to the slab's place and united per label: the
    same list as SciPy's (``None`` for absent labels; ``max_label`` as in SciPy).
    """
    lab = np.asarray(labels)
    if lab.dtype == bool:
        lab = lab.view(np.uint8)
    n_threads = _threads(threads, lab.shape)
    if lab.ndim != 3 or n_threads <= 1:
        return ndi.find_objects(lab, max_label=max_label)
    parts = run_ranges(lambda a, b: (a, ndi.find_objects(lab[a:b], max_label=max_label)),
                 even_ranges(lab.shape[0], n_threads * _BLOCKS_PER_THREAD), n_threads)
    n = max_label if max_label > 0 else max(len(p) for _, p in parts)
    lo = np.full((n, 3), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n, 3), -1, np.int64)
    for z0, boxes in parts:
        for i, box in enumerate(boxes):
            if box is None:
                continue
            start = np.array([box[0].start + z0, box[1].start, box[2].start])
            stop = np.array([box[0].stop + z0, box[1].stop, box[2].stop])
            lo[i] = np.minimum(lo[i], start)
            hi[i] = np.maximum(hi[i], stop)
    return [None if hi[i, 0] < 0 else tuple(slice(int(lo[i, d]), int(hi[i, d])) for d in range(3))
            for i in range(n)]




def _joined_slab_labels(m: np.ndarray, st: np.ndarray, parts: list[tuple[int, int]], n_threads: int):
    """Every slab of ``parts`` labelled on its own, and the labels joined across slab faces.

    Returns (int32 volume of the slab labels, id offsets, per-id voxel counts, per-id joined
    component): slab ``i``'s label ``k`` is id ``offsets[i] + k``; id 0 is the background.
    The slabs are labelled into one int32 volume, as SciPy's one call would be.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from recon.segmentation import count_labels

    lab = np.empty(m.shape, np.int32)
    comps = [lab[a:b] for a, b in parts]  # contiguous views

    def label_one(i: int, _: int) -> tuple[int, np.ndarray]:
        a, b = parts[i]
        n = ndi.label(m[a:b], structure=st, output=comps[i])
        return n, count_labels(comps[i], n + 1)[1:]

    labelled = run_ranges(label_one, [(i, 0) for i in range(len(parts))], n_threads)
    offsets = np.concatenate([[0], np.cumsum([n for n, _ in labelled])]).astype(np.int64)
    sizes = np.concatenate([[0]] + [c for _, c in labelled]).astype(np.int64)
    # the labels that touch across each slab face: the structure's offsets from plane z to z + 1
    steps = [(dy - 1, dx - 1) for dy in range(3) for dx in range(3) if st[2, dy, dx]]
    ny, nx = m.shape[1:]
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for i in range(len(parts) - 1):
        last, first = comps[i][-1], comps[i + 1][0]
        for dy, dx in steps:
            a = last[max(0, -dy):ny - max(0, dy), max(0, -dx):nx - max(0, dx)]
            b = first[max(0, dy):ny - max(0, -dy), max(0, dx):nx - max(0, -dx)]
            both = (a > 0) & (b > 0)
            if both.any():  # the distinct pairs, as one int64 key each (labels < 2^31)
                keys = np.unique((a[both].astype(np.int64) << 31) | b[both])
                rows.append((keys >> 31) + offsets[i])
                cols.append((keys & ((1 << 31) - 1)) + offsets[i + 1])
    n_ids = int(offsets[-1]) + 1
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(n_ids, n_ids))
    _, root = connected_components(graph, directed=False)
    return lab, offsets, sizes, root


def _lookup_slabs(lab: np.ndarray, parts, offsets, table_of_ids: np.ndarray, n_threads: int,
                  out: np.ndarray) -> np.ndarray:
    """``out`` = ``table_of_ids[id]`` of every voxel's slab label in ``lab`` (``out`` may be
    ``lab``: relabelled in place), slab by slab on the threads."""
    from recon.segmentation import _chunk_elements

    def lookup(i: int, _: int) -> None:
        a, b = parts[i]
        table = np.zeros(int(offsets[i + 1] - offsets[i]) + 1, out.dtype)
        table[1:] = table_of_ids[offsets[i] + 1:offsets[i + 1] + 1]
        src, dst = lab[a:b].reshape(-1), out[a:b].reshape(-1)
        step = _chunk_elements(src.size)  # fancy indexing's int64 temporary: a chunk's
        for k in range(0, src.size, step):
            dst[k:k + step] = table[src[k:k + step]]

    run_ranges(lookup, [(i, 0) for i in range(len(parts))], n_threads)
    return out


def _label_plan(mask, structure, threads):
    m = np.asarray(mask, bool)
    st = ndi.generate_binary_structure(m.ndim, 1) if structure is None else np.asarray(structure, bool)
    n_threads = _threads(threads, m.shape)
    parts = even_ranges(m.shape[0], n_threads * _BLOCKS_PER_THREAD) if m.ndim == 3 else []
    serial = n_threads <= 1 or len(parts) <= 1 or st.shape != (3, 3, 3)
    return m, st, n_threads, parts, serial


def label(mask: np.ndarray, structure: np.ndarray | None = None, *,
          threads: int | None = None) -> tuple[np.ndarray, int]:
    """:func:`scipy.ndimage.label` of a 3-D mask on every core: the same int32 labels and count.

    Slabs are labelled on their own and joined across their faces. SciPy numbers the
    components in the raster order of their first voxel; a component's first voxel lies in
    the first slab it reaches, at that slab's label order, so numbering the joined components
    by their smallest slab id gives SciPy's numbers.
    """
    m, st, n_threads, parts, serial = _label_plan(mask, structure, threads)
    if serial:
        return ndi.label(m, structure=st)
    lab, offsets, _, root = _joined_slab_labels(m, st, parts, n_threads)
    first_id = np.full(int(root.max()) + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_id, root, np.arange(root.size, dtype=np.int64))
    order = np.argsort(first_id, kind="stable")  # the background's component first (id 0)
    number = np.empty(order.size, np.int64)
    number[order] = np.arange(order.size)
    table = number[root].astype(np.int32)
    return _lookup_slabs(lab, parts, offsets, table, n_threads, out=lab), int(order.size - 1)


def small_components(mask: np.ndarray, structure: np.ndarray, min_voxels: int, *,
                     threads: int | None = None) -> np.ndarray:
    """Voxels of ``mask`` whose connected component has fewer than ``min_voxels`` voxels.

    The same voxels as ``ndi.label`` followed by a size count (the serial path, used for small
    arrays and one thread): the components are the same sets, whichever slab labels them.

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
    structure : ndarray of bool, shape (3, 3, 3)
        Connectivity (``ndi.generate_binary_structure(3, c)``).
    min_voxels : int
    threads : int, optional
        As :func:`gaussian_filter`.

    Returns
    -------
    ndarray of bool, shape (nz, ny, nx)
    """
    from recon.segmentation import count_labels, lookup_labels

    m, st, n_threads, parts, serial = _label_plan(mask, structure, threads)
    if serial:
        comp, n = ndi.label(m, structure=st)
        sizes = count_labels(comp, n + 1)
        small = sizes < int(min_voxels)
        small[0] = False
        return lookup_labels(small, comp)
    lab, offsets, sizes, root = _joined_slab_labels(m, st, parts, n_threads)
    total = np.bincount(root, weights=sizes, minlength=int(root.max()) + 1)
    small_id = total[root] < int(min_voxels)
    small_id[0] = False  # the background
    return _lookup_slabs(lab, parts, offsets, small_id, n_threads, out=np.empty(m.shape, bool))

#: the function the forked workers of :func:`map_in_processes` call (set while a pool runs)
_FORKED_JOB: Callable | None = None
#: while ``tracemalloc`` traces: the largest (traced bytes of this process during a map + the
#: bytes its workers allocated at once, at most), over the maps since the last reset
_forked_peak = 0


def _call_forked_job(item):
    """Run the job on one item in a worker: (result, bytes the worker allocated at its peak)."""
    import tracemalloc

    if not tracemalloc.is_tracing():
        return _FORKED_JOB(item), 0
    tracemalloc.reset_peak()  # the parent's allocations are inherited: count the item's own
    base = tracemalloc.get_traced_memory()[0]
    out = _FORKED_JOB(item)
    return out, tracemalloc.get_traced_memory()[1] - base


def forked_peak_bytes(reset: bool = False) -> int:
    """Peak memory of the maps of :func:`map_in_processes` since the last reset, counted as
    ``tracemalloc`` counts this process's: the parent's traced bytes during the map plus the
    sum of the largest per-item peaks of as many items as there were workers (an upper bound
    of what the workers held at once). 0 when nothing was traced. Memory benchmarks take the
    larger of this and the parent's own traced peak, so forked work is not left out."""
    global _forked_peak
    out = _forked_peak
    if reset:
        _forked_peak = 0
    return out


def map_in_processes(fn: Callable, items: Sequence, workers: int) -> list:
    """``[fn(item) for item in items]``, on ``workers`` forked processes; results in item order.

    For work that holds the GIL. The workers are forked, so ``fn`` (a closure is fine) and the
    arrays it reads come from the parent's memory without pickling or copying (the pages are
    shared until written); only the items and the results travel. Where the platform cannot
    fork, in a daemonic process (a multiprocessing pool's worker may not have children), or
    when ``workers`` is 1, the items run here. Python 3.12 warns that forking a process
    with threads may deadlock the child; the children here only run ``fn`` (numpy and
    scikit-image, no locks of the parent's threads) and exit, so that warning is silenced
    for the pool's start. Under ``tracemalloc`` the workers' allocations are counted too
    (:func:`forked_peak_bytes`).
    """
    global _FORKED_JOB, _forked_peak
    import tracemalloc

    items = list(items)
    if (int(workers) <= 1 or len(items) <= 1 or "fork" not in multiprocessing.get_all_start_methods()
            or multiprocessing.current_process().daemon):  # a daemonic process may not fork
        return [fn(item) for item in items]
    if _FORKED_JOB is not None:  # a map inside a map: the outer one owns the workers
        return [fn(item) for item in items]
    n_workers = min(int(workers), len(items))
    _FORKED_JOB = fn
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with ProcessPoolExecutor(max_workers=n_workers,
                                     mp_context=multiprocessing.get_context("fork")) as pool:
                pairs = list(pool.map(_call_forked_job, items))
    finally:
        _FORKED_JOB = None
    if tracemalloc.is_tracing():
        at_once = sum(sorted(peak for _, peak in pairs)[-n_workers:])
        _forked_peak = max(_forked_peak, tracemalloc.get_traced_memory()[0] + at_once)
    return [out for out, _ in pairs]
