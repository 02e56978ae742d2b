"""Taichi kernels that paint many small solids (struts, fibres, particles, cracks) into a grid.

Each solid is visited once and only the voxels of its bounding box are tested, so the cost is
(number of solids) x (bounding-box volume), independent of the grid size. Work is parallel over
solids. A voxel is painted only if its current label is a *host* label (e.g. Ni foam only
replaces the positive paste); instance ids are written with an atomic max so overlapping solids
give the same result whatever the thread order.

Coordinates handed to the kernels are fractional voxel indices (x = i, y = j, z = k) and
lengths are in voxels.
"""

# no "from __future__ import annotations": Taichi reads kernel annotations at runtime

from typing import Any, Sequence

import numpy as np

from twin.runtime import kernels_once, releasing

__all__ = ["paint_rounded_sheets", "paint_slabs", "host_table"]


@kernels_once
def _kernels() -> dict[str, Any]:
    import taichi as ti

    @releasing
    @ti.kernel
    def sheets(labels: ti.types.ndarray(dtype=ti.u8, ndim=3),
               inst: ti.types.ndarray(dtype=ti.i32, ndim=3),
               prim: ti.types.ndarray(dtype=ti.f64, ndim=2),
               ids: ti.types.ndarray(dtype=ti.i32, ndim=1),
               host: ti.types.ndarray(dtype=ti.u8, ndim=1),
               new_label: ti.i32, write_inst: ti.i32):
        nz, ny, nx = labels.shape[0], labels.shape[1], labels.shape[2]
        for s in range(prim.shape[0]):
            c = ti.Vector([prim[s, 0], prim[s, 1], prim[s, 2]])
            u = ti.Vector([prim[s, 3], prim[s, 4], prim[s, 5]])
            v = ti.Vector([prim[s, 6], prim[s, 7], prim[s, 8]])
            hl, hw, r = prim[s, 9], prim[s, 10], prim[s, 11]
            ext = ti.abs(u) * hl + ti.abs(v) * hw + r
            i0 = ti.max(0, ti.cast(ti.ceil(c[0] - ext[0]), ti.i32))
            i1 = ti.min(nx - 1, ti.cast(ti.floor(c[0] + ext[0]), ti.i32))
            j0 = ti.max(0, ti.cast(ti.ceil(c[1] - ext[1]), ti.i32))
            j1 = ti.min(ny - 1, ti.cast(ti.floor(c[1] + ext[1]), ti.i32))
            k0 = ti.max(0, ti.cast(ti.ceil(c[2] - ext[2]), ti.i32))
            k1 = ti.min(nz - 1, ti.cast(ti.floor(c[2] + ext[2]), ti.i32))
            r2 = r * r
            for k in range(k0, k1 + 1):
                for j in range(j0, j1 + 1):
                    for i in range(i0, i1 + 1):
                        q = ti.Vector([ti.cast(i, ti.f64), ti.cast(j, ti.f64),
                                       ti.cast(k, ti.f64)]) - c
                        a = ti.min(ti.max(q.dot(u), -hl), hl)
                        b = ti.min(ti.max(q.dot(v), -hw), hw)
                        d = q - a * u - b * v
                        if d.dot(d) <= r2:
                            lab = ti.cast(labels[k, j, i], ti.i32)
                            if host[lab] != 0:
                                labels[k, j, i] = ti.cast(new_label, ti.u8)
                                if write_inst != 0:
                                    ti.atomic_max(inst[k, j, i], ids[s])

    @releasing
    @ti.kernel
    def slabs(labels: ti.types.ndarray(dtype=ti.u8, ndim=3),
              inst: ti.types.ndarray(dtype=ti.i32, ndim=3),
              prim: ti.types.ndarray(dtype=ti.f64, ndim=2),
              ids: ti.types.ndarray(dtype=ti.i32, ndim=1),
              host: ti.types.ndarray(dtype=ti.u8, ndim=1),
              new_label: ti.i32, write_inst: ti.i32, elliptic: ti.i32):
        nz, ny, nx = labels.shape[0], labels.shape[1], labels.shape[2]
        for s in range(prim.shape[0]):
            c = ti.Vector([prim[s, 0], prim[s, 1], prim[s, 2]])
            n = ti.Vector([prim[s, 3], prim[s, 4], prim[s, 5]])
            u = ti.Vector([prim[s, 6], prim[s, 7], prim[s, 8]])
            v = ti.Vector([prim[s, 9], prim[s, 10], prim[s, 11]])
            ht, ha, hb = prim[s, 12], prim[s, 13], prim[s, 14]
            ext = ti.abs(n) * ht + ti.abs(u) * ha + ti.abs(v) * hb
            i0 = ti.max(0, ti.cast(ti.ceil(c[0] - ext[0]), ti.i32))
            i1 = ti.min(nx - 1, ti.cast(ti.floor(c[0] + ext[0]), ti.i32))
            j0 = ti.max(0, ti.cast(ti.ceil(c[1] - ext[1]), ti.i32))
            j1 = ti.min(ny - 1, ti.cast(ti.floor(c[1] + ext[1]), ti.i32))
            k0 = ti.max(0, ti.cast(ti.ceil(c[2] - ext[2]), ti.i32))
            k1 = ti.min(nz - 1, ti.cast(ti.floor(c[2] + ext[2]), ti.i32))
            for k in range(k0, k1 + 1):
                for j in range(j0, j1 + 1):
                    for i in range(i0, i1 + 1):
                        q = ti.Vector([ti.cast(i, ti.f64), ti.cast(j, ti.f64),
                                       ti.cast(k, ti.f64)]) - c
                        t = q.dot(n)
                        a = q.dot(u) / ha
                        b = q.dot(v) / hb
                        inside = ti.abs(t) <= ht
                        if elliptic != 0:
                            inside = inside and (a * a + b * b <= 1.0)
                        else:
                            inside = inside and ti.abs(a) <= 1.0 and ti.abs(b) <= 1.0
                        if inside:
                            lab = ti.cast(labels[k, j, i], ti.i32)
                            if host[lab] != 0:
                                labels[k, j, i] = ti.cast(new_label, ti.u8)
                                if write_inst != 0:
                                    ti.atomic_max(inst[k, j, i], ids[s])

    return {"sheets": sheets, "slabs": slabs}


def host_table(hosts: Sequence[int], new_label: int) -> np.ndarray:
    """Lookup table (256,) uint8: 1 for labels that may be overwritten (and ``new_label``)."""
    t = np.zeros(256, dtype=np.uint8)
    t[list(hosts)] = 1
    t[new_label] = 1
    return t


def _inst_arg(instances):
    if instances is None:
        return np.zeros((1, 1, 1), np.int32), 0
    return instances, 1


def paint_rounded_sheets(labels: np.ndarray, prim: np.ndarray, *, hosts: Sequence[int],
                         new_label: int, instances: np.ndarray | None = None,
                         ids: np.ndarray | None = None) -> None:
    """Paint the points within ``r`` of a rectangle (capsule if width 0, ball if both 0).

    Parameters
    ----------
    labels : ndarray of uint8, shape (nz, ny, nx), C-contiguous
        Modified in place.
    prim : ndarray of float64, shape (n, 12)
        Per solid: centre (x, y, z), unit axis u (3), unit axis v (3) orthogonal to u, half
        length along u, half width along v, radius; all in voxels.
    hosts : sequence of int
        Labels that may be overwritten.
    new_label : int
    instances : ndarray of int32, shape (nz, ny, nx), optional
        Instance ids, updated with ``max(current, ids[s])`` where solid ``s`` paints.
    ids : ndarray of int32, shape (n,), optional
    """
    if len(prim) == 0:
        return
    inst, w = _inst_arg(instances)
    ids = np.zeros(len(prim), np.int32) if ids is None else np.ascontiguousarray(ids, np.int32)
    _kernels()["sheets"](labels, inst, np.ascontiguousarray(prim, np.float64), ids,
                         host_table(hosts, new_label), int(new_label), w)


def paint_slabs(labels: np.ndarray, prim: np.ndarray, *, hosts: Sequence[int], new_label: int,
                elliptic: bool = False, instances: np.ndarray | None = None,
                ids: np.ndarray | None = None) -> None:
    """Paint thin boxes (or elliptic discs) such as cracks.

    Parameters
    ----------
    prim : ndarray of float64, shape (n, 15)
        Per solid: centre (3), unit normal n (3), unit in-plane axes u (3) and v (3), half
        thickness along n, half extents along u and v; voxels.
    elliptic : bool
        True: the in-plane outline is the ellipse with those half axes; False: a rectangle.
    Other parameters as :func:`paint_rounded_sheets`.
    """
    if len(prim) == 0:
        return
    inst, w = _inst_arg(instances)
    ids = np.zeros(len(prim), np.int32) if ids is None else np.ascontiguousarray(ids, np.int32)
    _kernels()["slabs"](labels, inst, np.ascontiguousarray(prim, np.float64), ids,
                        host_table(hosts, new_label), int(new_label), w, int(bool(elliptic)))
