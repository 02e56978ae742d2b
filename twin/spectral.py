"""The polychromatic Beer-Lambert integral, one place.

For each pixel with per-material path lengths ``L_m`` (mm) and attenuation ``mu_m(E)`` (1/mm),
the spectral sums are ``S_k = sum_E W[k, E] exp(-sum_m mu_m(E) L_m)`` for the weight rows
``W`` of :meth:`twin.detector.DetectorModel.spectral_weights` (quanta, energy, energy^2, ...).
A Taichi kernel does it per pixel so that no (E x pixels) array is ever materialised.
"""


import numpy as np
import taichi as ti

from twin.runtime import init_taichi

MAX_MATERIALS = 32


@ti.kernel
def _spectral_sums(lengths: ti.types.ndarray(), mu: ti.types.ndarray(), w: ti.types.ndarray(),
                   out: ti.types.ndarray()):
    nv, nm, nr, nc = lengths.shape[0], lengths.shape[1], lengths.shape[2], lengths.shape[3]
    ne, nk = mu.shape[1], w.shape[0]
    for v, r, c in ti.ndrange(nv, nr, nc):
        l = ti.Vector([0.0] * MAX_MATERIALS)
        for m in range(nm):
            l[m] = lengths[v, m, r, c]
        acc = ti.Vector([0.0] * 8)
        for e in range(ne):
            tau = 0.0
            for m in range(nm):
                tau += mu[m, e] * l[m]
            x = ti.exp(-tau)
            for k in range(nk):
                acc[k] += w[k, e] * x
        for k in range(nk):
            out[v, k, r, c] = acc[k]


def spectral_sums(lengths_mm: np.ndarray, mu_per_mm: np.ndarray, weights: np.ndarray,
                  arch: str = "auto") -> np.ndarray:
    """Spectral sums per pixel.

    Parameters
    ----------
    lengths_mm : ndarray, shape (V, M, R, C)
    mu_per_mm : ndarray, shape (M, E)
    weights : ndarray, shape (K, E), K <= 8

    Returns
    -------
    ndarray float32, shape (V, K, R, C)
    """
    init_taichi(arch)
    v, m, r, c = lengths_mm.shape
    if m > MAX_MATERIALS:
        raise ValueError(f"at most {MAX_MATERIALS} materials per scene, got {m}")
    if mu_per_mm.shape[0] != m or mu_per_mm.shape[1] != weights.shape[1]:
        raise ValueError(f"shapes do not match: lengths {lengths_mm.shape}, mu {mu_per_mm.shape}, "
                         f"weights {weights.shape}")
    # relative scaling keeps float32 sums well conditioned for photon counts ~1e12
    scale = np.max(np.abs(weights), axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    out = np.zeros((v, weights.shape[0], r, c), np.float32)
    if m == 0:
        out[:] = (weights.sum(axis=1) / 1.0)[None, :, None, None]
        return out
    _spectral_sums(np.ascontiguousarray(lengths_mm, np.float32),
                   np.ascontiguousarray(mu_per_mm, np.float32),
                   np.ascontiguousarray(weights / scale, np.float32), out)
    out *= scale.reshape(1, -1, 1, 1).astype(np.float32)
    return out


def prune_bins(weights: np.ndarray, rel: float = 1e-7) -> np.ndarray:
    """Indices of energy bins that carry more than ``rel`` of the largest weight row's total."""
    w = np.abs(np.asarray(weights, float))
    keep = np.any(w > rel * w.sum(axis=1, keepdims=True), axis=0)
    return np.nonzero(keep)[0]
