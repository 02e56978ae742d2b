"""Read a CTSimU scenario JSON (file format 1.x) into a :class:`CtsimuScenario`.

What maps where (details and approximations: ``docs/ctsimu.md``):

* geometry: source, detector and stage frames with their deviations -> explicit per-view
  vectors in the stage frame (:mod:`twin.ctsimu.frames`);
* samples: STL parts placed by bounding-box centre, ``vector_r``/``vector_t``, scaling and
  deviations, with materials from the ``materials`` section;
* source: voltage, current, spectrum (file, monochromatic or SpekPy), window, filters,
  Gaussian focal spot;
* detector: ideal / real (scintillator), pitch, size, integration time, front filters,
  grey-value characteristics (min/max or linear), SNR at imax, basic spatial resolution;
* acquisition: angles, direction, frame averaging, flat and dark fields, binning.

Features xrm-twin does not model are listed by key: refused (an :class:`XrmInputError`
naming every such key) unless ``approximate=True``, in which case each is handled as
:data:`APPROXIMATIONS` says and recorded in :attr:`CtsimuScenario.notes`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from twin.ctsimu import frames as fr
from twin.ctsimu.sources import read_spectrum_file, spekpy_spectrum
from twin.ctsimu.units import has_drifts, number, quantity, raw_value
from twin.errors import XrmInputError
from twin.filters import FilterLayer
from twin.materials import Material, formula_mass_fractions
from twin.meshes import MeshPart, load_mesh_file
from twin.scenario import ScanSpec, validate
from twin.spectrum import Spectrum

#: Unsupported CTSimU features and what ``approximate=True`` does with them.
APPROXIMATIONS = {
    "drifts": "ignored: every frame uses the parameter's base value",
    "source.spot.intensity_map": "ignored: the Gaussian sigmas (or size) are used",
    "source.spot.size (sigma = 0)": "uniform rectangle replaced by a Gaussian of equal variance",
    "source.spot.sigma.w / size.w": "spot depth ignored",
    "detector.image_lag": "ignored: no lag between frames",
    "detector.bad_pixel_map": "ignored: all pixels work",
    "detector.gray_value.intensity_characteristics_file": "ignored: min/max or linear method used",
    "detector.gray_value.efficiency_characteristics_file": "ignored: scintillator absorption used",
    "detector.noise.noise_characteristics_file": "ignored: snr_at_imax used",
    "detector.unsharpness.mtf": "ignored: basic_spatial_resolution used",
    "detector.filters.rear / window.rear": "ignored: no back-scatter model",
    "acquisition.scattering": "ignored: primary radiation only",
    "acquisition.scan_mode continuous": "simulated as stop+go (no motion blur)",
    "environment.material_id": "air attenuation between source and detector ignored",
    "source.beam_divergence": "ignored: parallel rays",
    "simulation": "proprietary section not used (except simulation.xrm-twin)",
}

KEV_TO_J = 1.602176634e-16


@dataclass(frozen=True)
class DetectorSettings:
    """The CTSimU detector model xrm-twin simulates.

    Attributes
    ----------
    ideal : bool
        Perfect energy-integrating absorber (``type = "ideal"``).
    scintillator : Material or None
    scintillator_mm : float
    front_layers : tuple of FilterLayer
        Detector window and filters in front of the screen.
    imin, imax : float
        Grey value at no and at the maximum free-beam intensity (min/max method).
    factor_per_j, offset : float or None
        Linear method: grey value = factor * E_J + offset (takes precedence).
    snr_at_imax : float or None
        Gaussian noise with variance ``((imax - imin)/snr)^2 * (g - imin)/(imax - imin)``.
    srb_mm : float or None
        Basic spatial resolution (Gaussian detector blur, see
        :func:`twin.ctsimu.unsharpness.sigma_for_srb_mm`).
    bit_depth : int or None
        <= 16: uint16 images; otherwise float32.
    integration_time_s : float
    """

    ideal: bool
    scintillator: Material | None
    scintillator_mm: float
    front_layers: tuple[FilterLayer, ...]
    imin: float
    imax: float
    factor_per_j: float | None
    offset: float | None
    snr_at_imax: float | None
    srb_mm: float | None
    bit_depth: int | None
    integration_time_s: float


@dataclass(frozen=True)
class Acquisition:
    """Frames of the scan: views, averaging, flats and darks (numbers and whether ideal)."""

    angles_deg: np.ndarray
    frame_average: int
    n_flats: int
    flat_average: int
    flat_ideal: bool
    n_darks: int
    dark_average: int
    dark_ideal: bool


@dataclass(frozen=True)
class CtsimuScenario:
    """A CTSimU scenario resolved for xrm-twin.

    Attributes
    ----------
    name : str
    path : Path or None
    raw : dict
        The JSON as read.
    spec : ScanSpec
        The nearest xrm-twin scenario (nominal distances, pixels, source, parts).
    vectors : ndarray (views, 12)
        Explicit per-view vectors in the stage frame, mm (:mod:`twin.geometry` layout).
    beam : str
        ``"cone"`` or ``"parallel"``.
    cols, rows : int
    pitch_u_mm, pitch_v_mm : float
    parts : tuple of MeshPart
        Samples placed in the stage frame.
    spectrum : Spectrum
        Photons / (s sr) per bin after window and source filters.
    detector : DetectorSettings
    acquisition : Acquisition
    spot_cov_mm2 : ndarray (2, 2)
        Covariance (mm^2) of the focal spot projected on the detector's (v, u) axes, to be
        scaled by (M - 1)^2, see :func:`twin.ctsimu.run.spot_blur_sigma_px`.
    source_object_mm, source_detector_mm : float
        Source to stage centre, and source to the detector plane (perpendicular), frame 0.
    notes : tuple of str
        Approximations applied (one line each, naming the key).
    """

    name: str
    path: Path | None
    raw: Mapping[str, Any]
    spec: ScanSpec
    vectors: np.ndarray
    beam: str
    cols: int
    rows: int
    pitch_u_mm: float
    pitch_v_mm: float
    parts: tuple[MeshPart, ...]
    spectrum: Spectrum
    detector: DetectorSettings
    acquisition: Acquisition
    spot_cov_mm2: np.ndarray
    source_object_mm: float
    source_detector_mm: float
    notes: tuple[str, ...] = field(default=())


class _Issues:
    """Collects unsupported keys; refuses them all at once unless approximating."""

    def __init__(self, approximate: bool, origin: str):
        self.approximate = approximate
        self.origin = origin
        self.unsupported: list[str] = []
        self.notes: list[str] = []

    def add(self, key: str, rule: str) -> None:
        self.unsupported.append(f"{key} ({APPROXIMATIONS[rule]})")

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self) -> list[str]:
        if self.unsupported and not self.approximate:
            lines = "\n  ".join(self.unsupported)
            raise XrmInputError(f"{self.origin}: CTSimU features xrm-twin does not model:\n  {lines}\n"
                                "Pass approximate=True (CLI: --approximate) to run with the "
                                "approximation named for each.")
        return [f"approximated: {u}" for u in self.unsupported] + self.notes


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return default
        d = d[k]
    return d


def _scan_drifts(node: Any, path: str, issues: _Issues) -> None:
    """Record every parameter with drifts (anywhere in the file)."""
    if isinstance(node, Mapping):
        if has_drifts(node):
            issues.add(f"{path}.drifts", "drifts")
        for k, v in node.items():
            if k not in ("drifts", "drift"):
                _scan_drifts(v, f"{path}.{k}" if path else k, issues)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _scan_drifts(v, f"{path}[{i}]", issues)


def _strip_drifts(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _strip_drifts(v) for k, v in node.items() if k not in ("drifts", "drift")}
    if isinstance(node, list):
        return [_strip_drifts(v) for v in node]
    return node


# ------------------------------------------------------------------------------- materials
def read_materials(raw: Mapping[str, Any]) -> dict[str, Material | None]:
    """``materials`` section -> id -> Material (None for vacuum / zero density)."""
    out: dict[str, Material | None] = {}
    for i, m in enumerate(raw.get("materials") or []):
        where = f"materials[{i}]"
        mid = m.get("id")
        if not mid:
            raise XrmInputError(f"CTSimU {where}: needs an 'id'")
        rho = quantity(m.get("density"), "density", f"{where}.density", 0.0)
        comps = m.get("composition") or []
        fracs: dict[str, float] = {}
        desc = []
        for j, c in enumerate(comps):
            formula = raw_value(c.get("formula"))
            w = number(c.get("mass_fraction"), f"{where}.composition[{j}].mass_fraction", 1.0)
            if not formula or w <= 0:
                continue
            for el, f in formula_mass_fractions(str(formula)):
                fracs[el] = fracs.get(el, 0.0) + f * w
            desc.append(f"{w:g} {formula}")
        if rho <= 0 or not fracs:
            out[mid] = None
            continue
        total = sum(fracs.values())
        out[mid] = Material(str(m.get("name") or mid), tuple(sorted((k, v / total) for k, v in fracs.items())),
                            float(rho), " + ".join(desc) + " (mass)")
    return out


def _material(mats: Mapping[str, Material | None], mid: Any, where: str) -> Material | None:
    if mid is None:
        return None
    if mid not in mats:
        raise XrmInputError(f"CTSimU {where}: material_id {mid!r} is not in the materials section "
                            f"(ids: {', '.join(mats)})")
    return mats[mid]


def _layers(items: Any, mats, where: str) -> tuple[FilterLayer, ...]:
    out = []
    for i, it in enumerate(items or []):
        mat = _material(mats, it.get("material_id"), f"{where}[{i}]")
        t = quantity(it.get("thickness"), "length", f"{where}[{i}].thickness", 0.0)
        if mat is not None and t > 0:
            out.append(FilterLayer(mat, t))
    return tuple(out)


# ------------------------------------------------------------------------------- sections
def _source_spectrum(raw, mats, base: Path, issues: _Issues) -> tuple[Spectrum, tuple[FilterLayer, ...]]:
    src = raw.get("source") or {}
    kv = quantity(src.get("voltage"), "voltage", "source.voltage")
    ma = quantity(src.get("current"), "current", "source.current", 1.0)
    if kv is None or kv <= 0:
        raise XrmInputError("CTSimU source.voltage must be a positive number")
    spec = _get(src, "spectrum", default={}) or {}
    file = raw_value(spec.get("file"))
    window = _layers(src.get("window"), mats, "source.window")
    filters = _layers(src.get("filters"), mats, "source.filters")
    if file:
        spectrum = read_spectrum_file(base / file, ma, kv)  # already through the window
    elif spec.get("monochromatic") and not (spec.get("bremsstrahlung") or spec.get("characteristic")):
        spectrum = Spectrum(np.array([kv]), np.array([1e11 * ma]), 0.0, kv, kv * ma)
        issues.note(f"monochromatic beam at {kv:g} keV (the voltage), 1e11 photons/(s sr mA)")
    else:
        tgt = _get(src, "target", default={}) or {}
        tmat = tgt.get("material_id") or "W"
        trans = tgt.get("type") == "transmission"
        thick_mm = quantity(tgt.get("thickness"), "length", "source.target.thickness")
        emis = quantity(_get(tgt, "angle", "emission"), "angle", "source.target.angle.emission", 12.0)
        formula = tmat
        m = mats.get(tmat)
        if m is not None and len(m.mass_fractions) == 1:
            formula = m.mass_fractions[0][0]
        spectrum = spekpy_spectrum(kv, ma, formula, transmission=trans, emission_angle_deg=emis,
                                   target_thickness_um=None if thick_mm is None else thick_mm * 1000)
        spectrum = spectrum.filtered(window)
        issues.note(f"spectrum computed with SpekPy ({formula} {'transmission' if trans else 'reflection'} "
                    f"target, {kv:g} kV) and filtered by the window")
    return spectrum.filtered(filters), filters


def _spot_cov(raw, source: fr.Frame, detector: fr.Frame, issues: _Issues) -> np.ndarray:
    """Focal-spot covariance in the detector (v, u) axes, mm^2 (before the (M-1) scaling)."""
    spot = _get(raw, "source", "spot", default={}) or {}
    sig = [quantity(_get(spot, "sigma", a), "length", f"source.spot.sigma.{a}", 0.0) for a in "uvw"]
    size = [quantity(_get(spot, "size", a), "length", f"source.spot.size.{a}", 0.0) for a in "uvw"]
    if raw_value(_get(spot, "intensity_map", "file")):
        issues.add("source.spot.intensity_map.file", "source.spot.intensity_map")
    su, sv = sig[0], sig[1]
    if su == 0 and sv == 0 and (size[0] > 0 or size[1] > 0):
        su, sv = size[0] / np.sqrt(12), size[1] / np.sqrt(12)
        issues.add("source.spot.size", "source.spot.size (sigma = 0)")
    if sig[2] > 0 or (size[2] > 0 and (su > 0 or sv > 0)):
        issues.add("source.spot.sigma.w / size.w", "source.spot.sigma.w / size.w")
    cov_src = np.diag([su ** 2, sv ** 2])
    # projection of the source's u, v axes on the detector's (v, u) axes
    j = np.array([[detector.basis[1] @ source.basis[0], detector.basis[1] @ source.basis[1]],
                  [detector.basis[0] @ source.basis[0], detector.basis[0] @ source.basis[1]]])
    return j @ cov_src @ j.T


def _detector(raw, mats, issues: _Issues) -> DetectorSettings:
    d = raw.get("detector") or {}
    ideal = str(d.get("type", "ideal")).lower() != "real"
    scint_mat = _material(mats, _get(d, "scintillator", "material_id"), "detector.scintillator")
    scint_mm = quantity(_get(d, "scintillator", "thickness"), "length", "detector.scintillator.thickness", 0.0)
    if not ideal and (scint_mat is None or scint_mm <= 0):
        raise XrmInputError("CTSimU detector.type = 'real' needs detector.scintillator.material_id "
                            "and a thickness > 0")
    front = _layers(_get(d, "window", "front"), mats, "detector.window.front") + \
        _layers(_get(d, "filters", "front"), mats, "detector.filters.front")
    if _get(d, "window", "rear") or _get(d, "filters", "rear"):
        issues.add("detector.filters.rear / detector.window.rear", "detector.filters.rear / window.rear")
    gv = d.get("gray_value") or {}
    for key in ("intensity_characteristics_file", "efficiency_characteristics_file"):
        if raw_value(gv.get(key)):
            issues.add(f"detector.gray_value.{key}", f"detector.gray_value.{key}")
    if raw_value(_get(d, "noise", "noise_characteristics_file")):
        issues.add("detector.noise.noise_characteristics_file", "detector.noise.noise_characteristics_file")
    if raw_value(_get(d, "unsharpness", "mtf")):
        issues.add("detector.unsharpness.mtf", "detector.unsharpness.mtf")
    if number(d.get("image_lag"), "detector.image_lag", 0.0):
        issues.add("detector.image_lag", "detector.image_lag")
    bpm = d.get("bad_pixel_map")
    if raw_value(bpm) or raw_value(_get(bpm, "file")):
        issues.add("detector.bad_pixel_map", "detector.bad_pixel_map")
    imin = number(gv.get("imin"), "detector.gray_value.imin")
    imax = number(gv.get("imax"), "detector.gray_value.imax")
    factor = number(gv.get("factor"), "detector.gray_value.factor")
    offset = number(gv.get("offset"), "detector.gray_value.offset")
    if factor is not None and offset is None:
        offset = 0.0
    if factor is None and imax is None:
        imin, imax = 0.0, 60000.0
        issues.note("detector.gray_value gives neither imax nor factor: imax = 60000, imin = 0")
    bits = raw_value(d.get("bit_depth"))
    t = quantity(d.get("integration_time"), "time", "detector.integration_time", 1.0)
    return DetectorSettings(
        ideal=ideal, scintillator=None if ideal else scint_mat, scintillator_mm=scint_mm,
        front_layers=front, imin=imin or 0.0, imax=imax if imax is not None else 60000.0,
        factor_per_j=factor, offset=offset,
        snr_at_imax=number(_get(d, "noise", "snr_at_imax"), "detector.noise.snr_at_imax"),
        srb_mm=quantity(_get(d, "unsharpness", "basic_spatial_resolution"), "length",
                        "detector.unsharpness.basic_spatial_resolution"),
        bit_depth=None if bits is None else int(bits), integration_time_s=t)


def _acquisition(raw, issues: _Issues) -> Acquisition:
    a = raw.get("acquisition") or {}
    start = quantity(a.get("start_angle"), "angle", "acquisition.start_angle", 0.0)
    stop = quantity(a.get("stop_angle"), "angle", "acquisition.stop_angle", 360.0)
    n = int(raw_value(a.get("number_of_projections")) or 1)
    if stop < start:
        raise XrmInputError("CTSimU acquisition.stop_angle must be >= start_angle (the direction "
                            "keyword gives the sense of rotation)")
    steps = n - 1 if a.get("include_final_angle") else n
    angles = start + (stop - start) * np.arange(n) / max(steps, 1) if n > 1 else np.array([start])
    if a.get("direction", "CCW") == "CW":
        angles = -angles
    if str(a.get("scan_mode", "stop+go")).lower() not in ("stop+go", "stop&go", "stop and go"):
        issues.add("acquisition.scan_mode", "acquisition.scan_mode continuous")
    if a.get("scattering"):
        issues.add("acquisition.scattering", "acquisition.scattering")
    binning = a.get("pixel_binning") or {}
    if int(raw_value(binning.get("u")) or 1) != 1 or int(raw_value(binning.get("v")) or 1) != 1:
        issues.note("acquisition.pixel_binning applied by enlarging the pitch and dividing the pixel counts")
    ff, df = a.get("flat_field") or {}, a.get("dark_field") or {}
    return Acquisition(
        angles_deg=np.asarray(angles, float), frame_average=int(raw_value(a.get("frame_average")) or 1),
        n_flats=int(raw_value(ff.get("number")) or 0), flat_average=int(raw_value(ff.get("frame_average")) or 1),
        flat_ideal=bool(ff.get("ideal", False)), n_darks=int(raw_value(df.get("number")) or 0),
        dark_average=int(raw_value(df.get("frame_average")) or 1), dark_ideal=bool(df.get("ideal", False)))


def _samples(raw, mats, base: Path, stage0: fr.Frame, static_stage: bool) -> tuple[MeshPart, ...]:
    parts = []
    for i, s in enumerate(raw.get("samples") or []):
        where = f"samples[{i}]"
        mat = _material(mats, s.get("material_id"), f"{where}.material_id")
        if mat is None:
            continue  # vacuum part: nothing to trace
        file = raw_value(s.get("file"))
        if not file:
            raise XrmInputError(f"CTSimU {where}: needs a model file")
        unit_mm = quantity({"value": 1.0, "unit": s.get("unit") or "mm"}, "length", f"{where}.unit")
        tri = load_mesh_file(base / file, scale_to_mm=unit_mm)
        scale = np.array([number(_get(s, "scaling_factor", k), f"{where}.scaling_factor.{k}", 1.0)
                          for k in "rst"])
        tri = tri * scale
        flat = tri.reshape(-1, 3)
        tri = tri - 0.5 * (flat.min(axis=0) + flat.max(axis=0))
        pos = s.get("position") or {}
        frame, names = fr.placement(pos, f"{where}.position", sample=True)
        if names == fr.LOCAL_AXES:  # attached to the stage
            ctx = fr.AxisContext(world_to_ref=stage0, local_is_self=False)
            frame = fr.apply_deviations(frame, pos.get("deviations"), ctx, f"{where}.position")
            pts = frame.to_reference(tri)
        else:  # fixed in the world
            if not static_stage:
                raise XrmInputError(f"CTSimU {where}: a sample fixed in the world coordinate system "
                                    "needs a stage that does not move during the scan (xrm-twin traces "
                                    "in the stage frame)")
            frame = fr.apply_deviations(frame, pos.get("deviations"), fr.AxisContext(None, True),
                                        f"{where}.position")
            pts = stage0.to_local(frame.to_reference(tri))
        parts.append(MeshPart(str(s.get("name") or f"sample{i}"), mat, np.ascontiguousarray(pts)))
    return tuple(parts)


# ------------------------------------------------------------------------------- entry point
def read_scenario(path: str | Path | None = None, *, data: Mapping[str, Any] | None = None,
                  approximate: bool = False, base_dir: str | Path | None = None) -> CtsimuScenario:
    """Read a CTSimU scenario file (or an already parsed dict).

    Parameters
    ----------
    path : str or Path, optional
        The scenario JSON. Referenced files (STL, spectrum) are relative to its folder.
    data : dict, optional
        The parsed JSON instead of ``path`` (then ``base_dir`` locates referenced files).
    approximate : bool
        Run unsupported features with the approximation of :data:`APPROXIMATIONS` instead
        of refusing them.

    Raises
    ------
    XrmInputError
        Not a CTSimU scenario of file format 1.x, unsupported features (unless
        ``approximate``), unreadable STL or spectrum files (naming the path), bad values.
    """
    if data is None:
        if path is None:
            raise XrmInputError("read_scenario needs a path or data")
        p = Path(path)
        if not p.is_file():
            raise XrmInputError(f"CTSimU scenario {str(p)!r} does not exist")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise XrmInputError(f"cannot read CTSimU scenario {str(p)!r}: {exc}") from None
        base = p.parent if base_dir is None else Path(base_dir)
        origin = str(p)
    else:
        p = None if path is None else Path(path)
        base = Path(base_dir or (p.parent if p else "."))
        origin = str(p) if p else "<CTSimU scenario>"
    if _get(data, "file", "file_type") not in ("CTSimU Scenario", None):
        raise XrmInputError(f"{origin}: file.file_type is {_get(data, 'file', 'file_type')!r}, "
                            "expected 'CTSimU Scenario'")
    major = _get(data, "file", "file_format_version", "major")
    if major is not None and int(major) != 1:
        raise XrmInputError(f"{origin}: CTSimU file format {major}.x is not supported (1.x is)")
    issues = _Issues(approximate, origin)
    _scan_drifts(data, "", issues)
    raw = _strip_drifts(data)
    env = _get(raw, "environment", "material_id")
    if env and str(env).lower() not in ("vacuum", "void", "none"):
        issues.add("environment.material_id", "environment.material_id")
    sim = raw.get("simulation")
    if sim and set(sim) - {"xrm-twin"}:
        issues.note("simulation section: " + APPROXIMATIONS["simulation"])
    mats = read_materials(raw)

    geo = raw.get("geometry") or {}
    src0, _ = fr.placement(geo.get("source"), "geometry.source")
    det0, _ = fr.placement(geo.get("detector"), "geometry.detector")
    stg0, _ = fr.placement(geo.get("stage"), "geometry.stage")
    world = fr.AxisContext(None, True)
    src = fr.apply_deviations(src0, _get(geo, "source", "deviations"), world, "geometry.source")
    det = fr.apply_deviations(det0, _get(geo, "detector", "deviations"), world, "geometry.detector")
    beam = str(_get(geo, "source", "type", default="cone")).lower()
    if beam not in ("cone", "parallel"):
        raise XrmInputError(f"CTSimU geometry.source.type must be 'cone' or 'parallel', got {beam!r}")
    if beam == "parallel":
        div = [quantity(_get(geo, "source", "beam_divergence", k), "angle", f"geometry.source.beam_divergence.{k}", 0.0)
               for k in "uv"]
        if any(div):
            issues.add("geometry.source.beam_divergence", "source.beam_divergence")

    d = raw.get("detector") or {}
    cols = int(raw_value(d.get("columns")) or 0)
    rows = int(raw_value(d.get("rows")) or 0)
    pu = quantity(_get(d, "pixel_pitch", "u"), "length", "detector.pixel_pitch.u")
    pv = quantity(_get(d, "pixel_pitch", "v"), "length", "detector.pixel_pitch.v", pu)
    if cols < 1 or rows < 1 or not pu or pu <= 0 or pv <= 0:
        raise XrmInputError(f"{origin}: detector.columns, rows and pixel_pitch must be positive")
    binning = _get(raw, "acquisition", "pixel_binning", default={}) or {}
    bu, bv = int(raw_value(binning.get("u")) or 1), int(raw_value(binning.get("v")) or 1)
    cols, rows, pu, pv = cols // bu, rows // bv, pu * bu, pv * bv

    acq = _acquisition(raw, issues)
    stage_devs = _get(geo, "stage", "deviations")
    stages = [fr.stage_frame_at(stg0, stage_devs, a) for a in acq.angles_deg]
    vectors = np.stack([fr.view_vectors(src, det, s, pu, pv, parallel=beam == "parallel") for s in stages])
    static = all(np.allclose(s.center, stages[0].center) and np.allclose(s.basis, stages[0].basis)
                 for s in stages)
    parts = _samples(raw, mats, base, stages[0], static)
    spectrum, filters = _source_spectrum(raw, mats, base, issues)
    detector = _detector(raw, mats, issues)
    spot = _spot_cov(raw, src, det, issues)
    normal = det.basis[2]
    sdd = abs(float((det.center - src.center) @ normal))
    sod = abs(float((stages[0].center - src.center) @ normal))
    notes = tuple(issues.finish())
    spec = _to_spec(raw, origin, p, cols, rows, pu, sod, sdd, acq, spectrum, detector, parts)
    return CtsimuScenario(
        name=str(_get(raw, "file", "name", default=p.stem if p else "ctsimu")), path=p, raw=data,
        spec=spec, vectors=vectors, beam=beam, cols=cols, rows=rows, pitch_u_mm=pu, pitch_v_mm=pv,
        parts=parts, spectrum=spectrum, detector=detector, acquisition=acq, spot_cov_mm2=spot,
        source_object_mm=sod, source_detector_mm=sdd, notes=notes)


def _to_spec(raw, origin, path, cols, rows, pitch_mm, sod, sdd, acq, spectrum, det, parts) -> ScanSpec:
    """The nearest xrm-twin ScanSpec (nominal circular scan); ``simulation.xrm-twin`` wins."""
    extra = _get(raw, "simulation", "xrm-twin", default=None)
    if isinstance(extra, Mapping) and "scenario" in extra:
        return _spec_from_export(raw, origin, extra["scenario"], cols, rows, sod, sdd, acq)
    angles = acq.angles_deg
    arc = float(abs(angles[-1] - angles[0]) * len(angles) / max(len(angles) - 1, 1)) if len(angles) > 1 else 360.0
    mono = len(spectrum.energy_kev) == 1
    data = {
        "name": str(_get(raw, "file", "name", default="ctsimu")),
        "description": f"from CTSimU scenario {origin}",
        "source": {"kvp": float(spectrum.kvp), "power_w": float(spectrum.power_w),
                   "monochromatic_kev": float(spectrum.energy_kev[0]) if mono else None},
        "geometry": {"source_object_mm": sod, "object_detector_mm": max(sdd - sod, 0.0),
                     "objective": "flat-panel", "projections": int(len(angles)),
                     "arc_deg": min(max(arc, 1e-6), 360.0), "start_deg": float(angles[0])},
        "detector": {"pixels": [int(cols), int(rows)], "pixel_um": pitch_mm * 1000.0,
                     "exposure_s": det.integration_time_s, "frames": acq.frame_average,
                     "ideal": det.ideal, "flats": acq.n_flats, "darks": acq.n_darks,
                     "scintillator": None if det.ideal else {"material": det.scintillator.name,
                                                             "thickness_um": det.scintillator_mm * 1000}},
        "phantom": {"kind": "parts", "parts": [{"name": pt.name, "material": pt.material.name,
                                                "density_g_cm3": pt.material.density_g_cm3}
                                               for pt in parts]},
    }
    return validate(data, origin)


def _spec_from_export(raw, origin, scen, cols, rows, sod, sdd, acq) -> ScanSpec:
    """Rebuild an exported xrm-twin scenario: CTSimU geometry, detector and acquisition
    values replace the stored ones (so the round trip tests the mapping), the rest (objective,
    camera, phantom) comes from ``simulation.xrm-twin.scenario``."""
    import copy

    data = copy.deepcopy(dict(scen))
    g = data.setdefault("geometry", {})
    g["source_object_mm"] = sod
    g["object_detector_mm"] = sdd - sod
    g["projections"] = int(len(acq.angles_deg))
    g["start_deg"] = float(acq.angles_deg[0])
    data.setdefault("detector", {})["pixels"] = [int(cols), int(rows)]
    data["detector"]["flats"] = acq.n_flats
    data["detector"]["darks"] = acq.n_darks
    data["detector"]["frames"] = acq.frame_average
    data["source"] = dict(data.get("source", {}))
    data["source"]["kvp"] = float(raw_value(_get(raw, "source", "voltage")))
    return validate(data, origin)
