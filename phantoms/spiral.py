"""Archimedean spiral winding (jelly roll) of a cylindrical cell.

The winding is a band of constant radial pitch ``p`` wound from the core radius ``r0``:
a point at polar (r, phi), phi in [0, 2 pi), has

    u = r - r0 - p * phi / (2 pi),   turn k = floor(u / p),   offset t = u - k p  in [0, p)

and unrolled angle ``theta = 2 pi k + phi``. The point belongs to the winding when
0 <= theta <= theta_end; the layer is then the one whose [t_lo, t_hi) holds t. Layer
thicknesses are radial; the normal thickness is smaller by cos(atan(p / (2 pi r))), 1.5 % at
r = 1 mm and 0.1 % at r = 4 mm for p = 1.1 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Spiral", "band_mesh"]


@dataclass(frozen=True)
class Spiral:
    """Spiral geometry.

    Attributes
    ----------
    r0_mm, pitch_mm : float
        Core radius (inner edge at theta = 0) and radial pitch (one layer set).
    theta_end : float
        Unrolled angle of the end of the winding, radians.
    z0_mm, z1_mm : float
        Axial extent.
    layers : tuple of (t_lo_mm, t_hi_mm, label)
        Layers across the pitch, covering [0, pitch).
    """

    r0_mm: float
    pitch_mm: float
    theta_end: float
    z0_mm: float
    z1_mm: float
    layers: tuple[tuple[float, float, int], ...]

    @property
    def r_max_mm(self) -> float:
        return self.r0_mm + self.pitch_mm * (self.theta_end / (2 * np.pi) + 1)

    def coords(self, X: np.ndarray, Y: np.ndarray):
        """Unrolled angle theta (rad), offset t (mm) and a validity mask, broadcast of X, Y."""
        r = np.sqrt(X * X + Y * Y)
        phi = np.mod(np.arctan2(Y, X), 2 * np.pi)
        u = r - self.r0_mm - self.pitch_mm * phi / (2 * np.pi)
        k = np.floor(u / self.pitch_mm)
        t = u - k * self.pitch_mm
        theta = 2 * np.pi * k + phi
        valid = (k >= 0) & (theta <= self.theta_end)
        return theta, t, valid

    def label_map(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """uint8 labels of the winding on an (ny, nx) grid (0 outside the winding)."""
        _, t, valid = self.coords(X, Y)
        out = np.zeros(np.broadcast(X, Y).shape, np.uint8)
        for lo, hi, lab in self.layers:
            out[valid & (t >= lo) & (t < hi)] = lab
        return out

    def radius_at(self, theta: float, t_mm: float) -> float:
        """Radius of offset ``t_mm`` at unrolled angle ``theta``."""
        return self.r0_mm + self.pitch_mm * theta / (2 * np.pi) + t_mm

    def layer_meshes(self):
        """{label: [trimesh]} one extruded band per layer."""
        out: dict[int, list] = {}
        theta = np.linspace(0.0, self.theta_end, max(64, int(self.theta_end / (2 * np.pi) * 128)))
        base = self.r0_mm + self.pitch_mm * theta / (2 * np.pi)
        for lo, hi, lab in self.layers:
            out.setdefault(lab, []).append(band_mesh(theta, base + lo, base + hi, self.z0_mm,
                                                     self.z1_mm))
        return out


def band_mesh(theta, r_in, r_out, z0, z1):
    """Closed mesh of the region between two curves r_in(theta) < r_out(theta), z in [z0, z1]."""
    import trimesh

    n = len(theta)
    c, s = np.cos(theta), np.sin(theta)
    rings = [(r_in, z0), (r_out, z0), (r_out, z1), (r_in, z1)]
    verts = np.concatenate([np.column_stack([r * c, r * s, np.full(n, z)]) for r, z in rings])
    faces = []
    for a in range(4):
        b = (a + 1) % 4
        for i in range(n - 1):
            p, q, r_, t = a * n + i, a * n + i + 1, b * n + i + 1, b * n + i
            faces += [[p, q, r_], [p, r_, t]]
    for end in (0, n - 1):  # end caps
        idx = [a * n + end for a in range(4)]
        faces += [[idx[0], idx[1], idx[2]], [idx[0], idx[2], idx[3]]]
    m = trimesh.Trimesh(verts, np.array(faces), process=True)
    trimesh.repair.fix_normals(m)
    return m
