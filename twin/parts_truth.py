"""The ground truth of a ``kind = "parts"`` scene: a label grid of its meshes, primitives and
voxel parts (``truth.h5``, ``shared/DESIGN.md``).

Labels: 0 is air; then one label per part, in the order of ``[[phantom.parts]]`` (a voxel part,
``shape = "labels"``, brings one label per non-zero label of its file, in its file's order).
Each label's component name is the part's ``name`` or ``part<i>`` (``i`` its index in
``phantom.parts``, as in the projector's messages); a voxel part's labels are named
``<name>:<component>`` when it has a ``name``, else by its file's component names. Repeated
names get ``_2``, ``_3``, ... (the metrology keys them by name).

Where parts overlap, the label is the one the projector traces there:

* mesh and primitive parts nest (:func:`twin.meshes.nesting`, on the same triangles the
  projector traces): an inner part replaces the outer one, and of two parts that fill the same
  space the higher ``priority`` is inside. They are painted outermost first.
* voxel parts are painted before the meshes, in scenario order, each within its box minus
  the box of the next one (the projector's coarse-to-fine rule, :class:`twin.scene.Scene`);
  label 0 of a voxel part is air. Where a mesh overlaps a voxel part the projector adds both
  attenuations; the truth gives the mesh.

Rasterisation: a voxel is inside a part when its centre is. Primitives are evaluated
analytically (the sphere, cylinder and tube themselves, not their tessellation), half-open
(``lo <= x < hi``, ``r < R``) so that faces on voxel centres do not add a layer. Meshes are
scan-converted along x: lines through the voxel centres are crossed with the triangles (a
watertight point-in-triangle test in the (y, z) plane with a half-open edge rule, so a line
through a shared edge or vertex crosses the surface once), and the winding number is
accumulated along each line; exact for closed meshes, O(triangles + voxels).

Grid: isotropic, at ``phantom.voxel_um`` or the scan voxel (:func:`twin.plan.phantom_voxel_um`),
on a lattice aligned with the reconstruction's voxels (the same centres at the scan voxel,
so ``measure --truth`` resamples without shifts), covering the parts' bounding box plus a
margin of air (:data:`MARGIN_FRACTION` of the box, at least :data:`MARGIN_VOXELS` voxels),
cropped to the reconstructed volume (the field of view: the truth is only compared there).
Before allocation the grid's bytes are checked against the memory budget
(:func:`phantoms.grid.available_bytes`): a grid that cannot fit is refused, naming its sizes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from twin.errors import XrmInputError
from twin.materials import get_material
from twin.meshes import MeshPart, nesting
from twin.volume import LabelGrid

#: Air around the parts' bounding box, per side: this fraction of its largest extent ...
MARGIN_FRACTION = 0.1
#: ... and at least this many truth voxels.
MARGIN_VOXELS = 4
#: Candidate (line, triangle) pairs or voxels handled per numpy step: the working memory is
#: about :data:`WORK_ARRAYS` float64 arrays of this length (~200 MiB), whatever the grid.
CHUNK = 1 << 20
WORK_ARRAYS = 24
#: Grid of :func:`snap`, per voxel.
SNAP = float(1 << 20)


# --------------------------------------------------------------------------- the lattice

def recon_box_mm(geometry, center_mm) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-edge box (x, y, z) of the default reconstruction, in the sample frame, mm.

    :func:`recon.fdk.default_volume` (columns x columns x rows at the scan voxel, centred on
    the rotation axis), moved by the sample point on the axis as ``reconstruct`` does.
    """
    h = geometry.voxel_size_um / 1000.0
    n = np.array([geometry.cols, geometry.cols, geometry.rows], float)
    c = np.asarray(center_mm, float)
    return c - n * h / 2, c + n * h / 2


def truth_lattice(geometry, center_mm, voxel_um: float, lo_mm, hi_mm
                  ) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """Origin (x, y, z, mm) and shape (z, y, x) of the truth grid of parts spanning [lo, hi].

    The lattice tiles the reconstruction's box from its lower corner at ``voxel_um``; the
    grid is the part of it that covers [lo, hi] plus the margin, within that box (the whole
    box when the parts miss it).
    """
    t = float(voxel_um) / 1000.0
    r_lo, r_hi = recon_box_mm(geometry, center_mm)
    n_all = np.maximum(np.ceil((r_hi - r_lo) / t - 1e-9).astype(np.int64), 1)
    lo, hi = np.asarray(lo_mm, float), np.asarray(hi_mm, float)
    pad = max(MARGIN_FRACTION * float(np.max(hi - lo)), MARGIN_VOXELS * t)
    i0 = np.clip(np.floor((lo - pad - r_lo) / t).astype(np.int64), 0, n_all)
    i1 = np.clip(np.ceil((hi + pad - r_lo) / t).astype(np.int64), 0, n_all)
    if np.any(i1 <= i0):
        i0, i1 = np.zeros(3, np.int64), n_all
    origin = r_lo + (i0 + 0.5) * t
    n = i1 - i0
    return tuple(float(v) for v in origin), (int(n[2]), int(n[1]), int(n[0]))


def check_truth_fits(shape_zyx, voxel_um: float, itemsize: int) -> None:
    """Refuse a truth grid whose labels (plus a working slab) exceed the memory budget."""
    from phantoms.grid import available_bytes

    nz, ny, nx = shape_zyx
    n = int(nz) * int(ny) * int(nx)
    need = n * itemsize + WORK_ARRAYS * min(n, CHUNK) * 8
    have = available_bytes()
    if need > have:
        raise XrmInputError(
            f"the ground truth of the parts scene at {voxel_um:g} um voxels needs a {nx} x {ny} x "
            f"{nz} label grid ({n / 1e9:.2f} G voxels, {need / 2**30:.1f} GiB) but only "
            f"{have / 2**30:.1f} GiB are available; set a larger phantom.voxel_um "
            "(default: the scan voxel) or a smaller field of view")


# --------------------------------------------------------------------------- primitives

def primitive_bounds_mm(p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Analytic bounding box (x, y, z) of a primitive part, mm."""
    c = np.asarray(p.get("center_mm", (0.0, 0.0, 0.0)), float)
    shape = p["shape"]
    if shape == "box":
        half = np.asarray(p["size_mm"], float) / 2
    elif shape == "sphere":
        half = np.full(3, float(p["radius_mm"]))
    else:
        r, h = float(p["radius_mm"]), float(p["height_mm"]) / 2
        half = np.array([r, r, r])
        half["xyz".index(p.get("axis", "z"))] = h
    return c - half, c + half


def snap(v):
    """Coordinates in voxel units rounded to multiples of 2^-20 voxel: a face or edge that lies
    on voxel centres up to rounding (``(0.5 + 0.6) / 0.01`` is 110.00000000000001) lies on
    them exactly, and the half-open rules then decide the same way on every face."""
    return np.round(np.asarray(v, float) * SNAP) / SNAP


def primitive_inside(p: Mapping[str, Any], x: np.ndarray, y: np.ndarray, z: np.ndarray,
                     origin_mm=(0.0, 0.0, 0.0), voxel_um: float = 1000.0) -> np.ndarray:
    """Points inside a primitive, half-open (see the module).

    ``x, y, z`` broadcast; in voxel units of the grid (``origin_mm``, ``voxel_um``) when those
    are given (the defaults make them mm). The primitive's faces and centre are
    :func:`snap`-ped in those units.
    """
    t = float(voxel_um) / 1000.0
    o = np.asarray(origin_mm, float)
    shape = p["shape"]
    c = np.asarray(p.get("center_mm", (0.0, 0.0, 0.0)), float)
    ci = snap((c - o) / t)
    if shape == "box":
        half = np.asarray(p["size_mm"], float) / 2
        lo, hi = snap((c - half - o) / t), snap((c + half - o) / t)
        return (((x >= lo[0]) & (x < hi[0])) & ((y >= lo[1]) & (y < hi[1]))
                & ((z >= lo[2]) & (z < hi[2])))
    dx, dy, dz = x - ci[0], y - ci[1], z - ci[2]
    if shape == "sphere":
        r = float(p["radius_mm"]) / t
        return dx * dx + dy * dy + dz * dz < r * r
    axis = "xyz".index(p.get("axis", "z"))
    a = (x, y, z)[axis]
    u, w = [d for k, d in enumerate((dx, dy, dz)) if k != axis]
    r2 = u * u + w * w
    h = float(p["height_mm"]) / 2
    lo, hi = snap((c[axis] - h - o[axis]) / t), snap((c[axis] + h - o[axis]) / t)
    m = (r2 < (float(p["radius_mm"]) / t) ** 2) & (a >= lo) & (a < hi)
    if shape == "tube":
        m &= r2 >= (float(p["inner_radius_mm"]) / t) ** 2
    return m


# --------------------------------------------------------------------------- meshes

def _edge(uy, uz, vy, vz, py, pz):
    """Edge function ``(v - u) x (p - u)`` in a canonical vertex order, so that the two
    triangles sharing an edge get exactly opposite values (no rounding disagreement)."""
    swap = (uy > vy) | ((uy == vy) & (uz > vz))
    ay, az = np.where(swap, vy, uy), np.where(swap, vz, uz)
    by, bz = np.where(swap, uy, vy), np.where(swap, uz, vz)
    e = (by - ay) * (pz - az) - (bz - az) * (py - ay)
    return np.where(swap, -e, e)


def _edge_in(e, dy, dz):
    """Half-open edge rule: on the edge counts when the edge points up (or left): of two
    triangles on either side of a shared edge exactly one holds the points on it."""
    return (e > 0) | ((e == 0) & ((dz > 0) | ((dz == 0) & (dy < 0))))


def mesh_crossings(triangles: np.ndarray, origin_mm, voxel_um: float, shape_zyx
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the lines of voxel centres along x cross a closed surface.

    Returns ``(k, j, i, step)``: the line (z index k, y index j), the first voxel ``i`` whose
    centre lies beyond the crossing (0 .. nx), and the winding-number step there (+1
    entering, -1 leaving the outward-wound surface). Lines outside the grid are dropped.
    """
    nz, ny, nx = shape_zyx
    t = float(voxel_um) / 1000.0
    v = snap((np.asarray(triangles, float) - np.asarray(origin_mm, float)) / t)  # voxel units
    a, b, c = v[:, 0], v[:, 1], v[:, 2]
    nrm = np.cross(b - a, c - a)  # nrm[:, 0] is the signed (y, z) area, twice
    keep = nrm[:, 0] != 0  # triangles seen edge-on along x are not crossed
    a, b, c, nrm = a[keep], b[keep], c[keep], nrm[keep]
    ccw = nrm[:, 0] > 0
    b, c = np.where(ccw[:, None], b, c), np.where(ccw[:, None], c, b)  # counter-clockwise in (y, z)
    ys, zs = np.stack([a[:, 1], b[:, 1], c[:, 1]], 1), np.stack([a[:, 2], b[:, 2], c[:, 2]], 1)
    j0 = np.maximum(np.ceil(ys.min(1)).astype(np.int64), 0)
    j1 = np.minimum(np.floor(ys.max(1)).astype(np.int64), ny - 1)
    k0 = np.maximum(np.ceil(zs.min(1)).astype(np.int64), 0)
    k1 = np.minimum(np.floor(zs.max(1)).astype(np.int64), nz - 1)
    nj, nk = np.maximum(j1 - j0 + 1, 0), np.maximum(k1 - k0 + 1, 0)
    count = nj * nk
    start = np.concatenate([[0], np.cumsum(count)])
    out_k, out_j, out_i, out_s = [], [], [], []
    for g0 in range(0, int(start[-1]), CHUNK):
        g = np.arange(g0, min(g0 + CHUNK, int(start[-1])), dtype=np.int64)
        f = np.searchsorted(start, g, side="right") - 1
        off = g - start[f]
        pj = (j0[f] + off % nj[f]).astype(float)
        pk = (k0[f] + off // nj[f]).astype(float)
        ok = np.ones(len(g), bool)
        for (uy, uz), (wy, wz) in (((ys[f, 0], zs[f, 0]), (ys[f, 1], zs[f, 1])),
                                   ((ys[f, 1], zs[f, 1]), (ys[f, 2], zs[f, 2])),
                                   ((ys[f, 2], zs[f, 2]), (ys[f, 0], zs[f, 0]))):
            ok &= _edge_in(_edge(uy, uz, wy, wz, pj, pk), wy - uy, wz - uz)
        f, pj, pk = f[ok], pj[ok], pk[ok]
        n = nrm[f]
        xc = a[f, 0] - (n[:, 1] * (pj - a[f, 1]) + n[:, 2] * (pk - a[f, 2])) / n[:, 0]
        out_k.append(pk.astype(np.int64))
        out_j.append(pj.astype(np.int64))
        out_i.append(np.clip(np.floor(xc).astype(np.int64) + 1, 0, nx))
        out_s.append(np.where(ccw[f], -1, 1).astype(np.int8))  # +x normal: leaving
    if not out_k:
        e = np.zeros(0, np.int64)
        return e, e, e, np.zeros(0, np.int8)
    return tuple(np.concatenate(x) for x in (out_k, out_j, out_i, out_s))  # type: ignore[return-value]


def paint_mesh(labels: np.ndarray, label: int, triangles: np.ndarray, origin_mm, voxel_um: float) -> int:
    """Set ``labels`` to ``label`` at the voxel centres inside a closed mesh; returns the count."""
    nz, ny, nx = labels.shape
    k, j, i, s = mesh_crossings(triangles, origin_mm, voxel_um, labels.shape)
    if k.size == 0:
        return 0
    order = np.argsort(k, kind="stable")
    k, j, i, s = k[order], j[order], i[order], s[order]
    slab = max(1, CHUNK // max(ny * (nx + 1), 1))
    total = 0
    for z0 in range(int(k[0]), int(k[-1]) + 1, slab):
        z1 = min(z0 + slab, nz)
        a, b = np.searchsorted(k, [z0, z1])
        if a == b:
            continue
        flat = ((k[a:b] - z0) * ny + j[a:b]) * (nx + 1) + i[a:b]
        step = np.bincount(flat, weights=s[a:b], minlength=(z1 - z0) * ny * (nx + 1))
        wind = np.cumsum(step.reshape(z1 - z0, ny, nx + 1)[..., :nx], axis=2)
        inside = np.rint(wind) != 0
        labels[z0:z1][inside] = label
        total += int(np.count_nonzero(inside))
    return total


# --------------------------------------------------------------------------- the truth

def _axes(origin_mm, voxel_um: float, shape_zyx):
    t = float(voxel_um) / 1000.0
    nz, ny, nx = shape_zyx
    return (origin_mm[0] + t * np.arange(nx), origin_mm[1] + t * np.arange(ny),
            origin_mm[2] + t * np.arange(nz))


def _index_box(lo, hi, origin_mm, voxel_um: float, shape_zyx) -> tuple[slice, slice, slice] | None:
    """Slices [z, y, x] of the voxels whose centres may lie in [lo, hi] (one voxel of slack)."""
    t = float(voxel_um) / 1000.0
    o = np.asarray(origin_mm, float)
    n = np.array(shape_zyx[::-1])
    i0 = np.maximum(np.floor((np.asarray(lo) - o) / t).astype(np.int64) - 1, 0)
    i1 = np.minimum(np.ceil((np.asarray(hi) - o) / t).astype(np.int64) + 2, n)
    if np.any(i1 <= i0):
        return None
    return slice(int(i0[2]), int(i1[2])), slice(int(i0[1]), int(i1[1])), slice(int(i0[0]), int(i1[0]))


def paint_primitive(labels: np.ndarray, label: int, p: Mapping[str, Any], origin_mm, voxel_um: float) -> None:
    """Set ``labels`` to ``label`` at the voxel centres inside primitive ``p``, slab by slab."""
    box = _index_box(*primitive_bounds_mm(p), origin_mm, voxel_um, labels.shape)
    if box is None:
        return
    ax = [np.arange(b.start, b.stop, dtype=float) for b in box]  # z, y, x indices
    x, y = ax[2][None, None, :], ax[1][None, :, None]
    sub = labels[box]
    slab = max(1, CHUNK // max(sub.shape[1] * sub.shape[2], 1))
    for z0 in range(0, sub.shape[0], slab):
        z = ax[0][z0:z0 + slab][:, None, None]
        inside = primitive_inside(p, x, y, z, origin_mm, voxel_um)
        sub[z0:z0 + slab][np.broadcast_to(inside, sub[z0:z0 + slab].shape)] = label


def paint_parts(labels: np.ndarray, values: Sequence[int], parts: Sequence[Mapping[str, Any]],
                meshes: Sequence[MeshPart], origin_mm, voxel_um: float) -> None:
    """Paint mesh and primitive parts onto a given grid, nested as the projector traces them.

    A voxel takes the value of the innermost part that holds its centre: the parts are
    nested by :func:`twin.meshes.nesting` on ``meshes`` (the projector's triangles; of two
    parts that fill the same space the higher ``priority`` is inside) and painted outermost
    first, meshes by :func:`paint_mesh`, primitives analytically by :func:`paint_primitive`
    (half-open, see the module). Voxels outside every part keep their value.

    Parameters
    ----------
    labels : ndarray, shape (nz, ny, nx), integer
        The grid, painted in place. Voxel ``[k, j, i]`` has its centre at
        ``origin_mm + voxel_um / 1000 * (i, j, k)`` (x, y, z, mm).
    values : sequence of int
        The value painted for each part (``labels``' dtype must hold it).
    parts : sequence of dict
        The mesh and primitive entries of ``phantom.parts``, in order (no voxel parts).
    meshes : sequence of MeshPart
        ``twin.plan.parts_scene(parts)``: one per entry, in the same frame as ``origin_mm``.
    origin_mm : (x, y, z)
        Centre of voxel ``[0, 0, 0]``, mm.
    voxel_um : float
        Isotropic voxel of the grid, um.

    Raises
    ------
    XrmInputError
        Parts that overlap partially, or fill the same space without distinct priorities
        (:func:`twin.meshes.nesting`).
    """
    if len(values) != len(parts) or len(parts) != len(meshes):
        raise ValueError(f"{len(values)} values, {len(parts)} parts and {len(meshes)} meshes: "
                         "one of each per part")
    if not meshes:
        return
    depth = nesting(list(meshes)).sum(axis=0)  # [p, q]: q lies in p (priority resolved)
    for q in sorted(range(len(meshes)), key=lambda q: (int(depth[q]), q)):
        if parts[q].get("shape", "mesh") == "mesh":
            paint_mesh(labels, values[q], meshes[q].triangles, origin_mm, voxel_um)
        else:
            paint_primitive(labels, values[q], parts[q], origin_mm, voxel_um)


def paint_grid(labels: np.ndarray, lut: np.ndarray, grid: LabelGrid, origin_mm, voxel_um: float,
               exclude_box_mm=None) -> None:
    """Paint a voxel part (nearest voxel centre, as :func:`twin.measure.truth_on_grid`): its
    label ``l > 0`` becomes ``lut[l]`` inside its box, except inside ``exclude_box_mm``."""
    axes = _axes(origin_mm, voxel_um, labels.shape)
    sp, go = np.asarray(grid.spacing_mm), np.asarray(grid.origin_mm, float)
    idx, rng = [], []
    for k, n in enumerate(grid.labels.shape[::-1]):
        i = np.rint((axes[k] - go[k]) / sp[k]).astype(np.int64)
        ok = np.flatnonzero((i >= 0) & (i < n))  # increasing: one run
        if ok.size == 0:
            return
        rng.append(slice(int(ok[0]), int(ok[-1]) + 1))
        idx.append(i[rng[-1]])
    (ix, iy, iz), (sx, sy, sz) = idx, rng
    ex = None
    if exclude_box_mm is not None:
        elo, ehi = (np.asarray(b, float) for b in exclude_box_mm)
        ex = [(axes[k][r] >= elo[k]) & (axes[k][r] < ehi[k]) for k, r in enumerate(rng)]
        ex_yx = ex[1][:, None] & ex[0][None, :]
    out = labels[sz, sy, sx]
    for n, z in enumerate(iz):
        src = grid.labels[z][np.ix_(iy, ix)]
        keep = src > 0
        if ex is not None and ex[2][n]:
            keep &= ~ex_yx
        out[n][keep] = lut[src[keep]]


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            m = f"{n}_{seen[n]}"
            while m in seen:
                seen[n] += 1
                m = f"{n}_{seen[n]}"
            seen[m] = 1
            out.append(m)
        else:
            seen[n] = 1
            out.append(n)
    return out


def parts_truth(parts: Sequence[Mapping[str, Any]], meshes: Sequence[MeshPart],
                grids: Sequence[LabelGrid], geometry, center_mm, voxel_um: float):
    """The truth of a parts scene, as ``(grid, defects, instances)`` (see the module).

    Parameters
    ----------
    parts : list of dict
        ``phantom.parts`` as validated.
    meshes : sequence of MeshPart
        :func:`twin.plan.parts_scene` of ``parts`` (its non-voxel parts, in order), in the
        sample frame (not moved by ``sample_center_mm``).
    grids : sequence of LabelGrid
        The voxel parts, in order, in the sample frame.
    geometry : ScanGeometry
    center_mm : (x, y, z)
        Sample point on the rotation axis (the reconstruction's centre).
    voxel_um : float
        Truth voxel.

    Returns
    -------
    grid : LabelGrid
        Labels (uint8, or uint16 beyond 255 labels) in the sample frame, with names.
    defects : list
        Empty (parts scenes hold no defects).
    instances : None
    """
    air = get_material("air")
    names, mats = ["air"], [air]
    mesh_label, grid_luts = [], []
    mi = gi = 0
    boxes = []
    for i, p in enumerate(parts):
        if p.get("shape") == "labels":
            g = grids[gi]
            gi += 1
            comp = g.component_names
            lut = np.zeros(len(g.materials), np.int64)
            for l in range(1, len(g.materials)):
                lut[l] = len(names)
                names.append(f"{p['name']}:{comp[l]}" if "name" in p else str(comp[l]))
                mats.append(g.materials[l])
            grid_luts.append(lut)
            boxes.append(g.box_mm)
        else:
            m = meshes[mi]
            mi += 1
            mesh_label.append(len(names))
            names.append(m.name)
            mats.append(m.material)
            boxes.append(primitive_bounds_mm(p) if p.get("shape", "mesh") != "mesh" else m.bounds_mm)
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    origin, shape = truth_lattice(geometry, center_mm, voxel_um, lo, hi)
    dtype = np.uint8 if len(names) <= 256 else np.uint16
    check_truth_fits(shape, voxel_um, np.dtype(dtype).itemsize)
    labels = np.zeros(shape, dtype)
    for n, (g, lut) in enumerate(zip(grids, grid_luts)):
        nxt = grids[n + 1].box_mm if n + 1 < len(grids) else None
        paint_grid(labels, lut.astype(dtype), g, origin, voxel_um, exclude_box_mm=nxt)
    if meshes:
        paint_parts(labels, mesh_label, [p for p in parts if p.get("shape") != "labels"], meshes,
                    origin, voxel_um)
    grid = LabelGrid(labels, float(voxel_um), origin, tuple(mats), tuple(_unique(names)))
    return grid, [], None
