"""Detector chain: scintillator, objective, camera, noise.

Signal model (one place for each formula)
-----------------------------------------
For a pixel that receives ``n(E)`` photons per bin during one exposure, with object
transmission ``T(E)``:

* absorbed quanta           ``q   = sum_E n(E) eta(E) T(E)``,  ``eta = 1 - exp(-mu_s(E) t_s)``
* deposited energy (keV)    ``s   = sum_E n(E) eta(E) E T(E)``
* second moment (keV^2)     ``s2  = sum_E n(E) eta(E) E^2 T(E)``

The screen turns deposited energy into electrons in the camera with conversion gain
``k = light_yield_per_kev x optical_coupling x camera_qe`` (e-/keV). Mean signal
``S = g_px k s`` (``g_px``: per-pixel gain, mean 1). Each absorbed quantum gives a random
number of electrons ``G`` with ``E[G] = k s / q`` and ``E[G^2] = k^2 (s2 / q) / I_screen``
(``I_screen``: intrinsic Swank factor of the screen's optical gain) ``+ k s / q`` (Poisson
statistics of the few electrons per quantum of lens-coupled screens). The number of quanta is
Poisson, so the signal variance is ``Var S = k^2 s2 / I_screen + k s`` (compound Poisson). We draw
``N ~ Poisson(q)`` and ``S | N ~ Gamma(N alpha, beta)`` with the moments above: exact for
these two moments at any count. Then dark current (Poisson), read noise (Gaussian),
full-well clipping, gain ``e-/ADU``, offset and bit depth.

``ideal = True`` is the perfect energy-integrating absorber: ``eta = 1``, no blur, no noise;
the pixel value is the expected deposited energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.errors import XrmInputError, require_positive
from twin.materials import Material, get_material

#: Light yield of scintillators, photons per keV (battery_instrument.md section 4).
LIGHT_YIELD_PER_KEV = {"CsI": 54.0, "GOS": 60.0, "LuAG": 20.0, "YAG": 35.0, "GAGG": 50.0,
                       "GGG": 10.0}
#: Refractive index of the screen, for the lens-coupling efficiency NA^2 / (4 n^2).
SCREEN_REFRACTIVE_INDEX = 1.8
#: Fraction of the light reaching the pixels of a flat panel (screen in contact), estimate.
FLAT_PANEL_COUPLING = 0.5


def optical_coupling(na: float | None) -> float:
    """Fraction of isotropic screen light collected by an objective of numerical aperture ``na``.

    ``NA^2 / (4 n^2)`` (small-angle cone inside a screen of index n); a flat panel
    (``na=None``) collects :data:`FLAT_PANEL_COUPLING`.
    """
    if na is None:
        return FLAT_PANEL_COUPLING
    return float(na) ** 2 / (4.0 * SCREEN_REFRACTIVE_INDEX ** 2)


def koch_blur_fwhm_um(na: float | None, screen_thickness_um: float) -> float:
    """Optical blur of a thin screen seen through an objective (Koch et al. 1998), um FWHM.

    ``FWHM = sqrt((0.18 / NA)^2 + (0.075 * dz * NA)^2)``, ``dz`` = screen thickness (um).
    For a flat panel (``na=None``) the light spreads in the screen: ``FWHM ~ 0.3 t`` (estimate).
    """
    if na is None:
        return 0.3 * float(screen_thickness_um)
    return float(np.hypot(0.18 / na, 0.075 * screen_thickness_um * na))


@dataclass(frozen=True)
class DetectorModel:
    """Scintillator + objective + camera.

    Attributes
    ----------
    ideal : bool
        Noiseless, unblurred, perfect energy-integrating absorber.
    scintillator : Material or None
        Screen material (None only if ``ideal``).
    scintillator_um : float
        Screen thickness, um.
    electrons_per_kev : float
        Conversion gain ``k`` (light yield x optical coupling x camera QE), e-/keV.
    swank_screen : float
        Intrinsic Swank factor of the screen's optical gain, (0, 1].
    gain_e_per_adu, read_noise_e, dark_e_per_s, full_well_e : float
        Camera constants.
    bit_depth : int
    offset_adu : float
        Bias added to every read, ADU.
    blur_fwhm_px : float
        Optical (screen + objective) blur, FWHM in binned detector pixels.
    gain_nonuniformity : float
        Relative SD of the per-pixel gain (cancels in flat correction but for noise).
    thickness_nonuniformity : float
        Relative SD of the per-pixel screen thickness: changes the spectral response, so it
        does not cancel in flat correction for hardened beams (ring artefacts).
    """

    ideal: bool = False
    scintillator: Material | None = None
    scintillator_um: float = 150.0
    electrons_per_kev: float = 0.3
    swank_screen: float = 0.9
    gain_e_per_adu: float = 1.0
    read_noise_e: float = 8.0
    dark_e_per_s: float = 0.01
    full_well_e: float = 100_000.0
    bit_depth: int = 16
    offset_adu: float = 100.0
    blur_fwhm_px: float = 0.0
    gain_nonuniformity: float = 0.0
    thickness_nonuniformity: float = 0.0

    def __post_init__(self) -> None:
        if not self.ideal and self.scintillator is None:
            raise XrmInputError("detector.scintillator is required unless detector.ideal = true")
        require_positive("detector.scintillator.thickness_um", self.scintillator_um)
        require_positive("detector.electrons_per_kev", self.electrons_per_kev)
        if not 0 < self.swank_screen <= 1:
            raise XrmInputError(f"detector.swank_screen must be in (0, 1], got {self.swank_screen}")
        require_positive("detector.gain_e_per_adu", self.gain_e_per_adu)
        require_positive("detector.read_noise_e", self.read_noise_e, allow_zero=True)
        require_positive("detector.dark_e_per_s", self.dark_e_per_s, allow_zero=True)
        require_positive("detector.full_well_e", self.full_well_e)
        if self.bit_depth not in (8, 10, 12, 14, 16):
            raise XrmInputError(f"detector.bit_depth must be one of 8, 10, 12, 14, 16, got {self.bit_depth}")
        require_positive("detector.blur_fwhm_px", self.blur_fwhm_px, allow_zero=True)
        for key in ("gain_nonuniformity", "thickness_nonuniformity"):
            v = getattr(self, key)
            if not 0 <= v < 0.5:
                raise XrmInputError(f"detector.{key} must be in [0, 0.5), got {v}")

    # ------------------------------------------------------------------ spectral response
    def absorption(self, energy_kev: np.ndarray) -> np.ndarray:
        """Screen absorption efficiency ``eta(E) = 1 - exp(-mu_s t)``, shape like energy_kev."""
        e = np.asarray(energy_kev, float)
        if self.ideal:
            return np.ones_like(e)
        mu = self.scintillator.mu_per_mm(e)
        return -np.expm1(-mu * self.scintillator_um / 1000.0)

    def thickness_sensitivity(self, energy_kev: np.ndarray) -> np.ndarray:
        """``d ln eta / d ln t = mu t exp(-mu t) / (1 - exp(-mu t))`` (per-pixel thickness response)."""
        e = np.asarray(energy_kev, float)
        if self.ideal:
            return np.zeros_like(e)
        x = self.scintillator.mu_per_mm(e) * self.scintillator_um / 1000.0
        return x * np.exp(-x) / -np.expm1(-x)

    def spectral_weights(self, energy_kev: np.ndarray, photons: np.ndarray) -> np.ndarray:
        """Weights of the spectral sums, shape (4, E).

        Rows: absorbed quanta ``n eta``; deposited energy ``n eta E`` (keV); its second
        moment ``n eta E^2``; and the thickness-sensitivity term ``n eta E s(E)``.
        """
        e = np.asarray(energy_kev, float)
        n_eta = np.asarray(photons, float) * self.absorption(e)
        return np.stack([n_eta, n_eta * e, n_eta * e * e, n_eta * e * self.thickness_sensitivity(e)])

    # ------------------------------------------------------------------ fixed-pattern maps
    def pixel_maps(self, shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel gain and relative screen-thickness deviation, each shape (rows, cols).

        Drawn once per detector from ``seed`` (fixed pattern: the same in flats and projections).
        """
        rng = np.random.default_rng([int(seed), 0xDE7EC7])
        gain = 1.0 + self.gain_nonuniformity * rng.standard_normal(shape)
        dthick = self.thickness_nonuniformity * rng.standard_normal(shape)
        return np.clip(gain, 0.05, None), dthick

    # ------------------------------------------------------------------ noise
    def expected_electrons(self, deposited_kev: np.ndarray) -> np.ndarray:
        """Mean signal electrons for deposited energy (keV) per pixel."""
        return self.electrons_per_kev * deposited_kev

    def sample_signal_electrons(self, quanta: np.ndarray, deposited_kev: np.ndarray,
                                second_moment_kev2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw signal electrons per pixel (compound Poisson-Gamma, see module docstring).

        Parameters
        ----------
        quanta, deposited_kev, second_moment_kev2 : ndarray, same shape
            ``q``, ``s`` and ``s2`` of the module docstring, per pixel (already including the
            per-pixel gain in ``s``, ``s2`` as ``g s``, ``g^2 s2``).
        """
        k = self.electrons_per_kev
        q = np.maximum(np.asarray(quanta, float), 0.0)
        n = rng.poisson(q)
        out = np.zeros(q.shape)
        hit = n > 0  # q > 0 wherever a quantum arrived: the moments need only those pixels
        q_hit = q[hit]
        s_hit = np.broadcast_to(np.asarray(deposited_kev, float), q.shape)[hit]
        s2_hit = np.broadcast_to(np.asarray(second_moment_kev2, float), q.shape)[hit]
        with np.errstate(divide="ignore", invalid="ignore"):
            ks = k * s_hit
            mean_g = ks / q_hit
            m2_g = (k * k * s2_hit / self.swank_screen + ks) / q_hit
            var_g = np.maximum(m2_g - mean_g ** 2, 1e-12 * np.maximum(mean_g ** 2, 1e-30))
            shape_per_quantum = mean_g ** 2 / var_g
            scale = var_g / np.where(mean_g > 0, mean_g, 1.0)
        out[hit] = rng.gamma(n[hit] * shape_per_quantum, scale)
        return out

    def read_out(self, electrons: np.ndarray, exposure_s: float, rng: np.random.Generator) -> np.ndarray:
        """Add dark current and read noise, clip at full well, convert to ADU (uint16)."""
        e = np.minimum(electrons, self.full_well_e)
        if self.dark_e_per_s > 0:
            e = e + rng.poisson(self.dark_e_per_s * exposure_s, size=e.shape)
        if self.read_noise_e > 0:
            e = e + self.read_noise_e * rng.standard_normal(e.shape)
        adu = np.rint(e / self.gain_e_per_adu + self.offset_adu)
        top = 2 ** self.bit_depth - 1
        return np.clip(adu, 0, top).astype(np.uint16)

    def noise_variance_adu2(self, deposited_kev: np.ndarray, second_moment_kev2: np.ndarray,
                            exposure_s: float, *, quantum_noise_factor: float = 1.0) -> np.ndarray:
        """Model variance of one read in ADU^2 (for checks and the fast detectability model).

        ``quantum_noise_factor`` scales the quantum (signal) part only: the share of a pixel's
        white quantum noise that survives the screen/objective blur applied before read-out
        (:func:`twin.acquisition.blurred_noise_fraction`); dark, read and quantisation noise
        are added after the blur.
        """
        k = self.electrons_per_kev
        var_e = (k * k * second_moment_kev2 / self.swank_screen + k * deposited_kev) * quantum_noise_factor
        var_e = var_e + self.dark_e_per_s * exposure_s + self.read_noise_e ** 2
        return var_e / self.gain_e_per_adu ** 2 + 1.0 / 12.0


def default_electrons_per_kev(scintillator: str, na: float | None, camera_qe: float = 0.6) -> float:
    """Conversion gain ``light_yield x optical_coupling(NA) x QE`` (e-/keV)."""
    ly = LIGHT_YIELD_PER_KEV.get(scintillator, 30.0)
    return ly * optical_coupling(na) * camera_qe


def scintillator_material(name: str) -> Material:
    """Material of a scintillator by name (any material of twin.materials is accepted)."""
    return get_material(name)
