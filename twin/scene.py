"""A scene: label grids (multi-scale) and mesh parts, traced into per-material path lengths.

Grids are listed coarse to fine; each grid skips the box of the next finer grid whose box
lies inside it, so the fine grid replaces the coarse one there (interior scans see the
whole cell through the coarse grid and the VOI at full resolution). Label 0 of every grid is
the surrounding medium, the same air the flat field sees, and is not traced.

:meth:`Scene.spectral_sums` gives what a detector pixel records: the Beer-Lambert integral
of each sub-ray of the pixel, averaged (intensity, not path length, is integrated over the
pixel area). :meth:`Scene.path_lengths` with ``supersample > 1`` averages path lengths
instead (a mean chord, as for comparisons with analytic pixel-averaged chords).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.errors import XrmInputError
from twin.materials import Material
from twin.meshes import MeshPart, material_matrix
from twin.projector import build_bvh, grid_path_lengths, mesh_path_lengths, part_diagonals
from twin.spectral import spectral_sums
from twin.volume import LabelGrid


#: Allowed values of :attr:`Scene.mesh_method`.
MESH_METHODS = ("auto", "raster", "bvh")


@dataclass(frozen=True)
class Scene:
    """What the projector traces.

    Attributes
    ----------
    grids : tuple of LabelGrid
        Coarse to fine.
    parts : tuple of MeshPart
    mesh_method : {"auto", "raster", "bvh"}
        How meshes are traced (:func:`twin.projector.mesh_path_lengths`, which decides for
        ``"auto"``: the rasteriser where it applies, else the BVH ray tracer); the same
        lengths either way, to rounding and exact ties.
    """

    grids: tuple[LabelGrid, ...] = ()
    parts: tuple[MeshPart, ...] = ()
    mesh_method: str = "auto"
    # per-instance derived data (materials, triangles, BVH); not an init field, so
    # ``dataclasses.replace`` gives the new scene a cache of its own
    _cache: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        from twin.projector import MAX_SLOTS

        if self.mesh_method not in MESH_METHODS:
            raise XrmInputError(f"mesh_method must be one of {', '.join(map(repr, MESH_METHODS))}, "
                                f"got {self.mesh_method!r}")
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
        """Check nesting of parts now (errors before any tracing)."""
        self._mesh_setup()
        self._grid_luts()
        return self

    def _mesh_setup(self):
        """(triangles (F, 3, 3), part index (F,), material matrix (n_slots, n_parts)), cached."""
        if "mesh" not in self._cache and self.parts:
            tris = np.concatenate([p.triangles for p in self.parts])
            tri_part = np.concatenate([np.full(len(p.triangles), i, np.int32)
                                       for i, p in enumerate(self.parts)])
            a = material_matrix(list(self.parts), list(self.materials))
            self._cache["mesh"] = (np.ascontiguousarray(tris, np.float64), tri_part, a)
        return self._cache.get("mesh")

    def _mesh_box(self) -> np.ndarray:
        """Lower and upper corner of all triangles, shape (2, 3), mm."""
        if "mesh_box" not in self._cache:
            flat = self._mesh_setup()[0].reshape(-1, 3)
            self._cache["mesh_box"] = np.stack([flat.min(axis=0), flat.max(axis=0)])
        return self._cache["mesh_box"]

    def _part_diagonals(self) -> np.ndarray:
        """Bounding-box diagonal of each part, mm (the longest plausible chord)."""
        if "part_diagonals" not in self._cache:
            self._cache["part_diagonals"] = part_diagonals(*self._mesh_setup()[:2], len(self.parts))
        return self._cache["part_diagonals"]

    def _bvh(self) -> dict:
        """The BVH of all triangles (built on first use: the rasteriser needs none)."""
        if "bvh" not in self._cache:
            self._cache["bvh"] = build_bvh(self._mesh_setup()[0])
        return self._cache["bvh"]

    def path_lengths(self, vectors: np.ndarray, rows: int, cols: int, *, parallel: bool = False,
                     supersample: int = 1, subray: int | None = None, view_start: int = 0,
                     n_views: int | None = None, arch: str = "auto") -> tuple[np.ndarray, int]:
        """Per-material path lengths, shape (n_views, n_materials, rows, cols), mm.

        Parameters
        ----------
        vectors : ndarray, shape (V, 12)
            Per-view geometry (:meth:`twin.geometry.ScanGeometry.vectors`), mm.
        supersample : int
            ``ss``: rays on an ``ss x ss`` sub-pixel grid; their path lengths are averaged.
        subray : int, optional
            Trace only sub-ray ``subray`` (``0 <= subray < ss**2``, row-major) of each pixel.

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
                                     subray=subray, exclude_box_mm=exclude, out=out,
                                     view_start=view_start, n_views=nv, arch=arch)
            samples += n
        mesh = self._mesh_setup()
        if mesh is not None:
            tris, tri_part, a = mesh
            # the BVH is built (once, cached) only if the BVH tracer runs
            mesh_path_lengths(vectors, tris, tri_part, len(self.parts), rows, cols,
                              parallel=parallel, supersample=supersample, subray=subray,
                              bvh=self._bvh, material_matrix=a, out=out, view_start=view_start,
                              n_views=nv, method=self.mesh_method, bounds_mm=self._mesh_box(),
                              part_diagonals_mm=self._part_diagonals(), arch=arch)
        return out, samples

    def spectral_sums(self, vectors: np.ndarray, rows: int, cols: int, mu_per_mm: np.ndarray,
                      weights: np.ndarray, *, parallel: bool = False, supersample: int = 1,
                      view_start: int = 0, n_views: int | None = None, arch: str = "auto"
                      ) -> tuple[np.ndarray, int]:
        """Spectral sums per pixel, averaged over the pixel's sub-rays (detector intensity).

        Each of the ``ss x ss`` sub-rays of a pixel gets its own Beer-Lambert integral
        ``S_k = sum_E W[k, E] exp(-sum_m mu_m(E) L_m)`` (:func:`twin.spectral.spectral_sums`),
        and the pixel records their mean: a detector pixel integrates intensity over its
        area, and ``mean exp(-L) != exp(-mean L)`` where an edge crosses the pixel. The
        sub-rays are traced one at a time (memory as for one ray per pixel).

        Parameters
        ----------
        vectors : ndarray, shape (V, 12)
            Per-view geometry, mm.
        mu_per_mm : ndarray, shape (n_materials, E)
            Attenuation of each material slot, 1/mm.
        weights : ndarray, shape (K, E)
            Weight rows (:meth:`twin.detector.DetectorModel.spectral_weights`).

        Returns
        -------
        sums : ndarray float32, shape (n_views, K, rows, cols)
        ray_samples : int
            Voxel steps traced (label grids), all sub-rays.
        """
        ss = int(supersample)
        if ss == 1:
            lengths, samples = self.path_lengths(vectors, rows, cols, parallel=parallel,
                                                 view_start=view_start, n_views=n_views, arch=arch)
            return spectral_sums(lengths, mu_per_mm, weights, arch=arch), samples
        nv = len(vectors) - view_start if n_views is None else n_views
        sums = np.zeros((nv, weights.shape[0], rows, cols), np.float32)
        samples = 0
        for sub in range(ss * ss):
            lengths, n = self.path_lengths(vectors, rows, cols, parallel=parallel, supersample=ss,
                                           subray=sub, view_start=view_start, n_views=nv, arch=arch)
            spectral_sums(lengths, mu_per_mm, weights, arch=arch, out=sums, factor=1.0 / (ss * ss))
            samples += n
        return sums, samples
