"""``truth.h5``: the ground truth of a phantom (``shared/DESIGN.md`` contract).

Layout::

    /labels        integer grid [z, y, x]; attrs voxel_size_um, origin_mm (x, y, z)
    /materials     table: label, name (component), material, composition, density_g_cm3
    /defects       table: id, type, label, center_mm (x, y, z), centre_mm (the same values:
                   the contract's spelling), size_um, orientation (x, y, z), volume_mm3,
                   area_mm2, extra (JSON); attr "json" holds the rows as JSON
    /instances     optional instance-label grid (same shape as /labels)

Written atomically.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from twin.atomic import atomic_path
from twin.errors import XrmInputError
from twin.volume import LabelGrid, as_xyz

_STR = h5py.string_dtype("utf-8")
DEFECT_FIELDS = ("id", "type", "label", "center_mm", "centre_mm", "size_um", "orientation",
                 "volume_mm3", "area_mm2")
#: The ``/defects`` table's columns (``centre_mm`` repeats ``center_mm``: both spellings read).
DEFECT_DTYPE = np.dtype([("id", "i8"), ("type", _STR), ("label", "i8"), ("center_mm", "f8", (3,)),
                         ("centre_mm", "f8", (3,)), ("size_um", "f8"), ("orientation", "f8", (3,)),
                         ("volume_mm3", "f8"), ("area_mm2", "f8"), ("extra", _STR)])


def _centre(d: Mapping[str, Any]):
    """A row's centre (x, y, z) mm, under either spelling (``center_mm`` first); None if absent."""
    c = d.get("center_mm")
    return d.get("centre_mm") if c is None else c


def _json_row(d: Mapping[str, Any]) -> dict[str, Any]:
    """A row for the ``json`` attribute: as given, with ``center_mm`` (the key the readers use)
    filled in from ``centre_mm`` when only that spelling was given."""
    row = dict(d)
    if "center_mm" not in row and row.get("centre_mm") is not None:
        row["center_mm"] = row["centre_mm"]
    return row


def _defect_array(defects: Sequence[Mapping[str, Any]]) -> np.ndarray:
    arr = np.zeros(len(defects), dtype=DEFECT_DTYPE)
    for i, d in enumerate(defects):
        arr[i]["id"] = int(d.get("id", i + 1))
        arr[i]["type"] = str(d["type"])
        arr[i]["label"] = int(d.get("label", -1))
        c = _centre(d)
        arr[i]["center_mm"] = np.asarray((np.nan,) * 3 if c is None else c, float)
        arr[i]["centre_mm"] = arr[i]["center_mm"]
        arr[i]["size_um"] = float(d.get("size_um", np.nan))
        arr[i]["orientation"] = np.asarray(d.get("orientation", (0.0, 0.0, 1.0)), float)
        arr[i]["volume_mm3"] = float(d.get("volume_mm3", np.nan))
        arr[i]["area_mm2"] = float(d.get("area_mm2", np.nan))
        extra = {k: v for k, v in d.items() if k not in DEFECT_FIELDS}
        arr[i]["extra"] = json.dumps(extra, default=float, sort_keys=True)
    return arr


def write_truth(path, grid: LabelGrid, defects: Sequence[Mapping[str, Any]] = (),
                instances: np.ndarray | None = None, attrs: Mapping[str, Any] | None = None) -> None:
    """Write ``truth.h5`` atomically.

    Parameters
    ----------
    grid : LabelGrid
    defects : sequence of dict
        Rows with at least ``type``; see the module docstring for the columns.
    instances : ndarray, optional
        Instance labels, same shape as ``grid.labels``.
    attrs : dict, optional
        Extra root attributes (scalars or strings), e.g. the phantom parameters as JSON.
    """
    if instances is not None and instances.shape != grid.labels.shape:
        raise XrmInputError("instances must have the shape of labels")
    with atomic_path(path) as tmp:
        # no chunk cache: compressed chunks are placed in program order (byte-identical files)
        with h5py.File(tmp, "w", rdcc_nbytes=0) as f:
            lab = f.create_dataset("labels", data=grid.labels, compression="gzip",
                                   compression_opts=1, shuffle=True)
            f.flush()
            vs = as_xyz(grid.voxel_size_um)
            voxel_attr = vs[0] if len(set(vs)) == 1 else np.array(vs)
            for target in (lab, f):
                target.attrs["voxel_size_um"] = voxel_attr
                target.attrs["origin_mm"] = np.asarray(grid.origin_mm, float)
            mdt = np.dtype([("label", "i8"), ("name", _STR), ("material", _STR),
                            ("composition", _STR), ("density_g_cm3", "f8")])
            mats = np.zeros(len(grid.materials), dtype=mdt)
            for i, (name, m) in enumerate(zip(grid.component_names, grid.materials)):
                mats[i] = (i, name, m.name, m.describe(), m.density_g_cm3)
            f.create_dataset("materials", data=mats)
            d = f.create_dataset("defects", data=_defect_array(defects))
            d.attrs["json"] = json.dumps([_json_row(r) for r in defects], default=float, sort_keys=True)
            if instances is not None:
                f.create_dataset("instances", data=instances, compression="gzip",
                                 compression_opts=1, shuffle=True)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v


def _read_defects(ds: h5py.Dataset) -> list[dict[str, Any]]:
    """The defect rows: the ``json`` attribute, or (a file written elsewhere to the contract,
    without it) the table's columns, ``centre_mm`` or ``center_mm`` both read as ``center_mm``."""
    if "json" in ds.attrs:
        return json.loads(ds.attrs["json"])
    rows = []
    names = ds.dtype.names or ()
    for r in ds[...]:
        row: dict[str, Any] = {}
        for k in names:
            v = r[k]
            if isinstance(v, bytes):
                v = v.decode()
            if k == "extra":
                row.update(json.loads(v) if v else {})
            elif k in ("center_mm", "centre_mm", "orientation"):
                row["center_mm" if k == "centre_mm" else k] = [float(x) for x in np.ravel(v)]
            elif isinstance(v, str):
                row[k] = v
            else:
                row[k] = v.item() if hasattr(v, "item") else v
        rows.append(row)
    return rows


def read_truth(path, *, instances: bool = True) -> dict[str, Any]:
    """Read ``truth.h5`` into a dict: labels, voxel_size_um, origin_mm, materials, defects and
    instances (None with ``instances=False``: the int32 instance grid is 4 bytes per voxel,
    and measuring does not use it)."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise XrmInputError(f"cannot open truth file {str(path)!r}: {exc}") from None
    with f:
        if "labels" not in f:
            raise XrmInputError(f"{path}: no /labels dataset: not a truth.h5 file")
        out: dict[str, Any] = {
            "labels": f["labels"][...],
            "voxel_size_um": f["labels"].attrs.get("voxel_size_um", f.attrs.get("voxel_size_um")),
            "origin_mm": tuple(f["labels"].attrs.get("origin_mm", f.attrs.get("origin_mm"))),
        }
        out["materials"] = [
            {"label": int(r["label"]), "name": r["name"].decode() if isinstance(r["name"], bytes) else r["name"],
             "material": r["material"].decode() if isinstance(r["material"], bytes) else r["material"],
             "density_g_cm3": float(r["density_g_cm3"])}
            for r in f["materials"][...]] if "materials" in f else []
        out["defects"] = _read_defects(f["defects"]) if "defects" in f else []
        out["instances"] = f["instances"][...] if instances and "instances" in f else None
        out["attrs"] = {k: f.attrs[k] for k in f.attrs}
    if out["voxel_size_um"] is None:
        raise XrmInputError(f"{path}: /labels has no voxel_size_um attribute")
    return out
