"""Per-component metrology: volume, surface, surface-to-volume, thickness, porosity, sizes.

Formulas (``shared/reference/metrology_detectability.md`` B1), one place each:

* volume ``V = n_vox * dx dy dz`` (mm^3);
* surface ``A = sum_triangles 0.5 |(v0 - v1) x (v0 - v2)|`` of a marching-cubes mesh (skimage
  ``marching_cubes`` + ``mesh_surface_area``) of the component's indicator smoothed by a Gaussian
  (``smooth_sigma_vox``, default 0.7 voxel) at the mid-level 0.5, or of the grey volume at the
  mid-level between the component and its surroundings. Never voxel faces (they overestimate by
  3/2 on average);
* ``S/V = A / V`` in 1/mm;
* local thickness: :mod:`recon.thickness` (Hildebrand-Rueegsegger **diameter**, um);
* porosity ``phi = 1 - V_solid / V_region``;
* particle/void sizes: equivalent-sphere **diameter** ``(6 V / pi)^(1/3)`` in um.

Measured accuracy of the surface on voxelised balls (random sub-voxel centre): radius 20 voxels
+0.9 %, radius 10 voxels +0.1 %, radius 5 voxels -3.7 % (smoothing shrinks strongly curved
surfaces); foils thinner than ~2 voxels lose area. Prefer ``grey=`` on reconstructions.

Conventions: arrays ``[z, y, x]``; ``voxel_size_um`` isotropic scalar; mesh vertices returned in
(x, y, z) mm, offset by ``origin_mm`` (centre of voxel [0, 0, 0]) when given.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from recon import slabs
from recon.distance import nearest_background
from recon.segmentation import check_labels, check_volume, count_labels, label_instances, present_labels
from recon.thickness import isotropic_voxel_um, local_thickness_um, thickness_stats
from twin.errors import XrmInputError

__all__ = ["volume_mm3", "surface_mesh", "surface_area_mm2", "measure_components", "porosity",
           "size_distribution_um", "pore_size_distribution_um", "column_thickness_map_um", "layer_profile",
           "layers_along_axis", "write_thickness_tiff", "write_thickness_ply"]

_AXES = {"z": 0, "y": 1, "x": 2}
_PAD = 3


def _axis(axis: str | int) -> int:
    if isinstance(axis, str):
        if axis not in _AXES:
            raise XrmInputError(f"axis must be one of 'x', 'y', 'z' (or 2, 1, 0), got {axis!r}")
        return _AXES[axis]
    if int(axis) not in (0, 1, 2):
        raise XrmInputError(f"axis index must be 0 (z), 1 (y) or 2 (x), got {axis!r}")
    return int(axis)


def volume_mm3(mask: np.ndarray, voxel_size_um: float) -> float:
    """Volume of a mask in mm^3: ``n_vox * (voxel_size_um / 1000)^3``."""
    vs = isotropic_voxel_um(voxel_size_um, what="volume")
    return float(slabs.count_nonzero(mask)) * (vs / 1000.0) ** 3


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    m = np.ascontiguousarray(mask, bool)
    sl = slabs.find_objects(m.view(np.uint8))  # a view: no copy of the volume
    if not sl or sl[0] is None:
        raise XrmInputError("the component is empty: no voxel to mesh")
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n))
                 for s, n in zip(sl[0], mask.shape))


#: Faces handled at once where a per-face temporary is needed (about 72 bytes per face: 18 MiB).
_FACE_CHUNK = 1 << 16
#: component boxes of at least this many voxels are meshed on several processes
_PARALLEL_AREA_VOXELS = 1 << 21
#: cube layers per marching-cubes slab of :func:`surface_area_mm2`
_AREA_SLAB = 32


def surface_mesh(mask: np.ndarray, voxel_size_um: float, *, smooth_sigma_vox: float = 0.7,
                 grey: np.ndarray | None = None, level: float | None = None,
                 origin_mm: Sequence[float] | None = None, step_size: int = 1,
                 cut_faces: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh of a component's boundary.

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
        The component.
    voxel_size_um : float
        Isotropic voxel edge, um.
    smooth_sigma_vox : float, keyword-only
        Gaussian sigma (voxels) applied to the 0/1 indicator before meshing at 0.5.
    grey : ndarray of float, shape (nz, ny, nx), optional
        Mesh this grey volume instead, at ``level`` (required then), restricted to within 2 voxels
        of the mask.
    level : float, optional
        Iso-level for ``grey`` (e.g. the mid-level between the component and its surroundings).
    origin_mm : (x, y, z), optional
        Centre of voxel [0, 0, 0] in mm; vertices are shifted by it.
    step_size : int
        Marching-cubes step (1: full resolution).
    cut_faces : bool
        Where the component is cut by the array's faces (field of view), close the mesh there
        (True) or leave it open so that only the physical surface inside the volume is meshed
        (False, default: the data are continued across the face and triangles whose centroid
        lies outside the array's voxel extent are dropped).

    Returns
    -------
    verts_xyz_mm : ndarray of float, shape (n_vertices, 3)
        Vertex (x, y, z) in mm.
    faces : ndarray of int, shape (n_faces, 3)
    """
    from skimage import measure

    vs = isotropic_voxel_um(voxel_size_um, what="surface area")
    mask = np.asarray(mask, bool)
    f, lev, cube_mask, start = _mesh_field(mask, smooth_sigma_vox, grey, level, cut_faces)
    verts, faces, _, _ = measure.marching_cubes(f, lev, mask=cube_mask, step_size=int(step_size),
                                                allow_degenerate=False)
    verts = verts - _PAD + start  # array index coordinates (z, y, x)
    if not cut_faces:
        faces = faces[_faces_inside(verts, faces, mask.shape)]
    xyz = verts[:, ::-1] * (vs / 1000.0)
    if origin_mm is not None:
        xyz = xyz + np.asarray(origin_mm, float)
    return xyz, faces


def _indicator_field(sub: np.ndarray, smooth_sigma_vox: float, mode: str,
                     z0: int = 0, z1: int | None = None, threads: int | None = None) -> np.ndarray:
    """Planes ``z0:z1`` of the indicator ``sub`` padded by ``_PAD`` (``mode``), as float32,
    smoothed by a Gaussian of ``smooth_sigma_vox`` voxels.

    Only the planes asked for and the filter's reach around them are built: the Gaussian is
    separable and each output plane depends on the input planes within its radius, so the
    planes equal those of the whole padded and filtered array (the same operations on the same
    values), while memory is the slab's. ``threads``: the filter's (:func:`recon.slabs.gaussian_filter`).
    """
    nzs = sub.shape[0]
    nzp = nzs + 2 * _PAD
    z1 = nzp if z1 is None else z1
    sigma = float(smooth_sigma_vox)
    reach = int(4.0 * sigma + 0.5) if sigma > 0 else 0  # scipy's radius at truncate=4
    a, b = max(z0 - reach, 0), min(z1 + reach, nzp)  # planes of the padded array needed
    s0, s1 = max(a - _PAD, 0), min(b - _PAD, nzs)  # the sub-array's planes among them
    front, back = (s0 + _PAD) - a, b - (s1 + _PAD)
    if s1 > s0:
        f = np.pad(sub[s0:s1], ((front, back), (_PAD, _PAD), (_PAD, _PAD)), mode=mode)
    else:  # only padding planes: background (constant) or the nearest face (edge)
        edge = sub[:1] if s0 == 0 else sub[-1:]
        f = np.pad(edge if mode == "edge" else np.zeros_like(edge),
                   ((0, b - a - 1), (_PAD, _PAD), (_PAD, _PAD)), mode=mode)
    f = f.astype(np.float32)
    if sigma > 0:
        slabs.gaussian_filter(f, sigma, output=f, threads=threads)
    return f[z0 - a:z1 - a]


def _mesh_field(mask: np.ndarray, smooth_sigma_vox: float, grey: np.ndarray | None,
                level: float | None, cut_faces: bool):
    """The padded field that marching cubes meshes at ``lev`` (see :func:`surface_mesh`):
    returns (field, lev, cube mask or None, index of the field's first voxel minus the pad)."""
    sl = _bbox(mask, _PAD)
    sub = mask[sl]
    # The sub-array ends in background wherever it does not reach the array's faces; there,
    # "edge" padding is background too and the surface closes. At the array's faces, "edge"
    # padding continues the data (open surface) and constant padding closes it (cut faces).
    mode = "constant" if cut_faces else "edge"
    if grey is None:
        f = _indicator_field(sub, smooth_sigma_vox, mode)
        lev, cube_mask = 0.5, None
    else:
        if level is None:
            raise XrmInputError("surface_mesh with grey= needs level= (the iso-value)")
        g = check_volume(grey, what="grey")
        if g.shape != mask.shape:
            raise XrmInputError(f"grey has shape {g.shape}, mask {mask.shape}; they must match")
        g = g[sl].astype(np.float32)
        inside_high = float(np.median(g[sub])) >= float(level)
        if not inside_high:  # mesh -grey so "inside" is always above the level
            g, lev = -g, -float(level)
        else:
            lev = float(level)
        below = lev - abs(lev) - 1.0
        f = np.pad(g, _PAD, constant_values=below) if cut_faces else np.pad(g, _PAD, mode="edge")
        cube_mask = np.pad(slabs.binary_dilation(sub, iterations=2), _PAD, mode=mode)
    if f.max() <= lev or f.min() >= lev:
        raise XrmInputError("the component has no boundary at this level (too thin for the "
                            "smoothing, or a level outside the data); lower smooth_sigma_vox")
    return f, lev, cube_mask, np.array([s.start for s in sl], float)


def _faces_inside(verts: np.ndarray, faces: np.ndarray, shape) -> np.ndarray:
    """Faces whose centroid lies inside the array's voxel extent (chunks of faces: verts[faces]
    is 72 bytes per face)."""
    inside = np.empty(len(faces), bool)
    hi = np.array(shape) - 0.5
    for i in range(0, len(faces), _FACE_CHUNK):
        cen = verts[faces[i:i + _FACE_CHUNK]].mean(axis=1)
        inside[i:i + _FACE_CHUNK] = np.all((cen >= -0.5) & (cen <= hi), axis=1)
    return inside


def _triangle_area_sum(verts: np.ndarray, faces: np.ndarray) -> float:
    """Sum of ``|(b - a) x (c - a)| / 2`` over the faces, in chunks."""
    total = 0.0
    for i in range(0, len(faces), _FACE_CHUNK):
        tri = verts[faces[i:i + _FACE_CHUNK]]
        total += 0.5 * float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]),
                                            axis=1).sum())
    return total


def surface_area_mm2(mask: np.ndarray, voxel_size_um: float, *, smooth_sigma_vox: float = 0.7,
                     grey: np.ndarray | None = None, level: float | None = None,
                     cut_faces: bool = False, slab: int | None = None,
                     workers: int | None = None) -> float:
    """Surface area in mm^2 of a component by marching cubes (see :func:`surface_mesh`).

    The field is meshed ``slab`` cube layers at a time (each slab shares its last plane with
    the next): marching cubes builds each cube's triangles from that cube's 8 corners alone, so
    the triangles, and the area, are those of the whole-volume mesh, while the mesh in memory
    is one slab's per worker (a foam's whole mesh at 1024^3 is tens of GiB). Without ``grey``
    the smoothed indicator is built slab by slab as well (:func:`_indicator_field`: the same
    values), so the float field of the component's box (a volume for the paste) is never held.
    ``slab`` (cube layers) defaults to 32 (:data:`_AREA_SLAB`): a slab's mesh stays a small
    part of the volume at every size.

    Large boxes (at least :data:`_PARALLEL_AREA_VOXELS`) go to ``workers`` processes
    (default :func:`twin.runtime.host_threads`, at most a quarter of the slabs, so that the
    slabs in flight hold at most a quarter of the box), since scikit-image's marching cubes
    holds the GIL (:func:`recon.slabs.map_in_processes`: forked, the mask is shared, not
    copied). The slabs do not depend on the workers, and their areas are added in slab order,
    so the area is the same to the last bit on any number of cores.
    """
    from skimage import measure

    vs = isotropic_voxel_um(voxel_size_um, what="surface area")
    mask = np.asarray(mask, bool)
    if grey is None:  # the field is built slab by slab: memory is a slab's, not the box's
        sl = _bbox(mask, _PAD)
        sub = mask[sl]
        mode = "constant" if cut_faces else "edge"
        lev, cube_mask, start = 0.5, None, np.array([s.start for s in sl], float)
        nz = sub.shape[0] + 2 * _PAD

        def planes(z0, z1):
            return _indicator_field(sub, smooth_sigma_vox, mode, z0, z1, threads=1)
    else:
        f, lev, cube_mask, start = _mesh_field(mask, smooth_sigma_vox, grey, level, cut_faces)
        nz = f.shape[0]

        def planes(z0, z1):
            return f[z0:z1]
    if workers is None:
        from twin.runtime import host_threads

        workers = host_threads() if math.prod(mask[sl].shape if grey is None else f.shape) \
            >= _PARALLEL_AREA_VOXELS else 1
    slab = _AREA_SLAB if slab is None else int(slab)
    starts = list(range(0, nz - 1, slab))
    workers = max(1, min(int(workers), len(starts) // 4))

    def slab_area(z0: int) -> tuple[float, float, float]:
        """(area in voxel units^2, field min, field max) of the cube layers from ``z0``."""
        z1 = min(z0 + int(slab) + 1, nz)
        part = planes(z0, z1)
        lo, hi = float(part.min()), float(part.max())
        if hi <= lev or lo >= lev:
            return 0.0, lo, hi  # no crossing in this slab
        verts, faces, _, _ = measure.marching_cubes(
            part, lev, mask=None if cube_mask is None else cube_mask[z0:z1], allow_degenerate=False)
        del part
        if faces.size == 0:
            return 0.0, lo, hi
        verts = verts - _PAD + start
        verts[:, 0] += z0
        if not cut_faces:
            faces = faces[_faces_inside(verts, faces, mask.shape)]
        return _triangle_area_sum(verts, faces), lo, hi

    results = slabs.map_in_processes(slab_area, starts, workers)
    total = 0.0
    for area, _, _ in results:  # in slab order, whatever the workers
        total += area
    f_min = min(r[1] for r in results)
    f_max = max(r[2] for r in results)
    if f_max <= lev or f_min >= lev:
        raise XrmInputError("the component has no boundary at this level (too thin for the "
                            "smoothing, or a level outside the data); lower smooth_sigma_vox")
    return total * (vs / 1000.0) ** 2


def _grey_level(grey: np.ndarray, mask: np.ndarray) -> float:
    """Mid-level between a component's interior and a 2-voxel shell around it (medians)."""
    inner = slabs.binary_erosion(mask, iterations=1)
    if not inner.any():
        inner = mask
    shell = slabs.binary_dilation(mask, iterations=3) & ~slabs.binary_dilation(mask, iterations=1)
    if not shell.any():
        raise XrmInputError("grey surface: the component has no surroundings inside the volume")
    return 0.5 * (float(np.median(slabs.masked_values(grey, inner)))
                  + float(np.median(slabs.masked_values(grey, shell))))


def measure_components(labels: np.ndarray, voxel_size_um: float, names: Mapping[int, str], *,
                       thickness: bool = True, smooth_sigma_vox: float = 0.7,
                       grey: np.ndarray | None = None, bins: int = 64,
                       allow_missing: bool = False, cut_faces: bool = False,
                       thickness_max_vox: float | None = 12.0,
                       return_maps: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Measure every named component of a label volume (report.json ``metrology``).

    Parameters
    ----------
    labels : ndarray of int, shape (nz, ny, nx)
        0 = background; label ``k`` is component ``names[k]``.
    voxel_size_um : float
        Isotropic voxel edge, um (anisotropic voxels are refused: resample first).
    names : dict of int to str
        Components to measure, e.g. ``{1: "can", 2: "cathode"}``.
    thickness : bool
        Compute local thickness (the slow part); else ``thickness_um`` is None.
    smooth_sigma_vox : float
        Gaussian sigma (voxels) before meshing the indicator.
    grey : ndarray of float, shape (nz, ny, nx), optional
        Reconstructed volume: mesh it at the mid-level between each component and its
        surroundings instead of the smoothed indicator.
    bins : int
        Thickness histogram bins.
    allow_missing : bool
        If True, a named label with no voxel gets zeros/None instead of raising.
    cut_faces : bool
        Count the faces where a component is cut by the array boundary (field of view) as
        surface (default False: only the physical surface; see :func:`surface_mesh`).
    thickness_max_vox : float or None
        Thick components are measured on a block-downsampled mask (local thickness costs grow
        with the cube of the radius): when the plate-equivalent thickness ``2 V / S`` exceeds
        this many voxels, the mask is downsampled by ``ceil(2 V / S / thickness_max_vox)`` (block
        majority) so each structure still spans ``>= thickness_max_vox`` voxels; the voxel used
        is reported as ``thickness_um.voxel_um``. None: always full resolution.
    return_maps : sequence of str
        Components whose local-thickness map is also returned, as ``thickness_map_um``
        (float32 array on the grid the thickness was measured on: the labels' grid, or the
        block-downsampled one of ``thickness_um.voxel_um``). Not JSON: pop it before writing.

    Returns
    -------
    dict
        ``{name: {"label", "n_voxels", "volume_mm3", "surface_mm2", "surface_to_volume_per_mm",
        "thickness_um": {"mean", "std", "min", "max", "median", "histogram": {edges_um, counts}}
        or None, "surface_method"}}``. Thickness is the sphere **diameter** in um.
    """
    vs = isotropic_voxel_um(voxel_size_um, what="metrology")
    lab = check_labels(labels, names=None if allow_missing else names)
    if not names:
        raise XrmInputError("names is empty: give {label: component name} for at least one label")
    if grey is not None:
        grey = check_volume(grey, what="grey")
        if grey.shape != lab.shape:
            raise XrmInputError(f"grey has shape {grey.shape}, labels {lab.shape}; they must match")
    out: dict[str, dict[str, Any]] = {}
    for k, name in sorted(names.items()):
        m = slabs.equal_mask(lab, int(k))
        n = slabs.count_nonzero(m)
        rec: dict[str, Any] = {"label": int(k), "n_voxels": n}
        if n == 0:
            rec.update(volume_mm3=0.0, surface_mm2=None, surface_to_volume_per_mm=None,
                       thickness_um=None, surface_method=None)
            out[str(name)] = rec
            continue
        v = volume_mm3(m, vs)
        if grey is not None:
            level = _grey_level(grey, m)
            a = surface_area_mm2(m, vs, grey=grey, level=level, cut_faces=cut_faces)
            rec["surface_method"] = f"marching cubes on grey at mid-level {level:.6g}"
        else:
            a, used = None, None
            for sigma in dict.fromkeys((smooth_sigma_vox, 0.0)):
                try:
                    a = surface_area_mm2(m, vs, smooth_sigma_vox=sigma, cut_faces=cut_faces)
                    used = sigma
                    break
                except XrmInputError:
                    continue  # too thin for this smoothing: try without
            rec["surface_method"] = (None if a is None else f"marching cubes on indicator smoothed "
                                     f"sigma={used} voxel, level 0.5")
        rec.update(volume_mm3=v, surface_mm2=a, surface_to_volume_per_mm=None if a is None else a / v)
        if thickness:
            factor = 1
            plate_vox = 2.0 * v / a / (vs / 1000.0) if a else 0.0
            if thickness_max_vox is not None and plate_vox > thickness_max_vox:
                factor = int(np.ceil(plate_vox / thickness_max_vox))
            mm = block_majority(m, factor) if factor > 1 else m
            if not mm.any():  # a sparse component vanishes when downsampled: full resolution
                mm, factor = m, 1
            tmap = local_thickness_um(mm, vs * factor) if name in return_maps else None
            st = thickness_stats(mm, vs * factor, bins=bins, thickness_um=tmap)
            rec["thickness_um"] = {kk: st[kk] for kk in ("mean", "std", "min", "max", "median",
                                                         "histogram")}
            if tmap is not None:
                rec["thickness_map_um"] = tmap
            rec["thickness_um"]["voxel_um"] = vs * factor
        else:
            rec["thickness_um"] = None
        out[str(name)] = rec
    return out


def block_majority(mask: np.ndarray, factor: int) -> np.ndarray:
    """Downsample a mask by ``factor`` per axis: a block is set when at least half its voxels
    are (the mask is padded with False up to a multiple of ``factor``).

    Worked a few output planes at a time on the host's threads (:mod:`recon.slabs`): each
    block's count is an exact integer, so the result is the same on any number of threads,
    and only a slab is ever padded, not the volume.

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
    factor : int

    Returns
    -------
    ndarray of bool, shape (ceil(nz / factor), ceil(ny / factor), ceil(nx / factor))
    """
    m = np.asarray(mask, bool)
    f = int(factor)
    nz, ny, nx = (-(-n // f) for n in m.shape)
    out = np.empty((nz, ny, nx), bool)

    def planes(z0: int, z1: int) -> None:
        sub = m[z0 * f:z1 * f]
        sub = np.pad(sub, [(0, (z1 - z0) * f - sub.shape[0]), (0, ny * f - m.shape[1]),
                           (0, nx * f - m.shape[2])])
        counts = sub.reshape(z1 - z0, f, ny, f, nx, f).sum(axis=(1, 3, 5), dtype=np.int64)
        out[z0:z1] = 2 * counts >= f ** 3

    threads = slabs.host_threads_for(m.size)
    slabs.run_ranges(planes, slabs.even_ranges(nz, threads * 4), threads)
    return out


def porosity(solid: np.ndarray, region: np.ndarray | None = None) -> float:
    """Porosity ``1 - V_solid / V_region`` (dimensionless).

    Parameters
    ----------
    solid : ndarray of bool, shape (nz, ny, nx)
        Solid phase.
    region : ndarray of bool, optional
        The region (e.g. the electrode layer); default the whole array.
    """
    solid = np.asarray(solid, bool)
    region = np.ones_like(solid) if region is None else np.asarray(region, bool)
    nr = np.count_nonzero(region)
    if nr == 0:
        raise XrmInputError("porosity: the region is empty")
    return 1.0 - np.count_nonzero(solid & region) / nr


def size_distribution_um(mask: np.ndarray, voxel_size_um: float, *, min_voxels: int = 1,
                         connectivity: int = 1, bins: int | np.ndarray = 20) -> dict[str, Any]:
    """Sizes of connected particles or voids as equivalent-sphere **diameters** in um.

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
        Particles (or voids).
    voxel_size_um : float
    min_voxels : int
        Smaller components are ignored.
    connectivity : {1, 2, 3}
    bins : int or ndarray
        Histogram bins (log-spaced edges between the smallest and largest diameter if int).

    Returns
    -------
    dict
        ``n``, ``diameter_um`` (list, largest first), ``volume_mm3`` (list), ``mean_um``,
        ``d10_um``, ``d50_um``, ``d90_um`` (number-weighted quantiles), ``histogram``.
    """
    vs = isotropic_voxel_um(voxel_size_um, what="size distribution")
    inst, n = label_instances(mask, min_voxels=min_voxels, connectivity=connectivity)
    if n == 0:
        return {"n": 0, "diameter_um": [], "volume_mm3": [], "mean_um": None, "d10_um": None,
                "d50_um": None, "d90_um": None, "histogram": {"edges_um": [], "counts": []}}
    nv = count_labels(inst, n + 1)[1:].astype(float)  # chunked: no int64 copy of the volume
    vol_um3 = nv * vs ** 3
    d = (6.0 * vol_um3 / math.pi) ** (1.0 / 3.0)
    if isinstance(bins, (int, np.integer)):
        lo, hi = d.min(), d.max()
        edges = np.geomspace(lo, hi * 1.0001, int(bins) + 1) if hi > lo else np.array([lo, lo + vs])
    else:
        edges = np.asarray(bins, float)
    counts, edges = np.histogram(d, bins=edges)
    q = np.quantile(d, [0.1, 0.5, 0.9])
    return {"n": int(n), "diameter_um": d.tolist(), "volume_mm3": (vol_um3 * 1e-9).tolist(),
            "mean_um": float(d.mean()), "d10_um": float(q[0]), "d50_um": float(q[1]),
            "d90_um": float(q[2]), "histogram": {"edges_um": edges.tolist(),
                                                 "counts": counts.tolist()}}


def pore_size_distribution_um(pores: np.ndarray, voxel_size_um: float, *,
                              bins: int | np.ndarray = 30) -> dict[str, Any]:
    """Volume-weighted pore (or particle) size distribution from local thickness.

    For connected networks, where :func:`size_distribution_um` would see one component, each
    voxel takes the **diameter** of the largest inscribed sphere containing it
    (:func:`recon.thickness.local_thickness_um`; PoreSpy's ``pore_size_distribution`` reports
    radii of the same kind).

    Returns
    -------
    dict
        ``edges_um``, ``volume_fraction`` (per bin, sums to 1), ``cumulative`` (fraction of the
        pore volume in pores smaller than each upper edge), ``d50_um`` (volume median), ``mean_um``.
    """
    vs = isotropic_voxel_um(voxel_size_um, what="pore size distribution")
    pores = np.asarray(pores, bool)
    if not pores.any():
        raise XrmInputError("pore_size_distribution_um: the pore mask is empty")
    d = local_thickness_um(pores, vs)[pores].astype(np.float64)
    if isinstance(bins, (int, np.integer)):
        edges = np.linspace(0.0, d.max() * 1.0001, int(bins) + 1)
    else:
        edges = np.asarray(bins, float)
    counts, edges = np.histogram(d, bins=edges)
    frac = counts / max(counts.sum(), 1)
    return {"edges_um": edges.tolist(), "volume_fraction": frac.tolist(),
            "cumulative": np.cumsum(frac).tolist(), "d50_um": float(np.median(d)),
            "mean_um": float(d.mean())}


def column_thickness_map_um(mask: np.ndarray, voxel_size_um: float, *, axis: str | int = "z"
                            ) -> np.ndarray:
    """Thickness of a layer along ``axis`` per column: voxel count x voxel size (um).

    Returns
    -------
    ndarray of float32, shape of ``mask`` without ``axis``
        E.g. for ``axis="z"``, shape (ny, nx). Counts all mask voxels in the column (a layer
        crossed twice counts twice).
    """
    vs = isotropic_voxel_um(voxel_size_um, what="layer thickness")
    return (np.count_nonzero(mask, axis=_axis(axis)) * vs).astype(np.float32)


def layer_profile(labels: np.ndarray, voxel_size_um: float, *, axis: str | int = "z",
                  origin_mm: Sequence[float] = (0.0, 0.0, 0.0),
                  names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Area fraction of each component in every slice across ``axis`` (stacked cells).

    Returns
    -------
    dict
        ``position_mm`` (slice centres along the axis, mm, using ``origin_mm``) and
        ``fraction`` ``{name: list}`` (fraction of the slice's voxels in the component).
    """
    vs = isotropic_voxel_um(voxel_size_um, what="layer profile")
    lab = check_labels(labels)
    ax = _axis(axis)
    origin_axis = float(np.asarray(origin_mm, float)[2 - ax])  # origin is (x, y, z)
    pos = origin_axis + np.arange(lab.shape[ax]) * vs / 1000.0
    if names is None:
        names = {int(k): str(int(k)) for k in present_labels(lab) if k != 0}
    other = tuple(i for i in range(3) if i != ax)
    per_slice = lab.shape[other[0]] * lab.shape[other[1]]
    frac = {str(nm): (np.count_nonzero(lab == int(k), axis=other) / per_slice).tolist()
            for k, nm in names.items()}
    return {"axis": "zyx"[ax], "position_mm": pos.tolist(), "fraction": frac}


def layers_along_axis(mask: np.ndarray, voxel_size_um: float, *, axis: str | int = "z",
                      min_fraction: float = 0.5, origin_mm: Sequence[float] = (0.0, 0.0, 0.0)
                      ) -> list[dict[str, Any]]:
    """Layers of one component stacked along ``axis`` and the thickness of each.

    A layer is a run of slices in which the component covers at least ``min_fraction`` of the
    slice; its thickness is measured per column (voxel runs within the layer's slices, plus
    one slice either side for partial coverage) and summarised.

    Returns
    -------
    list of dict
        ``start_mm``, ``end_mm`` (slice centres), ``thickness_um`` ``{mean, std, min, max}``
        over columns that the layer covers, ``run_thickness_um`` (slices x voxel size).
    """
    vs = isotropic_voxel_um(voxel_size_um, what="layer thickness")
    m = np.asarray(mask, bool)
    ax = _axis(axis)
    other = tuple(i for i in range(3) if i != ax)
    frac = m.mean(axis=other)
    runs, _ = ndi.label(frac >= float(min_fraction))
    origin_axis = float(np.asarray(origin_mm, float)[2 - ax])
    out = []
    for sl in slabs.find_objects(runs):
        a, b = sl[0].start, sl[0].stop
        lo, hi = max(a - 1, 0), min(b + 1, m.shape[ax])
        sub = np.take(m, np.arange(lo, hi), axis=ax)
        col = np.count_nonzero(sub, axis=ax).astype(float) * vs
        col = col[col > 0]
        out.append({"start_mm": origin_axis + a * vs / 1000.0,
                    "end_mm": origin_axis + (b - 1) * vs / 1000.0,
                    "run_thickness_um": (b - a) * vs,
                    "thickness_um": {"mean": float(col.mean()), "std": float(col.std()),
                                     "min": float(col.min()), "max": float(col.max())}})
    return out


# ------------------------------------------------------------------------------- thin I/O
def write_thickness_tiff(path: str | Path, thickness_um: np.ndarray, *,
                         voxel_size_um: float | None = None) -> Path:
    """Write a thickness map as a float32 TIFF stack [z, y, x] (values in um)."""
    import tifffile

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"unit": "um", "quantity": "local thickness (sphere diameter)"}
    if voxel_size_um is not None:
        meta["voxel_size_um"] = float(voxel_size_um)
    tifffile.imwrite(p, np.asarray(thickness_um, np.float32), metadata=meta)
    return p


#: viridis at 17 evenly spaced points (matplotlib's table), for nodes without matplotlib;
#: linear interpolation between them is within 6/255 of the full table
_VIRIDIS_17 = np.array([
    (0.2670, 0.0049, 0.3294), (0.2823, 0.0950, 0.4173), (0.2788, 0.1755, 0.4834),
    (0.2590, 0.2515, 0.5247), (0.2297, 0.3224, 0.5457), (0.1994, 0.3876, 0.5546),
    (0.1727, 0.4488, 0.5579), (0.1490, 0.5081, 0.5573), (0.1276, 0.5669, 0.5506),
    (0.1206, 0.6258, 0.5335), (0.1579, 0.6838, 0.5017), (0.2461, 0.7389, 0.4520),
    (0.3692, 0.7889, 0.3829), (0.5160, 0.8312, 0.2943), (0.6785, 0.8637, 0.1895),
    (0.8456, 0.8873, 0.0997), (0.9932, 0.9062, 0.1439)])


def viridis_rgb8(x: np.ndarray) -> np.ndarray:
    """viridis colours (N, 3) uint8 of values ``x`` in [0, 1] (clipped); matplotlib's table
    when it is installed, else :data:`_VIRIDIS_17` interpolated."""
    x = np.clip(np.asarray(x, float).ravel(), 0.0, 1.0)
    try:
        from matplotlib import colormaps

        rgb = colormaps["viridis"](x)[:, :3]
    except ImportError:
        knots = np.linspace(0.0, 1.0, len(_VIRIDIS_17))
        rgb = np.stack([np.interp(x, knots, _VIRIDIS_17[:, k]) for k in range(3)], axis=1)
    return (rgb * 255).astype(np.uint8)


def write_thickness_ply(path: str | Path, mask: np.ndarray, thickness_um: np.ndarray,
                        voxel_size_um: float, *, origin_mm: Sequence[float] | None = None,
                        vmax_um: float | None = None, smooth_sigma_vox: float = 0.7) -> Path:
    """Write a component mesh coloured by local thickness (binary PLY, like the paper's Fig. 6b).

    Vertex colour: viridis of the thickness of the nearest mask voxel, scaled to ``vmax_um``
    (default: the 99th percentile). A ``thickness_um`` vertex property is stored too.
    """
    vs = isotropic_voxel_um(voxel_size_um, what="thickness mesh")
    verts, faces = surface_mesh(mask, vs, smooth_sigma_vox=smooth_sigma_vox)
    # thickness at each vertex: nearest mask voxel
    _, idx = nearest_background(~np.asarray(mask, bool))
    ijk = np.rint(verts[:, ::-1] / (vs / 1000.0)).astype(int)
    ijk = np.clip(ijk, 0, np.array(mask.shape) - 1)
    near = idx[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    t = np.take(np.asarray(thickness_um, np.float32), near)
    if origin_mm is not None:
        verts = verts + np.asarray(origin_mm, float)
    vmax = float(vmax_um) if vmax_um else float(np.percentile(t, 99) or 1.0)
    rgb = viridis_rgb8(t / vmax)
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                    ("blue", "u1"), ("thickness_um", "<f4")])
    va = np.empty(len(verts), vdt)
    va["x"], va["y"], va["z"] = verts[:, 0], verts[:, 1], verts[:, 2]
    va["red"], va["green"], va["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    va["thickness_um"] = t
    fdt = np.dtype([("n", "u1"), ("i", "<i4", (3,))])
    fa = np.empty(len(faces), fdt)
    fa["n"], fa["i"] = 3, faces
    header = ("ply\nformat binary_little_endian 1.0\ncomment xrm-twin local thickness (um), "
              "coordinates (x, y, z) mm\n"
              f"element vertex {len(va)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              "property float thickness_um\n"
              f"element face {len(fa)}\nproperty list uchar int vertex_indices\nend_header\n")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(va.tobytes())
        fh.write(fa.tobytes())
    return p
