"""Iterative reconstruction (SIRT, CGLS) with a matched projector pair.

The system matrix ``A`` is the voxel-driven projector of :mod:`recon.voxel_projector`, with
per-voxel weight ``voxel^3 / (pitch_u * pitch_v) * (SDD / L)^2``: the voxel's volume spread
over its magnified footprint on the detector, so that ``A x`` approximates line integrals
(mm x 1/mm) of ``x``. ``A^T`` is its exact adjoint (the backprojector with the same weights).

* SIRT: ``x <- x + C A^T R (b - A x)`` with ``R = 1 / (A 1)``, ``C = 1 / (A^T 1)``
  (Gregor & Benson 2008), optional non-negativity.
* CGLS: conjugate gradients on the normal equations ``A^T A x = A^T b`` (Hestenes-Stiefel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon import voxel_projector as vp
from recon.fdk import available_memory_bytes, centred_origin, check_projections_array, default_volume
from twin.errors import XrmInputError
from twin.geometry import ScanGeometry
from twin.runtime import init_taichi


@dataclass(frozen=True)
class ProjectionOperator:
    """The linear map volume (1/mm) -> line integrals, and its adjoint.

    Attributes
    ----------
    matrices : ndarray, shape (V, 12)
    view_weights : ndarray, shape (V,)
    det_shape : (rows, cols)
    vol_shape : (nz, ny, nx)
    voxel_size_um : float
    origin_mm : (x, y, z)
    """

    matrices: np.ndarray
    view_weights: np.ndarray
    det_shape: tuple[int, int]
    vol_shape: tuple[int, int, int]
    voxel_size_um: float
    origin_mm: tuple[float, float, float]

    def forward(self, vol: np.ndarray) -> np.ndarray:
        """``A x``: shape (V, rows, cols), float32."""
        return vp.forward_project(vol, self.matrices, self.view_weights, self.det_shape,
                                  self.voxel_size_um, self.origin_mm)

    def adjoint(self, proj: np.ndarray) -> np.ndarray:
        """``A^T y``: shape (nz, ny, nx), float32."""
        return vp.backproject(proj, self.matrices, self.view_weights, self.vol_shape,
                              self.voxel_size_um, self.origin_mm)


def make_operator(geometry: ScanGeometry, *, angles_deg: np.ndarray | None = None,
                  vol_shape: tuple[int, int, int] | None = None, voxel_size_um: float | None = None,
                  origin_mm: tuple[float, float, float] | None = None) -> ProjectionOperator:
    """Build the projector pair of ``geometry`` for a volume grid (defaults: the field of view)."""
    d_shape, d_vox, _ = default_volume(geometry)
    vol_shape = tuple(int(n) for n in (vol_shape or d_shape))
    vox = float(voxel_size_um or d_vox)
    origin = tuple(origin_mm) if origin_mm is not None else centred_origin(vol_shape, vox)
    vp.volume_grid_checks(vol_shape, vox, origin)
    vec = vp.view_vectors(geometry, angles_deg)
    mats = vp.projection_matrices(vec, geometry.cols, geometry.rows, geometry.beam)
    pu = np.linalg.norm(vec[:, 6:9], axis=1)
    pv = np.linalg.norm(vec[:, 9:12], axis=1)
    h = vox / 1000.0
    weights = h ** 3 / (pu * pv)
    return ProjectionOperator(mats, weights, (geometry.rows, geometry.cols), vol_shape, vox, origin)


def _prepare(projections, geometry, angles_deg, vol_shape, voxel_size_um, origin_mm, max_bytes, n_arrays):
    n_views = len(geometry.angles_deg) if angles_deg is None else len(angles_deg)
    b = check_projections_array(projections, n_views, geometry.rows, geometry.cols)
    op = make_operator(geometry, angles_deg=angles_deg, vol_shape=vol_shape,
                       voxel_size_um=voxel_size_um, origin_mm=origin_mm)
    need = 4 * n_arrays * (int(np.prod(op.vol_shape)) + b.size)
    limit = int(0.8 * available_memory_bytes()) if max_bytes is None else int(max_bytes)
    if need > limit:
        raise XrmInputError(f"iterative reconstruction of {b.shape} projections into a {op.vol_shape} "
                            f"volume needs about {need / 2**30:.2f} GiB but {limit / 2**30:.2f} GiB "
                            "are allowed; reduce the volume or use FDK (which chunks by slabs)")
    return b, op


def sirt(projections: np.ndarray, geometry: ScanGeometry, *, n_iter: int = 100,
         angles_deg: np.ndarray | None = None, vol_shape: tuple[int, int, int] | None = None,
         voxel_size_um: float | None = None, origin_mm: tuple[float, float, float] | None = None,
         nonneg: bool = True, x0: np.ndarray | None = None, arch: str = "cpu",
         max_bytes: int | None = None) -> np.ndarray:
    """SIRT reconstruction.

    Parameters
    ----------
    projections : ndarray, shape (V, R, C)
        Line integrals (dimensionless).
    geometry : ScanGeometry
    n_iter : int
        Iterations (>= 1).
    angles_deg, vol_shape, voxel_size_um, origin_mm
        As for :func:`recon.fdk.fdk`.
    nonneg : bool
        Clip negative attenuation after each update.
    x0 : ndarray, shape (nz, ny, nx), optional
        Starting volume (e.g. an FDK result), 1/mm.
    arch : {"cpu", "cuda", "auto"}
    max_bytes : int, optional
        Memory allowed (default 80 % of the available memory).

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32, 1/mm
    """
    init_taichi(arch)
    if int(n_iter) < 1:
        raise XrmInputError(f"n_iter must be >= 1, got {n_iter!r}")
    b, op = _prepare(projections, geometry, angles_deg, vol_shape, voxel_size_um, origin_mm, max_bytes, 4)
    row_sum = op.forward(np.ones(op.vol_shape, np.float32))
    col_sum = op.adjoint(np.ones_like(b))
    r = np.where(row_sum > 1e-6 * row_sum.max(), 1.0 / np.maximum(row_sum, 1e-30), 0.0).astype(np.float32)
    c = np.where(col_sum > 1e-6 * col_sum.max(), 1.0 / np.maximum(col_sum, 1e-30), 0.0).astype(np.float32)
    x = np.zeros(op.vol_shape, np.float32) if x0 is None else np.array(x0, dtype=np.float32)
    for _ in range(int(n_iter)):
        resid = b - op.forward(x)
        x += c * op.adjoint(r * resid)
        if nonneg:
            np.maximum(x, 0.0, out=x)
    return x


def cgls(projections: np.ndarray, geometry: ScanGeometry, *, n_iter: int = 20,
         angles_deg: np.ndarray | None = None, vol_shape: tuple[int, int, int] | None = None,
         voxel_size_um: float | None = None, origin_mm: tuple[float, float, float] | None = None,
         x0: np.ndarray | None = None, arch: str = "cpu", max_bytes: int | None = None) -> np.ndarray:
    """CGLS reconstruction (least squares ``min |A x - b|^2``, early stopping regularises).

    Parameters are those of :func:`sirt` (no non-negativity).

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32, 1/mm
    """
    init_taichi(arch)
    if int(n_iter) < 1:
        raise XrmInputError(f"n_iter must be >= 1, got {n_iter!r}")
    b, op = _prepare(projections, geometry, angles_deg, vol_shape, voxel_size_um, origin_mm, max_bytes, 5)
    x = np.zeros(op.vol_shape, np.float32) if x0 is None else np.array(x0, dtype=np.float32)
    r = b - op.forward(x) if x0 is not None else b.copy()
    s = op.adjoint(r)
    p = s.copy()
    gamma = float(np.vdot(s, s))
    for _ in range(int(n_iter)):
        q = op.forward(p)
        qq = float(np.vdot(q, q))
        if qq <= 0 or gamma <= 0:
            break
        alpha = gamma / qq
        x += np.float32(alpha) * p
        r -= np.float32(alpha) * q
        s = op.adjoint(r)
        gamma_new = float(np.vdot(s, s))
        p = s + np.float32(gamma_new / gamma) * p
        gamma = gamma_new
    return x
