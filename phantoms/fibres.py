"""Glass-fibre separator (Whatman GF/A class): straight fibres lying near the separator plane.

Fibres are capsules of diameter ``diameter_um`` and length ``length_um``. The plane is cut into
square tiles of ``tile_um``; each tile of the layer holds a number of fibres fixed by the
requested solid fraction (fractional part by a hashed draw), with centres, in-plane angles and
small tilts hashed from (tile, fibre number). Fibres may overlap each other, so the realised
solid fraction is slightly below the request (union of overlapping cylinders).
"""

from __future__ import annotations

import numpy as np

from phantoms import hashing

__all__ = ["fibre_capsules", "capsule_prims"]


def fibre_capsules(seed: int, stream: int, lo_mm, hi_mm, z_range_mm, *, diameter_um: float,
                   length_um: float, solid_fraction: float, tile_um: float = 200.0,
                   tilt_sd_deg: float = 8.0) -> dict[str, np.ndarray]:
    """Fibres that may reach the box [lo_mm, hi_mm] in the layer ``z_range_mm``.

    Returns
    -------
    dict
        ``a_mm``, ``b_mm`` (n, 3) end points; ``d_um`` (n,).
    """
    z0, z1 = z_range_mm
    if hi_mm[2] < z0 or lo_mm[2] > z1:
        return {"a_mm": np.zeros((0, 3)), "b_mm": np.zeros((0, 3)), "d_um": np.zeros(0)}
    t_mm = tile_um / 1000.0
    half = length_um / 2000.0
    i0 = np.floor((np.asarray(lo_mm[:2]) - half) / t_mm).astype(np.int64)
    i1 = np.floor((np.asarray(hi_mm[:2]) + half) / t_mm).astype(np.int64)
    per_tile = solid_fraction * t_mm ** 2 * (z1 - z0) / (np.pi / 4 * (diameter_um / 1000) ** 2
                                                          * (length_um / 1000))
    n_max = int(np.floor(per_tile)) + 1
    ix, iy, k = np.meshgrid(np.arange(i0[0], i1[0] + 1), np.arange(i0[1], i1[1] + 1),
                            np.arange(n_max), indexing="ij")
    ix, iy, k = ix.ravel(), iy.ravel(), k.ravel()
    extra = hashing.uniform(seed, stream, ix, iy, -1) < (per_tile - np.floor(per_tile))
    keep = (k < np.floor(per_tile)) | ((k == n_max - 1) & extra)
    ix, iy, k = ix[keep], iy[keep], k[keep]
    u = [hashing.uniform(seed, stream, ix, iy, k, j) for j in range(4)]
    cx = (ix + u[0]) * t_mm
    cy = (iy + u[1]) * t_mm
    cz = z0 + (z1 - z0) * u[2]
    ang = 2 * np.pi * u[3]
    tilt = np.deg2rad(tilt_sd_deg) * hashing.normal(seed, stream, ix, iy, k, 7)
    ax = np.stack([np.cos(ang) * np.cos(tilt), np.sin(ang) * np.cos(tilt), np.sin(tilt)], 1)
    c = np.stack([cx, cy, cz], 1)
    a, b = c - half * ax, c + half * ax
    r = diameter_um / 2000.0
    lo = np.asarray(lo_mm) - r
    hi = np.asarray(hi_mm) + r
    inb = np.all((np.maximum(a, b) >= lo) & (np.minimum(a, b) <= hi), axis=1)
    return {"a_mm": a[inb], "b_mm": b[inb], "d_um": np.full(int(inb.sum()), float(diameter_um))}


def capsule_prims(caps: dict[str, np.ndarray], grid) -> np.ndarray:
    """Kernel primitives (n, 12) for :func:`phantoms.kernels.paint_rounded_sheets`."""
    A = grid.to_index(caps["a_mm"])
    B = grid.to_index(caps["b_mm"])
    u = B - A
    length = np.linalg.norm(u, axis=1)
    u = u / np.maximum(length, 1e-12)[:, None]
    ref = np.where(np.abs(u[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    v = np.cross(u, ref)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    r = caps["d_um"] / 2 / grid.voxel_um
    return np.column_stack([(A + B) / 2, u, v, length / 2, np.zeros(len(r)), r]).astype(np.float64)
