"""Scan geometry: magnification, effective pixel, per-view ray vectors, focal-spot blur.

Conventions (``shared/DESIGN.md``): the sample frame is in mm, z is the rotation axis (up),
at angle 0 the beam travels along +y and detector columns run along +x. The sample turns by
``+angle`` about z (counter-clockwise seen from +z); equivalently source and detector turn by
``-angle`` about the sample. Detector row index increases with +z, column index with +x at
angle 0, so projection ``[view, row, col]`` lines up with a volume ``[z, y, x]``.

Per-view geometry is expressed as ASTRA-style vectors in the **sample frame** (mm):

* cone:     ``(src_x, src_y, src_z, d_x, d_y, d_z, u_x, u_y, u_z, v_x, v_y, v_z)``
* parallel: ``(ray_x, ray_y, ray_z, d_x, d_y, d_z, u_x, u_y, u_z, v_x, v_y, v_z)``

``d`` is the centre of the detector (at the scintillator plane), ``u`` the vector from one
column to the next and ``v`` from one row to the next (both in mm, at the scintillator plane
for cone beam). The centre of pixel (row r, col c) is
``d + (c - (ncols - 1) / 2) u + (r - (nrows - 1) / 2) v``.
For parallel beam the detector is placed at the object so ``u``, ``v`` are sample-plane
pixel steps and ``ray`` is the unit direction of travel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.errors import XrmInputError, require_positive, unknown

#: Optical objectives of a Versa-class microscope: optical magnification of the scintillator
#: image onto the camera, numerical aperture (estimates, see docs/instrument.md) and the
#: default scintillator (material, thickness in um) used with it.
OBJECTIVES: dict[str, dict] = {
    "0.4x": {"magnification": 0.4, "na": 0.10, "scintillator": ("CsI", 150.0)},
    "4x": {"magnification": 4.0, "na": 0.20, "scintillator": ("LuAG", 100.0)},
    "20x": {"magnification": 20.0, "na": 0.40, "scintillator": ("LuAG", 10.0)},
    "40x": {"magnification": 40.0, "na": 0.60, "scintillator": ("LuAG", 5.0)},
    "flat-panel": {"magnification": 1.0, "na": None, "scintillator": ("CsI", 500.0)},
}

BEAMS = ("cone", "parallel")

#: Focal-spot FWHM per watt of tube power (um/W) and the floor of the spot size (um).
#: battery_instrument.md 1a: "FWHM ~ 1 um/W" (an estimate for transmission tubes).
FOCAL_SPOT_UM_PER_W = 1.0
FOCAL_SPOT_MIN_UM = 1.0


def focal_spot_fwhm_um(power_w: float) -> float:
    """Focal-spot FWHM in um at tube power ``power_w`` (W): max(1 um/W x P, 1 um)."""
    return max(FOCAL_SPOT_UM_PER_W * float(power_w), FOCAL_SPOT_MIN_UM)


@dataclass(frozen=True)
class ScanGeometry:
    """The geometry of a scan.

    Attributes
    ----------
    source_object_mm, object_detector_mm : float
        Source-to-rotation-axis distance ``a`` and axis-to-scintillator distance ``b``.
    objective : str
        One of :data:`OBJECTIVES`.
    binning : int
        Camera binning (1, 2, 4, ...).
    pixel_um : float
        Physical camera (or flat-panel) pixel before binning, um.
    cols, rows : int
        Detector size after binning.
    n_views : int
        Number of projections.
    arc_deg : float
        Angular range; views at ``start_deg + arc_deg * i / n_views`` (360) or
        ``... / (n_views - 1)`` when ``arc_deg < 360`` (end point included).
    beam : str
        ``"cone"`` or ``"parallel"``.
    axis_offset_mm : float
        Rotation axis displacement along +x (lab frame, at the object), mm.
    axis_tilt_deg : float
        Rotation axis tilt about the beam direction (in the detector plane), degrees.
    detector_offset_px : (float, float)
        Detector centre shift (columns, rows) in pixels.
    """

    source_object_mm: float
    object_detector_mm: float
    objective: str = "0.4x"
    binning: int = 1
    pixel_um: float = 13.5
    cols: int = 1024
    rows: int = 1024
    n_views: int = 1601
    arc_deg: float = 360.0
    start_deg: float = 0.0
    beam: str = "cone"
    axis_offset_mm: float = 0.0
    axis_tilt_deg: float = 0.0
    detector_offset_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        require_positive("geometry.source_object_mm", self.source_object_mm)
        require_positive("geometry.object_detector_mm", self.object_detector_mm, allow_zero=True)
        require_positive("detector.pixel_um", self.pixel_um)
        if self.objective not in OBJECTIVES:
            raise unknown("objective (geometry.objective)", self.objective, OBJECTIVES)
        if self.beam not in BEAMS:
            raise unknown("beam (geometry.beam)", self.beam, BEAMS)
        for key, val in (("geometry.binning", self.binning), ("detector.pixels[0] (columns)", self.cols),
                         ("detector.pixels[1] (rows)", self.rows), ("geometry.projections", self.n_views)):
            if int(val) != val or val < 1:
                raise XrmInputError(f"{key} must be an integer >= 1, got {val!r}")
        if not (0 < self.arc_deg <= 360):
            raise XrmInputError(f"geometry.arc_deg must be in (0, 360], got {self.arc_deg!r}")
        for key, val in (("geometry.axis_offset_mm", self.axis_offset_mm),
                         ("geometry.axis_tilt_deg", self.axis_tilt_deg),
                         ("geometry.start_deg", self.start_deg)):
            if not np.isfinite(val):
                raise XrmInputError(f"{key} must be finite, got {val!r}")

    # ---------------------------------------------------------------- derived quantities
    @property
    def geometric_magnification(self) -> float:
        """M = (a + b) / a for cone beam, 1 for parallel beam."""
        if self.beam == "parallel":
            return 1.0
        a, b = self.source_object_mm, self.object_detector_mm
        return (a + b) / a

    @property
    def optical_magnification(self) -> float:
        return OBJECTIVES[self.objective]["magnification"]

    @property
    def scintillator_pixel_um(self) -> float:
        """Binned pixel pitch projected back onto the scintillator plane, um."""
        return self.pixel_um * self.binning / self.optical_magnification

    @property
    def voxel_size_um(self) -> float:
        """Effective pixel at the object (voxel size of the reconstruction), um."""
        return self.scintillator_pixel_um / self.geometric_magnification

    @property
    def field_of_view_mm(self) -> tuple[float, float]:
        """Width and height of the field of view at the rotation axis, mm."""
        v = self.voxel_size_um / 1000.0
        return self.cols * v, self.rows * v

    @property
    def angles_deg(self) -> np.ndarray:
        """Rotation angle of each view, degrees, shape (n_views,)."""
        if self.arc_deg >= 360.0:
            step = self.arc_deg / self.n_views
        else:
            step = self.arc_deg / max(self.n_views - 1, 1)
        return self.start_deg + step * np.arange(self.n_views)

    def source_blur_fwhm_um(self, power_w: float) -> float:
        """Focal-spot penumbra at the scintillator: spot x (M - 1), in um."""
        if self.beam == "parallel":
            return 0.0
        return focal_spot_fwhm_um(power_w) * (self.geometric_magnification - 1.0)

    # ---------------------------------------------------------------- per-view vectors
    def vectors(self, angles_deg: np.ndarray | None = None) -> np.ndarray:
        """Per-view ray vectors in the sample frame, shape (n_views, 12), mm.

        See the module docstring for the layout. Axis offset and tilt are applied by
        expressing the lab-frame source and detector in the (offset, tilted) sample frame.
        """
        ang = np.deg2rad(self.angles_deg if angles_deg is None else np.asarray(angles_deg, float))
        a, b = self.source_object_mm, self.object_detector_mm
        if self.beam == "cone":
            pitch_mm = self.scintillator_pixel_um / 1000.0
            src_lab = np.array([0.0, -a, 0.0])
            det_lab = np.array([0.0, b, 0.0])
        else:
            pitch_mm = self.voxel_size_um / 1000.0
            src_lab = np.array([0.0, 1.0, 0.0])  # ray direction
            det_lab = np.array([0.0, 0.0, 0.0])
        u_lab = np.array([pitch_mm, 0.0, 0.0])
        v_lab = np.array([0.0, 0.0, pitch_mm])
        det_lab = det_lab + self.detector_offset_px[0] * u_lab + self.detector_offset_px[1] * v_lab
        # lab -> axis frame: shift by the axis offset, then undo the tilt about y
        shift = np.array([self.axis_offset_mm, 0.0, 0.0])
        t = np.deg2rad(self.axis_tilt_deg)
        tilt = np.array([[np.cos(t), 0.0, np.sin(t)], [0.0, 1.0, 0.0], [-np.sin(t), 0.0, np.cos(t)]])
        untilt = tilt.T

        def to_axis(p: np.ndarray, is_point: bool) -> np.ndarray:
            q = p - shift if is_point else p
            return untilt @ q

        src_ax = to_axis(src_lab, self.beam == "cone")
        det_ax, u_ax, v_ax = to_axis(det_lab, True), to_axis(u_lab, False), to_axis(v_lab, False)
        # sample rotated by +th: sample-frame coordinates = R(-th) @ axis-frame coordinates,
        # R(-th) = [[c, s, 0], [-s, c, 0], [0, 0, 1]], applied to all views at once
        c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
        out = np.empty((ang.size, 12))
        for j, p in enumerate((src_ax, det_ax, u_ax, v_ax)):
            out[:, 3 * j:3 * j + 1] = c * p[0] + s * p[1]
            out[:, 3 * j + 1:3 * j + 2] = -s * p[0] + c * p[1]
            out[:, 3 * j + 2:3 * j + 3] = p[2]
        return out
