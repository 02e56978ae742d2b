"""``xrm-twin run``: simulate, reconstruct, measure, score and report, in one folder."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from twin import __version__
from twin.scenario import ScanSpec


def software_versions() -> dict[str, str]:
    out = {"xrm-twin": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "taichi", "spekpy", "xraydb", "trimesh", "scikit-image", "h5py"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_scenario(spec: ScanSpec, out_dir: str | Path, *, preview: bool = False, arch: str = "auto",
                 quiet: bool = False) -> dict[str, Any]:
    """The whole pipeline; returns the report dict (also written as report.json/html)."""
    return run_prepared(prepare_run(spec, preview=preview, arch=arch), out_dir, quiet=quiet)


@dataclass
class PreparedRun:
    """A scenario checked and resolved for :func:`run_prepared` (:func:`prepare_run`).

    ``plan`` holds the phantom's label grids: :func:`run_prepared` takes it (sets it to None)
    so that they are freed after the simulation, not kept through reconstruct and measure.
    """

    spec: ScanSpec
    full_spec: ScanSpec
    changes: dict[str, Any] | None
    resources: dict[str, Any]
    plan: Any
    arch: str
    t0: float


def prepare_run(spec: ScanSpec, *, preview: bool = False, arch: str = "auto",
                out_dir: str | Path | None = None) -> PreparedRun:
    """Check that a run can start: the memory estimate (:func:`twin.resources.check_fits`),
    the backend, and every value of the scenario (by resolving it: spectra, materials,
    geometry, phantom), and the simulation's memory and, with ``out_dir``, its disk space
    (:func:`twin.simulate.check_simulate_fits`). Nothing is written, so the CLI touches the
    output folder only after this has passed."""
    from twin.plan import resolve
    from twin.preview import preview_spec
    from twin.resources import check_fits
    from twin.runtime import init_taichi
    from twin.simulate import check_simulate_fits

    t0 = time.perf_counter()
    full_spec, changes = spec, None
    if preview:
        spec, changes = preview_spec(spec)
    resources = check_fits(spec)
    check_simulate_fits(spec, out_dir)
    used_arch = init_taichi(arch)
    return PreparedRun(spec=spec, full_spec=full_spec, changes=changes, resources=resources,
                       plan=resolve(spec), arch=used_arch, t0=t0)


def run_prepared(run: PreparedRun, out_dir: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Simulate, reconstruct, measure and report a :func:`prepare_run` result into ``out_dir``."""
    from twin.simulate import simulate_plan

    if run.plan is None:
        raise ValueError("this PreparedRun has been run already (its plan is freed)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan, run.plan = run.plan, None  # the grids go with the simulation
    sim = simulate_plan(plan, out, arch=run.arch, quiet=quiet, t0=run.t0)
    del plan
    return _reconstruct_measure_report(run.spec, run.full_spec, sim, run.resources, out,
                                       changes=run.changes, quiet=quiet)


def run_plan(plan, out_dir: str | Path, *, arch: str = "auto", quiet: bool = False) -> dict[str, Any]:
    """:func:`run_scenario` for a resolved plan (a plan file on a GPU node or worker).

    Where matplotlib is absent (a bare GPU node), the figures are skipped and the report says
    so in ``warnings``; report.json and every data file are written as usual.
    """
    from twin.resources import check_fits
    from twin.simulate import simulate_plan

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cracks = None
    if plan.truth is not None:  # (grid, defects, instances): the truth says
        cracks = any(d.get("type") == "crack" for d in plan.truth[1])
    elif plan.phantom_recipe is not None:  # the phantom is asked, from the plan's lookups
        from twin.materials import preload_lookups

        preload_lookups(plan.phantom_recipe["lookups"])
    resources = check_fits(plan.spec, cracks=cracks)
    sim = simulate_plan(plan, out, arch=arch, quiet=quiet)
    return _reconstruct_measure_report(plan.spec, plan.spec, sim, resources, out, changes=None,
                                       quiet=quiet)


def _reconstruct_measure_report(spec: ScanSpec, full_spec: ScanSpec, sim: dict[str, Any],
                                resources: dict[str, Any], out: Path, *, changes, quiet: bool) -> dict[str, Any]:
    """Reconstruct and measure a simulated scan in ``out``; write and return the report."""
    from recon.io import write_segmentation
    from twin.measure import measure
    from twin.measure_outputs import write_measure_outputs
    from twin.plan import resolve_geometry
    from twin.reconstruct import reconstruct_nxtomo
    from twin.report import write_report
    from twin.scan_time import scenario_scan_time_s
    from twin.truth_io import read_truth

    preview = changes is not None
    warnings = list(sim.get("warnings", []))
    rec = reconstruct_nxtomo(out / "projections.h5", out, arch=sim["arch"], quiet=quiet)
    volume = rec.pop("volume")
    undenoised = rec.pop("volume_undenoised", None)
    truth = read_truth(out / "truth.h5", instances=False) if (out / "truth.h5").exists() else None
    maps = spec.measure.get("thickness_maps")
    if maps is None and spec.paper.get("metrology"):
        maps = [c for c, q in spec.paper["metrology"].items()
                if any(k.startswith("thickness") for k in q)] or None
    meas = measure(volume, rec["voxel_size_um"], rec["origin_mm"], truth=truth,
                   kvp=float(spec.source["kvp"]), thickness_maps=maps, undenoised=undenoised,
                   smooth_sigma_vox=float(spec.measure.get("smooth_sigma_vox", 1.0)))
    write_segmentation(out / "segmentation.h5", meas["labels"],
                       {int(k): v for k, v in meas["segmentation"]["components"].items()},
                       rec["voxel_size_um"], rec["origin_mm"], defects=meas.get("defect_map"))
    try:
        import matplotlib  # noqa: F401
        draw = True
    except ImportError:
        draw = False
    if not draw:
        warnings.append("matplotlib is not installed here: figures were not drawn")
    figures = write_measure_outputs(out, meas, volume, rec["voxel_size_um"], rec["origin_mm"],
                                    title=spec.name, render_3d=bool(spec.measure.get("render_3d", True)),
                                    figures_too=draw)
    report: dict[str, Any] = {
        "scenario": spec.name,
        "description": spec.description,
        "seed": spec.seed,
        "preview": {k: list(v) for k, v in changes.items()} if preview else None,
        "geometry": sim["geometry"],
        "source": sim["source"],
        "detector": sim["detector"],
        "scan": {"estimated_scan_time_h": scenario_scan_time_s(spec.geometry, spec.detector) / 3600,
                 "estimated_full_scan_time_h": scenario_scan_time_s(full_spec.geometry, full_spec.detector) / 3600,
                 "ray_samples": sim["ray_samples"], "arch": sim["arch"],
                 "estimated_peak_memory_gib": resources["peak_bytes"] / 2 ** 30},
        "reconstruction": {k: v for k, v in rec.items() if k != "timing_s"},
        "segmentation": meas["segmentation"],
        "metrology": meas["metrology"],
        "metrology_truth": meas.get("metrology_truth"),
        "defects": meas["defects"],
        "detectability": meas["detectability"],
        "timing_s": {"simulate": sim["timing_s"]["simulate"], "reconstruct": rec["timing_s"]["reconstruct"],
                     "measure": meas["timing_s"]["measure"]},
        "software": software_versions(),
        "warnings": warnings,
    }
    full_voxel_um = resolve_geometry(full_spec).voxel_size_um
    if preview:
        report["geometry"]["full_scale_voxel_size_um"] = full_voxel_um
    if _has_paper(spec.paper):
        from twin.paper import compare_with_paper

        report["paper"] = compare_with_paper(
            spec.paper, voxel_full_um=full_voxel_um, voxel_run_um=rec["voxel_size_um"],
            metrology=meas["metrology"], metrology_truth=meas.get("metrology_truth"),
            labels=meas["labels"], names={int(k): v for k, v in meas["segmentation"]["components"].items()},
            truth_labels=meas.get("truth_labels"), truth_names=meas.get("truth_names"),
            defects=meas["defects"])
    write_report(out, report, figures)
    return report


def _has_paper(paper) -> bool:
    return any(paper.get(k) for k in ("voxel_size_um", "metrology", "stack", "particles", "defects"))
