"""Filtered backprojection (FBP) for parallel-beam scans.

Parallel beam is the limit of FDK for a source at infinity: no cosine or distance weights,
the ramp filter sampled at the detector pixel (the sample-plane pixel), and view weights that
integrate over 180 degrees (``dbeta / 2`` for 360-degree scans, Parker-type smooth weights for
arcs between 180 and 360 degrees). The weights live in :mod:`recon.fdk`.
"""

from __future__ import annotations

import numpy as np

from recon.fdk import fdk
from twin.errors import XrmInputError
from twin.geometry import ScanGeometry


def fbp(projections: np.ndarray, geometry: ScanGeometry, *, angles_deg: np.ndarray | None = None,
        vol_shape: tuple[int, int, int] | None = None, voxel_size_um: float | None = None,
        origin_mm: tuple[float, float, float] | None = None, filter: str = "ram-lak",
        cutoff: float = 1.0, arch: str = "cpu") -> np.ndarray:
    """FBP reconstruction of parallel-beam line integrals.

    Parameters
    ----------
    projections : ndarray, shape (V, R, C)
        Line integrals (dimensionless), [view, row, col].
    geometry : ScanGeometry
        Must have ``beam == "parallel"``.
    angles_deg, vol_shape, voxel_size_um, origin_mm, filter, cutoff, arch
        As for :func:`recon.fdk.fdk`.

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32
        Linear attenuation in 1/mm.
    """
    if geometry.beam != "parallel":
        raise XrmInputError(f"fbp needs a parallel-beam geometry, got beam={geometry.beam!r}; "
                            "use recon.fdk.fdk for cone beam")
    return fdk(projections, geometry, angles_deg=angles_deg, vol_shape=vol_shape,
               voxel_size_um=voxel_size_um, origin_mm=origin_mm, filter=filter, cutoff=cutoff,
               arch=arch)


def slice_geometry(n_cols: int, angles_deg: np.ndarray, pixel_um: float) -> ScanGeometry:
    """A one-row parallel-beam geometry with the rotation axis on the detector centre."""
    return ScanGeometry(source_object_mm=1.0, object_detector_mm=0.0, objective="flat-panel",
                        binning=1, pixel_um=float(pixel_um), cols=int(n_cols), rows=1,
                        n_views=len(angles_deg), beam="parallel")


def fbp_slice(sinogram: np.ndarray, angles_deg: np.ndarray, *, pixel_um: float = 1000.0,
              n_pixels: int | None = None, filter: str = "ram-lak", cutoff: float = 1.0,
              arch: str = "cpu") -> np.ndarray:
    """2-D parallel-beam FBP of one sinogram (the job of ``skimage.transform.iradon``).

    Parameters
    ----------
    sinogram : ndarray, shape (V, C)
        Line integrals, [view, detector column] (note: iradon takes the transpose).
    angles_deg : ndarray, shape (V,)
        View angles in degrees.
    pixel_um : float
        Detector pixel = image pixel, um (1000 gives attenuation per pixel in 1/mm units
        equal to 1/pixel).
    n_pixels : int, optional
        Output size (default C).

    Returns
    -------
    ndarray, shape (n_pixels, n_pixels), float32
        Image [y, x]; x runs along detector columns at angle 0.
    """
    sino = np.asarray(sinogram)
    if sino.ndim != 2:
        raise XrmInputError(f"sinogram must be 2-D (views, columns), got shape {sino.shape}")
    ang = np.asarray(angles_deg, dtype=np.float64)
    if ang.shape != (sino.shape[0],):
        raise XrmInputError(f"{ang.size} angles given for a sinogram of {sino.shape[0]} views")
    geom = slice_geometry(sino.shape[1], ang, pixel_um)
    n = int(n_pixels or sino.shape[1])
    vol = fbp(sino[:, None, :], geom, angles_deg=ang, vol_shape=(1, n, n), voxel_size_um=pixel_um,
              filter=filter, cutoff=cutoff, arch=arch)
    return vol[0]
