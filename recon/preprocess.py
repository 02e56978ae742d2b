"""Flat/dark correction, -log, and input checks for raw projections.

``T = (I - D) / (F - D)`` with ``F``, ``D`` the mean flat and dark images, clipped to
``[min_transmission, inf)`` before ``p = -log T`` (dimensionless line integral).
NXtomo-style stacks are split by ``image_key`` (0 projection, 1 flat, 2 dark).
"""

from __future__ import annotations

import numpy as np

from recon import slabs
from twin.errors import XrmInputError

#: NXtomo image keys.
IMAGE_KEY_PROJECTION, IMAGE_KEY_FLAT, IMAGE_KEY_DARK = 0, 1, 2


def require_finite(name: str, arr: np.ndarray) -> None:
    """Raise XrmInputError naming ``name`` if ``arr`` holds NaN or inf.

    Checked a few planes at a time on the host's threads (a stack of projections is
    gigabytes: no stack-sized boolean temporary, and every core busy).
    """
    a = np.asarray(arr)
    if a.dtype.kind != "f":
        return
    if a.ndim == 0:
        a = a.reshape(1)
    plane = max(1, a.size // max(a.shape[0], 1))
    step = max(1, _CHUNK_PIXELS // plane)

    def non_finite(i: int, j: int) -> int:
        return sum(int(a[k:min(k + step, j)].size - np.count_nonzero(np.isfinite(a[k:min(k + step, j)])))
                   for k in range(i, j, step))

    bad = sum(slabs.map_planes(non_finite, a.shape[0], a.size))
    if bad:
        raise XrmInputError(f"{name} contain {bad} non-finite values (NaN/inf) out of {a.size}")


def _mean_image(name: str, stack: np.ndarray | None, image_shape: tuple[int, int]) -> np.ndarray:
    if stack is None:
        raise XrmInputError(f"{name} are missing: flat/dark correction needs flat fields "
                            "(image_key 1) and dark fields (image_key 2)")
    s = np.asarray(stack, dtype=np.float64)
    if s.ndim == 2:
        s = s[None]
    if s.ndim != 3 or s.shape[1:] != tuple(image_shape) or s.shape[0] < 1:
        raise XrmInputError(f"{name} have shape {s.shape}; expected (n, rows, cols) with "
                            f"(rows, cols) = {tuple(image_shape)} and n >= 1")
    require_finite(name, s)
    return s.mean(axis=0)


#: Detector pixels corrected at once (a float64 temporary of 8 MiB); the result is the same
#: for any chunk size (every pixel is corrected on its own).
_CHUNK_PIXELS = 1 << 20


def _mean_images(counts: np.ndarray, flats: np.ndarray, darks: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Checked mean dark ``D`` and span ``F - D`` (float64, shape (R, C))."""
    c = np.asarray(counts)
    if c.ndim != 3:
        raise XrmInputError(f"projections must be 3-D [view, row, col], got shape {c.shape}")
    f = _mean_image("flat fields", flats, c.shape[1:])
    d = _mean_image("dark fields", darks, c.shape[1:])
    span = f - d
    if np.any(span <= 0):
        n = int(np.count_nonzero(span <= 0))
        raise XrmInputError(f"{n} pixels have flat <= dark; the flat fields must be brighter "
                            "than the dark fields everywhere")
    return d, span


def _transmission(counts: np.ndarray, dark: np.ndarray, span: np.ndarray) -> np.ndarray:
    """``(I - D) / (F - D)`` in float64, as float32 (the one place of the formula)."""
    t = np.subtract(counts, dark, dtype=np.float64)
    t /= span
    return t.astype(np.float32)


def _minus_log_in_place(t: np.ndarray, min_transmission: float, out: np.ndarray) -> None:
    """``out = -log(max(t, min_transmission))`` (float32; ``t`` is overwritten)."""
    np.maximum(t, np.float32(min_transmission), out=t)
    np.log(t, out=t)
    np.negative(t, out=out)


def _view_chunks(counts: np.ndarray):
    step = max(1, _CHUNK_PIXELS // max(1, counts.shape[1] * counts.shape[2]))
    for v0 in range(0, counts.shape[0], step):
        yield slice(v0, min(v0 + step, counts.shape[0]))


def _each_chunk(counts: np.ndarray, work) -> None:
    """``work(views)`` for every chunk of views, on the host's threads (numpy releases the
    GIL; each chunk writes its own views, so the result is the same on any number)."""
    chunks = list(_view_chunks(counts))
    slabs.run_ranges(lambda i, _: work(chunks[i]), [(i, 0) for i in range(len(chunks))],
                     slabs.host_threads_for(counts.size))


def flat_dark_correct(counts: np.ndarray, flats: np.ndarray, darks: np.ndarray) -> np.ndarray:
    """Transmission ``(I - D) / (F - D)``.

    Parameters
    ----------
    counts : ndarray, shape (V, R, C)
        Raw projection counts.
    flats, darks : ndarray, shape (n, R, C) or (R, C)
        Flat-field (open beam) and dark images; averaged over n.

    Returns
    -------
    ndarray, shape (V, R, C), float32
        Transmission (1 = open beam), computed in float64 a chunk of views at a time.
    """
    c = np.asarray(counts)
    d, span = _mean_images(c, flats, darks)
    require_finite("projections", c)
    out = np.empty(c.shape, np.float32)

    def chunk(sl: slice) -> None:
        out[sl] = _transmission(c[sl], d, span)

    _each_chunk(c, chunk)
    return out


def minus_log(transmission: np.ndarray, *, min_transmission: float = 1e-6) -> np.ndarray:
    """Line integrals ``-log(max(T, min_transmission))``, float32, same shape."""
    t = np.asarray(transmission, dtype=np.float32)
    require_finite("transmission", t)
    if not (0 < min_transmission < 1):
        raise XrmInputError(f"min_transmission must be in (0, 1), got {min_transmission!r}")
    out = np.empty(t.shape, np.float32)
    _minus_log_in_place(t.copy(), min_transmission, out)
    return out


def line_integrals_from_counts(counts: np.ndarray, flats: np.ndarray, darks: np.ndarray, *,
                               min_transmission: float = 1e-6) -> np.ndarray:
    """Flat/dark correction followed by -log: shape (V, R, C), float32, dimensionless.

    The same arithmetic as :func:`flat_dark_correct` then :func:`minus_log`, a chunk of views
    at a time, so the temporaries are a chunk's and only the float32 result is the stack's size.
    """
    c = np.asarray(counts)
    d, span = _mean_images(c, flats, darks)
    if not (0 < min_transmission < 1):
        raise XrmInputError(f"min_transmission must be in (0, 1), got {min_transmission!r}")
    require_finite("projections", c)
    out = np.empty(c.shape, np.float32)
    _each_chunk(c, lambda sl: _minus_log_in_place(_transmission(c[sl], d, span), min_transmission, out[sl]))
    return out


def split_by_image_key(data: np.ndarray, image_key: np.ndarray, angles_deg: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split an NXtomo stack into projections, flats, darks and projection angles.

    Parameters
    ----------
    data : ndarray, shape (N, R, C)
        ``/entry/instrument/detector/data``.
    image_key : ndarray, shape (N,)
        0 projection, 1 flat, 2 dark.
    angles_deg : ndarray, shape (N,)
        ``/entry/sample/rotation_angle`` (degrees), for all N images.

    Returns
    -------
    projections (V, R, C), flats (F, R, C), darks (D, R, C), angles_deg (V,)

    Raises
    ------
    XrmInputError
        Naming what is missing (projections, flats, darks, angles) or mismatched.
    """
    d = np.asarray(data) if not hasattr(data, "shape") else data
    key = np.asarray(image_key).astype(int).ravel()
    if len(d.shape) != 3:
        raise XrmInputError(f"detector data must be 3-D (images, rows, cols), got shape {d.shape}")
    if key.shape[0] != d.shape[0]:
        raise XrmInputError(f"image_key has {key.shape[0]} entries for {d.shape[0]} images")
    unknown_keys = sorted(set(key.tolist()) - {0, 1, 2})
    if unknown_keys:
        raise XrmInputError(f"image_key values {unknown_keys} are not allowed; use 0 (projection), "
                            "1 (flat), 2 (dark)")
    missing = [name for k, name in ((0, "projections (image_key 0)"), (1, "flat fields (image_key 1)"),
                                    (2, "dark fields (image_key 2)")) if not np.any(key == k)]
    if angles_deg is None:
        missing.append("rotation angles (/entry/sample/rotation_angle)")
    if missing:
        raise XrmInputError("NXtomo data lack " + ", ".join(missing))
    ang = np.asarray(angles_deg, dtype=np.float64).ravel()
    if ang.shape[0] != d.shape[0]:
        raise XrmInputError(f"rotation_angle has {ang.shape[0]} entries for {d.shape[0]} images")
    idx = [np.flatnonzero(key == k) for k in (0, 1, 2)]
    proj, flats, darks = (np.asarray(d[i]) for i in idx)
    angles = ang[idx[0]]
    require_finite("rotation angles", angles)
    return proj, flats, darks, angles
