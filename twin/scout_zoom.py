"""Scout-and-zoom: a low-resolution scout scan, a VOI chosen on it, then the zoom scan.

Scenario file::

    name = "nimh-scout-zoom"
    [scout]
    scenario = "nimh-lowres"             # built-in name or path
    set = ["geometry.projections=400"]   # optional overrides
    [zoom]
    scenario = "nimh-zoom"
    set = []
    voi = "auto"                         # or {center_mm = [x, y, z]}
    feature = "structure"                # auto: "structure" (most detail) or "densest"

The zoom scan puts the chosen point on the rotation axis (``geometry.sample_center_mm``) and,
for battery phantoms, rasterises the VOI there (``phantom.voi.center_mm``). Coordinates are in
the sample's own frame, the frame of the scout reconstruction.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from recon import slabs
from twin.errors import XrmInputError, unknown

SCOUT_ZOOM_KEYS = {"name", "description", "seed", "scout", "zoom"}
STAGE_KEYS = {"scenario", "set"}
ZOOM_KEYS = STAGE_KEYS | {"voi", "feature", "voi_size_mm"}
FEATURES = ("structure", "densest")


def is_scout_zoom(data: Mapping[str, Any]) -> bool:
    return "scout" in data and "zoom" in data


def choose_voi_center(volume: np.ndarray, voxel_size_um: float, origin_mm, voi_size_mm,
                      feature: str = "structure") -> tuple[float, float, float]:
    """Centre (x, y, z, mm) of a VOI on a scout volume.

    ``"densest"``: the maximum of the volume smoothed over 2 voxels. ``"structure"``: the VOI-sized
    window (inside the reconstructed cylinder) with the largest standard deviation.
    """
    if feature not in FEATURES:
        raise unknown("zoom.feature", feature, FEATURES)
    v = np.asarray(volume, np.float32)
    nz, ny, nx = v.shape
    vs = voxel_size_um / 1000.0
    if feature == "densest":
        sm = slabs.gaussian_filter(v, 2.0)
        iz, iy, ix = np.unravel_index(int(np.argmax(sm)), sm.shape)
    else:
        w = [max(1, int(round(s / vs))) for s in voi_size_mm[::-1]]  # z, y, x window
        w = [min(a, n) for a, n in zip(w, v.shape)]
        mean = ndimage.uniform_filter(v, w, mode="constant")
        mean2 = ndimage.uniform_filter(v * v, w, mode="constant")
        std = np.sqrt(np.maximum(mean2 - mean * mean, 0))
        y = np.arange(ny) - (ny - 1) / 2
        x = np.arange(nx) - (nx - 1) / 2
        r = np.hypot(x[None, :], y[:, None])
        inside = r <= (min(nx, ny) / 2 - max(w[1], w[2]) / 2)
        valid = np.zeros_like(std, bool)
        valid[w[0] // 2: nz - w[0] // 2, inside] = True
        if not valid.any():
            raise XrmInputError("the VOI is larger than the scout's field of view")
        std[~valid] = -1
        iz, iy, ix = np.unravel_index(int(np.argmax(std)), std.shape)
    o = np.asarray(origin_mm, float)
    return (float(o[0] + ix * vs), float(o[1] + iy * vs), float(o[2] + iz * vs))


def _stage(table: Mapping[str, Any], allowed: set, where: str, base_dir: Path):
    from twin.scenario import load_scenario

    extra = set(table) - allowed
    if extra:
        raise unknown(f"key in [{where}]", sorted(extra)[0], sorted(allowed))
    if "scenario" not in table:
        raise XrmInputError(f"[{where}] needs scenario = \"name or path\"")
    name = str(table["scenario"])
    candidate = base_dir / name
    if name.endswith(".toml") and not Path(name).is_absolute() and candidate.is_file():
        name = str(candidate)
    return load_scenario(name, list(table.get("set", [])))


def check_scout_zoom(data: Mapping[str, Any], base_dir: str | Path = "."):
    """Check a scout-and-zoom scenario before anything runs: its keys, both stages' scenarios
    (keys, types, materials, ``[recon]``; then their source, filter, detector and geometry
    values, resolved without a phantom) and the form of ``[zoom] voi``. Returns the two
    stages' :class:`~twin.scenario.ScanSpec` (scout, zoom). The CLI calls it before it makes
    the output folder, so a mistake in the zoom is not found after the scout has run."""
    from twin.plan import resolve

    extra = set(data) - SCOUT_ZOOM_KEYS
    if extra:
        raise unknown("key of a scout-and-zoom scenario", sorted(extra)[0], sorted(SCOUT_ZOOM_KEYS))
    for where in ("scout", "zoom"):
        if not isinstance(data.get(where), Mapping):
            raise XrmInputError(f"a scout-and-zoom scenario needs a [{where}] table")
    scout = _stage(data["scout"], STAGE_KEYS, "scout", Path(base_dir))
    zoom = _stage(data["zoom"], ZOOM_KEYS, "zoom", Path(base_dir))
    voi = data["zoom"].get("voi", "auto")
    if voi != "auto" and not (isinstance(voi, Mapping) and "center_mm" in voi and len(voi["center_mm"]) == 3):
        raise XrmInputError(f"[zoom] voi must be \"auto\" or {{center_mm = [x, y, z]}}, got {voi!r}")
    for spec in (scout, zoom):
        resolve(spec, with_scene=False)
    return scout, zoom


def run_scout_zoom(data: Mapping[str, Any], out_dir: str | Path, *, preview: bool = False,
                   arch: str = "auto", quiet: bool = False, base_dir: str | Path = ".") -> dict[str, Any]:
    """Run the scout, choose the VOI, run the zoom; write a combined report.json."""
    from recon.io import read_volume
    from twin.report import write_report
    from twin.run import run_scenario

    scout, zoom = check_scout_zoom(data, base_dir)
    zoom_table = data["zoom"]
    out = Path(out_dir)
    scout_report = run_scenario(scout, out / "scout", preview=preview, arch=arch, quiet=quiet)
    rec = read_volume(out / "scout" / "recon.h5")
    scout_voxel = float(rec["voxel_size_um"])
    voi_size = zoom_table.get("voi_size_mm") or (zoom.phantom.get("voi") or {}).get("size_mm")
    if voi_size is None:
        from twin.plan import resolve_geometry

        fov = resolve_geometry(zoom).field_of_view_mm
        voi_size = [fov[0], fov[0], fov[1]]
    voi = zoom_table.get("voi", "auto")
    if voi == "auto":
        center = choose_voi_center(rec["volume"], scout_voxel, rec["origin_mm"], voi_size,
                                   zoom_table.get("feature", "structure"))
    else:  # checked by check_scout_zoom
        center = tuple(float(c) for c in voi["center_mm"])
    phantom = dict(zoom.phantom)
    if phantom["kind"] != "parts":
        phantom["voi"] = {"center_mm": list(center), "size_mm": list(voi_size)}
    geometry = dict(zoom.geometry, sample_center_mm=list(center))
    zoom = dataclasses.replace(zoom, phantom=phantom, geometry=geometry)
    zoom_report = run_scenario(zoom, out / "zoom", preview=preview, arch=arch, quiet=quiet)
    zrec = read_volume(out / "zoom" / "recon.h5")
    shape = np.array(zrec["volume"].shape[::-1])
    zoom_centre = np.asarray(zrec["origin_mm"]) + (shape - 1) / 2 * float(zrec["voxel_size_um"]) / 1000
    report = {
        "scenario": data.get("name", "scout-zoom"),
        "voi": {"asked": voi if voi == "auto" else list(center), "center_mm": list(center),
                "size_mm": list(voi_size), "scout_voxel_um": scout_voxel,
                "zoom_volume_center_mm": zoom_centre.tolist(),
                "placement_error_mm": float(np.linalg.norm(zoom_centre - np.asarray(center)))},
        "scout": {k: scout_report.get(k) for k in ("geometry", "timing_s", "metrology")},
        "zoom": {k: zoom_report.get(k) for k in ("geometry", "timing_s", "metrology", "detectability")},
        "geometry": zoom_report["geometry"], "source": zoom_report["source"],
        "metrology": zoom_report["metrology"], "defects": zoom_report["defects"],
        "detectability": zoom_report["detectability"],
        "timing_s": {k: scout_report["timing_s"][k] + zoom_report["timing_s"][k]
                     for k in ("simulate", "reconstruct", "measure")},
    }
    write_report(out, report, [("Scout", out / "scout" / "figures" / "slices.png"),
                               ("Zoom", out / "zoom" / "figures" / "slices.png")])
    return report
