"""Plan files: a scan resolved on one machine, simulated on another.

``save_plan`` pickles a :class:`~twin.plan.Plan` (arrays, frozen dataclasses, the phantom
grids or meshes with their BVH); ``load_plan`` reads it back where SpekPy, xraydb and trimesh
are absent, e.g. a GPU node or a Dask worker: the kernels need only the arrays. Plan files are
for the same xrm-twin version (pickle), not for archiving.

Two ways to carry a built-in battery phantom:

* ``phantom="grids"`` (default): the label grids themselves. A 1024^3 zoom VOI is 1 GiB.
* ``phantom="recipe"``: no grids; the worker rebuilds them from the scenario (the phantoms
  are deterministic functions of their parameters and seed, :mod:`phantoms.hashing`). The
  file carries every material lookup the phantom made (so the worker needs no xraydb), the
  material order of the attenuation table, and a SHA-256 digest and label histogram of each
  grid and of the truth. The pixels' solid angles (8 MiB at 1024^2) are recomputed too, and
  checked by digest. :func:`materialise` rebuilds the scene, checks the material order
  (an error if it differs: the table rows would be wrong) and compares the digests (a
  warning naming the grids that differ and by how many voxels per label). A preview zoom plan
  goes from 83 MiB to 26 KB, and the full-scale one (a 1021^3 VOI) from 1.3 GiB to 26 KB.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from twin import __version__
from twin.atomic import atomic_path
from twin.errors import XrmInputError
from twin.plan import Plan

MAGIC = "xrm-twin-plan"
PHANTOM_MODES = ("grids", "recipe")


def _grid_digest(labels: np.ndarray, spacing, origin) -> dict[str, Any]:
    """SHA-256 of a label grid (with its shape, dtype, spacing and origin) and its label counts.

    The counts are ``np.bincount`` of the labels, chunk by chunk on the host's threads
    (:func:`recon.segmentation.count_labels`): one ``np.bincount`` of a 1021^3 uint8 grid
    first makes an 8 GiB int64 copy of it and took 17 s here.
    """
    from recon.segmentation import count_labels

    lab = np.ascontiguousarray(labels)
    h = hashlib.sha256()
    h.update(json.dumps([list(lab.shape), str(lab.dtype), list(np.ravel(spacing).astype(float)),
                         list(np.asarray(origin, float))]).encode())
    h.update(memoryview(lab).cast("B"))
    return {"sha256": h.hexdigest(), "shape": list(lab.shape),
            "label_counts": count_labels(lab).tolist()}


def scene_digest(plan: Plan) -> dict[str, Any]:
    """SHA-256 and label histogram of every grid of the scene and of the truth."""
    out: dict[str, Any] = {"grids": [_grid_digest(g.labels, g.voxel_size_um, g.origin_mm)
                                     for g in plan.scene.grids]}
    if plan.truth is not None:
        grid, defects, instances = plan.truth
        d = _grid_digest(grid.labels, grid.voxel_size_um, grid.origin_mm)
        d["defects_sha256"] = hashlib.sha256(json.dumps(list(defects), sort_keys=True,
                                                        default=str).encode()).hexdigest()
        if instances is not None:
            d["instances_sha256"] = hashlib.sha256(memoryview(np.ascontiguousarray(instances))
                                                   .cast("B")).hexdigest()
        out["truth"] = d
    return out


def save_plan(plan: Plan, path: str | Path, *, phantom: str = "grids") -> None:
    """Write ``plan`` to ``path`` atomically (the scene's BVH is built first).

    Parameters
    ----------
    phantom : {"grids", "recipe"}
        Carry the phantom's label grids, or only what the worker needs to rebuild them (see
        the module docstring; built-in battery phantoms only).
    """
    if phantom not in PHANTOM_MODES:
        raise XrmInputError(f"phantom must be one of {', '.join(PHANTOM_MODES)}, got {phantom!r}")
    if phantom == "recipe":
        if plan.scene is None or plan.spec.phantom.get("kind") == "parts":
            raise XrmInputError("phantom = \"recipe\" is for the built-in battery phantoms; a "
                                "\"parts\" scene carries its meshes and grids (phantom = \"grids\")")
        from twin.materials import resolved_lookups

        omega = np.ascontiguousarray(plan.solid_angle_sr)
        recipe = {"materials": [m.name for m in plan.scene.materials],
                  "lookups": resolved_lookups(), "digest": scene_digest(plan),
                  "solid_angle": {"sha256": hashlib.sha256(memoryview(omega).cast("B")).hexdigest(),
                                  "sum_sr": float(omega.sum())}}
        plan = dataclasses.replace(plan, scene=None, truth=None, solid_angle_sr=None)
    else:
        recipe = None
        if plan.scene is not None:
            plan.scene.prepare()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump({"magic": MAGIC, "version": __version__, "plan": plan, "recipe": recipe},
                        f, protocol=5)


def load_plan(path: str | Path) -> Plan:
    """Read a plan file written by :func:`save_plan` (same xrm-twin version).

    A recipe plan comes back with ``scene=None`` and its recipe attached
    (:func:`materialise` builds the scene; :func:`twin.simulate.simulate_plan` does so after
    choosing the Taichi arch).
    """
    p = Path(path)
    if not p.is_file():
        raise XrmInputError(f"plan file {str(p)!r} does not exist")
    with open(p, "rb") as f:
        try:
            data = pickle.load(f)
        except Exception as exc:
            raise XrmInputError(f"{p} is not an xrm-twin plan file: {exc}") from None
    if not isinstance(data, dict) or data.get("magic") != MAGIC:
        raise XrmInputError(f"{p} is not an xrm-twin plan file")
    if data.get("version") != __version__:
        raise XrmInputError(f"{p} was written by xrm-twin {data.get('version')}, this is {__version__}")
    plan = data["plan"]
    if data.get("recipe") is not None:
        plan = dataclasses.replace(plan, phantom_recipe=data["recipe"])
    return plan


def materialise(plan: Plan) -> tuple[Plan, list[str]]:
    """Build the scene and truth of a recipe plan; return the plan and any warnings.

    Raises
    ------
    XrmInputError
        The rebuilt scene's materials differ from the attenuation table's rows.
    """
    recipe = plan.phantom_recipe
    if plan.scene is not None or recipe is None:
        return plan, []
    from twin.materials import preload_lookups
    from twin.plan import battery_scene, pixel_solid_angle_sr

    preload_lookups(recipe["lookups"])
    scene, truth, center = battery_scene(plan.spec, plan.geometry)
    names = [m.name for m in scene.materials]
    if names != list(recipe["materials"]):
        raise XrmInputError(f"the phantom rebuilt from the plan has materials {names}, the plan's "
                            f"attenuation table {recipe['materials']}: a different xrm-twin or "
                            "phantom code; write the plan with phantom = \"grids\"")
    omega = np.ascontiguousarray(pixel_solid_angle_sr(plan.geometry))
    built = dataclasses.replace(plan, scene=scene, truth=truth, sample_center_mm=center,
                                solid_angle_sr=omega, phantom_recipe=None)
    warnings = digest_warnings(recipe["digest"], scene_digest(built))
    if hashlib.sha256(memoryview(omega).cast("B")).hexdigest() != recipe["solid_angle"]["sha256"]:
        rel = float(omega.sum()) / recipe["solid_angle"]["sum_sr"] - 1.0
        warnings.append(f"the pixels' solid angles computed here differ from the planned ones "
                        f"(sum differs by {rel:.2e} relative)")
    return built, warnings


def digest_warnings(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Differences between the planned and the rebuilt phantom, as sentences (empty: identical)."""
    out = []
    pairs = [(f"grid {i}", w, g) for i, (w, g) in enumerate(zip(want["grids"], got["grids"]))]
    if len(want["grids"]) != len(got["grids"]):
        out.append(f"the plan has {len(want['grids'])} grids, the rebuilt phantom {len(got['grids'])}")
    if "truth" in want and "truth" in got:
        pairs.append(("truth", want["truth"], got["truth"]))
    for what, w, g in pairs:
        if w["sha256"] == g["sha256"]:
            continue
        a, b = np.asarray(w["label_counts"]), np.asarray(g["label_counts"])
        n = max(a.size, b.size)
        diff = np.pad(b, (0, n - b.size)) - np.pad(a, (0, n - a.size))
        changed = {int(k): int(v) for k, v in enumerate(diff) if v}
        out.append(f"{what} of the rebuilt phantom differs from the planned one (shape "
                   f"{g['shape']} vs {w['shape']}; "
                   + (f"voxels per label, rebuilt - planned: {changed})" if changed else
                      "same voxels per label, at other places)"))
    for key in ("defects_sha256", "instances_sha256"):
        if key in want.get("truth", {}) and want["truth"][key] != got.get("truth", {}).get(key):
            out.append(f"the truth's {key.split('_')[0]} differ from the planned ones")
    return out
