"""One entry point: raw counts (or line integrals) + geometry + options -> volume in 1/mm.

Order of operations, per slab of the output volume for FDK/FBP (only the detector rows a slab
needs are read, so projections may be an ``h5py`` dataset or a memory map):

1. flat/dark correction and -log (:mod:`recon.preprocess`), when flats and darks are given;
2. ring removal on each row's sinogram (:mod:`recon.rings`);
3. beam-hardening linearisation (:mod:`recon.beam_hardening`);
4. centre of rotation: the geometry's, a given offset, or estimated (:mod:`recon.cor`);
5. truncation handling for interior scans (:mod:`recon.truncation`);
6. FDK/FBP (:mod:`recon.fdk`) slab by slab, or SIRT/CGLS (:mod:`recon.iterative`) at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from recon import beam_hardening, cor, fdk as fdk_mod, iterative, preprocess, rings, truncation
from recon import voxel_projector as vp
from recon.filters import FILTERED_DTYPES
from twin.errors import XrmInputError, unknown
from twin.geometry import ScanGeometry
from twin.runtime import current_arch, init_taichi

ALGORITHMS = ("fdk", "fbp", "sirt", "cgls")
_log = logging.getLogger("xrm_twin")


@dataclass(frozen=True)
class ReconResult:
    """A reconstructed volume placed in the sample frame.

    Attributes
    ----------
    volume : ndarray, shape (nz, ny, nx), float32
        Linear attenuation in 1/mm.
    voxel_size_um : float
    origin_mm : (x, y, z)
        Centre of voxel [0, 0, 0].
    geometry : ScanGeometry
        The geometry used (with the estimated centre of rotation, if any).
    center_offset_px : float
        COR offset applied, detector pixels.
    """

    volume: np.ndarray
    voxel_size_um: float
    origin_mm: tuple[float, float, float]
    geometry: ScanGeometry
    center_offset_px: float


def _progress(enabled: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total} slabs"), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=True)


def _row_block(data, flats, darks, r0: int, r1: int, min_transmission: float) -> np.ndarray:
    block = np.asarray(data[:, r0:r1, :])
    if flats is None:
        return np.asarray(block, dtype=np.float32)
    f = np.asarray(flats)[..., r0:r1, :] if np.asarray(flats).ndim == 3 else np.asarray(flats)[r0:r1]
    d = np.asarray(darks)[..., r0:r1, :] if np.asarray(darks).ndim == 3 else np.asarray(darks)[r0:r1]
    return preprocess.line_integrals_from_counts(block, f, d, min_transmission=min_transmission)


def _view_chunks(p: np.ndarray, pad_cols: int, slab_bytes: int):
    """(v0, v1) chunks of views for weighting, filtering and backprojecting a slab.

    On the CPU the chunk's temporaries (truncation extension, weights, spectrum: about 24 bytes
    per extended detector pixel) stay within a quarter of the rows and the slab they feed
    (:func:`recon.fdk.fdk_view_chunk`, as CPU FDK does); on CUDA one chunk, the whole stack,
    so the slab stays on the device for every view.
    """
    n_views = p.shape[0]
    if current_arch() == "cuda":
        yield 0, n_views
        return
    budget = min(fdk_mod.FDK_CHUNK_BYTES, max(fdk_mod.FDK_MIN_CHUNK_BYTES, (p.nbytes + slab_bytes) // 4))
    step = fdk_mod.fdk_view_chunk(p.shape[1], p.shape[2] + 2 * int(pad_cols), n_views, budget)
    for v0 in range(0, n_views, step):
        yield v0, min(v0 + step, n_views)


def _corrections(p: np.ndarray, ring_opts, bh_opts) -> np.ndarray:
    if ring_opts is not None:
        p = rings.remove_rings(p, **ring_opts)
    if bh_opts is not None:
        p = beam_hardening.linearise(p, bh_opts["energies_kev"], bh_opts["weights"],
                                     bh_opts["mu_ref_per_mm"],
                                     target_mu_per_mm=bh_opts.get("target_mu_per_mm"))
    preprocess.require_finite("line integrals", p)
    return p


def reconstruct(data: Any, geometry: ScanGeometry, *, flats: np.ndarray | None = None,
                darks: np.ndarray | None = None, angles_deg: np.ndarray | None = None,
                algorithm: str = "fdk", filter: str = "ram-lak", cutoff: float = 1.0,
                vol_shape: tuple[int, int, int] | None = None, voxel_size_um: float | None = None,
                origin_mm: tuple[float, float, float] | None = None,
                center: str | float = "geometry", ring_removal: bool | Mapping | None = None,
                beam_hardening_spectrum: Mapping | None = None,
                truncation_mode: str | None = "auto", n_iter: int | None = None,
                slab_voxels: int | None = None, max_bytes: int | None = None,
                min_transmission: float = 1e-6, arch: str = "cpu",
                progress: bool = True, filtered_dtype: str = "float32") -> ReconResult:
    """Reconstruct a scan.

    Parameters
    ----------
    data : array-like, shape (V, R, C)
        Raw counts (when ``flats`` and ``darks`` are given) or line integrals ``-log(I/I0)``.
        Anything sliceable as ``data[:, r0:r1, :]`` (numpy, memmap, h5py dataset).
    geometry : ScanGeometry
    flats, darks : ndarray, shape (n, R, C), optional
        Flat and dark fields. Give both or neither.
    angles_deg : ndarray, shape (V,), optional
        View angles (default ``geometry.angles_deg``).
    algorithm : {"fdk", "fbp", "sirt", "cgls"}
        ``"fdk"`` and ``"fbp"`` pick the analytic method that fits the beam.
    filter, cutoff
        Ramp filter window and cutoff (analytic methods).
    vol_shape, voxel_size_um, origin_mm
        Output grid (default: the field of view at the geometry's voxel size).
    center : "geometry" | "auto" | float
        Keep the geometry's rotation axis, estimate it (:func:`recon.cor.find_center_of_rotation`)
        or apply an offset in detector pixels.
    ring_removal : bool or mapping, optional
        True for defaults, or keyword arguments of :func:`recon.rings.remove_rings`.
    beam_hardening_spectrum : mapping, optional
        ``{"energies_kev", "weights", "mu_ref_per_mm"[, "target_mu_per_mm"]}`` for
        :func:`recon.beam_hardening.linearise`.
    truncation_mode : {"auto", "chord", "edge", None}
        Extension of truncated rows; ``"auto"`` applies ``"chord"`` when the detector edges
        carry signal.
    n_iter : int, optional
        Iterations (SIRT default 100, CGLS default 20).
    slab_voxels : int, optional
        z slices per slab (FDK/FBP); default from ``max_bytes``.
    max_bytes : int, optional
        Working memory allowed (default 50 % of the available memory).
    min_transmission : float
        Floor of the transmission before -log.
    arch : {"cpu", "cuda", "auto"}
    progress : bool
        Show a rich progress bar.
    filtered_dtype : {"float32", "float16"}
        How FDK/FBP hold the filtered projections for the backprojection
        (:func:`recon.voxel_projector.backproject`; float16 halves the bytes a GPU reads).

    Returns
    -------
    ReconResult
    """
    init_taichi(arch)
    if algorithm not in ALGORITHMS:
        raise unknown("reconstruction algorithm (recon.algorithm)", algorithm, ALGORITHMS)
    if filtered_dtype not in FILTERED_DTYPES:
        raise unknown("dtype of the filtered projections (recon.filtered_dtype)", filtered_dtype,
                      FILTERED_DTYPES)
    if (flats is None) != (darks is None):
        missing = "dark fields" if darks is None else "flat fields"
        raise XrmInputError(f"{missing} are missing: give both flats and darks, or line integrals "
                            "without either")
    shape = tuple(getattr(data, "shape", ()))
    ang = geometry.angles_deg if angles_deg is None else np.asarray(angles_deg, dtype=np.float64)
    if len(shape) != 3 or shape != (len(ang), geometry.rows, geometry.cols):
        raise XrmInputError(f"projections have shape {shape} but the geometry gives (views, rows, cols) "
                            f"= ({len(ang)}, {geometry.rows}, {geometry.cols})")
    if truncation_mode not in (None, "auto") + truncation.METHODS:
        raise unknown("truncation mode", truncation_mode, ("auto",) + truncation.METHODS)
    ring_opts = None
    if ring_removal:
        ring_opts = {} if ring_removal is True else dict(ring_removal)
    bh_opts = dict(beam_hardening_spectrum) if beam_hardening_spectrum is not None else None
    limit = int(0.5 * fdk_mod.available_memory_bytes()) if max_bytes is None else int(max_bytes)

    d_shape, d_vox, _ = fdk_mod.default_volume(geometry)
    vol_shape = tuple(int(n) for n in (vol_shape or d_shape))
    vox = float(voxel_size_um or d_vox)
    origin = tuple(origin_mm) if origin_mm is not None else fdk_mod.centred_origin(vol_shape, vox)
    vp.volume_grid_checks(vol_shape, vox, origin)

    # centre of rotation
    offset_px = 0.0
    geom = geometry
    if center == "auto":
        r0, r1 = cor._central_rows(geometry)
        rows = _corrections(_row_block(data, flats, darks, max(r0 - 0, 0), r1, min_transmission),
                            ring_opts, bh_opts)
        # only the central rows are read by the COR estimators; np.zeros maps untouched pages
        # lazily, so the rest of this array costs no physical memory
        full = np.zeros((shape[0], geometry.rows, geometry.cols), np.float32)
        full[:, r0:r1] = rows
        offset_px = cor.find_center_of_rotation(full, geometry, angles_deg=ang, arch=arch)
        geom = cor.apply_center_offset(geometry, offset_px)
        _log.info("centre of rotation: %.2f px", offset_px)
    elif center != "geometry":
        try:
            offset_px = float(center)
        except (TypeError, ValueError):
            raise XrmInputError(f"center must be 'geometry', 'auto' or a number of pixels, got {center!r}") from None
        geom = cor.apply_center_offset(geometry, offset_px)

    if algorithm in ("sirt", "cgls"):
        need = 4 * 5 * (int(np.prod(vol_shape)) + int(np.prod(shape)))
        if need > limit:
            raise XrmInputError(f"{algorithm} needs about {need / 2**30:.2f} GiB for {shape} projections "
                                f"and a {vol_shape} volume; {limit / 2**30:.2f} GiB allowed")
        p = _corrections(_row_block(data, flats, darks, 0, shape[1], min_transmission), ring_opts, bh_opts)
        fn = iterative.sirt if algorithm == "sirt" else iterative.cgls
        kw = {} if n_iter is None else {"n_iter": int(n_iter)}
        vol = fn(p, geom, angles_deg=ang, vol_shape=vol_shape, voxel_size_um=vox, origin_mm=origin,
                 arch=arch, max_bytes=limit, **kw)
        return ReconResult(vol, vox, origin, geom, offset_px)

    # analytic: slab by slab
    plan = fdk_mod.plan_fdk(geom, angles_deg=ang, filter=filter, cutoff=cutoff)
    nz, ny, nx = vol_shape
    h = vox / 1000.0
    bytes_per_row = 4 * shape[0] * shape[2] * (3 if truncation_mode is None else 9)
    if slab_voxels is None:
        slab = nz
        while slab > 1:
            lo = np.array([origin[0] - h, origin[1] - h, origin[2] - h])
            hi = lo + np.array([nx + 1, ny + 1, slab + 1]) * h
            r0, r1 = vp.detector_rows_for_box(plan.matrices, lo, hi, geometry.rows)
            if 4 * slab * ny * nx + bytes_per_row * max(r1 - r0, 1) <= limit:
                break
            slab = max(1, slab // 2)
    else:
        slab = max(1, int(slab_voxels))
    volume = np.zeros(vol_shape, np.float32)
    do_trunc = truncation_mode is not None
    if truncation_mode == "auto":  # decided once, on the central rows, for every slab alike
        c0, c1 = cor._central_rows(geometry)
        do_trunc = truncation.is_truncated(_row_block(data, flats, darks, c0, c1, min_transmission))
    trunc_plan = None
    with _progress(progress) as bar:
        task = bar.add_task("reconstruct", total=int(np.ceil(nz / slab)))
        for z0 in range(0, nz, slab):
            z1 = min(z0 + slab, nz)
            o = (origin[0], origin[1], origin[2] + z0 * h)
            lo = np.array([o[0] - h, o[1] - h, o[2] - h])
            hi = np.array([o[0] + nx * h, o[1] + ny * h, o[2] + (z1 - z0) * h])
            r0, r1 = vp.detector_rows_for_box(plan.matrices, lo, hi, geometry.rows)
            if r1 <= r0:
                bar.advance(task)
                continue
            need = 4 * (z1 - z0) * ny * nx + bytes_per_row * (r1 - r0)
            if need > limit:
                raise XrmInputError(f"one slab of {z1 - z0} slices needs {need / 2**30:.2f} GiB "
                                    f"({r1 - r0} detector rows x {shape[0]} views x {shape[2]} columns) "
                                    f"but {limit / 2**30:.2f} GiB are allowed; reduce the volume width "
                                    "or the number of views")
            p = _corrections(_row_block(data, flats, darks, r0, r1, min_transmission), ring_opts, bh_opts)
            slab_plan, pad = plan, 0
            if do_trunc:
                pad = geometry.cols
                if trunc_plan is None:
                    trunc_plan = fdk_mod.plan_fdk(truncation.extended_geometry(geom, pad),
                                                  angles_deg=ang, filter=filter, cutoff=cutoff)
                slab_plan = trunc_plan
            method = "chord" if truncation_mode == "auto" else truncation_mode
            target = volume[z0:z1]
            for v0, v1 in _view_chunks(p, pad, target.nbytes):
                # extension, weights and ramp filter act on each (view, row) line alone, and the
                # backprojection adds into the slab: a chunk of views at a time is the same sum
                sub = fdk_mod.plan_views(slab_plan, v0, v1)
                p_use = p[v0:v1] if not do_trunc else truncation.extend_truncated(
                    p[v0:v1], pad_cols=pad, method=method)
                filt = fdk_mod.weight_and_filter(p_use, sub, row0=r0)
                del p_use
                vp.backproject(filt, sub.matrices, sub.view_weights, (z1 - z0, ny, nx), vox, o,
                               row0=r0, out=target, filtered_dtype=filtered_dtype)
                del filt
            bar.advance(task)
    return ReconResult(volume, vox, origin, geom, offset_px)
