"""Segmentation of reconstructed volumes into phases and components.

Histogram thresholding by multi-Otsu (scikit-image ``threshold_multiotsu``), island removal with a
minimum size in voxels (Dragonfly's "process islands"), per-component (instance) labels, and the
checks for label volumes that come from elsewhere (truth files, other tools).

Conventions: arrays are ``[z, y, x]``; class labels are ``0 .. classes-1`` in order of increasing
attenuation (0 is the least attenuating phase, usually air/pores).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from recon import slabs
from recon.distance import nearest_background
from twin.errors import XrmInputError

__all__ = ["multiotsu_thresholds", "segment_multiotsu", "apply_thresholds", "remove_islands",
           "label_instances", "check_labels", "check_volume", "same_grid", "count_labels",
           "lookup_labels", "hysteresis_threshold"]

#: Elements handled at once by :func:`count_labels` and :func:`lookup_labels` (their index
#: temporaries are int64: 32 MiB per chunk instead of 8 bytes per voxel of the volume).
_CHUNK = 1 << 20


def _chunk_elements(size: int) -> int:
    """Elements per chunk: ``_CHUNK``, or an eighth of a smaller array (at least 2^12), so the
    int64 temporary stays an eighth of an int64 copy of the array."""
    return max(1 << 12, min(_CHUNK, int(size) // 8))


def count_labels(labels: np.ndarray, minlength: int = 0) -> np.ndarray:
    """``np.bincount(labels.ravel(), minlength=minlength)`` in chunks (int64 counts).

    ``np.bincount`` first converts its input to int64: 8 bytes per voxel, twice an int32
    component volume and eight times a uint8 one. Counting chunk by chunk gives the same
    counts with a temporary of ``_CHUNK`` elements (an eighth of a smaller array). Labels of
    at most 16 bits (classes, truth labels) are counted on the host's threads, each thread's
    counts (at most 2^16 of them) summed: integers, so the same counts.

    Parameters
    ----------
    labels : ndarray of non-negative int, any shape
    minlength : int
        Minimum length of the result.
    """
    flat = np.ascontiguousarray(labels).reshape(-1)
    step = _chunk_elements(flat.size)
    threads = slabs.host_threads_for(flat.size) if flat.dtype.itemsize <= 2 else 1

    def count(a: int, b: int) -> np.ndarray | None:
        counts = np.zeros(0, np.int64)
        for i in range(a * step, min(b * step, flat.size), step):
            part = flat[i:i + step]
            if int(part.min()) < 0:
                return None
            c = np.bincount(part)
            if c.size > counts.size:
                c[:counts.size] += counts
                counts = c
            else:
                counts[:c.size] += c
        return counts

    n_chunks = -(-flat.size // step)
    parts = slabs.run_ranges(count, slabs.even_ranges(n_chunks, threads) if n_chunks else [], threads)
    if any(c is None for c in parts):
        raise XrmInputError("count_labels: labels must be >= 0")
    counts = np.zeros(max([int(minlength)] + [c.size for c in parts]), np.int64)
    for c in parts:
        counts[:c.size] += c
    return counts


def present_labels(labels: np.ndarray) -> np.ndarray:
    """The distinct values of a label array, increasing (``np.unique``'s result).

    Labels of at most 16 bits that are non-negative (classes, components, truth labels) are
    counted on the host's threads (:func:`count_labels`) instead of sorted: ``np.unique`` of a
    1024^3 volume sorts a copy of it on one core.
    """
    lab = np.asarray(labels)
    if lab.dtype.itemsize <= 2 and lab.dtype.kind in "biu" and (lab.dtype.kind != "i" or int(lab.min(initial=0)) >= 0):
        found = np.flatnonzero(count_labels(lab))
        return found.astype(bool) if lab.dtype == bool else found.astype(lab.dtype)
    return np.unique(lab)


def lookup_labels(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``table[labels]`` (dtype of ``table``, shape of ``labels``) in chunks.

    Fancy indexing converts the index array to int64 first (8 bytes per voxel); chunk by chunk
    the temporary is ``_CHUNK`` elements (an eighth of a smaller array).
    """
    table = np.asarray(table)
    src = np.ascontiguousarray(labels)
    out = np.empty(src.shape, table.dtype)
    flat_in, flat_out = src.reshape(-1), out.reshape(-1)
    step = _chunk_elements(flat_in.size)
    for i in range(0, flat_in.size, step):
        flat_out[i:i + step] = table[flat_in[i:i + step]]
    return out


def hysteresis_threshold(image: np.ndarray, low: float, high: float, *,
                         mask: np.ndarray | None = None) -> np.ndarray:
    """Voxels above ``low`` that are face-connected to a voxel above ``high`` (bool).

    The rule of scikit-image's ``apply_hysteresis_threshold`` (tested against it), without
    its float64 per-voxel sums: the components of ``image > low`` are labelled once (int32)
    and a component is kept when a voxel above ``high`` lies in it, found slab by slab.

    Parameters
    ----------
    image : ndarray of float, shape (nz, ny, nx)
    low, high : float
        Thresholds (strictly above), ``low <= high``.
    mask : ndarray of bool, same shape, optional
        Only these voxels count (as if the others were below ``low``), without a masked copy
        of the image.
    """
    img = np.asarray(image)
    if float(low) > float(high):
        raise XrmInputError(f"hysteresis_threshold: low ({low}) is above high ({high})")
    above = img > low
    if mask is not None:
        above &= np.asarray(mask, bool)
    lab, n = slabs.label(above)
    del above
    hit = np.zeros(n + 1, bool)
    for z0 in range(0, img.shape[0], 32):
        sl = slice(z0, z0 + 32)
        hit[lab[sl][img[sl] > high]] = True  # lab is 0 outside the mask
    hit[0] = False
    return lookup_labels(hit, lab)


def check_volume(volume: Any, *, what: str = "volume") -> np.ndarray:
    """Return ``volume`` as a finite 3-D float array or raise :class:`XrmInputError`."""
    v = np.asarray(volume)
    if v.ndim != 3:
        raise XrmInputError(f"{what} must be 3-D [z, y, x], got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.number):
        raise XrmInputError(f"{what} must be numeric, got dtype {v.dtype}")
    if v.size == 0:
        raise XrmInputError(f"{what} is empty (shape {v.shape})")
    if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
        raise XrmInputError(f"{what} contains NaN or inf values; mask or replace them first")
    return v


def check_labels(labels: Any, *, names: Mapping[int, str] | None = None,
                 what: str = "labels") -> np.ndarray:
    """Validate an integer label volume (0 = background) and optional ``{label: name}``.

    Raises :class:`XrmInputError` for non-3-D or non-integer arrays, negative labels, a volume
    with no foreground voxel (empty segmentation), or names for labels that are not present.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise XrmInputError(f"{what} must be a 3-D integer array [z, y, x], got shape {lab.shape}")
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise XrmInputError(f"{what} must be integers (0 = background), got dtype {lab.dtype}")
    if lab.size == 0 or not np.any(lab):
        raise XrmInputError(f"{what} is an empty segmentation: no voxel has a label > 0")
    if lab.dtype != bool and lab.min() < 0:
        raise XrmInputError(f"{what} must be >= 0, found {int(lab.min())}")
    if names is not None:
        present = set(present_labels(lab).tolist())
        missing = {int(k): v for k, v in names.items() if int(k) not in present}
        if missing:
            raise XrmInputError(
                f"{what}: components named but absent (empty): {missing}; labels present: "
                f"{sorted(present)}")
    return lab


def same_grid(shape_a: Sequence[int], voxel_a_um: Any, origin_a_mm: Sequence[float],
              shape_b: Sequence[int], voxel_b_um: Any, origin_b_mm: Sequence[float], *,
              what: str = "truth", tol_vox: float = 1e-3) -> None:
    """Raise :class:`XrmInputError` unless two grids (shape, voxel size, origin) coincide.

    Parameters
    ----------
    shape_a, shape_b : (nz, ny, nx)
    voxel_a_um, voxel_b_um : float or (x, y, z) triple, um
    origin_a_mm, origin_b_mm : (x, y, z) of voxel [0, 0, 0] centre, mm
    what : str
        Name of the second grid in the message (e.g. ``"truth"``).
    tol_vox : float
        Allowed origin difference in voxels.
    """
    va = np.broadcast_to(np.asarray(voxel_a_um, float), (3,))
    vb = np.broadcast_to(np.asarray(voxel_b_um, float), (3,))
    problems = []
    if tuple(shape_a) != tuple(shape_b):
        problems.append(f"shape {tuple(shape_b)} vs {tuple(shape_a)}")
    if not np.allclose(va, vb, rtol=1e-6):
        problems.append(f"voxel_size_um {tuple(vb)} vs {tuple(va)}")
    oa, ob = np.asarray(origin_a_mm, float), np.asarray(origin_b_mm, float)
    if oa.shape != (3,) or ob.shape != (3,) or np.any(np.abs(oa - ob) > tol_vox * va / 1000.0):
        problems.append(f"origin_mm {tuple(ob)} vs {tuple(oa)}")
    if problems:
        raise XrmInputError(f"{what} is on another grid than the volume: " + "; ".join(problems)
                            + ". Resample it onto the volume's grid (same shape, voxel size, "
                            "origin) or simulate it at the scan's voxel size")


def volume_histogram(volume: np.ndarray, nbins: int = 256, *, mask: np.ndarray | None = None,
                     slab: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of every (masked) voxel in ``nbins`` equal bins from the smallest value to the
    largest (as ``skimage.exposure.histogram``): the counts of ``np.histogram`` with edges
    ``np.linspace(lo, hi, nbins + 1)`` on all those values at once.

    Accumulated ``slab`` z-planes at a time (at most 2^22 voxels), groups of slabs on the
    host's threads: the memory is a few slabs' values, not a copy of the volume.

    Returns
    -------
    counts : ndarray of int64, shape (nbins,)
    edges : ndarray of float64, shape (nbins + 1,)
    """
    v = check_volume(volume)
    if mask is not None and np.shape(mask) != v.shape:
        raise XrmInputError(f"multi-Otsu: mask shape {np.shape(mask)} differs from the volume's {v.shape}")

    def values(z0: int, z1: int):
        sub = v[z0:z1]
        return sub.ravel() if mask is None else sub[mask[z0:z1]]

    step = max(1, min(int(slab), (1 << 22) // max(1, v.shape[1] * v.shape[2])))  # a thread's copy

    def each_slab(work) -> list:
        """``work(values)`` of every slab, groups of slabs on the host's threads."""
        def planes(a: int, b: int) -> list:
            return [work(values(z0, min(z0 + step, b))) for z0 in range(a, b, step)]
        return [r for part in slabs.map_planes(planes, v.shape[0], v.size) for r in part]

    ranges = [r for r in each_slab(lambda x: (float(x.min()), float(x.max())) if x.size else None)
              if r is not None]
    if not ranges:
        raise XrmInputError("multi-Otsu: the mask selects no voxel")
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if lo == hi:
        raise XrmInputError("multi-Otsu: the volume is constant; there is nothing to threshold")
    # equal bins over (lo, hi) in float64: numpy's uniform-bin path (no sort), whose counts are
    # those of the float64 linspace edges (it corrects each bin index against them; float32
    # values would give it float32 edges); integer counts, summed
    counts = np.sum(each_slab(lambda x: np.histogram(x.astype(np.float64), bins=int(nbins), range=(lo, hi))[0]),
                    axis=0, dtype=np.int64)
    return counts, np.linspace(lo, hi, int(nbins) + 1)


def multiotsu_thresholds(volume: np.ndarray, classes: int = 3, *, nbins: int = 256,
                         mask: np.ndarray | None = None, slab: int = 64) -> np.ndarray:
    """Multi-Otsu thresholds of a volume's histogram (every voxel, no sampling).

    The histogram is :func:`volume_histogram` (``nbins`` equal bins from the smallest to the
    largest value, as ``skimage.exposure.histogram``, accumulated ``slab`` z-planes at a time).

    Parameters
    ----------
    volume : ndarray, shape (nz, ny, nx)
        Grey values (e.g. mu in 1/mm).
    classes : int
        Number of classes (>= 2).
    nbins : int
        Histogram bins.
    mask : ndarray of bool, optional
        Only these voxels enter the histogram.
    slab : int
        z-planes per histogram pass (memory only; the result is the same).

    Returns
    -------
    ndarray of float, shape (classes - 1,)
        Increasing thresholds (bin centres) in the units of ``volume``.
    """
    from skimage.filters import threshold_multiotsu

    if int(classes) < 2:
        raise XrmInputError(f"classes must be >= 2, got {classes}")
    hist, edges = volume_histogram(volume, nbins, mask=mask, slab=slab)
    centres = 0.5 * (edges[:-1] + edges[1:])
    return np.asarray(threshold_multiotsu(classes=int(classes), hist=(hist, centres)), float)


def apply_thresholds(volume: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Class labels ``0..len(thresholds)`` (uint8) for increasing thresholds (a few planes at a
    time on the host's threads)."""
    v = np.asarray(volume)
    lab = np.zeros(v.shape, np.uint8)
    ts = np.sort(np.asarray(thresholds, float))
    if v.ndim == 0:
        return lab + int(np.count_nonzero(v >= ts))

    def planes(a: int, b: int) -> None:
        for t in ts:  # np.digitize: the thresholds <= v
            lab[a:b] += v[a:b] >= t

    slabs.map_planes(planes, v.shape[0], v.size)
    return lab


def remove_islands(labels: np.ndarray, min_voxels: int, *, connectivity: int = 1,
                   classes: Sequence[int] | None = None) -> np.ndarray:
    """Reassign connected islands smaller than ``min_voxels`` to the nearest surrounding class.

    Parameters
    ----------
    labels : ndarray of int, shape (nz, ny, nx)
    min_voxels : int
        Islands (connected components of one class) with fewer voxels are removed.
    connectivity : {1, 2, 3}
        1: faces (6-neighbours), 2: + edges (18), 3: + corners (26).
    classes : sequence of int, optional
        Only these classes are cleaned (default: all present).

    Returns
    -------
    ndarray, same shape and dtype
        Each removed voxel takes the label of the nearest kept voxel (Euclidean).
    """
    lab = np.asarray(labels)
    if int(min_voxels) <= 1:
        return lab.copy()
    struct = ndi.generate_binary_structure(3, int(connectivity))
    drop = np.zeros(lab.shape, dtype=bool)
    for c in (present_labels(lab) if classes is None else classes):
        # labelled slab by slab on every core (recon.slabs): the same islands as one
        # whole-volume labelling, one class's int32 labels alive at a time
        drop |= slabs.small_components(lab == c, struct, int(min_voxels))
    if not drop.any():
        return lab.copy()
    if drop.all():
        raise XrmInputError(f"remove_islands: every island is smaller than {min_voxels} voxels")
    return fill_from_nearest(lab, drop)


def fill_from_nearest(labels: np.ndarray, drop: np.ndarray, *, slab: int = 96, halo: int = 16) -> np.ndarray:
    """``labels`` with each ``drop`` voxel set to the label of its nearest kept voxel (Euclidean).

    Works slab by slab along z: the feature transform of a slab padded by ``halo`` planes
    finds each voxel's nearest kept voxel inside the padded box; that is the nearest one
    anywhere when its distance is at most ``halo`` (everything outside the box is farther),
    otherwise the halo is doubled. Memory is a padded slab's feature transform
    (:func:`recon.distance.nearest_background`: 8 bytes per voxel), not the volume's; with the
    defaults the halos add a third to the work, and a padded slab of 1024^2 planes is 1 GiB.

    Parameters
    ----------
    labels : ndarray of int, shape (nz, ny, nx)
    drop : ndarray of bool, same shape
        Voxels to refill; at least one voxel must be kept.
    """
    lab = np.asarray(labels)
    drop = np.asarray(drop, bool)
    if drop.all():
        raise XrmInputError("fill_from_nearest: no voxel is kept")
    out = lab.copy()
    nz = lab.shape[0]
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        if not drop[z0:z1].any():
            continue
        h = halo
        while True:
            a, b = max(0, z0 - h), min(nz, z1 + h)
            sub = drop[a:b]
            whole = a == 0 and b == nz
            if sub.all():
                h *= 2
                continue
            d2, idx = nearest_background(sub)
            core = slice(z0 - a, z1 - a)
            here = drop[z0:z1]
            if whole or int(d2[core][here].max()) <= h * h:
                del d2
                # only the dropped voxels' features (a few percent of the slab)
                out[z0:z1][here] = lab[a:b].reshape(-1)[idx[core][here]]
                break
            h *= 2
    return out


def segment_multiotsu(volume: np.ndarray, classes: int = 3, *, nbins: int = 256,
                      smooth_sigma_vox: float = 0.0, min_island_voxels: int = 0,
                      mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Segment a volume into ``classes`` phases by multi-Otsu, then remove small islands.

    Parameters
    ----------
    volume : ndarray of float, shape (nz, ny, nx)
    classes : int
        Number of phases, including the background (air/pores).
    nbins : int
        Histogram bins for multi-Otsu.
    smooth_sigma_vox : float
        Gaussian pre-smoothing in voxels (0: none).
    min_island_voxels : int
        Minimum island size in voxels (0 or 1: keep all).
    mask : ndarray of bool, optional
        Voxels entering the histogram (e.g. the field of view).

    Returns
    -------
    labels : ndarray of uint8, shape (nz, ny, nx)
        Class ``i`` is the ``i``-th least attenuating phase.
    thresholds : ndarray of float, shape (classes - 1,)
    """
    v = check_volume(volume).astype(np.float32, copy=False)
    if smooth_sigma_vox > 0:
        v = slabs.gaussian_filter(v, float(smooth_sigma_vox))
    thr = multiotsu_thresholds(v, classes, nbins=nbins, mask=mask)
    lab = apply_thresholds(v, thr)
    if min_island_voxels and min_island_voxels > 1:
        lab = remove_islands(lab, int(min_island_voxels))
    return lab, thr


def label_instances(mask: np.ndarray, *, min_voxels: int = 1, connectivity: int = 1,
                    dtype: Any = np.int32) -> tuple[np.ndarray, int]:
    """Per-component labels of a binary mask, largest first, small components dropped.

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
    min_voxels : int
        Components with fewer voxels are dropped (set to 0).
    connectivity : {1, 2, 3}
    dtype : numpy integer type or "smallest"
        Of the result; ``"smallest"``: uint8, uint16 or int32, whichever holds the count.

    Returns
    -------
    instances : ndarray of ``dtype``, shape (nz, ny, nx)
        1 is the largest component, 2 the next, ...; 0 elsewhere.
    n : int
        Number of components kept.
    """
    struct = ndi.generate_binary_structure(3, int(connectivity))
    comp, n = slabs.label(np.asarray(mask, bool), structure=struct)
    if n == 0:
        return comp.astype(np.uint8 if dtype == "smallest" else dtype), 0
    sizes = count_labels(comp, n + 1)
    sizes[0] = 0
    order = np.argsort(-sizes, kind="stable")
    keep = order[sizes[order] >= max(int(min_voxels), 1)]
    if dtype == "smallest":
        dtype = np.uint8 if keep.size < 256 else np.uint16 if keep.size < 65536 else np.int32
    remap = np.zeros(n + 1, dtype=dtype)
    remap[keep] = np.arange(1, keep.size + 1, dtype=np.int64)
    return lookup_labels(remap, comp), int(keep.size)
