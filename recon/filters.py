"""Ramp filters for filtered backprojection (FBP, FDK).

One place for the ramp: :func:`ramp_response` builds the frequency response of the discrete
ramp of Kak & Slaney (1988, eq. 61: ``h[0] = 1/4``, ``h[k odd] = -1/(pi k)^2``, ``h[k even] = 0``,
in units of the sampling step), whose DFT has no DC offset, times an apodisation window.
:func:`filter_rows` applies it along the last axis (detector columns) with zero or edge padding.

Scaling: for a sampling step ``spacing_mm`` the filtered signal is ``(p * h) / spacing_mm``,
the discrete version of convolving with the continuous ramp ``|nu|`` (nu in cycles/mm).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from twin.errors import XrmInputError, unknown

#: rows ramp-filtered per block (each block's spectra: about 8 bytes x 2 x columns per row)
_FILTER_LINES = 512

#: Names accepted by :func:`ramp_response`.
FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
#: dtypes the filtered projections may be held in for the backprojection
#: (:func:`recon.voxel_projector.backproject`, ``recon.filtered_dtype``)
FILTERED_DTYPES = ("float32", "float16")
_ALIASES = {"ramp": "ram-lak", "ramlak": "ram-lak", "ram_lak": "ram-lak",
            "shepp_logan": "shepp-logan", "hanning": "hann"}


def canonical_filter_name(name: str) -> str:
    """Return the canonical filter name for ``name`` (case-insensitive, aliases allowed)."""
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in FILTERS:
        raise unknown("ramp filter", name, FILTERS + tuple(_ALIASES))
    return key


def padded_length(n_cols: int) -> int:
    """FFT length used for rows of ``n_cols`` samples: a fast length >= 2 * n_cols."""
    return int(scipy.fft.next_fast_len(2 * int(n_cols), real=True))


def ramp_response(n_fft: int, *, filter: str = "ram-lak", cutoff: float = 1.0) -> np.ndarray:
    """Frequency response of the apodised discrete ramp, for ``numpy.fft.rfft`` ordering.

    Parameters
    ----------
    n_fft : int
        FFT length (even).
    filter : {"ram-lak", "shepp-logan", "cosine", "hamming", "hann"}
        Apodisation window applied to the ramp.
    cutoff : float
        Fraction of the Nyquist frequency above which the response is zero, in (0, 1].

    Returns
    -------
    ndarray, shape (n_fft // 2 + 1,), float64
        Response in units of 1/sample (multiply by ``1/spacing`` for 1/mm); ~``|nu|`` with
        ``nu`` in cycles per sample, 0.5 at Nyquist for Ram-Lak.
    """
    kind = canonical_filter_name(filter)
    if not (0.0 < cutoff <= 1.0):
        raise XrmInputError(f"filter cutoff must be in (0, 1] (fraction of Nyquist), got {cutoff!r}")
    n_fft = int(n_fft)
    if n_fft < 2 or n_fft % 2:
        raise XrmInputError(f"n_fft must be an even integer >= 2, got {n_fft}")
    k = np.arange(n_fft)
    k = np.where(k <= n_fft // 2, k, k - n_fft)  # signed lag
    h = np.zeros(n_fft)
    h[0] = 0.25
    odd = (k % 2) == 1
    odd |= (k % 2) == -1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    resp = np.real(np.fft.rfft(h))
    nu = np.fft.rfftfreq(n_fft)  # cycles per sample, 0 .. 0.5
    x = nu / (0.5 * cutoff)  # 0 .. 1 at the cutoff
    if kind == "shepp-logan":
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(x > 0, np.sin(0.5 * np.pi * x) / (0.5 * np.pi * x), 1.0)
    elif kind == "cosine":
        w = np.cos(0.5 * np.pi * x)
    elif kind == "hamming":
        w = 0.54 + 0.46 * np.cos(np.pi * x)
    elif kind == "hann":
        w = 0.5 + 0.5 * np.cos(np.pi * x)
    else:
        w = np.ones_like(x)
    w = np.where(x <= 1.0, w, 0.0)
    return resp * w


def filter_rows(data: np.ndarray, *, spacing_mm: float, filter: str = "ram-lak",
                cutoff: float = 1.0, pad_mode: str = "zero", workers: int = -1) -> np.ndarray:
    """Ramp-filter ``data`` along its last axis (detector columns).

    Parameters
    ----------
    data : ndarray, shape (..., n_cols)
        Line integrals (dimensionless), e.g. projections [view, row, col].
    spacing_mm : float
        Sampling step along the last axis in mm (virtual detector pixel at the rotation axis
        for cone beam).
    filter, cutoff
        See :func:`ramp_response`.
    pad_mode : {"zero", "edge"}
        How rows are padded to the FFT length.
    workers : int
        Threads: -1 for the host's (:func:`twin.runtime.host_threads`), else that many.

    Returns
    -------
    ndarray, float32, same shape as ``data``
        Filtered rows in 1/mm per unit line integral.

    Notes
    -----
    The rows are filtered in blocks of the first axis (about :data:`_FILTER_LINES` rows each),
    on threads, each block's FFTs on one thread: ``scipy.fft`` transforms every row on its own,
    so the result is the same for any blocking (``tests/test_recon_fdk.py``), and the complex
    spectra held at once are the blocks', not the stack's.
    """
    if not (np.isfinite(spacing_mm) and spacing_mm > 0):
        raise XrmInputError(f"spacing_mm must be > 0 and finite, got {spacing_mm!r}")
    if pad_mode not in ("zero", "edge"):
        raise unknown("pad_mode", pad_mode, ("zero", "edge"))
    from recon import slabs

    data = np.asarray(data)
    if data.ndim == 0:
        raise XrmInputError("filter_rows: data must have at least one axis (detector columns)")
    n = data.shape[-1]
    n_fft = padded_length(n)
    resp = ramp_response(n_fft, filter=filter, cutoff=cutoff).astype(np.float32)
    out = np.empty(data.shape, np.float32)

    def block(a: int, b: int) -> None:
        x = np.asarray(data[a:b], dtype=np.float32)
        if pad_mode == "edge":
            pad = [(0, 0)] * (x.ndim - 1) + [(0, n_fft - n)]
            # edge values on both ends: place the row in the middle of the padded buffer
            left = (n_fft - n) // 2
            pad[-1] = (left, n_fft - n - left)
            spec = scipy.fft.rfft(np.pad(x, pad, mode="edge"), axis=-1, workers=1)
        else:
            left = 0
            spec = scipy.fft.rfft(x, n=n_fft, axis=-1, workers=1)
        spec *= resp
        np.divide(scipy.fft.irfft(spec, n=n_fft, axis=-1, workers=1)[..., left:left + n],
                  np.float32(spacing_mm), out=out[a:b], dtype=np.float32)

    if data.ndim == 1:  # one row
        block_1d = filter_rows(data[None], spacing_mm=spacing_mm, filter=filter, cutoff=cutoff,
                               pad_mode=pad_mode, workers=1)
        return block_1d[0]
    lines_per_item = max(1, int(np.prod(data.shape[1:-1], dtype=np.int64)))
    step = max(1, _FILTER_LINES // lines_per_item)
    blocks = [(a, min(a + step, data.shape[0])) for a in range(0, data.shape[0], step)]
    threads = slabs.host_threads_for(data.size) if workers == -1 else max(1, int(workers))
    slabs.run_ranges(block, blocks, threads)
    return out
