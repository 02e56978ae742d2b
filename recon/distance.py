"""Exact Euclidean distance and feature transforms of 3-D masks (Taichi, CPU and CUDA).

The squared Euclidean distance transform separates into three 1-D passes, one per axis
(Saito & Toriwaki 1994): after the pass along x each voxel holds the squared distance to the
nearest background voxel of its row; the pass along y then takes, for every column, the lower
envelope of the parabolas ``(y - y')^2 + g(y')``; the pass along z the same over z. Each pass is
Meijster, Roerdink & Hesselink's linear-time algorithm (2000), in integers throughout, so the
result is exact (the same integers as SciPy's ``distance_transform_edt`` squared; tested).

Carrying the winning site through the passes gives the **feature transform**: the flat index of
a nearest background voxel (ties are broken differently from SciPy, the distance is the same).

Why not SciPy: ``scipy.ndimage.distance_transform_edt`` always builds the feature transform
(three int32 and one float64 per voxel: 20 bytes) on one core; these kernels need 4 bytes per
voxel for distances (8 with features) plus a chunk of scratch lines, and run on every core or
on the GPU.

Semantics match SciPy's: the distance of a True voxel to the nearest False voxel, 0 on False
voxels; outside the array is not background (``border="open"``) unless ``border="background"``.
"""

# no "from __future__ import annotations": Taichi reads kernel annotations at runtime

from typing import Any

import numpy as np

from recon import slabs
from twin.errors import XrmInputError
from twin.runtime import kernels_once, releasing

__all__ = ["squared_edt", "edt", "nearest_background"]

_BORDERS = ("open", "background")
#: "no site": larger than any squared distance in a volume of under 2^15 voxels a side
#: (3 * (2^15)^2 < 2^31 - 1)
_INF = (1 << 31) - 1
#: scratch bytes per line element: line copy, Meijster's s and t (and the features' copy)
_SCRATCH_BYTES = {False: 12, True: 16}
_SCRATCH_BUDGET = {"cpu": 64 << 20, "cuda": 1 << 30}


@kernels_once
def _get_kernels() -> dict[str, Any]:
    """The pass kernel, defined on first use."""
    import taichi as ti

    @ti.func
    def _site_g(gbuf: ti.template(), l: ti.i32, u: ti.i32, m: ti.i32) -> ti.i64:
        """g of site u of line l (virtual background sites -1 and m have g = 0)."""
        g = ti.i64(0)
        if 0 <= u < m:
            g = ti.cast(gbuf[l, u], ti.i64)
        return g

    @releasing
    @ti.kernel
    def edt_pass(d2: ti.types.ndarray(dtype=ti.i32, ndim=3), feat: ti.types.ndarray(dtype=ti.i32, ndim=3),
                 axis: ti.template(), with_feat: ti.template(), black: ti.template(),
                 line0: ti.i32, nlines: ti.i32,
                 gbuf: ti.types.ndarray(dtype=ti.i32, ndim=2), fbuf: ti.types.ndarray(dtype=ti.i32, ndim=2),
                 sbuf: ti.types.ndarray(dtype=ti.i32, ndim=2), tbuf: ti.types.ndarray(dtype=ti.i32, ndim=2)):
        ny, nx = d2.shape[1], d2.shape[2]
        m = d2.shape[axis]
        inner = nx  # lines of axis 0 and 1 are numbered (other, x); of axis 2, (z, y)
        if ti.static(axis == 2):
            inner = ny
        for l in range(nlines):
            L = line0 + l
            i, j = L // inner, L % inner
            # copy the line (d2 and features) into scratch: the envelope reads the old values
            for u in range(m):
                z, y, x = u, i, j
                if ti.static(axis == 1):
                    z, y, x = i, u, j
                if ti.static(axis == 2):
                    z, y, x = i, j, u
                gbuf[l, u] = d2[z, y, x]
                if ti.static(with_feat):
                    if ti.static(axis == 2):
                        fbuf[l, u] = (z * ny + y) * nx + x  # the row's own voxel
                    else:
                        fbuf[l, u] = feat[z, y, x]
            # lower envelope of the parabolas (u - s)^2 + g(s) over the sites s with g < INF
            q = -1
            lo, hi = 0, m
            if ti.static(black):
                lo, hi = -1, m + 1
            for uu in range(hi - lo):
                u = lo + uu
                gu = _site_g(gbuf, l, u, m)
                if gu < _INF:
                    while q >= 0:
                        tq, sq = ti.cast(tbuf[l, q], ti.i64), sbuf[l, q]
                        if (tq - sq) * (tq - sq) + _site_g(gbuf, l, sq, m) > (tq - u) * (tq - u) + gu:
                            q -= 1
                        else:
                            break
                    if q < 0:
                        q = 0
                        sbuf[l, 0] = u
                        tbuf[l, 0] = 0
                    else:
                        sq = sbuf[l, q]
                        gs = _site_g(gbuf, l, sq, m)
                        num = ti.cast(u, ti.i64) * u - ti.cast(sq, ti.i64) * sq + gu - gs
                        w = 1 + num // (2 * ti.cast(u - sq, ti.i64))  # floor division
                        if w < m:
                            q += 1
                            sbuf[l, q] = u
                            tbuf[l, q] = ti.cast(w, ti.i32)
            # read the envelope back, from the end of the line
            for uu in range(m):
                u = m - 1 - uu
                z, y, x = u, i, j
                if ti.static(axis == 1):
                    z, y, x = i, u, j
                if ti.static(axis == 2):
                    z, y, x = i, j, u
                if q < 0:
                    d2[z, y, x] = _INF
                else:
                    sq = sbuf[l, q]
                    val = ti.cast(u - sq, ti.i64) * (u - sq) + _site_g(gbuf, l, sq, m)
                    d2[z, y, x] = ti.cast(ti.min(val, ti.i64(_INF)), ti.i32)
                    if ti.static(with_feat):
                        feat[z, y, x] = fbuf[l, sq]
                    if u == tbuf[l, q]:
                        q -= 1

    return {"pass": edt_pass}


def _check(mask: Any, border: str) -> np.ndarray:
    if border not in _BORDERS:
        raise XrmInputError(f"border must be one of {_BORDERS}, got {border!r}")
    m = np.asarray(mask)
    if m.ndim != 3:
        raise XrmInputError(f"mask must be a 3-D array [z, y, x], got shape {m.shape}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.integer):
            raise XrmInputError(f"mask must be boolean (or 0/1 integers), got dtype {m.dtype}")
        m = m != 0
    if max(m.shape) >= 1 << 15:
        raise XrmInputError(f"mask shape {m.shape}: at most {(1 << 15) - 1} voxels a side "
                            "(the squared distances are int32)")
    return m


def _transform(mask: np.ndarray, *, black: bool, with_feat: bool):
    import taichi as ti

    from twin import runtime

    kernel = _get_kernels()["pass"]
    arch = runtime.current_arch() or "cpu"
    d2_host = np.empty(mask.shape, np.int32)

    def start(a: int, b: int) -> None:  # INF on the mask, 0 on the background
        np.multiply(mask[a:b], np.int32(_INF), out=d2_host[a:b])

    slabs.map_planes(start, mask.shape[0], mask.size)
    feat_host = np.zeros(mask.shape if with_feat else (1, 1, 1), dtype=np.int32)
    on_device = arch == "cuda"
    if on_device:  # keep the volume on the GPU across passes and chunks
        d2 = ti.ndarray(ti.i32, d2_host.shape)
        d2.from_numpy(d2_host)
        feat = ti.ndarray(ti.i32, feat_host.shape)
        feat.from_numpy(feat_host)
    else:
        d2, feat = d2_host, feat_host
    # one scratch set for the three passes (allocating it zero-fills it): lines of the longest
    # axis, Meijster's s and t holding up to m + 2 sites with the virtual borders
    width = max(mask.shape) + 2
    most_lines = mask.size // min(mask.shape)
    chunk = int(max(1, min(most_lines, _SCRATCH_BUDGET[arch] // (width * _SCRATCH_BYTES[with_feat]))))
    gbuf = ti.ndarray(ti.i32, (chunk, width))
    fbuf = ti.ndarray(ti.i32, (chunk, width) if with_feat else (1, 1))
    sbuf = ti.ndarray(ti.i32, (chunk, width))
    tbuf = ti.ndarray(ti.i32, (chunk, width))
    for axis in (2, 1, 0):
        nlines = mask.size // mask.shape[axis]
        for line0 in range(0, nlines, chunk):
            kernel(d2, feat, axis, with_feat, black, line0, min(chunk, nlines - line0),
                   gbuf, fbuf, sbuf, tbuf)
    del gbuf, fbuf, sbuf, tbuf
    if on_device:
        d2_host = d2.to_numpy()
        feat_host = feat.to_numpy() if with_feat else None
    return d2_host, (feat_host if with_feat else None)


def squared_edt(mask: Any, *, border: str = "open") -> np.ndarray:
    """Exact squared Euclidean distance transform, in voxels^2.

    Parameters
    ----------
    mask : ndarray of bool (or 0/1 integers), shape (nz, ny, nx)
        Voxels whose distance is measured (True) to the nearest False voxel.
    border : {"open", "background"}
        ``"open"``: outside the array is not background (SciPy's convention).
        ``"background"``: outside the array is background.

    Returns
    -------
    ndarray of int32, shape (nz, ny, nx)
        Squared distance from each True voxel centre to the nearest False voxel centre; 0 on
        False voxels.

    Raises
    ------
    XrmInputError
        A mask with no background (``border="open"`` and every voxel True), or another shape
        or dtype than stated.
    """
    m = _check(mask, border)
    if border == "open" and m.all():
        raise XrmInputError("the mask has no background voxel, so the distance transform is "
                            "undefined with border='open'; use border='background'")
    d2, _ = _transform(m, black=border == "background", with_feat=False)
    return d2


def edt(mask: Any, *, border: str = "open") -> np.ndarray:
    """Exact Euclidean distance transform in voxels (float32; ``sqrt`` of :func:`squared_edt`).

    Parameters and errors as :func:`squared_edt`.

    Returns
    -------
    ndarray of float32, shape (nz, ny, nx)
    """
    d = squared_edt(mask, border=border).astype(np.float32)
    return np.sqrt(d, out=d)


def nearest_background(mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance and flat index of a nearest False voxel, for every voxel.

    Parameters
    ----------
    mask : ndarray of bool (or 0/1 integers), shape (nz, ny, nx)
        At least one voxel must be False. Outside the array is not background.

    Returns
    -------
    d2 : ndarray of int32, shape (nz, ny, nx)
        Squared distance in voxels^2 (0 on False voxels).
    index : ndarray of int32, shape (nz, ny, nx)
        Flat (C-order) index of a nearest False voxel (the voxel itself where it is False);
        ``np.unravel_index(index, mask.shape)`` gives its (z, y, x). Where several are nearest,
        which one is returned is fixed but not SciPy's choice.
    """
    m = _check(mask, "open")
    if m.all():
        raise XrmInputError("nearest_background: the mask has no False voxel")
    if m.size >= 1 << 31:
        raise XrmInputError(f"nearest_background: {m.size} voxels; the flat indices are int32, "
                            "so split the volume into slabs of fewer than 2^31 voxels")
    return _transform(m, black=False, with_feat=True)
