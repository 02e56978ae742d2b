"""Cycling damage of the NiMH cell: crack growth in the positive electrode and delamination of
the negative active material from its Ni foil.

Damage sites sit on a lattice in the unrolled coordinates of the winding (unrolled angle theta,
height z), one site per cell, jittered by a hash. Each site has an initiation cycle
``c0 > 0``; for ``cycles > c0`` it grows with the saturating law

    s(cycles) = 1 - exp(-(cycles - c0) / tau)        (0 before initiation)

and every size (crack depth, height and opening; delamination extent and gap) is a
non-decreasing function of ``s``. Each damaged region therefore contains the region of any
smaller cycle count: volumes and areas are 0 at 0 cycles and grow monotonically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phantoms import hashing

__all__ = ["AgeingSpec", "growth", "crack_sites", "delamination_sites", "AGEING_DEFAULTS"]

AGEING_DEFAULTS = {
    "crack_sites_per_turn": 6,
    "crack_spacing_z_mm": 3.0,
    "crack_onset_cycles": [10.0, 70.0],
    "crack_tau_cycles": 80.0,
    "crack_height_mm": 1.5,
    "crack_opening_um": 14.0,
    "delamination_sites_per_turn": 4,
    "delamination_spacing_z_mm": 4.0,
    "delamination_onset_cycles": [5.0, 60.0],
    "delamination_tau_cycles": 100.0,
    "delamination_height_mm": 2.4,
    "delamination_arc_deg": 50.0,
    "delamination_gap_um": 22.0,
}


@dataclass(frozen=True)
class AgeingSpec:
    cycles: float
    p: dict


def growth(cycles: float, onset: np.ndarray, tau: float) -> np.ndarray:
    """Damage state s in [0, 1): 0 before ``onset``, then 1 - exp(-(cycles - onset) / tau)."""
    return np.where(cycles > onset, -np.expm1(-(cycles - onset) / tau), 0.0)


def _sites(seed, stream, theta_end, z0, z1, per_turn, dz):
    nt = int(np.ceil(theta_end / (2 * np.pi) * per_turn))
    nzc = int(np.ceil((z1 - z0) / dz))
    i, j = np.meshgrid(np.arange(nt), np.arange(nzc), indexing="ij")
    i, j = i.ravel(), j.ravel()
    u = [hashing.uniform(seed, stream, i, j, k) for k in range(5)]
    theta = (i + 0.15 + 0.7 * u[0]) * 2 * np.pi / per_turn
    z = z0 + (j + 0.2 + 0.6 * u[1]) * dz
    keep = (theta <= theta_end) & (z < z1)
    return i[keep], j[keep], theta[keep], z[keep], [x[keep] for x in u[2:]]


def crack_sites(seed: int, p: dict, theta_end: float, z0: float, z1: float, cycles: float):
    """Cracks at ``cycles``: dict of arrays (key (n, 2), theta, z_mm, s, depth_frac,
    height_mm, opening_um); only sites with s > 0."""
    i, j, th, z, u = _sites(seed, hashing.STREAMS["crack"], theta_end, z0, z1,
                            int(p["crack_sites_per_turn"]), float(p["crack_spacing_z_mm"]))
    lo, hi = p["crack_onset_cycles"]
    onset = lo + (hi - lo) * u[0]
    s = growth(cycles, onset, float(p["crack_tau_cycles"]))
    k = s > 0
    s = s[k]
    return {"key": np.stack([i[k], j[k]], 1), "theta": th[k], "z_mm": z[k], "s": s,
            "onset": onset[k],
            "depth_frac": np.sqrt(s),
            "height_mm": float(p["crack_height_mm"]) * s * (0.6 + 0.4 * u[1][k]),
            "opening_um": float(p["crack_opening_um"]) * np.sqrt(s)}


def delamination_sites(seed: int, p: dict, theta_end: float, z0: float, z1: float,
                       cycles: float):
    """Delamination patches at ``cycles``: dict of arrays (key, theta, z_mm, s, half_arc_rad,
    half_height_mm, gap_um, side (+1 outer / -1 inner face of the foil))."""
    i, j, th, z, u = _sites(seed, hashing.STREAMS["delamination"], theta_end, z0, z1,
                            int(p["delamination_sites_per_turn"]),
                            float(p["delamination_spacing_z_mm"]))
    lo, hi = p["delamination_onset_cycles"]
    onset = lo + (hi - lo) * u[0]
    s = growth(cycles, onset, float(p["delamination_tau_cycles"]))
    k = s > 0
    s = s[k]
    return {"key": np.stack([i[k], j[k]], 1), "theta": th[k], "z_mm": z[k], "s": s,
            "onset": onset[k],
            "half_arc_rad": np.deg2rad(float(p["delamination_arc_deg"])) / 2 * s,
            "half_height_mm": float(p["delamination_height_mm"]) / 2 * s,
            "gap_um": float(p["delamination_gap_um"]) * s,
            "side": np.where(u[1][k] < 0.5, -1, 1)}
