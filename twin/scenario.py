"""Scenario files (TOML) validated into a frozen :class:`ScanSpec`.

Every key, its type, default and meaning is declared once in :data:`SCHEMA`; ``docs/scenarios.md``
is generated from it. A misspelt key, a wrong type or a missing unit is an
:class:`~twin.errors.XrmInputError` naming the file, the key, the value given and what is allowed
(with a "did you mean"). ``--set key=value`` overrides go through the same checks.

Phantom-specific keys (``[phantom]`` other than the ones below, e.g. ``cycles`` or
``[phantom.foam]``) are passed to the phantom builder, which validates them.
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from twin.errors import XrmInputError, close_matches, unknown

NUM = (int, float)

# section -> key -> (types, default, description). A default of REQUIRED must be given.
REQUIRED = object()
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any, str]]] = {
    "": {
        "name": ((str,), "scenario", "scenario name"),
        "description": ((str,), "", "free text"),
        "seed": ((int,), 0, "seed of every random draw (noise, phantom microstructure)"),
    },
    "source": {
        "kvp": (NUM, 100.0, "tube voltage, kV (30-160)"),
        "power_w": (NUM, 10.0, "tube power, W (<= 25); current = power / kV"),
        "filter": ((str, list), "Air", "Air, LE1-LE6, HE1-HE6 or [{material, thickness_mm}]"),
        "filter_overrides": ((dict,), {}, "name -> custom stack replacing a library filter"),
        "monochromatic_kev": (NUM + (type(None),), None, "monochromatic beam energy, keV"),
        "monochromatic_photons_per_s_sr": (NUM, 1e11, "flux of the monochromatic beam"),
        "energy_bin_kev": (NUM, 1.0, "spectrum bin width, keV"),
        "target_thickness_um": (NUM, 5.0, "tungsten transmission-target thickness, um"),
        "flux_scale": (NUM, 1.0, "calibration factor on the SpekPy flux"),
    },
    "geometry": {
        "source_object_mm": (NUM, REQUIRED, "source to rotation axis, mm"),
        "object_detector_mm": (NUM, REQUIRED, "rotation axis to scintillator, mm"),
        "objective": ((str,), "0.4x", "0.4x, 4x, 20x, 40x or flat-panel"),
        "binning": ((int,), 1, "camera binning"),
        "projections": ((int,), 1601, "number of views"),
        "arc_deg": (NUM, 360.0, "angular range, degrees"),
        "start_deg": (NUM, 0.0, "angle of the first view, degrees"),
        "beam": ((str,), "cone", "cone or parallel"),
        "axis_offset_mm": (NUM, 0.0, "rotation-axis shift along x at the object, mm"),
        "axis_tilt_deg": (NUM, 0.0, "rotation-axis tilt in the detector plane, degrees"),
        "detector_offset_px": ((list,), [0.0, 0.0], "detector shift (columns, rows), pixels"),
        "supersample": ((int, str), "auto", "rays per pixel along each axis (1-8), or \"auto\": "
                        "enough rays that their spacing at the object is at most the finest grid "
                        "voxel (capped at 8)"),
        "sample_center_mm": ((list, type(None)), None,
                             "sample point (x, y, z) put on the rotation axis at the beam centre, mm; "
                             "default: the VOI centre, else the phantom's centre"),
    },
    "detector": {
        "pixels": ((list,), [512, 512], "columns, rows after binning"),
        "pixel_um": (NUM, 13.5, "camera (or flat-panel) pixel before binning, um"),
        "scintillator": ((dict, type(None)), None,
                         "{material, thickness_um}; default depends on the objective"),
        "exposure_s": (NUM, 1.0, "exposure per frame, s"),
        "frames": ((int,), 1, "frames averaged per view"),
        "readout_s": (NUM, 0.5, "read-out and step time per frame, s (scan-time model)"),
        "ideal": ((bool,), False, "noiseless, unblurred, perfect energy-integrating absorber"),
        "noise": ((bool,), True, "false: expected (noiseless) ADU with the real screen and blur"),
        "electrons_per_kev": (NUM + (type(None),), None, "conversion gain, e-/keV (default: "
                              "light yield x NA^2/(4 n^2) x QE)"),
        "camera_qe": (NUM, 0.6, "camera quantum efficiency"),
        "swank_screen": (NUM, 0.9, "intrinsic Swank factor of the screen"),
        "gain_e_per_adu": (NUM + (type(None),), None, "electrons per ADU (default: full well / 60000)"),
        "read_noise_e": (NUM, 8.0, "read noise, e- rms"),
        "dark_e_per_s": (NUM, 0.01, "dark current, e-/pixel/s"),
        "full_well_e": (NUM + (type(None),), None, "full well of a binned pixel, e- (default 1e5 x binning^2; "
                        "flat panel 4e6)"),
        "bit_depth": ((int,), 16, "ADC bits"),
        "offset_adu": (NUM, 100.0, "bias, ADU"),
        "blur_fwhm_um": (NUM + (type(None),), None, "screen + objective blur FWHM at the screen, um "
                         "(default: Koch et al. formula)"),
        "gain_nonuniformity": (NUM, 0.01, "relative SD of per-pixel gain"),
        "thickness_nonuniformity": (NUM, 0.0, "relative SD of per-pixel screen thickness"),
        "flats": ((int,), 10, "flat-field (reference) frames"),
        "darks": ((int,), 5, "dark frames"),
    },
    "phantom": {
        "kind": ((str,), REQUIRED, "coin_na_ion, pouch_lfp, nimh_aaa or parts"),
        "voi": ((dict, type(None)), None, "{center_mm, size_mm}: region rasterised finely"),
        "voxel_um": (NUM + (type(None),), None, "phantom voxel (default: the scan voxel, >= 0.5 um)"),
        "coarse_voxel_um": (NUM + (type(None),), None, "voxel of the whole-sample grid outside the VOI (default: max(8 x voxel_um, 50 um), "
                            "at most half the thinnest layer of a pouch or coin stack)"),
        "parts": ((list,), [], "kind = parts: meshes and primitives with materials"),
        "seed": ((int, type(None)), None, "seed of the phantom's microstructure (default: the "
                 "scenario seed; give two scans of one cell the same phantom seed and different "
                 "scenario seeds for independent noise)"),
    },
    "recon": {
        "algorithm": ((str,), "fdk", "fdk, fbp, sirt or cgls"),
    },
    "measure": {
        "thickness_maps": ((list, type(None)), None,
                           "components whose local-thickness map is written (TIFF, PLY coloured by "
                           "thickness, map figure); default: the [paper] metrology components, "
                           "else the component of highest surface-to-volume ratio"),
        "render_3d": ((bool,), True, "3-D rendering of the segmented components in the report"),
        "smooth_sigma_vox": (NUM, 1.0, "Gaussian pre-smoothing of the reconstruction for segmentation, "
                             "voxels (0.5 after a denoiser such as recon.denoise = \"nlm\")"),
    },
    "paper": {
        "reference": ((str,), "", "the publication whose scan this scenario reproduces"),
        "voxel_size_um": (NUM + (type(None),), None, "the paper's voxel (pixel) size, um"),
        "metrology": ((dict,), {}, "component -> {quantity: value} the paper reports "
                      "(twin/paper.py lists the quantities)"),
        "stack": ((dict, type(None)), None, "{from, to, thickness_um}: a layer stack's thickness"),
        "particles": ((dict,), {}, "component -> {mean_diameter_um}"),
        "defects": ((dict,), {}, "defect type -> {mean_diameter_um, found}"),
        "notes": ((str,), "", "how the paper's numbers were read"),
    },
}
SECTIONS = [s for s in SCHEMA if s]
PHANTOM_KINDS = ("coin_na_ion", "pouch_lfp", "nimh_aaa", "parts")


def _defaults(section: str) -> dict[str, Any]:
    return {k: copy.deepcopy(d) for k, (_, d, _) in SCHEMA[section].items()}


@dataclass(frozen=True)
class ScanSpec:
    """A validated scenario: one frozen mapping per section plus extras.

    Attributes
    ----------
    name, seed : str, int
    source, geometry, detector, phantom, recon : dict
        Every schema key present (defaults filled in); ``phantom`` also holds the
        phantom-specific keys and ``recon`` the algorithm options.
    measure, paper : dict
        Report options, and the numbers the reproduced paper reports (:mod:`twin.paper`).
    raw : dict
        The scenario as given (after overrides), for provenance.
    """

    name: str
    seed: int
    description: str
    source: Mapping[str, Any]
    geometry: Mapping[str, Any]
    detector: Mapping[str, Any]
    phantom: Mapping[str, Any]
    recon: Mapping[str, Any]
    measure: Mapping[str, Any] = field(default_factory=lambda: _defaults("measure"))
    paper: Mapping[str, Any] = field(default_factory=lambda: _defaults("paper"))
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)
    origin: str = "<memory>"

    def to_toml_dict(self) -> dict[str, Any]:
        """The resolved scenario as a plain dict (defaults filled in)."""
        d = {"name": self.name, "seed": self.seed, "description": self.description}
        for s in SECTIONS:
            d[s] = copy.deepcopy(dict(getattr(self, s)))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_toml_dict(), sort_keys=True, default=str)


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", list: "list", dict: "table",
             bool: "true/false", type(None): "omitted"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check_value(where: str, key: str, value: Any, types: tuple[type, ...]) -> Any:
    if isinstance(value, bool) and bool not in types:
        raise XrmInputError(f"{where}: {key} = {value!r}: expected {_type_name(types)}")
    if not isinstance(value, types):
        hint = ""
        if isinstance(value, str) and NUM[0] in types:
            hint = " (give a plain number; the unit is in the key's name)"
        elif isinstance(value, str) and list in types:
            hint = f" (a list is written in brackets: [{value}])"
        raise XrmInputError(f"{where}: {key} = {value!r}: expected {_type_name(types)}{hint}")
    if isinstance(value, float) and value != value:
        raise XrmInputError(f"{where}: {key} is NaN")
    if isinstance(value, int) and not isinstance(value, bool) and types[0] is int and float in types:
        return float(value)  # numbers (NUM) are stored as float
    return value


def validate(data: Mapping[str, Any], origin: str = "<memory>") -> ScanSpec:
    """Validate a scenario dict into a :class:`ScanSpec` (no physics yet, just keys and types)."""
    if not isinstance(data, Mapping):
        raise XrmInputError(f"{origin}: a scenario must be a TOML table")
    top_allowed = list(SCHEMA[""]) + SECTIONS
    out: dict[str, Any] = {}
    for key in data:
        if key not in top_allowed:
            raise XrmInputError(f"{origin}: " + str(unknown("key", key, top_allowed)))
    for key, (types, default, _) in SCHEMA[""].items():
        out[key] = _check_value(origin, key, data.get(key, default), types)
    for section in SECTIONS:
        given = data.get(section, {})
        if not isinstance(given, Mapping):
            raise XrmInputError(f"{origin}: [{section}] must be a table, got {given!r}")
        resolved: dict[str, Any] = {}
        schema = SCHEMA[section]
        for key, value in given.items():
            if key not in schema:
                if section in ("phantom", "recon"):
                    resolved[key] = copy.deepcopy(value)  # validated by the phantom / recon code
                    continue
                raise XrmInputError(f"{origin}: " + str(unknown(f"key in [{section}]", key, schema)))
            resolved[key] = _check_value(origin, f"{section}.{key}", value, schema[key][0])
        for key, (types, default, _) in schema.items():
            if key not in resolved:
                if default is REQUIRED:
                    raise XrmInputError(f"{origin}: [{section}] needs {key} ({schema[key][2]})")
                resolved[key] = copy.deepcopy(default)
        out[section] = resolved
    kind = out["phantom"]["kind"]
    if kind not in PHANTOM_KINDS:
        raise XrmInputError(f"{origin}: " + str(unknown("phantom.kind", kind, PHANTOM_KINDS)))
    pix = out["detector"]["pixels"]
    if len(pix) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in pix):
        raise XrmInputError(f"{origin}: detector.pixels must be [columns, rows] integers, got {pix!r}")
    if min(pix) < 1:
        raise XrmInputError(f"{origin}: detector.pixels must be >= 1, got {pix!r}")
    _check_voi(out["phantom"].get("voi"), origin)
    from twin.paper import check_paper_table
    from twin.reconstruct import recon_options

    check_paper_table(out["paper"], where=f"{origin}: [paper]")
    try:  # the [recon] keys are known before any work (their values are checked by the stage)
        recon_options(out["recon"])
    except XrmInputError as exc:
        raise XrmInputError(f"{origin}: {exc}") from None
    return ScanSpec(name=out["name"], seed=int(out["seed"]), description=out["description"],
                    source=out["source"], geometry=out["geometry"], detector=out["detector"],
                    phantom=out["phantom"], recon=out["recon"], measure=out["measure"],
                    paper=out["paper"], raw=copy.deepcopy(dict(data)), origin=origin)


VOI_KEYS = ("center_mm", "size_mm")


def _three_numbers(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, NUM) and not isinstance(v, bool) and v == v
                    and abs(v) != float("inf") for v in value))


def _check_voi(voi: Any, origin: str) -> None:
    """``phantom.voi`` (any phantom kind): exactly ``{center_mm = [x, y, z], size_mm = [a, b, c]}``."""
    if voi is None:
        return
    form = "phantom.voi = {center_mm = [x, y, z], size_mm = [a, b, c]}, in mm"
    for key in voi:
        if key not in VOI_KEYS:
            raise XrmInputError(f"{origin}: " + str(unknown("key in phantom.voi", key, VOI_KEYS))
                                + f"; write {form}")
    missing = [k for k in VOI_KEYS if k not in voi]
    if missing:
        raise XrmInputError(f"{origin}: phantom.voi needs {' and '.join(missing)}: {form}")
    for key in VOI_KEYS:
        if not _three_numbers(voi[key]):
            raise XrmInputError(f"{origin}: phantom.voi.{key} must be 3 finite numbers (x, y, z) "
                                f"in mm, got {voi[key]!r}")
    if min(voi["size_mm"]) <= 0:
        raise XrmInputError(f"{origin}: phantom.voi.size_mm must be > 0 along x, y and z, "
                            f"got {voi['size_mm']!r}")


def material_keys(spec: "ScanSpec | Mapping[str, Any]") -> list[tuple[str, Any, Any, str | None]]:
    """Every material a scenario names: (key, material, density or None, density key or None
    where the key takes no density). ``spec`` is a :class:`ScanSpec` or a validated dict."""
    if isinstance(spec, ScanSpec):
        spec = {s: getattr(spec, s) for s in SECTIONS}
    found: list[tuple[str, Any, Any, str | None]] = []

    def layers(items: Any, where: str) -> None:
        if not isinstance(items, (list, tuple)):
            return  # a filter name, or a shape error reported by twin.filters
        for i, item in enumerate(items):
            if isinstance(item, Mapping) and "material" in item:
                found.append((f"{where}[{i}].material", item["material"],
                              item.get("density_g_cm3"), f"{where}[{i}].density_g_cm3"))

    src = spec["source"]
    layers(src.get("filter"), "source.filter")
    overrides = src.get("filter_overrides")
    for name, stack in (overrides.items() if isinstance(overrides, Mapping) else ()):
        layers(stack, f"source.filter_overrides.{name}")
    scint = spec["detector"].get("scintillator")
    if isinstance(scint, Mapping) and "material" in scint:
        found.append(("detector.scintillator.material", scint["material"], None, None))
    ph = spec["phantom"]
    if ph.get("kind") == "parts":
        for i, part in enumerate(ph.get("parts") or ()):
            if not isinstance(part, Mapping):
                continue  # reported by twin.plan
            if part.get("shape") == "labels":
                names = part.get("materials")
                if isinstance(names, (list, tuple)):
                    found += [(f"phantom.parts[{i}].materials[{j}]", n, None, None)
                              for j, n in enumerate(names)]
            elif "material" in part:
                found.append((f"phantom.parts[{i}].material", part["material"],
                              part.get("density_g_cm3"), f"phantom.parts[{i}].density_g_cm3"))
    bh = (spec.get("recon") or {}).get("beam_hardening")
    if isinstance(bh, str) and bh:
        found.append(("recon.beam_hardening", bh, None, None))
    return found


def check_materials(spec: "ScanSpec | Mapping[str, Any]", origin: str | None = None) -> None:
    """Look up every material of a scenario (:func:`material_keys`) so that an unknown one is
    refused naming its key (e.g. ``phantom.parts[0].material``), the close matches and every
    allowed form (:func:`twin.materials.allowed_materials`), before any work.

    :func:`load_scenario` (scenario files and built-ins: ``run``, ``simulate``, ``plan``) and
    :func:`twin.simulate.prepare_simulation` call it. :func:`validate` does not: it checks keys
    and types only, and a ScanSpec built by a reader for provenance may name materials the
    twin does not resolve (a CTSimU file's own names). Where xraydb cannot be imported (a bare
    GPU node) names not resolved before are left to the host that resolves the plan.
    """
    from twin.materials import get_material

    if origin is None:
        origin = spec.origin if isinstance(spec, ScanSpec) else "<memory>"
    for key, name, density, density_key in material_keys(spec):
        try:
            get_material(name, density, key=key, density_key=density_key)
        except ImportError:
            return
        except XrmInputError as exc:
            raise XrmInputError(f"{origin}: {exc}") from None


def builtin_dir() -> Path:
    """Folder of the built-in scenario files."""
    import scenarios

    return Path(scenarios.__file__).parent


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def load_raw(source: str | Path) -> tuple[dict[str, Any], str]:
    """Read a scenario TOML from a path or a built-in name; return (dict, origin)."""
    p = Path(source)
    if not p.suffix and not p.exists():
        candidate = builtin_dir() / f"{source}.toml"
        if candidate.exists():
            p = candidate
        else:
            names = builtin_names()
            hint = close_matches(str(source), names)
            msg = f"no scenario file or built-in named {str(source)!r}"
            if hint:
                msg += f"; did you mean {', '.join(repr(h) for h in hint)}?"
            raise XrmInputError(msg + f"{'' if hint else ';'} Built-ins: {', '.join(names)}")
    if not p.is_file():
        raise XrmInputError(f"scenario file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise XrmInputError(f"{p}: not valid TOML: {exc}") from None
    return data, str(p)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"geometry.projections=100"`` -> (["geometry", "projections"], 100)."""
    if "=" not in text:
        raise XrmInputError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    path = [k.strip() for k in key.strip().split(".") if k.strip()]
    if not path:
        raise XrmInputError(f"--set expects key=value, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return path, parsed


def apply_overrides(data: dict[str, Any], overrides: list[str], origin: str) -> dict[str, Any]:
    """Apply ``--set`` overrides; a key that names nothing in the schema is an error."""
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        if len(path) == 1:
            if path[0] not in SCHEMA[""]:
                allowed = list(SCHEMA[""]) + [f"{s}.{k}" for s in SECTIONS for k in SCHEMA[s]]
                raise XrmInputError(f"--set {text}: " + str(unknown("key", path[0], allowed)))
            data[path[0]] = value
            continue
        section = path[0]
        if section not in SECTIONS:
            raise XrmInputError(f"--set {text}: " + str(unknown("section", section, SECTIONS)))
        if section not in ("phantom", "recon") and path[1] not in SCHEMA[section]:
            raise XrmInputError(f"--set {text}: " + str(unknown(f"key in [{section}]", path[1],
                                                                 SCHEMA[section])))
        node = data.setdefault(section, {})
        for k in path[1:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise XrmInputError(f"--set {text}: {k} is not a table")
        node[path[-1]] = value
    return data


def load_scenario(source: str | Path, overrides: list[str] | None = None) -> ScanSpec:
    """Load, override and validate a scenario (path or built-in name); its materials are
    looked up too (:func:`check_materials`)."""
    data, origin = load_raw(source)
    if overrides:
        data = apply_overrides(data, overrides, origin)
    spec = validate(data, origin)
    check_materials(spec)
    return spec


def schema_markdown() -> str:
    """The schema as a markdown table (docs/scenarios.md)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for section, keys in SCHEMA.items():
        for key, (types, default, doc) in keys.items():
            full = f"{section}.{key}" if section else key
            d = "required" if default is REQUIRED else json.dumps(default)
            lines.append(f"| `{full}` | {_type_name(types)} | {d} | {doc} |")
    return "\n".join(lines)
