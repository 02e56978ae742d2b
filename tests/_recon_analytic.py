"""Analytic line integrals of spheres and z-aligned cylinders, for reconstruction tests.

Independent of the reconstruction code: rays come from ``ScanGeometry.vectors()`` (source or
ray direction, detector centre, u, v) and chords are computed in closed form:
a sphere of radius R at perpendicular distance p from the ray has chord ``2 sqrt(R^2 - p^2)``;
a cylinder (axis along z, radius R, height H) clips the chord through its circular
cross-section with the slab ``|z - zc| <= H / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sphere:
    centre_mm: tuple[float, float, float]
    radius_mm: float
    mu_per_mm: float


@dataclass(frozen=True)
class Cylinder:
    centre_mm: tuple[float, float, float]
    radius_mm: float
    height_mm: float
    mu_per_mm: float


def rays(geometry, angles_deg=None, view_slice=slice(None)):
    """Ray origins and unit directions for every pixel: arrays (V, R, C, 3)."""
    vec = geometry.vectors(angles_deg)[view_slice]
    s, d, u, v = vec[:, 0:3], vec[:, 3:6], vec[:, 6:9], vec[:, 9:12]
    cc = np.arange(geometry.cols) - (geometry.cols - 1) / 2
    rr = np.arange(geometry.rows) - (geometry.rows - 1) / 2
    pix = (d[:, None, None, :] + cc[None, None, :, None] * u[:, None, None, :]
           + rr[None, :, None, None] * v[:, None, None, :])
    if geometry.beam == "cone":
        origin = np.broadcast_to(s[:, None, None, :], pix.shape)
        direc = pix - origin
    else:
        direc = np.broadcast_to(s[:, None, None, :], pix.shape)
        origin = pix - 100.0 * direc  # start well before the object
    direc = direc / np.linalg.norm(direc, axis=-1, keepdims=True)
    return origin, direc


def chord_sphere(origin, direc, sph: Sphere):
    c = np.asarray(sph.centre_mm)
    w = c - origin
    t = np.einsum("...k,...k->...", w, direc)
    p2 = np.einsum("...k,...k->...", w, w) - t * t
    return 2.0 * np.sqrt(np.clip(sph.radius_mm ** 2 - p2, 0.0, None))


def chord_cylinder(origin, direc, cyl: Cylinder):
    c = np.asarray(cyl.centre_mm)
    ox, oy, oz = (origin[..., k] - c[k] for k in range(3))
    dx, dy, dz = direc[..., 0], direc[..., 1], direc[..., 2]
    a = dx * dx + dy * dy
    b = 2 * (ox * dx + oy * dy)
    q = ox * ox + oy * oy - cyl.radius_mm ** 2
    disc = b * b - 4 * a * q
    ok = (disc > 0) & (a > 1e-15)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    a_safe = np.where(ok, a, 1.0)
    t1 = (-b - sq) / (2 * a_safe)
    t2 = (-b + sq) / (2 * a_safe)
    h = cyl.height_mm / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        dz_safe = np.where(np.abs(dz) > 1e-15, dz, 1e-15)
        t3 = (-h - oz) / dz_safe
        t4 = (h - oz) / dz_safe
    lo = np.maximum(t1, np.minimum(t3, t4))
    hi = np.minimum(t2, np.maximum(t3, t4))
    return np.where(ok, np.clip(hi - lo, 0.0, None), 0.0)


def line_integrals(geometry, objects, angles_deg=None, chunk=64):
    """Sum of mu * chord over objects for every pixel, shape (V, R, C), float64."""
    n_views = len(geometry.angles_deg if angles_deg is None else angles_deg)
    out = np.zeros((n_views, geometry.rows, geometry.cols))
    for v0 in range(0, n_views, chunk):
        sl = slice(v0, min(v0 + chunk, n_views))
        o, d = rays(geometry, angles_deg, sl)
        for ob in objects:
            f = chord_sphere if isinstance(ob, Sphere) else chord_cylinder
            out[sl] += ob.mu_per_mm * f(o, d, ob)
    return out


def path_lengths(geometry, obj, angles_deg=None, chunk=64):
    """Chord length (mm) of one object for every pixel, shape (V, R, C)."""
    n_views = len(geometry.angles_deg if angles_deg is None else angles_deg)
    out = np.zeros((n_views, geometry.rows, geometry.cols))
    f = chord_sphere if isinstance(obj, Sphere) else chord_cylinder
    for v0 in range(0, n_views, chunk):
        sl = slice(v0, min(v0 + chunk, n_views))
        o, d = rays(geometry, angles_deg, sl)
        out[sl] = f(o, d, obj)
    return out


def voxel_centres(vol_shape, voxel_size_um, origin_mm):
    """Coordinates (x, y, z) of voxel centres, each of shape vol_shape."""
    h = voxel_size_um / 1000.0
    nz, ny, nx = vol_shape
    z = origin_mm[2] + h * np.arange(nz)
    y = origin_mm[1] + h * np.arange(ny)
    x = origin_mm[0] + h * np.arange(nx)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return xx, yy, zz


def phantom_volume(objects, vol_shape, voxel_size_um, origin_mm):
    """Point-sampled truth: sum of the mu of the objects containing each voxel centre (as the line integrals add)."""
    xx, yy, zz = voxel_centres(vol_shape, voxel_size_um, origin_mm)
    vol = np.zeros(vol_shape)
    for ob in objects:
        c = ob.centre_mm
        if isinstance(ob, Sphere):
            m = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2 <= ob.radius_mm ** 2
        else:
            m = ((xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= ob.radius_mm ** 2) & (np.abs(zz - c[2]) <= ob.height_mm / 2)
        vol[m] += ob.mu_per_mm
    return vol
