"""Local thickness (Hildebrand & Rueegsegger 1997): the one place it is defined.

Definition (``shared/reference/metrology_detectability.md`` B1)::

    tau(p) = 2 * max{ r : exists c, p in B(c, r) subset of Omega }

i.e. the **diameter** of the largest sphere that fits inside the mask and contains ``p``.

Discrete convention used here (stated once, used everywhere)
--------------------------------------------------------------
* ``D(c)`` is the exact squared Euclidean distance, in voxels^2, from the centre of mask voxel
  ``c`` to the centre of the nearest background voxel (an integer).
* The inscribed ball at ``c`` is the set of voxels whose centres lie strictly within
  ``sqrt(D(c))`` of ``c``: every such voxel is in the mask, and it is the largest such set.
* Its diameter is reported as ``2 * sqrt(D(c))`` voxels (BoneJ's 2 x EDT convention; PoreSpy
  and ``localthickness`` return the radius ``sqrt(D)``, so ``diameter = 2 * r``).
* Bias, measured on randomly placed analytic shapes (``tests/test_metrology_thickness.py``,
  ``docs/notes-metrology.md``): plates of ``T`` voxels read ``T`` (even ``T``) or ``T + 1`` (odd
  ``T`` with faces on voxel faces); tube walls about +0.3 voxel; rods -0.3 to -0.7 voxel; balls
  about -1 voxel (the true centre of a ball lies between voxel centres, where no discrete centre
  sits). Use a finer grid where one voxel matters.
* Output is in **micrometres** (voxels x ``voxel_size_um``); 0 outside the mask.

Algorithm (exact for the convention above)
------------------------------------------
1. Exact squared EDT in integers (:mod:`recon.distance`: Taichi, all cores or the GPU).
2. Distance ridge: drop centre ``c`` when the discrete ball of a 26-neighbour ``c'`` holds the
   discrete ball of ``c`` (exact integer table, :func:`containment_table`); dropping it changes
   nothing.
3. Paint the ball of every ridge centre with ``2 sqrt(D)`` by an atomic max (Taichi kernel,
   parallel over centres, row spans computed from integer radii so only ball voxels are visited);
   a squared radius shared by very many centres (thick slabs) is instead dilated at once by one
   EDT of its centres' bounding box (same values, chosen by a cost model).
4. All of it runs on the mask's bounding box plus one voxel (exact: module code comments).

Cost is about (ridge points) x (ball volume): 256^3 foam with ~11-voxel struts in a few
seconds, 512^3 in about a minute on 2 CPU cores (``bench/bench_thickness.py``).
"""

# no "from __future__ import annotations": Taichi reads kernel annotations at runtime

import math
from typing import Any

import numpy as np

from recon import slabs
from twin.errors import XrmInputError
from twin.runtime import kernels_once, releasing

__all__ = ["local_thickness_um", "thickness_stats", "isotropic_voxel_um",
           "squared_edt_voxels", "distance_ridge", "containment_table"]

_BORDERS = ("open", "background")
# rough seconds per voxel on a 2-core CPU (only used to choose between two exact methods)
_COST_PAINT_PER_VOXEL = 5e-9
_COST_EDT_PER_VOXEL = 6e-8


# --------------------------------------------------------------------------------- helpers
def isotropic_voxel_um(voxel_size_um: Any, *, what: str = "local thickness") -> float:
    """Return the isotropic voxel size in um, or raise naming the need for isotropy.

    Parameters
    ----------
    voxel_size_um : float or (float, float, float)
        Scalar, or an (x, y, z) triple that must have three equal entries.
    what : str
        The method that needs isotropy (used in the error message).
    """
    if voxel_size_um is None:
        raise XrmInputError(f"{what} needs voxel_size_um (a positive number in um); got None")
    v = np.atleast_1d(np.asarray(voxel_size_um, dtype=float)).ravel()
    if v.size not in (1, 3) or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise XrmInputError(f"voxel_size_um must be a positive number or an (x, y, z) triple, "
                            f"got {voxel_size_um!r}")
    if v.size == 3 and not np.allclose(v, v[0], rtol=1e-6, atol=0):
        raise XrmInputError(
            f"{what} needs isotropic voxels, got voxel_size_um (x, y, z) = {tuple(v)}; "
            "resample the volume to a cubic grid first (e.g. scipy.ndimage.zoom)")
    return float(v[0])


def _check_mask(mask: Any) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 3:
        raise XrmInputError(f"mask must be a 3-D boolean array [z, y, x], got shape {m.shape}")
    if m.dtype != bool:
        if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.bool_)):
            raise XrmInputError(f"mask must be boolean (or 0/1 integers), got dtype {m.dtype}")
        m = m != 0
    return np.ascontiguousarray(m)


def squared_edt_voxels(mask: np.ndarray, *, border: str = "open") -> np.ndarray:
    """Exact squared Euclidean distance transform of a 3-D mask, in voxels^2.

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
    border : {"open", "background"}
        ``"open"``: outside the array is unknown and does not count as background (structures cut
        by the field of view are not thinned). ``"background"``: outside is background.

    Returns
    -------
    ndarray of int32, shape (nz, ny, nx)
        Squared distance from each mask voxel centre to the nearest background voxel centre;
        0 on background.
    """
    if border not in _BORDERS:
        raise XrmInputError(f"border must be one of {_BORDERS}, got {border!r}")
    mask = _check_mask(mask)
    if border == "open" and mask.all():
        raise XrmInputError("mask has no background voxel, so local thickness is undefined with "
                            "border='open'; use border='background' or a larger field of view")
    from recon.distance import squared_edt

    return squared_edt(mask, border=border)


# --------------------------------------------------------------------------------- kernels
@kernels_once
def _get_kernels() -> dict[str, Any]:
    """The Taichi kernels, defined on first use."""
    import taichi as ti

    @releasing
    @ti.kernel
    def ridge(d2: ti.types.ndarray(dtype=ti.i32, ndim=3), dmin: ti.types.ndarray(dtype=ti.i64, ndim=2),
              out: ti.types.ndarray(dtype=ti.u8, ndim=3)):
        nz, ny, nx = d2.shape[0], d2.shape[1], d2.shape[2]
        for z, y, x in ti.ndrange(nz, ny, nx):
            D = d2[z, y, x]
            keep = 0
            if D > 0:
                keep = 1
                for oz, oy, ox in ti.static(ti.ndrange((-1, 2), (-1, 2), (-1, 2))):
                    if ti.static(oz != 0 or oy != 0 or ox != 0):
                        k = ti.static(abs(oz) + abs(oy) + abs(ox) - 1)
                        zz, yy, xx = z + oz, y + oy, x + ox
                        if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx:
                            # the neighbour's discrete ball holds this one's
                            if ti.cast(d2[zz, yy, xx], ti.i64) >= dmin[k, D]:
                                keep = 0
            out[z, y, x] = ti.cast(keep, ti.u8)

    @ti.func
    def isqrt_below(n: ti.i32) -> ti.i32:
        """Largest integer k with k*k < n (n >= 1)."""
        k = ti.cast(ti.floor(ti.sqrt(ti.cast(n, ti.f64))), ti.i32)
        while k * k >= n:
            k -= 1
        while (k + 1) * (k + 1) < n:
            k += 1
        return k

    @releasing
    @ti.kernel
    def paint(cz: ti.types.ndarray(dtype=ti.i32, ndim=1), cy: ti.types.ndarray(dtype=ti.i32, ndim=1),
              cx: ti.types.ndarray(dtype=ti.i32, ndim=1), cd2: ti.types.ndarray(dtype=ti.i32, ndim=1),
              out: ti.types.ndarray(dtype=ti.f32, ndim=3)):
        nz, ny, nx = out.shape[0], out.shape[1], out.shape[2]
        for i in range(cz.shape[0]):
            D = cd2[i]
            z0, y0, x0 = cz[i], cy[i], cx[i]
            val = ti.cast(2.0 * ti.sqrt(ti.cast(D, ti.f64)), ti.f32)
            rz = isqrt_below(D)
            for dz in range(ti.max(-rz, -z0), ti.min(rz, nz - 1 - z0) + 1):
                remz = D - dz * dz
                ry = isqrt_below(remz)
                for dy in range(ti.max(-ry, -y0), ti.min(ry, ny - 1 - y0) + 1):
                    remy = remz - dy * dy
                    rx = isqrt_below(remy)
                    for dx in range(ti.max(-rx, -x0), ti.min(rx, nx - 1 - x0) + 1):
                        ti.atomic_max(out[z0 + dz, y0 + dy, x0 + dx], val)

    return {"ridge": ridge, "paint": paint}


def containment_table(d2_max: int) -> np.ndarray:
    """Smallest neighbour ``D'`` whose discrete ball holds the ball of ``D``.

    The discrete ball of squared radius ``D`` centred on a voxel is ``{p : |p|^2 < D}``. For a
    neighbour offset ``o`` with ``|o|^2 = k + 1`` (face, edge, corner), ``ball(0, D)`` is a subset
    of ``ball(o, D')`` iff ``D' > max{|p - o|^2 : |p|^2 < D}``. By the ball's symmetry the bound
    depends only on ``k``; the maximum lies in the octant opposite to ``o``.

    Parameters
    ----------
    d2_max : int
        Largest squared EDT value present.

    Returns
    -------
    ndarray of int64, shape (3, d2_max + 1)
        ``table[k, D]``; entries for ``D = 0`` are unused.
    """
    d2_max = int(d2_max)
    r = math.isqrt(max(d2_max - 1, 0))
    g = np.arange(r + 1, dtype=np.int64)
    pz, py, px = np.meshgrid(g, g, g, indexing="ij")  # |p| components (octant opposite o)
    n2 = (pz * pz + py * py + px * px).ravel()
    keep = n2 < d2_max
    n2 = n2[keep]
    order = np.argsort(n2, kind="stable")
    n2 = n2[order]
    table = np.zeros((3, d2_max + 1), dtype=np.int64)
    comps = (pz.ravel()[keep][order], py.ravel()[keep][order], px.ravel()[keep][order])
    Ds = np.arange(1, d2_max + 1)
    last = np.searchsorted(n2, Ds, side="left") - 1  # points with |p|^2 < D are [0, last]
    for k, o in enumerate(((0, 0, 1), (0, 1, 1), (1, 1, 1))):
        f = sum((c + oc) ** 2 for c, oc in zip(comps, o))  # |p - o|^2 with p in the far octant
        cm = np.maximum.accumulate(f)
        table[k, 1:] = cm[last] + 1
    return table


def distance_ridge(d2: np.ndarray) -> np.ndarray:
    """Centres whose discrete inscribed ball is not inside a 26-neighbour's ball (BoneJ-style).

    Dropping the others changes no local-thickness value: containment is transitive and the
    neighbour's squared radius is strictly larger, so every chain ends on a kept centre.

    Parameters
    ----------
    d2 : ndarray of int32, shape (nz, ny, nx)
        Squared EDT in voxels^2 (:func:`squared_edt_voxels`).

    Returns
    -------
    ndarray of bool, shape (nz, ny, nx)
    """
    k = _get_kernels()
    d2 = np.ascontiguousarray(d2, dtype=np.int32)
    table = containment_table(int(d2.max(initial=1)))
    out = np.zeros(d2.shape, dtype=np.uint8)
    k["ridge"](d2, table, out)
    return out.view(bool)


# --------------------------------------------------------------------------------- public
def local_thickness_um(mask: np.ndarray, voxel_size_um: float, *, border: str = "open",
                       chunk: int = 1 << 20) -> np.ndarray:
    """Hildebrand-Rueegsegger local thickness map in um (sphere **diameter**).

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
        The structure (True) whose thickness is measured. Integer 0/1 arrays are accepted.
    voxel_size_um : float
        Isotropic voxel edge in um (an (x, y, z) triple of equal values is accepted;
        anisotropic voxels raise :class:`~twin.errors.XrmInputError`).
    border : {"open", "background"}, keyword-only
        How the outside of the array counts; see :func:`squared_edt_voxels`. Default ``"open"``.
    chunk : int, keyword-only
        Ridge centres painted per kernel launch (memory/progress only; result is identical).

    Returns
    -------
    ndarray of float32, shape (nz, ny, nx)
        Local thickness in um: ``2 sqrt(D) * voxel_size_um`` maximised over the inscribed balls
        containing each voxel (sphere diameter; module docstring); 0 outside the mask.
    """
    vs = isotropic_voxel_um(voxel_size_um)
    mask = _check_mask(mask)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    # Work on the bounding box plus one voxel: the margin is background wherever the box does
    # not reach the array edge, and a background plane beside a voxel is never farther than
    # the perpendicular foot on it, so the squared EDT (and every ball) is unchanged.
    box = slabs.find_objects(np.ascontiguousarray(mask).view(np.uint8))[0]  # a view, no copy
    box = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, mask.shape))
    if all(b.stop - b.start == n for b, n in zip(box, mask.shape)):  # spans the array: no copy
        full = _local_thickness_vox(mask, border=border, chunk=chunk)
    else:  # the balls are painted straight into the output (no box-sized copy of it)
        sub = np.ascontiguousarray(mask[box])
        full = _local_thickness_vox(sub, border=border, chunk=chunk, out_shape=mask.shape,
                                    offset=tuple(b.start for b in box))

    def scale(a: int, b: int) -> None:  # voxels to um, and 0 outside the mask
        part = full[a:b]
        part *= np.float32(vs)
        part[~mask[a:b]] = 0.0

    slabs.map_planes(scale, full.shape[0], full.size)
    return full


def _local_thickness_vox(mask: np.ndarray, *, border: str, chunk: int,
                         out_shape: tuple[int, int, int] | None = None,
                         offset: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Local thickness in voxels (``2 sqrt(D)``) of a validated boolean mask.

    With ``out_shape`` and ``offset``, ``mask`` is the box of a larger array starting at
    ``offset`` and the result is that array (float32, ``out_shape``), zero outside the box:
    every ball lies inside the box (it holds only structure voxels, and the box has a
    background margin wherever it does not reach the array's edge), so painting straight into
    the larger array gives the same values without a box-sized copy.
    """
    d2 = squared_edt_voxels(mask, border=border)
    ridge = distance_ridge(d2)
    cz, cy, cx = slabs.nonzero(ridge, dtype=np.int32)
    cd2 = slabs.masked_values(d2, ridge).astype(np.int32, copy=False)  # raster order, as cz, cy, cx
    del ridge
    del d2  # before the output is allocated: the peak is the distance transform's
    out = np.zeros(mask.shape if out_shape is None else tuple(out_shape), dtype=np.float32)
    oz, oy, ox = (int(o) for o in offset)
    # Per squared radius D: paint balls one by one (cost ~ n * ball volume) or, for levels with
    # many centres (thick plates), dilate the level's centres at once by an EDT of their bounding
    # box (cost ~ box volume). Both give identical values; the cost model only picks the faster.
    counts = np.bincount(cd2)  # centres per squared radius (cd2 >= 1 and small)
    levels = np.flatnonzero(counts)
    scatter = np.ones(cz.size, dtype=bool)
    for D, n in zip(levels.tolist(), counts[levels].tolist()):
        r = math.isqrt(D - 1)
        ball = 4.19 * (r + 0.5) ** 3
        if n * ball * _COST_PAINT_PER_VOXEL < _COST_EDT_PER_VOXEL * mask.size:
            continue  # cheap enough to paint (box is at most the whole volume)
        sel = cd2 == D
        lo = [max(int(a[sel].min()) - r, 0) for a in (cz, cy, cx)]
        hi = [min(int(a[sel].max()) + r + 1, s) for a, s in zip((cz, cy, cx), mask.shape)]
        box = int(np.prod(np.subtract(hi, lo)))
        if n * ball * _COST_PAINT_PER_VOXEL < _COST_EDT_PER_VOXEL * box:
            continue
        scatter[sel] = False
        seeds = np.zeros(np.subtract(hi, lo), dtype=bool)
        seeds[cz[sel] - lo[0], cy[sel] - lo[1], cx[sel] - lo[2]] = True
        covered = squared_edt_voxels(~seeds, border="open") < D
        sub = out[lo[0] + oz:hi[0] + oz, lo[1] + oy:hi[1] + oy, lo[2] + ox:hi[2] + ox]
        np.maximum(sub, np.where(covered, np.float32(2.0 * math.sqrt(D)), np.float32(0)), out=sub)
    cz, cy, cx, cd2 = cz[scatter] + oz, cy[scatter] + oy, cx[scatter] + ox, cd2[scatter]
    # centres stay in raster order: neighbouring balls overlap, so painting them one after the
    # other hits the cache (1.6x faster than largest-first); order does not change the result
    paint = _get_kernels()["paint"]
    for s in range(0, cz.size, chunk):
        sl = slice(s, s + chunk)
        paint(np.ascontiguousarray(cz[sl]), np.ascontiguousarray(cy[sl]),
              np.ascontiguousarray(cx[sl]), np.ascontiguousarray(cd2[sl]), out)
    return out


def thickness_stats(mask: np.ndarray, voxel_size_um: float, *, thickness_um: np.ndarray | None = None,
                    bins: int | np.ndarray = 64, border: str = "open") -> dict[str, Any]:
    """Summary of the local thickness over a mask (BoneJ Tb.Th style), in um.

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
    voxel_size_um : float
        Isotropic voxel edge, um.
    thickness_um : ndarray of float, shape (nz, ny, nx), optional
        A precomputed :func:`local_thickness_um` map (saves recomputing it).
    bins : int or ndarray
        Histogram bins (count, or edges in um).
    border : {"open", "background"}
        Passed to :func:`local_thickness_um` when the map is computed here.

    Returns
    -------
    dict
        ``mean``, ``std``, ``min``, ``max``, ``median`` (um, sphere diameter, over mask voxels),
        ``n_voxels``, ``voxel_size_um``, ``convention`` (text), ``histogram``:
        ``{"edges_um": list, "counts": list}`` (voxel counts per bin).
    """
    vs = isotropic_voxel_um(voxel_size_um)
    mask = _check_mask(mask)
    if not mask.any():
        raise XrmInputError("thickness_stats: the mask is empty (no True voxel); nothing to measure")
    if thickness_um is None:
        thickness_um = local_thickness_um(mask, vs, border=border)
    elif np.shape(thickness_um) != mask.shape:
        raise XrmInputError(f"thickness_um has shape {np.shape(thickness_um)}, mask {mask.shape}; "
                            "they must match")
    vals = slabs.masked_values(np.asarray(thickness_um), mask).astype(np.float64)  # raster order
    counts, edges = np.histogram(vals, bins=bins)
    return {
        "mean": float(vals.mean()),
        "std": float(vals.std()),
        "min": float(vals.min()),
        "max": float(vals.max()),
        "median": float(np.median(vals)),
        "n_voxels": int(vals.size),
        "voxel_size_um": vs,
        "convention": "Hildebrand-Rueegsegger sphere diameter, 2*sqrt(squared EDT) voxels, in um",
        "histogram": {"edges_um": edges.tolist(), "counts": counts.tolist()},
    }
