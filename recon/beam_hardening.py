"""Beam-hardening correction by linearisation against a reference material.

For a polychromatic beam with detector-weighted spectrum ``w(E)`` (normalised to sum 1: photons
per bin times the detector's energy response) through a thickness ``L`` of a reference material
``mu_ref(E)``, the measured line integral is

``p_poly(L) = -log( sum_E w(E) exp(-mu_ref(E) L) )``,

a concave function of ``L``: the cause of cupping. Linearisation maps each measured value back
to ``mu_target * L(p_poly)``, the line integral of a monochromatic beam with attenuation
``mu_target`` (default: ``sum_E w(E) mu_ref(E)``, the slope of ``p_poly`` at ``L = 0``, so thin
objects are unchanged). The correction is exact for the reference material and approximate for
others (Herman 1979; Kak & Slaney ch. 4.1).
"""

from __future__ import annotations

import numpy as np

from twin.errors import XrmInputError


def _check_spectrum(energies_kev, weights, mu_ref_per_mm):
    e = np.asarray(energies_kev, float).ravel()
    w = np.asarray(weights, float).ravel()
    mu = np.asarray(mu_ref_per_mm, float).ravel()
    if not (e.size == w.size == mu.size) or e.size < 1:
        raise XrmInputError(f"energies_kev ({e.size}), weights ({w.size}) and mu_ref_per_mm ({mu.size}) "
                            "must be 1-D arrays of the same non-zero length")
    for name, a in (("energies_kev", e), ("weights", w), ("mu_ref_per_mm", mu)):
        if not np.all(np.isfinite(a)):
            raise XrmInputError(f"{name} contains non-finite values")
    if np.any(w < 0) or w.sum() <= 0:
        raise XrmInputError("spectrum weights must be >= 0 with a positive sum")
    if np.any(mu < 0):
        raise XrmInputError("mu_ref_per_mm must be >= 0")
    return e, w / w.sum(), mu


def polychromatic_line_integral(thickness_mm: np.ndarray, weights: np.ndarray,
                                mu_ref_per_mm: np.ndarray) -> np.ndarray:
    """``-log(sum_E w(E) exp(-mu(E) L))`` for each thickness (any shape), dimensionless."""
    w = np.asarray(weights, float) / np.sum(weights)
    t = np.asarray(thickness_mm, float)
    trans = np.exp(-np.multiply.outer(t, np.asarray(mu_ref_per_mm, float))) @ w
    return -np.log(trans)


def linearisation_table(energies_kev: np.ndarray, weights: np.ndarray, mu_ref_per_mm: np.ndarray, *,
                        max_line_integral: float, target_mu_per_mm: float | None = None,
                        n_points: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Tabulate measured (polychromatic) vs linearised line integrals.

    Parameters
    ----------
    energies_kev : ndarray, shape (E,)
        Bin energies, keV (used for checks and documentation of the table).
    weights : ndarray, shape (E,)
        Detector-weighted spectrum (any normalisation).
    mu_ref_per_mm : ndarray, shape (E,)
        Linear attenuation of the reference material, 1/mm.
    max_line_integral : float
        Largest measured line integral the table must cover.
    target_mu_per_mm : float, optional
        Attenuation of the linearised data (default: spectrum-weighted mean of mu_ref).
    n_points : int

    Returns
    -------
    p_poly : ndarray, shape (n_points,)
        Measured line integral, increasing from 0.
    p_linear : ndarray, shape (n_points,)
        ``target_mu_per_mm * L`` for the thickness L giving ``p_poly``.
    """
    _, w, mu = _check_spectrum(energies_kev, weights, mu_ref_per_mm)
    if not (np.isfinite(max_line_integral) and max_line_integral >= 0):
        raise XrmInputError(f"max_line_integral must be finite and >= 0, got {max_line_integral!r}")
    target = float(np.dot(w, mu)) if target_mu_per_mm is None else float(target_mu_per_mm)
    if target <= 0:
        raise XrmInputError("the reference material does not attenuate (mean mu is 0)")
    # thickness range: grow until the table covers the largest measured value
    l_max = max(max_line_integral, 1e-6) / target
    for _ in range(60):
        if polychromatic_line_integral(np.array([l_max]), w, mu)[0] >= max_line_integral * 1.01:
            break
        l_max *= 2.0
    else:
        raise XrmInputError(f"line integral {max_line_integral:.3g} cannot be reached with this "
                            "spectrum and reference material (detector saturates at the hardest energy)")
    thickness = np.linspace(0.0, l_max, int(n_points))
    return polychromatic_line_integral(thickness, w, mu), target * thickness


def linearise(line_integrals: np.ndarray, energies_kev: np.ndarray, weights: np.ndarray,
              mu_ref_per_mm: np.ndarray, *, target_mu_per_mm: float | None = None) -> np.ndarray:
    """Beam-hardening linearisation of measured line integrals (pure function of arrays).

    Parameters
    ----------
    line_integrals : ndarray, any shape
        Measured ``-log(I / I0)`` (dimensionless).
    energies_kev, weights, mu_ref_per_mm : ndarray, shape (E,)
        Energy bins (keV), detector-weighted spectrum, reference attenuation (1/mm).
    target_mu_per_mm : float, optional
        See :func:`linearisation_table`.

    Returns
    -------
    ndarray, same shape, float32
        Linearised line integrals (negative inputs are passed through unchanged).
    """
    p = np.asarray(line_integrals, dtype=np.float32)
    if not np.all(np.isfinite(p)):
        raise XrmInputError("line integrals contain non-finite values")
    p_poly, p_lin = linearisation_table(energies_kev, weights, mu_ref_per_mm,
                                        max_line_integral=float(max(p.max(initial=0.0), 0.0)),
                                        target_mu_per_mm=target_mu_per_mm)
    out = np.interp(p.ravel(), p_poly, p_lin).reshape(p.shape)
    return np.where(p > 0, out, p).astype(np.float32)
