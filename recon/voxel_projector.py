"""Voxel-driven backprojector and its exact adjoint (forward projector), in Taichi.

Both kernels map the centre of voxel ``[k, j, i]`` (sample frame ``x = origin + (i, j, k) *
voxel``) to a detector position with one 3x4 matrix per view (:func:`projection_matrices`):

``col = (P0 . [x, 1]) / (P2 . [x, 1])``, ``row = (P1 . [x, 1]) / (P2 . [x, 1])``

where ``P2 . [x, 1] = L / SDD`` (distance from the source to the voxel along the detector
normal over the source-detector distance) for cone beam and 1 for parallel beam. The
detector is read (backprojection) or written (forward projection) with bilinear weights;
taps outside the detector count as zero. Each voxel-view pair carries the weight
``view_weight[v] / (P2 . [x, 1])^2``, so :func:`forward_project` is the exact adjoint of
:func:`backproject` for the same arguments: ``<A x, y> = <x, A^T y>``.

Kernels see only ndarrays; nothing is allocated at import. Callers initialise Taichi with
``twin.runtime.init_taichi`` (the public functions here fall back to the CPU if nobody has).
"""

# No ``from __future__ import annotations`` here: Taichi reads the kernels' type annotations.

import numpy as np
import taichi as ti

from recon.filters import FILTERED_DTYPES
from twin.errors import XrmInputError, unknown
from twin.geometry import ScanGeometry
from twin.runtime import current_arch, init_taichi, releasing

# ----------------------------------------------------------------------------- host side


def view_vectors(geometry: ScanGeometry, angles_deg: np.ndarray | None = None) -> np.ndarray:
    """ASTRA-style per-view vectors of ``geometry`` (see ``twin.geometry``), shape (V, 12), mm."""
    return np.asarray(geometry.vectors(angles_deg), dtype=np.float64)


def projection_matrices(vectors: np.ndarray, n_cols: int, n_rows: int, beam: str) -> np.ndarray:
    """3x4 matrices mapping sample-frame points (mm) to detector (col, row) pixel indices.

    Parameters
    ----------
    vectors : ndarray, shape (V, 12)
        Per-view vectors (source or ray direction, detector centre, u, v), mm.
    n_cols, n_rows : int
        Detector size (columns, rows).
    beam : {"cone", "parallel"}

    Returns
    -------
    ndarray, shape (V, 12), float64
        Rows ``P0, P1, P2`` of each view's matrix, flattened.
    """
    vec = np.asarray(vectors, dtype=np.float64)
    if vec.ndim != 2 or vec.shape[1] != 12:
        raise XrmInputError(f"geometry vectors must have shape (n_views, 12), got {vec.shape}")
    s, d, u, v = vec[:, 0:3], vec[:, 3:6], vec[:, 6:9], vec[:, 9:12]
    uu = np.einsum("ij,ij->i", u, u)[:, None]
    vv = np.einsum("ij,ij->i", v, v)[:, None]
    n = np.cross(u, v)
    c0, r0 = 0.5 * (n_cols - 1), 0.5 * (n_rows - 1)
    out = np.zeros((vec.shape[0], 12))
    if beam == "cone":
        dn = np.einsum("ij,ij->i", d - s, n)[:, None]  # (d - s) . n
        if np.any(np.abs(dn) < 1e-12):
            raise XrmInputError("cone-beam geometry has the source in the detector plane")
        # den(x) = (x - s) . n / ((d - s) . n) = L / SDD
        den_lin, den_c = n / dn, -np.einsum("ij,ij->i", s, n)[:, None] / dn
        for row, e, ee, cc in ((0, u, uu, c0), (1, v, vv, r0)):
            k = np.einsum("ij,ij->i", s - d, e)[:, None] / ee  # (s - d) . e / |e|^2
            lin = e / ee + k * den_lin + cc * den_lin
            const = -np.einsum("ij,ij->i", s, e)[:, None] / ee + k * den_c + cc * den_c
            out[:, 4 * row:4 * row + 3] = lin
            out[:, 4 * row + 3] = const[:, 0]
        out[:, 8:11] = den_lin
        out[:, 11] = den_c[:, 0]
    elif beam == "parallel":
        r = s  # ray direction
        rn = np.einsum("ij,ij->i", r, n)[:, None]
        if np.any(np.abs(rn) < 1e-12):
            raise XrmInputError("parallel-beam geometry has rays parallel to the detector")
        # p = x + tau r with (p - d) . n = 0; coordinate = (p - d) . e / |e|^2
        for row, e, ee, cc in ((0, u, uu, c0), (1, v, vv, r0)):
            re = np.einsum("ij,ij->i", r, e)[:, None]
            lin = (e - re * n / rn) / ee
            const = (-np.einsum("ij,ij->i", d, e)[:, None]
                     + re * np.einsum("ij,ij->i", d, n)[:, None] / rn) / ee + cc
            out[:, 4 * row:4 * row + 3] = lin
            out[:, 4 * row + 3] = const[:, 0]
        out[:, 11] = 1.0
    else:
        raise XrmInputError(f"beam must be 'cone' or 'parallel', got {beam!r}")
    return out


def detector_rows_for_box(matrices: np.ndarray, lo_mm: np.ndarray, hi_mm: np.ndarray,
                          n_rows: int, margin: int = 2) -> tuple[int, int]:
    """Detector row range [r0, r1) that points of the box ``lo_mm..hi_mm`` (x, y, z) reach."""
    corners = np.array([[x, y, z, 1.0] for x in (lo_mm[0], hi_mm[0])
                        for y in (lo_mm[1], hi_mm[1]) for z in (lo_mm[2], hi_mm[2])])
    m = matrices.reshape(-1, 3, 4)
    num = np.einsum("vk,ck->vc", m[:, 1], corners)
    den = np.einsum("vk,ck->vc", m[:, 2], corners)
    rows = num / den
    r0 = int(np.floor(rows.min())) - margin
    r1 = int(np.ceil(rows.max())) + 1 + margin
    return max(r0, 0), min(max(r1, 0), n_rows)


def volume_grid_checks(vol_shape: tuple[int, int, int], voxel_size_um: float,
                       origin_mm: tuple[float, float, float]) -> None:
    """Refuse malformed volume descriptions with a message naming the value."""
    if len(vol_shape) != 3 or any(int(n) < 1 for n in vol_shape):
        raise XrmInputError(f"volume shape must be 3 positive integers (nz, ny, nx), got {vol_shape!r}")
    if not (np.isfinite(voxel_size_um) and voxel_size_um > 0):
        raise XrmInputError(f"voxel_size_um must be > 0 and finite, got {voxel_size_um!r}")
    if len(origin_mm) != 3 or not np.all(np.isfinite(origin_mm)):
        raise XrmInputError(f"origin_mm must be 3 finite numbers (x, y, z), got {origin_mm!r}")


# ----------------------------------------------------------------------------- kernels
#
# The detector is read from (and written to) a copy padded with PAD zero rows and columns on
# each side; positions are clamped into the padded frame, so taps that fall off the detector
# read the zero border. This keeps the inner loop free of branches. Each thread handles a
# strip of STRIP voxels along x; views are processed in chunks (VIEW_CHUNK_CPU on the CPU,
# where a chunk's detector data stays in cache, and stored as 4-tap "quads" so one load serves
# a bilinear sample; all views at once from the plain padded array on CUDA).

PAD = 2
STRIP = 8
LINE_STRIP = 32  # x strip of the parallel-beam line kernel (two loads per update: wider pays)
VIEW_CHUNK_CPU = 32
LINE_BUDGET_BYTES = 32 << 20  # interpolated detector lines held per launch of the line kernel


@releasing
@ti.kernel
def _backproject_kernel(proj: ti.types.ndarray(ndim=3),
                        mats: ti.types.ndarray(dtype=ti.f32, ndim=2),
                        weights: ti.types.ndarray(dtype=ti.f32, ndim=1),
                        vol: ti.types.ndarray(dtype=ti.f32, ndim=3),
                        ox: ti.f32, oy: ti.f32, oz: ti.f32, step: ti.f32, row0: ti.f32,
                        v_start: ti.i32, v_stop: ti.i32, cone: ti.template()):
    nrp, ncp = proj.shape[1], proj.shape[2]
    cmax = ti.cast(ncp - PAD, ti.f32)
    rmax = ti.cast(nrp - PAD, ti.f32)
    nz, ny, nx = vol.shape[0], vol.shape[1], vol.shape[2]
    for k, j, ib in ti.ndrange(nz, ny, (nx + STRIP - 1) // STRIP):
        y = oy + j * step
        z = oz + k * step
        acc = ti.Vector.zero(ti.f32, STRIP)
        for v in range(v_start, v_stop):
            bc = mats[v, 0] * ox + mats[v, 1] * y + mats[v, 2] * z + mats[v, 3]
            br = mats[v, 4] * ox + mats[v, 5] * y + mats[v, 6] * z + mats[v, 7]
            bd = mats[v, 8] * ox + mats[v, 9] * y + mats[v, 10] * z + mats[v, 11]
            sc = mats[v, 0] * step
            sr = mats[v, 4] * step
            sd = mats[v, 8] * step
            wv = weights[v]
            for q in ti.static(range(STRIP)):
                i = ib * STRIP + q
                inv = 1.0
                if ti.static(cone):
                    inv = 1.0 / (bd + sd * i)
                c = ti.min(ti.max((bc + sc * i) * inv + PAD, 0.0), cmax)
                r = ti.min(ti.max((br + sr * i) * inv - row0 + PAD, 0.0), rmax)
                ic = ti.cast(c, ti.i32)
                ir = ti.cast(r, ti.i32)
                fc = c - ic
                fr = r - ir
                p00 = ti.cast(proj[v, ir, ic], ti.f32)  # float32 or float16 storage
                p01 = ti.cast(proj[v, ir, ic + 1], ti.f32)
                p10 = ti.cast(proj[v, ir + 1, ic], ti.f32)
                p11 = ti.cast(proj[v, ir + 1, ic + 1], ti.f32)
                top = p00 + fc * (p01 - p00)
                bot = p10 + fc * (p11 - p10)
                acc[q] += wv * inv * inv * (top + fr * (bot - top))
        for q in ti.static(range(STRIP)):
            i = ib * STRIP + q
            if i < nx:
                vol[k, j, i] += acc[q]


_VEC4 = ti.types.vector(4, ti.f32)


@releasing
@ti.kernel
def _backproject_quad_kernel(quads: ti.types.ndarray(dtype=_VEC4, ndim=3),
                             mats: ti.types.ndarray(dtype=ti.f32, ndim=2),
                             weights: ti.types.ndarray(dtype=ti.f32, ndim=1),
                             vol: ti.types.ndarray(dtype=ti.f32, ndim=3),
                             ox: ti.f32, oy: ti.f32, oz: ti.f32, step: ti.f32, row0: ti.f32,
                             n_views: ti.i32, cone: ti.template()):
    # CPU variant of _backproject_kernel: quads[v, r, c] holds the four bilinear taps
    # (p[r, c], p[r, c+1], p[r+1, c], p[r+1, c+1]) of the padded detector, one load per update.
    # Same arithmetic, same result.
    cmax = ti.cast(quads.shape[2] + 1 - PAD, ti.f32)
    rmax = ti.cast(quads.shape[1] + 1 - PAD, ti.f32)
    nz, ny, nx = vol.shape[0], vol.shape[1], vol.shape[2]
    for k, j, ib in ti.ndrange(nz, ny, (nx + STRIP - 1) // STRIP):
        y = oy + j * step
        z = oz + k * step
        acc = ti.Vector.zero(ti.f32, STRIP)
        for v in range(n_views):
            bc = mats[v, 0] * ox + mats[v, 1] * y + mats[v, 2] * z + mats[v, 3]
            br = mats[v, 4] * ox + mats[v, 5] * y + mats[v, 6] * z + mats[v, 7]
            bd = mats[v, 8] * ox + mats[v, 9] * y + mats[v, 10] * z + mats[v, 11]
            sc = mats[v, 0] * step
            sr = mats[v, 4] * step
            sd = mats[v, 8] * step
            wv = weights[v]
            for q in ti.static(range(STRIP)):
                i = ib * STRIP + q
                inv = 1.0
                if ti.static(cone):
                    inv = 1.0 / (bd + sd * i)
                c = ti.min(ti.max((bc + sc * i) * inv + PAD, 0.0), cmax)
                r = ti.min(ti.max((br + sr * i) * inv - row0 + PAD, 0.0), rmax)
                ic = ti.cast(c, ti.i32)
                ir = ti.cast(r, ti.i32)
                fc = c - ic
                fr = r - ir
                p = quads[v, ir, ic]
                top = p[0] + fc * (p[1] - p[0])
                bot = p[2] + fc * (p[3] - p[2])
                acc[q] += wv * inv * inv * (top + fr * (bot - top))
        for q in ti.static(range(STRIP)):
            i = ib * STRIP + q
            if i < nx:
                vol[k, j, i] += acc[q]


@releasing
@ti.kernel
def _forward_kernel(vol: ti.types.ndarray(dtype=ti.f32, ndim=3),
                    mats: ti.types.ndarray(dtype=ti.f32, ndim=2),
                    weights: ti.types.ndarray(dtype=ti.f32, ndim=1),
                    proj: ti.types.ndarray(dtype=ti.f32, ndim=3),
                    ox: ti.f32, oy: ti.f32, oz: ti.f32, step: ti.f32, row0: ti.f32,
                    v_start: ti.i32, v_stop: ti.i32, cone: ti.template()):
    # exact adjoint of _backproject_kernel: same positions, weights and clamping, scattered
    nrp, ncp = proj.shape[1], proj.shape[2]
    cmax = ti.cast(ncp - PAD, ti.f32)
    rmax = ti.cast(nrp - PAD, ti.f32)
    nz, ny, nx = vol.shape[0], vol.shape[1], vol.shape[2]
    for k, j, i in ti.ndrange(nz, ny, nx):
        f = vol[k, j, i]
        if f != 0.0:
            x = ox + i * step
            y = oy + j * step
            z = oz + k * step
            for v in range(v_start, v_stop):
                inv = 1.0
                if ti.static(cone):
                    inv = 1.0 / (mats[v, 8] * x + mats[v, 9] * y + mats[v, 10] * z + mats[v, 11])
                cn = mats[v, 0] * x + mats[v, 1] * y + mats[v, 2] * z + mats[v, 3]
                rn = mats[v, 4] * x + mats[v, 5] * y + mats[v, 6] * z + mats[v, 7]
                c = ti.min(ti.max(cn * inv + PAD, 0.0), cmax)
                r = ti.min(ti.max(rn * inv - row0 + PAD, 0.0), rmax)
                ic = ti.cast(c, ti.i32)
                ir = ti.cast(r, ti.i32)
                fc = c - ic
                fr = r - ir
                w = weights[v] * inv * inv * f
                ti.atomic_add(proj[v, ir, ic], (1.0 - fr) * (1.0 - fc) * w)
                ti.atomic_add(proj[v, ir, ic + 1], (1.0 - fr) * fc * w)
                ti.atomic_add(proj[v, ir + 1, ic], fr * (1.0 - fc) * w)
                ti.atomic_add(proj[v, ir + 1, ic + 1], fr * fc * w)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _padded(proj: np.ndarray) -> np.ndarray:
    """``proj`` inside a frame of PAD zeros (float32), copied a few views at a time on the
    host's threads (on CUDA this is the whole filtered stack of a slab)."""
    from recon import slabs

    out = np.zeros((proj.shape[0], proj.shape[1] + 2 * PAD, proj.shape[2] + 2 * PAD), np.float32)

    def views(a: int, b: int) -> None:
        out[a:b, PAD:-PAD, PAD:-PAD] = proj[a:b]

    slabs.map_planes(views, proj.shape[0], proj.size)
    return out


#: hold the padded detector data in a Taichi ndarray for the backprojection: None = on CUDA,
#: where a numpy argument would be copied to the device and back again at every launch
#: (6.7 GB each way for 1601 views of 1024^2); True does it on the CPU too (tests)
DEVICE_RESIDENT = None


def _resident(a: np.ndarray):
    """``a`` copied once into a Taichi ndarray (on CUDA: device memory), or ``a`` itself."""
    if not (current_arch() == "cuda" if DEVICE_RESIDENT is None else DEVICE_RESIDENT):
        return a
    dev = ti.ndarray(ti.f16 if a.dtype == np.float16 else ti.f32, a.shape)
    dev.from_numpy(a)
    return dev


def _resident_zeros(shape: tuple[int, ...]):
    """A zeroed float32 Taichi ndarray of ``shape`` where :func:`_resident` copies, else None."""
    if not (current_arch() == "cuda" if DEVICE_RESIDENT is None else DEVICE_RESIDENT):
        return None
    return ti.ndarray(ti.f32, shape)


def _padded_half(proj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``proj`` as float16 inside a frame of PAD zeros, each view divided by its largest
    magnitude (so no value overflows float16 and each keeps 11 significant bits), and the
    per-view scales (float32, shape (V,)) to fold into the view weights."""
    from recon import slabs

    scales = np.ones(proj.shape[0], np.float32)
    out = np.zeros((proj.shape[0], proj.shape[1] + 2 * PAD, proj.shape[2] + 2 * PAD), np.float16)

    def views(a: int, b: int) -> None:
        for v in range(a, b):
            peak = float(np.max(np.abs(proj[v]))) if proj[v].size else 0.0
            if peak > 0 and np.isfinite(peak):
                scales[v] = peak
            out[v, PAD:-PAD, PAD:-PAD] = proj[v] * np.float32(1.0 / scales[v])

    slabs.map_planes(views, proj.shape[0], proj.size)
    return out, scales


def _quads(proj: np.ndarray) -> np.ndarray:
    """The four bilinear taps of each padded detector pixel: shape (V, R+2P-1, C+2P-1, 4)."""
    from recon import slabs

    p = _padded(proj)
    q = np.empty((p.shape[0], p.shape[1] - 1, p.shape[2] - 1, 4), np.float32)

    def views(a: int, b: int) -> None:  # a few views at a time on the host's threads
        q[a:b, ..., 0] = p[a:b, :-1, :-1]
        q[a:b, ..., 1] = p[a:b, :-1, 1:]
        q[a:b, ..., 2] = p[a:b, 1:, :-1]
        q[a:b, ..., 3] = p[a:b, 1:, 1:]

    slabs.map_planes(views, p.shape[0], q.size)
    return q


@releasing
@ti.kernel
def _backproject_lines_kernel(lines: ti.types.ndarray(dtype=ti.f32, ndim=3),
                              col0: ti.types.ndarray(dtype=ti.f32, ndim=2),
                              mats: ti.types.ndarray(dtype=ti.f32, ndim=2),
                              weights: ti.types.ndarray(dtype=ti.f32, ndim=1),
                              vol: ti.types.ndarray(dtype=ti.f32, ndim=3),
                              ox: ti.f32, oy: ti.f32, step: ti.f32, n_views: ti.i32):
    # Parallel beam with detector rows independent of x and y (no axis tilt): each z slice
    # sees one interpolated detector line per view, lines[k, v, :] (padded columns), and the
    # bilinear tap reduces to a linear one along the columns: two loads per update.
    cmax = ti.cast(lines.shape[2] - PAD, ti.f32)  # first zero column past the detector
    nz, ny, nx = vol.shape[0], vol.shape[1], vol.shape[2]
    for k, j, ib in ti.ndrange(nz, ny, (nx + LINE_STRIP - 1) // LINE_STRIP):
        y = oy + j * step
        acc = ti.Vector.zero(ti.f32, LINE_STRIP)
        for v in range(n_views):
            bc = mats[v, 0] * ox + mats[v, 1] * y + col0[k, v] + PAD
            sc = mats[v, 0] * step
            wv = weights[v]
            for q in ti.static(range(LINE_STRIP)):
                i = ib * LINE_STRIP + q
                c = ti.min(ti.max(bc + sc * i, 0.0), cmax)
                ic = ti.cast(c, ti.i32)
                fc = c - ic
                a = lines[k, v, ic]
                acc[q] += wv * (a + fc * (lines[k, v, ic + 1] - a))
        for q in ti.static(range(LINE_STRIP)):
            i = ib * LINE_STRIP + q
            if i < nx:
                vol[k, j, i] += acc[q]


def _rows_independent_of_xy(mats: np.ndarray) -> bool:
    """Parallel beam whose detector row depends on z only (no tilt)."""
    return (not _is_cone(mats)) and np.all(mats[:, 4] == 0.0) and np.all(mats[:, 5] == 0.0)


def _slice_lines(p: np.ndarray, mats: np.ndarray, z_mm: np.ndarray, row0: int) -> np.ndarray:
    """Detector lines of each z slice, shape (nz, V, C + 2 PAD): the detector rows interpolated
    as the bilinear tap would (same clipping), columns padded with zeros; ``p`` is the padded
    detector stack (:func:`_padded`)."""
    rmax = p.shape[1] - PAD
    out = np.empty((len(z_mm), p.shape[0], p.shape[2]), np.float32)
    views = np.arange(p.shape[0])
    for k, z in enumerate(z_mm):
        r = np.clip(mats[:, 6] * z + mats[:, 7] - row0 + PAD, 0.0, rmax).astype(np.float32)
        ir = r.astype(np.int64)
        fr = (r - ir)[:, None]
        a = p[views, ir, :]
        b = p[views, np.minimum(ir + 1, p.shape[1] - 1), :]
        out[k] = a + fr * (b - a)
    return out


def _ensure_taichi() -> None:
    """Initialise Taichi on the CPU when no public entry point has done so yet."""
    if current_arch() is None:
        init_taichi("cpu")


def _view_chunks(n_views: int) -> list[tuple[int, int]]:
    step = n_views if current_arch() == "cuda" else VIEW_CHUNK_CPU
    return [(v0, min(v0 + step, n_views)) for v0 in range(0, n_views, step)]


def _line_chunks(n_views: int, n_line: int, budget_bytes: int = LINE_BUDGET_BYTES) -> tuple[int, int]:
    """Views and z slices per launch of the line kernel, so that the interpolated lines of one
    launch, ``slices x views x n_line`` float32, stay within ``budget_bytes`` (at most 16
    slices; all views in one launch whenever one slice of them fits)."""
    per_view = 4 * n_line
    views = int(max(1, min(n_views, budget_bytes // per_view)))
    slices = int(max(1, min(16, budget_bytes // (per_view * views))))
    return views, slices


def _is_cone(matrices: np.ndarray) -> bool:
    m = np.asarray(matrices)
    return not (np.all(m[:, 8:11] == 0.0) and np.all(m[:, 11] == 1.0))


def backproject(proj: np.ndarray, matrices: np.ndarray, view_weights: np.ndarray,
                vol_shape: tuple[int, int, int], voxel_size_um: float,
                origin_mm: tuple[float, float, float], *, row0: int = 0,
                out: np.ndarray | None = None, filtered_dtype: str = "float32") -> np.ndarray:
    """Weighted voxel-driven backprojection ``A^T`` (Taichi).

    Parameters
    ----------
    proj : ndarray, shape (V, R, C)
        Detector data; rows ``row0 .. row0 + R`` of the full detector.
    matrices : ndarray, shape (V, 12)
        From :func:`projection_matrices` (full-detector row indices).
    view_weights : ndarray, shape (V,)
        Per-view weight; each voxel-view pair gets ``view_weights[v] / den^2``.
    vol_shape : (nz, ny, nx)
    voxel_size_um : float
    origin_mm : (x, y, z)
        Centre of voxel [0, 0, 0], mm.
    row0 : int
        First detector row held in ``proj``.
    out : ndarray, optional
        float32 C-contiguous volume to add into.
    filtered_dtype : {"float32", "float16"}
        How the detector data are held while backprojected: ``"float16"`` halves their memory
        and the bytes each bilinear tap reads (the GPU's bottleneck), each view scaled by its
        largest magnitude; taps are interpolated and summed in float32 either way. float16 runs
        the one-launch kernel of CUDA on any arch.

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32
    """
    _ensure_taichi()
    if filtered_dtype not in FILTERED_DTYPES:
        raise unknown("dtype of the filtered projections (recon.filtered_dtype)", filtered_dtype,
                      FILTERED_DTYPES)
    volume_grid_checks(vol_shape, voxel_size_um, origin_mm)
    if proj.ndim != 3 or proj.shape[0] != matrices.shape[0] or view_weights.shape[0] != proj.shape[0]:
        raise XrmInputError(f"projections {proj.shape}, matrices {matrices.shape} and view weights "
                            f"{view_weights.shape} must agree on the number of views")
    vol_shape = tuple(int(n) for n in vol_shape)
    fresh = out is None
    if not fresh and (out.dtype != np.float32 or not out.flags.c_contiguous or out.shape != vol_shape):
        raise XrmInputError("out must be a C-contiguous float32 array of the volume shape")
    ox, oy, oz = (float(o) for o in origin_mm)
    mats, wts = _f32(matrices), _f32(view_weights)
    cone = _is_cone(mats)
    step = float(voxel_size_um) / 1000.0
    if filtered_dtype == "float16" or current_arch() == "cuda":
        if filtered_dtype == "float16":
            padded, scales = _padded_half(proj)
            wts = (wts * scales).astype(np.float32)
        else:
            padded = _padded(proj)
        padded = _resident(padded)
        # a new volume starts as zeros in device memory (allocation zero-fills it): no copy in
        target = _resident_zeros(vol_shape) if fresh else out
        if target is None:
            target = out = np.zeros(vol_shape, dtype=np.float32)
        for v0, v1 in _view_chunks(proj.shape[0]):
            _backproject_kernel(padded, mats, wts, target, ox, oy, oz, step, float(row0), v0, v1, cone)
        del padded
        if target is not out:
            out = target.to_numpy()
        return out
    if fresh:
        out = np.zeros(vol_shape, dtype=np.float32)
    if _rows_independent_of_xy(mats):
        z_mm = oz + step * np.arange(vol_shape[0])
        views_per_launch, slices_per_launch = _line_chunks(proj.shape[0], proj.shape[2] + 2 * PAD)
        for v0 in range(0, proj.shape[0], views_per_launch):
            v1 = min(v0 + views_per_launch, proj.shape[0])
            m = mats[v0:v1]
            padded = _padded(proj[v0:v1])
            for k0 in range(0, vol_shape[0], slices_per_launch):
                k1 = min(k0 + slices_per_launch, vol_shape[0])
                lines = _slice_lines(padded, m, z_mm[k0:k1], row0)
                col0 = (z_mm[k0:k1, None] * m[None, :, 2] + m[None, :, 3]).astype(np.float32)
                _backproject_lines_kernel(lines, col0, m, wts[v0:v1], out[k0:k1], ox, oy, step, v1 - v0)
    else:
        for v0, v1 in _view_chunks(proj.shape[0]):
            _backproject_quad_kernel(_quads(proj[v0:v1]), mats[v0:v1], wts[v0:v1], out, ox, oy, oz,
                                     step, float(row0), v1 - v0, cone)
    return out


def forward_project(vol: np.ndarray, matrices: np.ndarray, view_weights: np.ndarray,
                    det_shape: tuple[int, int], voxel_size_um: float,
                    origin_mm: tuple[float, float, float], *, row0: int = 0) -> np.ndarray:
    """Voxel-driven forward projection ``A`` with bilinear splatting: the adjoint of :func:`backproject`.

    Parameters
    ----------
    vol : ndarray, shape (nz, ny, nx), float32
    matrices, view_weights, voxel_size_um, origin_mm, row0
        As for :func:`backproject`.
    det_shape : (R, C)
        Rows and columns of the output (rows ``row0 .. row0 + R``).

    Returns
    -------
    ndarray, shape (V, R, C), float32
    """
    _ensure_taichi()
    volume_grid_checks(vol.shape, voxel_size_um, origin_mm)
    n_views = matrices.shape[0]
    padded = np.zeros((n_views, int(det_shape[0]) + 2 * PAD, int(det_shape[1]) + 2 * PAD), np.float32)
    ox, oy, oz = (float(o) for o in origin_mm)
    mats, wts = _f32(matrices), _f32(view_weights)
    _forward_kernel(_f32(vol), mats, wts, padded, ox, oy, oz, float(voxel_size_um) / 1000.0,
                    float(row0), 0, n_views, _is_cone(mats))
    return np.ascontiguousarray(padded[:, PAD:-PAD, PAD:-PAD])
