"""Plan files: a scan resolved on one machine, simulated on another.

``save_plan`` pickles a :class:`~twin.plan.Plan` (arrays, frozen dataclasses, the phantom
grids or meshes with their BVH); ``load_plan`` reads it back where SpekPy, xraydb and trimesh
are absent, e.g. a GPU node or a Dask worker: the kernels need only the arrays. Plan files are
for the same xrm-twin version (pickle), not for archiving.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from twin import __version__
from twin.atomic import atomic_path
from twin.errors import XrmInputError
from twin.plan import Plan

MAGIC = "xrm-twin-plan"


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write ``plan`` to ``path`` atomically (the scene's BVH is built first)."""
    if plan.scene is not None:
        plan.scene.prepare()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump({"magic": MAGIC, "version": __version__, "plan": plan}, f, protocol=5)


def load_plan(path: str | Path) -> Plan:
    """Read a plan file written by :func:`save_plan` (same xrm-twin version)."""
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
    return data["plan"]
