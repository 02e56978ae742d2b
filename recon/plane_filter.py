"""Large, faint planar cracks: an oriented matched filter instead of the local Hessian.

:func:`recon.defects.detect_cracks` reads the Hessian at one small scale: it sees cracks that
are dark against their noise voxel by voxel. A crack a few voxels wide in a low-contrast paste
(the NiMH positive electrode at 140 kV: KOH against Ni(OH)2 paste, 0.02 /mm mean deficit over
a 3-voxel crack against a voxel noise of 0.13 /mm) is not, and the Ni foam struts around it
give the Hessian dark "sheets" between bright struts everywhere. Such a crack is large (0.3
mm^2 here), so averaging along its plane recovers it: the response at a voxel, for a unit
normal ``n``, is

    R_n = sigma_n^2 d^2/dn^2 (G_n * v)

with ``G_n`` an anisotropic Gaussian of ``sigma_n`` across the plane and ``sigma_p`` in it
(a matched filter for a sheet, positive across a dark one), and ``R = max_n R_n`` over a set
of normals. The filter is applied in Fourier space (one real FFT of the volume, one inverse
per normal). Bright inclusions (foam struts, particles) are set to the local host level first,
so only darker-than-host structure responds.

Detection is a hysteresis threshold of ``R`` (seeds at ``k_high`` robust SDs above the host's
median, grown down to ``k_low``), then 26-connected components large in the plane
(``>= (2 sigma_p)^2`` voxel faces) and thin across it. The orientation of a detection is the
normal that won most of its voxels.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from recon import slabs
from recon.defects import flat_voxels
from recon.local_level import masked_gaussian_mean
from recon.segmentation import check_volume, hysteresis_threshold, label_instances, lookup_labels
from recon.thickness import isotropic_voxel_um
from twin.errors import XrmInputError

__all__ = ["hemisphere_normals", "plane_filter", "detect_planar_cracks"]

#: the FFT path holds about this many float32 copies of the volume at once
_WORK_COPIES = 8
#: voxels of one block of planes inverted at a time along y and x (a float32 block of 4 MiB)
_INVERSE_BLOCK_VOXELS = 1 << 20


def hemisphere_normals(max_spacing_deg: float = 20.0) -> np.ndarray:
    """Unit normals (z, y, x) spread over a hemisphere (Fibonacci lattice).

    ``n`` and ``-n`` are the same plane, so a hemisphere (z >= 0) covers every orientation. The
    number of points gives a mean nearest-neighbour spacing of about ``max_spacing_deg``.

    Returns
    -------
    ndarray of float, shape (n, 3)
    """
    if not 2.0 <= max_spacing_deg <= 90.0:
        raise XrmInputError(f"max_spacing_deg must be in [2, 90], got {max_spacing_deg}")
    # hemisphere area 2 pi; one point per spacing^2
    n = max(3, int(math.ceil(2.0 * math.pi / math.radians(max_spacing_deg) ** 2)))
    i = np.arange(n) + 0.5
    z = 1.0 - i / n                                    # uniform in z over (0, 1]: equal areas
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.column_stack([z, r * np.sin(phi), r * np.cos(phi)])


def plane_filter(volume: np.ndarray, normals_zyx: np.ndarray, *, sigma_across_vox: float = 1.5,
                 sigma_plane_vox: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Oriented sheet response ``R = max_n sigma_n^2 d^2/dn^2 (G_n * v)`` (see module doc).

    Parameters
    ----------
    volume : ndarray of float, shape (nz, ny, nx)
        Grey levels (1/mm); dark sheets give positive ``R``. Periodic boundaries (FFT): pad
        or mask the outer ``2 sigma_plane_vox`` voxels.
    normals_zyx : ndarray, shape (m, 3)
        Plane normals tried (normalised here).
    sigma_across_vox, sigma_plane_vox : float
        Gaussian widths across and along the plane (voxels).

    Returns
    -------
    response : ndarray of float32, shape (nz, ny, nx)
        In the volume's units (a dark sheet of width ``w`` and depth ``c`` gives about
        ``c w sigma_n^2 / (sqrt(2 pi) s^3)``, ``s^2 = sigma_n^2 + (w/2)^2/3``... for w << s).
    best : ndarray of int8 (int16 past 127 normals), shape (nz, ny, nx)
        Index of the winning normal.
    """
    from scipy import fft

    v, nrm = _checked(volume, normals_zyx, sigma_across_vox, sigma_plane_vox)
    return _filter_bank(fft.rfftn(v, workers=-1), v.shape, nrm, sigma_across_vox, sigma_plane_vox)


def _checked(volume, normals_zyx, sigma_across_vox: float, sigma_plane_vox: float):
    """(volume as float32, unit normals), or an error before any work (memory included)."""
    v = check_volume(volume).astype(np.float32, copy=False)
    nrm = np.asarray(normals_zyx, float).reshape(-1, 3)
    nrm = nrm / np.linalg.norm(nrm, axis=1, keepdims=True)
    if sigma_across_vox <= 0 or sigma_plane_vox <= 0:
        raise XrmInputError("plane_filter: the Gaussian widths must be positive")
    need = _WORK_COPIES * v.nbytes
    try:
        import psutil
        avail = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover - psutil is a dependency of dask
        avail = None
    if avail is not None and need > avail:
        raise XrmInputError(f"plane_filter on {v.shape} needs about {need / 2**30:.1f} GiB, "
                            f"{avail / 2**30:.1f} GiB free: crop the volume")
    return v, nrm


def _filter_bank(X: np.ndarray, shape, nrm: np.ndarray, sigma_across_vox: float,
                 sigma_plane_vox: float) -> tuple[np.ndarray, np.ndarray]:
    """The response and winning normal from the volume's spectrum ``X`` (``rfftn``).

    For each normal the filtered spectrum ``Y`` is inverted along z in its own array, then
    a block of planes at a time along y and x (after the z pass the planes are independent:
    the same 1-D transforms as ``irfftn``), so no whole inverse image is held. Memory: ``X``,
    ``Y``, the response and the index, about 3.25 float32 volumes, plus one block.
    """
    from scipy import fft

    from recon.voxel_kernels import get_kernels

    Y = np.empty_like(X)
    resp = np.full(shape, -np.inf, np.float32)
    small = len(nrm) <= np.iinfo(np.int8).max
    best = np.zeros(shape, np.int8 if small else np.int16)
    k = get_kernels()
    keep_max = k["keep_max_i8" if small else "keep_max"]
    Xf, Yf = X.view(np.float32).reshape(X.shape + (2,)), Y.view(np.float32).reshape(Y.shape + (2,))
    block_voxels = min(_INVERSE_BLOCK_VOXELS, max(1, int(np.prod(shape)) // 32))  # small volumes too
    planes = max(1, block_voxels // max(1, shape[1] * shape[2]))
    for i, n in enumerate(nrm):
        k["sheet"](Xf, Yf, shape[0], shape[1], shape[2], float(n[0]), float(n[1]),
                   float(n[2]), float(sigma_across_vox) ** 2, float(sigma_plane_vox) ** 2)
        # Y is rewritten from X for every normal: the z pass may work in its place
        Z = fft.ifft(Y, axis=0, workers=-1, overwrite_x=True)
        for z0 in range(0, shape[0], planes):
            z1 = min(z0 + planes, shape[0])
            r = fft.irfft2(Z[z0:z1], s=tuple(shape[1:]), axes=(1, 2), workers=-1)
            keep_max(np.ascontiguousarray(r, np.float32), resp[z0:z1], best[z0:z1], i)
        del Z, r
    return resp, best


def _relative(v: np.ndarray, level: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``v - level`` where ``keep``, 0 elsewhere (float32, one new array)."""
    rel = np.subtract(v, level, dtype=np.float32)
    rel[~keep] = 0.0
    return rel


def _local_level(v: np.ndarray, mask: np.ndarray, sigma_vox: float, box=None) -> np.ndarray:
    """The host's local grey level: the Gaussian mean of ``v`` over ``mask``
    (:func:`recon.local_level.masked_gaussian_mean`), its median far from the mask; only in
    ``box`` (3 slices) when given."""
    med = float(np.median(v[mask], overwrite_input=True))
    return masked_gaussian_mean(v, mask, sigma_vox, fill=med, box=box)


class _Masks:
    """Boolean volumes of one shape kept as bits of one uint8 volume (8 masks in the memory
    of one): ``put(name, mask)``, ``get(name[, box])`` (a new bool array)."""

    def __init__(self, shape):
        self.bits = np.zeros(shape, np.uint8)
        self.shift: dict[str, int] = {}

    def put(self, name: str, mask: np.ndarray) -> None:
        if name not in self.shift:
            if len(self.shift) == 8:
                raise ValueError("_Masks holds 8 masks")
            self.shift[name] = len(self.shift)
        k = self.shift[name]
        np.bitwise_and(self.bits, np.uint8(~(1 << k) & 0xFF), out=self.bits)
        self.bits |= np.left_shift(np.asarray(mask, bool).view(np.uint8), k)

    def get(self, name: str, box=()) -> np.ndarray:
        t = np.right_shift(self.bits[box], self.shift[name])
        np.bitwise_and(t, np.uint8(1), out=t)
        return t.view(bool)


def detect_planar_cracks(volume: np.ndarray, host_mask: np.ndarray, voxel_size_um: float, *,
                         origin_mm: Sequence[float] = (0.0, 0.0, 0.0),
                         normals_zyx: np.ndarray | None = None, sigma_across_vox: float = 1.5,
                         sigma_plane_vox: float = 8.0, k_high: float = 10.0, k_low: float = 3.0,
                         bright_k_sigma: float = 3.0, background_sigma_vox: float = 8.0,
                         min_planarity: float = 3.0, contrast_mu: float | None = None,
                         deficit_margin_vox: int = 6, grow_margin_vox: int | None = None,
                         return_voxels: bool = False) -> list[dict[str, Any]]:
    """Find large planar cracks too faint for the voxel-scale Hessian (see module doc).

    Parameters
    ----------
    volume : ndarray of float, shape (nz, ny, nx)
        mu (1/mm) of an undenoised reconstruction (patch denoisers such as non-local means
        leave structured residue that this filter, averaging over thousands of voxels, picks
        up: on the NiMH zoom it raised the host's false response 30-fold).
    host_mask : ndarray of bool, same shape
        Where cracks are searched: seeds in its hole-filled region eroded by
        ``2 sigma_plane_vox`` (the filter's reach), grown (hysteresis) up to ``grow_margin_vox``
        from its surface.
    voxel_size_um : float
    normals_zyx : ndarray, shape (m, 3), optional
        Plane normals tried; default :func:`hemisphere_normals` at 20 degrees (a prior, e.g.
        radial cracks of a wound cell, narrows it).
    sigma_across_vox, sigma_plane_vox : float
        Filter widths (voxels): about half the crack opening, and a quarter of the smallest
        crack extent to find.
    k_high, k_low : float
        Hysteresis thresholds in robust SDs (1.4826 MAD) of the response over the host. On
        the NiMH zoom (320^3 voxels, 10^7 searched, 49 normals) noise alone peaked at 8.1 SD
        and the 11-um crack at 15.7 SD.
    bright_k_sigma : float
        Voxels brighter than the local host level by this many noise SDs (after a 1-voxel
        smoothing), dilated by 2 voxels, are set to the host level before filtering.
    background_sigma_vox : float
        Width of the local host level (removes cupping and composition gradients).
    min_planarity : float
        Smallest ratio of the second in-plane extent to the extent across the plane.
    contrast_mu : float, optional
        ``mu_host - mu_fill`` (1/mm, > 0) for the volume. A difference of table values at the
        scan's effective energy (:func:`twin.defect_scores.grey_calibration`) holds for an
        interior scan, whose grey levels are offset and cupped but whose contrasts are not;
        default: the local host level (gas in an absolute reconstruction).
    grow_margin_vox : int, optional
        Closest approach of a grown detection to the host surface (default ``sigma_plane_vox``).
    deficit_margin_vox : int
        The volume is the contrast deficit over the detection grown by this many voxels.
    return_voxels : bool
        Add ``_voxels`` (flat indices of each detection's voxels, :func:`recon.defects.flat_voxels`) to the
        rows: not JSON, for the caller's defect map.

    Returns
    -------
    list of dict
        ``type="crack"``, ``center_mm`` (x, y, z), ``size_um`` (largest in-plane extent),
        ``area_mm2`` (voxel faces on the plane), ``orientation`` (normal x, y, z),
        ``n_voxels``, ``volume_mm3`` (contrast deficit ``sum (level - v) / contrast_mu``
        over the detection grown by ``deficit_margin_vox``: blur moves grey, it does not
        remove it, so a crack narrower than the blur still sums to its volume), ``opening_um``
        (volume / area), ``host_mu``, ``response_peak_sd``, ``method="plane"``.
    """
    vs = isotropic_voxel_um(voxel_size_um, what="planar crack detection")
    v = check_volume(volume).astype(np.float32, copy=False)
    host = np.asarray(host_mask, bool)
    if host.shape != v.shape or not host.any():
        raise XrmInputError("detect_planar_cracks: host_mask must match the volume and be non-empty")
    normals = hemisphere_normals() if normals_zyx is None else np.asarray(normals_zyx, float)
    reach = int(math.ceil(2.0 * sigma_plane_vox))
    # the masks that outlive the filter bank are kept as bits of one volume (it holds the
    # memory peak: spectrum, filtered spectrum, response and index)
    masks = _Masks(v.shape)
    filled = ndi.binary_fill_holes(host)
    region = slabs.binary_erosion(np.pad(filled, 1), iterations=reach)[1:-1, 1:-1, 1:-1]
    if not region.any():
        raise XrmInputError(f"detect_planar_cracks: the host is thinner than twice the in-plane "
                            f"filter width ({2 * reach} voxels)")
    masks.put("region", region)
    del region
    # bright inclusions to the host level, then everything relative to the local host level
    sm = _local_level(v, host, background_sigma_vox)
    np.subtract(v, sm, out=sm)  # v - level, in the level's array
    slabs.gaussian_filter(sm, 1.0, output=sm)
    inner = host & slabs.binary_erosion(host, iterations=1)
    vals = sm[inner]
    med = float(np.median(vals))
    # noise from the dark half: the bright half holds the inclusions (a few % of the host)
    sd = float(np.percentile(vals, 50.0) - np.percentile(vals, 15.8655))
    del vals
    bright_core = sm > med + bright_k_sigma * max(sd, 1e-12)
    del sm
    bright = slabs.binary_dilation(bright_core, iterations=2)
    masks.put("bright_core", bright_core)
    del bright_core
    host_only = inner & ~bright
    del inner
    if not host_only.any():
        raise XrmInputError("detect_planar_cracks: nothing of the host is left after removing "
                            "its bright inclusions")
    keep = filled & ~bright
    gm = int(math.ceil(sigma_plane_vox if grow_margin_vox is None else grow_margin_vox))
    grow = (slabs.binary_erosion(np.pad(filled, 1), iterations=gm)[1:-1, 1:-1, 1:-1] & keep
            if gm > 0 else keep)
    masks.put("grow", grow)
    del grow
    masks.put("search", masks.get("region") & ~bright)
    del bright
    masks.put("filled", filled)
    del filled
    level = _local_level(v, host_only, background_sigma_vox)
    masks.put("host_only", host_only)
    del host_only
    rel = _relative(v, level, keep)
    masks.put("keep", keep)
    del level, keep  # the level is made again below only where detections need it
    # the spectrum replaces the image it is taken from: the filter bank holds only the former
    from scipy import fft

    rel, nrm = _checked(rel, normals, sigma_across_vox, sigma_plane_vox)
    X = fft.rfftn(rel, workers=-1)
    del rel
    R, best = _filter_bank(X, v.shape, nrm, sigma_across_vox, sigma_plane_vox)
    del X
    search = masks.get("search")
    vals = R[search]
    rm = float(np.median(vals))
    rsd = 1.4826 * float(np.median(np.abs(vals - rm)))
    del vals
    seeds = search & (R > rm + k_high * rsd)
    del search
    cand = hysteresis_threshold(R, rm + k_low * rsd, rm + k_high * rsd, mask=masks.get("grow"))
    if cand.any():  # keep grown components that hold a seed inside the search region
        lab, n_lab = slabs.label(cand, structure=np.ones((3, 3, 3), bool))
        with_seed = np.zeros(n_lab + 1, bool)
        with_seed[lab[seeds & cand]] = True
        with_seed[0] = False
        cand = lookup_labels(with_seed, lab)
        del lab
    inst, n = label_instances(cand, connectivity=3, dtype="smallest")
    del cand, seeds
    # of each detection, what the response tells (its peak, the normal that won most of its
    # voxels) before the response goes
    objects = slabs.find_objects(inst)
    peak_of, normal_of = {}, {}
    for k, sl in enumerate(objects, start=1):
        if sl is not None:
            m = inst[sl] == k
            peak_of[k] = float(R[sl][m].max())
            normal_of[k] = int(np.argmax(np.bincount(best[sl][m], minlength=len(normals))))
    del R, best
    # the deficit is summed outside the inclusions and their halos (both bright: they would
    # cancel deficit) and scaled by the kept fraction of the aperture outside the inclusions
    # themselves: a crack runs up to a strut (its part in the halo is real) but not through
    # it (foam struts bridge cracks in the paste; scaling over the whole aperture read the
    # NiMH crack 35 % high). The annulus is read outside inclusions and halos too.
    if n:  # the host level again without the detections (a crack pulls its own level down)
        host_only = masks.get("host_only")
        away = host_only & ~slabs.binary_dilation(inst > 0, iterations=int(deficit_margin_vox) + 4)
        if not away.any():
            away = host_only
        del host_only
        away_med = float(np.median(v[away]))
    min_area = (2.0 * sigma_plane_vox) ** 2
    rows = []
    for k, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        m = inst[sl] == k
        nrm = normals[normal_of[k]]
        nrm = nrm / np.linalg.norm(nrm)
        coords = np.argwhere(m).astype(float) + np.array([s.start for s in sl], float)
        c0 = coords.mean(axis=0)
        # in-plane axes orthogonal to the winning normal
        a = np.cross(nrm, [1.0, 0.0, 0.0] if abs(nrm[0]) < 0.9 else [0.0, 1.0, 0.0])
        a /= np.linalg.norm(a)
        b = np.cross(nrm, a)
        c = coords - c0
        uv = np.rint(np.column_stack([c @ a, c @ b])).astype(int)
        area_px = len(np.unique(uv, axis=0))
        if area_px < min_area:
            continue
        ext_n = float(np.ptp(c @ nrm)) + 1.0
        ext_in = sorted([float(np.ptp(c @ a)) + 1.0, float(np.ptp(c @ b)) + 1.0])
        if ext_in[0] < min_planarity * min(ext_n, 2.0 * sigma_plane_vox):
            continue
        # aperture photometry: the deficit over the detection grown by `pad` voxels, against
        # the median of an annulus 1-3 voxels beyond it (the local host level without the crack)
        pad = int(deficit_margin_vox)
        out = pad + 4
        sl_g = tuple(slice(max(s.start - out, 0), min(s.stop + out, N)) for s, N in zip(sl, v.shape))
        keep_g = masks.get("keep", sl_g)
        det = np.zeros(keep_g.shape, bool)
        det[tuple(slice(s.start - g.start, s.stop - g.start) for s, g in zip(sl, sl_g))] = m
        grown = slabs.binary_dilation(det, iterations=pad) if pad else det
        ring = slabs.binary_dilation(grown, iterations=3) & ~slabs.binary_dilation(grown) & keep_g
        # the aperture where a crack can be: not inside an inclusion (struts bridge cracks)
        n_aperture = int(np.count_nonzero(grown & masks.get("filled", sl_g)
                                          & ~masks.get("bright_core", sl_g)))
        grown &= keep_g
        kept = np.count_nonzero(grown) / max(n_aperture, 1)
        level_g = masked_gaussian_mean(v, away, background_sigma_vox, fill=away_med, box=sl_g)
        r_g = _relative(v[sl_g], level_g, keep_g)  # v - level in the box only
        base = float(np.median(r_g[ring])) if ring.any() else 0.0
        host_mu = float(np.median(level_g[grown])) + base
        contrast = host_mu if contrast_mu is None else float(contrast_mu)
        deficit = -float((r_g[grown] - base).sum()) / max(kept, 1e-6)   # (1/mm) x voxels
        vol_mm3 = deficit / contrast * (vs / 1000.0) ** 3 if contrast > 0 else None
        area_mm2 = area_px * (vs / 1000.0) ** 2
        rows.append({"type": "crack", "method": "plane",
                     "center_mm": (np.asarray(origin_mm, float) + c0[::-1] * vs / 1000.0).tolist(),
                     "size_um": float(ext_in[1] * vs), "area_mm2": area_mm2,
                     "orientation": nrm[::-1].tolist(), "n_voxels": int(m.sum()),
                     "volume_mm3": vol_mm3,
                     "opening_um": vol_mm3 / area_mm2 * 1000.0 if vol_mm3 is not None else None,
                     "host_mu": host_mu, "contrast_mu": contrast,
                     "response_peak_sd": (peak_of[k] - rm) / max(rsd, 1e-30)})
        if return_voxels:
            rows[-1]["_voxels"] = flat_voxels(m, sl, v.shape)
    return rows
