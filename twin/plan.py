"""Resolve a :class:`~twin.scenario.ScanSpec` on the host into a :class:`Plan` of arrays.

Everything that needs SpekPy, xraydb, trimesh or the phantom code happens here; the
projector and the detector chain then see only arrays (so a plan runs on CPU or GPU, here or
on a Dask worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from twin.detector import DetectorModel, default_electrons_per_kev, koch_blur_fwhm_um
from twin.errors import XrmInputError, require_positive, unknown
from twin.filters import FilterLayer, resolve_filter
from twin.geometry import OBJECTIVES, ScanGeometry
from twin.materials import get_material
from twin.meshes import MeshPart, PRIMITIVES, load_mesh_file, primitive_triangles
from twin.parts_truth import parts_truth
from twin.scene import Scene
from twin.scenario import ScanSpec
from twin.spectral import prune_bins
from twin.spectrum import Spectrum, monochromatic_spectrum, tube_spectrum
from twin.volume import LabelGrid

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class Plan:
    """A scan resolved into arrays.

    Attributes
    ----------
    spec : ScanSpec
    geometry : ScanGeometry
    spectrum : Spectrum
        Photons per second per steradian per bin, after window and source filter.
    filter_layers : tuple of FilterLayer
    detector : DetectorModel
    energy_kev : ndarray (E,)
        Energy bins kept (those carrying weight).
    weights : ndarray (4, E)
        Detector spectral weights per steradian per frame (see twin.detector).
    mu_per_mm : ndarray (M, E)
        Attenuation of each material slot of the scene.
    scene : Scene
    solid_angle_sr : ndarray (rows, cols)
        Solid angle of each pixel seen from the focal spot (inverse square and obliquity).
    source_blur_sigma_px, optical_blur_sigma_px : float
        Gaussian sigmas in binned detector pixels.
    truth : (LabelGrid, list of dict, ndarray or None), optional
        Ground truth for ``truth.h5`` (labels, defect rows, instances) in the sample frame:
        the battery phantom's, or for ``kind = "parts"`` the rasterised parts
        (:func:`twin.parts_truth.parts_truth`). None when resolved without a scene.
    phantom_recipe : dict, optional
        Set on a plan read from a ``phantom="recipe"`` plan file, whose ``scene`` is None until
        :func:`twin.planfile.materialise` rebuilds it.
    """

    spec: ScanSpec
    geometry: ScanGeometry
    spectrum: Spectrum
    filter_layers: tuple[FilterLayer, ...]
    detector: DetectorModel
    energy_kev: np.ndarray
    weights: np.ndarray
    mu_per_mm: np.ndarray
    scene: Scene | None
    solid_angle_sr: np.ndarray
    source_blur_sigma_px: float
    optical_blur_sigma_px: float
    truth: Any = None
    sample_center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    supersample: int = 1
    phantom_recipe: Any = None

    @property
    def exposure_s(self) -> float:
        return float(self.spec.detector["exposure_s"])

    @property
    def frames(self) -> int:
        return int(self.spec.detector["frames"])

    def bytes_per_view_chunk(self, n_views: int) -> int:
        """Working memory of ``n_views`` views in flight (path lengths + sums + output)."""
        g = self.geometry
        m = max(len(self.scene.materials) if self.scene is not None else 0, 1)
        return int(n_views * g.rows * g.cols * 4 * (m + 4 + 4))


def resolve_geometry(spec: ScanSpec) -> ScanGeometry:
    g, d = spec.geometry, spec.detector
    off = g["detector_offset_px"]
    if len(off) != 2:
        raise XrmInputError(f"geometry.detector_offset_px must be [columns, rows], got {off!r}")
    return ScanGeometry(
        source_object_mm=g["source_object_mm"], object_detector_mm=g["object_detector_mm"],
        objective=g["objective"], binning=g["binning"], pixel_um=d["pixel_um"],
        cols=d["pixels"][0], rows=d["pixels"][1], n_views=g["projections"], arc_deg=g["arc_deg"],
        start_deg=g["start_deg"], beam=g["beam"], axis_offset_mm=g["axis_offset_mm"],
        axis_tilt_deg=g["axis_tilt_deg"], detector_offset_px=(float(off[0]), float(off[1])))


def resolve_spectrum(spec: ScanSpec) -> tuple[Spectrum, tuple[FilterLayer, ...]]:
    s = spec.source
    layers = resolve_filter(s["filter"], s["filter_overrides"])
    if s["monochromatic_kev"] is not None:
        spec_ = monochromatic_spectrum(s["monochromatic_kev"], s["monochromatic_photons_per_s_sr"])
    else:
        spec_ = tube_spectrum(s["kvp"], s["power_w"], bin_kev=s["energy_bin_kev"],
                              target_thickness_um=s["target_thickness_um"])
    scale = require_positive("source.flux_scale", s["flux_scale"])
    spec_ = spec_.filtered(layers)
    return Spectrum(spec_.energy_kev, spec_.photons_per_s_sr * scale, spec_.bin_kev, spec_.kvp,
                    spec_.power_w), layers


def resolve_detector(spec: ScanSpec, geometry: ScanGeometry) -> DetectorModel:
    d = spec.detector
    obj = OBJECTIVES[geometry.objective]
    if d["ideal"]:
        return DetectorModel(ideal=True, scintillator=None)
    scint = d["scintillator"] or {"material": obj["scintillator"][0],
                                  "thickness_um": obj["scintillator"][1]}
    extra = set(scint) - {"material", "thickness_um"}
    if extra:
        raise unknown("key in detector.scintillator", sorted(extra)[0], ["material", "thickness_um"])
    if "material" not in scint or "thickness_um" not in scint:
        raise XrmInputError("detector.scintillator needs material and thickness_um (um), "
                            f"got {scint!r}")
    mat = get_material(scint["material"])
    t_um = require_positive("detector.scintillator.thickness_um", scint["thickness_um"])
    k = d["electrons_per_kev"]
    if k is None:
        k = default_electrons_per_kev(mat.name, obj["na"], d["camera_qe"])
    full_well = d["full_well_e"]
    if full_well is None:
        full_well = 4e6 if geometry.objective == "flat-panel" else 1e5 * geometry.binning ** 2
    gain = d["gain_e_per_adu"] if d["gain_e_per_adu"] is not None else max(full_well / 60000.0, 0.1)
    blur_um = d["blur_fwhm_um"] if d["blur_fwhm_um"] is not None else koch_blur_fwhm_um(obj["na"], t_um)
    blur_px = float(blur_um) / geometry.scintillator_pixel_um
    return DetectorModel(ideal=False, scintillator=mat, scintillator_um=t_um, electrons_per_kev=k,
                         swank_screen=d["swank_screen"], gain_e_per_adu=gain,
                         read_noise_e=d["read_noise_e"], dark_e_per_s=d["dark_e_per_s"],
                         full_well_e=full_well, bit_depth=d["bit_depth"], offset_adu=d["offset_adu"],
                         blur_fwhm_px=blur_px, gain_nonuniformity=d["gain_nonuniformity"],
                         thickness_nonuniformity=d["thickness_nonuniformity"])


def pixel_solid_angle_sr(geometry: ScanGeometry) -> np.ndarray:
    """Solid angle of each detector pixel seen from the source, shape (rows, cols), sr.

    Cone beam: ``A D / R^3`` (area A at the scintillator, D = a + b on axis, R the distance to
    the pixel): inverse square and obliquity. Parallel beam: ``A / D^2`` everywhere, with A the
    pixel area at the object (a parallel beam of the same flux density as on axis).
    """
    d_mm = geometry.source_object_mm + geometry.object_detector_mm
    if geometry.beam == "parallel":
        area = (geometry.voxel_size_um / 1000.0) ** 2
        return np.full((geometry.rows, geometry.cols), area / d_mm ** 2)
    p = geometry.scintillator_pixel_um / 1000.0
    cu = (np.arange(geometry.cols) - (geometry.cols - 1) / 2 + geometry.detector_offset_px[0]) * p
    rv = (np.arange(geometry.rows) - (geometry.rows - 1) / 2 + geometry.detector_offset_px[1]) * p
    r2 = d_mm ** 2 + cu[None, :] ** 2 + rv[:, None] ** 2
    return p * p * d_mm / r2 ** 1.5


def labels_part(p: Mapping[str, Any], where: str, base_dir: Path) -> LabelGrid:
    """A voxel part (``shape = "labels"``): an HDF5 file with ``/labels`` as in ``truth.h5``.

    Materials come from the file's ``/materials`` table or from ``materials = [...]`` (one name
    per label, label 0 first); ``origin_mm`` and ``voxel_size_um`` may override the file's.
    """
    from twin.truth_io import read_truth

    if "file" not in p:
        raise XrmInputError(f"{where}: shape = \"labels\" needs file = \"labels.h5\"")
    path = Path(p["file"])
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise XrmInputError(f"{where}: label file {str(path)!r} does not exist")
    t = read_truth(path)
    table = sorted(t["materials"], key=lambda m: m["label"])
    names = p.get("materials") or [m["material"] for m in table]
    if not names:
        raise XrmInputError(f"{where}: {path} has no /materials table; give materials = [...]")
    mats = tuple(get_material(n) for n in names)
    # component names (the truth's labels) from the file's table, when its materials are used
    components = (tuple(str(m["name"]) for m in table)
                  if not p.get("materials") and len(table) == len(mats) else ())
    origin = tuple(float(v) for v in p.get("origin_mm", t["origin_mm"]))
    voxel = p.get("voxel_size_um", t["voxel_size_um"])
    voxel = tuple(float(v) for v in np.atleast_1d(voxel)) if np.size(voxel) == 3 else float(np.asarray(voxel).ravel()[0])
    grid = LabelGrid(t["labels"], voxel, origin, mats, components)
    grid.check_labels()
    return grid


def parts_scene(parts: list[Mapping[str, Any]], base_dir: Path) -> tuple[MeshPart, ...]:
    """Mesh parts of ``kind = "parts"`` (meshes and primitives with materials)."""
    allowed = {"shape", "file", "material", "density_g_cm3", "priority", "repair", "name",
               "center_mm", "size_mm", "radius_mm", "height_mm", "inner_radius_mm", "axis",
               "scale_to_mm", "sections", "subdivisions"}
    out = []
    if not parts:
        raise XrmInputError("phantom.kind = \"parts\" needs at least one [[phantom.parts]] entry")
    for i, p in enumerate(parts):
        where = f"phantom.parts[{i}]"
        if not isinstance(p, Mapping):
            raise XrmInputError(f"{where} must be a table")
        if p.get("shape") == "labels":
            continue  # voxel parts: see labels_part
        extra = set(p) - allowed
        if extra:
            raise unknown(f"key in {where}", sorted(extra)[0], sorted(allowed))
        shape = p.get("shape", "mesh")
        if "material" not in p:
            raise XrmInputError(f"{where} needs a material")
        mat = get_material(p["material"], p.get("density_g_cm3"))
        if shape == "mesh":
            if "file" not in p:
                raise XrmInputError(f"{where}: shape = \"mesh\" needs file = \"part.stl\"")
            path = Path(p["file"])
            if not path.is_absolute():
                path = base_dir / path
            tri = load_mesh_file(path, repair=bool(p.get("repair", False)),
                                 scale_to_mm=float(p.get("scale_to_mm", 1.0)))
        elif shape in PRIMITIVES:
            tri = primitive_triangles(shape, dict(p), sections=int(p.get("sections", 512)),
                                      subdivisions=int(p.get("subdivisions", 5)))
        else:
            raise unknown(f"shape in {where}", shape, ("mesh",) + PRIMITIVES)
        if not np.all(np.isfinite(tri)):
            raise XrmInputError(f"{where}: the mesh has non-finite vertices")
        prio = p.get("priority")
        out.append(MeshPart(str(p.get("name", f"part{i}")), mat, tri,
                            None if prio is None else int(prio)))
    return tuple(out)


def phantom_voxel_um(spec: ScanSpec, geometry: ScanGeometry) -> float:
    """Phantom voxel: ``phantom.voxel_um`` or the scan voxel (>= 0.5 um).

    The scan voxel keeps a 1024^3 VOI at 1 GiB of labels; ``geometry.supersample`` adds
    sub-pixel rays, and a finer ``phantom.voxel_um`` adds partial-volume realism at a cost.
    """
    v = spec.phantom.get("voxel_um")
    if v is not None:
        return require_positive("phantom.voxel_um", v)
    return max(geometry.voxel_size_um, 0.5)


PHANTOM_COMMON_KEYS = ("kind", "voi", "voxel_um", "coarse_voxel_um", "parts", "seed")


def shifted(grid: LabelGrid, center_mm) -> LabelGrid:
    """The grid expressed in the scan frame: sample point ``center_mm`` moved to the origin."""
    o = tuple(float(a) - float(c) for a, c in zip(grid.origin_mm, center_mm))
    return LabelGrid(grid.labels, grid.voxel_size_um, o, grid.materials, grid.names)


def sample_center(spec: ScanSpec, default) -> tuple[float, float, float]:
    c = spec.geometry.get("sample_center_mm")
    if c is None:
        c = default
    if len(c) != 3 or not np.all(np.isfinite(np.asarray(c, float))):
        raise XrmInputError(f"geometry.sample_center_mm must be 3 finite numbers (x, y, z), got {c!r}")
    return tuple(float(v) for v in c)


def default_coarse_voxel_um(ph, fine_um: float) -> float:
    """Voxel of the whole-cell grid around a VOI: ``max(8 x fine, 50 um)``, but no coarser
    than the phantom's :attr:`~phantoms.base.Phantom.coarse_voxel_limit_um` (layered cells)
    and never finer than the VOI's voxel."""
    c = max(fine_um * 8, 50.0)
    lim = getattr(ph, "coarse_voxel_limit_um", None)
    if lim:
        c = min(c, float(lim))
    return max(c, float(fine_um))


def phantom_seed(spec: ScanSpec) -> int:
    """Seed of the phantom's microstructure: ``phantom.seed``, else the scenario's seed (two
    scans of the same cell with independent noise share a phantom seed, not a scenario seed)."""
    s = spec.phantom.get("seed")
    if s is None:
        return int(spec.seed)
    if isinstance(s, bool) or not isinstance(s, int):
        raise XrmInputError(f"phantom.seed must be an integer, got {s!r}")
    return int(s)


def battery_scene(spec: ScanSpec, geometry: ScanGeometry):
    """Scene of a battery phantom: a coarse whole-cell grid and, with a VOI, a fine VOI grid.

    Returns the scene in the scan frame (the sample point ``sample_center_mm`` on the rotation
    axis at the beam centre), the truth in the cell frame, and that centre.
    """
    import phantoms

    params = {k: v for k, v in spec.phantom.items() if k not in PHANTOM_COMMON_KEYS}
    ph = phantoms.build(spec.phantom["kind"], params, seed=phantom_seed(spec))
    fine_um = phantom_voxel_um(spec, geometry)
    voi = spec.phantom.get("voi")
    grids = []
    truth = None
    if voi:
        extra = set(voi) - {"center_mm", "size_mm"}
        if extra or "center_mm" not in voi or "size_mm" not in voi:
            raise XrmInputError(f"phantom.voi must be {{center_mm = [x, y, z], size_mm = [a, b, c]}}, got {voi!r}")
        coarse_um = spec.phantom.get("coarse_voxel_um") or default_coarse_voxel_um(ph, fine_um)
        grids.append(ph.rasterize(coarse_um))
        truth = ph.truth(fine_um, voi["center_mm"], voi["size_mm"])
        grids.append(truth[0])
    else:
        truth = ph.truth(fine_um)
        grids.append(truth[0])
    if voi:
        default_center = voi["center_mm"]
    else:
        lo, hi = (np.asarray(b, float) for b in ph.bounds_mm)
        default_center = (lo + hi) / 2
    center = sample_center(spec, default_center)
    return Scene(grids=tuple(shifted(g, center) for g in grids)), truth, center


def auto_supersample(geometry: ScanGeometry, scene: Scene | None) -> int:
    """Rays per pixel (per axis) so that the ray spacing at the object is at most the finest
    grid voxel: ``ceil(scan voxel / grid voxel)``, 1 for mesh-only scenes, capped at 8.

    A ray through the pixel centre alone would miss objects smaller than the pixel.
    """
    if scene is None or not scene.grids:
        return 1
    finest_um = min(min(g.spacing_mm) for g in scene.grids) * 1000.0
    return int(min(8, max(1, np.ceil(geometry.voxel_size_um / finest_um - 1e-6))))


def resolve(spec: ScanSpec, *, with_scene: bool = True) -> Plan:
    """Resolve a scenario into a :class:`Plan`.

    ``with_scene=False`` resolves only the instrument (source, detector, geometry): enough
    for flat fields, flux calibration and scan-time estimates, without building the phantom.
    """
    geometry = resolve_geometry(spec)
    spectrum, layers = resolve_spectrum(spec)
    detector = resolve_detector(spec, geometry)
    ss_key = spec.geometry["supersample"]
    if not (ss_key == "auto" or (isinstance(ss_key, int) and 1 <= ss_key <= 8)):
        raise XrmInputError(f"geometry.supersample must be 1-8 or \"auto\", got {ss_key!r}")
    base_dir = Path(spec.origin).parent if spec.origin and not spec.origin.startswith("<") else Path(".")
    truth = None
    center = (0.0, 0.0, 0.0)
    if not with_scene:
        scene = None
    elif spec.phantom["kind"] == "parts":
        plist = spec.phantom["parts"]
        grids = []
        for i, p in enumerate(plist):
            if isinstance(p, Mapping) and p.get("shape") == "labels":
                extra = set(p) - {"shape", "file", "materials", "origin_mm", "voxel_size_um", "name"}
                if extra:
                    raise unknown(f"key in phantom.parts[{i}]", sorted(extra)[0],
                                  ["shape", "file", "materials", "origin_mm", "voxel_size_um", "name"])
                grids.append(labels_part(p, f"phantom.parts[{i}]", base_dir))
        meshes = parts_scene(plist, base_dir) if len(grids) < len(plist) or not plist else ()
        voi = spec.phantom.get("voi")  # as for a battery phantom: the VOI centre on the axis
        center = sample_center(spec, tuple(voi["center_mm"]) if voi else (0.0, 0.0, 0.0))
        sample_meshes, sample_grids = meshes, list(grids)  # the truth is in the sample frame
        if any(center):
            grids = [shifted(g, center) for g in grids]
            meshes = tuple(MeshPart(m.name, m.material, m.triangles - np.asarray(center), m.priority)
                           for m in meshes)
        scene = Scene(grids=tuple(grids), parts=meshes).prepare()
        truth = parts_truth(plist, sample_meshes, sample_grids, geometry, center,
                            phantom_voxel_um(spec, geometry))
    else:
        scene, truth, center = battery_scene(spec, geometry)
    exposure = require_positive("detector.exposure_s", spec.detector["exposure_s"])
    if spec.detector["frames"] < 1:
        raise XrmInputError(f"detector.frames must be >= 1, got {spec.detector['frames']}")
    w = detector.spectral_weights(spectrum.energy_kev, spectrum.photons_per_s_sr * exposure)
    keep = prune_bins(w[:2])
    energy = spectrum.energy_kev[keep]
    weights = w[:, keep]
    mats = scene.materials if scene is not None else ()
    mu = np.array([m.mu_per_mm(energy) for m in mats]).reshape(len(mats), len(energy))
    if not np.all(np.isfinite(mu)):
        raise XrmInputError("attenuation table has non-finite values")
    src_sigma = geometry.source_blur_fwhm_um(spectrum.power_w) / geometry.scintillator_pixel_um / FWHM_PER_SIGMA
    opt_sigma = 0.0 if detector.ideal else detector.blur_fwhm_px / FWHM_PER_SIGMA
    if detector.ideal:
        src_sigma = 0.0
    ss = ss_key if isinstance(ss_key, int) else auto_supersample(geometry, scene)
    return Plan(spec=spec, geometry=geometry, spectrum=spectrum, filter_layers=layers,
                detector=detector, energy_kev=energy, weights=weights, mu_per_mm=mu, scene=scene,
                solid_angle_sr=pixel_solid_angle_sr(geometry), source_blur_sigma_px=float(src_sigma),
                optical_blur_sigma_px=float(opt_sigma), truth=truth, sample_center_mm=center,
                supersample=ss)
