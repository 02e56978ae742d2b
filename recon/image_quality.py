"""Image quality of reconstructed volumes: CNR, MTF (edge method, ASTM E1695 style), 3-D NPS, CDF.

Formulas (``shared/reference/metrology_detectability.md`` B2), one place each:

* ``CNR = |mu_a - mu_b| / sigma_b`` (b is the reference phase whose noise is used);
* MTF: radial ESF(r) of a uniform cylinder binned at ``1/oversample`` voxel around the fitted
  centre -> ``LSF = dESF/dr`` (Hann-windowed) -> ``MTF(f) = |F{LSF}(f)| / |F{LSF}(0)|``, divided
  by the transfer of the binning and the central difference (``sinc(f dr) sinc(2 f dr)``);
* 3-D NPS: ``NPS(f) = (dx dy dz / (Nx Ny Nz)) <|DFT[I_m - mean(I_m)]|^2>_m`` over ROIs (halved
  when computed from difference images);
* CDF(n) = ``3 sigma_n / |mu|`` with ``sigma_n`` the std of n x n block means.

Units: volumes in mu (1/mm); spatial frequencies in cycles/mm; NPS in (1/mm)^2 mm^3 = mm (or in
the volume's units squared times mm^3).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from recon import slabs
from recon.segmentation import check_labels, check_volume
from recon.thickness import isotropic_voxel_um
from twin.errors import XrmInputError

__all__ = ["cnr", "touching_pairs", "cnr_pairs", "fit_circle_center", "radial_esf",
           "mtf_edge_cylinder", "mtf_at", "edge_blur_at_interface", "nps_3d", "nps_radial",
           "cdf_blocks"]


def _stats(volume: np.ndarray, mask: np.ndarray, erode_vox: int) -> tuple[float, float, int]:
    m = mask
    if erode_vox > 0:
        e = slabs.binary_erosion(mask, iterations=int(erode_vox))
        m = e if np.count_nonzero(e) >= 10 else mask
    vals = volume[m]
    if vals.size < 2:
        raise XrmInputError("CNR: a phase has fewer than 2 voxels")
    return float(vals.mean()), float(vals.std(ddof=1)), int(vals.size)


def cnr(volume: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray, *, erode_vox: int = 1
        ) -> float:
    """Contrast-to-noise ratio ``|mu_a - mu_b| / sigma_b``.

    Parameters
    ----------
    volume : ndarray of float, shape (nz, ny, nx)
    mask_a, mask_b : ndarray of bool, same shape
        Feature and reference (background) phase; ``sigma_b`` is the reference's noise.
    erode_vox : int
        Erode both masks by this many voxels first (keeps partial-volume edges out).
    """
    v = check_volume(volume)
    ma, sa, _ = _stats(v, np.asarray(mask_a, bool), erode_vox)
    mb, sb, _ = _stats(v, np.asarray(mask_b, bool), erode_vox)
    if sb <= 0:
        raise XrmInputError("CNR: the reference phase has zero noise (std 0)")
    return abs(ma - mb) / sb


def touching_pairs(labels: np.ndarray, *, min_contact_voxels: int = 1,
                   slab: int = 32) -> list[tuple[int, int]]:
    """Pairs (a, b), a < b, of labels > 0 that share a face somewhere.

    The faces are counted slab by slab (``slab`` planes along z at a time), so the
    temporaries are a slab's, not the volume's.
    """
    lab = np.asarray(labels)
    base = int(lab.max(initial=0)) + 1
    counts: dict[int, int] = {}

    def add(u: np.ndarray, w: np.ndarray) -> None:
        sel = (u != w) & (u > 0) & (w > 0)
        if not sel.any():
            return
        us, ws = u[sel].astype(np.int64), w[sel].astype(np.int64)
        ks, cs = np.unique(np.minimum(us, ws) * base + np.maximum(us, ws), return_counts=True)
        for k, c in zip(ks.tolist(), cs.tolist()):
            counts[k] = counts.get(k, 0) + c

    nz = lab.shape[0]
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        block = lab[z0:z1]
        add(block[:, :-1], block[:, 1:])          # faces along y
        add(block[:, :, :-1], block[:, :, 1:])    # faces along x
        if z1 < nz:                               # faces along z, the next slab's first plane included
            nxt = lab[z0 + 1:z1 + 1]
            add(block, nxt)
        elif z1 - z0 > 1:
            add(block[:-1], block[1:])
    return sorted(divmod(k, base) for k, c in counts.items() if c >= max(int(min_contact_voxels), 1))


def cnr_pairs(volume: np.ndarray, labels: np.ndarray, names: Mapping[int, str], *,
              erode_vox: int = 1, include_background: bool = True, min_contact_voxels: int = 1
              ) -> dict[str, dict[str, float]]:
    """CNR of every pair of touching components (report.json ``detectability.cnr``).

    Parameters
    ----------
    volume : ndarray of float, shape (nz, ny, nx)
    labels : ndarray of int, same shape
        0 is background (air); it enters as ``names.get(0, "air")`` if ``include_background``.
    names : dict of int to str
    erode_vox : int
        Erosion of each phase before taking statistics.

    Returns
    -------
    dict
        ``{"a/b": {"cnr", "mu_a", "mu_b", "sigma_a", "sigma_b"}}`` with ``a`` the lower label;
        ``cnr = |mu_a - mu_b| / sigma_b`` (b's noise).
    """
    v = check_volume(volume)
    lab = check_labels(labels)
    if v.shape != lab.shape:
        raise XrmInputError(f"volume {v.shape} and labels {lab.shape} must have the same shape")
    nm = dict(names)
    if include_background:
        nm.setdefault(0, "air")
        top = int(lab.max(initial=0)) + 1
        work = lab.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int64)
        work += 1  # background becomes 1 so it counts as touching
        pairs = [(a - 1, b - 1) for a, b in touching_pairs(work, min_contact_voxels=min_contact_voxels)]
        del work
    else:
        pairs = touching_pairs(lab, min_contact_voxels=min_contact_voxels)
    # each phase's statistics inside its bounding box (grown by the erosion and one voxel):
    # the same voxels in the same order as over the whole array, at the cost of the box
    boxes = slabs.find_objects(lab.view(np.uint8) if lab.dtype == bool else lab) if lab.size else []
    grow = int(erode_vox) + 1

    def phase_stats(k: int) -> tuple[float, float, int]:
        if k <= 0 or k > len(boxes) or boxes[k - 1] is None:
            return _stats(v, lab == k, erode_vox)
        box = tuple(slice(max(b.start - grow, 0), min(b.stop + grow, n))
                    for b, n in zip(boxes[k - 1], lab.shape))
        return _stats(v[box], lab[box] == k, erode_vox)

    out = {}
    stats_cache: dict[int, tuple[float, float, int]] = {}
    for a, b in pairs:
        if a not in nm or b not in nm:
            continue
        for k in (a, b):
            if k not in stats_cache:
                stats_cache[k] = phase_stats(k)
        (ma, sa, _), (mb, sb, _) = stats_cache[a], stats_cache[b]
        out[f"{nm[a]}/{nm[b]}"] = {"cnr": abs(ma - mb) / sb if sb > 0 else float("inf"),
                                   "mu_a": ma, "mu_b": mb, "sigma_a": sa, "sigma_b": sb}
    return out


# ------------------------------------------------------------------------------------ MTF
def fit_circle_center(image: np.ndarray, *, level: float | None = None
                      ) -> tuple[float, float, float, float]:
    """Centre and outer radius of a bright disc or tube cross-section (thresholded area).

    ``level`` defaults to the Otsu threshold. The largest bright component's holes are filled,
    so for a tube (a can) the outer edge is found.

    Returns
    -------
    (row, col, radius, inner_radius)
        Pixels; ``inner_radius`` is 0 for a solid disc.
    """
    from skimage.filters import threshold_otsu

    img = np.asarray(image, float)
    lev = threshold_otsu(img) if level is None else float(level)
    m = img > lev
    if not m.any():
        raise XrmInputError("MTF: no disc above the level in the slice")
    lab, n = ndi.label(m)
    big = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    m = lab == big
    filled = ndi.binary_fill_holes(m)
    r, c = ndi.center_of_mass(filled)
    rad = float(np.sqrt(np.count_nonzero(filled) / np.pi))
    inner = float(np.sqrt(np.count_nonzero(filled & ~m) / np.pi))
    return float(r), float(c), rad, inner


def radial_esf(volume: np.ndarray, *, center_rc: tuple[float, float] | None = None,
               oversample: int = 4, r_max_vox: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Oversampled radial edge-spread function of a cylinder along z.

    Parameters
    ----------
    volume : ndarray, shape (nz, ny, nx) or (ny, nx)
        Slices through a uniform cylinder whose axis runs along z.
    center_rc : (row, col), optional
        Cylinder axis; fitted on the mean slice when omitted.
    oversample : int
        Bins per voxel.
    r_max_vox : float, optional
        Largest radius used (default: the fitted radius x 1.6, within the image).

    Returns
    -------
    r_vox : ndarray, shape (n_bins,)
        Bin centres, voxels from the axis.
    esf : ndarray, shape (n_bins,)
    info : dict
        ``center_row``, ``center_col``, ``radius_vox``.
    """
    v = np.asarray(volume, float)
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3:
        raise XrmInputError(f"MTF needs a 2-D slice or a 3-D stack, got shape {v.shape}")
    mean_slice = v.mean(axis=0)
    r0, c0, rad, inner = fit_circle_center(mean_slice)
    if center_rc is not None:
        r0, c0 = map(float, center_rc)
    ny, nx = mean_slice.shape
    if r_max_vox is None:
        r_max_vox = min(1.6 * rad, r0, c0, ny - 1 - r0, nx - 1 - c0)
    yy, xx = np.mgrid[:ny, :nx]
    rr = np.hypot(yy - r0, xx - c0)
    sel = rr <= r_max_vox
    rvals = np.broadcast_to(rr, v.shape)[:, sel].ravel()
    gvals = v[:, sel].ravel()
    nb = int(np.ceil(r_max_vox * oversample))
    idx = np.minimum((rvals * oversample).astype(int), nb - 1)
    cnt = np.bincount(idx, minlength=nb)
    s = np.bincount(idx, weights=gvals, minlength=nb)
    ok = cnt > 0
    rc = (np.arange(nb) + 0.5) / oversample
    esf = np.interp(rc, rc[ok], s[ok] / cnt[ok])
    return rc, esf, {"center_row": r0, "center_col": c0, "radius_vox": rad,
                     "inner_radius_vox": inner}


def mtf_edge_cylinder(volume: np.ndarray, voxel_size_um: float, *, oversample: int = 4,
                      center_rc: tuple[float, float] | None = None, window_vox: float | None = None
                      ) -> dict[str, Any]:
    """MTF by the edge method on a uniform cylinder (ASTM E1695 style).

    Parameters
    ----------
    volume : ndarray, shape (nz, ny, nx) or (ny, nx)
        Slices through a bright cylinder with axis along z (a tube, e.g. a cell can, works too:
        its outer edge is used and the window stays clear of the inner edge).
    voxel_size_um : float
        Isotropic voxel, um.
    oversample : int
        ESF bins per voxel.
    center_rc : (row, col), optional
        Known axis position (fitted otherwise).
    window_vox : float, optional
        Half-width of the Hann window on the LSF around the edge (default: 6 x the 10-90 % edge
        width, between 10 voxels and 0.8 x the radius).

    Returns
    -------
    dict
        ``freq_per_mm`` (cycles/mm), ``freq_per_voxel`` (cycles/voxel), ``mtf``, ``r_vox``,
        ``esf``, ``lsf``, ``mtf50_per_mm``, ``mtf10_per_mm``, ``radius_vox``, centre.
    """
    vs = isotropic_voxel_um(voxel_size_um, what="MTF")
    r, esf, info = radial_esf(volume, center_rc=center_rc, oversample=oversample)
    dr = 1.0 / oversample
    lsf = -np.gradient(esf, dr)  # bright inside: the ESF falls with r
    if lsf.sum() < 0:
        lsf = -lsf
    edge = info["radius_vox"]
    i0 = int(np.argmax(np.abs(lsf)))
    if abs(r[i0] - edge) < 3:
        edge = r[i0]
    if window_vox is None:
        # 10-90 % edge width from the ESF, then a window wide enough not to clip the LSF
        lo_v, hi_v = np.percentile(esf, [2, 98])
        e = (esf - lo_v) / (hi_v - lo_v) if hi_v > lo_v else esf
        near = np.abs(r - edge) <= 0.5 * edge
        w1090 = max(np.count_nonzero(near & (e > 0.1) & (e < 0.9)) * dr, 1.0)
        w = float(np.clip(6.0 * w1090, 10.0, 0.8 * edge))
        if info["inner_radius_vox"] > 0:  # a tube: keep the inner edge out of the window
            w = min(w, 0.8 * (edge - info["inner_radius_vox"]))
    else:
        w = float(window_vox)
    win = np.where(np.abs(r - edge) <= w, 0.5 * (1 + np.cos(np.pi * (r - edge) / w)), 0.0)
    lsf_w = lsf * win
    nfft = max(4096, 1 << int(np.ceil(np.log2(len(lsf_w) * 4))))
    spec = np.abs(np.fft.rfft(lsf_w, n=nfft))
    f_vox = np.fft.rfftfreq(nfft, d=dr)
    # divide out the binning (box of width dr) and central-difference (sin(2 pi f dr)/(2 pi f dr))
    # transfer functions of the method itself
    aperture = np.sinc(f_vox * dr) * np.sinc(2.0 * f_vox * dr)
    mtf = spec / spec[0] / aperture
    keep = f_vox <= 1.0
    f_vox, mtf = f_vox[keep], mtf[keep]
    f_mm = f_vox / (vs / 1000.0)

    def cross(level):
        below = np.nonzero(mtf < level)[0]
        if below.size == 0:
            return None
        j = below[0]
        if j == 0:
            return float(f_mm[0])
        return float(np.interp(level, [mtf[j], mtf[j - 1]], [f_mm[j], f_mm[j - 1]]))

    return {"freq_per_mm": f_mm, "freq_per_voxel": f_vox, "mtf": mtf, "r_vox": r, "esf": esf,
            "lsf": lsf, "mtf50_per_mm": cross(0.5), "mtf10_per_mm": cross(0.1), **info}


def mtf_at(mtf: Mapping[str, Any], f_per_mm: np.ndarray) -> np.ndarray:
    """Interpolate a measured MTF at radial frequencies ``|f|`` (cycles/mm); 0 beyond."""
    return np.interp(np.abs(f_per_mm), mtf["freq_per_mm"], mtf["mtf"], right=0.0)


# ------------------------------------------------------------------------------------ NPS
def edge_blur_at_interface(volume: np.ndarray, inside: np.ndarray, near: np.ndarray,
                           voxel_size_um: float, *, max_sigma_vox: float = 6.0) -> dict[str, Any]:
    """Gaussian blur of the imaging chain, fitted on an interface whose position is known.

    Model: ``volume ~ a + b (G_sigma * 1_inside)`` over the voxels of ``near``, where
    ``1_inside`` is the known (truth) indicator of one phase on the volume's grid and
    ``G_sigma`` a 3-D Gaussian of standard deviation ``sigma`` voxels; ``a`` and ``b`` by
    linear least squares for each ``sigma``, ``sigma`` by a bounded 1-D search on the residual.
    The interface may have any shape and orientation (no distance map is needed, so the
    staircase of the voxelised truth does not bias the fit the way an edge-distance ESF would).

    Accuracy on analytic blurred spheres and oblique planes (``tests/test_metrology_image_quality.py``):
    within 2 % for ``sigma >= 1`` voxel on point-sampled edges; sub-voxel blurs read high
    (0.4 -> 0.56, 0.6 -> 0.69 voxel), because the voxelised indicator itself is not sharper
    than about 0.5 voxel; on partial-volume (voxel-averaged) edges, whose true blur is
    ``sqrt(sigma^2 + 1/12)``, about 5 % high at ``sigma = 1`` voxel and 1 % at 2 voxels.

    Parameters
    ----------
    volume : ndarray of float, shape (nz, ny, nx)
        Reconstruction (1/mm).
    inside : ndarray of bool, shape (nz, ny, nx)
        Truth indicator of one phase.
    near : ndarray of bool, shape (nz, ny, nx)
        Voxels used in the fit: both sides of an interface between ``inside`` and one other
        phase, a few sigma deep, clear of any third phase.
    voxel_size_um : float
    max_sigma_vox : float
        Upper bound of the search.

    Returns
    -------
    dict
        ``sigma_vox``, ``sigma_um``, ``contrast`` (``b``, the step across the interface, in the
        volume's units), ``level_outside`` (``a``), ``n_voxels``, ``rms_residual``.
    """
    from scipy import optimize

    vs = isotropic_voxel_um(voxel_size_um, what="edge blur")
    vol = check_volume(volume)
    inside = np.asarray(inside, bool)
    near = np.asarray(near, bool)
    if inside.shape != vol.shape or near.shape != vol.shape:
        raise XrmInputError(f"edge blur: volume {vol.shape}, inside {inside.shape} and near "
                            f"{near.shape} must share a grid")
    if not (near & inside).any() or not (near & ~inside).any():
        raise XrmInputError("edge blur: `near` must hold voxels on both sides of the interface")
    ind = inside.astype(np.float32)  # blurred in float32 (7 digits of a 0-1 step), fitted in float64
    v = vol[near].astype(np.float64)

    def fit(sigma: float):
        g = slabs.gaussian_filter(ind, sigma, mode="nearest")[near].astype(np.float64)
        A = np.column_stack([np.ones_like(g), g])
        coef, *_ = np.linalg.lstsq(A, v, rcond=None)
        return coef, float(np.sum((A @ coef - v) ** 2))

    res = optimize.minimize_scalar(lambda s: fit(s)[1], bounds=(0.05, float(max_sigma_vox)),
                                   method="bounded", options={"xatol": 1e-3})
    sigma = float(res.x)
    coef, ss = fit(sigma)
    return {"sigma_vox": sigma, "sigma_um": sigma * vs, "contrast": float(coef[1]),
            "level_outside": float(coef[0]), "n_voxels": int(v.size),
            "rms_residual": float(np.sqrt(ss / v.size))}


def _rois(volume: np.ndarray, roi: int, mask: np.ndarray | None, max_rois: int,
          stride: int | None = None) -> list[np.ndarray]:
    nz, ny, nx = volume.shape
    st = roi if stride is None else max(1, int(stride))
    out = []
    for z in range(0, nz - roi + 1, st):
        for y in range(0, ny - roi + 1, st):
            for x in range(0, nx - roi + 1, st):
                sl = (slice(z, z + roi), slice(y, y + roi), slice(x, x + roi))
                if mask is not None and not mask[sl].all():
                    continue
                out.append(volume[sl])
                if len(out) >= max_rois:
                    return out
    return out


def _detrend(roi: np.ndarray, mode: str) -> np.ndarray:
    if mode == "mean":
        return roi - roi.mean()
    if mode == "plane":
        z, y, x = np.indices(roi.shape).reshape(3, -1)
        A = np.column_stack([np.ones_like(x), x, y, z]).astype(float)
        coef, *_ = np.linalg.lstsq(A, roi.ravel(), rcond=None)
        return roi - (A @ coef).reshape(roi.shape)
    raise XrmInputError(f"detrend must be 'mean' or 'plane', got {mode!r}")


def nps_3d(volume: np.ndarray, voxel_size_um: float, *, roi_vox: int = 32,
           mask: np.ndarray | None = None, detrend: str = "plane", difference: bool = False,
           max_rois: int = 512, stride_vox: int | None = None) -> dict[str, Any]:
    """3-D noise power spectrum from cubic ROIs of a uniform region.

    ``NPS(f) = (dx dy dz / (Nx Ny Nz)) <|DFT[I_m - trend_m]|^2>_m``.

    Parameters
    ----------
    volume : ndarray of float, shape (nz, ny, nx)
        A uniform region (or the difference of two repeated scans with ``difference=True``,
        which halves the NPS).
    voxel_size_um : float
    roi_vox : int
        ROI edge in voxels.
    stride_vox : int, optional
        Step between ROI corners (default ``roi_vox``: tiles without overlap; ``roi_vox // 2``
        gives the usual 50 % overlap, more ROIs in a small region).
    mask : ndarray of bool, optional
        Only ROIs entirely inside the mask are used.
    detrend : {"plane", "mean"}
    difference : bool
        The input is a difference image (variance doubled): halve the result.

    Returns
    -------
    dict
        ``nps`` (ndarray, shape (roi, roi, roi), fft-shifted, units of volume^2 x mm^3),
        ``freq_per_mm`` (1-D axis frequencies, shifted), ``n_rois``, ``voxel_volume_mm3``,
        ``variance`` (integral of the NPS = noise variance).
    """
    vs = isotropic_voxel_um(voxel_size_um, what="NPS")
    v = check_volume(volume)  # each ROI in float64 below, not the whole volume
    rois = _rois(v, int(roi_vox), None if mask is None else np.asarray(mask, bool), max_rois,
                 stride_vox)
    if not rois:
        raise XrmInputError(f"NPS: no {roi_vox}^3 ROI fits in the volume{' inside the mask' if mask is not None else ''}")
    dv = (vs / 1000.0) ** 3
    acc = np.zeros((roi_vox,) * 3)
    for r in rois:
        acc += np.abs(np.fft.fftn(_detrend(r.astype(np.float64), detrend))) ** 2
    nps = dv / roi_vox ** 3 * acc / len(rois)
    if difference:
        nps /= 2.0
    nps = np.fft.fftshift(nps)
    f = np.fft.fftshift(np.fft.fftfreq(roi_vox, d=vs / 1000.0))
    df3 = (f[1] - f[0]) ** 3
    return {"nps": nps, "freq_per_mm": f, "n_rois": len(rois), "voxel_volume_mm3": dv,
            "variance": float(nps.sum() * df3)}


def nps_radial(nps: Mapping[str, Any], *, n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radial average of a 3-D NPS: (|f| bin centres in cycles/mm, NPS)."""
    f = nps["freq_per_mm"]
    fz, fy, fx = np.meshgrid(f, f, f, indexing="ij")
    fr = np.sqrt(fx ** 2 + fy ** 2 + fz ** 2).ravel()
    nb = n_bins or len(f) // 2
    edges = np.linspace(0, f.max(), nb + 1)
    idx = np.clip(np.digitize(fr, edges) - 1, 0, nb - 1)
    s = np.bincount(idx, weights=nps["nps"].ravel(), minlength=nb)
    c = np.bincount(idx, minlength=nb)
    return 0.5 * (edges[1:] + edges[:-1]), s / np.maximum(c, 1)


def cdf_blocks(image: np.ndarray, sizes: Sequence[int] = (1, 2, 4, 8, 16)) -> dict[str, list]:
    """Contrast-discrimination function ``CDF(n) = 3 sigma_n / |mu|`` on a uniform region.

    ``sigma_n`` is the std of the means of n x n blocks tiling a 2-D region (or each slice of a
    3-D one, pooled).
    """
    a = np.asarray(image, float)
    if a.ndim == 2:
        a = a[None]
    mu = float(a.mean())
    if mu == 0:
        raise XrmInputError("CDF: the region mean is 0, the ratio is undefined")
    out_n, out_c = [], []
    for n in sizes:
        ny, nx = (a.shape[1] // n) * n, (a.shape[2] // n) * n
        if ny == 0 or nx == 0:
            continue
        b = a[:, :ny, :nx].reshape(a.shape[0], ny // n, n, nx // n, n).mean(axis=(2, 4))
        if b.size < 2:
            continue
        out_n.append(int(n))
        out_c.append(3.0 * float(b.std(ddof=1)) / abs(mu))
    return {"block_vox": out_n, "cdf": out_c}
