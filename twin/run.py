"""``xrm-twin run``: simulate, reconstruct, measure, score and report, in one folder."""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

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
    from recon.io import read_volume
    from twin.measure import measure
    from twin.preview import preview_spec
    from twin.reconstruct import reconstruct_nxtomo
    from twin.report import histogram_figure, orthoslices_figure, write_report
    from twin.scan_time import scenario_scan_time_s
    from twin.simulate import simulate_to
    from twin.truth_io import read_truth

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    changes: dict[str, Any] = {}
    full_spec = spec
    if preview:
        spec, changes = preview_spec(spec)
    from twin.resources import check_fits

    resources = check_fits(spec)
    sim = simulate_to(spec, out, arch=arch, quiet=quiet)
    rec = reconstruct_nxtomo(out / "projections.h5", out, arch=sim["arch"], quiet=quiet)
    volume = rec.pop("volume")
    truth = read_truth(out / "truth.h5") if (out / "truth.h5").exists() else None
    meas = measure(volume, rec["voxel_size_um"], rec["origin_mm"], truth=truth)
    figures = []
    fig_dir = out / "figures"
    figures.append(("Orthogonal slices of the reconstruction",
                    orthoslices_figure(volume, rec["voxel_size_um"], rec["origin_mm"], fig_dir / "slices.png",
                                       title=spec.name)))
    figures.append(("Segmented components (colours) over the reconstruction",
                    orthoslices_figure(volume, rec["voxel_size_um"], rec["origin_mm"],
                                       fig_dir / "segmentation.png", title=f"{spec.name}: segmentation",
                                       labels=meas["labels"])))
    figures.append(("Histogram and segmentation thresholds",
                    histogram_figure(volume, fig_dir / "histogram.png",
                                     thresholds=meas["segmentation"]["thresholds_per_mm"])))
    figures += _metrology_figures(meas, fig_dir)
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
        "warnings": sim.get("warnings", []),
    }
    if preview:
        from twin.plan import resolve_geometry

        report["geometry"]["full_scale_voxel_size_um"] = resolve_geometry(full_spec).voxel_size_um
    write_report(out, report, figures)
    return report


def _metrology_figures(meas: dict, fig_dir: Path) -> list:
    try:
        from recon import figures as rfig
    except ImportError:
        return []
    out = []
    fn = getattr(rfig, "thickness_histogram_figure", None)
    if fn is not None:
        for name, m in meas["metrology"].items():
            th = m.get("thickness_um") or {}
            if th.get("histogram"):
                try:
                    out.append((f"Local thickness of {name}", fn(th, fig_dir / f"thickness_{name}.png", title=name)))
                except Exception:  # a figure never fails a run
                    pass
    return out
