"""The :class:`Phantom` contract shared by every cell, and the rasterisation driver.

A phantom is procedural: macro components are analytic primitives, microstructure is generated
from the seed and the position only. :meth:`Phantom.render` evaluates it on any isotropic grid
(whole cell or a volume of interest) in three steps:

1. macro primitives painted in order, z-slab by z-slab (:func:`phantoms.primitives.paint_primitives`);
2. microstructure and small defects of every component that is *resolved* at this voxel size
   (a component is resolved when ``voxel_um <= RESOLVE_FACTOR * feature_um``, its smallest
   characteristic size; otherwise it stays a homogenised composite with its own label);
3. instance ids cleaned so that an id survives only on voxels of its object's label, and the
   defect table (volumes from the voxels, exactly) built.

Labels are fixed per phantom: the same numbering for every grid; composite and resolved phases
have distinct labels (see each cell's ``LABELS``).
"""

from __future__ import annotations

import abc

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from twin.errors import XrmInputError
from twin.materials import Material
from twin.volume import LabelGrid

from phantoms.grid import GridSpec, check_fits, voi_grid
from phantoms.primitives import Primitive, paint_primitives

__all__ = ["Phantom", "Rendering", "ObjectLog", "RESOLVE_FACTOR"]

#: a microstructure is resolved when voxel_um <= RESOLVE_FACTOR * feature_um
RESOLVE_FACTOR = 2.0 / 3.0
_WORK_BYTES = 600 << 20  # slab temporaries, primitive tables, kernels


#: Component names that are defects the measurement searches for.
DEFECT_TYPES = ("void", "crack", "delamination", "short_contact")


class ObjectLog:
    """Objects painted during one rendering: defects (table rows) and other instances."""

    def __init__(self) -> None:
        self.defects: list[dict[str, Any]] = []
        self.next_id = 1
        self._labels: list[int] = [0]
        self.objects: dict[str, list[np.ndarray]] = {"id": [], "label": [], "center_mm": [],
                                                      "d_um": [], "complete": []}
        self.object_types: dict[int, str] = {}

    def add_defect(self, type: str, label: int, center_mm, size_um: float, *,
                   orientation=(0.0, 0.0, 1.0), area_mm2: float = 0.0,
                   volume_analytic_mm3: float = 0.0, instance: bool = True, **extra) -> int:
        """Register a defect; return its instance id (0 when it has no voxels of its own)."""
        did = self.next_id if instance else 0
        if instance:
            self.next_id += 1
            self._labels.append(int(label))
        row = {"id": did, "type": type, "label": int(label),
               "center_mm": [float(c) for c in center_mm], "size_um": float(size_um),
               "orientation": [float(o) for o in orientation], "area_mm2": float(area_mm2),
               "volume_analytic_mm3": float(volume_analytic_mm3), "instance": bool(instance)}
        row.update(extra)
        self.defects.append(row)
        return did

    def add_objects(self, type: str, label: int, center_mm: np.ndarray, d_um: np.ndarray,
                    complete: np.ndarray) -> np.ndarray:
        """Register non-defect instances (particles); return their ids (n,) int32."""
        n = len(d_um)
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        if ids.size and ids[-1] >= 2 ** 31 - 1:
            raise XrmInputError("too many objects in one grid for int32 instance ids")
        self.next_id += n
        self._labels.extend([int(label)] * n)
        self.objects["id"].append(ids)
        self.objects["label"].append(np.full(n, label, np.int32))
        self.objects["center_mm"].append(np.asarray(center_mm, float).reshape(n, 3))
        self.objects["d_um"].append(np.asarray(d_um, float))
        self.objects["complete"].append(np.asarray(complete, bool))
        self.object_types[int(label)] = type
        return ids.astype(np.int32)

    def label_lut(self) -> np.ndarray:
        return np.asarray(self._labels, dtype=np.int32)


@dataclass(frozen=True)
class Rendering:
    """A rasterised phantom.

    Attributes
    ----------
    grid : LabelGrid
    instances : ndarray of int32 (nz, ny, nx) or None
        Object id per voxel (0 = none): defects and, where resolved, particles.
    defects : list of dict
        Defect table rows (``twin.truth_io`` columns); ``volume_mm3`` is voxel count x voxel
        volume in this grid (exactly), ``volume_analytic_mm3`` and ``area_mm2`` are analytic.
    objects : dict of ndarray
        Non-defect instances: ``id``, ``label``, ``center_mm`` (n, 3), ``d_um``, ``complete``
        (entirely inside its layer), ``voxels`` (count in this grid).
    resolved : dict of str to bool
        Which microstructures were resolved.
    """

    grid: LabelGrid
    instances: np.ndarray | None
    defects: list[dict[str, Any]]
    objects: dict[str, np.ndarray]
    resolved: dict[str, bool] = field(default_factory=dict)


class Phantom(abc.ABC):
    """A procedural battery cell (see module docstring).

    Subclasses set ``kind``, ``LABELS`` (component name, material) and ``FEATURES_UM``
    (microstructure name -> smallest feature, um) and implement :meth:`_macro_primitives`
    and :meth:`_paint_micro`.
    """

    kind: str = ""

    def __init__(self, params: dict[str, Any], seed: int, labels: Sequence[tuple[str, Material]],
                 bounds_mm, features_um: dict[str, float]) -> None:
        self._params = params
        self._seed = int(seed)
        self._labels = tuple(labels)
        lo, hi = (np.asarray(b, float) for b in bounds_mm)
        # cells are built in a local frame (z = 0 at the bottom); the sample frame puts the
        # cell's centre at the origin: sample = local + offset
        self._offset = -(lo + hi) / 2
        self._local_bounds = (tuple(lo.tolist()), tuple(hi.tolist()))
        self._bounds = (tuple((lo + self._offset).tolist()), tuple((hi + self._offset).tolist()))
        self._features = dict(features_um)

    # ---------------------------------------------------------------- description
    @property
    def seed(self) -> int:
        return self._seed

    @property
    def params(self) -> dict[str, Any]:
        """The validated parameters (defaults filled in); a copy."""
        import copy

        return copy.deepcopy(self._params)

    @property
    def bounds_mm(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """((xmin, ymin, zmin), (xmax, ymax, zmax)) of the whole cell, sample frame, mm."""
        return self._bounds

    @property
    def coarse_voxel_limit_um(self) -> float | None:
        """Largest voxel of a coarse whole-cell grid that still places this cell's layers.

        An interior (zoom) scan traces the cell outside the VOI through a coarse grid. Voxel
        centres sample the components; for layers parallel to the grid axes (pouch and coin
        stacks, normal to z) a layer thinner than two coarse voxels is then misplaced or
        dropped in whole z slabs, which shifts the rays' attenuation slab by slab and leaves
        bands in the reconstructed VOI (a 15 % step of the cathode's mu on the pouch at 50 um).
        Layered phantoms return half their thinnest layer; None: no limit (a spiral winding
        samples its layers without such bias).
        """
        return None

    @property
    def offset_mm(self) -> tuple[float, float, float]:
        """Sample frame minus the cell's construction frame (z = 0 at the cell bottom), mm.

        ``z_sample = z_construction + offset_mm[2]``; the sample frame has the cell's centre at
        the origin.
        """
        return tuple(float(v) for v in self._offset)  # type: ignore[return-value]

    @property
    def component_names(self) -> tuple[str, ...]:
        """Component name per label (label 0 = "air")."""
        return tuple(n for n, _ in self._labels)

    @property
    def materials(self) -> tuple[Material, ...]:
        """Material per label (``materials[0]`` is air)."""
        return tuple(m for _, m in self._labels)

    def label(self, name: str) -> int:
        """Label of a component name."""
        try:
            return self.component_names.index(name)
        except ValueError:
            from twin.errors import unknown

            raise unknown(f"{self.kind} component", name, self.component_names) from None

    #: resolved-phase label -> the composite label that stands for it on coarse grids
    COMPOSITE_OF: dict[int, int] = {}

    def composite_label(self, labels: np.ndarray | int):
        """Map resolved-phase labels to the coarse composite label they belong to.

        Parameters
        ----------
        labels : int or ndarray of int
            Labels of a resolved grid.

        Returns
        -------
        Same shape: the label a coarse (unresolved) grid has at the same place.
        """
        lut = np.arange(256, dtype=np.uint8)
        for k, v in self.COMPOSITE_OF.items():
            lut[k] = v
        return lut[np.asarray(labels)]

    def resolved(self, voxel_size_um: float, resolve: bool | None = None) -> dict[str, bool]:
        """Which microstructures are resolved at ``voxel_size_um`` (None = automatic)."""
        v = float(np.atleast_1d(voxel_size_um)[0])
        return {k: (bool(resolve) if resolve is not None else v <= RESOLVE_FACTOR * f)
                for k, f in self._features.items()}

    # ---------------------------------------------------------------- memory
    def defect_kinds(self) -> frozenset[str]:
        """Defect types this phantom, with its parameters, can hold (``void``, ``crack``,
        ``delamination``, ``short_contact``).

        The measurement searches for the types the truth holds, and the crack search is its
        largest memory peak, so :func:`twin.resources.estimate` sizes the measurement by this
        before anything is built. Default: every defect type among the component names (a cell
        class that knows better, e.g. an unaged cell, overrides it).
        """
        return frozenset(n for n in self.component_names if n in DEFECT_TYPES)

    def estimate_bytes(self, voxel_size_um: float, size_mm=None, *, center_mm=None,
                       instances: bool = False) -> int:
        """Bytes a rasterisation needs (labels uint8, instances int32 when asked, work space).

        Parameters
        ----------
        voxel_size_um : float
        size_mm : (x, y, z) or None
            VOI size; None for the whole cell.
        """
        grid = self._grid(voxel_size_um, center_mm, size_mm)
        return grid.n_voxels * (1 + (4 if instances else 0)) + _WORK_BYTES

    def _grid(self, voxel_size_um, center_mm, size_mm) -> GridSpec:
        if size_mm is not None and center_mm is None:
            center_mm = tuple((a + b) / 2 for a, b in zip(*self._bounds))
        return voi_grid(voxel_size_um, self._bounds, center_mm, size_mm)

    # ---------------------------------------------------------------- rasterisation
    def render(self, voxel_size_um: float, center_mm=None, size_mm=None, *,
               instances: bool = True, resolve: bool | None = None) -> Rendering:
        """Rasterise the cell (or a VOI) with instance ids and the defect table.

        Parameters
        ----------
        voxel_size_um : float
            Isotropic voxel edge, um.
        center_mm, size_mm : (x, y, z) or None
            VOI centre and size, mm; both None for the whole cell (plus one voxel of air).
            ``size_mm`` alone centres the VOI on the cell.
        instances : bool
            Also return the instance grid (4 more bytes per voxel).
        resolve : bool or None
            Force microstructure on (True) or off (False); None decides per component.

        Raises
        ------
        XrmInputError
            VOI outside the cell; a grid that does not fit in memory (sizes named).
        """
        grid = self._grid(voxel_size_um, center_mm, size_mm)
        check_fits(grid.n_voxels * (1 + (4 if instances else 0)) + _WORK_BYTES, grid,
                   f"{self.kind} rasterisation")
        world = grid
        grid = GridSpec(grid.voxel_um, tuple(float(o) for o in np.asarray(grid.origin_mm)
                                             - self._offset), grid.shape_zyx)
        res = self.resolved(grid.voxel_um, resolve)
        labels = np.zeros(grid.shape_zyx, np.uint8)
        inst = np.zeros(grid.shape_zyx, np.int32) if instances else None
        log = ObjectLog()
        prims = self._macro_primitives(res, log)
        paint_primitives(labels, grid, prims, inst)
        self._paint_micro(labels, inst, grid, res, log)
        defects, objects = self._finish(labels, inst, grid, log)
        for row in defects:
            row["center_mm"] = [float(c + o) for c, o in zip(row["center_mm"], self._offset)]
        if len(objects["center_mm"]):
            objects["center_mm"] = objects["center_mm"] + self._offset
        lg = LabelGrid(labels, world.voxel_um, world.origin_mm, self.materials,
                       self.component_names)
        return Rendering(lg, inst, defects, objects, res)

    def rasterize(self, voxel_size_um: float, center_mm=None, size_mm=None, *,
                  resolve: bool | None = None) -> LabelGrid:
        """Label grid of the cell or of a VOI (see :meth:`render`)."""
        return self.render(voxel_size_um, center_mm, size_mm, instances=False,
                           resolve=resolve).grid

    def truth(self, voxel_size_um: float, center_mm=None, size_mm=None, *,
              resolve: bool | None = None):
        """Ground truth for ``truth.h5``: (LabelGrid, defect rows, instance grid)."""
        r = self.render(voxel_size_um, center_mm, size_mm, instances=True, resolve=resolve)
        return r.grid, r.defects, r.instances

    def _finish(self, labels, inst, grid: GridSpec, log: ObjectLog):
        vox_mm3 = grid.voxel_mm ** 3
        lut = log.label_lut()
        counts = np.zeros(len(lut), np.int64)
        if inst is not None and len(lut) > 1:
            nz = labels.shape[0]
            step = max(1, (1 << 24) // max(1, labels[0].size))
            for z0 in range(0, nz, step):
                li, ii = labels[z0:z0 + step], inst[z0:z0 + step]
                bad = lut[ii] != li
                ii[bad] = 0
                counts += np.bincount(ii.ravel(), minlength=len(lut))[:len(lut)]
        defects = []
        for row in log.defects:
            row = dict(row)
            if row["instance"]:
                n = int(counts[row["id"]]) if inst is not None else -1
                if inst is not None and n == 0:
                    continue
                row["volume_mm3"] = n * vox_mm3 if n >= 0 else float("nan")
                row["voxels"] = n
            else:
                row["volume_mm3"] = 0.0
                row["voxels"] = 0
            defects.append(row)
        cat = {k: (np.concatenate(v) if v else np.zeros((0, 3) if k == "center_mm" else 0))
               for k, v in log.objects.items()}
        cat["voxels"] = counts[cat["id"].astype(np.int64)] if len(cat["id"]) else np.zeros(0, np.int64)
        return defects, cat

    # ---------------------------------------------------------------- meshes
    def export_meshes(self, folder) -> list[Path]:
        """Write one STL per macro component (sample frame, mm) into ``folder``; return paths."""
        import trimesh

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        res = {k: False for k in self._features}
        by_label: dict[int, list] = {}
        for p in self._macro_primitives(res, ObjectLog()):
            meshes = p.meshes() if hasattr(p, "meshes") else {p.label: [p.mesh()]}
            for lab, ms in meshes.items():
                by_label.setdefault(lab, []).extend(m for m in ms if m is not None)
        out = []
        for lab, ms in sorted(by_label.items()):
            if not ms or lab == 0:
                continue
            path = folder / f"{lab:02d}_{self.component_names[lab]}.stl"
            trimesh.util.concatenate(ms).apply_translation(self._offset).export(path)
            out.append(path)
        return out

    # ---------------------------------------------------------------- hooks
    @abc.abstractmethod
    def _macro_primitives(self, resolved: dict[str, bool], log: ObjectLog) -> list[Primitive]:
        """The cell's macro components as primitives (each cell class defines them)."""

    @abc.abstractmethod
    def _paint_micro(self, labels, instances, grid: GridSpec, resolved: dict[str, bool],
                     log: ObjectLog) -> None:
        """Paint the resolved microstructure into ``labels`` (each cell class defines it)."""
