"""Feldkamp-Davis-Kress (FDK) reconstruction for a flat detector, full and short scans.

The FDK weights live here and only here (Kak & Slaney 1988, ch. 3.6; Feldkamp et al. 1984):

``mu(x) = sum_v  w_v * (SOD / L_v(x))^2 * Q_v(col(x), row(x))``

* pre-weighting of each detector pixel by the cosine ``SDD / sqrt(SDD^2 + u^2 + v^2)``, with
  ``(u, v)`` measured on the detector from the principal point (foot of the source normal);
* ramp filtering of each detector row (:mod:`recon.filters`) with the sampling step of the
  virtual detector at the rotation axis, ``pitch / M`` (``M = SDD / SOD``);
* voxel-driven backprojection (:mod:`recon.voxel_projector`) with the distance weight
  ``(SOD / L)^2`` where ``L`` is the source-voxel distance along the detector normal;
* view weights ``w_v``: for a full 360-degree scan ``dbeta_v / 2`` (every ray is measured
  twice); for a short scan of ``180 + 2 delta`` degrees, ``dbeta_v`` times Parker's weights
  (Parker 1982) ``w(beta, gamma)`` applied to the projections before filtering, with the
  overscan ``delta >= `` the half fan angle. Parallel beam is the limit ``SOD -> inf``:
  no cosine or distance weights, ``delta = 0`` allowed (:mod:`recon.fbp`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from recon import voxel_projector as vp
from recon.filters import FILTERED_DTYPES, canonical_filter_name, filter_rows
from twin.errors import XrmInputError, unknown
from twin.geometry import ScanGeometry
from twin.runtime import current_arch, init_taichi

#: Tolerance on angular coverage, as a fraction of one angular step.
_COVERAGE_TOL_STEPS = 0.5
#: detector pixels weighted and filtered per block of views (a block's temporaries: its float64
#: weights, the weighted rows and their spectra, about 40 bytes per pixel)
_FILTER_BLOCK_PIXELS = 1 << 19


@dataclass(frozen=True)
class FdkPlan:
    """Everything FDK needs besides the projections; built by :func:`plan_fdk`.

    Attributes
    ----------
    beam : str
    n_rows, n_cols : int
        Detector size.
    matrices : ndarray, shape (V, 12)
        Projection matrices (:func:`recon.voxel_projector.projection_matrices`).
    view_weights : ndarray, shape (V,)
        ``w_v / M^2`` (angular weight, divided by the squared magnification so that the
        backprojector's ``1/den^2 = (SDD/L)^2`` becomes ``(SOD/L)^2``).
    principal_col, principal_row, sdd_mm : ndarray, shape (V,)
        Principal point (pixel indices) and source-detector distance per view (cone beam).
    pitch_u_mm, pitch_v_mm : float
        Detector pixel pitch along columns and rows (at the detector plane).
    filter_spacing_mm : float
        Sampling step of the ramp filter (virtual detector pixel at the axis).
    parker : ndarray, shape (V, C) or None
        Short-scan weights applied before filtering.
    filter, cutoff : str, float
    """

    beam: str
    n_rows: int
    n_cols: int
    angles_deg: np.ndarray
    matrices: np.ndarray
    view_weights: np.ndarray
    principal_col: np.ndarray
    principal_row: np.ndarray
    sdd_mm: np.ndarray
    pitch_u_mm: float
    pitch_v_mm: float
    filter_spacing_mm: float
    parker: np.ndarray | None
    filter: str
    cutoff: float

    @property
    def short_scan(self) -> bool:
        return self.parker is not None


# ----------------------------------------------------------------------------- weights


def angular_coverage(angles_deg: np.ndarray, *, beam: str, half_fan_deg: float = 0.0
                     ) -> tuple[np.ndarray, float | None]:
    """Angular step per view and the short-scan overscan, checking that the angles suffice.

    Parameters
    ----------
    angles_deg : ndarray, shape (V,)
        View angles in degrees (any order).
    beam : {"cone", "parallel"}
    half_fan_deg : float
        Largest fan angle of the detector seen from the source (cone beam), degrees.

    Returns
    -------
    dbeta_rad : ndarray, shape (V,)
        Angular interval owned by each view (trapezoid rule), radians; already halved for
        full (periodic) scans so that ``sum(dbeta_rad) == pi`` in both cases.
    delta_rad : float or None
        Overscan of a short scan (``(span - pi) / 2``); None for a full scan.

    Raises
    ------
    XrmInputError
        When the angles do not cover 180 degrees plus the fan angle (cone) or 180 degrees
        (parallel), or when they are not finite or repeat.
    """
    a = np.asarray(angles_deg, dtype=np.float64)
    if a.ndim != 1 or a.size < 2:
        raise XrmInputError(f"need at least 2 view angles, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise XrmInputError("view angles contain non-finite values")
    order = np.argsort(a, kind="stable")
    s = a[order]
    steps = np.diff(s)
    if np.any(steps <= 0):
        raise XrmInputError("view angles repeat; each view needs its own angle")
    span = s[-1] - s[0]
    step = float(np.median(steps))
    out = np.empty_like(s)
    periods = (360.0, 180.0) if beam == "parallel" else (360.0,)
    for period in periods:
        if abs(span + step - period) <= _COVERAGE_TOL_STEPS * step and steps.max() < 2.5 * step:
            # periodic sampling of one period: trapezoid with wrap-around
            ext = np.concatenate([[s[-1] - period], s, [s[0] + period]])
            out[:] = 0.5 * (ext[2:] - ext[:-2])
            scale = 0.5 if period == 360.0 else 1.0  # every ray measured twice in 360 deg
            dbeta = np.empty_like(out)
            dbeta[order] = np.deg2rad(out) * scale
            return dbeta, None
    need = 180.0 + (2.0 * half_fan_deg if beam == "cone" else 0.0)
    if span > 360.0 + 1e-9:
        raise XrmInputError(f"view angles span {span:.3f} deg, more than one turn; "
                            "pass at most 360 degrees of views")
    if span < need - 1e-6:
        what = "FDK (cone beam) needs 180 deg + the fan angle" if beam == "cone" else \
            "parallel-beam FBP needs 180 deg"
        raise XrmInputError(f"view angles cover {span:.3f} deg but {what} = {need:.3f} deg "
                            f"(half fan angle {half_fan_deg:.3f} deg); use SIRT/CGLS for "
                            "limited-angle data or scan a wider arc")
    ext = np.concatenate([[s[0]], s, [s[-1]]])
    out[:] = 0.5 * (ext[2:] - ext[:-2])
    dbeta = np.empty_like(out)
    dbeta[order] = np.deg2rad(out)
    return dbeta, np.deg2rad(span - 180.0) / 2.0


def parker_weights(beta_rad: np.ndarray, gamma_rad: np.ndarray, delta_rad: float) -> np.ndarray:
    """Parker (1982) short-scan weights on ``beta in [0, pi + 2 delta]``.

    Parameters
    ----------
    beta_rad : ndarray, shape (V,)
        View angle from the start of the arc, radians.
    gamma_rad : ndarray, shape (V, C) or (C,)
        Fan angle of each column, radians, signed so that the ray (beta, gamma) is measured
        again at (beta + pi + 2 gamma, -gamma).
    delta_rad : float
        Overscan half-angle, >= max |gamma| (0 for parallel beam).

    Returns
    -------
    ndarray, shape (V, C)
        Weights in [0, 1]; ``w(beta, gamma) + w(beta + pi + 2 gamma, -gamma) = 1``.
    """
    b = np.asarray(beta_rad, float)[:, None]
    g = np.broadcast_to(np.asarray(gamma_rad, float), (b.shape[0], np.shape(gamma_rad)[-1]))
    w = np.ones(g.shape)
    if delta_rad <= 0:
        return w
    d = float(delta_rad)
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = b < 2 * (d - g)
        w = np.where(r1, np.sin(0.25 * np.pi * b / (d - g)) ** 2, w)
        r3 = b > np.pi - 2 * g
        w = np.where(r3, np.sin(0.25 * np.pi * (np.pi + 2 * d - b) / (d + g)) ** 2, w)
    w = np.where((b < 0) | (b > np.pi + 2 * d + 1e-9), 0.0, w)
    return np.nan_to_num(w, nan=0.0)


def cosine_weights(plan: FdkPlan, row0: int, n_rows: int) -> np.ndarray:
    """FDK cosine weights ``SDD / sqrt(SDD^2 + u^2 + v^2)`` for detector rows row0..row0+n_rows.

    Returns
    -------
    ndarray, shape (V, n_rows, C), float32 (ones for parallel beam)
    """
    v_count = plan.matrices.shape[0]
    if plan.beam != "cone":
        return np.ones((v_count, n_rows, plan.n_cols), dtype=np.float32)
    cols = np.arange(plan.n_cols, dtype=np.float64)
    rows = np.arange(row0, row0 + n_rows, dtype=np.float64)
    du = (cols[None, :] - plan.principal_col[:, None]) * plan.pitch_u_mm  # (V, C)
    dv = (rows[None, :] - plan.principal_row[:, None]) * plan.pitch_v_mm  # (V, R)
    sdd = plan.sdd_mm[:, None, None]
    w = sdd / np.sqrt(sdd ** 2 + du[:, None, :] ** 2 + dv[:, :, None] ** 2)
    return w.astype(np.float32)


# ----------------------------------------------------------------------------- plan


def plan_fdk(geometry: ScanGeometry, *, angles_deg: np.ndarray | None = None,
             filter: str = "ram-lak", cutoff: float = 1.0) -> FdkPlan:
    """Precompute per-view matrices and weights of FDK (cone) or FBP (parallel).

    Parameters
    ----------
    geometry : ScanGeometry
    angles_deg : ndarray, shape (V,), optional
        View angles; default ``geometry.angles_deg``.
    filter : str
        Ramp window, see :data:`recon.filters.FILTERS`.
    cutoff : float
        Filter cutoff as a fraction of Nyquist.

    Returns
    -------
    FdkPlan
    """
    filt = canonical_filter_name(filter)
    ang = geometry.angles_deg if angles_deg is None else np.asarray(angles_deg, dtype=np.float64)
    vec = vp.view_vectors(geometry, ang)
    mats = vp.projection_matrices(vec, geometry.cols, geometry.rows, geometry.beam)
    s, d, u, v = vec[:, 0:3], vec[:, 3:6], vec[:, 6:9], vec[:, 9:12]
    pitch_u = float(np.linalg.norm(u[0]))
    pitch_v = float(np.linalg.norm(v[0]))
    n = np.cross(u, v)
    n /= np.linalg.norm(n, axis=1)[:, None]
    c_mid, r_mid = 0.5 * (geometry.cols - 1), 0.5 * (geometry.rows - 1)
    if geometry.beam == "cone":
        n *= np.sign(np.einsum("ij,ij->i", d - s, n))[:, None]  # point from source to detector
        sdd = np.einsum("ij,ij->i", d - s, n)
        foot = s + sdd[:, None] * n  # principal point in space
        pc = np.einsum("ij,ij->i", foot - d, u) / pitch_u ** 2 + c_mid
        pr = np.einsum("ij,ij->i", foot - d, v) / pitch_v ** 2 + r_mid
        sod = np.linalg.norm(s[:, :2], axis=1)  # distance of the source from the z axis
        mag = sdd / sod
        spacing = pitch_u / float(np.mean(mag))
        half_fan = float(np.rad2deg(np.max(np.arctan(
            np.maximum(np.abs(-0.5 - pc), np.abs(geometry.cols - 0.5 - pc)) * pitch_u / sdd))))
    else:
        sdd = np.full(len(ang), np.inf)
        pc = np.full(len(ang), c_mid)
        pr = np.full(len(ang), r_mid)
        mag = np.ones(len(ang))
        spacing = pitch_u
        half_fan = 0.0
    dbeta, delta = angular_coverage(ang, beam=geometry.beam, half_fan_deg=half_fan)
    parker = None
    if delta is not None and delta > 0:
        beta = np.deg2rad(ang - np.min(ang))
        if geometry.beam == "cone":
            gamma = np.arctan((np.arange(geometry.cols)[None, :] - pc[:, None]) * pitch_u / sdd[:, None])
        else:
            gamma = np.zeros((len(ang), geometry.cols))
        parker = parker_weights(beta, gamma, delta).astype(np.float32)
    view_weights = dbeta / mag ** 2
    return FdkPlan(beam=geometry.beam, n_rows=geometry.rows, n_cols=geometry.cols,
                   angles_deg=ang, matrices=mats, view_weights=view_weights,
                   principal_col=pc, principal_row=pr, sdd_mm=sdd, pitch_u_mm=pitch_u,
                   pitch_v_mm=pitch_v, filter_spacing_mm=spacing, parker=parker,
                   filter=filt, cutoff=float(cutoff))


def default_volume(geometry: ScanGeometry) -> tuple[tuple[int, int, int], float, tuple[float, float, float]]:
    """Volume covering the field of view: shape (rows, cols, cols), voxel, centred origin.

    Returns
    -------
    vol_shape : (nz, ny, nx)
    voxel_size_um : float
    origin_mm : (x, y, z) of voxel [0, 0, 0]
    """
    nz, nxy = geometry.rows, geometry.cols
    vox = geometry.voxel_size_um
    h = vox / 1000.0
    origin = (-(nxy - 1) / 2 * h, -(nxy - 1) / 2 * h, -(nz - 1) / 2 * h)
    return (nz, nxy, nxy), vox, origin


def available_memory_bytes() -> int:
    """Physical memory available now (bytes); a conservative guess where unknown."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def check_projections_array(proj: np.ndarray, n_views: int, n_rows: int, n_cols: int,
                            what: str = "projections") -> np.ndarray:
    """Check shape [view, row, col] against the geometry and finiteness; return float32."""
    p = np.asarray(proj)
    if p.ndim == 2 and n_rows == 1:
        p = p[:, None, :]
    if p.shape != (n_views, n_rows, n_cols):
        raise XrmInputError(f"{what} have shape {p.shape} but the geometry gives "
                            f"(views, rows, cols) = ({n_views}, {n_rows}, {n_cols})")
    p = np.asarray(p, dtype=np.float32)
    if not np.all(np.isfinite(p)):
        bad = int(np.size(p) - np.count_nonzero(np.isfinite(p)))
        raise XrmInputError(f"{what} contain {bad} non-finite values (NaN/inf); "
                            "check flats/darks and the -log step")
    return p


# ----------------------------------------------------------------------------- FDK


def weight_and_filter(line_integrals: np.ndarray, plan: FdkPlan, row0: int = 0) -> np.ndarray:
    """Cosine-weight, Parker-weight and ramp-filter detector rows ``row0 ..``.

    Parameters
    ----------
    line_integrals : ndarray, shape (V, R, C)
        ``-log(I / I0)`` for detector rows ``row0 .. row0 + R``.
    plan : FdkPlan
    row0 : int

    Returns
    -------
    ndarray, shape (V, R, C), float32, 1/mm per unit line integral
    """
    p = np.asarray(line_integrals, dtype=np.float32)
    out = np.empty(p.shape, np.float32)

    def views(v0: int, v1: int) -> None:
        # a block of views: its weights (V, R, C) and filtered rows, not the stack's
        sub = plan_views(plan, v0, v1)
        w = cosine_weights(sub, row0, p.shape[1])
        if sub.parker is not None:
            w *= sub.parker[:, None, :]
        out[v0:v1] = filter_rows(p[v0:v1] * w, spacing_mm=plan.filter_spacing_mm, filter=plan.filter,
                                 cutoff=plan.cutoff, workers=1)

    # every (view, row) line is weighted and filtered on its own, so blocks of views on the
    # host's threads give the same values as one call
    from recon import slabs

    step = max(1, _FILTER_BLOCK_PIXELS // max(1, p.shape[1] * p.shape[2]))
    blocks = [(v0, min(v0 + step, p.shape[0])) for v0 in range(0, p.shape[0], step)]
    slabs.run_ranges(views, blocks, slabs.host_threads_for(p.size))
    return out


def backproject_filtered(filtered: np.ndarray, plan: FdkPlan, vol_shape: tuple[int, int, int],
                         voxel_size_um: float, origin_mm: tuple[float, float, float], *,
                         row0: int = 0, filtered_dtype: str = "float32") -> np.ndarray:
    """FDK backprojection of filtered rows ``row0 ..`` into a volume (float32, 1/mm)."""
    return vp.backproject(filtered, plan.matrices, plan.view_weights.astype(np.float32),
                          vol_shape, voxel_size_um, origin_mm, row0=row0, filtered_dtype=filtered_dtype)


def fdk(projections: np.ndarray, geometry: ScanGeometry, *, angles_deg: np.ndarray | None = None,
        vol_shape: tuple[int, int, int] | None = None, voxel_size_um: float | None = None,
        origin_mm: tuple[float, float, float] | None = None, filter: str = "ram-lak",
        cutoff: float = 1.0, arch: str = "cpu", max_bytes: int | None = None,
        filtered_dtype: str = "float32") -> np.ndarray:
    """FDK reconstruction of line integrals (cone beam; parallel beam works as FBP).

    Parameters
    ----------
    projections : ndarray, shape (V, R, C)
        Line integrals ``-log(I/I0)`` (dimensionless), [view, row, col].
    geometry : ScanGeometry
    angles_deg : ndarray, shape (V,), optional
        Overrides ``geometry.angles_deg``.
    vol_shape : (nz, ny, nx), optional
        Default: (rows, cols, cols).
    voxel_size_um : float, optional
        Default: ``geometry.voxel_size_um``.
    origin_mm : (x, y, z), optional
        Centre of voxel [0, 0, 0]; default centres the volume on the rotation axis.
    filter : str
        Ram-Lak, Shepp-Logan, Cosine, Hamming or Hann.
    cutoff : float
        Filter cutoff, fraction of Nyquist.
    arch : {"cpu", "cuda", "auto"}
        Taichi backend.
    max_bytes : int, optional
        Memory allowed for the volume, the projections and one chunk of views being filtered
        (:data:`FDK_CHUNK_BYTES`; default: 80 % of the available memory). Larger jobs are
        refused; :func:`recon.pipeline.reconstruct` chunks them by slabs.
    filtered_dtype : {"float32", "float16"}
        How the filtered projections are held for the backprojection
        (:func:`recon.voxel_projector.backproject`): float16 halves the bytes the GPU reads.

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32
        Linear attenuation coefficient in 1/mm.
    """
    init_taichi(arch)
    if filtered_dtype not in FILTERED_DTYPES:
        raise unknown("dtype of the filtered projections (recon.filtered_dtype)", filtered_dtype,
                      FILTERED_DTYPES)
    n_views = len(geometry.angles_deg) if angles_deg is None else len(angles_deg)
    p = check_projections_array(projections, n_views, geometry.rows, geometry.cols)
    d_shape, d_vox, d_origin = default_volume(geometry)
    vol_shape = tuple(int(n) for n in (vol_shape or d_shape))
    voxel_size_um = float(voxel_size_um or d_vox)
    origin_mm = tuple(origin_mm) if origin_mm is not None else _centred_origin(vol_shape, voxel_size_um)
    vp.volume_grid_checks(vol_shape, voxel_size_um, origin_mm)
    need = 4 * (int(np.prod(vol_shape)) + p.size) + FDK_CHUNK_BYTES
    limit = int(0.8 * available_memory_bytes()) if max_bytes is None else int(max_bytes)
    if need > limit:
        raise XrmInputError(f"FDK of {p.shape} projections into a {vol_shape} volume needs about "
                            f"{need / 2**30:.2f} GiB but {limit / 2**30:.2f} GiB are allowed; "
                            "use recon.pipeline.reconstruct (chunks by slabs) or a smaller volume")
    plan = plan_fdk(geometry, angles_deg=angles_deg, filter=filter, cutoff=cutoff)
    if current_arch() == "cuda":  # one pass: the volume stays on the device for all views
        filtered = weight_and_filter(p, plan)
        return backproject_filtered(filtered, plan, vol_shape, voxel_size_um, origin_mm,
                                    filtered_dtype=filtered_dtype)
    # CPU: filter and backproject a chunk of views at a time into one volume (backprojection
    # sums over views), so the filtering's temporaries stay a small part of the memory
    vol = np.zeros(vol_shape, np.float32)
    step = fdk_view_chunk(p.shape[1], p.shape[2], p.shape[0],
                          min(FDK_CHUNK_BYTES, max(FDK_MIN_CHUNK_BYTES, (p.nbytes + vol.nbytes) // 4)))
    for v0 in range(0, p.shape[0], step):
        sub = plan_views(plan, v0, min(v0 + step, p.shape[0]))
        vp.backproject(weight_and_filter(p[v0:v0 + step], sub), sub.matrices,
                       sub.view_weights.astype(np.float32), vol_shape, voxel_size_um, origin_mm,
                       out=vol, filtered_dtype=filtered_dtype)
    return vol


#: Most bytes of weighting and filtering temporaries per chunk of views in CPU FDK (about six
#: float32 copies of the chunk: weights, weighted rows, spectrum, inverse transform, output);
#: never more than a quarter of the projections and the volume together.
FDK_CHUNK_BYTES = 64 << 20
#: ... and at least this many, so that a small job takes few launches (a 128-column slice from
#: 180 views: 13 ms in 15 launches, 5 ms in one)
FDK_MIN_CHUNK_BYTES = 4 << 20


def fdk_view_chunk(n_rows: int, n_cols: int, n_views: int, budget_bytes: int | None = None) -> int:
    """Views per chunk of CPU FDK: the chunk's temporaries (~24 bytes per detector pixel)
    within ``budget_bytes`` (default :data:`FDK_CHUNK_BYTES`), at least 8 views."""
    budget = FDK_CHUNK_BYTES if budget_bytes is None else int(budget_bytes)
    per_view = 24 * int(n_rows) * int(n_cols)
    return int(max(8, min(int(n_views), budget // max(per_view, 1))))


def plan_views(plan: FdkPlan, v0: int, v1: int) -> FdkPlan:
    """The plan of views ``v0 .. v1`` (per-view arrays sliced; weights unchanged)."""
    import dataclasses

    sl = slice(int(v0), int(v1))
    return dataclasses.replace(
        plan, angles_deg=plan.angles_deg[sl], matrices=plan.matrices[sl],
        view_weights=plan.view_weights[sl], principal_col=plan.principal_col[sl],
        principal_row=plan.principal_row[sl], sdd_mm=plan.sdd_mm[sl],
        parker=None if plan.parker is None else plan.parker[sl])


def _centred_origin(vol_shape: tuple[int, int, int], voxel_size_um: float) -> tuple[float, float, float]:
    nz, ny, nx = vol_shape
    h = voxel_size_um / 1000.0
    return (-(nx - 1) / 2 * h, -(ny - 1) / 2 * h, -(nz - 1) / 2 * h)


centred_origin = _centred_origin
