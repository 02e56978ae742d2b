"""``xrm-twin simulate``: a scenario to ``projections.h5`` and ``truth.h5``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

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

#: Host memory a run may use, bytes (refuse beyond; override with XRM_TWIN_MAX_BYTES).
def max_bytes() -> int:
    import os

    if os.environ.get("XRM_TWIN_MAX_BYTES"):
        return int(os.environ["XRM_TWIN_MAX_BYTES"])
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pages = 16 * 2 ** 30
    return int(0.8 * pages)


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
    t0 = time.perf_counter()
    used_arch = init_taichi(arch)
    plan = resolve(spec)
    return simulate_plan(plan, out_dir, arch=used_arch, quiet=quiet, t0=t0)


def simulate_plan(plan: Plan, out_dir: str | Path, *, arch: str = "auto", quiet: bool = False,
                  t0: float | None = None) -> dict[str, Any]:
    """Simulate a resolved :class:`Plan` (e.g. loaded from a plan file on a GPU node)."""
    t0 = time.perf_counter() if t0 is None else t0
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
    need = plan.bytes_per_view_chunk(1) + 2 * g.rows * g.cols * 8
    if need > max_bytes():
        raise XrmInputError(f"one view needs {need / 2**30:.1f} GiB of working memory "
                            f"({g.rows} x {g.cols} pixels x {len(plan.scene.materials)} materials); "
                            f"this machine allows {max_bytes() / 2**30:.1f} GiB")
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
