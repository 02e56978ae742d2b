"""Fast linear-systems detectability model: CNR, d' (NPW) and POD of a defect for many settings.

No projection is simulated. For every setting (a scenario plus overrides) the model combines,
in closed form, the same ingredients as the twin (:mod:`twin.spectrum`, :mod:`twin.filters`,
:mod:`twin.materials`, :mod:`twin.detector`, :mod:`twin.geometry`) with the noise transfer of
FDK (:mod:`recon.fdk`):

1. **Detected signal through the task's path.** Photons per pixel per view
   ``n(E) = N(E) P Omega t F`` (spectrum per watt after the filter x power x on-axis pixel
   solid angle x exposure x frames), transmission ``T(E) = exp(-sum_m mu_m(E) L_m)`` along the
   path; absorbed-energy sums ``s = sum n eta E T``, ``s2 = sum n eta E^2 T``.
2. **Line-integral noise per detector pixel and view** (:meth:`DetectorModel.noise_variance_adu2`):
   quantum part ``sigma_q^2 = (k^2 s2 / I_swank + k s) / (k s)^2`` (blurred by the screen /
   objective), read part ``sigma_r^2 = (F sigma_read^2 + F t dark + F^2 g^2/12) / (k s)^2`` (white).
3. **Contrast.** Linearised polychromatic contrast of the defect filling against the host,
   ``dmu = sum_E w(E) (mu_fill - mu_host)`` with the detected-energy weights
   ``w = n eta E T / s`` (what FDK of ``-ln(I/I0)`` returns for a small feature).
4. **Resolution (task transfer function).** ``TTF(f) = H_spot H_screen sinc^2(f_r d)
   sinc^2(f_z d)``: focal-spot penumbra ``spot (M-1)`` and screen blur (Koch) at the detector,
   each the transfer of the *discrete* Gaussian kernel the twin applies to the sampled
   projections (:func:`gaussian_filter_transfer`; a sub-pixel blur does almost nothing), times
   the bilinear interpolation of the voxel-driven backprojector, times the pixel aperture
   ``sinc(f_r d) sinc(f_z d)`` where pixels integrate over their area (a real detector; the
   twin with supersampled rays, the default on voxel phantoms; not with one ray per pixel,
   the default on mesh-only ``parts`` scenes); band-limited to
   ``f_r, |f_z| <= 1/(2 d)`` (``d`` the voxel size).
5. **FDK noise power.** Ramp-filtered backprojection of white projection noise over ``N``
   views: ``NPS(f) = (pi / N) d^2 sigma_p^2 |f_r| sinc^4(f_r d) sinc^4(f_z d)`` in band (the
   quantum part times the squared screen MTF). The bilinear interpolation of the backprojector
   also passes spectral images of the ramp-filtered noise, which land at in-plane frequencies
   beyond ``1/(2d)`` (the corners of the voxel grid's band): they raise the voxel variance by
   :data:`FDK_ALIAS_FACTOR` (calibrated on the twin's FDK) but leave the NPS where a defect's
   signal lives unchanged, so they enter the CNR and not d'.
6. **Detectability.** ``d'^2 = [int W^2 TTF^2]^2 / int W^2 TTF^2 NPS`` with
   ``W = dmu |F{s}|`` (``recon.detectability``: NPW observer), the peak CNR
   ``|dmu| (s * PSF)(0) / sigma_voxel``, and POD (MIL-HDBK-1823A a-hat form with the observer's
   response as a-hat): ``POD = Phi(d' - d'_th)``, ``d'_th = Phi^-1(1 - p_fa)``. With the default
   false-call probability ``p_fa = 1e-4`` per independent location, POD = 0.9 needs d' = 5.0
   (the Rose criterion). ``a90`` solves ``d'(a) = d'_th + 1.2816``.

Frequency integrals run on a cylindrical (f_r, f_z) grid in cycles/mm (the azimuthal average of
``|F{s}|^2`` is taken for discs whose normal lies in the x-y plane), once per distinct
(voxel, blur) pair; everything else is array arithmetic over the settings, so thousands of
settings cost about a second. Not modelled: flat-field (reference) noise and rings, scatter,
beam-hardening cupping, phase contrast, view aliasing (the optimiser keeps ``views >= pi/2 x
columns`` instead), cone-beam artefacts away from the central plane.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.special import j1, ndtr, ndtri

from twin.errors import XrmInputError, unknown
from twin.filters import FILTER_LIBRARY, resolve_filter, stack_transmission
from twin.geometry import OBJECTIVES
from twin.materials import get_material, named_materials
from twin.scan_time import scenario_scan_time_s
from twin.scenario import SCHEMA, SECTIONS, ScanSpec, validate
from twin.spectrum import KVP_RANGE, MAX_POWER_W, monochromatic_spectrum, tube_spectrum

__all__ = ["Task", "parse_task", "TASK_KINDS", "HOST_ALIASES", "DEFAULT_PATHS", "evaluate",
           "row_specs", "check_ranges", "dprime_threshold", "pod_from_dprime",
           "FDK_ALIAS_FACTOR", "INSTRUMENT_RANGES", "BINNINGS", "gaussian_filter_transfer"]

TASK_KINDS = ("void", "crack", "delamination", "inclusion")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
Z90 = float(ndtri(0.9))
#: Camera binnings the instrument offers.
BINNINGS = (1, 2, 4)
#: Instrument ranges checked on every setting (the message of a violation lists them).
INSTRUMENT_RANGES = {
    "source.kvp": f"{KVP_RANGE[0]:g}-{KVP_RANGE[1]:g} kV",
    "source.power_w": f"0-{MAX_POWER_W:g} W",
    "source.filter": ", ".join(FILTER_LIBRARY) + " or a custom stack",
    "geometry.objective": ", ".join(OBJECTIVES),
    "geometry.binning": ", ".join(str(b) for b in BINNINGS),
    "geometry.projections": "1-20000 views",
    "detector.exposure_s": "0-600 s per frame",
    "detector.frames": "1-100",
}
#: Total variance of FDK-reconstructed white projection noise divided by the in-band model
#: ``(pi/N) d^2 sigma^2 int |f_r| sinc^4 sinc^4``: the bilinear interpolation of the
#: voxel-driven backprojector passes spectral images of the ramp-filtered noise that alias
#: back onto the voxel grid. Measured on :func:`recon.fdk.fdk` (96^2 detector, 90 and 180
#: views: 1.837, 1.831; see tests/test_optimise_fastmodel.py::test_fdk_noise_calibration).
FDK_ALIAS_FACTOR = 1.83

#: Short host names -> materials of :mod:`twin.materials`.
HOST_ALIASES = {"cathode": "lfp_cathode", "lfp": "lfp_cathode", "anode": "graphite_anode",
                "graphite": "graphite_anode", "positive": "nimh_positive",
                "negative": "nimh_negative", "na": "na_cathode", "separator": "gf_separator_lipf6"}
#: Default filling of a void/crack/delamination: the cell's electrolyte (the cells are filled).
DEFAULT_FILL = {"lfp_cathode": "LiPF6_EC_DMC", "graphite_anode": "LiPF6_EC_DMC",
                "gf_separator_lipf6": "LiPF6_EC_DMC", "na_cathode": "NaClO4_PC",
                "gf_separator_naclo4": "NaClO4_PC", "nimh_positive": "KOH_30wt",
                "nimh_negative": "KOH_30wt", "nimh_separator": "KOH_30wt"}
#: Default path (material, mm) of a ray through the sample to the defect. Estimates:
#: pouch: the beam crosses the cathode layer in its plane across the 3.9 mm VOI (scan of the
#: paper, rotation axis normal to the pouch); NiMH AAA zoom: a ~10 mm chord through the cell
#: (can walls 2 x 0.25 mm, wound positive / negative / separator in proportion 0.6 : 0.3 : 0.1
#: of the winding, Ni foam struts); coin cell: 20 mm of Na cathode disc edge-on would be
#: opaque, so the chord through the stack's 3.2 mm height is used. Override with ``;path=``.
DEFAULT_PATHS: dict[str, tuple[tuple[str, float], ...]] = {
    "lfp_cathode": (("lfp_cathode", 3.9),),
    "graphite_anode": (("graphite_anode", 3.9),),
    "nimh_positive": (("nimh_positive", 5.0), ("nimh_negative", 2.5), ("nimh_separator", 0.9),
                      ("low_carbon_steel", 0.5), ("Ni", 0.25)),
    "nimh_negative": (("nimh_positive", 5.0), ("nimh_negative", 2.5), ("nimh_separator", 0.9),
                      ("low_carbon_steel", 0.5), ("Ni", 0.25)),
    "na_cathode": (("na_cathode", 3.0), ("SS316L", 0.5)),
}
#: Default in-plane diameter of cracks and delaminations, um.
DEFAULT_EXTENT_UM = {"crack": 100.0, "delamination": 200.0}


# ============================================================================ tasks


@dataclass(frozen=True)
class Task:
    """A detection task.

    Attributes
    ----------
    kind : {"void", "crack", "delamination", "inclusion"}
    size_um : float
        The size ``a`` of POD(a): the **diameter** of a void/inclusion, the **opening** (gap) of a
        crack or delamination.
    host, fill : str
        Materials of :mod:`twin.materials` around and inside the defect.
    extent_um : float
        In-plane diameter of a crack/delamination disc (0 for voids).
    normal : {"x", "z"}
        Normal of a crack/delamination disc: in the x-y plane (radial, e.g. a wound electrode)
        or along the rotation axis (a flat stack scanned lying down).
    path : tuple of (material, length_mm)
        Attenuating path of a ray through the sample to the defect.
    text : str
        The string parsed.
    """

    kind: str
    size_um: float
    host: str
    fill: str
    extent_um: float = 0.0
    normal: str = "x"
    path: tuple[tuple[str, float], ...] = ()
    text: str = ""

    def with_size(self, size_um: float) -> "Task":
        return Task(self.kind, float(size_um), self.host, self.fill, self.extent_um, self.normal,
                    self.path, self.text)

    def describe(self) -> str:
        p = " + ".join(f"{m} {l:g} mm" for m, l in self.path) or "none"
        ext = f", extent {self.extent_um:g} um, normal {self.normal}" if self.extent_um else ""
        return (f"{self.kind} {self.size_um:g} um in {self.host} filled with {self.fill}{ext}; "
                f"path {p}")


_LEN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(um|µm|mm)?\s*$")
TASK_SYNTAX = ("KIND:SIZEum@HOST[(FILL)][;fill=MAT][;path=MAT:LENmm+MAT:LENmm][;extent=200um]"
               "[;normal=x|z], e.g. 'void:15um@cathode', 'delamination:5um@nimh_positive', "
               "'crack:3um@lfp_cathode(air);extent=80um'")


def _length(text: str, what: str, default_unit: str) -> float:
    m = _LEN.match(text)
    if not m:
        raise XrmInputError(f"{what}: cannot read a length from {text!r} (write e.g. 15um or 2.5mm)")
    v = float(m.group(1))
    unit = m.group(2) or default_unit
    v = v * 1000.0 if unit == "mm" and default_unit == "um" else v
    v = v / 1000.0 if unit in ("um", "µm") and default_unit == "mm" else v
    if not v > 0:
        raise XrmInputError(f"{what} must be > 0, got {text!r}")
    return v


def _material(name: str, what: str) -> str:
    key = HOST_ALIASES.get(name.strip().lower(), name.strip())
    try:
        return get_material(key).name
    except XrmInputError:
        raise unknown(what, name, list(named_materials()) + list(HOST_ALIASES)) from None


def parse_task(text: str) -> Task:
    """Parse a task string (see :data:`TASK_SYNTAX`).

    Raises
    ------
    XrmInputError
        Malformed text, an unknown kind or material, a non-positive size; the message shows
        the syntax.
    """
    if not isinstance(text, str) or "@" not in text or ":" not in text.split("@")[0]:
        raise XrmInputError(f"task {text!r} is not of the form {TASK_SYNTAX}")
    head, *opts = [p.strip() for p in text.split(";")]
    what, where = head.split("@", 1)
    kind, size = what.split(":", 1)
    kind = kind.strip().lower()
    if kind not in TASK_KINDS:
        raise unknown("task kind", kind, TASK_KINDS)
    size_um = _length(size, f"size of task {text!r}", "um")
    fill = None
    m = re.match(r"^\s*([^()]+?)\s*(?:\(\s*([^()]+?)\s*\))?\s*$", where)
    if not m:
        raise XrmInputError(f"task {text!r}: cannot read HOST[(FILL)] from {where!r}; syntax {TASK_SYNTAX}")
    host = _material(m.group(1), "host material")
    if m.group(2):
        fill = _material(m.group(2), "fill material")
    extent = DEFAULT_EXTENT_UM.get(kind, 0.0)
    normal = "x"
    path = DEFAULT_PATHS.get(host)
    for opt in opts:
        if not opt:
            continue
        if "=" not in opt:
            raise XrmInputError(f"task option {opt!r} must be key=value (fill, path, extent, normal)")
        k, v = (s.strip() for s in opt.split("=", 1))
        if k == "fill":
            fill = _material(v, "fill material")
        elif k == "extent":
            extent = _length(v, "task extent", "um")
        elif k == "normal":
            if v not in ("x", "z"):
                raise XrmInputError(f"task normal must be x (in the x-y plane) or z, got {v!r}")
            normal = v
        elif k == "path":
            items = []
            for part in v.split("+"):
                if ":" not in part:
                    raise XrmInputError(f"task path item {part!r} must be MATERIAL:LENGTH (e.g. Al:0.1mm)")
                mname, ln = part.rsplit(":", 1)
                items.append((_material(mname, "path material"), _length(ln, f"path length of {mname}", "mm")))
            path = tuple(items)
        else:
            raise unknown("task option", k, ("fill", "path", "extent", "normal"))
    if fill is None:
        fill = DEFAULT_FILL.get(host, "air") if kind != "inclusion" else None
        if fill is None:
            raise XrmInputError(f"an inclusion needs its material: {kind}:{size}@{host}(MATERIAL)")
    if path is None:
        raise XrmInputError(f"no default path for host {host!r}; give one, e.g. "
                            f"';path={host}:2mm' (materials and lengths a ray crosses)")
    if kind in ("void", "inclusion"):
        extent = 0.0
    elif extent <= size_um:
        raise XrmInputError(f"task extent ({extent:g} um) must exceed the opening ({size_um:g} um)")
    return Task(kind, size_um, host, fill, float(extent), normal, tuple(path), text)


# ============================================================================ settings


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = [p for p in key.split(".") if p]
    if len(parts) == 1:
        if parts[0] not in SCHEMA[""]:
            allowed = list(SCHEMA[""]) + [f"{s}.{k}" for s in SECTIONS for k in SCHEMA[s]]
            raise unknown("parameter", key, allowed)
        d[parts[0]] = value
        return
    section = parts[0]
    if section not in SECTIONS:
        allowed = [f"{s}.{k}" for s in SECTIONS for k in SCHEMA[s]]
        raise unknown("parameter", key, allowed)
    if section not in ("phantom", "recon") and parts[1] not in SCHEMA[section]:
        raise unknown(f"parameter in [{section}]", key, [f"{section}.{k}" for k in SCHEMA[section]])
    node = d.setdefault(section, {})
    for k in parts[1:-1]:
        node = node.setdefault(k, {})
    node[parts[-1]] = value


def row_specs(base: ScanSpec, rows: Iterable[Mapping[str, Any]], *, trusted: bool = False
              ) -> list[ScanSpec]:
    """One validated :class:`ScanSpec` per row of ``{"source.kvp": 80, ...}`` overrides.

    ``trusted=True`` (rows built by the optimiser from known keys and well-typed values) skips
    the schema validation and only replaces the section entries (much faster).
    """
    if trusted:
        import dataclasses

        out = []
        for row in rows:
            secs = {s: None for s in ("source", "geometry", "detector")}
            for k, v in row.items():
                sec, key = k.split(".", 1)
                if secs.get(sec) is None:
                    secs[sec] = dict(getattr(base, sec))
                secs[sec][key] = v
            spec = dataclasses.replace(base, **{k: v for k, v in secs.items() if v is not None})
            check_ranges(spec, row.keys())
            out.append(spec)
        return out
    raw = base.to_toml_dict()
    out = []
    for row in rows:
        d = copy.deepcopy(raw)
        for k, v in row.items():
            _set_dotted(d, k, v)
        spec = validate(d, base.origin)
        check_ranges(spec, row.keys())
        out.append(spec)
    return out


def check_ranges(spec: ScanSpec, keys: Iterable[str] | None = None) -> None:
    """Refuse values outside the instrument's range, naming the allowed range.

    ``keys``: the dotted keys to check (those a sweep row or the optimiser sets); ``None``
    checks all of :data:`INSTRUMENT_RANGES`. The scenario's own values are the simulator's to
    accept: a preview scenario binned 8x (``quickstart``) is swept and optimised like any other,
    while a row proposing ``geometry.binning = 8`` is refused.
    """
    s, g, d = spec.source, spec.geometry, spec.detector
    wanted = set(INSTRUMENT_RANGES) if keys is None else set(keys)

    def bad(key: str, value: Any) -> XrmInputError:
        return XrmInputError(f"{key} = {value!r} is outside the instrument's range; allowed: "
                             f"{INSTRUMENT_RANGES[key]}")

    checks = {
        "source.kvp": (s["kvp"], s["monochromatic_kev"] is not None
                       or KVP_RANGE[0] <= float(s["kvp"]) <= KVP_RANGE[1]),
        "source.power_w": (s["power_w"], 0 < float(s["power_w"]) <= MAX_POWER_W),
        "geometry.objective": (g["objective"], g["objective"] in OBJECTIVES),
        "geometry.binning": (g["binning"], g["binning"] in BINNINGS),
        "geometry.projections": (g["projections"], 1 <= int(g["projections"]) <= 20000),
        "detector.exposure_s": (d["exposure_s"], 0 < float(d["exposure_s"]) <= 600),
        "detector.frames": (d["frames"], 1 <= int(d["frames"]) <= 100),
    }
    for key, (value, ok) in checks.items():
        if key in wanted and not ok:
            raise bad(key, value)
    if "source.filter" in wanted and isinstance(s["filter"], str):
        resolve_filter(s["filter"], s["filter_overrides"])


# ============================================================================ instrument


@lru_cache(maxsize=512)
def _spectrum_per_watt(kvp: float, bin_kev: float, target_um: float, filt: str, overrides: str,
                       mono_kev: float | None, mono_flux: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies and photons/s/sr per bin per watt after window and filter (mono: per beam)."""
    layers = resolve_filter(json.loads(filt), json.loads(overrides))
    if mono_kev is not None:
        sp = monochromatic_spectrum(mono_kev, mono_flux)
    else:
        sp = tube_spectrum(kvp, 1.0, bin_kev=bin_kev, target_thickness_um=target_um)
    return sp.energy_kev, sp.photons_per_s_sr * stack_transmission(layers, sp.energy_kev)


@lru_cache(maxsize=64)
def _mu(name: str, energies: tuple[float, ...]) -> np.ndarray:
    return get_material(name).mu_per_mm(np.asarray(energies))


def _spectrum_key(spec: ScanSpec) -> tuple:
    s = spec.source
    mono = s["monochromatic_kev"]
    return (float(s["kvp"]), float(s["energy_bin_kev"]), float(s["target_thickness_um"]),
            json.dumps(s["filter"], sort_keys=True), json.dumps(s["filter_overrides"], sort_keys=True),
            None if mono is None else float(mono), float(s["monochromatic_photons_per_s_sr"]))


@dataclass
class _Row:
    spec_key: tuple
    det_key: str
    power_w: float
    flux_scale: float
    mono: bool
    omega_sr: float
    exposure_s: float
    frames: int
    views: int
    voxel_mm: float
    sigma_src_px: float
    aperture: float
    sigma_screen_px: float
    magnification: float
    scan_time_s: float
    cols: int
    fov_mm: float


@lru_cache(maxsize=256)
def _detector_and_geometry(spec_json: str):
    from twin.plan import resolve_detector, resolve_geometry

    spec = validate(json.loads(spec_json))
    geom = resolve_geometry(spec)
    return geom, resolve_detector(spec, geom)


_GEOM_SKIP = ("projections",)
_DET_SKIP = ("exposure_s", "frames")


def _instrument_json(spec: ScanSpec) -> str:
    """What the detector and geometry depend on (not the source, exposure or views), as JSON."""
    d = {"name": "instrument", "seed": 0,
         "geometry": {k: v for k, v in spec.geometry.items() if k not in _GEOM_SKIP},
         "detector": {k: v for k, v in spec.detector.items() if k not in _DET_SKIP},
         "phantom": {"kind": "parts", "parts": []}}
    d["geometry"]["projections"] = 1
    return json.dumps(d, sort_keys=True)


def _aperture(spec: ScanSpec) -> float:
    """1.0 when the detector pixel integrates over its area (as a real one does, and the twin
    with ``geometry.supersample`` > 1 or ``"auto"`` on voxel phantoms), 0.0 when the twin samples
    one ray per pixel centre (``supersample = 1``; ``"auto"`` on mesh-only ``parts`` scenes)."""
    ss = spec.geometry.get("supersample", 1)
    if isinstance(ss, int):
        return 1.0 if ss > 1 else 0.0
    return 0.0 if spec.phantom.get("kind") == "parts" and not any(
        isinstance(p, Mapping) and p.get("shape") == "labels" for p in spec.phantom.get("parts", [])) else 1.0


def _row(spec: ScanSpec) -> tuple[_Row, Any, Any]:
    ij = _instrument_json(spec)
    geom, det = _detector_and_geometry(ij)
    power = float(spec.source["power_w"])
    vox_mm = geom.voxel_size_um / 1000.0
    d_mm = geom.source_object_mm + geom.object_detector_mm
    if geom.beam == "parallel":
        omega = vox_mm ** 2 / d_mm ** 2
    else:
        omega = (geom.scintillator_pixel_um / 1000.0) ** 2 / d_mm ** 2
    src_px = geom.source_blur_fwhm_um(power) / geom.scintillator_pixel_um / FWHM_PER_SIGMA
    opt_px = 0.0 if det.ideal else det.blur_fwhm_px / FWHM_PER_SIGMA
    if det.ideal:
        src_px = 0.0
    src_px = src_px if src_px > 0.05 else 0.0
    opt_px = opt_px if opt_px > 0.05 else 0.0
    frames = int(spec.detector["frames"])
    return _Row(spec_key=_spectrum_key(spec), det_key=ij, power_w=power,
                flux_scale=float(spec.source["flux_scale"]),
                mono=spec.source["monochromatic_kev"] is not None, omega_sr=omega,
                exposure_s=float(spec.detector["exposure_s"]), frames=frames,
                views=int(spec.geometry["projections"]), voxel_mm=vox_mm,
                sigma_src_px=src_px, sigma_screen_px=opt_px, aperture=_aperture(spec),
                magnification=geom.geometric_magnification,
                scan_time_s=scenario_scan_time_s(spec.geometry, spec.detector), cols=geom.cols,
                fov_mm=geom.field_of_view_mm[0]), geom, det


# ============================================================================ frequency integrals


def _sphere_ft(f: np.ndarray, d_mm: float) -> np.ndarray:
    """Fourier transform (mm^3) of a ball of diameter ``d_mm`` at |f| (cycles/mm)."""
    r = d_mm / 2.0
    x = 2.0 * np.pi * f * r
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(x > 1e-4, 3.0 * (np.sin(x) - x * np.cos(x)) / np.maximum(x, 1e-4) ** 3,
                     1.0 - x * x / 10.0)
    return (4.0 / 3.0) * np.pi * r ** 3 * g


def _disc_ft(f_par: np.ndarray, f_perp: np.ndarray, t_mm: float, d_mm: float) -> np.ndarray:
    """Fourier transform (mm^3) of a disc of thickness ``t_mm`` and diameter ``d_mm``."""
    r = d_mm / 2.0
    x = 2.0 * np.pi * r * f_perp
    with np.errstate(invalid="ignore", divide="ignore"):
        jinc = np.where(x > 1e-6, 2.0 * j1(x) / np.maximum(x, 1e-6), 1.0)
    return np.pi * r * r * t_mm * jinc * np.sinc(t_mm * f_par)


@dataclass
class _Grid:
    fr: np.ndarray  # (G,) cycles/mm, flattened (f_r, f_z) midpoints, f_z >= 0
    fz: np.ndarray
    w: np.ndarray  # 2 pi f_r df^2 x 2 (both signs of f_z)
    fmax: float


def _grid(fmax: float, n: int) -> _Grid:
    df = fmax / n
    f = (np.arange(n) + 0.5) * df
    FR, FZ = np.meshgrid(f, f, indexing="ij")
    return _Grid(FR.ravel(), FZ.ravel(), (2.0 * np.pi * FR * df * df * 2.0).ravel(), fmax)


def _signal_spectra(task: Task, sizes_um: Sequence[float], grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthal means of ``F{s}`` and ``|F{s}|^2`` on the grid, shapes (S, G)."""
    S1 = np.empty((len(sizes_um), grid.fr.size))
    S2 = np.empty_like(S1)
    for i, a in enumerate(sizes_um):
        a_mm = float(a) / 1000.0
        if task.kind in ("void", "inclusion"):
            s = _sphere_ft(np.hypot(grid.fr, grid.fz), a_mm)
            S1[i], S2[i] = s, s * s
        elif task.normal == "z":
            s = _disc_ft(grid.fz, grid.fr, a_mm, task.extent_um / 1000.0)
            S1[i], S2[i] = s, s * s
    if task.kind in ("crack", "delamination") and task.normal != "z":
        # normal in the x-y plane: average over the azimuth (Gauss-Legendre on 0..pi/2); the
        # in-plane (jinc) factor does not depend on the opening, the sinc factor does
        x, wq = np.polynomial.legendre.leggauss(16)
        phi = (x + 1.0) * np.pi / 4.0
        wq = wq / 2.0
        S1[:] = 0.0
        S2[:] = 0.0
        t_mm = np.asarray(sizes_um, float)[:, None] / 1000.0
        for p, wp in zip(phi, wq):
            f_par = grid.fr * np.cos(p)
            f_perp = np.hypot(grid.fr * np.sin(p), grid.fz)
            base = _disc_ft(np.zeros(1), f_perp, 1.0, task.extent_um / 1000.0)  # t = 1 mm, no sinc
            s = base[None, :] * t_mm * np.sinc(t_mm * f_par[None, :])
            S1 += wp * s
            S2 += wp * s * s
    return S1, S2


def gaussian_filter_transfer(nu: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """Transfer of :func:`scipy.ndimage.gaussian_filter` (``truncate=4``) at ``nu`` cycles/pixel.

    The twin blurs sampled images with this discrete kernel (radius ``int(4 sigma + 0.5)``), so
    a blur of a fraction of a pixel does almost nothing; the continuous Gaussian would not say so.
    ``sigma_px`` broadcasts against ``nu``; sigma 0 gives 1.
    """
    sigma_px = np.asarray(sigma_px, float)
    nu = np.asarray(nu, float)
    out = np.ones(np.broadcast_shapes(nu.shape, sigma_px.shape))
    smax = float(np.max(sigma_px)) if sigma_px.size else 0.0
    if smax <= 0:
        return out
    rmax = int(4.0 * smax + 0.5)
    k = np.arange(rmax + 1, dtype=float)
    sig = sigma_px[..., None]
    radius = np.floor(4.0 * sig + 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where((k <= radius) & (sig > 0), np.exp(-0.5 * k * k / np.maximum(sig, 1e-12) ** 2), 0.0)
    w[..., 0] = 1.0
    norm = w[..., 0] + 2.0 * w[..., 1:].sum(axis=-1)
    h = w[..., 0] * np.ones(out.shape)
    for j in range(1, rmax + 1):
        h = h + 2.0 * w[..., j] * np.cos(2.0 * np.pi * nu * j)
    return np.where(sigma_px > 0, h / norm, 1.0)


def _integrals(voxel_mm: np.ndarray, src_px: np.ndarray, scr_px: np.ndarray, aperture: np.ndarray,
               S1: np.ndarray, S2: np.ndarray, grid: _Grid, chunk: int = 8) -> dict[str, np.ndarray]:
    """Frequency integrals per distinct (voxel, blur) row; arrays of shape (U, S) or (U,)."""
    U = voxel_mm.size
    out = {k: np.empty((U, S1.shape[0])) for k in ("J0", "Jq", "Jr", "P0")}
    out.update({k: np.empty(U) for k in ("Kq", "Kr")})
    fr, fz, w = grid.fr[None], grid.fz[None], grid.w[None]
    for u0 in range(0, U, chunk):
        sl = slice(u0, min(U, u0 + chunk))
        d = voxel_mm[sl, None]
        band = (fr <= 0.5 / d) & (fz <= 0.5 / d)
        si = np.sinc(fr * d) * np.sinc(fz * d)
        hs = (gaussian_filter_transfer(fr * d, src_px[sl, None])
              * gaussian_filter_transfer(fz * d, src_px[sl, None]))
        ho = (gaussian_filter_transfer(fr * d, scr_px[sl, None])
              * gaussian_filter_transfer(fz * d, scr_px[sl, None]))
        # pixel aperture (area integration of the signal; not of the counted quanta' noise)
        ap = np.where(aperture[sl, None] > 0, si, 1.0)
        ttf = hs * ho * si * si * ap * band
        g_scr2 = ho * ho
        nps_r = fr * si ** 4 * band * w
        nps_q = nps_r * g_scr2
        t2w = ttf * ttf * w
        out["J0"][sl] = t2w @ S2.T
        out["Jq"][sl] = (t2w * (fr * si ** 4 * g_scr2)) @ S2.T
        out["Jr"][sl] = (t2w * (fr * si ** 4)) @ S2.T
        out["P0"][sl] = (ttf * w) @ S1.T
        out["Kq"][sl] = nps_q.sum(axis=1)
        out["Kr"][sl] = nps_r.sum(axis=1)
    return out


# ============================================================================ model


def dprime_threshold(p_false_call: float = 1e-4) -> float:
    """Decision threshold on the observer's response: ``Phi^-1(1 - p_fa)``."""
    if not 0 < p_false_call < 0.5:
        raise XrmInputError(f"false-call probability must be in (0, 0.5), got {p_false_call}")
    return float(ndtri(1.0 - p_false_call))


def pod_from_dprime(dprime: np.ndarray | float, p_false_call: float = 1e-4) -> np.ndarray:
    """POD = Phi(d' - d'_th) (a-hat model with unit-variance response)."""
    return ndtr(np.asarray(dprime, float) - dprime_threshold(p_false_call))


def _path_arrays(task: Task, energies: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = tuple(np.round(energies, 6).tolist())
    tau = np.zeros(energies.size)
    for m, length in task.path:
        tau += _mu(m, key) * length
    dmu = _mu(task.fill, key) - _mu(task.host, key)
    return np.exp(-tau), dmu, tau


def evaluate(base: ScanSpec, rows: Sequence[Mapping[str, Any]] | None, task: Task | str, *,
             specs: Sequence[ScanSpec] | None = None, a90: bool = False, trusted: bool = False,
             p_false_call: float = 1e-4, grid_n: int = 320) -> dict[str, np.ndarray]:
    """Score settings for a task with the fast model.

    Parameters
    ----------
    base : ScanSpec
        The scenario the rows modify.
    rows : sequence of dict
        Overrides per setting, ``{"source.kvp": 80, "geometry.projections": 1601, ...}``;
        None for the base alone.
    task : Task or str
        A :class:`Task` or a task string (:func:`parse_task`).
    specs : sequence of ScanSpec, optional
        Already-resolved settings (instead of ``rows``).
    a90 : bool
        Also compute ``a90_um`` (the size detected with POD 0.9; inf beyond 8 x the task size).
    p_false_call : float
        False-call probability per independent location (sets the POD threshold).
    grid_n : int
        Frequency-grid points per axis.

    Returns
    -------
    dict of ndarray, shape (n_settings,)
        ``cnr`` (peak CNR of the defect), ``d_prime`` (NPW), ``pod``, ``auc``, ``scan_time_h``,
        ``delta_mu_per_mm``, ``sigma_voxel_per_mm``, ``voxel_um``, ``resolution_fwhm_um``,
        ``transmission``, ``hardening`` (beam hardening along the path: ``1 - <tau>_exit /
        <tau>_entrance``, the relative drop of the path's effective attenuation from the
        detected spectrum without to with the sample; cupping and streaks grow with it), ``detected_mean_kev``, ``quanta_per_pixel_view`` (absorbed, through
        the path), ``flat_full_well_fraction`` (> 1: saturated flat), ``views``, ``exposure_s``,
        ``fov_mm``; with ``a90``: ``a90_um``.
    """
    task = parse_task(task) if isinstance(task, str) else task
    if specs is None:
        specs = [base] if rows is None else row_specs(base, rows, trusted=trusted)
    if not specs:
        raise XrmInputError("no settings to evaluate")
    resolved = [_row(s) for s in specs]
    R = len(resolved)
    # ---- spectral sums per (spectrum, detector) group, per unit of (power x omega x t x frames)
    groups: dict[tuple, list[int]] = {}
    for i, (r, _, _) in enumerate(resolved):
        groups.setdefault((r.spec_key, r.det_key), []).append(i)
    s1 = np.empty(R); s2 = np.empty(R); flat1 = np.empty(R); dmu = np.empty(R)
    q1 = np.empty(R); emean = np.empty(R); trans = np.empty(R); hard = np.empty(R)
    k = np.empty(R); swank = np.empty(R); read2 = np.empty(R); dark = np.empty(R)
    gain = np.empty(R); full_well = np.empty(R); ideal = np.zeros(R, bool)
    for (skey, _), idx in groups.items():
        det = resolved[idx[0]][2]
        energy, per_w = _spectrum_per_watt(*skey)
        T, dm, tau = _path_arrays(task, energy)
        eta = det.absorption(energy)
        ne = per_w * eta
        a_s1 = float(np.sum(ne * energy * T))
        if a_s1 <= 0:
            a_s1 = 1e-300
        s1[idx] = a_s1
        s2[idx] = np.sum(ne * energy ** 2 * T)
        q1[idx] = np.sum(ne * T)
        flat1[idx] = np.sum(ne * energy)
        dmu[idx] = np.sum(ne * energy * T * dm) / a_s1
        emean[idx] = a_s1 / max(float(np.sum(ne * T)), 1e-300)
        trans[idx] = a_s1 / max(float(np.sum(ne * energy)), 1e-300)
        # beam hardening: drop of the marginal attenuation of the path from entrance to exit
        tau_in = np.sum(ne * energy * tau) / max(float(np.sum(ne * energy)), 1e-300)
        tau_out = np.sum(ne * energy * T * tau) / a_s1
        hard[idx] = 1.0 - tau_out / tau_in if tau_in > 0 else 0.0
        ideal[idx] = det.ideal
        k[idx] = 1.0 if det.ideal else det.electrons_per_kev
        swank[idx] = det.swank_screen
        read2[idx] = 0.0 if det.ideal else det.read_noise_e ** 2
        dark[idx] = 0.0 if det.ideal else det.dark_e_per_s
        gain[idx] = det.gain_e_per_adu
        full_well[idx] = np.inf if det.ideal else det.full_well_e
    rr = [r for r, _, _ in resolved]
    power = np.array([1.0 if r.mono else r.power_w for r in rr]) * np.array([r.flux_scale for r in rr])
    omega = np.array([r.omega_sr for r in rr])
    t = np.array([r.exposure_s for r in rr])
    frames = np.array([r.frames for r in rr], float)
    views = np.array([r.views for r in rr], float)
    c = power * omega * t * frames  # photons-per-(sr s W) -> per pixel per view
    S = k * s1 * c  # signal electrons per view (all frames)
    var_q = c * (k * k * s2 / swank + k * s1)
    var_r = frames * read2 + frames * t * dark + frames ** 2 * gain ** 2 / 12.0
    var_q = np.where(ideal, 0.0, var_q)
    var_r = np.where(ideal, 0.0, var_r)
    sq2 = var_q / S ** 2  # line-integral variance, quantum part
    sr2 = var_r / S ** 2
    flat_fraction = k * flat1 * power * omega * t / full_well
    # ---- frequency integrals per distinct (voxel, blur) pair
    vox = np.array([r.voxel_mm for r in rr])
    sig = np.array([r.sigma_src_px for r in rr])
    scr = np.array([r.sigma_screen_px for r in rr])
    apt = np.array([r.aperture for r in rr])
    keys = np.round(np.stack([vox, sig, scr, apt], 1), 12)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.ravel()
    sizes = [task.size_um]
    if a90:
        sizes = list(task.size_um * 2.0 ** np.linspace(-3, 3, 19))
    extent_mm = max(task.size_um, task.extent_um) / 1000.0
    fmax = 0.5 / uniq[:, 0].min()
    n = int(max(grid_n, min(2000, math.ceil(fmax * extent_mm * 3))))
    grid = _grid(fmax, n)
    S1, S2 = _signal_spectra(task, sizes, grid)
    I = _integrals(uniq[:, 0], uniq[:, 1], uniq[:, 2], uniq[:, 3], S1, S2, grid)
    J0, Jq, Jr, P0 = (I[x][inv] for x in ("J0", "Jq", "Jr", "P0"))
    Kq, Kr = I["Kq"][inv], I["Kr"][inv]
    d = vox
    pref = (math.pi / views) * d * d  # NPS = pref * sigma_p^2 * shape
    var_vox = pref * (sq2 * Kq + sr2 * Kr) * FDK_ALIAS_FACTOR  # (1/mm)^2
    # the aliased part of the noise lies at in-plane frequencies beyond 1/(2 d) (the corners
    # of the voxel grid's band), where the task's W^2 TTF^2 is negligible: it adds to the
    # voxel variance (CNR) but not to the NPW denominator
    den = pref[:, None] * (sq2[:, None] * Jq + sr2[:, None] * Jr)
    with np.errstate(divide="ignore", invalid="ignore"):
        dprime_all = np.where(den > 0, np.abs(dmu)[:, None] * J0 / np.sqrt(den), np.inf)
        cnr = None
    i0 = 0 if not a90 else int(np.argmin(np.abs(np.asarray(sizes) - task.size_um)))
    # 1/d'^2 = (A / t + B / t^2) / N for one frame per view: A holds the quantum noise and the
    # dark current, B the read noise and quantisation (for the optimiser's closed-form solve)
    with np.errstate(divide="ignore", invalid="ignore"):
        g2 = (np.abs(dmu) * J0[:, i0]) ** 2
        unit = (math.pi * d * d) / g2  # pref x N / (dmu J0)^2
        A_coef = unit * (sq2 * t * Jq[:, i0] + (frames * t * dark / S ** 2) * t * Jr[:, i0])
        B_coef = unit * ((frames * read2 + frames ** 2 * gain ** 2 / 12.0) / S ** 2) * t * t * Jr[:, i0]
        A_coef = np.where(ideal, 0.0, A_coef)
        B_coef = np.where(ideal, 0.0, B_coef)
    dprime = dprime_all[:, i0]
    with np.errstate(divide="ignore", invalid="ignore"):
        cnr = np.where(var_vox > 0, np.abs(dmu) * np.abs(P0[:, i0]) / np.sqrt(var_vox), np.inf)
    out = {
        "cnr": cnr, "d_prime": dprime, "pod": pod_from_dprime(dprime, p_false_call),
        "auc": ndtr(dprime / math.sqrt(2.0)),
        "scan_time_h": np.array([r.scan_time_s for r in rr]) / 3600.0,
        "delta_mu_per_mm": dmu, "sigma_voxel_per_mm": np.sqrt(var_vox),
        "voxel_um": vox * 1000.0,
        "resolution_fwhm_um": np.hypot(sig, scr) * vox * 1000.0 * FWHM_PER_SIGMA,
        "transmission": trans, "hardening": hard, "detected_mean_kev": emean, "quanta_per_pixel_view": q1 * c,
        "flat_full_well_fraction": flat_fraction, "views": views, "exposure_s": t,
        "fov_mm": np.array([r.fov_mm for r in rr]), "columns": np.array([r.cols for r in rr]),
        "inv_d2_A": A_coef, "inv_d2_B": B_coef,
    }
    if a90:
        target = dprime_threshold(p_false_call) + Z90
        la = np.log(np.asarray(sizes))
        a90v = np.full(R, np.inf)
        for i in range(R):
            dp = dprime_all[i]
            above = np.nonzero(dp >= target)[0]
            if above.size == 0:
                continue
            j = above[0]
            if j == 0:
                a90v[i] = sizes[0]
                continue
            x0, x1 = math.log(max(dp[j - 1], 1e-300)), math.log(dp[j])
            fr_ = (math.log(target) - x0) / (x1 - x0) if x1 > x0 else 1.0
            a90v[i] = math.exp(la[j - 1] + fr_ * (la[j] - la[j - 1]))
        out["a90_um"] = a90v
    return out
