"""A :class:`~twin.geometry.ScanGeometry` whose per-view vectors are given explicitly.

The core geometry derives vectors from distances and angles; CTSimU scenarios give frames
with deviations, so the vectors are read, not derived. Nominal distances are kept for the
fields that describe a scan (NXtomo attributes, magnification).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.geometry import ScanGeometry


@dataclass(frozen=True, eq=False)
class ExplicitGeometry(ScanGeometry):
    """ScanGeometry with ``vectors()`` and ``angles_deg`` from arrays.

    Attributes
    ----------
    explicit_vectors : ndarray (views, 12)
    explicit_angles_deg : ndarray (views,)
    """

    explicit_vectors: np.ndarray = field(default_factory=lambda: np.zeros((1, 12)))
    explicit_angles_deg: np.ndarray = field(default_factory=lambda: np.zeros(1))

    @property
    def angles_deg(self) -> np.ndarray:
        return np.asarray(self.explicit_angles_deg, float)

    def vectors(self, angles_deg: np.ndarray | None = None) -> np.ndarray:
        return np.array(self.explicit_vectors, float)


def explicit_geometry(sc) -> ExplicitGeometry:
    """The ExplicitGeometry of a :class:`~twin.ctsimu.reader.CtsimuScenario`."""
    ang = sc.acquisition.angles_deg
    return ExplicitGeometry(
        source_object_mm=max(sc.source_object_mm, 1e-6),
        object_detector_mm=max(sc.source_detector_mm - sc.source_object_mm, 0.0),
        objective="flat-panel", binning=1, pixel_um=sc.pitch_u_mm * 1000.0, cols=sc.cols, rows=sc.rows,
        n_views=len(sc.vectors), arc_deg=360.0, start_deg=float(ang[0]), beam=sc.beam,
        explicit_vectors=sc.vectors, explicit_angles_deg=ang)
