"""Analytic macro shapes (can, cap, gasket, spacer, springs, layers, tabs) and their meshes.

Every primitive knows its bounding box (mm), tests voxel centres with vectorised numpy on
broadcast coordinate arrays ``X (1, 1, nx)``, ``Y (1, ny, 1)``, ``Z (nz, 1, 1)`` (mm), and
builds a closed triangle mesh for STL export. Shapes are painted in order, later ones
overwriting earlier ones (:func:`paint_primitives`), one z-slab at a time so memory stays
bounded for 1024^3 grids.
"""

from __future__ import annotations

import abc

from dataclasses import dataclass

import numpy as np

from phantoms.grid import GridSpec

__all__ = ["Primitive", "Cylinder", "Box", "WaveRing", "ConeShell", "RadialRod", "Sphere",
           "paint_primitives", "annulus_mesh"]

_SLAB_VOXELS = 1 << 23  # voxels per z-slab (8 M: ~100 MB of float64 temporaries)


class Primitive(abc.ABC):
    """A solid painted with one label."""

    label: int
    name: str
    instance_id: int = 0

    @abc.abstractmethod
    def bbox_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper (x, y, z) corners, mm."""

    @abc.abstractmethod
    def mask(self, X, Y, Z) -> np.ndarray:
        """Boolean mask of the points (X, Y, Z) inside the solid."""

    def paint(self, sub: np.ndarray, X, Y, Z) -> None:
        """Set ``sub`` (a view of the label slab) to ``label`` inside the shape."""
        sub[self.mask(X, Y, Z)] = self.label

    def mesh(self):
        """A closed trimesh.Trimesh in the sample frame (mm), or None."""
        return None


@dataclass
class Cylinder(Primitive):
    """Annular cylinder (disc when ``r_in_mm = 0``) along z.

    Attributes
    ----------
    r_in_mm, r_out_mm : float
        Inner and outer radius.
    z0_mm, z1_mm : float
        Bottom and top.
    cx_mm, cy_mm : float
        Axis position.
    """

    label: int
    name: str
    r_in_mm: float
    r_out_mm: float
    z0_mm: float
    z1_mm: float
    cx_mm: float = 0.0
    cy_mm: float = 0.0

    def bbox_mm(self):
        return (np.array([self.cx_mm - self.r_out_mm, self.cy_mm - self.r_out_mm, self.z0_mm]),
                np.array([self.cx_mm + self.r_out_mm, self.cy_mm + self.r_out_mm, self.z1_mm]))

    def mask(self, X, Y, Z):
        r2 = (X - self.cx_mm) ** 2 + (Y - self.cy_mm) ** 2
        m2 = (r2 < self.r_out_mm ** 2) & (r2 >= self.r_in_mm ** 2)
        mz = (Z >= self.z0_mm) & (Z < self.z1_mm)
        return m2 & mz

    def mesh(self):
        return annulus_mesh(self.r_in_mm, self.r_out_mm, self.z0_mm, self.z1_mm,
                            self.cx_mm, self.cy_mm)

    @property
    def volume_mm3(self) -> float:
        return np.pi * (self.r_out_mm ** 2 - self.r_in_mm ** 2) * (self.z1_mm - self.z0_mm)


@dataclass
class Box(Primitive):
    """Axis-aligned box [lo, hi] (x, y, z) mm."""

    label: int
    name: str
    lo_mm: tuple[float, float, float]
    hi_mm: tuple[float, float, float]

    def bbox_mm(self):
        return np.asarray(self.lo_mm, float), np.asarray(self.hi_mm, float)

    def mask(self, X, Y, Z):
        lo, hi = self.lo_mm, self.hi_mm
        return (((X >= lo[0]) & (X < hi[0])) & ((Y >= lo[1]) & (Y < hi[1]))
                & ((Z >= lo[2]) & (Z < hi[2])))

    def mesh(self):
        import trimesh

        lo, hi = np.asarray(self.lo_mm), np.asarray(self.hi_mm)
        return trimesh.creation.box(extents=hi - lo,
                                    transform=trimesh.transformations.translation_matrix(
                                        (lo + hi) / 2))


@dataclass
class Sphere(Primitive):
    label: int
    name: str
    center_mm: tuple[float, float, float]
    radius_mm: float

    def bbox_mm(self):
        c = np.asarray(self.center_mm, float)
        return c - self.radius_mm, c + self.radius_mm

    def mask(self, X, Y, Z):
        c = self.center_mm
        return (X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2 < self.radius_mm ** 2

    def mesh(self):
        import trimesh

        return trimesh.creation.icosphere(subdivisions=3, radius=self.radius_mm).apply_translation(
            self.center_mm)


@dataclass
class RadialRod(Primitive):
    """Flat-ended cylinder of radius ``radius_mm`` from ``p0_mm`` to ``p1_mm`` (any direction)."""

    label: int
    name: str
    p0_mm: tuple[float, float, float]
    p1_mm: tuple[float, float, float]
    radius_mm: float

    def bbox_mm(self):
        p0, p1 = np.asarray(self.p0_mm, float), np.asarray(self.p1_mm, float)
        return np.minimum(p0, p1) - self.radius_mm, np.maximum(p0, p1) + self.radius_mm

    def mask(self, X, Y, Z):
        p0, p1 = np.asarray(self.p0_mm, float), np.asarray(self.p1_mm, float)
        ax = p1 - p0
        length = np.linalg.norm(ax)
        ax = ax / length
        qx, qy, qz = X - p0[0], Y - p0[1], Z - p0[2]
        t = qx * ax[0] + qy * ax[1] + qz * ax[2]
        d2 = qx * qx + qy * qy + qz * qz - t * t
        return (t >= 0) & (t <= length) & (d2 < self.radius_mm ** 2)

    def mesh(self):
        import trimesh

        p0, p1 = np.asarray(self.p0_mm, float), np.asarray(self.p1_mm, float)
        return trimesh.creation.cylinder(radius=self.radius_mm, segment=np.stack([p0, p1]))


@dataclass
class WaveRing(Primitive):
    """Wave spring: an annular strip whose mid-surface is ``z_mid + A cos(n phi + phase)``."""

    label: int
    name: str
    r_in_mm: float
    r_out_mm: float
    z_mid_mm: float
    amplitude_mm: float
    thickness_mm: float
    n_waves: int = 3
    phase_rad: float = 0.0

    def bbox_mm(self):
        h = self.amplitude_mm + self.thickness_mm / 2
        return (np.array([-self.r_out_mm, -self.r_out_mm, self.z_mid_mm - h]),
                np.array([self.r_out_mm, self.r_out_mm, self.z_mid_mm + h]))

    def mask(self, X, Y, Z):
        r2 = X ** 2 + Y ** 2
        m2 = (r2 < self.r_out_mm ** 2) & (r2 >= self.r_in_mm ** 2)
        zc = self.z_mid_mm + self.amplitude_mm * np.cos(self.n_waves * np.arctan2(Y, X)
                                                        + self.phase_rad)
        return m2 & (np.abs(Z - zc) < self.thickness_mm / 2)

    def mesh(self):
        n = 360
        phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
        zc = self.z_mid_mm + self.amplitude_mm * np.cos(self.n_waves * phi + self.phase_rad)
        t = self.thickness_mm / 2
        return _ring_mesh(phi, np.full(n, self.r_in_mm), np.full(n, self.r_out_mm), zc - t,
                          zc + t)


@dataclass
class ConeShell(Primitive):
    """Conical spring: a shell of thickness ``thickness_mm`` (along z) from (r0, z0) to (r1, z1)."""

    label: int
    name: str
    r0_mm: float
    z0_mm: float
    r1_mm: float
    z1_mm: float
    thickness_mm: float

    def bbox_mm(self):
        r = max(self.r0_mm, self.r1_mm)
        t = self.thickness_mm / 2
        return (np.array([-r, -r, min(self.z0_mm, self.z1_mm) - t]),
                np.array([r, r, max(self.z0_mm, self.z1_mm) + t]))

    def mask(self, X, Y, Z):
        r = np.sqrt(X ** 2 + Y ** 2)
        lo, hi = min(self.r0_mm, self.r1_mm), max(self.r0_mm, self.r1_mm)
        zc = self.z0_mm + (r - self.r0_mm) * (self.z1_mm - self.z0_mm) / (self.r1_mm - self.r0_mm)
        return (r >= lo) & (r < hi) & (np.abs(Z - zc) < self.thickness_mm / 2)

    def mesh(self):
        import trimesh

        t = self.thickness_mm / 2
        prof = np.array([[self.r0_mm, self.z0_mm - t], [self.r1_mm, self.z1_mm - t],
                         [self.r1_mm, self.z1_mm + t], [self.r0_mm, self.z0_mm + t]])
        return trimesh.creation.revolve(prof, sections=96)


def _ring_mesh(phi, r_in, r_out, z_lo, z_hi):
    """Closed mesh of a ring with per-angle radii and heights (periodic in phi)."""
    import trimesh

    n = len(phi)
    c, s = np.cos(phi), np.sin(phi)
    rings = [(r_in, z_lo), (r_out, z_lo), (r_out, z_hi), (r_in, z_hi)]
    verts = np.concatenate([np.column_stack([r * c, r * s, z]) for r, z in rings])
    faces = []
    for a in range(4):
        b = (a + 1) % 4
        for i in range(n):
            j = (i + 1) % n
            p, q, r_, t = a * n + i, a * n + j, b * n + j, b * n + i
            faces += [[p, q, r_], [p, r_, t]]
    m = trimesh.Trimesh(verts, np.array(faces), process=True)
    trimesh.repair.fix_normals(m)
    return m


def annulus_mesh(r_in, r_out, z0, z1, cx=0.0, cy=0.0):
    """Closed mesh of an annular (or full, ``r_in = 0``) cylinder."""
    import trimesh

    if r_in <= 0:
        m = trimesh.creation.cylinder(radius=r_out, height=z1 - z0, sections=96)
    else:
        m = trimesh.creation.annulus(r_min=r_in, r_max=r_out, height=z1 - z0, sections=96)
    return m.apply_translation((cx, cy, (z0 + z1) / 2))


def paint_primitives(labels: np.ndarray, grid: GridSpec, prims, instances=None) -> None:
    """Paint primitives in order into ``labels`` (nz, ny, nx), slab by slab along z.

    Each primitive is evaluated only on the voxels of its bounding box. Primitives with a
    non-zero ``instance_id`` also write it into ``instances`` (when given).
    """
    nz, ny, nx = grid.shape_zyx
    step = max(1, _SLAB_VOXELS // max(ny * nx, 1))
    xs, ys, zs = grid.axis_mm("x"), grid.axis_mm("y"), grid.axis_mm("z")
    boxes = [(p, grid.index_range(*p.bbox_mm())) for p in prims]
    for z0 in range(0, nz, step):
        z1 = min(nz, z0 + step)
        for p, rng in boxes:
            if rng is None:
                continue
            zs_, ys_, xs_ = rng
            a, b = max(z0, zs_.start), min(z1, zs_.stop)
            if a >= b:
                continue
            sub = labels[a:b, ys_, xs_]
            X, Y, Z = xs[xs_][None, None, :], ys[ys_][None, :, None], zs[a:b][:, None, None]
            iid = getattr(p, "instance_id", 0)
            if iid and instances is not None:
                m = p.mask(X, Y, Z)
                sub[m] = p.label
                instances[a:b, ys_, xs_][m] = iid
            else:
                p.paint(sub, X, Y, Z)
