"""Centre-of-rotation (COR) estimation.

The COR is reported as ``offset_px``: the column offset of the projected rotation axis from the
detector centre, in detector pixels (positive towards +column). It maps onto the geometry as
``axis_offset_mm = offset_px * voxel_size_um / 1000`` (:func:`apply_center_offset`).

Two estimators, used coarse then fine by :func:`find_center_of_rotation`:

* ``"opposite"``: views 180 degrees apart see the central row mirrored; the shift that best
  aligns a view with its mirrored opposite (cross-correlation, parabolic sub-pixel peak) is
  twice the offset. Needs 360-degree data (or 180 degrees for parallel beam); approximate for
  cone beam.
* ``"sharpness"``: reconstruct the central slice for trial offsets and pick the one that
  maximises the image energy ``sum(mu^2)`` (a sharpness criterion in the family compared by
  Donath et al., JOSA A 23, 1048, 2006): a wrong COR smears every feature into arcs, which
  lowers the energy of the image. It peaks smoothly at the true offset, so a parabola through
  the best three trials gives sub-pixel accuracy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recon import truncation
from recon import voxel_projector as vp
from recon.fdk import plan_fdk, weight_and_filter
from twin.errors import XrmInputError, unknown
from twin.geometry import ScanGeometry
from twin.runtime import init_taichi

METHODS = ("sharpness", "opposite")


def apply_center_offset(geometry: ScanGeometry, offset_px: float) -> ScanGeometry:
    """``geometry`` with ``axis_offset_mm`` set from a COR offset in detector pixels."""
    return dataclasses.replace(geometry, axis_offset_mm=float(offset_px) * geometry.voxel_size_um / 1000.0)


def _central_rows(geometry: ScanGeometry) -> tuple[int, int]:
    r_mid = 0.5 * (geometry.rows - 1) + geometry.detector_offset_px[1]
    r0 = int(np.clip(np.floor(r_mid), 0, max(geometry.rows - 2, 0)))
    return r0, min(r0 + 2, geometry.rows)


def opposite_offset(line_integrals: np.ndarray, geometry: ScanGeometry,
                    angles_deg: np.ndarray | None = None) -> float:
    """COR offset (pixels) from views 180 degrees apart (central detector row)."""
    ang = np.asarray(geometry.angles_deg if angles_deg is None else angles_deg, float)
    r0, r1 = _central_rows(geometry)
    rows = np.asarray(line_integrals[:, r0:r1, :], dtype=np.float64).mean(axis=1)
    target = (ang[:, None] + 180.0 - ang[None, :]) % 360.0
    dist = np.minimum(target, 360.0 - target)
    partner = np.argmin(dist, axis=1)
    ok = dist[np.arange(len(ang)), partner] < 0.5 * np.median(np.diff(np.sort(ang)))
    if np.count_nonzero(ok) < 1:
        raise XrmInputError("no pairs of views 180 degrees apart: the 'opposite' COR method needs "
                            "a 360-degree scan (or use method='sharpness')")
    n = rows.shape[1]
    n_fft = 2 * n
    shifts = []
    for i in np.flatnonzero(ok)[:: max(1, np.count_nonzero(ok) // 64)]:
        a = rows[i] - rows[i].mean()
        b = rows[partner[i]][::-1] - rows[partner[i]].mean()
        xc = np.fft.irfft(np.fft.rfft(a, n_fft) * np.conj(np.fft.rfft(b, n_fft)), n_fft)
        k = int(np.argmax(xc))
        y0, y1, y2 = xc[k - 1], xc[k], xc[(k + 1) % n_fft]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
        s = k + frac
        if s > n_fft / 2:
            s -= n_fft
        shifts.append(s)
    # a mirrored about the detector centre; the axis at c_mid + o gives a shift of 2 o
    # (plus the detector's own half-pixel asymmetry, zero for the centred geometry)
    return float(np.median(shifts)) / 2.0


def _slice_metric(rows: np.ndarray, row0: int, geometry: ScanGeometry, offset_px: float,
                  angles_deg, n_pix: int, voxel_size_um: float, filter: str) -> float:
    """Minus the energy of the central slice reconstructed with a trial COR offset."""
    geom = dataclasses.replace(geometry, axis_offset_mm=float(offset_px) * voxel_size_um / 1000.0)
    plan = plan_fdk(geom, angles_deg=angles_deg, filter=filter)
    filt = weight_and_filter(rows, plan, row0=row0)
    h = voxel_size_um / 1000.0
    origin = (-(n_pix - 1) / 2 * h, -(n_pix - 1) / 2 * h, 0.0)
    img = vp.backproject(filt, plan.matrices, plan.view_weights, (1, n_pix, n_pix), voxel_size_um, origin,
                         row0=row0)[0]
    yy, xx = np.mgrid[:n_pix, :n_pix] - (n_pix - 1) / 2
    inside = np.hypot(xx, yy) < 0.5 * n_pix - 2
    f = img[inside].astype(np.float64)
    return -float(np.dot(f, f))


def sharpness_offset(line_integrals: np.ndarray, geometry: ScanGeometry, *, center_px: float = 0.0,
                     search_px: float = 8.0, step_px: float = 1.0, angles_deg: np.ndarray | None = None,
                     n_pix: int | None = None, filter: str = "ram-lak") -> float:
    """COR offset (pixels) maximising the energy ``sum(mu^2)`` of the central slice.

    Parameters
    ----------
    line_integrals : ndarray, shape (V, R, C)
    geometry : ScanGeometry
        Its own ``axis_offset_mm`` is ignored (trial offsets replace it).
    center_px, search_px, step_px : float
        Trials at ``center_px + k * step_px`` for ``|k step_px| <= search_px``, then a
        parabolic refinement and a second pass at a quarter of the step.
    n_pix : int, optional
        Slice size for the trials (default min(C, 256)).

    Truncated rows (interior scans) are extended first (:mod:`recon.truncation`), as the
    reconstruction will be.
    """
    n_pix = int(n_pix or min(geometry.cols, 256))
    vox = geometry.voxel_size_um * geometry.cols / n_pix
    r0, r1 = _central_rows(geometry)
    rows = np.asarray(line_integrals[:, r0:r1, :], np.float32)
    geom = geometry
    if truncation.is_truncated(rows):
        rows = truncation.extend_truncated(rows)
        geom = truncation.extended_geometry(geometry, geometry.cols)
    centre, step, half = float(center_px), float(step_px), float(search_px)
    for _ in range(2):
        trials = centre + step * np.arange(-np.floor(half / step), np.floor(half / step) + 1)
        vals = np.array([_slice_metric(rows, r0, geom, t, angles_deg, n_pix, vox, filter) for t in trials])
        k = int(np.argmin(vals))
        if 0 < k < len(trials) - 1:
            y0, y1, y2 = vals[k - 1], vals[k], vals[k + 1]
            denom = y0 - 2 * y1 + y2
            frac = 0.5 * (y0 - y2) / denom if denom > 0 else 0.0
            centre = float(trials[k] + np.clip(frac, -0.5, 0.5) * step)
        else:
            centre = float(trials[k])
        half, step = 2 * step, step / 4
    return centre


def find_center_of_rotation(line_integrals: np.ndarray, geometry: ScanGeometry, *,
                            method: str = "sharpness", search_px: float | None = None,
                            angles_deg: np.ndarray | None = None, arch: str = "cpu") -> float:
    """Estimate the COR offset in detector pixels.

    Parameters
    ----------
    line_integrals : ndarray, shape (V, R, C)
        ``-log`` projections.
    geometry : ScanGeometry
    method : {"sharpness", "opposite"}
        ``"sharpness"`` starts from the ``"opposite"`` estimate where the scan allows it.
    search_px : float, optional
        Half-width of the search around the start (default C / 16, at least 4).
    angles_deg : ndarray, optional

    Returns
    -------
    float
        Offset of the rotation axis from the detector centre, pixels (see module docstring).
    """
    if method not in METHODS:
        raise unknown("COR method", method, METHODS)
    init_taichi(arch)
    p = np.asarray(line_integrals)
    if p.ndim != 3 or p.shape[1:] != (geometry.rows, geometry.cols):
        raise XrmInputError(f"projections of shape {p.shape} do not match the detector "
                            f"(rows, cols) = ({geometry.rows}, {geometry.cols})")
    start = 0.0
    ang = np.asarray(geometry.angles_deg if angles_deg is None else angles_deg, float)
    if np.ptp(ang) >= 180.0:
        try:
            start = opposite_offset(p, geometry, angles_deg=ang)
        except XrmInputError:
            if method == "opposite":
                raise
            start = 0.0
    if method == "opposite":
        return start
    half = float(search_px) if search_px is not None else max(4.0, geometry.cols / 16)
    if start != 0.0 and search_px is None:
        half = 4.0
    return sharpness_offset(p, geometry, center_px=start, search_px=half, angles_deg=ang)
