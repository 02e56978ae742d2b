"""Meshes for the projector: loading and checking STL/PLY/OBJ parts, primitives, nesting.

A part is a closed, consistently wound triangle surface with outward normals. We check that
each file is watertight and consistently wound, and that it does not overlap itself (a
sampled generalised winding number above 1 means it does); ``repair = true`` lets trimesh
fix what it can first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.errors import XrmInputError, require_positive, unknown
from twin.materials import Material

PRIMITIVES = ("box", "sphere", "cylinder", "tube")


@dataclass(frozen=True)
class MeshPart:
    """A closed surface filled with one material.

    Attributes
    ----------
    name : str
    material : Material
    triangles : ndarray, shape (F, 3, 3)
        Vertex coordinates in the sample frame (x, y, z), mm; outward winding.
    priority : int or None
        Where parts nest, the inner part replaces the outer one; a stated priority is
        required only to accept parts that touch or overlap partially (refused otherwise).
    """

    name: str
    material: Material
    triangles: np.ndarray
    priority: int | None = None

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        t = self.triangles.reshape(-1, 3)
        return t.min(axis=0), t.max(axis=0)


def winding_number(points: np.ndarray, triangles: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Generalised winding number of ``points`` (P, 3) w.r.t. a closed surface (F, 3, 3).

    1 inside, 0 outside a closed outward-wound surface; 2 where it overlaps itself.
    Van Oosterom & Strackee solid angles, summed and divided by 4 pi.
    """
    pts = np.asarray(points, float)
    out = np.empty(len(pts))
    for s in range(0, len(pts), chunk):
        p = pts[s:s + chunk, None, None, :]
        v = triangles[None, :, :, :] - p  # (P, F, 3, 3)
        a, b, c = v[:, :, 0], v[:, :, 1], v[:, :, 2]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        num = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        den = (la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc
               + np.einsum("pfi,pfi->pf", b, c) * la + np.einsum("pfi,pfi->pf", c, a) * lb)
        out[s:s + chunk] = np.arctan2(num, den).sum(axis=1) / (2 * np.pi)
    return out


def _sample_points(tri: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Points slightly inside the surface near random triangle centres."""
    idx = rng.choice(len(tri), size=min(n, len(tri)), replace=False)
    t = tri[idx]
    cent = t.mean(axis=1)
    nrm = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-30
    size = np.linalg.norm(tri.reshape(-1, 3).max(0) - tri.reshape(-1, 3).min(0))
    return cent - nrm * 1e-4 * size


def load_mesh_file(path: str | Path, *, repair: bool = False, scale_to_mm: float = 1.0) -> np.ndarray:
    """Read a mesh file and return checked triangles (F, 3, 3) in mm.

    Raises
    ------
    XrmInputError
        Unreadable file, not watertight, inconsistent winding, or self-overlapping; the
        message names the file and suggests ``repair = true``.
    """
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise XrmInputError(f"mesh file {str(p)!r} does not exist")
    try:
        mesh = trimesh.load(p, force="mesh", process=True)
    except Exception as exc:
        raise XrmInputError(f"cannot read mesh file {str(p)!r}: {exc}") from None
    if repair:
        trimesh.repair.fix_normals(mesh)
        trimesh.repair.fill_holes(mesh)
        mesh.merge_vertices()
        mesh.update_faces(mesh.nondegenerate_faces())
    if len(mesh.faces) == 0:
        raise XrmInputError(f"mesh file {str(p)!r} has no triangles")
    if not mesh.is_watertight:
        raise XrmInputError(f"mesh {str(p)!r} is not watertight (it has holes or open edges); "
                            "fix it or set repair = true to let trimesh try")
    if not mesh.is_winding_consistent:
        raise XrmInputError(f"mesh {str(p)!r} has inconsistent triangle winding; "
                            "set repair = true to let trimesh fix the normals")
    if mesh.volume < 0:
        mesh.invert()
    tri = np.asarray(mesh.triangles, float) * scale_to_mm
    check_not_self_overlapping(tri, str(p))
    return tri


def check_not_self_overlapping(tri: np.ndarray, name: str, n_samples: int = 64) -> None:
    """Refuse a surface that encloses some region twice (winding number ~ 2)."""
    rng = np.random.default_rng(0)
    w = winding_number(_sample_points(tri, n_samples, rng), tri)
    if np.any(w > 1.5) or np.any(w < -0.5):
        raise XrmInputError(f"mesh {name!r} is self-intersecting (part of it encloses a region "
                            "twice); fix it or set repair = true")


def primitive_triangles(shape: str, params: dict, *, sections: int = 512,
                        subdivisions: int = 5) -> np.ndarray:
    """Triangles (F, 3, 3) of a primitive; dimensions in mm, axis along z unless ``axis`` given.

    Keys: box ``center_mm``, ``size_mm``; sphere ``center_mm``, ``radius_mm``; cylinder
    ``center_mm``, ``radius_mm``, ``height_mm``; tube also ``inner_radius_mm``.
    ``axis`` = "x" | "y" | "z" (default "z").
    """
    import trimesh

    if shape not in PRIMITIVES:
        raise unknown("shape", shape, PRIMITIVES + ("mesh",))
    center = np.asarray(params.get("center_mm", (0.0, 0.0, 0.0)), float)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise XrmInputError(f"center_mm of a {shape} must be 3 finite numbers, got {params.get('center_mm')!r}")
    if shape == "box":
        size = np.asarray(params.get("size_mm"), float)
        if size.shape != (3,) or np.any(~np.isfinite(size)) or np.any(size <= 0):
            raise XrmInputError(f"size_mm of a box must be 3 positive numbers, got {params.get('size_mm')!r}")
        m = trimesh.creation.box(extents=size)
    elif shape == "sphere":
        r = require_positive("radius_mm", params.get("radius_mm"))
        m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=r)
    else:
        r = require_positive("radius_mm", params.get("radius_mm"))
        h = require_positive("height_mm", params.get("height_mm"))
        if shape == "cylinder":
            m = trimesh.creation.cylinder(radius=r, height=h, sections=sections)
        else:
            ri = require_positive("inner_radius_mm", params.get("inner_radius_mm"))
            if ri >= r:
                raise XrmInputError(f"tube inner_radius_mm ({ri}) must be < radius_mm ({r})")
            m = trimesh.creation.annulus(r_min=ri, r_max=r, height=h, sections=sections)
        axis = params.get("axis", "z")
        if axis not in ("x", "y", "z"):
            raise unknown("axis", axis, ("x", "y", "z"))
        if axis == "x":
            m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
        elif axis == "y":
            m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    if m.volume < 0:
        m.invert()
    return np.asarray(m.triangles, float) + center


def nesting(parts: list[MeshPart]) -> np.ndarray:
    """Containment matrix ``C[p, q] = True`` if part q lies inside part p.

    Raises XrmInputError for parts that overlap partially (neither inside the other nor
    disjoint) unless both state a ``priority``; such parts are not supported by the
    sign-sum tracer and are refused with their names.
    """
    n = len(parts)
    inside = np.zeros((n, n), bool)
    rng = np.random.default_rng(1)
    samples = [_sample_points(p.triangles, 48, rng) for p in parts]
    for p in range(n):
        lo_p, hi_p = parts[p].bounds_mm
        for q in range(n):
            if p == q:
                continue
            lo_q, hi_q = parts[q].bounds_mm
            if np.any(hi_q < lo_p) or np.any(lo_q > hi_p):
                continue
            w = winding_number(samples[q], parts[p].triangles)
            frac = np.mean(w > 0.5)
            if frac == 1.0:
                inside[p, q] = True
            elif frac > 0.0:
                raise XrmInputError(
                    f"parts {parts[q].name!r} and {parts[p].name!r} overlap partially; parts must be "
                    "disjoint or nested (an inner part replaces the outer one's material)")
    both = inside & inside.T
    if np.any(both):
        p, q = np.argwhere(both)[0]
        pr_p, pr_q = parts[p].priority, parts[q].priority
        if pr_p is None or pr_q is None or pr_p == pr_q:
            raise XrmInputError(
                f"parts {parts[p].name!r} and {parts[q].name!r} occupy the same space; "
                "state a different 'priority' for each (the higher one wins)")
        # the higher priority counts as the inner part
        for a, b in np.argwhere(both):
            if parts[a].priority > parts[b].priority:
                inside[a, b] = False
            else:
                inside[b, a] = False
    return inside


def material_matrix(parts: list[MeshPart], slots: list[Material]) -> np.ndarray:
    """Matrix A (n_slots, n_parts) with ``L_material = A @ L_inside_part``.

    A part's own material gets its inside length minus that of the parts directly nested in it.
    """
    inside = nesting(parts)
    n = len(parts)
    # direct children: q inside p and no r with q inside r inside p
    direct = inside.copy()
    for p in range(n):
        for q in range(n):
            if inside[p, q] and np.any(inside[p] & inside[:, q]):
                direct[p, q] = False
    a = np.zeros((len(slots), n))
    for p, part in enumerate(parts):
        s = slots.index(part.material)
        a[s, p] += 1.0
        for q in np.nonzero(direct[p])[0]:
            a[s, q] -= 1.0
    return a
