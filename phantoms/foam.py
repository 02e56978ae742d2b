"""Nickel foam: a jittered tetrahedral (diamond-lattice) network of struts with requested
local-thickness mean, standard deviation and surface-to-volume ratio.

Model
-----
* Nodes sit on a diamond lattice (every node joins 4 struts, like the Plateau borders of a real
  metal foam), rotated by a seeded rotation and jittered per node by a hash of the node's lattice
  index, so any region is generated identically whatever the volume of interest.
* A strut is the set of points within ``d/2`` of a flat ribbon of width ``lambda * d`` joining two
  nodes (a capsule when ``lambda = 0``). Its cross-section is a stadium, whose Hildebrand-
  Rueegsegger local thickness is exactly ``d`` everywhere, and whose surface-to-volume ratio is
  ``g(lambda) / d`` with ``g = (2 lambda + pi) / (lambda + pi / 4)``, from 4/d (round) down to
  2/d (flat).
* The *volume-weighted* distribution of ``d`` (which is what a voxel-wise local-thickness
  histogram measures) is a gamma distribution with the requested mean and sd: shape
  ``k = mean^2 / sd^2``, scale ``theta = sd^2 / mean``. Strut volume grows as ``d^2``, so the
  per-strut diameters are drawn from Gamma(k - 2, theta).
* The surface-to-volume ratio is then ``c_sv * g(lambda) * E_q[1/d]`` with
  ``E_q[1/d] = 1 / (theta (k - 1))``; ``lambda`` is solved from the request. ``c_sv`` (junction
  overlap: surface lost where struts meet) and ``c_lt`` (local thickness gained at junctions) are
  calibration constants measured once on this generator with ``recon.thickness`` and
  marching cubes (``docs/phantoms.md``).

Requests that no such foam can realise (sd >= mean / sqrt(2.5), S/V above the round-strut value
or below the flattest ribbon's) raise :class:`twin.errors.XrmInputError` before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from twin.errors import XrmInputError, require_positive

from phantoms import hashing
from phantoms.grid import GridSpec

__all__ = ["FoamSpec", "foam_spec", "foam_struts", "strut_prims", "rasterize_foam",
           "FOAM_DEFAULTS"]

#: the paper's foam (Cognigni et al. 2023, Fig. 6) and the lattice defaults
FOAM_DEFAULTS = {
    "thickness_mean_um": 35.88,
    "thickness_std_um": 7.66,
    "surface_to_volume_per_mm": 113.58,
    "strut_length_um": 250.0,
    "jitter": 0.3,
}

# calibration (docs/phantoms.md): measured / model on 1.0-1.5 um grids
C_LT_MEAN = 1.0
C_LT_STD = 1.0
C_SV = 1.0
LAMBDA_MAX = 4.0


def _g(lam):
    return (2.0 * lam + np.pi) / (lam + np.pi / 4.0)


@dataclass(frozen=True)
class FoamSpec:
    """A realisable foam request and the generator parameters solved from it.

    Attributes
    ----------
    thickness_mean_um, thickness_std_um, surface_to_volume_per_mm : float
        The request.
    strut_length_um : float
        Mean node-to-node distance.
    jitter : float
        Node jitter as a fraction of the strut length (uniform in +-jitter per axis).
    shape, scale_um : float
        Per-strut diameter ~ Gamma(shape, scale_um).
    ribbon : float
        lambda: ribbon width / diameter (0 = round struts).
    solid_fraction : float
        Expected Ni volume fraction (model estimate, for the homogenised composite).
    """

    thickness_mean_um: float
    thickness_std_um: float
    surface_to_volume_per_mm: float
    strut_length_um: float
    jitter: float
    shape: float
    scale_um: float
    ribbon: float
    solid_fraction: float

    @property
    def lattice_um(self) -> float:
        """Cubic diamond-lattice constant a (nearest-neighbour distance sqrt(3) a / 4)."""
        return 4.0 * self.strut_length_um / np.sqrt(3.0)

    @property
    def max_diameter_um(self) -> float:
        return float(stats.gamma.ppf(1 - 1e-9, self.shape, scale=self.scale_um))


def sv_range_per_mm(mean_um: float, std_um: float) -> tuple[float, float]:
    """Smallest and largest S/V (1/mm) realisable for a thickness mean and sd."""
    mean_um, std_um = float(mean_um), float(std_um)
    k = (mean_um / std_um) ** 2
    theta = std_um ** 2 / mean_um
    inv = 1000.0 / (theta * (k - 1.0))
    return C_SV * _g(LAMBDA_MAX) * inv, C_SV * _g(0.0) * inv


def foam_spec(params: dict | None = None) -> FoamSpec:
    """Validate a ``[phantom.foam]`` table and solve the generator parameters.

    Parameters
    ----------
    params : dict, optional
        Keys of :data:`FOAM_DEFAULTS` (missing keys take the defaults).

    Raises
    ------
    XrmInputError
        Unknown key, non-positive numbers, or statistics no foam of this model can realise.
    """
    from twin.errors import unknown

    p = dict(FOAM_DEFAULTS)
    for key, val in (params or {}).items():
        if key not in FOAM_DEFAULTS:
            raise unknown("phantom.foam parameter", key, FOAM_DEFAULTS)
        p[key] = val
    mean = require_positive("foam.thickness_mean_um", p["thickness_mean_um"])
    std = require_positive("foam.thickness_std_um", p["thickness_std_um"])
    sv = require_positive("foam.surface_to_volume_per_mm", p["surface_to_volume_per_mm"])
    length = require_positive("foam.strut_length_um", p["strut_length_um"])
    jitter = require_positive("foam.jitter", p["jitter"], allow_zero=True)
    if jitter > 0.45:
        raise XrmInputError(f"foam.jitter must be <= 0.45 (fraction of the strut length), got {jitter}")
    if std >= mean / np.sqrt(2.5):
        raise XrmInputError(
            f"foam thickness sd {std:g} um is too large for mean {mean:g} um: a foam of struts "
            f"needs sd < mean / sqrt(2.5) = {mean / np.sqrt(2.5):.3g} um (and sd > mean is "
            "impossible for any positive thickness distribution)")
    if std < 0.02 * mean:
        raise XrmInputError(f"foam thickness sd {std:g} um must be at least 2 % of the mean "
                            f"({0.02 * mean:.3g} um)")
    # the model's targets are the measured ones divided by the calibration constants
    m_mod, s_mod = mean / C_LT_MEAN, std / C_LT_STD
    k = (m_mod / s_mod) ** 2
    theta = s_mod ** 2 / m_mod
    lo, hi = sv_range_per_mm(m_mod, s_mod)
    if not lo <= sv <= hi:
        raise XrmInputError(
            f"foam surface_to_volume_per_mm {sv:g} cannot be realised with thickness mean "
            f"{mean:g} um and sd {std:g} um: struts of that thickness give {lo:.4g} to "
            f"{hi:.4g} 1/mm (round struts give the largest value)")
    g = sv / (C_SV * 1000.0 / (theta * (k - 1.0)))
    lam = 0.0 if g >= 4.0 else float(np.pi * (1.0 - g / 4.0) / (g - 2.0))
    if length < 2.0 * mean:
        raise XrmInputError(f"foam.strut_length_um {length:g} must be at least twice the mean "
                            f"thickness ({2 * mean:g} um)")
    a = 4.0 * length / np.sqrt(3.0)
    ed2 = theta ** 2 * (k - 2.0) * (k - 1.0)  # E_p[d^2] of Gamma(k-2, theta)
    solid = float(min(0.9, 16.0 / a ** 3 * length * (np.pi / 4 + lam) * ed2))
    return FoamSpec(mean, std, sv, length, jitter, k - 2.0, theta, lam, solid)


def _rotation(seed: int) -> np.ndarray:
    """A seeded uniformly random rotation matrix (3, 3)."""
    q = hashing.normal(seed, hashing.STREAMS["foam_rotation"], np.arange(4))
    q = q / np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


_KRONECKER = 1.0 / 1.1673039782614187 ** np.arange(1, 5)
_BOND_OFFSETS = np.array([[0, 0, 0], [0, -1, -1], [-1, 0, -1], [-1, -1, 0]], np.int64)


def foam_struts(spec: FoamSpec, lo_mm, hi_mm, seed: int) -> dict[str, np.ndarray]:
    """Struts that may reach the box [lo_mm, hi_mm] (sample frame, mm).

    Returns
    -------
    dict of ndarray
        ``a_mm`` (n, 3), ``b_mm`` (n, 3) end nodes; ``d_um`` (n,) diameters; ``v`` (n, 3) unit
        ribbon-width axes (perpendicular to the strut).
    """
    rot = _rotation(seed)
    a_mm = spec.lattice_um / 1000.0
    pad = (spec.strut_length_um * (1 + 2 * spec.jitter) + spec.max_diameter_um
           * (1 + spec.ribbon)) / 1000.0
    lo = np.asarray(lo_mm, float) - pad
    hi = np.asarray(hi_mm, float) + pad
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    lat = corners @ rot  # lattice-frame coordinates (rot maps lattice -> sample)
    hmin = np.floor(lat.min(0) / (a_mm / 2)).astype(np.int64) - 2
    hmax = np.ceil(lat.max(0) / (a_mm / 2)).astype(np.int64) + 2
    hx, hy, hz = np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(hmin, hmax)], indexing="ij")
    h = np.stack([hx.ravel(), hy.ravel(), hz.ravel()], 1)
    h = h[(h.sum(1) % 2) == 0]  # FCC sites: even coordinate sum
    # keep sites whose ideal position is near the box (in the sample frame)
    pos = (h * (a_mm / 2)) @ rot.T
    near = np.all((pos >= lo - a_mm) & (pos <= hi + a_mm), axis=1)
    h = h[near]
    seed_j = hashing.STREAMS["foam_jitter"]
    jit = spec.jitter * spec.strut_length_um / 1000.0

    def node(hkeys, tag):
        base = hkeys * (a_mm / 2) + (tag * a_mm / 4)
        j = np.stack([hashing.uniform(seed, seed_j, hkeys[:, 0], hkeys[:, 1], hkeys[:, 2], tag, ax)
                      for ax in range(3)], 1)
        return (base + jit * (2 * j - 1)) @ rot.T

    a_nodes = node(h, 0)
    a_list, b_list, keys = [], [], []
    for bi, off in enumerate(_BOND_OFFSETS):
        hb = h + off
        a_list.append(a_nodes)
        b_list.append(node(hb, 1))
        keys.append(np.column_stack([h, np.full(len(h), bi)]))
    A = np.concatenate(a_list)
    B = np.concatenate(b_list)
    K = np.concatenate(keys)
    # Kronecker (generalised golden ratio) low-discrepancy diameters: any box of struts holds
    # an even sample of the distribution (error ~1/N rather than 1/sqrt(N))
    u0 = hashing.uniform(seed, hashing.STREAMS["foam_diameter"], 0)
    u = np.mod(u0 + K[:, 0] * _KRONECKER[0] + K[:, 1] * _KRONECKER[1] + K[:, 2] * _KRONECKER[2]
               + K[:, 3] * _KRONECKER[3], 1.0)
    d = stats.gamma.ppf(np.clip(u, 1e-12, 1 - 1e-12), spec.shape, scale=spec.scale_um)
    psi = 2 * np.pi * hashing.uniform(seed, hashing.STREAMS["foam_sheet"], K[:, 0], K[:, 1],
                                      K[:, 2], K[:, 3])
    ax = B - A
    ax /= np.linalg.norm(ax, axis=1, keepdims=True)
    ref = np.where(np.abs(ax[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    e1 = np.cross(ax, ref)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(ax, e1)
    v = np.cos(psi)[:, None] * e1 + np.sin(psi)[:, None] * e2
    # drop struts whose bounding box misses the requested box
    rad = (d / 2 * (1 + spec.ribbon)) / 1000.0
    smin = np.minimum(A, B) - rad[:, None]
    smax = np.maximum(A, B) + rad[:, None]
    keep = np.all((smax >= np.asarray(lo_mm)) & (smin <= np.asarray(hi_mm)), axis=1)
    return {"a_mm": A[keep], "b_mm": B[keep], "d_um": d[keep], "v": v[keep]}


def strut_prims(struts: dict[str, np.ndarray], grid: GridSpec, ribbon: float) -> np.ndarray:
    """Kernel primitives (n, 12) for :func:`phantoms.kernels.paint_rounded_sheets`."""
    A = grid.to_index(struts["a_mm"])
    B = grid.to_index(struts["b_mm"])
    c = (A + B) / 2
    u = B - A
    half = np.linalg.norm(u, axis=1)
    u = u / np.maximum(half, 1e-12)[:, None]
    r = struts["d_um"] / 2 / grid.voxel_um
    prim = np.column_stack([c, u, struts["v"], half / 2, ribbon * r, r])
    return prim.astype(np.float32)


def rasterize_foam(spec: FoamSpec, grid: GridSpec, seed: int = 0) -> np.ndarray:
    """The foam alone in a grid: a bool mask (nz, ny, nx), True on Ni.

    The same struts as inside a cell (the generator depends only on seed and position).
    """
    from phantoms.kernels import paint_rounded_sheets

    lo, hi = grid.box_mm()
    labels = np.zeros(grid.shape_zyx, np.uint8)
    st = foam_struts(spec, lo, hi, seed)
    paint_rounded_sheets(labels, strut_prims(st, grid, spec.ribbon), hosts=[0], new_label=1)
    return labels.view(bool)
