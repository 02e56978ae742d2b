"""Optional ASTRA Toolbox backend (``pip install astra-toolbox``), used as a reference peer.

* :func:`fbp_parallel_2d`: ASTRA's CPU FBP of one parallel-beam sinogram (any machine).
* :func:`fdk_cone`: ASTRA's ``FDK_CUDA`` on the geometry's per-view vectors (needs a GPU).

Geometry: ASTRA's ``parallel`` / ``cone_vec`` conventions use the same vector layout as
``ScanGeometry.vectors()`` (source or ray, detector centre, u, v); ASTRA works in units of the
voxel size, so the vectors are divided by it and shifted by the volume centre. ASTRA's 3-D
projection data are ordered [row, view, col]. The 2-D parallel geometry with the view angles
in radians reproduces our frame (checked by ``tests/test_recon_fdk.py``).
"""

from __future__ import annotations

import numpy as np

from twin.errors import XrmInputError
from twin.geometry import ScanGeometry


def available(*, cuda: bool = False) -> bool:
    """True when astra-toolbox imports (and, with ``cuda``, sees a GPU)."""
    try:
        import astra
    except ImportError:
        return False
    return bool(astra.use_cuda()) if cuda else True


def _astra():
    try:
        import astra
    except ImportError:
        raise XrmInputError("the ASTRA backend needs astra-toolbox: pip install astra-toolbox") from None
    return astra


def fbp_parallel_2d(sinogram: np.ndarray, angles_deg: np.ndarray, *, n_pixels: int | None = None,
                    filter: str = "ram-lak") -> np.ndarray:
    """ASTRA FBP (CPU) of a parallel-beam sinogram with unit pixels.

    Parameters
    ----------
    sinogram : ndarray, shape (V, C)
        Line integrals per pixel length.
    angles_deg : ndarray, shape (V,)
    n_pixels : int, optional
        Output size (default C).
    filter : str
        ASTRA filter name ("ram-lak", "shepp-logan", "cosine", "hamming", "hann").

    Returns
    -------
    ndarray, shape (n, n), float32, attenuation per pixel
    """
    astra = _astra()
    sino = np.ascontiguousarray(sinogram, dtype=np.float32)
    n = int(n_pixels or sino.shape[1])
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, sino.shape[1], np.deg2rad(np.asarray(angles_deg, float)))
    sid = astra.data2d.create("-sino", pg, sino)
    rid = astra.data2d.create("-vol", vg)
    pid = astra.create_projector("linear", pg, vg)
    cfg = astra.astra_dict("FBP")
    cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid,
               option={"FilterType": filter})
    aid = astra.algorithm.create(cfg)
    try:
        astra.algorithm.run(aid)
        return astra.data2d.get(rid).astype(np.float32)
    finally:
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
        astra.projector.delete(pid)


def fdk_cone(projections: np.ndarray, geometry: ScanGeometry, *, vol_shape: tuple[int, int, int],
             voxel_size_um: float, origin_mm: tuple[float, float, float],
             angles_deg: np.ndarray | None = None) -> np.ndarray:
    """ASTRA ``FDK_CUDA`` reconstruction (GPU only).

    Parameters
    ----------
    projections : ndarray, shape (V, R, C)
        Line integrals.
    geometry : ScanGeometry
        Cone beam.
    vol_shape, voxel_size_um, origin_mm
        Output grid (``origin_mm`` = centre of voxel [0, 0, 0], (x, y, z)).

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32, 1/mm
    """
    astra = _astra()
    if not astra.use_cuda():
        raise XrmInputError("ASTRA FDK_CUDA needs a CUDA GPU; none is visible to astra-toolbox")
    if geometry.beam != "cone":
        raise XrmInputError("fdk_cone needs a cone-beam geometry")
    h = voxel_size_um / 1000.0
    nz, ny, nx = vol_shape
    centre = np.array([origin_mm[0] + (nx - 1) / 2 * h, origin_mm[1] + (ny - 1) / 2 * h,
                       origin_mm[2] + (nz - 1) / 2 * h])
    vec = geometry.vectors(angles_deg).copy()
    vec[:, 0:3] -= centre
    vec[:, 3:6] -= centre
    vec /= h
    vg = astra.create_vol_geom(ny, nx, nz)
    pg = astra.create_proj_geom("cone_vec", geometry.rows, geometry.cols, vec)
    data = np.ascontiguousarray(np.transpose(np.asarray(projections, np.float32), (1, 0, 2)))
    pid = astra.data3d.create("-proj3d", pg, data)
    rid = astra.data3d.create("-vol", vg)
    cfg = astra.astra_dict("FDK_CUDA")
    cfg.update(ReconstructionDataId=rid, ProjectionDataId=pid)
    aid = astra.algorithm.create(cfg)
    try:
        astra.algorithm.run(aid)
        return (astra.data3d.get(rid) / h).astype(np.float32)
    finally:
        astra.algorithm.delete(aid)
        astra.data3d.delete([pid, rid])
