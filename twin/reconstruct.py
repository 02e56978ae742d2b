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

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from twin.errors import XrmInputError, unknown
from twin.nxtomo import read_nxtomo

RECON_KEYS = ("algorithm", "filter", "cutoff", "center", "ring_removal", "beam_hardening", "denoise",
              "n_iter", "truncation", "tiff", "filtered_dtype")


def recon_options(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a ``[recon]`` table; unknown keys are errors naming the allowed ones."""
    opts = {"algorithm": "fdk", "filter": "ram-lak", "cutoff": 1.0, "center": "geometry",
            "ring_removal": False, "beam_hardening": None, "denoise": "none", "n_iter": None,
            "truncation": "auto", "tiff": False, "filtered_dtype": "float32"}
    for k, v in (table or {}).items():
        if k not in RECON_KEYS:
            raise unknown("key in [recon]", k, RECON_KEYS)
        opts[k] = v
    from recon.filters import FILTERED_DTYPES

    if opts["filtered_dtype"] not in FILTERED_DTYPES:
        raise unknown("recon.filtered_dtype", opts["filtered_dtype"], FILTERED_DTYPES)
    return opts


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
    raise unknown("recon.denoise method", method, ("none", "nlm", "diffusion"))


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
                       "source_file": str(path)},
                undenoised=result.volume if denoised else None)
    if opts["tiff"]:
        write_tiff_stack(out / "recon.tif", volume, result.voxel_size_um)
    return {"voxel_size_um": result.voxel_size_um, "origin_mm": list(origin),
            "shape_zyx": list(volume.shape), "algorithm": opts["algorithm"],
            "center_offset_px": result.center_offset_px, "options": {k: v for k, v in opts.items()},
            "timing_s": {"reconstruct": time.perf_counter() - t0}, "volume": volume,
            "volume_undenoised": result.volume if denoised else None}
