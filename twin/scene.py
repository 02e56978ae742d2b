"""A scene: label grids (multi-scale) and mesh parts, traced into per-material path lengths.

Grids are listed coarse to fine; each grid skips the box of the next finer grid whose box
lies inside it, so the fine grid replaces the coarse one there (interior scans see the
whole cell through the coarse grid and the VOI at full resolution). Label 0 of every grid is
the surrounding medium, the same air the flat field sees, and is not traced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.errors import XrmInputError
from twin.materials import Material
from twin.meshes import MeshPart, material_matrix
from twin.projector import build_bvh, grid_path_lengths, mesh_path_lengths
from twin.volume import LabelGrid


@dataclass(frozen=True)
class Scene:
    """What the projector traces.

    Attributes
    ----------
    grids : tuple of LabelGrid
        Coarse to fine.
    parts : tuple of MeshPart
    """

    grids: tuple[LabelGrid, ...] = ()
    parts: tuple[MeshPart, ...] = ()
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        from twin.projector import MAX_SLOTS

        if not self.grids and not self.parts:
            raise XrmInputError("the scene is empty: give a phantom, grids or parts")
        if len(self.parts) > MAX_SLOTS:
            raise XrmInputError(f"at most {MAX_SLOTS} mesh parts per scene, got {len(self.parts)}")
        for g in self.grids:
            g.check_labels()
            if g.labels.size and not np.all(np.isfinite(g.spacing_mm)):
                raise XrmInputError("grid voxel size must be finite")

    @property
    def materials(self) -> tuple[Material, ...]:
        """Material slots: every distinct attenuating material of the scene, in order."""
        if "materials" not in self._cache:
            slots: list[Material] = []
            for g in self.grids:
                for m in g.materials[1:]:
                    if m not in slots:
                        slots.append(m)
            for p in self.parts:
                if p.material not in slots:
                    slots.append(p.material)
            from twin.projector import MAX_SLOTS

            if len(slots) > MAX_SLOTS:
                raise XrmInputError(f"at most {MAX_SLOTS} distinct materials per scene, got {len(slots)}")
            self._cache["materials"] = tuple(slots)
        return self._cache["materials"]

    def _grid_luts(self) -> list[np.ndarray]:
        slots = list(self.materials)
        luts = []
        for g in self.grids:
            lut = np.full(len(g.materials), -1, np.int32)
            for i, m in enumerate(g.materials):
                if i > 0:
                    lut[i] = slots.index(m)
            luts.append(lut)
        return luts

    def prepare(self) -> "Scene":
        """Check nesting of parts and build the BVH now (errors before any tracing)."""
        self._mesh_setup()
        self._grid_luts()
        return self

    def _mesh_setup(self):
        if "mesh" not in self._cache and self.parts:
            tris = np.concatenate([p.triangles for p in self.parts])
            tri_part = np.concatenate([np.full(len(p.triangles), i, np.int32)
                                       for i, p in enumerate(self.parts)])
            a = material_matrix(list(self.parts), list(self.materials))
            self._cache["mesh"] = (tris, tri_part, build_bvh(tris), a.astype(np.float32))
        return self._cache.get("mesh")

    def path_lengths(self, vectors: np.ndarray, rows: int, cols: int, *, parallel: bool = False,
                     supersample: int = 1, view_start: int = 0, n_views: int | None = None,
                     arch: str = "auto") -> tuple[np.ndarray, int]:
        """Per-material path lengths, shape (n_views, n_materials, rows, cols), mm.

        Returns the lengths and the number of voxel steps traced (ray samples).
        """
        nv = len(vectors) - view_start if n_views is None else n_views
        out = np.zeros((nv, len(self.materials), rows, cols), np.float32)
        samples = 0
        luts = self._grid_luts()
        for i, (g, lut) in enumerate(zip(self.grids, luts)):
            exclude = None
            if i + 1 < len(self.grids):
                exclude = self.grids[i + 1].box_mm
            lo, _ = g.box_mm
            _, n = grid_path_lengths(vectors, g.labels, lut, len(self.materials), lo, g.spacing_mm,
                                     rows, cols, parallel=parallel, supersample=supersample,
                                     exclude_box_mm=exclude, out=out, view_start=view_start,
                                     n_views=nv, arch=arch)
            samples += n
        mesh = self._mesh_setup()
        if mesh is not None:
            tris, tri_part, bvh, a = mesh
            inside = mesh_path_lengths(vectors, tris, tri_part, len(self.parts), rows, cols,
                                       parallel=parallel, supersample=supersample, bvh=bvh,
                                       view_start=view_start, n_views=nv, arch=arch)
            out += np.einsum("mp,vprc->vmrc", a, inside, optimize=True).astype(np.float32)
        return out, samples
