"""Denoising filters used after reconstruction in the reference paper.

* :func:`nl_means`: non-local means (Buades et al. 2005) through
  ``skimage.restoration.denoise_nl_means``. The paper (Dragonfly) gives "kernel size 17,
  smoothing 0.5". Mapping (an estimate; Dragonfly does not publish its definitions):
  kernel size = search window ``2 * patch_distance + 1`` -> ``patch_distance = 8``;
  smoothing = filter strength relative to the noise, ``h = smoothing * sigma`` with ``sigma``
  estimated from the data (``skimage.restoration.estimate_sigma``) unless given; patches of
  ``patch_size`` (5) voxels; slice by slice in (y, x) unless ``per_slice=False``, the slices
  in parallel threads (:func:`twin.runtime.host_threads`).
* :func:`anisotropic_diffusion`: Perona-Malik edge-preserving diffusion (IEEE PAMI 12, 629,
  1990) in 3-D, with conductance ``exp(-(|grad| / kappa)^2)``; explicit scheme, stable for
  ``step <= 1/6``. The paper's "gradient-domain diffusion (XY sigma 5, Z sigma 4, weight
  0.08)" is Dragonfly-specific; ``z_weight`` scales diffusion along z relative to (y, x).
"""

from __future__ import annotations

import numpy as np

from twin.errors import XrmInputError


def _as_volume(volume: np.ndarray) -> np.ndarray:
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim not in (2, 3):
        raise XrmInputError(f"volume must be 2-D or 3-D, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise XrmInputError("volume contains non-finite values")
    return v


#: where each 2-D non-local means runs: "auto" is Taichi's kernels when Taichi runs on CUDA
#: (scikit-image's Cython is about 2x faster than them on CPU cores, docs/benchmarks.md)
NLM_BACKENDS = ("auto", "skimage", "taichi")


def nl_means(volume: np.ndarray, *, kernel_size: int = 17, smoothing: float = 0.5,
             patch_size: int = 5, sigma: float | None = None, per_slice: bool = True,
             backend: str = "auto", progress=None) -> np.ndarray:
    """Non-local means with the paper's parameters mapped onto scikit-image.

    Parameters
    ----------
    volume : ndarray, shape (nz, ny, nx) or (ny, nx)
        Attenuation, 1/mm (any units).
    kernel_size : int
        Search window width in voxels (odd, >= 3): ``patch_distance = kernel_size // 2``.
    smoothing : float
        ``h = smoothing * sigma`` (> 0).
    patch_size : int
        Patch width in voxels.
    sigma : float, optional
        Noise standard deviation (same units as the volume); estimated when omitted.
    per_slice : bool
        Filter each z slice in 2-D (default) or the whole volume in 3-D (scikit-image only).
    backend : {"auto", "skimage", "taichi"}
        Who filters the slices: ``"auto"`` takes the Taichi kernels when Taichi runs on CUDA
        and scikit-image otherwise.
    progress : callable, optional
        ``progress(n)`` as ``n`` more slices are done (3-D volumes filtered slice by slice).

    Returns
    -------
    ndarray, same shape, float32
    """
    from skimage.restoration import denoise_nl_means, estimate_sigma

    v = _as_volume(volume)
    if int(kernel_size) < 3 or int(kernel_size) % 2 == 0:
        raise XrmInputError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    if not (np.isfinite(smoothing) and smoothing > 0):
        raise XrmInputError(f"smoothing must be > 0, got {smoothing!r}")
    if backend not in NLM_BACKENDS:
        raise XrmInputError(f"nl_means backend must be one of {', '.join(NLM_BACKENDS)}, got {backend!r}")
    if sigma is None:
        sigma = float(np.mean(estimate_sigma(v if v.ndim == 2 else v[v.shape[0] // 2])))
    sigma = max(float(sigma), 1e-12)
    if backend == "auto":
        from twin.runtime import current_arch

        backend = "taichi" if current_arch() == "cuda" else "skimage"
    if backend == "taichi":
        if not per_slice and v.ndim == 3:
            raise XrmInputError("the Taichi non-local means filters 2-D slices: per_slice=False "
                                "needs backend='skimage'")
        from recon.nl_means import nl_means_slices

        return nl_means_slices(v, patch_size=int(patch_size), patch_distance=int(kernel_size) // 2,
                               h=float(smoothing) * sigma, sigma=sigma,
                               progress=progress if v.ndim == 3 else None)
    kw = dict(patch_size=int(patch_size), patch_distance=int(kernel_size) // 2,
              h=float(smoothing) * sigma, sigma=sigma, fast_mode=True)
    if v.ndim == 2:
        return denoise_nl_means(v, **kw).astype(np.float32)
    if per_slice:  # scikit-image releases the GIL: slices in parallel threads, same result
        from concurrent.futures import ThreadPoolExecutor

        from twin.runtime import host_threads

        out = np.empty_like(v)

        def one(z: int) -> None:
            out[z] = denoise_nl_means(v[z], **kw)
            if progress is not None:
                progress(1)

        with ThreadPoolExecutor(max_workers=min(host_threads(), len(v))) as pool:
            list(pool.map(one, range(len(v))))
        return out
    return denoise_nl_means(v, **kw).astype(np.float32)


def anisotropic_diffusion(volume: np.ndarray, *, n_iter: int = 10, kappa: float | None = None,
                          step: float = 0.15, z_weight: float = 1.0) -> np.ndarray:
    """Perona-Malik anisotropic diffusion.

    Parameters
    ----------
    volume : ndarray, shape (nz, ny, nx) or (ny, nx)
    n_iter : int
        Iterations (>= 1).
    kappa : float, optional
        Edge threshold in the units of the volume; gradients well above it are preserved.
        Default: 2 x the noise sigma estimated with ``skimage.restoration.estimate_sigma``.
    step : float
        Time step, in (0, 1/6] for 3-D (1/4 for 2-D).
    z_weight : float
        Relative diffusion along z (1: isotropic).

    Returns
    -------
    ndarray, same shape, float32
    """
    from skimage.restoration import estimate_sigma

    v = _as_volume(volume).astype(np.float64)
    limit = 0.25 if v.ndim == 2 else 1.0 / 6.0
    if not (0 < step <= limit):
        raise XrmInputError(f"step must be in (0, {limit:.4f}] for stability, got {step!r}")
    if int(n_iter) < 1:
        raise XrmInputError(f"n_iter must be >= 1, got {n_iter!r}")
    if kappa is None:
        kappa = 2.0 * float(np.mean(estimate_sigma(v if v.ndim == 2 else v[v.shape[0] // 2])))
    kappa = max(float(kappa), 1e-12)
    axes_w = [(ax, (z_weight if (v.ndim == 3 and ax == 0) else 1.0)) for ax in range(v.ndim)]
    for _ in range(int(n_iter)):
        update = np.zeros_like(v)
        for ax, wgt in axes_w:
            d = np.diff(v, axis=ax)
            flux = wgt * np.exp(-(d / kappa) ** 2) * d
            pad_lo = [(0, 0)] * v.ndim
            pad_hi = [(0, 0)] * v.ndim
            pad_lo[ax] = (1, 0)
            pad_hi[ax] = (0, 1)
            update += np.pad(flux, pad_hi) - np.pad(flux, pad_lo)
        v += step * update
    return v.astype(np.float32)
