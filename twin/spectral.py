"""The polychromatic Beer-Lambert integral, one place.

For each pixel with per-material path lengths ``L_m`` (mm) and attenuation ``mu_m(E)`` (1/mm),
the spectral sums are ``S_k = sum_E W[k, E] exp(-sum_m mu_m(E) L_m)`` for the weight rows
``W`` of :meth:`twin.detector.DetectorModel.spectral_weights` (quanta, energy, energy^2, ...).
A Taichi kernel does it per pixel so that no (E x pixels) array is ever materialised. Over the
pixel area a detector integrates intensity: with sub-ray supersampling, each sub-ray gets its
own integral and the results are averaged (``out``/``factor``; :meth:`twin.scene.Scene.spectral_sums`).
"""


import numpy as np
import taichi as ti

from twin.runtime import init_taichi, releasing

MAX_MATERIALS = 32


@releasing
@ti.kernel
def _spectral_sums(lengths: ti.types.ndarray(), mu_t: ti.types.ndarray(), w_t: ti.types.ndarray(),
                   wscale: ti.types.ndarray(), out: ti.types.ndarray(), accumulate: int,
                   nm: ti.template(), nk: ti.template(), bps: ti.template()):
    """``out[v, k, r, c] (+)= wscale[k] sum_E w_t[E, k] exp(-sum_m mu_t[E, m] L[v, m, r, c])``.

    ``nm`` (materials), ``nk`` (weight rows) and ``bps`` (bins per step) are compile-time
    constants, so the inner loops unroll; ``mu_t`` (E, M) and ``w_t`` (E, K) are bin-major
    with E a multiple of ``bps``, and the ``bps`` bins of a step go to separate partial sums
    (independent exponentials in flight). A pixel with no material on its ray skips the
    exponentials (``exp(0) = 1``: the same sums, in the same order).
    """
    nv, nr, nc = lengths.shape[0], lengths.shape[2], lengths.shape[3]
    n_steps = mu_t.shape[0] // bps
    for v, r, c in ti.ndrange(nv, nr, nc):
        l = ti.Vector([0.0] * nm)
        empty = True
        for m in ti.static(range(nm)):
            l[m] = lengths[v, m, r, c]
            if l[m] != 0.0:
                empty = False
        acc = ti.Matrix([[0.0] * bps] * nk)
        if empty:
            for step in range(n_steps):
                for j in ti.static(range(bps)):
                    for k in ti.static(range(nk)):
                        acc[k, j] += w_t[step * bps + j, k]
        else:
            for step in range(n_steps):
                for j in ti.static(range(bps)):
                    e = step * bps + j
                    tau = 0.0
                    for m in ti.static(range(nm)):
                        tau += mu_t[e, m] * l[m]
                    x = ti.exp(-tau)
                    for k in ti.static(range(nk)):
                        acc[k, j] += w_t[e, k] * x
        for k in ti.static(range(nk)):
            total = 0.0
            for j in ti.static(range(bps)):
                total += acc[k, j]
            if accumulate == 1:
                out[v, k, r, c] += total * wscale[k]
            else:
                out[v, k, r, c] = total * wscale[k]


def _bins_per_step(n_rows: int, n_bins: int) -> int:
    """Unrolling of the bin loop (measured on x86-64: 1 row 4 bins, 2 rows 2, 4 rows 1)."""
    bps = {1: 4, 2: 2}.get(n_rows, 1)
    return bps if n_bins >= bps else 1


def spectral_sums(lengths_mm: np.ndarray, mu_per_mm: np.ndarray, weights: np.ndarray,
                  arch: str = "auto", *, out: np.ndarray | None = None, factor: float = 1.0
                  ) -> np.ndarray:
    """Spectral sums per pixel.

    Parameters
    ----------
    lengths_mm : ndarray, shape (V, M, R, C)
        Per-material path lengths, mm.
    mu_per_mm : ndarray, shape (M, E)
        Linear attenuation coefficients, 1/mm.
    weights : ndarray, shape (K, E), K <= 8
    out : ndarray float32, shape (V, K, R, C), optional
        When given, ``factor x`` the sums are added to it (``+=``) and it is returned; this
        is how sub-ray intensities are averaged over a pixel.
    factor : float
        Scale of the sums (with ``out``: ``1 / n_subrays``).

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
    if weights.shape[0] > 8:
        raise ValueError(f"at most 8 weight rows, got {weights.shape[0]}")
    accumulate = out is not None
    if out is None:
        out = np.zeros((v, weights.shape[0], r, c), np.float32)
    elif out.shape != (v, weights.shape[0], r, c) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(v, weights.shape[0], r, c)}, got "
                         f"{out.dtype} {out.shape}")
    # relative scaling keeps float32 sums well conditioned for photon counts ~1e12
    scale = np.max(np.abs(weights), axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    if m == 0:
        flat = (weights.sum(axis=1) * factor).astype(np.float32)[None, :, None, None]
        if accumulate:
            out += flat
        else:
            out[:] = flat
        return out
    n_e = weights.shape[1]
    bps = _bins_per_step(weights.shape[0], n_e)
    n_pad = -(-n_e // bps) * bps
    mu_t = np.zeros((n_pad, m), np.float32)
    mu_t[:n_e] = np.asarray(mu_per_mm).T
    w_t = np.zeros((n_pad, weights.shape[0]), np.float32)
    w_t[:n_e] = (weights / scale).T
    _spectral_sums(np.ascontiguousarray(lengths_mm, np.float32), mu_t, w_t,
                   np.ascontiguousarray(scale[:, 0] * factor, np.float32), out, int(accumulate),
                   int(m), int(weights.shape[0]), bps)
    return out


def prune_bins(weights: np.ndarray, rel: float = 1e-7) -> np.ndarray:
    """Indices of energy bins that carry more than ``rel`` of the largest weight row's total."""
    w = np.abs(np.asarray(weights, float))
    keep = np.any(w > rel * w.sum(axis=1, keepdims=True), axis=0)
    return np.nonzero(keep)[0]
