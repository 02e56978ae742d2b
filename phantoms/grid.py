"""Where a rasterisation lands: voxel size, origin and shape of a grid in the sample frame.

Conventions (``shared/DESIGN.md``): coordinates are (x, y, z) in mm; arrays are ``[z, y, x]``;
``origin_mm`` is the centre of voxel ``[0, 0, 0]``. Phantom grids are isotropic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from twin.errors import XrmInputError, require_positive

__all__ = ["GridSpec", "voi_grid", "available_bytes", "check_fits"]


@dataclass(frozen=True)
class GridSpec:
    """An isotropic voxel grid.

    Attributes
    ----------
    voxel_um : float
        Edge of a voxel, um.
    origin_mm : (float, float, float)
        (x, y, z) of the centre of voxel [0, 0, 0], mm.
    shape_zyx : (int, int, int)
        (nz, ny, nx).
    """

    voxel_um: float
    origin_mm: tuple[float, float, float]
    shape_zyx: tuple[int, int, int]

    @property
    def voxel_mm(self) -> float:
        return self.voxel_um / 1000.0

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape_zyx, dtype=np.int64))

    def axis_mm(self, axis: str) -> np.ndarray:
        """Voxel-centre coordinates along ``axis`` ("x", "y" or "z"), mm, float64."""
        i = "xyz".index(axis)
        n = self.shape_zyx[2 - i]
        return self.origin_mm[i] + self.voxel_mm * np.arange(n, dtype=np.float64)

    def box_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper (x, y, z) voxel-edge corners, mm."""
        lo = np.asarray(self.origin_mm) - self.voxel_mm / 2
        return lo, lo + self.voxel_mm * np.array(self.shape_zyx[::-1], float)

    def to_index(self, xyz_mm: np.ndarray) -> np.ndarray:
        """(..., 3) points in mm -> fractional (i, j, k) = (x, y, z) voxel indices."""
        return (np.asarray(xyz_mm, float) - np.asarray(self.origin_mm)) / self.voxel_mm

    def index_range(self, lo_mm, hi_mm) -> tuple[slice, slice, slice] | None:
        """Slices ``[z, y, x]`` of the voxels whose centres lie in the box [lo, hi] (mm).

        None when the box misses the grid.
        """
        lo_i = np.ceil(self.to_index(lo_mm) - 1e-9).astype(np.int64)
        hi_i = np.floor(self.to_index(hi_mm) + 1e-9).astype(np.int64)
        n = np.array(self.shape_zyx[::-1])
        lo_i = np.maximum(lo_i, 0)
        hi_i = np.minimum(hi_i, n - 1)
        if np.any(hi_i < lo_i):
            return None
        return (slice(int(lo_i[2]), int(hi_i[2]) + 1), slice(int(lo_i[1]), int(hi_i[1]) + 1),
                slice(int(lo_i[0]), int(hi_i[0]) + 1))


def voi_grid(voxel_size_um, bounds_mm, center_mm=None, size_mm=None, *, margin_voxels: int = 1
             ) -> GridSpec:
    """The grid of a rasterisation request.

    Parameters
    ----------
    voxel_size_um : float
        Isotropic voxel edge, um (a triple of equal values is accepted).
    bounds_mm : ((xmin, ymin, zmin), (xmax, ymax, zmax))
        The cell's bounding box.
    center_mm, size_mm : (x, y, z) or None
        The VOI. None for both: the whole cell plus ``margin_voxels`` of air on every side.

    Raises
    ------
    XrmInputError
        Bad numbers, only one of centre/size, or a VOI whose centre is outside the cell or
        that does not overlap it.
    """
    v = np.atleast_1d(np.asarray(voxel_size_um, dtype=float)).ravel()
    if v.size == 3 and np.allclose(v, v[0]):
        v = v[:1]
    if v.size != 1:
        raise XrmInputError(f"phantoms are rasterised on isotropic grids; voxel_size_um must be "
                            f"one number, got {voxel_size_um!r}")
    vox = require_positive("voxel_size_um", v[0])
    vmm = vox / 1000.0
    lo_b, hi_b = (np.asarray(b, float) for b in bounds_mm)
    if center_mm is None and size_mm is None:
        ext = hi_b - lo_b
        n = np.ceil(ext / vmm - 1e-9).astype(np.int64) + 2 * margin_voxels
        center = (lo_b + hi_b) / 2
    elif center_mm is None or size_mm is None:
        raise XrmInputError("a VOI needs both center_mm and size_mm (x, y, z), or neither for "
                            "the whole cell")
    else:
        center = _triple("center_mm", center_mm)
        size = _triple("size_mm", size_mm)
        for s in size:
            require_positive("VOI size_mm", s)
        if np.any(center < lo_b) or np.any(center > hi_b):
            raise XrmInputError(
                f"VOI centre {tuple(center.round(4))} mm is outside the cell, whose bounds are "
                f"{tuple(lo_b.round(4))} to {tuple(hi_b.round(4))} mm (x, y, z)")
        n = np.maximum(np.rint(size / vmm).astype(np.int64), 1)
    origin = center - (n - 1) / 2.0 * vmm
    return GridSpec(vox, tuple(float(o) for o in origin), (int(n[2]), int(n[1]), int(n[0])))


def _triple(name: str, value) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        raise XrmInputError(f"{name} must be three numbers (x, y, z), got {value!r}") from None
    if a.size != 3 or not np.all(np.isfinite(a)):
        raise XrmInputError(f"{name} must be three finite numbers (x, y, z), got {value!r}")
    return a


def available_bytes() -> int:
    """Memory this process may use: ``XRM_TWIN_MAX_BYTES`` or 80 % of MemAvailable."""
    env = os.environ.get("XRM_TWIN_MAX_BYTES")
    if env:
        return int(float(env))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(0.8 * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return 8 << 30


def check_fits(n_bytes: int, grid: GridSpec, what: str) -> None:
    """Raise :class:`XrmInputError` naming the sizes when ``n_bytes`` exceeds the budget."""
    budget = available_bytes()
    if n_bytes > budget:
        nz, ny, nx = grid.shape_zyx
        raise XrmInputError(
            f"{what} at {grid.voxel_um:g} um voxels needs a {nx} x {ny} x {nz} grid "
            f"({grid.n_voxels / 1e9:.2f} G voxels, {n_bytes / 2**30:.1f} GiB) but only "
            f"{budget / 2**30:.1f} GiB are available; use a larger voxel or a smaller VOI")
