"""Nickel foam: a jittered tetrahedral (diamond-lattice) network of struts with requested
local-thickness mean, standard deviation and surface-to-volume ratio.

Model
-----
* Nodes sit on a diamond lattice (every node joins 4 struts, like the Plateau borders of a real
  metal foam), rotated by a seeded rotation and jittered per node by a hash of the node's lattice
  index, so any region is generated identically whatever the volume of interest. The strut
  length is 3.5 x the mean thickness (short struts: many per volume, so that a 0.6 mm box
  already holds a representative sample).
* Strut diameters: the *volume-weighted* distribution of ``d`` (what a voxel-wise local-thickness
  histogram measures) is a gamma distribution with the requested mean and sd, shape
  ``k = mean^2 / sd^2`` and scale ``theta = sd^2 / mean``; strut volume grows as ``d^2``, so the
  per-strut diameters follow Gamma(k - 2, theta). They are assigned by a Kronecker (generalised
  golden-ratio) low-discrepancy sequence over the lattice indices, which spreads the quantiles
  evenly over space.
* Surface: a smooth round strut (capsule) has local thickness ``d`` everywhere and S/V = 4/d,
  i.e. ``4 E_q[1/d] = 4 / (theta (k - 1))`` for the network before junctions. To reach other
  S/V values at the *same* local thickness a strut is a chain of balls of diameter ``d`` whose
  centres are ``beta * d`` apart (beaded struts, like the nodular struts of electro-deposited
  foams): every point still lies in a ball of diameter ``d`` (local thickness unchanged) while
  the surface grows with ``beta`` (analytically S/V = (4/d) / (1 - beta^2 / 3) for small beta).
* Junctions (surface lost where struts meet, thickness gained at nodes) and the measurement
  protocol shift the result; :data:`CALIBRATION` holds measured/model ratios as a function of
  ``beta``, measured with :func:`measure_foam` at 1.5 um voxels on 0.6 mm boxes (3 seeds;
  ``python bench/bench_phantoms.py --calibrate-foam``). :func:`foam_spec` divides the request
  by them and solves ``beta`` from the S/V request.

Requests that this model cannot realise (sd >= mean / sqrt(3), in particular sd > mean; sd below
2 % of the mean; S/V outside the range between smooth and touching-bead struts) raise
:class:`twin.errors.XrmInputError` before any work.
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
    "strut_length_um": None,
    "jitter": 0.2,
}

# Calibration (docs/phantoms.md; ``python bench/bench_phantoms.py --calibrate-foam``):
# measured / model on 1.5 um grids with :func:`measure_foam`, paper-like request, strut length
# 3.5 x mean thickness, averaged over seeds. Columns: beta (bead spacing / d), c_mean, c_std,
# c_sv where c_sv is measured S/V over the smooth-capsule value 4 E_q[1/d].
CALIBRATION = np.array([
    [0.00, 1.0185, 0.9717, 0.9351],
    [0.35, 1.0002, 0.9688, 0.9609],
    [0.60, 0.9920, 0.9763, 1.0193],
    [0.80, 0.9939, 1.0027, 1.0917],
    [1.00, 0.9909, 1.0090, 1.2064],
])
RHO = 3.5  # strut length / mean thickness (short struts: many per volume, stable statistics)
U_CLIP = 0.005  # per-strut diameter quantiles are kept in [U_CLIP, 1 - U_CLIP]


def _cal(beta):
    return tuple(float(np.interp(beta, CALIBRATION[:, 0], CALIBRATION[:, i])) for i in (1, 2, 3))


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
    bead_spacing : float
        beta: centre spacing of the balls of a beaded strut / diameter (0 = smooth capsule).
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
    bead_spacing: float
    solid_fraction: float

    @property
    def lattice_um(self) -> float:
        """Cubic diamond-lattice constant a (nearest-neighbour distance sqrt(3) a / 4)."""
        return 4.0 * self.strut_length_um / np.sqrt(3.0)

    @property
    def max_diameter_um(self) -> float:
        return float(stats.gamma.ppf(1 - U_CLIP, self.shape, scale=self.scale_um))


def _model(mean_um: float, std_um: float, beta: float) -> tuple[float, float, float]:
    """(gamma shape k, scale theta, predicted measured S/V in 1/mm) at bead spacing beta."""
    c_m, c_s, c_sv = _cal(beta)
    m, sd = mean_um / c_m, std_um / c_s
    k = (m / sd) ** 2
    theta = sd ** 2 / m
    return k, theta, c_sv * 4000.0 / (theta * (k - 1.0))


def sv_range_per_mm(mean_um: float, std_um: float) -> tuple[float, float]:
    """Smallest and largest S/V (1/mm) this generator realises for a thickness mean and sd."""
    a = _model(mean_um, std_um, CALIBRATION[0, 0])[2]
    b = _model(mean_um, std_um, CALIBRATION[-1, 0])[2]
    return min(a, b), max(a, b)


def foam_spec(params: dict | None = None) -> FoamSpec:
    """Validate a ``[phantom.foam]`` table and solve the generator parameters.

    Parameters
    ----------
    params : dict, optional
        Keys of :data:`FOAM_DEFAULTS` (missing keys take the defaults):
        ``thickness_mean_um``, ``thickness_std_um``, ``surface_to_volume_per_mm``,
        ``strut_length_um`` (None: 3.5 x mean, the calibrated ratio) and ``jitter``.

    Raises
    ------
    XrmInputError
        Unknown key, non-positive numbers, or statistics no foam of this model can realise
        (sd >= mean / sqrt(3), sd < 2 % of the mean, S/V outside the realisable range).
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
    jitter = require_positive("foam.jitter", p["jitter"], allow_zero=True)
    if jitter > 0.3:
        raise XrmInputError(f"foam.jitter must be <= 0.3 (fraction of the strut length), got {jitter}")
    if std >= mean / np.sqrt(3.0):
        raise XrmInputError(
            f"foam thickness sd {std:g} um is too large for mean {mean:g} um: a foam of struts "
            f"needs sd < mean / sqrt(3) = {mean / np.sqrt(3.0):.3g} um (and sd > mean is "
            "impossible for any positive thickness distribution)")
    if std < 0.02 * mean:
        raise XrmInputError(f"foam thickness sd {std:g} um must be at least 2 % of the mean "
                            f"({0.02 * mean:.3g} um)")
    lo, hi = sv_range_per_mm(mean, std)
    if not lo <= sv <= hi:
        raise XrmInputError(
            f"foam surface_to_volume_per_mm {sv:g} cannot be realised with thickness mean "
            f"{mean:g} um and sd {std:g} um: struts of that thickness give {lo:.4g} (smooth) "
            f"to {hi:.4g} 1/mm (beaded); round struts have about 4 / mean = "
            f"{4000 / mean:.4g} 1/mm")
    betas = np.linspace(CALIBRATION[0, 0], CALIBRATION[-1, 0], 601)
    svs = np.array([_model(mean, std, b)[2] for b in betas])
    beta = float(betas[np.argmin(np.abs(svs - sv))])
    if p["strut_length_um"] is None:
        length = RHO * mean
    else:
        length = require_positive("foam.strut_length_um", p["strut_length_um"])
        if length < 2.0 * mean:
            raise XrmInputError(f"foam.strut_length_um {length:g} must be at least twice the "
                                f"mean thickness ({2 * mean:g} um)")
    k, theta, _ = _model(mean, std, beta)
    a = 4.0 * length / np.sqrt(3.0)
    ed2 = theta ** 2 * (k - 2.0) * (k - 1.0)  # E_p[d^2] of Gamma(k-2, theta)
    solid = float(min(0.9, 16.0 / a ** 3 * length * (np.pi / 4) * ed2))
    return FoamSpec(mean, std, sv, length, jitter, k - 2.0, theta, beta, solid)


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
           ) / 1000.0
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
    u = U_CLIP + (1 - 2 * U_CLIP) * np.mod(u0 + K[:, 0] * _KRONECKER[0] + K[:, 1] * _KRONECKER[1] + K[:, 2] * _KRONECKER[2]
               + K[:, 3] * _KRONECKER[3], 1.0)
    d = stats.gamma.ppf(u, spec.shape, scale=spec.scale_um)
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
    rad = (d / 2 ) / 1000.0
    smin = np.minimum(A, B) - rad[:, None]
    smax = np.maximum(A, B) + rad[:, None]
    keep = np.all((smax >= np.asarray(lo_mm)) & (smin <= np.asarray(hi_mm)), axis=1)
    return {"a_mm": A[keep], "b_mm": B[keep], "d_um": d[keep], "v": v[keep]}


def strut_prims(struts: dict[str, np.ndarray], grid: GridSpec, bead_spacing: float) -> np.ndarray:
    """Kernel primitives (n, 12) for :func:`phantoms.kernels.paint_rounded_sheets`.

    ``bead_spacing`` 0: one capsule per strut; > 0: a chain of balls of the strut's diameter
    whose centres are at most ``bead_spacing * d`` apart (end balls on the nodes).
    """
    A = grid.to_index(struts["a_mm"])
    B = grid.to_index(struts["b_mm"])
    r = struts["d_um"] / 2 / grid.voxel_um
    if bead_spacing <= 0:
        c = (A + B) / 2
        u = B - A
        half = np.linalg.norm(u, axis=1)
        u = u / np.maximum(half, 1e-12)[:, None]
        return np.column_stack([c, u, struts["v"], half / 2, np.zeros_like(r), r]).astype(np.float64)
    length = np.linalg.norm(B - A, axis=1)
    n = np.maximum(2, np.ceil(length / (bead_spacing * 2 * r)).astype(np.int64) + 1)
    idx = np.repeat(np.arange(len(r)), n)
    start = np.repeat(np.cumsum(n) - n, n)
    t = (np.arange(idx.size) - start) / (n[idx] - 1)
    c = A[idx] + t[:, None] * (B[idx] - A[idx])
    prim = np.zeros((idx.size, 12), np.float64)
    prim[:, :3] = c
    prim[:, 3] = 1.0
    prim[:, 7] = 1.0
    prim[:, 11] = r[idx]
    return prim


def rasterize_foam(spec: FoamSpec, grid: GridSpec, seed: int = 0) -> np.ndarray:
    """The foam alone in a grid: a bool mask (nz, ny, nx), True on Ni.

    The same struts as inside a cell (the generator depends only on seed and position).
    """
    from phantoms.kernels import paint_rounded_sheets

    lo, hi = grid.box_mm()
    labels = np.zeros(grid.shape_zyx, np.uint8)
    st = foam_struts(spec, lo, hi, seed)
    paint_rounded_sheets(labels, strut_prims(st, grid, spec.bead_spacing), hosts=[0], new_label=1)
    return labels.view(bool)


def measure_foam(mask: np.ndarray, voxel_um: float) -> dict[str, float]:
    """The measurement protocol used for calibration and tests.

    Local thickness: :func:`recon.thickness.local_thickness_um` (sphere diameter, border
    "open"), mean and sd over the foam voxels. Surface: marching cubes at level 0.5 on the mask
    smoothed by a Gaussian of sigma 0.7 voxel (isolated analytic cylinders of
    17-33 voxels diameter then read their S/V within 0.7 %); volume: voxel count.

    Parameters
    ----------
    mask : ndarray of bool, shape (nz, ny, nx)
    voxel_um : float

    Returns
    -------
    dict
        ``thickness_mean_um``, ``thickness_std_um``, ``surface_to_volume_per_mm``,
        ``solid_fraction``.
    """
    from scipy import ndimage as ndi
    from skimage import measure

    from recon.thickness import local_thickness_um

    lt = local_thickness_um(mask, voxel_um, border="open")[mask]
    sm = ndi.gaussian_filter(mask.astype(np.float32), 0.7)
    verts, faces, _, _ = measure.marching_cubes(sm, 0.5, spacing=(voxel_um / 1000.0,) * 3)
    surface = measure.mesh_surface_area(verts, faces)
    volume = mask.sum() * (voxel_um / 1000.0) ** 3
    return {"thickness_mean_um": float(lt.mean()), "thickness_std_um": float(lt.std()),
            "surface_to_volume_per_mm": float(surface / volume),
            "solid_fraction": float(mask.mean())}
