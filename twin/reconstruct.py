"""``xrm-twin reconstruct``: an NXtomo file to ``recon.h5`` (a thin layer over :mod:`recon`).

Options come from the scenario's ``[recon]`` table (stored in the file by ``simulate``) and
can be overridden. Keys:

``algorithm`` fdk | fbp | sirt | cgls; ``filter`` ramp window (ram-lak, shepp-logan, cosine,
hamming, hann); ``cutoff``; ``center`` "geometry" | "auto" | offset in pixels;
``ring_removal`` true or {wavelet, level, sigma}; ``beam_hardening`` a reference material name
(linearisation calibrated from the scan's spectrum and detector response); ``denoise``
"none" | "nlm" (paper: kernel 17, smoothing 0.5) | "diffusion" or a table
{method, ...parameters}; ``n_iter``; ``truncation`` auto | chord | edge | none;
``tiff`` true to also write ``recon.tif``; ``filtered_dtype`` float32 | float16, how FDK/FBP
hold the filtered projections for the backprojection. The table is in docs/notes-recon.md.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from twin.errors import XrmInputError, unknown
from twin.nxtomo import read_nxtomo

RECON_KEYS = ("algorithm", "filter", "cutoff", "center", "ring_removal", "beam_hardening", "denoise",
              "n_iter", "truncation", "tiff", "filtered_dtype")


DENOISE_METHODS = ("none", "nlm", "diffusion")
TRUNCATION_MODES = ("auto", "chord", "edge", "none")


def recon_options(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a ``[recon]`` table: unknown keys and values are errors naming the allowed ones.

    Called by scenario validation, so a bad ``[recon]`` value is refused before the scan is
    simulated, not after. What needs the data (the centre search, memory) is checked by the
    stage. Returns the options with their defaults.
    """
    from recon.filters import FILTERED_DTYPES, canonical_filter_name
    from recon.pipeline import ALGORITHMS

    opts = {"algorithm": "fdk", "filter": "ram-lak", "cutoff": 1.0, "center": "geometry",
            "ring_removal": False, "beam_hardening": None, "denoise": "none", "n_iter": None,
            "truncation": "auto", "tiff": False, "filtered_dtype": "float32"}
    for k, v in (table or {}).items():
        if k not in RECON_KEYS:
            raise unknown("key in [recon]", k, RECON_KEYS)
        opts[k] = v
    if opts["algorithm"] not in ALGORITHMS:
        raise unknown("recon.algorithm", opts["algorithm"], ALGORITHMS)
    try:
        canonical_filter_name(opts["filter"])
    except XrmInputError as exc:
        raise XrmInputError(f"recon.filter: {exc}") from None
    if not _is_number(opts["cutoff"]) or not 0.0 < float(opts["cutoff"]) <= 1.0:
        raise XrmInputError(f"recon.cutoff must be a number in (0, 1] (fraction of Nyquist), "
                            f"got {opts['cutoff']!r}")
    if opts["center"] not in ("geometry", "auto") and not _is_number(opts["center"]):
        raise XrmInputError(f"recon.center must be 'geometry', 'auto' or an offset in pixels, "
                            f"got {opts['center']!r}")
    if opts["truncation"] not in TRUNCATION_MODES and opts["truncation"] is not None:
        raise unknown("recon.truncation", opts["truncation"], TRUNCATION_MODES)
    if opts["n_iter"] is not None and (not isinstance(opts["n_iter"], int) or isinstance(opts["n_iter"], bool)
                                       or opts["n_iter"] < 1):
        raise XrmInputError(f"recon.n_iter must be an integer >= 1, got {opts['n_iter']!r}")
    if not isinstance(opts["ring_removal"], (bool, Mapping)):
        raise XrmInputError("recon.ring_removal must be true, false or a table "
                            f"{{wavelet, level, sigma}}, got {opts['ring_removal']!r}")
    if not isinstance(opts["tiff"], bool):
        raise XrmInputError(f"recon.tiff must be true or false, got {opts['tiff']!r}")
    bh = opts["beam_hardening"]
    if bh not in (None, False) and (not isinstance(bh, str) or not bh):
        raise XrmInputError(f"recon.beam_hardening must be a reference material name, got {bh!r}")
    den = opts["denoise"]
    method = den.get("method", "nlm") if isinstance(den, Mapping) else den
    if method in (None, False):
        method = "none"
    if method not in DENOISE_METHODS:
        raise unknown("recon.denoise method", method, DENOISE_METHODS)
    if opts["filtered_dtype"] not in FILTERED_DTYPES:
        raise unknown("recon.filtered_dtype", opts["filtered_dtype"], FILTERED_DTYPES)
    return opts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _beam_hardening_table(scenario: Mapping[str, Any] | None, material: str) -> dict[str, Any]:
    from twin.materials import get_material
    from twin.plan import resolve
    from twin.scenario import validate

    if scenario is None:
        raise XrmInputError("recon.beam_hardening needs the scan's spectrum: the file carries no "
                            "xrm-twin scenario")
    plan = resolve(validate(scenario), with_scene=False)
    return {"energies_kev": plan.energy_kev, "weights": plan.weights[1],
            "mu_ref_per_mm": get_material(material).mu_per_mm(plan.energy_kev)}


def _provenance(scenario: Mapping[str, Any] | None, geometry, mean_energy_kev: float | None) -> dict[str, Any]:
    """What ``xrm-twin measure`` puts in its report from a ``recon.h5``: the scenario's name and
    tube voltage, the magnification, the spectrum's mean energy (only those known)."""
    out: dict[str, Any] = {"magnification": float(geometry.geometric_magnification)}
    if scenario:
        out["scenario"] = str(scenario.get("name", ""))
        kvp = (scenario.get("source") or {}).get("kvp")
        if isinstance(kvp, (int, float)) and not isinstance(kvp, bool):
            out["kvp"] = float(kvp)
    if mean_energy_kev is not None:
        out["mean_energy_kev"] = float(mean_energy_kev)
    return out


def _denoise(volume: np.ndarray, spec, quiet: bool = True) -> np.ndarray:
    from recon import denoise
    from twin.progress import progress_bar

    if spec in (None, False, "none"):
        return volume
    params = dict(spec) if isinstance(spec, Mapping) else {"method": spec}
    method = params.pop("method", "nlm")
    if method == "nlm":
        if volume.ndim == 3 and params.get("per_slice", True):
            with progress_bar("denoise (non-local means)", volume.shape[0], quiet) as advance:
                return denoise.nl_means(volume, progress=advance, **params)
        return denoise.nl_means(volume, **params)
    if method == "diffusion":
        return denoise.anisotropic_diffusion(volume, **params)
    raise unknown("recon.denoise method", method, DENOISE_METHODS)


def reconstruct_nxtomo(path: str | Path, out_dir: str | Path, *, options: Mapping[str, Any] | None = None,
                       arch: str = "auto", quiet: bool = False) -> dict[str, Any]:
    """Reconstruct ``path`` (NXtomo) into ``out_dir/recon.h5``.

    The volume is placed in the sample's own frame: the file's ``sample_center_mm`` (the
    sample point put on the rotation axis) is added to the origin.

    Returns a summary with ``timing_s.reconstruct``, ``voxel_size_um``, ``origin_mm``, ``shape``.
    """
    from recon.io import write_recon, write_tiff_stack
    from recon.pipeline import reconstruct
    from twin.runtime import init_taichi

    t0 = time.perf_counter()
    arch_used = init_taichi(arch)
    data = read_nxtomo(path)
    g = data["geometry"]
    if g is None:
        raise XrmInputError(f"{path}: no geometry (entry/xrm_twin): only files written by xrm-twin "
                            "carry the cone-beam distances needed here")
    scenario = data["scenario"]
    table = dict((scenario or {}).get("recon", {}))
    table.update(options or {})
    opts = recon_options(table)
    bh = None
    if opts["beam_hardening"]:
        bh = _beam_hardening_table(scenario, str(opts["beam_hardening"]))
    rings = opts["ring_removal"]
    trunc = None if opts["truncation"] in (None, "none") else opts["truncation"]
    result = reconstruct(data["projections"], g, flats=data["flats"], darks=data["darks"],
                         angles_deg=data["angles_deg"], algorithm=opts["algorithm"],
                         filter=opts["filter"], cutoff=float(opts["cutoff"]), center=opts["center"],
                         ring_removal=rings if rings else None, beam_hardening_spectrum=bh,
                         truncation_mode=trunc, n_iter=opts["n_iter"], arch=arch_used,
                         progress=not quiet, filtered_dtype=str(opts["filtered_dtype"]))
    volume = _denoise(result.volume, opts["denoise"], quiet=quiet)
    origin = tuple(float(o) + float(c) for o, c in zip(result.origin_mm, data["sample_center_mm"]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    denoised = volume is not result.volume
    write_recon(out / "recon.h5", volume, result.voxel_size_um, origin,
                attrs={"algorithm": opts["algorithm"], "center_offset_px": result.center_offset_px,
                       **_provenance(scenario, g, data.get("mean_energy_kev")),
                       # relative to the output: the same run in another folder, the same bytes
                       "source_file": os.path.relpath(path, out)},
                undenoised=result.volume if denoised else None)
    if opts["tiff"]:
        write_tiff_stack(out / "recon.tif", volume, result.voxel_size_um)
    return {"voxel_size_um": result.voxel_size_um, "origin_mm": list(origin),
            "shape_zyx": list(volume.shape), "algorithm": opts["algorithm"],
            "center_offset_px": result.center_offset_px, "options": {k: v for k, v in opts.items()},
            "timing_s": {"reconstruct": time.perf_counter() - t0}, "volume": volume,
            "volume_undenoised": result.volume if denoised else None}
