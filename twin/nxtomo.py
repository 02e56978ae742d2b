"""NeXus NXtomo files: ``projections.h5`` (written atomically, streamed view by view).

Layout (``shared/DESIGN.md``)::

    /entry                         NXentry, definition = "NXtomo"
      /instrument/source           NXsource: name, type, probe, voltage (kV), power (W)
      /instrument/detector         NXdetector: data [n, rows, cols], image_key [n]
                                   (0 projection, 1 flat, 2 dark), x_pixel_size, y_pixel_size
                                   (m, at the scintillator), distance (m), count_time (s)
      /sample                      NXsample: rotation_angle [n] (degrees), name
      /data                        NXdata: links to data, rotation_angle, image_key
      /xrm_twin                    NXcollection: geometry (attributes), vectors [views, 12],
                                   the resolved scenario (JSON), software versions
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import h5py
import numpy as np

from twin import __version__
from twin.atomic import atomic_path
from twin.errors import XrmInputError
from twin.geometry import ScanGeometry

GEOMETRY_FIELDS = ("source_object_mm", "object_detector_mm", "objective", "binning", "pixel_um",
                   "cols", "rows", "n_views", "arc_deg", "start_deg", "beam", "axis_offset_mm",
                   "axis_tilt_deg")


def _nx(group: h5py.Group, cls: str) -> h5py.Group:
    group.attrs["NX_class"] = cls
    return group


def write_nxtomo(path, geometry: ScanGeometry, chunks: Iterable[Any], flats: np.ndarray,
                 darks: np.ndarray, *, dtype, scenario_json: str = "{}",
                 source: dict | None = None, exposure_s: float = 1.0, extra_attrs: dict | None = None
                 ) -> dict:
    """Write an NXtomo file; ``chunks`` yields objects with ``.start`` and ``.images``.

    Darks come first, then flats, then the projections, each tagged by ``image_key``.
    Returns a dict of totals gathered while writing (``ray_samples``).
    """
    source = dict(source or {})
    nd, nf, nv = len(darks), len(flats), geometry.n_views
    n = nd + nf + nv
    totals = {"ray_samples": 0}
    with atomic_path(path) as tmp:
        # no chunk cache: chunks are placed in the order they are written (byte-identical files)
        with h5py.File(tmp, "w", rdcc_nbytes=0) as f:
            f.attrs["default"] = "entry"
            entry = _nx(f.create_group("entry"), "NXentry")
            entry["definition"] = "NXtomo"
            entry.attrs["default"] = "data"
            entry.attrs["version"] = 1.1  # NXtomo path layout version (as ESRF's nxtomo reads it)
            inst = _nx(entry.create_group("instrument"), "NXinstrument")
            src = _nx(inst.create_group("source"), "NXsource")
            src["name"] = "transmission-target tungsten tube (SpekPy model)"
            src["type"] = "Fixed Tube X-ray"
            src["probe"] = "x-ray"
            for k, v in (source or {}).items():
                if k != "mean_energy_kev":
                    src[k] = v
            if source and "mean_energy_kev" in source:
                beam = _nx(inst.create_group("beam"), "NXbeam")
                beam["incident_energy"] = float(source.pop("mean_energy_kev"))
                beam["incident_energy"].attrs["units"] = "keV"
                beam["incident_energy"].attrs["description"] = "photon-weighted mean energy of the spectrum"
            det = _nx(inst.create_group("detector"), "NXdetector")
            data = det.create_dataset("data", shape=(n, geometry.rows, geometry.cols), dtype=dtype,
                                      chunks=(1, geometry.rows, geometry.cols))
            key = np.concatenate([np.full(nd, 2), np.full(nf, 1), np.zeros(nv)]).astype(np.int32)
            det["image_key"] = key
            pitch_m = geometry.scintillator_pixel_um * 1e-6
            det["x_pixel_size"] = pitch_m
            det["x_pixel_size"].attrs["units"] = "m"
            det["y_pixel_size"] = pitch_m
            det["y_pixel_size"].attrs["units"] = "m"
            det["distance"] = geometry.object_detector_mm * 1e-3
            det["distance"].attrs["units"] = "m"
            det["count_time"] = np.full(n, exposure_s)
            det["count_time"].attrs["units"] = "s"
            sample = _nx(entry.create_group("sample"), "NXsample")
            sample["name"] = "xrm-twin phantom"
            angles = np.concatenate([np.zeros(nd), np.zeros(nf), geometry.angles_deg])
            sample["rotation_angle"] = angles
            sample["rotation_angle"].attrs["units"] = "degree"
            data[:nd] = darks
            data[nd:nd + nf] = flats
            for chunk in chunks:
                data[nd + nf + chunk.start: nd + nf + chunk.start + len(chunk.images)] = chunk.images
                totals["ray_samples"] += int(getattr(chunk, "ray_samples", 0))
            nxdata = _nx(entry.create_group("data"), "NXdata")
            nxdata.attrs["signal"] = "data"
            nxdata["data"] = data
            nxdata["rotation_angle"] = sample["rotation_angle"]
            nxdata["image_key"] = det["image_key"]
            col = _nx(entry.create_group("xrm_twin"), "NXcollection")
            for field in GEOMETRY_FIELDS:
                col.attrs[field] = getattr(geometry, field)
            col.attrs["detector_offset_px"] = np.asarray(geometry.detector_offset_px, float)
            col.attrs["voxel_size_um"] = geometry.voxel_size_um
            col.attrs["magnification"] = geometry.geometric_magnification
            col.attrs["software"] = f"xrm-twin {__version__}"
            col["scenario"] = scenario_json
            col["vectors"] = geometry.vectors()
            for k, v in (extra_attrs or {}).items():
                col.attrs[k] = v
    return totals


def _frames(data: "h5py.Dataset", select: np.ndarray) -> np.ndarray:
    """The frames of ``data`` where ``select`` is True, read straight from the file.

    A contiguous run (darks, flats and projections are usually stored one kind after the
    other) is one slice read; otherwise the frames are read in runs. Reading the whole stack
    and then indexing it would hold the projections twice (13 GiB for 3201 frames of 1024^2).
    """
    idx = np.flatnonzero(select)
    out = np.empty((idx.size,) + tuple(data.shape[1:]), data.dtype)
    if idx.size == 0:
        return out
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1  # starts of the runs of consecutive frames
    pos = 0
    for run in np.split(idx, breaks):
        data.read_direct(out, np.s_[int(run[0]):int(run[-1]) + 1], np.s_[pos:pos + run.size])
        pos += run.size
    return out


def read_nxtomo(path) -> dict[str, Any]:
    """Read an NXtomo file.

    Returns
    -------
    dict with ``projections`` (n, rows, cols), ``flats``, ``darks``, ``angles_deg`` (n,),
    ``geometry`` (ScanGeometry or None when the file lacks xrm-twin's geometry),
    ``scenario`` (dict or None), ``dtype``.

    Raises
    ------
    XrmInputError
        Not an HDF5/NXtomo file, or missing data, image_key or rotation angles.
    """
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise XrmInputError(f"cannot open {str(path)!r} as HDF5: {exc}") from None
    with f:
        missing = [p for p in ("entry/instrument/detector/data", "entry/instrument/detector/image_key",
                               "entry/sample/rotation_angle") if p not in f]
        if missing:
            raise XrmInputError(f"{path} is not a complete NXtomo file: missing {', '.join('/' + m for m in missing)}")
        data = f["entry/instrument/detector/data"]
        key = f["entry/instrument/detector/image_key"][...]
        angles = f["entry/sample/rotation_angle"][...]
        if len(key) != data.shape[0] or len(angles) != data.shape[0]:
            raise XrmInputError(f"{path}: image_key ({len(key)}), rotation_angle ({len(angles)}) and "
                                f"data ({data.shape[0]} frames) disagree")
        out: dict[str, Any] = {
            "projections": _frames(data, key == 0), "flats": _frames(data, key == 1),
            "darks": _frames(data, key == 2),
            "angles_deg": angles[key == 0].astype(float), "dtype": data.dtype,
            "geometry": None, "scenario": None, "sample_center_mm": (0.0, 0.0, 0.0), "ideal": False}
        if "entry/xrm_twin" in f:
            col = f["entry/xrm_twin"]
            kw = {k: col.attrs[k] for k in GEOMETRY_FIELDS if k in col.attrs}
            for k in ("objective", "beam"):
                if isinstance(kw.get(k), bytes):
                    kw[k] = kw[k].decode()
            for k in ("binning", "cols", "rows", "n_views"):
                if k in kw:
                    kw[k] = int(kw[k])
            for k in ("objective", "beam"):
                kw[k] = str(kw[k])
            if "detector_offset_px" in col.attrs:
                kw["detector_offset_px"] = tuple(float(x) for x in col.attrs["detector_offset_px"])
            out["geometry"] = ScanGeometry(**kw)
            out["sample_center_mm"] = tuple(float(v) for v in col.attrs.get("sample_center_mm", (0, 0, 0)))
            out["ideal"] = bool(col.attrs.get("ideal", False))
            if "mean_energy_kev" in col.attrs:
                out["mean_energy_kev"] = float(col.attrs["mean_energy_kev"])
            if "scenario" in col:
                raw = col["scenario"][()]
                out["scenario"] = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if len(out["projections"]) == 0:
        raise XrmInputError(f"{path}: no projections (image_key 0)")
    if len(out["flats"]) == 0 or len(out["darks"]) == 0:
        raise XrmInputError(f"{path}: flats ({len(out['flats'])}) or darks ({len(out['darks'])}) missing")
    return out
