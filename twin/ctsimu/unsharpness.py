"""Basic spatial resolution SRb of a detector <-> sigma of a Gaussian detector PSF.

CTSimU describes detector unsharpness by the *basic spatial resolution* ``SRb``
(``detector.unsharpness.basic_spatial_resolution``), the quantity of ISO 19232-5 /
ASTM E2597 measured with a duplex-wire IQI: wire pairs of diameter ``d`` with a gap of
``d`` (centre distance ``2 d``), imaged directly on the detector. The modulation depth
("dip") of a pair is, as in ASTM E2002 and the CTSimU toolbox (``ctsimu.image_analysis.isrb``),

    dip = (A + B - 2 C) / (A + B),

``A``, ``B`` the depths of the two minima and ``C`` the depth of the maximum between them,
all measured from the free-beam background. The total unsharpness is twice the diameter
of the pair at which the dip falls to 20 %; ``SRb`` is half of it, i.e. **SRb is the wire
diameter at a 20 % dip** (ASTM E2002 interpolates it between the measured pairs: iSRb).
aRTist, the simulator behind the CTSimU reference data, takes exactly this definition: its
CTSimU module sets aRTist's detector unsharpness to ``2 SRb``.

The duplex wire is read in the digital image along a line profile across the wires
averaged along them over a width of many pixels, with the IQI tilted by 2-5 deg to the
pixel rows or columns (ISO 19232-5; CTSimU 2D-DW-1: 3 deg, 20 px). Along the profile the
pixel grid therefore takes every phase, and each profile bin picks the pixel it falls
into: the measured profile is the object blurred by the detector PSF, integrated over a
pixel (the pixel aperture) and once more averaged over a pixel (the phase average of the
nearest-pixel read-out). The model here is that chain in one dimension:

    depth(x) = [L_pair(x) (x) G_sigma (x) box_p (x) box_p](x),

``L_pair`` the path length through the two wires (or ``1 - T(L)`` with a transmission
``T`` for strong contrast), ``G_sigma`` the Gaussian detector PSF and ``box_p`` a pixel of
pitch ``p``. :func:`pair_dip` evaluates the dip of one pair, :func:`srb_of_sigma_mm` the
diameter at 20 %, and :func:`sigma_for_srb_mm` inverts it: the Gaussian sigma that makes a
detector of pitch ``p`` show the requested SRb. Results, low-contrast limit:

* without pixels (``p -> 0``) a Gaussian LSF gives ``SRb = 1.414 sigma`` (``sigma =
  0.707 SRb``), not the ``0.571 SRb`` of a Gaussian MTF of 20 % at ``1 / (2 SRb)``: a
  wire pair is no sine;
* with pixels the sigma is smaller (the two pixel boxes add unsharpness); a detector of
  pitch ``p`` cannot show an SRb below ``srb_of_sigma_mm(0, p) = 0.656 p`` at all.

``tests/test_ctsimu_unsharpness.py`` checks the model against the toolbox's own
interpolation (``isrb.Interpolation``) on the 13 ISO 19232-5 pairs; ``docs/ctsimu.md``
has the derivation and the numbers.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from scipy.optimize import brentq
from scipy.signal import fftconvolve

from twin.errors import XrmInputError

#: Wire diameters (= gaps) of the duplex-wire IQI, ISO 19232-5 (EN 462-5), pairs 1D..13D, mm.
ISO_19232_5_DIAMETERS_MM = (0.8, 0.63, 0.5, 0.4, 0.32, 0.25, 0.2, 0.16, 0.13, 0.1, 0.08, 0.063, 0.05)
#: Modulation depth that defines the basic spatial resolution (ASTM E2002, ISO 19232-5).
DIP_AT_SRB = 0.20
#: Grid steps per smallest length scale (wire diameter, pixel, sigma) of the 1-D model.
STEPS_PER_SCALE = 60
#: A sigma below this fraction of the smallest other scale (wire diameter ``d``, pitch ``p``)
#: does not refine the grid: the step stays ``SIGMA_FLOOR_FRACTION * min(d, p) /
#: STEPS_PER_SCALE``. Such a narrow Gaussian is still resolved down to about one step; below
#: that the sampled kernel loses at most ``step^2 = 2.8e-6 min(d, p)^2`` of its variance
#: ``s^2`` (the pixels alone contribute ``p^2 / 6``). Without the floor a root search near
#: the pixel floor tries ``sigma -> 0`` and builds grids of ~1e9 points.
SIGMA_FLOOR_FRACTION = 0.1


def pair_path_length_mm(x_mm: np.ndarray, diameter_mm: float) -> np.ndarray:
    """Path length (mm) through a duplex-wire pair along rays at positions ``x_mm``.

    Two cylinders of diameter ``d`` with their axes at ``x = -d`` and ``x = +d`` (gap ``d``),
    rays perpendicular to the axes (the wire is on the detector, magnification 1).
    """
    r = 0.5 * float(diameter_mm)
    x = np.asarray(x_mm, dtype=np.float64)
    out = np.zeros_like(x)
    for c in (-2.0 * r, 2.0 * r):
        out += 2.0 * np.sqrt(np.clip(r * r - (x - c) ** 2, 0.0, None))
    return out


def _kernel(sigma_mm: float, pitch_mm: float, step_mm: float) -> np.ndarray:
    """Gaussian(sigma) (x) box(pitch) (x) box(pitch) on a grid of ``step_mm`` (sums to 1).

    The two boxes of ``n`` samples give the discrete triangle ``(n - |j|) / n^2``,
    ``|j| < n``; a Gaussian narrower than a tenth of the step is the identity on the grid.
    """
    k = np.ones(1)
    if pitch_mm > 0:
        n = max(1, int(round(pitch_mm / step_mm)))
        k = (n - np.abs(np.arange(-(n - 1), n, dtype=np.float64))) / (n * n)  # box (x) box
    if sigma_mm > 0.1 * step_mm:
        m = int(np.ceil(6.0 * sigma_mm / step_mm))
        t = np.arange(-m, m + 1) * step_mm
        g = np.exp(-0.5 * (t / sigma_mm) ** 2)
        k = fftconvolve(k, g / g.sum()) if len(k) > 1 else g / g.sum()
    return k / k.sum()


def pair_depth_profile(diameter_mm: float, sigma_mm: float, pitch_mm: float, *,
                       transmission: Callable[[np.ndarray], np.ndarray] | None = None,
                       step_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth below the free-beam background across one wire pair, as the image shows it.

    Parameters
    ----------
    diameter_mm : float
        Wire diameter = gap.
    sigma_mm : float
        Gaussian detector PSF (standard deviation).
    pitch_mm : float
        Pixel pitch (0: continuous detector).
    transmission : callable, optional
        ``T(L_mm)`` (0..1) of the wire material; the depth is then ``1 - T(L)`` before the
        blur. Default: the low-contrast limit, depth proportional to ``L`` (normalised to
        the path length through one wire's centre).
    step_mm : float, optional
        Grid step; default the smallest of diameter, pitch and sigma (a sigma counted as no
        less than ``SIGMA_FLOOR_FRACTION`` of the smallest of the other two) /
        ``STEPS_PER_SCALE``.

    Returns
    -------
    x_mm, depth : ndarray (n,)
        Symmetric grid (``x = 0`` between the wires) and the blurred depth.
    """
    d, s, p = float(diameter_mm), float(sigma_mm), float(pitch_mm)
    if d <= 0 or s < 0 or p < 0:
        raise XrmInputError(f"duplex-wire model needs diameter > 0, sigma >= 0, pitch >= 0 "
                            f"(got {d}, {s}, {p} mm)")
    others = min(v for v in (d, p) if v > 0)
    scales = [others] + ([max(s, SIGMA_FLOOR_FRACTION * others)] if s > 0 else [])
    h = float(step_mm) if step_mm else min(scales) / STEPS_PER_SCALE
    half = 2.5 * d + 6.0 * s + 2.0 * p + 2 * h
    n = int(np.ceil(half / h))
    x = np.arange(-n, n + 1) * h
    length = pair_path_length_mm(x, d)
    depth = length / d if transmission is None else 1.0 - np.asarray(transmission(length), float)
    k = _kernel(s, p, h)
    pad = len(k)
    padded = np.pad(depth, pad)  # zero depth (free beam) outside
    out = fftconvolve(padded, k, mode="same")[pad:-pad]
    return x, out


def pair_dip(diameter_mm: float, sigma_mm: float, pitch_mm: float, *,
             transmission: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """Modulation depth (0..1) of a duplex-wire pair, ``(A + B - 2 C) / (A + B)``.

    The pair is symmetric, so ``A = B`` (deepest point on one side) and ``C`` is the depth
    midway between the wires; 0 when the two minima have merged into one.
    """
    x, depth = pair_depth_profile(diameter_mm, sigma_mm, pitch_mm, transmission=transmission)
    i0 = len(x) // 2
    right = depth[i0:]
    j = int(np.argmax(right))
    a, c = float(right[j]), float(depth[i0])
    if j == 0 or a <= 0:
        return 0.0
    return max(0.0, (a - c) / a)


def srb_of_sigma_mm(sigma_mm: float, pitch_mm: float, *,
                    transmission: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """Basic spatial resolution (mm) a Gaussian PSF of ``sigma_mm`` shows at pitch ``pitch_mm``.

    The wire diameter at which :func:`pair_dip` is :data:`DIP_AT_SRB` (the dip grows
    monotonically with the diameter).
    """
    s, p = float(sigma_mm), float(pitch_mm)
    if s <= 0 and p <= 0:
        return 0.0
    scale = max(s, p)
    lo, hi = 0.05 * scale, 20.0 * scale
    f = lambda d: pair_dip(d, s, p, transmission=transmission) - DIP_AT_SRB  # noqa: E731
    if f(lo) > 0 or f(hi) < 0:
        raise RuntimeError(f"no 20 % dip between {lo} and {hi} mm (sigma {s}, pitch {p} mm)")
    return float(brentq(f, lo, hi, xtol=1e-7 * scale, rtol=1e-9))


@lru_cache(maxsize=64)
def _sigma_for_srb(srb_mm: float, pitch_mm: float) -> float:
    floor = srb_of_sigma_mm(0.0, pitch_mm) if pitch_mm > 0 else 0.0
    if srb_mm <= floor:
        return 0.0
    f = lambda s: srb_of_sigma_mm(s, pitch_mm) - srb_mm  # noqa: E731
    return float(brentq(f, 0.0, 1.0 * srb_mm, xtol=1e-7 * srb_mm, rtol=1e-9))


def sigma_for_srb_mm(srb_mm: float, pitch_mm: float) -> float:
    """Gaussian PSF sigma (mm) for a detector of basic spatial resolution ``srb_mm``.

    The inverse of :func:`srb_of_sigma_mm` in the low-contrast limit: a detector of pixel
    pitch ``pitch_mm`` with this Gaussian PSF shows ``SRb = srb_mm`` on a duplex wire read
    as ISO 19232-5 prescribes. Returns 0 where ``srb_mm`` is at or below what the pixels
    alone show (:func:`pixel_limited_srb_mm`); :func:`srb_shortfall_note` words that case.
    """
    srb, p = float(srb_mm), float(pitch_mm)
    if srb <= 0 or p < 0:
        raise XrmInputError(f"basic spatial resolution must be > 0 and the pitch >= 0 "
                            f"(got {srb} mm, {p} mm)")
    return _sigma_for_srb(round(srb, 12), round(p, 12))


def pixel_limited_srb_mm(pitch_mm: float) -> float:
    """SRb (mm) of a detector with no blur beyond its pixels (``0.656 pitch``)."""
    return srb_of_sigma_mm(0.0, float(pitch_mm))


def srb_shortfall_note(srb_mm: float, pitch_mm: float, axis: str) -> str | None:
    """A note when the requested SRb is finer than the pixels allow, else None."""
    floor = pixel_limited_srb_mm(pitch_mm)
    if srb_mm <= floor:
        return (f"detector.unsharpness.basic_spatial_resolution {srb_mm * 1000:.4g} um is below what "
                f"pixels of {pitch_mm * 1000:.4g} um show along {axis} ({floor * 1000:.4g} um): "
                f"no detector blur added")
    return None


def duplex_iqi_profile(x_mm: np.ndarray, sigma_mm: float, pitch_mm: float, *,
                       pair_spacing_mm: float = 3.9,
                       diameters_mm: tuple[float, ...] = ISO_19232_5_DIAMETERS_MM,
                       step_mm: float = 0.001) -> np.ndarray:
    """Blurred path length (mm) across a whole duplex-wire IQI, sampled at ``x_mm``.

    For checks against the toolbox's interpolation: the pairs lie centred on
    ``(k - (n - 1) / 2) * pair_spacing_mm``, largest first; the path length is blurred by
    the same kernel as :func:`pair_depth_profile` (a linear grey value ``a - b L`` is the
    low-contrast image of the IQI).
    """
    n = len(diameters_mm)
    lo, hi = float(np.min(x_mm)) - 1.0, float(np.max(x_mm)) + 1.0
    grid = np.arange(lo, hi + step_mm, step_mm)
    depth = np.zeros_like(grid)
    for k, d in enumerate(diameters_mm):
        c = (k - (n - 1) / 2) * pair_spacing_mm
        depth += pair_path_length_mm(grid - c, d)
    kern = _kernel(float(sigma_mm), float(pitch_mm), step_mm)
    blurred = fftconvolve(np.pad(depth, len(kern)), kern, mode="same")[len(kern):-len(kern)]
    return np.interp(x_mm, grid, blurred)
