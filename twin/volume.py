"""Label grids: integer volumes whose labels map to materials.

Conventions (``shared/DESIGN.md``): arrays are indexed ``[z, y, x]``; ``origin_mm`` is the
(x, y, z) position of the centre of voxel ``[0, 0, 0]``; ``voxel_size_um`` is a scalar or an
(x, y, z) triple. Label 0 is the background (air) and label ``i`` is ``materials[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.errors import XrmInputError
from twin.materials import Material, get_material


def as_xyz(voxel_size_um: float | tuple[float, float, float]) -> tuple[float, float, float]:
    """Voxel size as an (x, y, z) triple in um."""
    v = np.broadcast_to(np.asarray(voxel_size_um, dtype=float), (3,))
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise XrmInputError(f"voxel_size_um must be positive and finite, got {voxel_size_um!r}")
    return (float(v[0]), float(v[1]), float(v[2]))


@dataclass(frozen=True)
class LabelGrid:
    """An integer label volume placed in the sample frame.

    Attributes
    ----------
    labels : ndarray of uint8/uint16, shape (nz, ny, nx)
    voxel_size_um : float or (float, float, float)
        Isotropic size or (x, y, z) sizes in um.
    origin_mm : (float, float, float)
        (x, y, z) of the centre of voxel [0, 0, 0], mm.
    materials : tuple of Material
        ``materials[i]`` is the material of label ``i``; ``materials[0]`` is the background
        (usually air).
    names : tuple of str, optional
        Component name per label (e.g. ``"can"``, ``"cathode"``); defaults to material names.
    """

    labels: np.ndarray
    voxel_size_um: float | tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    materials: tuple[Material, ...]
    names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.labels.ndim != 3:
            raise XrmInputError(f"labels must be 3-D [z, y, x], got shape {self.labels.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise XrmInputError(f"labels must be integers, got {self.labels.dtype}")
        as_xyz(self.voxel_size_um)
        if len(self.origin_mm) != 3 or not np.all(np.isfinite(self.origin_mm)):
            raise XrmInputError(f"origin_mm must be 3 finite numbers, got {self.origin_mm!r}")
        if self.names and len(self.names) != len(self.materials):
            raise XrmInputError("names and materials must have the same length")

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """(x, y, z) voxel size in mm."""
        return tuple(v / 1000.0 for v in as_xyz(self.voxel_size_um))  # type: ignore[return-value]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(self.labels.shape)  # type: ignore[return-value]

    @property
    def box_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper (x, y, z) corners of the grid, mm (voxel edges, not centres)."""
        sp = np.array(self.spacing_mm)
        n = np.array(self.labels.shape[::-1], dtype=float)
        lo = np.asarray(self.origin_mm, float) - sp / 2
        return lo, lo + n * sp

    @property
    def component_names(self) -> tuple[str, ...]:
        return self.names if self.names else tuple(m.name for m in self.materials)

    def check_labels(self) -> None:
        """Raise if a label has no material."""
        top = int(self.labels.max(initial=0))
        if top >= len(self.materials):
            raise XrmInputError(
                f"label {top} has no material: only {len(self.materials)} materials given")


def grid_from_names(labels: np.ndarray, voxel_size_um, origin_mm, material_names) -> LabelGrid:
    """Build a :class:`LabelGrid` from material names (label 0 first)."""
    mats = tuple(get_material(n) for n in material_names)
    return LabelGrid(labels, voxel_size_um, tuple(map(float, origin_mm)), mats)
