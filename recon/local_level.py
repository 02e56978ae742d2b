"""The local grey level of a phase: a mask-normalised Gaussian mean, in one volume of memory.

The defect detectors compare a voxel with the level of the phase around it (the host
electrode's grey, which drifts with cupping and composition): with ``G`` a Gaussian of
``sigma_vox``,

    level = G * (m v) / G * m          where G * m > 0.05, ``fill`` elsewhere

(``m`` the mask). Written out, that holds two float32 volumes (numerator and denominator)
besides the result. Here the numerator is filtered in the result's own array (the z pass
in blocks of rows, the y and x passes in blocks of planes, which are independent after the
z pass) and the denominator a slab of planes at a time (its z pass column block by column
block from the mask's planes with a halo of the Gaussian's radius), so the result is
bit-identical to :func:`scipy.ndimage.gaussian_filter` on whole volumes while at most one slab
is held beside it. The blocks of each pass are independent and go to the host's threads
(:func:`twin.runtime.host_threads`; one block per thread in flight). Where only a box is wanted (the level around a
detection), the same is computed on the box grown by the Gaussian's radius.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from recon.slabs import gaussian_filter1d, host_threads_for, run_ranges

__all__ = ["masked_gaussian_mean"]

#: voxels of one block of the numerator's passes (a float32 block of 16 MiB; an eighth of
#: the volume where that is less)
_BLOCK_VOXELS = 1 << 22
#: the denominator's slabs: an eighth of the planes (the halo is carried by column blocks only)
_SLABS = 8
#: scipy.ndimage's default truncation of the Gaussian (radius = int(truncate sigma + 0.5))
_TRUNCATE = 4.0
#: the normalising weight below which a voxel is too far from the mask to have a level
MIN_WEIGHT = 0.05


def gaussian_radius_vox(sigma_vox: float) -> int:
    """Reach of scipy.ndimage's Gaussian of ``sigma_vox`` (voxels), at its default truncation."""
    return int(_TRUNCATE * float(sigma_vox) + 0.5)


def masked_gaussian_mean(values: np.ndarray, mask: np.ndarray, sigma_vox: float, *,
                         fill: float, box: tuple[slice, slice, slice] | None = None) -> np.ndarray:
    """Gaussian mean of ``values`` over ``mask`` at every voxel (see module doc).

    Parameters
    ----------
    values : ndarray of float32, shape (nz, ny, nx)
    mask : ndarray of bool, same shape
    sigma_vox : float
        Gaussian width (voxels), the same on every axis; boundaries reflect (scipy's default).
    fill : float
        The level where the normalising weight ``G * m`` is at most :data:`MIN_WEIGHT`.
    box : tuple of 3 slices (step 1), optional
        Only this box of the result (from the box grown by the Gaussian's radius).

    Returns
    -------
    ndarray of float32, shape (nz, ny, nx), or the box's shape
    """
    v = np.asarray(values, np.float32)
    m = np.asarray(mask, bool)
    if v.shape != m.shape or v.ndim != 3:
        raise ValueError(f"values {v.shape} and mask {m.shape} must be the same 3-D shape")
    if box is not None:
        r = gaussian_radius_vox(sigma_vox)
        box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, v.shape))
        grown = tuple(slice(max(s.start - r, 0), min(s.stop + r, n)) for s, n in zip(box, v.shape))
        inner = tuple(slice(s.start - g.start, s.stop - g.start) for s, g in zip(box, grown))
        return masked_gaussian_mean(v[grown], m[grown], sigma_vox, fill=fill)[inner].copy()
    nz, ny, nx = v.shape
    sigma = float(sigma_vox)
    out = np.empty(v.shape, np.float32)
    threads = host_threads_for(v.size)
    # blocks of at most an eighth of the volume, so that small volumes block too
    block_voxels = min(_BLOCK_VOXELS, max(1, v.size // 8))

    def ranges(n: int, step: int) -> list[tuple[int, int]]:
        return [(i, min(i + step, n)) for i in range(0, n, step)]

    # numerator, z pass: blocks of rows (whole z columns)
    def numerator_z(y0: int, y1: int) -> None:
        block = np.where(m[:, y0:y1], v[:, y0:y1], np.float32(0)).astype(np.float32, copy=False)
        ndi.gaussian_filter1d(block, sigma, axis=0, output=out[:, y0:y1], truncate=_TRUNCATE)

    run_ranges(numerator_z, ranges(ny, max(1, block_voxels // max(1, nz * nx))), threads)

    # numerator, y and x passes: blocks of planes (independent after the z pass)
    def numerator_yx(z0: int, z1: int) -> None:
        t = np.empty((z1 - z0, ny, nx), np.float32)
        ndi.gaussian_filter1d(out[z0:z1], sigma, axis=1, output=t, truncate=_TRUNCATE)
        ndi.gaussian_filter1d(t, sigma, axis=2, output=out[z0:z1], truncate=_TRUNCATE)

    run_ranges(numerator_yx, ranges(nz, max(1, block_voxels // max(1, ny * nx))), threads)
    # the denominator, a slab of planes at a time: its z pass column block by column block
    # from the mask's planes with a halo of the radius (only the block carries the halo), then
    # the y and x passes in the slab; then the quotient
    radius = gaussian_radius_vox(sigma)
    planes = max(1, -(-nz // _SLABS))
    w_slab = np.empty((min(planes, nz), ny, nx), np.float32)
    fill32 = np.float32(fill)
    for z0 in range(0, nz, planes):
        z1 = min(z0 + planes, nz)
        a, b = max(z0 - radius, 0), min(z1 + radius, nz)
        w = w_slab[:z1 - z0]

        def denominator_z(y0: int, y1: int, a=a, b=b, z0=z0, z1=z1, w=w) -> None:
            col = m[a:b, y0:y1].astype(np.float32)
            ndi.gaussian_filter1d(col, sigma, axis=0, output=col, truncate=_TRUNCATE)
            w[:, y0:y1] = col[z0 - a:z1 - a]

        run_ranges(denominator_z, ranges(ny, max(1, block_voxels // max(1, (b - a) * nx))), threads)
        gaussian_filter1d(w, sigma, 1, output=w, truncate=_TRUNCATE, threads=threads)
        gaussian_filter1d(w, sigma, 2, output=w, truncate=_TRUNCATE, threads=threads)
        far = w <= MIN_WEIGHT
        np.maximum(w, np.float32(1e-6), out=w)
        out[z0:z1] /= w
        out[z0:z1][far] = fill32
        del far
    del w_slab
    return out
