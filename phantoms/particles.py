"""Non-overlapping spheres (active-material particles, slurry voids) on a hard-core lattice.

Space is cut into cubic cells of edge ``cell_um`` anchored at the sample-frame origin (each row
of cells shifted along x, and each layer along y, by a hashed fraction of a cell). A cell
holds at most one sphere (probability ``occupancy``), whose diameter is drawn from a lognormal
distribution truncated at ``cap_um`` (< cell) and whose centre is uniform in the part of the cell
that keeps the sphere inside it: spheres never overlap, and every draw is a hash of the cell
index, so any region is generated identically. The lognormal location is solved so that the
*truncated* distribution has the requested mean exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from phantoms import hashing

__all__ = ["SphereSpec", "sphere_spec", "lattice_spheres"]


class SphereSpec:
    """Diameter distribution and lattice of a sphere population.

    Parameters
    ----------
    mean_um, cv : float
        Requested mean diameter and coefficient of variation.
    cell_um : float
        Lattice cell edge (>= cap).
    cap_um : float
        Largest diameter.
    occupancy : float
        Probability that a cell holds a sphere.
    """

    def __init__(self, mean_um: float, cv: float, cell_um: float, cap_um: float, occupancy: float):
        self.mean_um, self.cv = float(mean_um), float(cv)
        self.cell_um, self.cap_um, self.occupancy = float(cell_um), float(cap_um), float(occupancy)
        self.sigma = float(np.sqrt(np.log1p(self.cv ** 2)))
        mu = np.log(self.mean_um) - self.sigma ** 2 / 2
        for _ in range(60):  # fixed point: truncated mean == requested mean
            mu += np.log(self.mean_um) - np.log(self.truncated_mean(mu))
        self.mu = float(mu)

    def _pcap(self, mu):
        return 0.5 * (1 + special.erf((np.log(self.cap_um) - mu) / (self.sigma * np.sqrt(2))))

    def truncated_mean(self, mu: float) -> float:
        s = self.sigma
        num = 0.5 * (1 + special.erf((np.log(self.cap_um) - mu - s * s) / (s * np.sqrt(2))))
        return float(np.exp(mu + s * s / 2) * num / self._pcap(mu))

    def diameters(self, u: np.ndarray) -> np.ndarray:
        """Quantile function of the truncated lognormal (um), u in [0, 1)."""
        p = np.clip(u * self._pcap(self.mu), 1e-12, 1 - 1e-12)
        return np.exp(self.mu + self.sigma * np.sqrt(2) * special.erfinv(2 * p - 1))

    def volume_fraction(self) -> float:
        """Expected solid volume fraction (Monte Carlo over the quantiles)."""
        d = self.diameters((np.arange(4000) + 0.5) / 4000)
        return float(self.occupancy * np.mean(np.pi / 6 * d ** 3) / self.cell_um ** 3)


def sphere_spec(mean_um: float, cv: float, *, volume_fraction: float | None = None,
                cell_factor: float | None = None) -> SphereSpec:
    """A sphere population: dense (one per cell, ``cell = cell_factor * mean``) or sparse
    (cells of 2.5 means, occupancy set by ``volume_fraction``)."""
    cap_factor = 1.0 + 3.0 * cv
    if volume_fraction is None:
        cell = (cell_factor or cap_factor * 1.05) * mean_um
        return SphereSpec(mean_um, cv, cell, min(cap_factor * mean_um, 0.97 * cell), 1.0)
    cell = max(2.5, cap_factor * 1.1) * mean_um
    spec = SphereSpec(mean_um, cv, cell, cap_factor * mean_um, 1.0)
    occ = volume_fraction / spec.volume_fraction()
    if occ > 1.0:
        cell = cell * occ ** (-1 / 3) if cell * occ ** (-1 / 3) > spec.cap_um * 1.02 else cell
        spec = SphereSpec(mean_um, cv, cell, min(cap_factor * mean_um, 0.98 * cell), 1.0)
        occ = min(1.0, volume_fraction / spec.volume_fraction())
    return SphereSpec(mean_um, cv, cell, spec.cap_um, occ)


def lattice_spheres(spec: SphereSpec, seed: int, stream: int, lo_mm, hi_mm,
                    z_range_mm: tuple[float, float] | None = None, *,
                    inside_z: bool = False) -> dict[str, np.ndarray]:
    """Spheres whose centres lie in the box [lo_mm, hi_mm] grown by one cell.

    Parameters
    ----------
    z_range_mm : (z0, z1), optional
        Layer in which centres must lie.
    inside_z : bool
        Keep only spheres entirely inside the layer.

    Returns
    -------
    dict
        ``center_mm`` (n, 3), ``d_um`` (n,), ``key`` (n, 3) int64 cell indices,
        ``complete`` (n,) bool: entirely inside the layer.
    """
    c_mm = spec.cell_um / 1000.0
    lo = np.array(lo_mm, float)  # copies: the caller's box is not modified
    hi = np.array(hi_mm, float)
    if z_range_mm is not None:
        lo[2] = max(lo[2], z_range_mm[0])
        hi[2] = min(hi[2], z_range_mm[1])
        if hi[2] < lo[2]:
            return _empty()
    i0 = np.floor(lo / c_mm).astype(np.int64) - 2
    i1 = np.floor(hi / c_mm).astype(np.int64) + 1
    n = i1 - i0 + 1
    if np.prod(n.astype(float)) > 5e7:
        raise MemoryError("too many sphere cells requested")
    ix, iy, iz = np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(i0, i1)], indexing="ij")
    ix, iy, iz = ix.ravel(), iy.ravel(), iz.ravel()
    occ = hashing.uniform(seed, stream, ix, iy, iz, 0) < spec.occupancy
    ix, iy, iz = ix[occ], iy[occ], iz[occ]
    d = spec.diameters(hashing.uniform(seed, stream, ix, iy, iz, 1))
    r_mm = d / 2000.0
    free = c_mm - 2 * r_mm
    # rows of cells (fixed iy, iz) are shifted along x and layers (fixed iz) along y by hashed
    # fractions of a cell: cells stay disjoint, the lattice no longer shows in slices
    sx = hashing.uniform(seed, stream, -7, iy, iz)
    sy = hashing.uniform(seed, stream, -8, iz)
    corner = np.stack([(ix + sx) * c_mm, (iy + sy) * c_mm, iz * c_mm], 1)
    cen = corner + r_mm[:, None] + free[:, None] * np.stack(
        [hashing.uniform(seed, stream, ix, iy, iz, 2 + a) for a in range(3)], 1)
    keep = np.all((cen >= lo - c_mm) & (cen <= hi + c_mm), axis=1)
    complete = np.ones(len(d), bool)
    if z_range_mm is not None:
        zc = cen[:, 2]
        keep &= (zc >= z_range_mm[0]) & (zc <= z_range_mm[1])
        complete = (zc - r_mm >= z_range_mm[0]) & (zc + r_mm <= z_range_mm[1])
        if inside_z:
            keep &= complete
    return {"center_mm": cen[keep], "d_um": d[keep],
            "key": np.stack([ix, iy, iz], 1)[keep], "complete": complete[keep]}


def _empty():
    return {"center_mm": np.zeros((0, 3)), "d_um": np.zeros(0), "key": np.zeros((0, 3), np.int64),
            "complete": np.zeros(0, bool)}


def sphere_prims(spheres: dict[str, np.ndarray], grid) -> np.ndarray:
    """Kernel primitives (n, 12) for :func:`phantoms.kernels.paint_rounded_sheets` (balls)."""
    n = len(spheres["d_um"])
    c = grid.to_index(spheres["center_mm"]) if n else np.zeros((0, 3))
    prim = np.zeros((n, 12), np.float64)
    prim[:, :3] = c
    prim[:, 3] = 1.0
    prim[:, 7] = 1.0
    prim[:, 11] = spheres["d_um"] / 2 / grid.voxel_um
    return prim
