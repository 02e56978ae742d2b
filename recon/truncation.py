"""Interior (truncated) scans: extend detector rows beyond the field of view before filtering.

When the object is wider than the field of view (scout-and-zoom scans), the ramp filter sees a
step at the detector edge and FDK returns the VOI with a bright rim, cupping and an offset.
The rows are extended on both sides with a smooth estimate of the missing line integrals:

* ``"chord"`` (default): the squared line integral of a homogeneous cylinder is quadratic
  in the detector coordinate, ``p^2 = 4 mu^2 (R^2 - (u - u0)^2)``. A quadratic with the edge
  value fixed is fitted to ``p^2`` over the outermost ``fit_cols`` columns and continued
  outwards (water-cylinder extrapolation in the spirit of Hsieh et al., Med. Phys. 31, 2385,
  2004, with the attenuation estimated from the data); fits that do not fall off are replaced by
  a fall-off that reaches zero at the end of the padding.
* ``"edge"``: the edge value continued with a cosine roll-off to zero over the padding.

Either way a cosine taper over the outer 10 % of the padding brings the rows to zero. The
backprojection still covers only the original field of view.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recon import slabs
from twin.errors import XrmInputError, unknown
from twin.geometry import ScanGeometry

METHODS = ("chord", "edge")
#: detector rows extended per block (about 40 bytes of float64 temporaries per padded pixel)
_EXTEND_ROWS = 1024


def is_truncated(line_integrals: np.ndarray, *, rel_threshold: float = 0.02, edge_cols: int = 3) -> bool:
    """True when the outermost columns carry more than ``rel_threshold`` of the maximum."""
    p = np.asarray(line_integrals)
    peak = float(np.max(np.abs(p))) if p.size else 0.0
    if peak == 0:
        return False
    edges = np.concatenate([p[..., :edge_cols].ravel(), p[..., -edge_cols:].ravel()])
    return float(np.percentile(np.abs(edges), 90)) > rel_threshold * peak


def _extend_side(rows: np.ndarray, pad: int, method: str, fit_cols: int) -> np.ndarray:
    """Extension of 2-D ``rows`` (n, C) beyond their last column: shape (n, pad)."""
    n, c = rows.shape
    x_out = np.arange(1, pad + 1, dtype=np.float64)  # distance beyond the edge, in pixels
    edge = np.maximum(rows[:, -1].astype(np.float64), 0.0)
    if method == "edge":
        ext = edge[:, None] * 0.5 * (1 + np.cos(np.pi * x_out / (pad + 1)))[None, :]
    else:
        m = min(fit_cols, c - 1)
        x_in = np.arange(-m, 1, dtype=np.float64)  # columns C-1-m .. C-1, edge at 0
        q = np.maximum(rows[:, -m - 1:].astype(np.float64), 0.0) ** 2
        dq = q - (edge ** 2)[:, None]
        # least squares for dq = q1 x + q2 x^2 (q0 fixed to the edge value): the pseudo-inverse
        # of the design applied column by column in a fixed order, so each row's fit is the
        # same whichever rows it is computed with (chunks, threads)
        pinv = np.linalg.pinv(np.stack([x_in, x_in ** 2], axis=1))  # (2, m + 1)
        q1 = np.zeros(n)
        q2 = np.zeros(n)
        for k in range(m + 1):
            q1 += pinv[0, k] * dq[:, k]
            q2 += pinv[1, k] * dq[:, k]
        q0 = edge ** 2
        # a fit that does not fall to zero within the padding gets the fall-off that does
        q_end = q0 + q1 * pad + q2 * pad ** 2
        bad = (q2 >= 0) | (q_end > 0)
        q1 = np.where(bad, np.minimum(q1, 0.0), q1)
        q2 = np.where(bad, -(q0 + q1 * pad) / pad ** 2, q2)
        q2 = np.minimum(q2, 0.0)
        qx = q0[:, None] + q1[:, None] * x_out[None, :] + q2[:, None] * x_out[None, :] ** 2
        ext = np.sqrt(np.maximum(qx, 0.0))
        # once a row reaches zero it stays zero
        ext *= np.cumprod(qx > 0, axis=1)
    taper_len = max(1, pad // 10)
    taper = np.ones(pad)
    taper[-taper_len:] = 0.5 * (1 + np.cos(np.pi * np.arange(1, taper_len + 1) / taper_len))
    return (ext * taper[None, :]).astype(np.float32)


def extend_truncated(line_integrals: np.ndarray, *, pad_cols: int | None = None,
                     method: str = "chord", fit_cols: int = 16) -> np.ndarray:
    """Extend every detector row on both sides.

    Parameters
    ----------
    line_integrals : ndarray, shape (V, R, C)
        Line integrals (dimensionless).
    pad_cols : int, optional
        Columns added on each side (default C: the extended detector is 3x as wide).
    method : {"chord", "edge"}
    fit_cols : int
        Columns used by the chord fit at each edge.

    Returns
    -------
    ndarray, shape (V, R, C + 2 * pad_cols), float32
    """
    if method not in METHODS:
        raise unknown("truncation method", method, METHODS)
    p = np.asarray(line_integrals, dtype=np.float32)
    if p.ndim != 3:
        raise XrmInputError(f"projections must be 3-D [view, row, col], got shape {p.shape}")
    c = p.shape[2]
    pad = c if pad_cols is None else int(pad_cols)
    if pad < 1:
        raise XrmInputError(f"pad_cols must be >= 1, got {pad_cols!r}")
    if fit_cols < 2 or fit_cols >= c:
        raise XrmInputError(f"fit_cols must be in [2, {c - 1}], got {fit_cols}")
    flat = p.reshape(-1, c)
    out = np.empty((flat.shape[0], c + 2 * pad), np.float32)

    def lines(a: int, b: int) -> None:  # every row is extended on its own
        out[a:b, :pad] = _extend_side(flat[a:b, ::-1], pad, method, fit_cols)[:, ::-1]
        out[a:b, pad:pad + c] = flat[a:b]
        out[a:b, pad + c:] = _extend_side(flat[a:b], pad, method, fit_cols)

    # blocks of a fixed number of rows (the float64 temporaries are a block's), on the host's
    # threads: numpy releases the GIL, and every row's extension is the same in any block
    blocks = [(a, min(a + _EXTEND_ROWS, flat.shape[0])) for a in range(0, flat.shape[0], _EXTEND_ROWS)]
    slabs.run_ranges(lines, blocks, slabs.host_threads_for(out.size))
    return out.reshape(p.shape[0], p.shape[1], c + 2 * pad)


def extended_geometry(geometry: ScanGeometry, pad_cols: int) -> ScanGeometry:
    """The geometry of a detector widened by ``pad_cols`` on each side (same centre and pitch)."""
    return dataclasses.replace(geometry, cols=geometry.cols + 2 * int(pad_cols))
