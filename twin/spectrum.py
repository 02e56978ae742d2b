"""X-ray tube spectra from SpekPy (tungsten, transmission target), binned and cached on disk.

Units: ``photons_per_s_sr`` is the number of photons per second per steradian in each energy
bin, emitted towards the detector (after the target's self-filtration and the exit window,
before the source filter). SpekPy returns fluence per keV per cm^2 per mAs at 100 cm;
``N_per_s_sr = fluence x dk x (100 cm)^2 x I_mA`` with ``I_mA = power_w / kvp``.

Filters and windows are applied with xraydb attenuation (:mod:`twin.materials`), the same
tables the projector uses, so the whole chain uses one attenuation source.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from twin.errors import XrmInputError, require_positive
from twin.filters import FilterLayer, stack_transmission
from twin.materials import get_material

KVP_RANGE = (30.0, 160.0)
MAX_POWER_W = 25.0
#: Transmission target: tungsten layer thickness (um) and exit window (estimates, documented
#: in docs/instrument.md). SpekPy models the target self-filtration; the window is applied
#: with xraydb.
TARGET_THICKNESS_UM = 5.0
WINDOW = (("diamond", 0.25),)
SPEKPY_DISTANCE_CM = 100.0


def cache_dir() -> Path:
    """Folder of cached spectra: ``$XRM_TWIN_CACHE`` or ``~/.cache/xrm-twin``."""
    base = os.environ.get("XRM_TWIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "xrm-twin")
    return Path(base) / "spectra"


@dataclass(frozen=True)
class Spectrum:
    """A binned photon spectrum.

    Attributes
    ----------
    energy_kev : ndarray, shape (E,)
        Bin centres, keV.
    photons_per_s_sr : ndarray, shape (E,)
        Photons per second per steradian in each bin.
    bin_kev : float
        Bin width, keV.
    kvp, power_w : float
        Tube voltage (kV) and power (W); ``kvp = 0`` for a monochromatic beam.
    """

    energy_kev: np.ndarray
    photons_per_s_sr: np.ndarray
    bin_kev: float
    kvp: float
    power_w: float

    @property
    def mean_energy_kev(self) -> float:
        """Photon-number weighted mean energy, keV."""
        w = self.photons_per_s_sr
        return float(np.sum(w * self.energy_kev) / np.sum(w))

    @property
    def total_photons_per_s_sr(self) -> float:
        return float(np.sum(self.photons_per_s_sr))

    def filtered(self, layers: Sequence[FilterLayer]) -> "Spectrum":
        """The spectrum after a filter stack (xraydb attenuation)."""
        t = stack_transmission(layers, self.energy_kev)
        return replace(self, photons_per_s_sr=self.photons_per_s_sr * t)

    def photons_per_s_mm2(self, distance_mm: float) -> np.ndarray:
        """Photons per second per mm^2 per bin at ``distance_mm`` from the focal spot."""
        return self.photons_per_s_sr / float(distance_mm) ** 2


def _spekpy_unfiltered(kvp: float, bin_kev: float, target_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies (keV) and fluence (photons / cm^2 / mAs per bin at 100 cm), from SpekPy."""
    key = json.dumps({"kvp": kvp, "dk": bin_kev, "thick": target_um, "v": 1}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    path = cache_dir() / f"w_trans_{digest}.npz"
    if path.exists():
        with np.load(path) as d:
            return d["energy_kev"], d["fluence"]
    import spekpy

    s = spekpy.Spek(kvp=kvp, th=-90, targ="W", trans=True, thick=target_um, dk=bin_kev,
                    z=SPEKPY_DISTANCE_CM)
    energy, flu_per_kev = s.get_spectrum()
    fluence = np.asarray(flu_per_kev, float) * bin_kev
    energy = np.asarray(energy, float)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, energy_kev=energy, fluence=fluence)
    os.replace(tmp, path)
    return energy, fluence


def tube_spectrum(kvp: float, power_w: float, *, bin_kev: float = 1.0,
                  target_thickness_um: float = TARGET_THICKNESS_UM,
                  window: Sequence[tuple[str, float]] = WINDOW) -> Spectrum:
    """Spectrum of the transmission-target tungsten tube, before the source filter.

    Parameters
    ----------
    kvp : float
        Tube voltage, kV, within :data:`KVP_RANGE`.
    power_w : float
        Tube power, W (0 < P <= 25). The current is ``power_w / kvp`` mA.
    bin_kev : float
        Energy bin width, keV (SpekPy's ``dk``).
    target_thickness_um : float
        Tungsten target thickness (transmission geometry), um.
    window : sequence of (material, thickness_mm)
        Exit window, applied with xraydb attenuation.
    """
    kvp = require_positive("source.kvp", kvp)
    if not KVP_RANGE[0] <= kvp <= KVP_RANGE[1]:
        raise XrmInputError(f"source.kvp must be within {KVP_RANGE[0]:g}-{KVP_RANGE[1]:g} kV "
                            f"(the instrument's range), got {kvp:g}")
    power_w = require_positive("source.power_w", power_w)
    if power_w > MAX_POWER_W:
        raise XrmInputError(f"source.power_w must be <= {MAX_POWER_W:g} W, got {power_w:g}")
    bin_kev = require_positive("source.energy_bin_kev", bin_kev)
    if bin_kev > 5:
        raise XrmInputError(f"source.energy_bin_kev must be <= 5 keV, got {bin_kev:g}")
    energy, fluence = _spekpy_unfiltered(kvp, bin_kev, target_thickness_um)
    current_ma = power_w / kvp
    per_s_sr = fluence * (SPEKPY_DISTANCE_CM ** 2) * current_ma
    spec = Spectrum(energy, per_s_sr, bin_kev, kvp, power_w)
    layers = [FilterLayer(get_material(m), t) for m, t in window]
    return spec.filtered(layers)


def monochromatic_spectrum(energy_kev: float, photons_per_s_sr: float = 1e11) -> Spectrum:
    """A single-energy beam (``source.monochromatic_kev``)."""
    e = require_positive("source.monochromatic_kev", energy_kev)
    if not 1.0 <= e <= 500.0:
        raise XrmInputError(f"source.monochromatic_kev must be within 1-500 keV, got {e:g}")
    return Spectrum(np.array([e]), np.array([float(photons_per_s_sr)]), 0.0, 0.0, 0.0)
