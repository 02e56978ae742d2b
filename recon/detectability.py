"""Detectability index d' of a defect (AAPM TG-233 / ICRU 54 model observers) and AUC.

Formulas (``shared/reference/metrology_detectability.md`` B2), one place each:

* task function ``W(f) = dC |F{s}(f)|`` with ``s`` the indicator (partial-volume fraction) of
  the defect; ``F{s}`` is the continuous Fourier transform, ``dv * DFT(s)`` (mm^3);
* non-prewhitening: ``d'^2 = [int W^2 TTF^2 df]^2 / int W^2 TTF^2 NPS df``;
* prewhitening: ``d'^2 = int W^2 TTF^2 / NPS df``;
* ``AUC = Phi(d' / sqrt(2))``;
* Rose: ``SNR = CNR sqrt(n_feature_voxels)`` (white noise only).

Units: contrast ``dC`` in 1/mm (linear attenuation difference), frequencies in cycles/mm,
NPS in (1/mm)^2 mm^3 (:func:`recon.image_quality.nps_3d`), TTF dimensionless; d' dimensionless.
Sizes: ``size_um`` is a **diameter** (void) or the in-plane diameter (crack, delamination), and
``thickness_um`` the opening of a crack or the gap of a delamination.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.fft
from scipy.special import ndtr

from recon.thickness import isotropic_voxel_um
from twin.errors import XrmInputError

__all__ = ["TASK_KINDS", "task_signal", "frequency_grid", "task_function", "dprime_npw",
           "dprime_pw", "auc_from_dprime", "rose_snr", "gaussian_ttf", "nps_on_grid",
           "detectability"]

TASK_KINDS = ("void", "crack", "delamination", "inclusion")


def frequency_grid(shape: Sequence[int], voxel_size_um: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Unshifted DFT frequencies (fz, fy, fx) in cycles/mm, broadcastable, and the cell ``df^3``."""
    vs_mm = isotropic_voxel_um(voxel_size_um, what="detectability") / 1000.0
    f = [np.fft.fftfreq(int(n), d=vs_mm) for n in shape]
    df3 = float(np.prod([1.0 / (int(n) * vs_mm) for n in shape]))
    fz, fy, fx = np.meshgrid(*f, indexing="ij", sparse=True)
    return fz, fy, fx, df3


def task_signal(kind: str, size_um: float, voxel_size_um: float, *,
                thickness_um: float | None = None, orientation: Sequence[float] = (0.0, 0.0, 1.0),
                shape: Sequence[int] | None = None, supersample: int = 4) -> np.ndarray:
    """Partial-volume indicator of a defect centred in a grid.

    Parameters
    ----------
    kind : {"void", "inclusion", "crack", "delamination"}
        ``void``/``inclusion``: ball of diameter ``size_um``; ``crack``/``delamination``: a flat
        disc of diameter ``size_um`` and thickness ``thickness_um`` (default one voxel) whose
        normal is ``orientation`` (x, y, z).
    size_um : float
    voxel_size_um : float
    shape : (nz, ny, nx), optional
        Grid; default a cube of twice the size plus 16 voxels (rounded up to even).
    supersample : int
        Sub-samples per voxel edge for the partial-volume fraction.

    Returns
    -------
    ndarray of float64, shape ``shape``
        Fraction of each voxel inside the defect (0..1).
    """
    if kind not in TASK_KINDS:
        raise XrmInputError(f"unknown task kind {kind!r}; allowed: {', '.join(TASK_KINDS)}")
    vs = isotropic_voxel_um(voxel_size_um, what="task signal")
    if not (size_um and size_um > 0):
        raise XrmInputError(f"size_um must be > 0, got {size_um!r}")
    if shape is None:
        n = int(math.ceil(2 * size_um / vs)) + 16
        n += n % 2
        shape = (n, n, n)
    shape = tuple(int(s) for s in shape)
    ss = int(supersample)
    c = [(s - 1) / 2.0 for s in shape]
    axes = [((np.arange(s * ss) + 0.5) / ss - 0.5 - cc) * vs for s, cc in zip(shape, c)]  # um
    if kind not in ("void", "inclusion"):
        t = float(thickness_um) if thickness_um else vs
        nrm = np.asarray(orientation, float)
        if nrm.shape != (3,) or not np.any(nrm):
            raise XrmInputError(f"orientation must be a nonzero (x, y, z) vector, got {orientation!r}")
        nrm = nrm / np.linalg.norm(nrm)
    out = np.zeros(shape, np.float64)
    # a few output planes at a time, or a few of one plane's sub-sample planes: a chunk's
    # sub-sample temporaries stay near 2^18 points (float64 of the whole supersampled grid is
    # 8 ss^3 bytes per voxel: 260 MB for an 80^3 task grid; one plane's, 3 MB a temporary)
    budget = 1 << 18
    planes = max(1, budget // (ss ** 3 * shape[1] * shape[2]))
    group = ss if planes > 1 else max(1, min(ss, budget // (ss ** 2 * shape[1] * shape[2])))
    z_sub = axes[0].reshape(shape[0], ss)
    for k0 in range(0, shape[0], planes):
        k1 = min(k0 + planes, shape[0])
        for j0 in range(0, ss, group):
            j1 = min(j0 + group, ss)
            z, y, x = np.meshgrid(z_sub[k0:k1, j0:j1].ravel(), axes[1], axes[2], indexing="ij",
                                  sparse=True)
            if kind in ("void", "inclusion"):
                inside = (x * x + y * y + z * z <= (size_um / 2.0) ** 2).astype(np.float32)
            else:
                along = x * nrm[0] + y * nrm[1] + z * nrm[2]
                r2 = x * x + y * y + z * z - along * along
                # a sheet thinner than the sub-samples aliases when point-sampled: each
                # sub-sample takes the overlap of its own extent h along the normal with the
                # sheet, / h
                h = vs / ss
                overlap = np.clip(np.minimum(t / 2, along + h / 2)
                                  - np.maximum(-t / 2, along - h / 2), 0.0, None) / h
                inside = (overlap * (r2 <= (size_um / 2.0) ** 2)).astype(np.float32)
                del along, r2, overlap
            inside = np.broadcast_to(inside, ((k1 - k0) * (j1 - j0), shape[1] * ss,
                                              shape[2] * ss))
            out[k0:k1] += inside.reshape(k1 - k0, j1 - j0, shape[1], ss, shape[2], ss).sum(
                axis=(1, 3, 5), dtype=np.float64)
    out /= ss ** 3
    return out


def task_function(signal: np.ndarray, contrast_per_mm: float, voxel_size_um: float, *,
                  half: bool = False) -> np.ndarray:
    """``W(f) = |dC| |F{s}(f)|`` on the unshifted DFT grid of ``signal`` (units 1/mm x mm^3).

    ``half=True`` gives the ``rfftn`` half (last axis ``nx // 2 + 1``), which holds the whole
    of ``W`` for a real signal (``W(-f) = W(f)``) in half the memory.
    """
    dv = (isotropic_voxel_um(voxel_size_um, what="task function") / 1000.0) ** 3
    spectrum = scipy.fft.rfftn(signal) if half else np.fft.fftn(signal)
    return abs(float(contrast_per_mm)) * dv * np.abs(spectrum)


def _npw_from_sums(sum_w2: float, sum_w2_nps: float, df3: float) -> float:
    """NPW d' from ``sum W^2 TTF^2`` and ``sum W^2 TTF^2 NPS`` over the grid (the one formula)."""
    den = sum_w2_nps * df3
    if den <= 0:
        raise XrmInputError("d': the noise power is zero where the task has signal")
    return float(math.sqrt((sum_w2 * df3) ** 2 / den))


def _pw_from_sum(sum_w2_over_nps: float, df3: float) -> float:
    """PW d' from ``sum W^2 TTF^2 / NPS`` over the grid (the one formula)."""
    return float(math.sqrt(sum_w2_over_nps * df3))


def dprime_npw(W: np.ndarray, ttf: np.ndarray | float, nps: np.ndarray | float, df3: float) -> float:
    """Non-prewhitening d': ``[sum W^2 TTF^2 df]^2 / sum W^2 TTF^2 NPS df`` (square root)."""
    w2 = (W * ttf) ** 2
    return _npw_from_sums(float(w2.sum()), float((w2 * nps).sum()), df3)


def dprime_pw(W: np.ndarray, ttf: np.ndarray | float, nps: np.ndarray | float, df3: float) -> float:
    """Prewhitening (ideal linear) d': ``sqrt(sum W^2 TTF^2 / NPS df)``."""
    nps = np.broadcast_to(np.asarray(nps, float), np.shape(W))
    if np.any(nps <= 0):
        raise XrmInputError("prewhitening d' needs NPS > 0 at every frequency")
    return _pw_from_sum(float(((W * ttf) ** 2 / nps).sum()), df3)


def _full_planes(half: np.ndarray, k0: int, k1: int, nx: int) -> np.ndarray:
    """Planes ``k0:k1`` of the full ``|DFT|`` of a real grid from its ``rfftn`` half.

    ``|F(kz, ky, kx)| = |F(-kz, -ky, -kx)|`` for real input, so the columns past ``nx // 2``
    are the mirrored half's (shape ``(k1 - k0, ny, nx)``).
    """
    nz, ny, nh = half.shape
    out = np.empty((k1 - k0, ny, nx), half.dtype)
    out[..., :nh] = half[k0:k1]
    if nx > nh:
        kz = (-np.arange(k0, k1)) % nz
        ky = (-np.arange(ny)) % ny
        kx = nx - np.arange(nh, nx)
        out[..., nh:] = half[np.ix_(kz, ky, kx)]
    return out


def auc_from_dprime(dprime: float) -> float:
    """Area under the ROC curve of an observer with index d': ``Phi(d'/sqrt(2))``."""
    return float(ndtr(float(dprime) / math.sqrt(2.0)))


def rose_snr(cnr: float, n_feature_voxels: float) -> float:
    """Rose SNR ``CNR sqrt(n)`` (white noise only; detectable when >= 5, 3-5 in use)."""
    return float(cnr) * math.sqrt(float(n_feature_voxels))


def gaussian_ttf(sigma_um: float) -> Callable[[np.ndarray], np.ndarray]:
    """TTF of a Gaussian blur: ``exp(-2 pi^2 sigma^2 f^2)`` (f in cycles/mm)."""
    s_mm = float(sigma_um) / 1000.0
    return lambda f: np.exp(-2.0 * math.pi ** 2 * s_mm ** 2 * f ** 2)


def nps_on_grid(nps: Mapping[str, Any], fz: np.ndarray, fy: np.ndarray, fx: np.ndarray
                ) -> np.ndarray:
    """Trilinear interpolation of a measured 3-D NPS (:func:`nps_3d`) onto other frequencies.

    Frequencies beyond the measured grid are clamped to its edge.
    """
    from scipy.interpolate import RegularGridInterpolator

    f = np.asarray(nps["freq_per_mm"], float)
    interp = RegularGridInterpolator((f, f, f), np.asarray(nps["nps"], float),
                                     bounds_error=False, fill_value=None)
    FZ, FY, FX = np.broadcast_arrays(fz, fy, fx)  # views of the sparse grids: no copies
    out = np.empty(FZ.shape, float)
    # a few planes at a time: the interpolator's temporaries are tens of bytes per point
    planes = max(1, (1 << 16) // max(1, int(np.prod(FZ.shape[1:]))))
    for k0 in range(0, FZ.shape[0], planes):
        k1 = min(k0 + planes, FZ.shape[0])
        pts = np.stack([np.clip(a[k0:k1], f[0], f[-1]) for a in (FZ, FY, FX)], axis=-1)
        out[k0:k1] = interp(pts.reshape(-1, 3)).reshape(pts.shape[:-1])
    return out


def detectability(task: Mapping[str, Any], voxel_size_um: float, *,
                  nps: Mapping[str, Any] | float, mtf: Mapping[str, Any] | Callable | None = None,
                  shape: Sequence[int] | None = None) -> dict[str, Any]:
    """d' (NPW and PW) and AUC of a defect task for a scan's MTF and NPS.

    Parameters
    ----------
    task : dict
        ``kind`` (void, crack, delamination, inclusion), ``size_um`` (diameter),
        ``contrast_per_mm`` (mu difference defect - host, 1/mm), optional ``thickness_um``,
        ``orientation`` (x, y, z).
    voxel_size_um : float
    nps : dict from :func:`recon.image_quality.nps_3d`, or float
        A float is white noise of that **variance** per voxel ((1/mm)^2): NPS = var x dv.
    mtf : dict from :func:`recon.image_quality.mtf_edge_cylinder`, or callable ``TTF(|f|)``
        (cycles/mm), optional
        The task transfer function (measured at the task's contrast); None = 1.
    shape : (nz, ny, nx), optional
        Grid for the signal (default from the size).

    Returns
    -------
    dict
        ``dprime_npw``, ``dprime_pw``, ``auc_npw``, ``signal_voxels`` (sum of s),
        ``task`` (echo).
    """
    kind = task.get("kind", task.get("type"))
    if kind is None or "size_um" not in task or "contrast_per_mm" not in task:
        raise XrmInputError("task needs kind, size_um and contrast_per_mm; got "
                            f"{sorted(task)}")
    s = task_signal(str(kind), float(task["size_um"]), voxel_size_um,
                    thickness_um=task.get("thickness_um"),
                    orientation=task.get("orientation", (0.0, 0.0, 1.0)), shape=shape)
    signal_voxels = float(s.sum())
    shape = s.shape
    fz, fy, fx, df3 = frequency_grid(shape, voxel_size_um)
    # |F{s}| from the half spectrum of the real signal, then the sums plane block by plane
    # block: the full-grid W, |f|, TTF and NPS arrays (float64 each) never exist at once
    W_half = task_function(s, float(task["contrast_per_mm"]), voxel_size_um, half=True)
    del s
    if isinstance(nps, Mapping):
        nps_white = None
    else:  # white noise of that variance per voxel
        nps_white = float(nps) * (isotropic_voxel_um(voxel_size_um) / 1000.0) ** 3
    sum_w2 = sum_w2_nps = sum_w2_over_nps = 0.0
    pw_ok = nps_white is None or nps_white > 0
    planes = max(1, shape[0] // 8)
    for k0 in range(0, shape[0], planes):
        k1 = min(k0 + planes, shape[0])
        W = _full_planes(W_half, k0, k1, shape[2])
        fzk = fz[k0:k1]
        if mtf is not None:
            fr = np.sqrt(fzk ** 2 + fy ** 2 + fx ** 2)
            W *= mtf(fr) if callable(mtf) else np.interp(fr, mtf["freq_per_mm"], mtf["mtf"],
                                                          right=0.0)
            del fr
        w2 = np.square(W, out=W)
        nps_k = nps_white if nps_white is not None else nps_on_grid(nps, fzk, fy, fx)
        sum_w2 += float(w2.sum())
        sum_w2_nps += float((w2 * nps_k).sum())
        if pw_ok and nps_white is None:
            pw_ok = bool(np.all(nps_k > 0))
        if pw_ok:
            sum_w2_over_nps += float((w2 / nps_k).sum())
    d_npw = _npw_from_sums(sum_w2, sum_w2_nps, df3)
    d_pw = _pw_from_sum(sum_w2_over_nps, df3) if pw_ok else None
    return {"dprime_npw": d_npw, "dprime_pw": d_pw, "auc_npw": auc_from_dprime(d_npw),
            "signal_voxels": signal_voxels, "task": dict(task)}
