"""Taichi ray tracer: per-material path lengths through label grids and triangle meshes.

The projector computes, for every detector pixel of every view, the length (mm) of the
ray inside each material: ``L[view, m, row, col]``. Polychromatic intensities follow from
these in :mod:`twin.spectral` (one Beer-Lambert integral per pixel).

* **Label grids** are traversed exactly with the Amanatides-Woo (Siddon) algorithm: the
  path length through each voxel is the exact chord of the ray, accumulated per material
  (runs of equal material are flushed once). Several grids make a multi-scale scene: a
  coarse grid of the whole sample and a fine grid of a volume of interest; each grid can
  exclude the box of a finer grid, so the fine grid replaces the coarse one inside it.
* **Triangle meshes** are traced through a bounding-volume hierarchy (built on the host in
  numpy). For a closed (watertight) surface, the chord inside it along a ray is
  ``sum_hits sign_i t_i`` with ``sign = +1`` when leaving (``n . d > 0``) and ``-1`` when
  entering, so each part's inside length needs no sorting of the hits. Nested parts are
  resolved on the host (:mod:`twin.scene`).

Sub-pixel supersampling traces ``ss x ss`` rays per pixel and averages the lengths.

Kernels use float32 arithmetic and take only ndarrays, so the same source runs on CPU and
CUDA (``twin.runtime.init_taichi``).
"""


import numpy as np
import taichi as ti

from twin.runtime import init_taichi

MAX_BVH_STACK = 64
#: Most material slots (grids) or parts (meshes) one scene may have.
MAX_SLOTS = 32
INF = 1e30


@ti.func
def _pixel_ray(vec: ti.template(), v, r, c, sr, sc,
               nrows, ncols, parallel):
    """Origin, unit direction and [t_min, t_max] of the ray through sub-pixel (r+sr, c+sc)."""
    d = ti.Vector([vec[v, 3], vec[v, 4], vec[v, 5]])
    u = ti.Vector([vec[v, 6], vec[v, 7], vec[v, 8]])
    w = ti.Vector([vec[v, 9], vec[v, 10], vec[v, 11]])
    cu = ti.cast(c, ti.f32) + sc - 0.5 * ti.cast(ncols - 1, ti.f32)
    rv = ti.cast(r, ti.f32) + sr - 0.5 * ti.cast(nrows - 1, ti.f32)
    pix = d + cu * u + rv * w
    a = ti.Vector([vec[v, 0], vec[v, 1], vec[v, 2]])
    origin = a
    direc = pix - a
    tmin = 0.0
    tmax = direc.norm()
    if parallel == 1:
        origin = pix
        direc = a
        tmin = -INF
        tmax = INF
    direc = direc / direc.norm()
    return origin, direc, tmin, tmax


@ti.func
def _slab(origin, direc, lo, hi, tmin, tmax):
    """Clip the ray to the box [lo, hi]; returns (t0, t1), empty if t0 >= t1."""
    t0 = tmin
    t1 = tmax
    for k in ti.static(range(3)):
        if ti.abs(direc[k]) < 1e-12:
            if origin[k] < lo[k] or origin[k] > hi[k]:
                t0 = INF
                t1 = -INF
        else:
            inv = 1.0 / direc[k]
            ta = (lo[k] - origin[k]) * inv
            tb = (hi[k] - origin[k]) * inv
            t0 = ti.max(t0, ti.min(ta, tb))
            t1 = ti.min(t1, ti.max(ta, tb))
    return t0, t1


@ti.func
def _slab_inv(origin, inv, lo, hi, tmin, tmax):
    """Branch-free ray-box clip with a precomputed inverse direction (BVH traversal)."""
    ta = (lo - origin) * inv
    tb = (hi - origin) * inv
    t0 = ti.max(tmin, ti.max(ti.min(ta[0], tb[0]), ti.max(ti.min(ta[1], tb[1]), ti.min(ta[2], tb[2]))))
    t1 = ti.min(tmax, ti.min(ti.max(ta[0], tb[0]), ti.min(ti.max(ta[1], tb[1]), ti.max(ta[2], tb[2]))))
    return t0, t1


@ti.func
def _edge_fn(px, py, qx, qy):
    """2-D cross product ``p x q`` evaluated in a canonical vertex order.

    Two triangles sharing an edge evaluate it with the same operands in the same order (then
    negate), so the values are exact negatives even when the compiler fuses multiply-adds:
    no ray slips between them and none is counted twice.
    """
    r = 0.0
    if px < qx or (px == qx and py <= qy):
        r = px * qy - py * qx
    else:
        r = -(qx * py - qy * px)
    return r


@ti.func
def _edge_in(e, dx, dy):
    """Edge function test with a top-left tie rule (shared edges count once)."""
    return e > 0.0 or (e == 0.0 and (dy > 0.0 or (dy == 0.0 and dx > 0.0)))


@ti.kernel
def _trace_grid(vec: ti.types.ndarray(), labels: ti.types.ndarray(), lut: ti.types.ndarray(),
                out: ti.types.ndarray(), v0: int, nrows: int, ncols: int, parallel: int,
                ox: ti.f32, oy: ti.f32, oz: ti.f32, sx: ti.f32, sy: ti.f32, sz: ti.f32,
                ex_lo_x: ti.f32, ex_lo_y: ti.f32, ex_lo_z: ti.f32,
                ex_hi_x: ti.f32, ex_hi_y: ti.f32, ex_hi_z: ti.f32,
                ss: int, counter: ti.types.ndarray()):
    """Accumulate per-material path lengths of one label grid into ``out``.

    ``out`` has shape (n_views_chunk, n_materials, rows, cols); view ``i`` of the chunk is
    view ``v0 + i`` of ``vec``. ``lut[label]`` is the material slot of a label, -1 for none.
    ``ox, oy, oz`` is the lower corner of the grid (mm), ``sx, sy, sz`` the voxel size (mm).
    The exclusion box (``ex_lo``, ``ex_hi``) is skipped (empty when lo > hi).
    """
    nz, ny, nx = labels.shape[0], labels.shape[1], labels.shape[2]
    nv = out.shape[0]
    lo = ti.Vector([ox, oy, oz])
    sp = ti.Vector([sx, sy, sz])
    n = ti.Vector([nx, ny, nz])
    hi = lo + sp * ti.cast(n, ti.f32)
    ex_lo = ti.Vector([ex_lo_x, ex_lo_y, ex_lo_z])
    ex_hi = ti.Vector([ex_hi_x, ex_hi_y, ex_hi_z])
    inv_ss2 = 1.0 / ti.cast(ss * ss, ti.f32)
    nm = out.shape[1]
    for iv, r, c in ti.ndrange(nv, nrows, ncols):
        steps = 0
        acc = ti.Vector([0.0] * MAX_SLOTS)
        for sub in range(ss * ss):
            sr = (ti.cast(sub // ss, ti.f32) + 0.5) / ti.cast(ss, ti.f32) - 0.5
            sc = (ti.cast(sub % ss, ti.f32) + 0.5) / ti.cast(ss, ti.f32) - 0.5
            origin, direc, tmin, tmax = _pixel_ray(vec, v0 + iv, r, c, sr, sc, nrows, ncols, parallel)
            t0, t1 = _slab(origin, direc, lo, hi, tmin, tmax)
            if t0 < t1:
                e0 = 0.0
                e1 = 0.0
                if ex_lo_x <= ex_hi_x:
                    e0, e1 = _slab(origin, direc, ex_lo, ex_hi, t0, t1)
                # voxel of the entry point (nudged inside)
                p = (origin + direc * (t0 + 1e-6 * (t1 - t0)) - lo) / sp
                idx = ti.Vector([0, 0, 0])
                step = ti.Vector([0, 0, 0])
                tnext = ti.Vector([0.0, 0.0, 0.0])
                tdelta = ti.Vector([0.0, 0.0, 0.0])
                for k in ti.static(range(3)):
                    idx[k] = ti.min(ti.max(ti.cast(ti.floor(p[k]), ti.i32), 0), n[k] - 1)
                    if direc[k] > 1e-12:
                        step[k] = 1
                        tdelta[k] = sp[k] / direc[k]
                        tnext[k] = (lo[k] + sp[k] * ti.cast(idx[k] + 1, ti.f32) - origin[k]) / direc[k]
                    elif direc[k] < -1e-12:
                        step[k] = -1
                        tdelta[k] = -sp[k] / direc[k]
                        tnext[k] = (lo[k] + sp[k] * ti.cast(idx[k], ti.f32) - origin[k]) / direc[k]
                    else:
                        step[k] = 0
                        tdelta[k] = INF
                        tnext[k] = INF
                t = t0
                cur = -1
                run = 0.0
                while t < t1:
                    # axis of the nearest boundary
                    ax = 0
                    if tnext[1] < tnext[ax]:
                        ax = 1
                    if tnext[2] < tnext[ax]:
                        ax = 2
                    tn = ti.max(ti.min(tnext[ax], t1), t)
                    seg = tn - t
                    if e0 < e1:
                        seg -= ti.max(0.0, ti.min(tn, e1) - ti.max(t, e0))
                    m = lut[ti.cast(labels[idx[2], idx[1], idx[0]], ti.i32)]
                    if m != cur:
                        if cur >= 0:
                            acc[cur] += run
                        cur = m
                        run = 0.0
                    run += seg
                    steps += 1
                    t = tn
                    idx[ax] += step[ax]
                    tnext[ax] += tdelta[ax]
                    if idx[ax] < 0 or idx[ax] >= n[ax]:
                        t = t1
                if cur >= 0:
                    acc[cur] += run
        for m in range(nm):
            if acc[m] != 0.0:
                out[iv, m, r, c] = out[iv, m, r, c] + acc[m] * inv_ss2
        counter[iv % counter.shape[0]] += steps


@ti.kernel
def _trace_mesh(vec: ti.types.ndarray(), tris: ti.types.ndarray(), tri_part: ti.types.ndarray(),
                node_lo: ti.types.ndarray(), node_hi: ti.types.ndarray(),
                node_a: ti.types.ndarray(), node_b: ti.types.ndarray(),
                out: ti.types.ndarray(), v0: int, nrows: int, ncols: int, parallel: int, ss: int):
    """Accumulate each part's inside length ``sum sign_i t_i`` into ``out[view, part, r, c]``.

    BVH layout: node ``i`` has box ``node_lo[i]``, ``node_hi[i]``; an inner node has
    ``node_a[i] = left child``, ``node_b[i] = -(right child) - 1``... see :func:`build_bvh`:
    leaves have ``node_b >= 0`` as the triangle count and ``node_a`` as the first triangle.
    """
    nv = out.shape[0]
    n_parts = out.shape[1]
    inv_ss2 = 1.0 / ti.cast(ss * ss, ti.f32)
    for iv, r, c in ti.ndrange(nv, nrows, ncols):
        acc = ti.Vector([0.0] * MAX_SLOTS)
        for sub in range(ss * ss):
            sr = (ti.cast(sub // ss, ti.f32) + 0.5) / ti.cast(ss, ti.f32) - 0.5
            sc = (ti.cast(sub % ss, ti.f32) + 0.5) / ti.cast(ss, ti.f32) - 0.5
            origin, direc, tmin, tmax = _pixel_ray(vec, v0 + iv, r, c, sr, sc, nrows, ncols, parallel)
            # watertight ray-triangle test (Woop, Benthin & Wald 2013): shear the frame so the
            # ray runs along +z; shared edges give exactly opposite edge functions, so no ray
            # slips between two triangles
            kz = 0
            if ti.abs(direc[1]) > ti.abs(direc[kz]):
                kz = 1
            if ti.abs(direc[2]) > ti.abs(direc[kz]):
                kz = 2
            kx = (kz + 1) % 3
            ky = (kx + 1) % 3
            if direc[kz] < 0.0:
                kx, ky = ky, kx
            shx = direc[kx] / direc[kz]
            shy = direc[ky] / direc[kz]
            shz = 1.0 / direc[kz]
            inv = ti.Vector([0.0, 0.0, 0.0])
            for k in ti.static(range(3)):
                # a zero component gets a huge finite inverse (no inf * 0 = NaN in the clip)
                dk = direc[k]
                if ti.abs(dk) < 1e-20:
                    dk = 1e-20
                inv[k] = 1.0 / dk
            stack = ti.Vector([0] * MAX_BVH_STACK)
            sp = 1
            stack[0] = 0
            while sp > 0:
                sp -= 1
                node = stack[sp]
                lo = ti.Vector([node_lo[node, 0], node_lo[node, 1], node_lo[node, 2]])
                hi = ti.Vector([node_hi[node, 0], node_hi[node, 1], node_hi[node, 2]])
                b0, b1 = _slab_inv(origin, inv, lo, hi, tmin, tmax)
                if b0 <= b1:
                    if node_b[node] >= 0:
                        first = node_a[node]
                        for k in range(node_b[node]):
                            f = first + k
                            pa = ti.Vector([tris[f, 0, 0], tris[f, 0, 1], tris[f, 0, 2]]) - origin
                            pb = ti.Vector([tris[f, 1, 0], tris[f, 1, 1], tris[f, 1, 2]]) - origin
                            pc = ti.Vector([tris[f, 2, 0], tris[f, 2, 1], tris[f, 2, 2]]) - origin
                            ax_ = pa[kx] - shx * pa[kz]
                            ay_ = pa[ky] - shy * pa[kz]
                            bx_ = pb[kx] - shx * pb[kz]
                            by_ = pb[ky] - shy * pb[kz]
                            cx_ = pc[kx] - shx * pc[kz]
                            cy_ = pc[ky] - shy * pc[kz]
                            eu = _edge_fn(cx_, cy_, bx_, by_)
                            ev = _edge_fn(ax_, ay_, cx_, cy_)
                            ew = _edge_fn(bx_, by_, ax_, ay_)
                            det = eu + ev + ew
                            sd = 1.0
                            if det < 0.0:
                                sd = -1.0
                            # a ray exactly on a shared edge counts for one triangle only:
                            # ties go to the edge whose (oriented) direction is "top-left"
                            hit = det != 0.0
                            hit = hit and _edge_in(sd * eu, sd * (cx_ - bx_), sd * (cy_ - by_))
                            hit = hit and _edge_in(sd * ev, sd * (ax_ - cx_), sd * (ay_ - cy_))
                            hit = hit and _edge_in(sd * ew, sd * (bx_ - ax_), sd * (by_ - ay_))
                            if hit:
                                tt = (eu * shz * pa[kz] + ev * shz * pb[kz] + ew * shz * pc[kz]) / det
                                if tt > tmin and tt < tmax:
                                    # outward normal: det < 0 when the ray leaves the part
                                    sgn = 1.0
                                    if det > 0.0:
                                        sgn = -1.0
                                    acc[tri_part[f]] += sgn * tt
                    else:
                        if sp + 2 <= MAX_BVH_STACK:
                            stack[sp] = node_a[node]
                            stack[sp + 1] = -node_b[node] - 1
                            sp += 2
        for p in range(n_parts):
            if acc[p] != 0.0:
                out[iv, p, r, c] = out[iv, p, r, c] + acc[p] * inv_ss2


def _box_area(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    d = np.maximum(hi - lo, 0.0)
    return 2.0 * (d[..., 0] * d[..., 1] + d[..., 1] * d[..., 2] + d[..., 2] * d[..., 0])


def build_bvh(triangles: np.ndarray, leaf_size: int = 4) -> dict[str, np.ndarray]:
    """Bounding-volume hierarchy over triangles, split by the surface-area heuristic.

    At each node the triangles are sorted by centroid along each axis and the split that
    minimises ``area(left) n_left + area(right) n_right`` is taken (a full sweep of the sorted
    order). Long, thin triangles (cylinder walls) then end in tight boxes, so a ray visits
    about half the nodes a median split gives.

    Parameters
    ----------
    triangles : ndarray, shape (F, 3, 3)
        Vertex coordinates, mm.

    Returns
    -------
    dict with ``order`` (F,) permutation of the triangles, ``lo``, ``hi`` (N, 3) node boxes,
    ``a``, ``b`` (N,) int32: for a leaf ``a`` = first triangle (in permuted order) and
    ``b`` = count >= 0; for an inner node ``a`` = left child and ``b = -right - 1``.
    """
    tri = np.asarray(triangles, dtype=np.float64)
    cent = tri.mean(axis=1)
    tlo, thi = tri.min(axis=1), tri.max(axis=1)
    order = np.arange(len(tri))
    lo_l: list = []
    hi_l: list = []
    a_l: list = []
    b_l: list = []

    def new_node() -> int:
        lo_l.append(None), hi_l.append(None), a_l.append(0), b_l.append(0)
        return len(a_l) - 1

    root = new_node()
    work = [(root, 0, len(tri))]
    while work:
        node, start, end = work.pop()
        idx = order[start:end]
        lo_l[node] = tlo[idx].min(axis=0)
        hi_l[node] = thi[idx].max(axis=0)
        n = end - start
        if n <= leaf_size:
            a_l[node], b_l[node] = start, n
            continue
        best_cost, best_order, best_k = np.inf, None, 0
        k = np.arange(1, n)
        for axis in range(3):
            srt = idx[np.argsort(cent[idx, axis], kind="stable")]
            lo_s, hi_s = tlo[srt], thi[srt]
            prefix = _box_area(np.minimum.accumulate(lo_s, 0)[:-1], np.maximum.accumulate(hi_s, 0)[:-1])
            suffix = _box_area(np.minimum.accumulate(lo_s[::-1], 0)[::-1][1:],
                               np.maximum.accumulate(hi_s[::-1], 0)[::-1][1:])
            cost = prefix * k + suffix * (n - k)
            j = int(np.argmin(cost))
            if cost[j] < best_cost:
                best_cost, best_order, best_k = cost[j], srt, j + 1
        order[start:end] = best_order
        mid = start + best_k
        left, right = new_node(), new_node()
        a_l[node], b_l[node] = left, -right - 1
        work.append((right, mid, end))
        work.append((left, start, mid))
    pad = 1e-6
    return {"order": order,
            "lo": (np.array(lo_l) - pad).astype(np.float32),
            "hi": (np.array(hi_l) + pad).astype(np.float32),
            "a": np.array(a_l, dtype=np.int32), "b": np.array(b_l, dtype=np.int32)}


def grid_path_lengths(vectors: np.ndarray, labels: np.ndarray, lut: np.ndarray, n_materials: int,
                      lower_mm, spacing_mm, rows: int, cols: int, *, parallel: bool = False,
                      supersample: int = 1, exclude_box_mm=None, out: np.ndarray | None = None,
                      view_start: int = 0, n_views: int | None = None, arch: str = "auto"
                      ) -> tuple[np.ndarray, int]:
    """Per-material path lengths (mm) of rays through one label grid.

    Parameters
    ----------
    vectors : ndarray, shape (V, 12)
        Per-view geometry (:meth:`twin.geometry.ScanGeometry.vectors`).
    labels : ndarray of ints, shape (nz, ny, nx)
    lut : ndarray of int32, shape (max_label + 1,)
        Material slot of each label, -1 for labels that do not attenuate (background).
    lower_mm, spacing_mm : (x, y, z)
        Lower corner of the grid (voxel edge, mm) and voxel size (mm).
    exclude_box_mm : ((x, y, z), (x, y, z)), optional
        A box to skip (where a finer grid takes over).
    out : ndarray, shape (n_views, n_materials, rows, cols), optional
        Accumulated into (``+=``) when given.

    Returns
    -------
    out : ndarray float32, shape (n_views, n_materials, rows, cols)
    ray_samples : int
        Number of voxel steps taken (for benchmarks).
    """
    init_taichi(arch)
    nv = len(vectors) - view_start if n_views is None else n_views
    if out is None:
        out = np.zeros((nv, n_materials, rows, cols), np.float32)
    if exclude_box_mm is None:
        ex_lo, ex_hi = (1.0, 1.0, 1.0), (-1.0, -1.0, -1.0)
    else:
        ex_lo, ex_hi = exclude_box_mm
    lab = np.ascontiguousarray(labels)
    if lab.dtype not in (np.uint8, np.uint16, np.int32):
        lab = lab.astype(np.int32)
    counter = np.zeros(64, np.int64)
    _trace_grid(np.ascontiguousarray(vectors, np.float32), lab, np.ascontiguousarray(lut, np.int32),
                out, int(view_start), int(rows), int(cols), int(parallel),
                *map(float, lower_mm), *map(float, spacing_mm), *map(float, ex_lo), *map(float, ex_hi),
                int(supersample), counter)
    return out, int(counter.sum())


def mesh_path_lengths(vectors: np.ndarray, triangles: np.ndarray, tri_part: np.ndarray,
                      n_parts: int, rows: int, cols: int, *, parallel: bool = False,
                      supersample: int = 1, bvh: dict | None = None, out: np.ndarray | None = None,
                      view_start: int = 0, n_views: int | None = None, arch: str = "auto"
                      ) -> np.ndarray:
    """Inside length (mm) of each closed part along each ray, shape (n_views, n_parts, rows, cols).

    ``triangles`` (F, 3, 3) must be consistently wound with outward normals
    (``(v1 - v0) x (v2 - v0)`` pointing out), as trimesh gives for watertight meshes;
    ``tri_part`` (F,) is the part index of each triangle.
    """
    init_taichi(arch)
    nv = len(vectors) - view_start if n_views is None else n_views
    if bvh is None:
        bvh = build_bvh(triangles)
    order = bvh["order"]
    tris = np.ascontiguousarray(np.asarray(triangles)[order], np.float32)
    parts = np.ascontiguousarray(np.asarray(tri_part)[order], np.int32)
    if out is None:
        out = np.zeros((nv, n_parts, rows, cols), np.float32)
    # float32 box tests err by ~eps x (distance from the ray origin): pad every box by a few
    # times that, or a ray grazing a leaf box could skip the triangle it hits
    reach = float(np.abs(np.asarray(vectors)[:, 0:6]).max() + np.abs(tris).max())
    pad = np.float32(max(1e-5, 8 * np.finfo(np.float32).eps * reach))
    _trace_mesh(np.ascontiguousarray(vectors, np.float32), tris, parts, bvh["lo"] - pad, bvh["hi"] + pad,
                bvh["a"], bvh["b"], out, int(view_start), int(rows), int(cols), int(parallel),
                int(supersample))
    return out
