"""Export an xrm-twin scenario as a CTSimU scenario JSON (file format 1.2).

World frame: source at the origin, beam along +x, rotation axis along +z (the CTSimU
convention). The xrm-twin sample frame (x along detector columns, y along the beam at angle
0, z up) is the stage frame: stage ``u`` = world ``-y``, ``v`` = world ``+x``, ``w`` = ``+z``.
The detector's ``u`` is world ``-y`` and its ``w`` points back to the source so that
``v = w x u`` = ``+z``: image row ``r`` of the CTSimU file is row ``r`` of xrm-twin's
projection array (row 0 at the bottom).

What CTSimU cannot express (the objective and camera model, noise parameters, built-in
battery phantoms, the seed) goes into ``simulation["xrm-twin"]["scenario"]`` so that
``read_scenario`` can rebuild the xrm-twin scenario; geometry, source, filters, detector
size, pitch and acquisition are written as CTSimU parameters and read back from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from twin.atomic import write_text_atomic
from twin.ctsimu.assets import _write_stl
from twin.ctsimu.sources import write_spectrum_file
from twin.filters import resolve_filter
from twin.geometry import focal_spot_fwhm_um
from twin.materials import Material
from twin.plan import FWHM_PER_SIGMA
from twin.scenario import ScanSpec
from twin.spectrum import TARGET_THICKNESS_UM, WINDOW


def _p(value, unit=None) -> dict:
    return {"value": value} if unit is None else {"value": value, "unit": unit}


def _xyz(v, unit=None) -> dict:
    return {k: _p(float(c), unit) for k, c in zip("xyz", v)}


def _uvw(v, unit=None) -> dict:
    return {k: _p(float(c), unit) for k, c in zip("uvw", v)}


class _Materials:
    def __init__(self):
        self.items: dict[str, dict] = {}

    def add(self, mat: Material) -> str:
        mid = mat.name
        if mid not in self.items:
            self.items[mid] = {
                "id": mid, "name": mat.name, "density": _p(float(mat.density_g_cm3), "g/cm^3"),
                "composition": [{"formula": _p(el), "mass_fraction": _p(float(w))}
                                for el, w in mat.mass_fractions]}
        return mid


def export_scenario(spec: ScanSpec, out_file: str | Path) -> dict[str, Any]:
    """Write ``out_file`` (CTSimU JSON) plus STL files of the parts beside it.

    Returns
    -------
    dict: ``path`` of the JSON, ``notes`` (what went into ``simulation.xrm-twin`` only).
    """
    from twin.plan import parts_scene, resolve_geometry

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    g = resolve_geometry(spec)
    mats = _Materials()
    notes = []
    a = g.source_object_mm
    pitch = g.scintillator_pixel_um / 1000.0
    beam = g.beam
    # stage: sample x -> world -y, sample y -> world +x, z -> z; axis offset and tilt
    stage = {"center": _xyz([a if beam == "cone" else 0.0, 0, 0], "mm"),
             "vector_u": _xyz([0, -1, 0]), "vector_w": _xyz([0, 0, 1]), "deviations": []}
    if g.axis_offset_mm:
        stage["deviations"].append({"type": "translation", "axis": _xyz([0, -1, 0]),
                                    "amount": _p(g.axis_offset_mm, "mm"), "known_to_reconstruction": True})
    if g.axis_tilt_deg:
        stage["deviations"].append({"type": "rotation", "axis": "x",
                                    "amount": _p(g.axis_tilt_deg, "deg"), "known_to_reconstruction": True})
    det_x = a + g.object_detector_mm if beam == "cone" else g.object_detector_mm
    pu = pitch if beam == "cone" else g.voxel_size_um / 1000.0
    off = np.array([0.0, -g.detector_offset_px[0] * pu, g.detector_offset_px[1] * pu])
    detector_geo = {"center": _xyz(np.array([det_x, 0, 0]) + off, "mm"),
                    "vector_u": _xyz([0, -1, 0]), "vector_w": _xyz([-1, 0, 0]), "deviations": []}
    source_geo = {"type": beam, "beam_divergence": None if beam == "cone" else {"u": _p(0, "deg"), "v": _p(0, "deg")},
                  "center": _xyz([0, 0, 0], "mm"), "vector_u": _xyz([0, -1, 0]),
                  "vector_w": _xyz([1, 0, 0]), "deviations": []}
    s = spec.source
    mono = s["monochromatic_kev"]
    layers = resolve_filter(s["filter"], s["filter_overrides"])
    window = [] if mono is not None else [
        {"material_id": mats.add(_named(m)), "thickness": _p(t, "mm")} for m, t in WINDOW]
    filters = [{"material_id": mats.add(l.material), "thickness": _p(l.thickness_mm, "mm")} for l in layers]
    kv = float(mono if mono is not None else s["kvp"])
    current_ma = float(s["power_w"]) / float(s["kvp"]) if mono is None else 1.0
    spectrum: dict[str, Any] = {"monochromatic": mono is not None, "file": _p(None)}
    if mono is None:
        from twin.spectrum import tube_spectrum

        sp = tube_spectrum(s["kvp"], s["power_w"], bin_kev=s["energy_bin_kev"],
                           target_thickness_um=s["target_thickness_um"])
        sp = type(sp)(sp.energy_kev, sp.photons_per_s_sr * s["flux_scale"], sp.bin_kev, sp.kvp, sp.power_w)
        sfile = out.with_name(out.stem + "_spectrum.csv")
        write_spectrum_file(sfile, sp, current_ma)
        spectrum["file"] = _p(sfile.name)
    d = spec.detector
    # the twin's focal spot (a Gaussian growing with power; none for an ideal detector, as in
    # twin.plan) and its flat-field SNR at the brightest pixel, so that another CTSimU
    # simulator blurs and adds noise as the twin does
    spot_sigma_mm = (0.0, 0.0, 0.0)
    if not d["ideal"]:
        fwhm_mm = focal_spot_fwhm_um(float(s["power_w"])) / 1000.0
        spot_sigma_mm = (fwhm_mm / FWHM_PER_SIGMA, fwhm_mm / FWHM_PER_SIGMA, 0.0)
    snr = None
    if not d["ideal"] and d["noise"]:
        from twin.acquisition import flat_field_snr_at_brightest_pixel
        from twin.plan import resolve

        snr = flat_field_snr_at_brightest_pixel(resolve(spec, with_scene=False))
        notes.append(f"detector.noise.snr_at_imax = {snr:.4g}: the twin's flat-field SNR at the brightest "
                     "pixel of one frame (CTSimU's noise variance is proportional to the grey value; the "
                     "twin's adds read and dark noise, so darker pixels are noisier than CTSimU's model)")
    det: dict[str, Any] = {
        "model": f"xrm-twin objective {g.objective}", "manufacturer": "", "type": "ideal" if d["ideal"] else "real",
        "columns": _p(g.cols, "px"), "rows": _p(g.rows, "px"), "pixel_pitch": {"u": _p(pu, "mm"), "v": _p(pu, "mm")},
        "bit_depth": _p(None if d["ideal"] or not d["noise"] else d["bit_depth"]),
        "integration_time": _p(d["exposure_s"], "s"), "dead_time": _p(d["readout_s"], "s"), "image_lag": _p(0.0),
        "gray_value": {"imin": _p(None), "imax": _p(None), "factor": _p(None, "1/J"), "offset": _p(None),
                       "intensity_characteristics_file": _p(None), "efficiency_characteristics_file": _p(None)},
        "noise": {"snr_at_imax": _p(snr), "noise_characteristics_file": _p(None)},
        "unsharpness": {"basic_spatial_resolution": _p(None, "mm"), "mtf": _p(None)},
        "scintillator": {"material_id": None, "thickness": _p(0.0, "mm")},
        "window": {"front": [], "rear": []}, "filters": {"front": [], "rear": []}}
    if not d["ideal"]:
        from twin.plan import resolve_detector

        dm = resolve_detector(spec, g)
        det["scintillator"] = {"material_id": mats.add(dm.scintillator), "thickness": _p(dm.scintillator_um / 1000, "mm")}
        notes.append("camera (objective coupling, gain, read noise, dark current, full well) only in simulation.xrm-twin")
    samples = []
    if spec.phantom["kind"] == "parts":
        base = Path(spec.origin).parent if spec.origin and not spec.origin.startswith("<") else Path(".")
        for i, part in enumerate(parts_scene(spec.phantom["parts"], base)):
            stl = out.with_name(f"{out.stem}_part{i}_{part.name}.stl")
            _write_stl(stl, part.triangles)
            lo, hi = part.bounds_mm
            c = 0.5 * (lo + hi)
            samples.append({"name": part.name, "file": _p(stl.name), "unit": "mm",
                            "scaling_factor": {k: _p(1.0) for k in "rst"},
                            "material_id": mats.add(part.material),
                            "position": {"center": _uvw(c, "mm"), "vector_r": _uvw([1, 0, 0]),
                                         "vector_t": _uvw([0, 0, 1]), "deviations": []}})
    else:
        notes.append(f"phantom kind {spec.phantom['kind']!r} (procedural label grids) has no STL form: "
                     "kept in simulation.xrm-twin only")
    ang = g.angles_deg
    full = g.arc_deg >= 360.0
    data = {
        "file": {"name": spec.name, "description": spec.description or "exported by xrm-twin",
                 "contact": "", "date_created": None, "date_changed": None,
                 "file_type": "CTSimU Scenario", "version": {"major": 1, "minor": 0},
                 "file_format_version": {"major": 1, "minor": 2}},
        "environment": {"material_id": "Vacuum", "temperature": _p(None, "C")},
        "geometry": {"detector": detector_geo, "source": source_geo, "stage": stage},
        "detector": det,
        "source": {"model": "xrm-twin transmission-target tube (SpekPy)", "manufacturer": "",
                   "voltage": _p(kv, "kV"), "current": _p(current_ma, "mA"),
                   "target": {"material_id": mats.add(_named("W")), "type": "transmission",
                              "thickness": _p(float(s["target_thickness_um"] or TARGET_THICKNESS_UM), "um"),
                              "angle": {"incidence": _p(None, "deg"), "emission": _p(None, "deg")}},
                   "spot": {"size": {k: _p(0.0, "mm") for k in "uvw"},
                            "sigma": {k: _p(v, "mm") for k, v in zip("uvw", spot_sigma_mm)},
                            "intensity_map": {"file": _p(None)}},
                   "spectrum": spectrum, "window": window, "filters": filters},
        "samples": samples,
        "acquisition": {"start_angle": _p(float(ang[0]), "deg"),
                        "stop_angle": _p(float(g.start_deg + g.arc_deg), "deg"), "direction": "CCW",
                        "scan_mode": "stop+go", "scan_speed": _p(None, "deg/s"),
                        "number_of_projections": int(g.n_views), "include_final_angle": not full,
                        "frame_average": int(d["frames"]), "scattering": False,
                        "dark_field": {"number": int(d["darks"]), "frame_average": 1, "ideal": bool(d["ideal"]),
                                       "correction": False},
                        "flat_field": {"number": int(d["flats"]), "frame_average": 1, "ideal": bool(d["ideal"]),
                                       "correction": False},
                        "pixel_binning": {"u": 1, "v": 1}},
        "materials": list(mats.items.values()),
        "simulation": {"xrm-twin": {"scenario": spec.to_toml_dict(), "notes": notes}},
    }
    if g.beam == "parallel":
        notes.append("parallel beam: the detector sits at the rotation axis (xrm-twin's convention)")
    _check_json(data)
    write_text_atomic(out, json.dumps(data, indent=1, default=_json_default))
    return {"path": str(out), "notes": notes}


def _named(name: str) -> Material:
    from twin.materials import get_material

    return get_material(name)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _check_json(data) -> None:
    json.dumps(data, default=_json_default)
