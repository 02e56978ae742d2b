"""Full simulation of a detection task: simulate + FDK + measure CNR and d' on the reconstruction.

The ground truth against which :mod:`twin.optimise.fastmodel` is checked, and what
``sweep --full`` runs. For one setting (a scenario plus overrides) and a task:

1. a small **parts phantom of the task**: a cylinder of the host material (radius 0.35 x the
   field of view, axis = rotation axis, taller than the field) holding the defect (ball, or disc
   of the gap's thickness) of the filling material at 0.2 x the field of view off the axis
   (off-axis so that flat-field noise, which is the same in every view, does not pile up at
   the centre);
2. three scans with the twin (:func:`twin.acquisition.iter_projections`) on a small detector
   (``pixels`` x ``pixels``): expected (noiseless) with and without the defect, and noisy
   without it; each flat-corrected and reconstructed with FDK (:func:`recon.pipeline.reconstruct`);
3. measurements on the reconstructions: the task signal ``s = recon(defect) - recon(none)``
   (expected values), the noise ``n = recon(noisy) - recon(none)``;
   **d' (NPW, measured)** ``= sum s^2 / std_x(sum s(. - x) n)``, the template response's
   standard deviation over positions x in the host (the non-prewhitening matched filter of
   ``recon.detectability``, evaluated in image space); **CNR** ``= |s|_max / std(n)`` in the host.

The fast model is evaluated for the same phantom (its path: the mean chord of the host cylinder
through the defect over the views) so that the two can be compared setting by setting.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import numpy as np
from scipy.signal import fftconvolve

from twin.errors import XrmInputError
from twin.optimise.fastmodel import Task, evaluate, parse_task, row_specs
from twin.scenario import ScanSpec, validate

__all__ = ["task_phantom_spec", "full_simulation", "mean_chord_mm"]


def mean_chord_mm(radius_mm: float, offset_mm: float, n: int = 720) -> float:
    """Mean length of the chords of a circle of ``radius_mm`` through a point ``offset_mm``
    from its centre, over view angles (mm)."""
    th = np.linspace(0.0, np.pi, n, endpoint=False)
    return float(np.mean(2.0 * np.sqrt(np.maximum(radius_mm ** 2 - (offset_mm * np.sin(th)) ** 2, 0.0))))


def task_phantom_spec(spec: ScanSpec, task: Task, *, pixels: int = 96, views: int | None = None,
                      flats: int = 100, defect: bool = True, noise: bool = True,
                      seed: int | None = None) -> tuple[ScanSpec, dict[str, float]]:
    """The scenario ``spec`` on a small detector, imaging the task's phantom.

    Returns the spec and the phantom layout (``fov_mm``, ``host_radius_mm``, ``offset_mm``).
    """
    d = spec.to_toml_dict()
    d["detector"]["pixels"] = [int(pixels), int(pixels)]
    d["detector"]["flats"] = int(flats)
    d["detector"]["darks"] = max(int(d["detector"]["darks"]), 5)
    d["detector"]["noise"] = bool(noise)
    d["geometry"]["detector_offset_px"] = [0.0, 0.0]
    d["geometry"]["axis_offset_mm"] = 0.0
    d["geometry"]["axis_tilt_deg"] = 0.0
    if views is not None:
        d["geometry"]["projections"] = int(views)
    if seed is not None:
        d["seed"] = int(seed)
    tmp = validate(copy.deepcopy(d), spec.origin)
    from twin.plan import resolve_geometry

    geom = resolve_geometry(tmp)
    fov = min(geom.field_of_view_mm)
    host_r = 0.35 * fov
    off = 0.2 * fov
    a_mm = task.size_um / 1000.0
    ext_mm = task.extent_um / 1000.0
    half = a_mm / 2 if task.kind in ("void", "inclusion") else ext_mm / 2
    if off + half > host_r - 2 * geom.voxel_size_um / 1000.0 or off - half < 0.05 * fov:
        raise XrmInputError(f"the task's defect ({task.describe()}) does not fit the "
                            f"{pixels}-pixel phantom (field of view {fov * 1000:.0f} um); use more "
                            "pixels or a smaller defect")
    parts: list[dict[str, Any]] = [{"shape": "cylinder", "material": task.host, "radius_mm": host_r,
                                    "height_mm": 1.5 * fov, "center_mm": [0.0, 0.0, 0.0],
                                    "priority": 1, "sections": 256, "name": "host"}]
    if defect:
        if task.kind in ("void", "inclusion"):
            parts.append({"shape": "sphere", "material": task.fill, "radius_mm": a_mm / 2,
                          "center_mm": [off, 0.0, 0.0], "priority": 2, "subdivisions": 4,
                          "name": "defect"})
        else:
            parts.append({"shape": "cylinder", "material": task.fill, "radius_mm": ext_mm / 2,
                          "height_mm": a_mm, "center_mm": [off, 0.0, 0.0], "priority": 2,
                          "axis": task.normal, "sections": 128, "name": "defect"})
    d["phantom"] = {"kind": "parts", "parts": parts}
    return validate(d, spec.origin), {"fov_mm": fov, "host_radius_mm": host_r, "offset_mm": off,
                                      "voxel_um": geom.voxel_size_um}


def _scan_and_reconstruct(spec: ScanSpec, arch: str) -> np.ndarray:
    from recon.pipeline import reconstruct
    from twin.acquisition import flats_and_darks, iter_projections
    from twin.plan import resolve

    plan = resolve(spec)
    proj = np.concatenate([c.images for c in iter_projections(plan, arch=arch)]).astype(np.float32)
    flats, darks = flats_and_darks(plan)
    res = reconstruct(proj, plan.geometry, flats=flats.astype(np.float32),
                      darks=darks.astype(np.float32), truncation_mode=None, progress=False,
                      arch="cpu" if arch == "auto" else arch)
    return res.volume


def full_simulation(base: ScanSpec, overrides: Mapping[str, Any] | None, task: Task | str, *,
                    pixels: int = 96, max_views: int | None = 180, flats: int = 100,
                    arch: str = "cpu", seed: int = 7) -> dict[str, Any]:
    """Simulate, reconstruct and measure one setting (see the module docstring).

    Parameters
    ----------
    base : ScanSpec
    overrides : dict
        Setting, e.g. ``{"source.kvp": 80, "detector.exposure_s": 4}``.
    task : Task or str
    pixels : int
        Detector columns and rows of the small scan.
    max_views : int, optional
        Views simulated at most; d' and CNR are rescaled to the setting's views by
        ``sqrt(views / simulated views)`` (FDK noise variance goes as 1/views).
    flats : int
        Reference frames (many, so that their noise is negligible, as the fast model assumes).

    Returns
    -------
    dict
        ``d_prime``, ``cnr`` (measured, rescaled), ``d_prime_sim``, ``cnr_sim`` (at the simulated
        views), ``d_prime_model``, ``cnr_model`` (fast model, same phantom, same views as the
        setting), ``d_prime_se`` (standard error of the measured d' from its spread over four
        blocks of slices), ``views_simulated``, ``voxel_um``, ``sigma_measured_per_mm``.
    """
    from twin.runtime import init_taichi

    task = parse_task(task) if isinstance(task, str) else task
    init_taichi(arch)
    spec = row_specs(base, [dict(overrides or {})])[0]
    views = int(spec.geometry["projections"])
    v_sim = views if max_views is None else min(views, int(max_views))
    s_def, lay = task_phantom_spec(spec, task, pixels=pixels, views=v_sim, flats=flats,
                                   defect=True, noise=False, seed=seed)
    s_none, _ = task_phantom_spec(spec, task, pixels=pixels, views=v_sim, flats=flats,
                                  defect=False, noise=False, seed=seed)
    s_noisy, _ = task_phantom_spec(spec, task, pixels=pixels, views=v_sim, flats=flats,
                                   defect=False, noise=True, seed=seed)
    v_def = _scan_and_reconstruct(s_def, arch)
    v_none = _scan_and_reconstruct(s_none, arch)
    v_noisy = _scan_and_reconstruct(s_noisy, arch)
    vox_mm = lay["voxel_um"] / 1000.0
    nz, ny, nx = v_none.shape
    # template: a box around the defect
    sig = (v_def - v_none).astype(np.float64)
    cx = (nx - 1) / 2 + lay["offset_mm"] / vox_mm
    cy, cz = (ny - 1) / 2, (nz - 1) / 2
    half_mm = (task.size_um / 2 if task.kind in ("void", "inclusion") else task.extent_um / 2) / 1000.0
    h = int(math.ceil(half_mm / vox_mm)) + 4
    zc, yc, xc = int(round(cz)), int(round(cy)), int(round(cx))
    tmpl = sig[zc - h:zc + h + 1, yc - h:yc + h + 1, xc - h:xc + h + 1]
    noise = (v_noisy - v_none).astype(np.float64)
    # host mask for the noise statistics: inside the host cylinder, away from its edge and
    # from the axis, central rows
    zz, yy, xx = np.mgrid[0:nz, 0:ny, 0:nx]
    r = np.hypot((xx - (nx - 1) / 2) * vox_mm, (yy - (ny - 1) / 2) * vox_mm)
    margin = (h + 1) * vox_mm
    mask = ((r < lay["host_radius_mm"] - margin) & (r > 0.1 * lay["fov_mm"])
            & (np.abs(zz - cz) < 0.3 * nz - h))
    if mask.sum() < 200:
        raise XrmInputError("the host region is too small to measure noise; use more pixels")
    resp = fftconvolve(noise, tmpl[::-1, ::-1, ::-1], mode="same")
    sd_resp = float(np.std(resp[mask]))
    energy = float(np.sum(tmpl ** 2))
    d_sim = energy / sd_resp if sd_resp > 0 else math.inf
    # standard error of the measured d': spread over 4 blocks of slices (independent noise)
    zs = np.nonzero(mask.any(axis=(1, 2)))[0]
    blocks = np.array_split(zs, 4)
    d_blocks = []
    for bz in blocks:
        m = np.zeros_like(mask)
        m[bz] = mask[bz]
        sd = float(np.std(resp[m]))
        if sd > 0:
            d_blocks.append(energy / sd)
    d_se = float(np.std(d_blocks, ddof=1) / math.sqrt(len(d_blocks))) if len(d_blocks) > 1 else math.nan
    sigma = float(np.std(noise[mask]))
    peak = float(np.max(np.abs(tmpl)))
    cnr_sim = peak / sigma if sigma > 0 else math.inf
    scale = math.sqrt(views / v_sim)
    # the fast model for this phantom: host chord through the defect
    chord = mean_chord_mm(lay["host_radius_mm"], lay["offset_mm"])
    ptask = Task(task.kind, task.size_um, task.host, task.fill, task.extent_um, task.normal,
                 ((task.host, chord),), task.text)
    md = s_def.to_toml_dict()  # the simulated scan (phantom, detector, supersampling) ...
    md["geometry"]["projections"] = views  # ... at the setting's views
    md["detector"]["noise"] = True
    model = evaluate(base, None, ptask, specs=[validate(md, base.origin)])
    inner = (np.abs(sig) > 0.5 * peak)
    return {"d_prime": d_sim * scale, "cnr": cnr_sim * scale, "d_prime_sim": d_sim,
            "d_prime_se": d_se * scale,
            "cnr_sim": cnr_sim, "d_prime_model": float(model["d_prime"][0]),
            "cnr_model": float(model["cnr"][0]), "views_simulated": v_sim, "views": views,
            "voxel_um": lay["voxel_um"], "sigma_measured_per_mm": sigma / scale,
            "sigma_model_per_mm": float(model["sigma_voxel_per_mm"][0]),
            "delta_mu_model_per_mm": float(model["delta_mu_per_mm"][0]),
            "peak_signal_per_mm": peak,
            "flat_full_well_fraction": float(model["flat_full_well_fraction"][0]), "defect_voxels_above_half": int(inner.sum()),
            "path_mm": chord}
