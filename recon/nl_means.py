"""Non-local means on a stack of 2-D slices in Taichi kernels (CPU and CUDA).

The algorithm is scikit-image's fast 2-D non-local means (``denoise_nl_means(...,
fast_mode=True)``: Darbon et al. 2008, Froment 2014), written as Taichi kernels so that the
denoiser of the paper's zoom scans runs on the GPU next to the reconstruction: one 1024^3
volume is 1024 slices of 1024^2, about 1300 s of one CPU core in scikit-image.

Definition (what scikit-image computes, made explicit; the test checks it against both
scikit-image and an independent numpy sum):

* the slice is padded by ``pad = o + d + 1`` with numpy's ``reflect`` mode, where
  ``o = patch_size // 2`` and ``d = patch_distance``;
* for every shift ``t = (t_row, t_col)`` with ``|t_row|, |t_col| <= d`` the patch distance at a
  pixel ``p`` is ``S(p, t) = sum_w [(P[p + w] - P[p + t + w])^2 - 2 sigma^2]`` over the
  ``(2 o)^2`` offsets ``w`` with both components in ``[-o + 1, o]`` (scikit-image's
  integral-image differences span ``2 o`` pixels, not ``2 o + 1``);
* ``dist = max(S, 0) / (h^2 s^2)`` with ``s = patch_size`` (made odd), and the weight is
  ``exp(-dist)`` where ``dist <= 5`` and 0 beyond; the exponential is scikit-image's
  Schraudolph approximation (``fast_expf``), so the two agree to float rounding;
* the output is the weighted mean of ``P[p + t]`` over the whole window, the centre
  (``t = 0``, distance 0) included once.

The kernels use the symmetry ``S(p, -t) = S(p - t, t)``: the weights are computed once for
each of the ``((2 d + 1)^2 - 1) / 2`` shifts of one half of the window and read twice. Slices
are processed in batches whose scratch fits ``batch_bytes``. The patch distances are summed in
float64 (in float32 the sum of 16 terms of either sign moved a patch across the 5.0 cut-off
often enough to change one pixel in a 1024^2 slice by 1.9e-4; scikit-image's own result agrees
with a float64 sum to 1.4e-7), the weighted means in float32, all in a fixed order, so the
output is the same bytes on every run and any batch size.
"""

# no "from __future__ import annotations": Taichi reads kernel annotations at runtime

from typing import Any

import numpy as np

from twin.errors import XrmInputError
from twin.runtime import current_arch, kernels_once, releasing

__all__ = ["nl_means_slices", "fast_expf"]

#: scikit-image's fast_expf (Schraudolph 1999 in float32): bits = int(A * y) + B
_EXP_A_F = 12102203.1615614  # 2^23 / ln 2
_EXP_BC_F = 1064866805  # 127 * 2^23 - 486411
#: scikit-image skips patches farther than this (weight exp(-5) = 0.0067 and below)
_DISTANCE_CUTOFF = 5.0
#: scratch per batch of slices: the padded slices, the half-window weights, the two sums
_BATCH_BYTES = {"cpu": 256 << 20, "cuda": 16 << 30}
#: the GPU's way (Taichi ndarrays holding a batch for all its shifts, flat loops, at least
#: _DEVICE_BATCHES batches): None = where Taichi runs on CUDA; True runs it on the CPU (tests)
DEVICE_PATH = None
#: on CUDA at least this many batches, so that the host holds a quarter of the volume on top
_DEVICE_BATCHES = 4


def fast_expf(y: np.ndarray) -> np.ndarray:
    """scikit-image's float32 Schraudolph exponential, on the host (for tests and docs).

    Parameters
    ----------
    y : ndarray
        Exponents (<= 0 in use).

    Returns
    -------
    ndarray of float32
        ``bits(int32(A * y) + B)`` read as float32: within 4 % of ``exp(y)``.
    """
    y32 = np.maximum(np.asarray(y, dtype=np.float32), np.float32(-80.0))  # int32 range
    bits = (np.float32(_EXP_A_F) * y32).astype(np.int32) + np.int32(_EXP_BC_F)
    return bits.view(np.float32)


@kernels_once
def _get_kernels() -> dict[str, Any]:
    """The two kernels, defined on first use."""
    import taichi as ti

    @ti.func
    def _fast_expf(y: ti.f32) -> ti.f32:
        bits = ti.cast(ti.f32(_EXP_A_F) * y, ti.i32) + _EXP_BC_F
        return ti.bit_cast(bits, ti.f32)

    @ti.func
    def _column_sum(padded: ti.template(), columns: ti.template(), z, i, k, t_row, t_col, half, reach, pad, two_var):
        # columns[z, i, k] = sum over a in [-half + 1, half] of D_t at the padded pixel
        # (pad - reach + i + a, pad - reach - half + 1 + k): the patch's column sums
        r = pad - reach + i
        c = pad - reach - half + 1 + k
        s = ti.f64(0.0)
        for a in range(-half + 1, half + 1):
            diff = ti.cast(padded[z, r + a, c], ti.f64) - ti.cast(padded[z, r + a + t_row, c + t_col], ti.f64)
            s += diff * diff - two_var
        columns[z, i, k] = s

    @ti.func
    def _weight(columns: ti.template(), weights: ti.template(), z, i, j, half, h2s2):
        # weights[z, i, j]: the weight of shift t at the padded pixel (pad - reach + i,
        # pad - reach + j), from the 2 * half column sums of its patch
        s = ti.f64(0.0)
        for b in range(2 * half):
            s += columns[z, i, j + b]
        dist = ti.max(s, 0.0) / h2s2
        w = ti.f32(0.0)
        if dist <= _DISTANCE_CUTOFF:
            w = _fast_expf(ti.cast(-dist, ti.f32))
        weights[z, i, j] = w

    @ti.func
    def _accumulate(padded: ti.template(), weights: ti.template(), num: ti.template(), den: ti.template(), z, y, x, t_row, t_col, reach, pad):
        # pixel p gets shift t with weight W_t(p) and shift -t with weight W_t(p - t)
        w_plus = weights[z, y + reach, x + reach]
        w_minus = weights[z, y + reach - t_row, x + reach - t_col]
        r, c = y + pad, x + pad
        num[z, y, x] += w_plus * padded[z, r + t_row, c + t_col] + w_minus * padded[z, r - t_row, c - t_col]
        den[z, y, x] += w_plus + w_minus

    @ti.func
    def _finish(padded: ti.template(), num: ti.template(), den: ti.template(), z, y, x, pad, centre):
        # the weighted mean, the centre (distance 0) added last, written over num
        num[z, y, x] = (num[z, y, x] + centre * padded[z, y + pad, x + pad]) / (den[z, y, x] + centre)

    # Every kernel runs one of the functions above on each element of its output, in blocks of
    # ``block`` elements along the last axis: on the CPU a block is a whole row, which a thread
    # takes (3.5x faster than Taichi's flat loop over elements there); on the GPU a block is one
    # element, neighbouring threads neighbouring pixels (coalesced reads).
    f32_3d = ti.types.ndarray(dtype=ti.f32, ndim=3)
    f64_3d = ti.types.ndarray(dtype=ti.f64, ndim=3)

    @releasing
    @ti.kernel
    def column_sums(padded: f32_3d, columns: f64_3d, t_row: ti.i32, t_col: ti.i32, half: ti.i32,
                    reach: ti.i32, pad: ti.i32, two_var: ti.f64, block: ti.i32):
        nz, ni, nk = columns.shape[0], columns.shape[1], columns.shape[2]
        for z, i, kb in ti.ndrange(nz, ni, (nk + block - 1) // block):
            for k in range(kb * block, ti.min(kb * block + block, nk)):
                _column_sum(padded, columns, z, i, k, t_row, t_col, half, reach, pad, two_var)

    @releasing
    @ti.kernel
    def shift_weights(columns: f64_3d, weights: f32_3d, half: ti.i32, h2s2: ti.f64, block: ti.i32):
        nz, ni, nj = weights.shape[0], weights.shape[1], weights.shape[2]
        for z, i, jb in ti.ndrange(nz, ni, (nj + block - 1) // block):
            for j in range(jb * block, ti.min(jb * block + block, nj)):
                _weight(columns, weights, z, i, j, half, h2s2)

    @releasing
    @ti.kernel
    def accumulate(padded: f32_3d, weights: f32_3d, num: f32_3d, den: f32_3d, t_row: ti.i32,
                   t_col: ti.i32, reach: ti.i32, pad: ti.i32, block: ti.i32):
        nz, ny, nx = num.shape[0], num.shape[1], num.shape[2]
        for z, y, xb in ti.ndrange(nz, ny, (nx + block - 1) // block):
            for x in range(xb * block, ti.min(xb * block + block, nx)):
                _accumulate(padded, weights, num, den, z, y, x, t_row, t_col, reach, pad)

    @releasing
    @ti.kernel
    def finish(padded: f32_3d, num: f32_3d, den: f32_3d, pad: ti.i32, centre: ti.f32, block: ti.i32):
        nz, ny, nx = num.shape[0], num.shape[1], num.shape[2]
        for z, y, xb in ti.ndrange(nz, ny, (nx + block - 1) // block):
            for x in range(xb * block, ti.min(xb * block + block, nx)):
                _finish(padded, num, den, z, y, x, pad, centre)

    return {"column_sums": column_sums, "shift_weights": shift_weights, "accumulate": accumulate, "finish": finish}


def _padding(half: int, distance: int) -> int:
    """Reflect padding the kernels read: the weights of a shift are computed on the image and a
    margin of ``d`` (``W_t(p - t)``), each from pixels up to ``o + d`` beyond it. Wider than
    scikit-image's ``o + d + 1``, with the same values where both exist (reflection does not
    depend on the pad width)."""
    return half + 2 * distance + 1


def half_window(patch_distance: int) -> list[tuple[int, int]]:
    """The shifts of one half of the search window, in a fixed order.

    Parameters
    ----------
    patch_distance : int
        ``d``: shifts with both components in ``[-d, d]``.

    Returns
    -------
    list of (t_row, t_col)
        ``t_col > 0``, or ``t_col == 0`` and ``t_row > 0``: ``((2 d + 1)^2 - 1) / 2`` shifts; with
        their negatives and ``(0, 0)`` they make the whole window.
    """
    d = int(patch_distance)
    return [(tr, tc) for tc in range(0, d + 1) for tr in range(-d, d + 1) if tc > 0 or tr > 0]


def batch_slices(shape: tuple[int, int, int], patch_size: int, patch_distance: int,
                 batch_bytes: int) -> int:
    """Slices per batch so that the scratch of one batch fits ``batch_bytes``.

    Parameters
    ----------
    shape : (nz, ny, nx)
    patch_size, patch_distance : int
    batch_bytes : int

    Returns
    -------
    int
        At least 1, at most ``nz``.
    """
    nz, ny, nx = shape
    o, d = int(patch_size) // 2, int(patch_distance)
    pad = _padding(o, d)
    weights = (ny + 2 * d) * (nx + 2 * d)  # float32
    columns = (ny + 2 * d) * (nx + 2 * d + 2 * o - 1)  # float64
    per_slice = 4 * (ny + 2 * pad) * (nx + 2 * pad) + 4 * weights + 8 * columns + 4 * 2 * ny * nx
    return int(max(1, min(nz, batch_bytes // per_slice)))


def nl_means_slices(volume: np.ndarray, *, patch_size: int = 5, patch_distance: int = 8,
                    h: float, sigma: float, batch_bytes: int | None = None,
                    progress=None) -> np.ndarray:
    """scikit-image's fast 2-D non-local means on every z slice, in Taichi kernels.

    Parameters
    ----------
    volume : ndarray, shape (nz, ny, nx) or (ny, nx)
        Slices to filter (any units), finite.
    patch_size : int
        Patch width ``s`` in pixels (an even value is made odd, as scikit-image does).
    patch_distance : int
        Search-window half-width ``d`` in pixels (>= 1).
    h : float
        Filter strength, same units as the volume (> 0).
    sigma : float
        Noise standard deviation subtracted from patch distances (>= 0).
    batch_bytes : int, optional
        Scratch per batch of slices (default 256 MiB on the CPU; on CUDA 16 GiB of device
        memory and at most a quarter of the slices, the batch's host copies).
    progress : callable, optional
        ``progress(n)`` after each batch of ``n`` slices.

    Returns
    -------
    ndarray of float32, same shape as ``volume``
    """
    v = np.asarray(volume, dtype=np.float32)
    flat = v.ndim == 2
    if flat:
        v = v[None]
    if v.ndim != 3:
        raise XrmInputError(f"volume must be 2-D or 3-D, got shape {np.shape(volume)}")
    if not np.isfinite(v).all():
        raise XrmInputError("volume contains non-finite values (NaN or inf)")
    if not (np.isfinite(h) and h > 0):
        raise XrmInputError(f"h must be > 0, got {h!r}")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise XrmInputError(f"sigma must be >= 0, got {sigma!r}")
    s = int(patch_size) + (1 - int(patch_size) % 2)
    d = int(patch_distance)
    if s < 1 or d < 1:
        raise XrmInputError(f"patch_size must be >= 1 and patch_distance >= 1, got {patch_size}, {d}")
    o = s // 2
    pad = _padding(o, d)
    nz, ny, nx = v.shape
    if min(ny, nx) < 2:
        raise XrmInputError(f"slices must be at least 2 x 2 pixels, got {ny} x {nx}")
    kernels = _get_kernels()
    budget = batch_bytes if batch_bytes is not None else _BATCH_BYTES.get(current_arch() or "cpu")
    per_batch = batch_slices(v.shape, s, d, int(budget))
    on_device = current_arch() == "cuda" if DEVICE_PATH is None else bool(DEVICE_PATH)
    if on_device:  # the host copies of a batch (padded slices in, sums out): a quarter volume
        per_batch = min(per_batch, -(-nz // _DEVICE_BATCHES))
    two_var = 2.0 * float(sigma) ** 2  # float64, as the patch distances
    h2s2 = float(h) ** 2 * s * s
    centre = fast_expf(np.float32(0.0))  # the weight of t = 0 (distance 0)
    shifts = half_window(d)
    # a thread per row on the CPU (blocks longer than any row), per element on the GPU
    block = 1 if on_device else 1 << 30
    out = np.empty_like(v)
    for z0 in range(0, nz, per_batch):
        z1 = min(nz, z0 + per_batch)
        padded = np.pad(v[z0:z1], ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        weights_shape, sums_shape = (z1 - z0, ny + 2 * d, nx + 2 * d), (z1 - z0, ny, nx)
        columns_shape = (z1 - z0, ny + 2 * d, nx + 2 * d + 2 * o - 1)
        if on_device:  # the batch stays on the GPU for all the shifts: one copy in, one out
            import taichi as ti

            padded_host, padded = padded, ti.ndarray(ti.f32, padded.shape)
            padded.from_numpy(padded_host)
            del padded_host
            weights = ti.ndarray(ti.f32, weights_shape)
            columns = ti.ndarray(ti.f64, columns_shape)
            num, den = ti.ndarray(ti.f32, sums_shape), ti.ndarray(ti.f32, sums_shape)  # zeroed
        else:
            weights = np.empty(weights_shape, np.float32)
            columns = np.empty(columns_shape, np.float64)
            num, den = np.zeros(sums_shape, np.float32), np.zeros(sums_shape, np.float32)
        for t_row, t_col in shifts:
            kernels["column_sums"](padded, columns, t_row, t_col, o, d, pad, two_var, block)
            kernels["shift_weights"](columns, weights, o, h2s2, block)
            kernels["accumulate"](padded, weights, num, den, t_row, t_col, d, pad, block)
        kernels["finish"](padded, num, den, pad, centre, block)
        out[z0:z1] = num.to_numpy() if on_device else num
        del padded, weights, columns, num, den
        if progress is not None:
            progress(z1 - z0)
    return out[0] if flat else out
