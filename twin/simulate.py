"""``xrm-twin simulate``: a scenario to ``projections.h5`` and ``truth.h5``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from twin import __version__
from twin.acquisition import (flat_field_counts_per_s, flat_field_full_well_fraction,
                              flat_field_quanta_and_electrons, flats_and_darks, iter_projections,
                              output_dtype)
from twin.errors import XrmInputError
from twin.filters import describe_stack
from twin.nxtomo import write_nxtomo
from twin.plan import Plan, resolve
from twin.progress import progress_bar
from twin.runtime import init_taichi
from twin.scenario import ScanSpec
from twin.truth_io import write_truth

#: Share of the machine's memory a scan may plan to use: the rule of
#: :func:`twin.resources.check_fits` (``xrm-twin run``), so run and simulate refuse alike.
MEMORY_FRACTION = 0.85

#: float64 temporaries of one view's read-out (:func:`twin.acquisition.read_out`: the four
#: spectral sums, the gain-weighted signal and its second moment, the electrons before and
#: after the optical blur, the dark and read-noise draws, the ADU), bytes per pixel. Views
#: of a chunk are read out on the host's threads at once.
READOUT_BYTES_PER_PX = 12 * 8

#: Per-pixel maps held through the scan (pixel solid angle, gain and screen-thickness maps,
#: float64), bytes per pixel.
MAPS_BYTES_PER_PX = 3 * 8


def max_bytes() -> int:
    """Host memory a scan may use, bytes: :data:`MEMORY_FRACTION` of this machine's
    (:func:`twin.resources.available_bytes`; ``XRM_TWIN_MAX_BYTES`` stands for the machine's)."""
    from twin.resources import available_bytes

    return int(MEMORY_FRACTION * available_bytes())


def _scene_material_count(spec: ScanSpec) -> int:
    """Material slots of the scene (the path lengths held per view), without building it:
    distinct materials of the parts, or of the battery phantom's labels."""
    if spec.phantom["kind"] == "parts":
        seen: set = set()
        for i, p in enumerate(spec.phantom["parts"]):
            if not isinstance(p, Mapping):
                continue
            if p.get("shape") == "labels":  # its materials = [...], else its file's (one, at least)
                names = p.get("materials")
                if isinstance(names, list):
                    seen.update((str(n), None) for n in names[1:])  # label 0 is the background
                else:
                    seen.add(("labels", i))
            else:
                seen.add((str(p.get("material")), p.get("density_g_cm3")))
        return max(len(seen), 1)
    import phantoms
    from twin.plan import PHANTOM_COMMON_KEYS, phantom_seed

    params = {k: v for k, v in spec.phantom.items() if k not in PHANTOM_COMMON_KEYS}
    ph = phantoms.build(spec.phantom["kind"], params, seed=phantom_seed(spec))
    return max(len({m.name for m in ph.materials[1:]}), 1)


def simulate_estimate(spec: ScanSpec, *, n_materials: int | None = None) -> dict[str, Any]:
    """Memory and disk that ``xrm-twin simulate`` needs, from the scenario alone.

    The phantom grid is sized by :func:`twin.resources.estimate` (the estimate ``xrm-twin run``
    refuses by); to it come what the scan holds while it runs: per-pixel maps, flats and darks,
    and the views in flight (per view ``rows x cols x 4 x (materials + 8)`` bytes of path
    lengths, spectral sums and images, as :meth:`twin.plan.Plan.bytes_per_view_chunk`, in chunks
    of :data:`twin.acquisition.CHUNK_BYTES`, plus the read-out temporaries of the views read at
    once).

    Parameters
    ----------
    n_materials : int, optional
        Material slots of the scene (default: counted from the scenario).

    Returns
    -------
    dict of bytes: ``view_bytes`` (one view in flight), ``chunk_views``, ``working_bytes``
    (the views in flight and their read-out), ``maps_bytes``, ``frames_bytes`` (flats and
    darks), ``phantom_bytes``, ``peak_bytes``, ``projections_file_bytes`` (projections.h5,
    uncompressed), ``truth_file_bytes`` (truth.h5 labels), ``output_bytes``; and ``pixels``,
    ``n_materials``.
    """
    from twin.acquisition import CHUNK_BYTES
    from twin.plan import resolve_geometry
    from twin.resources import estimate
    from twin.runtime import host_threads

    g = resolve_geometry(spec)
    d = spec.detector
    est = estimate(spec, cracks=False)
    m = int(n_materials) if n_materials is not None else _scene_material_count(spec)
    px = int(g.rows) * int(g.cols)
    view = px * 4 * (max(m, 1) + 4 + 4)
    chunk_views = int(max(1, min(g.n_views, CHUNK_BYTES // max(view, 1))))
    readers = min(host_threads(), chunk_views)
    working = chunk_views * view + readers * px * READOUT_BYTES_PER_PX
    ideal = bool(d["ideal"])
    out_bytes = 4 if ideal or not d["noise"] else 2  # float32 keV / expected ADU, else uint16
    n_flats, n_darks = int(d["flats"]), int(d["darks"])
    if ideal or not d["noise"]:
        n_flats, n_darks = max(n_flats, 1), max(n_darks, 1)
    frames = (n_flats + n_darks) * px * out_bytes
    maps = px * MAPS_BYTES_PER_PX
    phantom = int(est["phantom_bytes"])
    peak = max(phantom + maps + frames + working, phantom * 3 + 256 * 2 ** 20)
    proj_file = (int(g.n_views) + n_flats + n_darks) * px * out_bytes
    truth_file = phantom
    return {"pixels": px, "n_materials": m, "view_bytes": view, "chunk_views": chunk_views,
            "working_bytes": working, "maps_bytes": maps, "frames_bytes": frames,
            "phantom_bytes": phantom, "peak_bytes": peak, "projections_file_bytes": proj_file,
            "truth_file_bytes": truth_file, "output_bytes": proj_file + truth_file}


def _free_disk_bytes(out_dir: Path) -> tuple[int, Path]:
    """Free bytes where ``out_dir`` is (or will be), plus what the outputs it replaces hold."""
    import shutil

    probe = out_dir.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    for name in ("projections.h5", "truth.h5"):  # overwritten in place (--force)
        f = out_dir / name
        if f.is_file():
            free += f.stat().st_size
    return int(free), probe


def check_simulate_fits(spec: ScanSpec, out_dir: str | Path | None = None, *,
                        n_materials: int | None = None) -> dict[str, Any]:
    """Refuse a simulation that cannot fit, before anything is allocated or written.

    Raises :class:`~twin.errors.XrmInputError` (``xrm-twin`` exit code 2) naming the sizes when
    the memory of :func:`simulate_estimate` exceeds :func:`max_bytes`, or, with ``out_dir``,
    when the output files exceed the free disk space there. Returns the estimate.
    """
    from twin.resources import gib

    est = simulate_estimate(spec, n_materials=n_materials)
    problems = []
    have = max_bytes()
    if est["peak_bytes"] > have:
        problems.append(
            f"about {gib(est['peak_bytes'])} of memory (views in flight "
            f"{gib(est['working_bytes'])}: one view of {est['pixels']:,} pixels x {est['n_materials']} "
            f"material{'s' if est['n_materials'] != 1 else ''} is {gib(est['view_bytes'])} of path lengths and sums, plus its read-out; "
            f"pixel maps {gib(est['maps_bytes'])}, flats and darks {gib(est['frames_bytes'])}, "
            f"phantom grid {gib(est['phantom_bytes'])}), and this machine allows "
            f"{gib(have)} ({MEMORY_FRACTION:.0%} of its memory)")
    if out_dir is not None:
        free, where = _free_disk_bytes(Path(out_dir))
        if est["output_bytes"] > free:
            problems.append(
                f"about {gib(est['output_bytes'])} of disk (projections.h5 "
                f"{gib(est['projections_file_bytes'])}, truth.h5 {gib(est['truth_file_bytes'])}), "
                f"and {str(where)!r} has {gib(free)} free")
    if problems:
        g = spec.geometry
        raise XrmInputError(
            f"scenario {spec.name!r} cannot be simulated here ({spec.detector['pixels'][0]} x "
            f"{spec.detector['pixels'][1]} detector pixels, {g['projections']} projections): "
            f"it needs {'; and '.join(problems)}. Reduce detector.pixels or "
            "geometry.projections (or raise geometry.binning), or run it on a larger machine.")
    return est


def summary(plan: Plan) -> dict[str, Any]:
    """Key numbers of a plan (for report.json and the CLI)."""
    g = plan.geometry
    quanta, electrons = flat_field_quanta_and_electrons(plan)
    return {
        "scenario": plan.spec.name,
        "geometry": {"magnification": g.geometric_magnification, "voxel_size_um": g.voxel_size_um,
                     "optical_magnification": g.optical_magnification,
                     "field_of_view_mm": list(g.field_of_view_mm), "projections": g.n_views,
                     "detector_pixels": [g.cols, g.rows], "beam": g.beam},
        "source": {"kvp": plan.spectrum.kvp, "power_w": plan.spectrum.power_w,
                   "filter": describe_stack(plan.filter_layers),
                   # the name given in the scenario (e.g. "HE6"), beside the stack it stands for
                   "filter_name": plan.spec.source["filter"] if isinstance(plan.spec.source.get("filter"), str)
                   else None,
                   "mean_energy_kev": plan.spectrum.mean_energy_kev,
                   "focal_spot_blur_px_fwhm": plan.source_blur_sigma_px * 2.3548},
        "detector": {"ideal": plan.detector.ideal,
                     "scintillator": None if plan.detector.ideal else
                     f"{plan.detector.scintillator.name} {plan.detector.scintillator_um:g} um",
                     "flat_field_counts_per_s": flat_field_counts_per_s(plan),
                     "flat_field_full_well_fraction": flat_field_full_well_fraction(plan),
                     "flat_field_quanta_per_exposure": quanta,
                     "flat_field_electrons_per_exposure": electrons,
                     "exposure_s": plan.exposure_s, "frames": plan.frames},
        "materials": [m.name for m in plan.scene.materials] if plan.scene is not None else [],
    }


def simulate_to(spec: ScanSpec, out_dir: str | Path, *, arch: str = "auto", quiet: bool = False
                ) -> dict[str, Any]:
    """Simulate a scan and write ``projections.h5`` (and ``truth.h5`` for phantoms).

    Returns the summary with ``timing_s.simulate`` and ``ray_samples``.
    """
    plan, used_arch, t0 = prepare_simulation(spec, out_dir, arch=arch)
    return simulate_plan(plan, out_dir, arch=used_arch, quiet=quiet, t0=t0)


def prepare_simulation(spec: ScanSpec, out_dir: str | Path | None = None, *, arch: str = "auto"
                       ) -> tuple[Plan, str, float]:
    """Check that a simulation can run, then resolve it; nothing is written.

    The materials (:func:`twin.scenario.check_materials`) and the memory and disk check
    (:func:`check_simulate_fits`) come first, before the Taichi
    backend, the pixel maps or the phantom are allocated; then the backend and every value of
    the scenario (:func:`twin.plan.resolve`). A caller touches the output folder only after
    this has passed. Returns ``(plan, arch used, start time)`` for :func:`simulate_plan`.
    """
    from twin.scenario import check_materials

    t0 = time.perf_counter()
    check_materials(spec)  # an unknown material names its key
    check_simulate_fits(spec, out_dir)
    used_arch = init_taichi(arch)
    return resolve(spec), used_arch, t0


def check_plan_fits(plan: Plan, out_dir: str | Path | None = None) -> dict[str, Any]:
    """:func:`check_simulate_fits` for a resolved plan (a plan file on a node without xraydb:
    a recipe plan's phantom is asked for its materials from the plan's lookups)."""
    if plan.scene is None and plan.phantom_recipe is not None:
        from twin.materials import preload_lookups

        preload_lookups(plan.phantom_recipe["lookups"])
    return check_simulate_fits(plan.spec, out_dir, n_materials=len(plan.scene.materials)
                               if plan.scene is not None else None)


def simulate_plan(plan: Plan, out_dir: str | Path, *, arch: str = "auto", quiet: bool = False,
                  t0: float | None = None) -> dict[str, Any]:
    """Simulate a resolved :class:`Plan` (e.g. loaded from a plan file on a GPU node)."""
    t0 = time.perf_counter() if t0 is None else t0
    check_plan_fits(plan, out_dir)  # before the phantom of a recipe plan is rebuilt, before any file
    used_arch = init_taichi(arch)
    rebuilt_warnings: list[str] = []
    if plan.scene is None and plan.phantom_recipe is not None:  # a recipe plan file
        from twin.planfile import materialise

        plan, rebuilt_warnings = materialise(plan)
        for w in rebuilt_warnings:
            logging.getLogger("xrm_twin").warning(w)
    spec = plan.spec
    g = plan.geometry
    dtype = output_dtype(plan)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flats, darks = flats_and_darks(plan)
    source = {"voltage": plan.spectrum.kvp, "power": plan.spectrum.power_w,
              "mean_energy_kev": plan.spectrum.mean_energy_kev}
    with progress_bar("simulate", total=g.n_views, quiet=quiet) as advance:
        totals = write_nxtomo(out / "projections.h5", g, iter_projections(plan, arch=used_arch,
                                                                          progress=advance),
                              flats, darks, dtype=dtype, scenario_json=spec.to_json(),
                              source=source, exposure_s=plan.exposure_s,
                              extra_attrs={"ideal": plan.detector.ideal,
                                           "sample_center_mm": np.asarray(plan.sample_center_mm),
                                           "mean_energy_kev": plan.spectrum.mean_energy_kev})
    if plan.truth is not None:
        grid, defects, instances = plan.truth
        write_truth(out / "truth.h5", grid, defects, instances,
                    attrs={"phantom": spec.phantom["kind"], "software": f"xrm-twin {__version__}"})
    result = summary(plan)
    result["warnings"] = list(rebuilt_warnings)
    if result["detector"]["flat_field_full_well_fraction"] > 1.0:
        result["warnings"] += [f"the flat field saturates the detector "
                              f"({result['detector']['flat_field_full_well_fraction']:.1f} x full well): "
                              "reduce detector.exposure_s or source.power_w"]
        logging.getLogger("xrm_twin").warning(result["warnings"][-1])
    result["arch"] = used_arch
    result["ray_samples"] = totals["ray_samples"]
    result["timing_s"] = {"simulate": time.perf_counter() - t0}
    return result
