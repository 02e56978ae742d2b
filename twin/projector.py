"""Taichi ray tracer: per-material path lengths through label grids and triangle meshes.

The projector computes, for every detector pixel of every view, the length (mm) of the
ray inside each material: ``L[view, m, row, col]``. Polychromatic intensities follow from
these in :mod:`twin.spectral` (one Beer-Lambert integral per ray).

* **Label grids** are traversed exactly with the Amanatides-Woo (Siddon) algorithm: the
  path length through each voxel is the exact chord of the ray, accumulated per material
  (runs of equal material are flushed once). Several grids make a multi-scale scene: a
  coarse grid of the whole sample and a fine grid of a volume of interest; each grid can
  exclude the box of a finer grid, so the fine grid replaces the coarse one inside it.
* **Triangle meshes.** For a closed (watertight) surface, the chord inside it along a ray
  is ``sum_hits sign_i t_i`` with ``sign = +1`` when leaving (``n . d > 0``) and ``-1`` when
  entering, so each part's inside length needs no sorting of the hits. Nested parts are
  resolved on the host (:mod:`twin.scene`). Two tracers trace the same rays; both are
  watertight (no ray slips between two triangles of a closed surface or is counted twice),
  but a ray exactly on a shared edge or vertex may be given to a different triangle by each
  (their edge functions are evaluated in different frames), so the two agree to rounding
  away from such exact ties:

  - the **rasteriser** (default where it applies: every vertex between the source and the
    detector, always for parallel beam): all rays of a view start at the source (or are
    parallel), so a ray hits a triangle exactly when its pixel centre lies inside the
    triangle's projection onto the detector. Vertices are projected in float64, pixel centres
    are tested with a watertight edge-function test and top-left tie rule in the detector
    plane (:func:`_tri_hit`, float64), and the hit distances are added as fixed-point
    integers, so the sums are exact and independent of thread order. Work is per triangle
    (its covered pixels), not per ray and BVH node;
  - the **BVH ray tracer** (surface-area-heuristic BVH built on the host in numpy;
    watertight Woop-Benthin-Wald triangle test: the same :func:`_tri_hit` in the ray's
    sheared frame, float32) for the rest, e.g. a source inside a part.

  A part's inside length outside ``[-eps, its box diagonal]`` (a lone entry or exit hit, as
  a ray lying exactly in a face through the source could give) is set to 0 and counted
  (a warning is logged; :func:`_parts_to_materials`).

Rays are set up in float64 (pixel position, direction, clipping to the grid or mesh box);
the float32 traversals then start from the ray's entry into that box, so precision does not
degrade with the source distance (the CTSimU tests put the source 500 mm away).

Supersampling: ``supersample = ss`` places ``ss x ss`` sub-rays on a regular grid in each
pixel; :func:`grid_path_lengths` and :func:`mesh_path_lengths` either average their lengths
or (``subray = i``) trace one of them, which is how :meth:`twin.scene.Scene.spectral_sums`
averages *intensities* over the pixel.

Kernels take only ndarrays (float64 set-up, float32 traversal and outputs), so the same
source runs on CPU and CUDA (``twin.runtime.init_taichi``).
"""


import logging
from typing import Callable

import numpy as np
import taichi as ti

from twin.errors import XrmInputError
from twin.runtime import init_taichi, releasing

_log = logging.getLogger("xrm_twin")

MAX_BVH_STACK = 64
#: Most material slots (grids) or parts (meshes) one scene may have.
MAX_SLOTS = 32
INF = 1e30


@ti.func
def _pixel_ray(vec: ti.template(), v, r, c, sr, sc,
               nrows, ncols, parallel):
    """float64 origin, unit direction and [t_min, t_max] of the ray through sub-pixel (r+sr, c+sc).

    ``vec`` is a float64 array, so the pixel position (detector centre ~ hundreds of mm plus
    column and row steps of a few um) keeps ~1e-13 mm; the kernels then shift the origin to
    the ray's entry into the traced box (clipped with :func:`_slab`) before the float32
    traversal. ``(sr, sc)`` is the sub-ray offset (:func:`_sub_offset`).
    """
    d = ti.Vector([vec[v, 3], vec[v, 4], vec[v, 5]])
    u = ti.Vector([vec[v, 6], vec[v, 7], vec[v, 8]])
    w = ti.Vector([vec[v, 9], vec[v, 10], vec[v, 11]])
    cu = ti.cast(c, ti.f64) + sc - 0.5 * ti.cast(ncols - 1, ti.f64)
    rv = ti.cast(r, ti.f64) + sr - 0.5 * ti.cast(nrows - 1, ti.f64)
    pix = d + cu * u + rv * w
    a = ti.Vector([vec[v, 0], vec[v, 1], vec[v, 2]])
    origin = a
    direc = pix - a
    tmin = ti.cast(0.0, ti.f64)
    tmax = direc.norm()
    if parallel == 1:
        origin = pix
        direc = a
        tmin = -INF
        tmax = INF
    direc = direc / direc.norm()
    return origin, direc, tmin, tmax


@ti.func
def _sub_offset(sub, ss):
    """(row, column) offset in pixels of sub-ray ``sub`` (row-major) of an ss x ss grid, float64."""
    fss = ti.cast(ss, ti.f64)
    sr = (ti.cast(sub // ss, ti.f64) + 0.5) / fss - 0.5
    sc = (ti.cast(sub % ss, ti.f64) + 0.5) / fss - 0.5
    return sr, sc


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
    r = px * 0.0  # the type of the inputs (f32 in the ray tracer, f64 in the rasteriser)
    if px < qx or (px == qx and py <= qy):
        r = px * qy - py * qx
    else:
        r = -(qx * py - qy * px)
    return r


@ti.func
def _edge_in(e, dx, dy):
    """Edge function test with a top-left tie rule (shared edges count once)."""
    return e > 0.0 or (e == 0.0 and (dy > 0.0 or (dy == 0.0 and dx > 0.0)))


@ti.func
def _tri_hit(ax_, ay_, bx_, by_, cx_, cy_):
    """Watertight 2-D point-in-triangle test of the origin against triangle (a, b, c).

    The vertices are given relative to the ray (the ray tracer's sheared frame, float32, or
    the rasteriser's detector plane relative to the pixel centre, float64; the arithmetic
    follows the input type). Returns ``(hit, eu, ev, ew, det)``: the edge functions of the
    edges bc, ca, ab (``_edge_fn``, exact negatives on a shared edge) and their sum ``det``
    (twice the signed area; 0 for a triangle seen edge-on, which is never hit). A point
    exactly on an edge counts only for the triangle on whose "top-left" side the edge lies
    (oriented counter-clockwise), so a point on a shared edge goes to exactly one of them.
    """
    eu = _edge_fn(cx_, cy_, bx_, by_)
    ev = _edge_fn(ax_, ay_, cx_, cy_)
    ew = _edge_fn(bx_, by_, ax_, ay_)
    det = eu + ev + ew
    sd = 1.0
    if det < 0.0:
        sd = -1.0
    hit = det != 0.0
    hit = hit and _edge_in(sd * eu, sd * (cx_ - bx_), sd * (cy_ - by_))
    hit = hit and _edge_in(sd * ev, sd * (ax_ - cx_), sd * (ay_ - cy_))
    hit = hit and _edge_in(sd * ew, sd * (bx_ - ax_), sd * (by_ - ay_))
    return hit, eu, ev, ew, det


@releasing
@ti.kernel
def _trace_grid(vec: ti.types.ndarray(), labels: ti.types.ndarray(), lut: ti.types.ndarray(),
                out: ti.types.ndarray(), v0: int, nrows: int, ncols: int, parallel: int,
                ox: ti.f64, oy: ti.f64, oz: ti.f64, sx: ti.f64, sy: ti.f64, sz: ti.f64,
                ex_lo_x: ti.f64, ex_lo_y: ti.f64, ex_lo_z: ti.f64,
                ex_hi_x: ti.f64, ex_hi_y: ti.f64, ex_hi_z: ti.f64,
                ss: int, sub0: int, sub1: int, counter: ti.types.ndarray()):
    """Accumulate per-material path lengths of one label grid into ``out``.

    ``out`` has shape (n_views_chunk, n_materials, rows, cols); view ``i`` of the chunk is
    view ``v0 + i`` of ``vec`` (float64, (V, 12)). ``lut[label]`` is the material slot of a
    label, -1 for none. ``ox, oy, oz`` is the lower corner of the grid (mm), ``sx, sy, sz``
    the voxel size (mm). The exclusion box (``ex_lo``, ``ex_hi``) is skipped (empty when
    lo > hi). Sub-rays ``sub0 <= s < sub1`` of the ``ss x ss`` grid of each pixel are traced
    and their lengths averaged.

    Set-up (pixel position, direction, clipping to the grid and exclusion boxes, the entry
    voxel and the first boundary crossings) is float64; the traversal runs in float32 in
    ray parameters measured from the grid entry point, so its rounding scales with the
    grid size, not with the source distance.
    """
    nz, ny, nx = labels.shape[0], labels.shape[1], labels.shape[2]
    nv = out.shape[0]
    lo = ti.Vector([ox, oy, oz])
    sp = ti.Vector([sx, sy, sz])
    n = ti.Vector([nx, ny, nz])
    hi = lo + sp * ti.cast(n, ti.f64)
    ex_lo = ti.Vector([ex_lo_x, ex_lo_y, ex_lo_z])
    ex_hi = ti.Vector([ex_hi_x, ex_hi_y, ex_hi_z])
    inv_n = 1.0 / ti.cast(sub1 - sub0, ti.f32)
    nm = out.shape[1]
    for iv, r, c in ti.ndrange(nv, nrows, ncols):
        steps = 0
        acc = ti.Vector([0.0] * MAX_SLOTS)
        for sub in range(sub0, sub1):
            sr, sc = _sub_offset(sub, ss)
            origin, dir64, tmin, tmax = _pixel_ray(vec, v0 + iv, r, c, sr, sc, nrows, ncols, parallel)
            ta, tb = _slab(origin, dir64, lo, hi, tmin, tmax)
            if ta < tb:
                # local ray parameter t' = t - ta: the traversal below runs on [0, t1]
                t1 = ti.cast(tb - ta, ti.f32)
                e0 = 0.0
                e1 = 0.0
                if ex_lo_x <= ex_hi_x:
                    ea, eb = _slab(origin, dir64, ex_lo, ex_hi, ta, tb)
                    if ea < eb:
                        e0 = ti.cast(ea - ta, ti.f32)
                        e1 = ti.cast(eb - ta, ti.f32)
                # entry point in voxel units of the grid; the voxel of a point nudged inside
                q = (origin + dir64 * ta - lo) / sp
                p = q + dir64 * (1e-6 * (tb - ta)) / sp
                idx = ti.Vector([0, 0, 0])
                step = ti.Vector([0, 0, 0])
                tnext = ti.Vector([0.0, 0.0, 0.0])
                tdelta = ti.Vector([0.0, 0.0, 0.0])
                for k in ti.static(range(3)):
                    idx[k] = ti.min(ti.max(ti.cast(ti.floor(p[k]), ti.i32), 0), n[k] - 1)
                    if dir64[k] > 1e-12:
                        step[k] = 1
                        tdelta[k] = ti.cast(sp[k] / dir64[k], ti.f32)
                        tnext[k] = ti.cast((ti.cast(idx[k] + 1, ti.f64) - q[k]) * sp[k] / dir64[k], ti.f32)
                    elif dir64[k] < -1e-12:
                        step[k] = -1
                        tdelta[k] = ti.cast(-sp[k] / dir64[k], ti.f32)
                        tnext[k] = ti.cast((ti.cast(idx[k], ti.f64) - q[k]) * sp[k] / dir64[k], ti.f32)
                    else:
                        step[k] = 0
                        tdelta[k] = INF
                        tnext[k] = INF
                t = 0.0
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
                out[iv, m, r, c] = out[iv, m, r, c] + acc[m] * inv_n
        counter[iv % counter.shape[0]] += steps


@releasing
@ti.kernel
def _trace_mesh(vec: ti.types.ndarray(), tris: ti.types.ndarray(), tri_part: ti.types.ndarray(),
                node_lo: ti.types.ndarray(), node_hi: ti.types.ndarray(),
                node_a: ti.types.ndarray(), node_b: ti.types.ndarray(),
                out: ti.types.ndarray(), v0: int, nrows: int, ncols: int, parallel: int, ss: int,
                sub0: int, sub1: int):
    """Accumulate each part's inside length ``sum sign_i t_i`` into ``out[view, part, r, c]``.

    BVH layout: node ``i`` has box ``node_lo[i]``, ``node_hi[i]``; an inner node has
    ``node_a[i] = left child``, ``node_b[i] = -(right child) - 1``... see :func:`build_bvh`:
    leaves have ``node_b >= 0`` as the triangle count and ``node_a`` as the first triangle.
    Sub-rays ``sub0 <= s < sub1`` of the ``ss x ss`` grid of each pixel are traced and their
    lengths averaged.

    The ray is set up in float64 (``vec`` is float64) and clipped to the root box there; its
    origin is then moved to the entry point, so the float32 box and triangle tests and the
    hit distances ``t`` are relative to a point at the scene, not to a source hundreds of mm
    away.
    """
    nv = out.shape[0]
    n_parts = out.shape[1]
    inv_n = 1.0 / ti.cast(sub1 - sub0, ti.f32)
    root_lo = ti.cast(ti.Vector([node_lo[0, 0], node_lo[0, 1], node_lo[0, 2]]), ti.f64)
    root_hi = ti.cast(ti.Vector([node_hi[0, 0], node_hi[0, 1], node_hi[0, 2]]), ti.f64)
    for iv, r, c in ti.ndrange(nv, nrows, ncols):
        acc = ti.Vector([0.0] * MAX_SLOTS)
        for sub in range(sub0, sub1):
            sr, sc = _sub_offset(sub, ss)
            o64, d64, tmin64, tmax64 = _pixel_ray(vec, v0 + iv, r, c, sr, sc, nrows, ncols, parallel)
            ta, tb = _slab(o64, d64, root_lo, root_hi, tmin64, tmax64)
            if ta > tb:
                continue
            origin = ti.cast(o64 + d64 * ta, ti.f32)
            direc = ti.cast(d64, ti.f32)
            tmin = ti.cast(tmin64 - ta, ti.f32)
            tmax = ti.cast(tmax64 - ta, ti.f32)
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
                            # a ray exactly on a shared edge counts for one triangle only
                            hit, eu, ev, ew, det = _tri_hit(ax_, ay_, bx_, by_, cx_, cy_)
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
                out[iv, p, r, c] = out[iv, p, r, c] + acc[p] * inv_n


#: Fixed-point scale of the rasteriser's accumulators: a hit distance ``t`` (mm) is added as
#: the integer ``round(t 2^32)``. Integer sums do not depend on the order of the (parallel)
#: additions, so results are bit-identical run to run; the resolution is 2.3e-10 mm per hit.
FIXED_PER_MM = float(2 ** 32)
#: Padding (pixels) of the rasteriser's row and column ranges; the exact edge test decides.
RASTER_PAD_PX = 1e-6


@ti.func
def _project(x, o, pu, pw, pq, parallel, cx, cy):
    """Detector (column, row) index coordinates of point ``x`` (float64): see :func:`_projection`."""
    e = x - o
    lam = ti.cast(1.0, ti.f64)
    if parallel == 0:
        lam = e.dot(pq)
    return e.dot(pu) / lam + cx, e.dot(pw) / lam + cy


@ti.func
def _index_range(lo, hi, first, last):
    """Integers ``i`` with ``lo - pad <= i <= hi + pad`` (``pad`` = :data:`RASTER_PAD_PX`),
    clipped to ``[first, last]``; empty (first > last) when none. The float64 bounds are
    clamped to ``[first - 1, last + 1]`` before the conversion, so infinite or huge ones are
    safe on every backend."""
    f_lo = ti.cast(first - 1, ti.f64)
    f_hi = ti.cast(last + 1, ti.f64)
    i_lo = ti.cast(ti.ceil(ti.min(ti.max(lo, f_lo), f_hi) - RASTER_PAD_PX), ti.i32)
    i_hi = ti.cast(ti.floor(ti.max(ti.min(hi, f_hi), f_lo) + RASTER_PAD_PX), ti.i32)
    return ti.max(first, i_lo), ti.min(last, i_hi)


@ti.func
def _raster_lines(acc: ti.template(), iv, part, xa, ya, xb, yb, xc, yc, l_lo, l_hi, m_min,
                  m_max, sl, nslice, transposed: ti.template(), q, u, w, n0, k0, ku, kw, cx, cy,
                  hand, parallel, row0):
    """Scan lines ``l_lo <= l <= l_hi`` (``l = sl mod nslice``) of one projected triangle: rows
    (``transposed`` False) or columns (True, for triangles taller than wide); on each line
    the pixels ``m_min <= m <= m_max`` within the triangle's padded span get the exact test
    and, if hit, the fixed-point ``sign t``."""
    # line coordinate (y for rows) and along-line coordinate (x for rows) of the vertices
    la, lb, lc, ma, mb, mc = ya, yb, yc, xa, xb, xc
    if ti.static(transposed):
        la, lb, lc, ma, mb, mc = xa, xb, xc, ya, yb, yc
    e_l0 = ti.Vector([la, lb, lc])
    e_m0 = ti.Vector([ma, mb, mc])
    e_l1 = ti.Vector([lb, lc, la])
    e_m1 = ti.Vector([mb, mc, ma])
    slope = ti.Vector([0.0, 0.0, 0.0], dt=ti.f64)
    for k in ti.static(range(3)):
        if e_l1[k] != e_l0[k]:
            slope[k] = (e_m1[k] - e_m0[k]) / (e_l1[k] - e_l0[k])
    line = l_lo + ((sl - l_lo) % nslice + nslice) % nslice
    while line <= l_hi:
        fl = ti.cast(line, ti.f64)
        m_lo = ti.cast(INF, ti.f64)
        m_hi = -m_lo
        # conservative span on the line: the edges crossing it (or within the padding of it:
        # an edge nearly along the line then gives its whole clamped span)
        for k in ti.static(range(3)):
            elo = ti.min(e_m0[k], e_m1[k])
            ehi = ti.max(e_m0[k], e_m1[k])
            near = ti.min(e_l0[k], e_l1[k]) <= fl + RASTER_PAD_PX
            if near and ti.max(e_l0[k], e_l1[k]) >= fl - RASTER_PAD_PX:
                if e_l1[k] == e_l0[k]:
                    m_lo = ti.min(m_lo, elo)
                    m_hi = ti.max(m_hi, ehi)
                else:
                    mm = ti.min(ti.max(e_m0[k] + (fl - e_l0[k]) * slope[k], elo), ehi)
                    m_lo = ti.min(m_lo, mm)
                    m_hi = ti.max(m_hi, mm)
        p_lo, p_hi = _index_range(m_lo, m_hi, m_min, m_max)
        for pp in range(p_lo, p_hi + 1):
            r = line
            c = pp
            if ti.static(transposed):
                r = pp
                c = line
            fc = ti.cast(c, ti.f64)
            y = ti.cast(r, ti.f64)
            ax_ = xa - fc
            ay_ = ya - y
            bx_ = xb - fc
            by_ = yb - y
            cx_ = xc - fc
            cy_ = yc - y
            hit, _eu, _ev, _ew, det = _tri_hit(ax_, ay_, bx_, by_, cx_, cy_)
            if hit:
                cu = fc - cx
                rv = y - cy
                t = ti.cast(0.0, ti.f64)
                if parallel == 0:
                    dd = q + cu * u + rv * w
                    t = n0 / (k0 + cu * ku + rv * kw) * dd.norm()
                else:
                    t = (n0 - cu * ku - rv * kw) / k0
                # det (= -2 x the signed area of the projected triangle) x the view's
                # handedness < 0: the outward normal points along the ray (leaving)
                sgn = -1.0
                if det * hand < 0.0:
                    sgn = 1.0
                acc[iv, part, r - row0, c] += ti.cast(ti.floor(sgn * t * FIXED_PER_MM + 0.5), ti.i64)
        line += nslice


@releasing
@ti.kernel
def _raster_mesh(vec: ti.types.ndarray(), proj: ti.types.ndarray(), tris: ti.types.ndarray(),
                 tri_part: ti.types.ndarray(), acc: ti.types.ndarray(), nrows: int, ncols: int,
                 parallel: int, sr: ti.f64, sc: ti.f64, nslice: int, row0: int):
    """Add ``round(sign t 2^32)`` of every triangle hit to ``acc[view, part, r - row0, c]`` (int64).

    Triangle-parallel rasterisation in the detector plane, float64 throughout. The vertices
    are mapped with the per-view ``proj`` (:func:`_projection`) to detector index
    coordinates, where pixel (r, c) is centred at (x, y) = (c, r) once the sub-ray offset
    ``(sr, sc)`` is taken off; a vertex lands on the same point in every triangle that has
    it. A pixel's ray hits the triangle when its centre lies inside the projected triangle,
    decided by the watertight edge-function test and tie rule of :func:`_tri_hit` in float64
    (shared edges give exactly opposite edge functions: no pixel is lost or counted twice
    between two triangles); the scan only narrows the candidates to the triangle's padded span, line by
    line along its longer side. The hit distance follows from the triangle's plane
    ``n = (v1 - v0) x (v2 - v0)``: cone ``t = |D| n.(v0 - s) / n.D`` along
    ``D = q + cu u + rv w``, parallel ``t = n.(v0 - pix) / n.r``; the sign is ``+1`` where
    the ray leaves the part. Slice ``sl`` of ``nslice`` does every ``nslice``-th line (load
    balance for a few large triangles); ``acc`` holds the detector rows
    ``row0 ... row0 + acc.shape[2] - 1``. Integer additions commute, so the result does
    not depend on the order the threads add in.
    """
    nv = acc.shape[0]
    nf = tris.shape[0]
    r_first = row0
    r_last = row0 + acc.shape[2] - 1
    cx = 0.5 * ti.cast(ncols - 1, ti.f64) - sc
    cy = 0.5 * ti.cast(nrows - 1, ti.f64) - sr
    for iv, f, sl in ti.ndrange(nv, nf, nslice):
        o = ti.Vector([proj[iv, 0, 0], proj[iv, 0, 1], proj[iv, 0, 2]])
        pu = ti.Vector([proj[iv, 1, 0], proj[iv, 1, 1], proj[iv, 1, 2]])
        pw = ti.Vector([proj[iv, 2, 0], proj[iv, 2, 1], proj[iv, 2, 2]])
        pq = ti.Vector([proj[iv, 3, 0], proj[iv, 3, 1], proj[iv, 3, 2]])
        hand = proj[iv, 4, 0]
        x0 = ti.Vector([tris[f, 0, 0], tris[f, 0, 1], tris[f, 0, 2]])
        x1 = ti.Vector([tris[f, 1, 0], tris[f, 1, 1], tris[f, 1, 2]])
        x2 = ti.Vector([tris[f, 2, 0], tris[f, 2, 1], tris[f, 2, 2]])
        xa, ya = _project(x0, o, pu, pw, pq, parallel, cx, cy)
        xb, yb = _project(x1, o, pu, pw, pq, parallel, cx, cy)
        xc, yc = _project(x2, o, pu, pw, pq, parallel, cx, cy)
        r_lo, r_hi = _index_range(ti.min(ya, yb, yc), ti.max(ya, yb, yc), r_first, r_last)
        c_lo, c_hi = _index_range(ti.min(xa, xb, xc), ti.max(xa, xb, xc), 0, ncols - 1)
        if r_lo <= r_hi and c_lo <= c_hi:
            a = ti.Vector([vec[iv, 0], vec[iv, 1], vec[iv, 2]])
            d = ti.Vector([vec[iv, 3], vec[iv, 4], vec[iv, 5]])
            u = ti.Vector([vec[iv, 6], vec[iv, 7], vec[iv, 8]])
            w = ti.Vector([vec[iv, 9], vec[iv, 10], vec[iv, 11]])
            nt = (x1 - x0).cross(x2 - x0)
            q = d - a
            k0 = nt.dot(q)
            n0 = nt.dot(x0 - a)
            if parallel == 1:
                k0 = nt.dot(a) / a.norm()      # n . r_hat
                n0 = nt.dot(x0 - d)
            ku = nt.dot(u)
            kw = nt.dot(w)
            part = tri_part[f]
            if r_hi - r_lo > c_hi - c_lo:
                _raster_lines(acc, iv, part, xa, ya, xb, yb, xc, yc, c_lo, c_hi, r_first, r_last, sl, nslice,
                              True, q, u, w, n0, k0, ku, kw, cx, cy, hand, parallel, row0)
            else:
                _raster_lines(acc, iv, part, xa, ya, xb, yb, xc, yc, r_lo, r_hi, 0, ncols - 1, sl, nslice,
                              False, q, u, w, n0, k0, ku, kw, cx, cy, hand, parallel, row0)


@releasing
@ti.kernel
def _parts_to_materials(inside: ti.types.ndarray(), amat: ti.types.ndarray(), limits: ti.types.ndarray(),
                        out: ti.types.ndarray(), scale: ti.f64, offset: int, bad: ti.types.ndarray(),
                        n_parts: ti.template(), nm: ti.template()):
    """``out[v, m, offset + i] += scale sum_p amat[m, p] inside[v, p, i]`` (float64 sum, float32 out).

    The pixels of a view are flattened (``i = row * cols + col``; ``offset`` is the first
    row's). ``inside`` is the rasteriser's int64 fixed-point sums (``scale = 2^-32 /
    n_subrays``) or the ray tracer's float32 lengths (``scale = 1``); the kernel is compiled
    for each dtype. A part's length ``scale inside`` outside ``[limits[p, 0], limits[p, 1]]``
    (``-eps`` and its box diagonal: a lone entry or exit hit) is taken as 0, and ``bad[0]``
    counts the pixels that had such a part.
    """
    nv, npx = inside.shape[0], inside.shape[2]
    # the limits in units of ``inside``, computed once outside the parallel loop
    lo = ti.Vector([limits[p, 0] / scale for p in ti.static(range(n_parts))], dt=ti.f64)
    hi = ti.Vector([limits[p, 1] / scale for p in ti.static(range(n_parts))], dt=ti.f64)
    for v, i in ti.ndrange(nv, npx):
        x = ti.Vector([0.0] * n_parts, dt=ti.f64)
        # > 0 when some part is out of its limits (one branch per pixel, not two per part)
        worst = ti.cast(-1.0, ti.f64)
        for p in ti.static(range(n_parts)):
            x[p] = ti.cast(inside[v, p, i], ti.f64)
            worst = ti.max(worst, lo[p] - x[p], x[p] - hi[p])
        if worst > 0.0:
            bad[0] += 1
            for p in ti.static(range(n_parts)):
                if x[p] < lo[p] or x[p] > hi[p]:
                    x[p] = 0.0
        for m in ti.static(range(nm)):
            y = ti.cast(0.0, ti.f64)
            for p in ti.static(range(n_parts)):
                y += amat[m, p] * x[p]
            if y != 0.0:
                out[v, m, offset + i] += ti.cast(y * scale, ti.f32)


def _projection(vectors: np.ndarray, parallel: bool) -> np.ndarray:
    """Per-view maps from sample coordinates to detector coordinates, shape (V, 5, 3), float64.

    Cone: with ``B = [u w q]`` (columns; ``q = d - s``), a point ``x`` satisfies
    ``x - s = lam B (cu, rv, 1)``, so rows 1-3 are the rows of ``B^-1`` and row 0 is ``s``:
    ``cu = (x - s).B1 / lam``, ``rv = (x - s).B2 / lam``, ``lam = (x - s).B3`` (the fraction
    of the way to the detector). Parallel: ``B = [u w r]`` and row 0 is ``d``. Row 4 holds
    ``sign(det B)`` (the handedness of the view) in its first entry.
    """
    vec = np.asarray(vectors, np.float64)
    out = np.zeros((len(vec), 5, 3))
    for i, v in enumerate(vec):
        a, d, u, w = v[0:3], v[3:6], v[6:9], v[9:12]
        third = a if parallel else d - a
        b = np.stack([u, w, third], axis=1)
        out[i, 0] = d if parallel else a
        out[i, 1:4] = np.linalg.inv(b)
        out[i, 4, 0] = np.sign(np.linalg.det(b))
    return out


def can_rasterise(vectors: np.ndarray, triangles: np.ndarray, *, parallel: bool = False) -> bool:
    """Whether the rasteriser applies: every vertex strictly between the source and the
    detector in every view (cone beam; checked at the 8 corners of the triangles' box, since
    ``lam`` is linear in the point), so that projecting through the source is the same as
    tracing the rays from it to the pixels. Always for parallel beam.

    Parameters
    ----------
    vectors : ndarray, shape (V, 12)
    triangles : ndarray, shape (F, 3, 3) or (K, 3)
        Vertices (mm), or any points whose box contains them.
    """
    if parallel:
        return True
    return _between_source_and_detector(_projection(vectors, False), triangles)


def _between_source_and_detector(proj: np.ndarray, points: np.ndarray) -> bool:
    """:func:`can_rasterise` (cone beam) with the views' :func:`_projection` at hand."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    if len(pts) == 0:
        return True
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    lam = np.einsum("vk,vck->vc", proj[:, 3], corners[None] - proj[:, 0][:, None])
    return bool(lam.min() > 1e-6 and lam.max() < 1.0 - 1e-9)


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


def sub_offsets(ss: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) offsets in pixels of the ``ss x ss`` sub-rays of a pixel, float64.

    Sub-ray ``i`` (row-major: ``i = j ss + k``) sits ``(j + 0.5) / ss - 0.5`` rows and
    ``(k + 0.5) / ss - 0.5`` columns from the pixel centre: the formula of the kernels'
    :func:`_sub_offset` (which may differ in the last bit: Taichi compiles with fast math).
    Returns two arrays of shape ``(ss * ss,)``.
    """
    ss = int(ss)
    i = np.arange(ss * ss)
    return ((i // ss) + 0.5) / ss - 0.5, ((i % ss) + 0.5) / ss - 0.5


def _sub_range(supersample: int, subray: int | None) -> tuple[int, int]:
    """Sub-ray index range [s0, s1) traced: all ss x ss (averaged) or the one asked for."""
    ss = int(supersample)
    if ss < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if subray is None:
        return 0, ss * ss
    if not 0 <= int(subray) < ss * ss:
        raise ValueError(f"subray must be in [0, {ss * ss}), got {subray}")
    return int(subray), int(subray) + 1


def grid_path_lengths(vectors: np.ndarray, labels: np.ndarray, lut: np.ndarray, n_materials: int,
                      lower_mm, spacing_mm, rows: int, cols: int, *, parallel: bool = False,
                      supersample: int = 1, subray: int | None = None, exclude_box_mm=None,
                      out: np.ndarray | None = None, view_start: int = 0, n_views: int | None = None,
                      arch: str = "auto") -> tuple[np.ndarray, int]:
    """Per-material path lengths (mm) of rays through one label grid.

    Parameters
    ----------
    vectors : ndarray, shape (V, 12)
        Per-view geometry (:meth:`twin.geometry.ScanGeometry.vectors`), mm; used in float64.
    labels : ndarray of ints, shape (nz, ny, nx)
    lut : ndarray of int32, shape (max_label + 1,)
        Material slot of each label, -1 for labels that do not attenuate (background).
    lower_mm, spacing_mm : (x, y, z)
        Lower corner of the grid (voxel edge, mm) and voxel size (mm).
    supersample : int
        ``ss``: each pixel is sampled by an ``ss x ss`` grid of sub-rays at
        ``((i + 0.5) / ss - 0.5)`` pixels from its centre (row-major index ``i * ss + j``).
    subray : int, optional
        Trace only this sub-ray of each pixel (``0 <= subray < ss**2``). By default all
        sub-rays are traced and their path lengths averaged.
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
    s0, s1 = _sub_range(supersample, subray)
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
    _trace_grid(np.ascontiguousarray(vectors, np.float64), lab, np.ascontiguousarray(lut, np.int32),
                out, int(view_start), int(rows), int(cols), int(parallel),
                *map(float, lower_mm), *map(float, spacing_mm), *map(float, ex_lo), *map(float, ex_hi),
                int(supersample), s0, s1, counter)
    return out, int(counter.sum())


#: Most bytes of the rasteriser's int64 accumulators in one call (views x parts x rows x cols x 8).
RASTER_BYTES = 128 * 2 ** 20
#: Most iterations of one Taichi ``ti.ndrange``: Taichi computes the total in 32-bit integers,
#: and a larger range silently runs no iteration at all (taichi-dev/taichi#5932).
MAX_NDRANGE = 2 ** 31 - 1


def raster_chunk_plan(n_views: int, n_faces: int, n_parts: int, rows: int, cols: int, *,
                      target_items: int, budget_bytes: int | None = None) -> tuple[int, int, int]:
    """How the rasteriser splits its work: ``(nslice, views per call, detector rows per block)``.

    Each triangle's scan lines are dealt to ``nslice`` work items (1 to 64) so that a call has
    about ``target_items`` of them (load balance for a few large triangles); the int64
    accumulators of one call (views x parts x rows x cols x 8 bytes) stay within
    ``budget_bytes`` (default :data:`RASTER_BYTES`); and the kernel's loop over
    ``views x faces x nslice`` stays within :data:`MAX_NDRANGE`.

    Raises
    ------
    XrmInputError
        When ``n_faces x nslice`` alone exceeds :data:`MAX_NDRANGE` (even one view cannot be
        rasterised in one call).
    """
    budget = RASTER_BYTES if budget_bytes is None else int(budget_bytes)
    n_f = max(int(n_faces), 1)
    nslice = int(min(64, max(1, -(-int(target_items) // n_f))))
    per_view = n_f * nslice
    if per_view > MAX_NDRANGE:
        raise XrmInputError(f"the meshes have {n_faces} triangles ({nslice} work items each): the "
                            f"rasteriser runs at most {MAX_NDRANGE} (2^31 - 1, Taichi's 32-bit loop "
                            f"range) per view; decimate the meshes or split the scene")
    row_bytes = n_parts * cols * 8
    block = int(max(1, min(rows, budget // max(row_bytes, 1))))
    views = int(max(1, min(n_views, budget // max(row_bytes * block, 1), MAX_NDRANGE // per_view)))
    return nslice, views, block


def part_diagonals(triangles: np.ndarray, tri_part: np.ndarray, n_parts: int) -> np.ndarray:
    """Diagonal (mm) of each part's bounding box, shape (n_parts,): no chord through the part is
    longer. 0 for a part without triangles."""
    tri64 = np.asarray(triangles, np.float64)
    part = np.asarray(tri_part, np.int64)
    diag = np.zeros(n_parts)
    if len(part) == 0:
        return diag
    # (element-wise over the 3 vertices: numpy's reductions over a short axis are slow)
    tlo = np.minimum(np.minimum(tri64[:, 0], tri64[:, 1]), tri64[:, 2])
    thi = np.maximum(np.maximum(tri64[:, 0], tri64[:, 1]), tri64[:, 2])
    if np.any(np.diff(part) < 0):
        order = np.argsort(part, kind="stable")
        part, tlo, thi = part[order], tlo[order], thi[order]
    start = np.r_[0, np.flatnonzero(np.diff(part)) + 1]
    diag[part[start]] = np.linalg.norm(np.maximum.reduceat(thi, start) - np.minimum.reduceat(tlo, start),
                                       axis=1)
    return diag


def _part_limits(diagonals_mm: np.ndarray, eps_mm: float) -> np.ndarray:
    """Plausible inside lengths of each part, shape (n_parts, 2): ``[-eps, diagonal + eps]``."""
    diag = np.asarray(diagonals_mm, np.float64)
    return np.stack([np.full(diag.shape, -eps_mm), diag * (1.0 + 1e-6) + eps_mm], axis=1)


def _finish(inside: np.ndarray, amat: np.ndarray, limits: np.ndarray, out: np.ndarray, scale: float,
            row0: int, bad: np.ndarray) -> None:
    """:func:`_parts_to_materials` of ``inside`` (views, parts, rows, cols) into the rows from
    ``row0`` of ``out`` (views, materials, all rows, cols; C-contiguous, so the flat views below
    share its memory)."""
    nv, n_parts, nr, nc = inside.shape
    if not (inside.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("_finish needs C-contiguous arrays (a reshaped copy would not be written back)")
    _parts_to_materials(inside.reshape(nv, n_parts, nr * nc), amat, limits,
                        out.reshape(nv, out.shape[1], -1), float(scale), int(row0) * nc, bad,
                        int(n_parts), int(amat.shape[0]))


def mesh_path_lengths(vectors: np.ndarray, triangles: np.ndarray, tri_part: np.ndarray,
                      n_parts: int, rows: int, cols: int, *, parallel: bool = False,
                      supersample: int = 1, subray: int | None = None,
                      bvh: dict | Callable[[], dict] | None = None,
                      material_matrix: np.ndarray | None = None, out: np.ndarray | None = None,
                      view_start: int = 0, n_views: int | None = None, method: str = "auto",
                      bounds_mm: np.ndarray | None = None, part_diagonals_mm: np.ndarray | None = None,
                      arch: str = "auto") -> np.ndarray:
    """Inside length (mm) of each closed part along each ray, shape (n_views, n_parts, rows, cols).

    Parameters
    ----------
    vectors : ndarray, shape (V, 12)
        Per-view geometry (:meth:`twin.geometry.ScanGeometry.vectors`), mm.
    triangles : ndarray, shape (F, 3, 3)
        Vertices (mm), consistently wound with outward normals (``(v1 - v0) x (v2 - v0)``
        pointing out), as trimesh gives for watertight meshes.
    tri_part : ndarray of int, shape (F,)
        Part index of each triangle.
    supersample, subray
        As in :func:`grid_path_lengths`.
    bvh : dict or callable, optional
        The :func:`build_bvh` of ``triangles``, or a function returning it (called only when
        the BVH tracer runs, so a caller can cache it without building it for the
        rasteriser). Built here when needed and not given.
    material_matrix : ndarray, shape (M, n_parts), optional
        Return ``A @ inside`` (per-material lengths, shape (n_views, M, rows, cols)) instead
        of the per-part inside lengths.
    out : ndarray float32, optional
        Accumulated into (``+=``) when given.
    method : {"auto", "raster", "bvh"}
        ``"raster"``: triangle-parallel rasterisation in the detector plane (projecting the
        vertices through the source is exact for straight rays from it; float64, integer
        accumulation); ``"bvh"``: one BVH traversal per ray. ``"auto"`` rasterises when every
        vertex lies between the source and the detector (always for parallel beam), else
        traverses; this function is the one place that decides. Both trace the same rays
        and are watertight; they agree to the ray tracer's float32 rounding, except that a
        ray exactly on a shared edge or vertex may be given to a different triangle by each.
    bounds_mm : ndarray, shape (2, 3), optional
        Lower and upper corner of a box holding all triangles (saves computing it).
    part_diagonals_mm : ndarray, shape (n_parts,), optional
        :func:`part_diagonals` of the triangles (saves computing it).

    Returns
    -------
    ndarray float32, shape (n_views, n_parts or M, rows, cols)

    Notes
    -----
    A part's inside length below ``-eps`` or above its bounding-box diagonal (a lone entry
    or exit hit: possible for a ray exactly on an edge of a face that lies in a plane through
    the source) is taken as 0; the number of such pixels is logged as a warning. With
    sub-rays averaged (``subray=None``) the test applies to the average.
    """
    init_taichi(arch)
    s0, s1 = _sub_range(supersample, subray)
    if method not in ("auto", "raster", "bvh"):
        raise ValueError(f"method must be 'auto', 'raster' or 'bvh', got {method!r}")
    nv = len(vectors) - view_start if n_views is None else n_views
    vec = np.ascontiguousarray(np.asarray(vectors, np.float64)[view_start:view_start + nv])
    amat = np.ascontiguousarray(np.eye(n_parts) if material_matrix is None else material_matrix,
                                np.float64)
    if amat.shape[1] != n_parts:
        raise ValueError(f"material_matrix must have {n_parts} columns, got shape {amat.shape}")
    if out is None:
        out = np.zeros((nv, amat.shape[0], rows, cols), np.float32)
    elif (out.shape != (nv, amat.shape[0], rows, cols) or out.dtype != np.float32
          or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous float32 array of shape "
                         f"{(nv, amat.shape[0], rows, cols)}, got {out.dtype} {out.shape}")
    tri64 = np.asarray(triangles, np.float64)
    box = bounds_mm
    if box is None:
        flat = tri64.reshape(-1, 3)
        box = (np.stack([flat.min(axis=0), flat.max(axis=0)]) if len(flat) else np.zeros((2, 3)))
    box = np.asarray(box, np.float64)
    proj = None
    if method != "bvh":
        proj = _projection(vec, parallel)
        ok = parallel or _between_source_and_detector(proj, box)
        if method == "raster" and not ok:
            raise ValueError("method='raster' needs every vertex between the source and the "
                             "detector in every view; use 'bvh' or 'auto'")
        method = "raster" if ok else "bvh"
    # float32 rounding of hit distances ~ eps x (coordinates + distance from the ray origin,
    # the entry into the mesh box): lengths above -eps are rounding, not a lost hit
    reach = float(np.abs(box).max() + np.linalg.norm(box[1] - box[0]))
    eps = max(1e-5, 64 * float(np.finfo(np.float32).eps) * reach)
    if part_diagonals_mm is None:
        part_diagonals_mm = part_diagonals(tri64, tri_part, n_parts)
    limits = _part_limits(part_diagonals_mm, eps)
    bad = np.zeros(1, np.int64)
    if method == "raster":
        _raster_path_lengths(vec, proj, tri64, tri_part, n_parts, rows, cols, parallel, int(supersample),
                             s0, s1, amat, limits, out, bad)
    else:
        if callable(bvh):
            bvh = bvh()
        if bvh is None:
            bvh = build_bvh(tri64)
        order = bvh["order"]
        tris = np.ascontiguousarray(tri64[order], np.float32)
        parts = np.ascontiguousarray(np.asarray(tri_part)[order], np.int32)
        inside = np.zeros((nv, n_parts, rows, cols), np.float32)
        # float32 box tests err by ~eps x (coordinates + distance from the ray origin, which is
        # now the entry into the root box): pad every box by a few times that, or a ray grazing
        # a leaf box could skip the triangle it hits
        reach = float(np.abs(tris).max() + np.linalg.norm(bvh["hi"][0] - bvh["lo"][0]))
        pad = np.float32(max(1e-5, 8 * np.finfo(np.float32).eps * reach))
        _trace_mesh(vec, tris, parts, bvh["lo"] - pad, bvh["hi"] + pad, bvh["a"], bvh["b"], inside, 0,
                    int(rows), int(cols), int(parallel), int(supersample), s0, s1)
        _finish(inside, amat, limits, out, 1.0, 0, bad)
    if bad[0]:
        _log.warning("mesh path lengths: %d of %d rays had a part's inside length outside "
                     "[-%.1e mm, its box diagonal] (a lone entry or exit hit, e.g. a ray exactly on "
                     "an edge of a face in a plane through the source); those lengths were set to 0",
                     int(bad[0]), nv * rows * cols, eps)
    return out


def _raster_path_lengths(vec: np.ndarray, proj: np.ndarray, tri64: np.ndarray, tri_part: np.ndarray,
                         n_parts: int, rows: int, cols: int, parallel: bool, ss: int, s0: int, s1: int,
                         amat: np.ndarray, limits: np.ndarray, out: np.ndarray, bad: np.ndarray) -> None:
    """The rasteriser of :func:`mesh_path_lengths`, in view chunks and row blocks
    (:func:`raster_chunk_plan`)."""
    from twin.runtime import current_arch, gpu_stand_in

    if gpu_stand_in():
        _log.warning("the Vulkan stand-in for CUDA loses work items of the mesh rasteriser "
                     "(a Taichi Vulkan defect, tests/test_gpu_paths_stand_in.py): mesh path "
                     "lengths are wrong on it; use the CPU or a real GPU for meshes")
    nv = len(vec)
    tris = np.ascontiguousarray(tri64)
    parts = np.ascontiguousarray(tri_part, np.int32)
    # few large triangles: split each one's lines over several work items (load balance)
    target = 262144 if current_arch() == "cuda" else 4096
    nslice, views, block = raster_chunk_plan(nv, len(tris), n_parts, rows, cols, target_items=target)
    scale = 1.0 / (FIXED_PER_MM * (s1 - s0))
    sr_all, sc_all = sub_offsets(ss)
    for v0 in range(0, nv, views):
        nvc = min(views, nv - v0)
        for r0 in range(0, rows, block):
            nr = min(block, rows - r0)
            acc = np.zeros((nvc, n_parts, nr, cols), np.int64)
            for sub in range(s0, s1):
                _raster_mesh(vec[v0:v0 + nvc], proj[v0:v0 + nvc], tris, parts, acc, int(rows),
                             int(cols), int(parallel), float(sr_all[sub]), float(sc_all[sub]), nslice,
                             int(r0))
            _finish(acc, amat, limits, out[v0:v0 + nvc], scale, r0, bad)
