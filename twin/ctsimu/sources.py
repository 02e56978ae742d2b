"""CTSimU source spectra: from a CSV file, monochromatic, or computed with SpekPy.

A spectrum file holds photons per second per steradian per mA in bins centred at the given
energies (keV), already filtered by the tube window (``source.rst``). A computed spectrum
is SpekPy's for the target material, voltage and emission angle (reflection) or target
thickness (transmission), then filtered by the window with xraydb. The source ``filters``
are applied afterwards in both cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twin.atomic import write_text_atomic
from twin.errors import XrmInputError
from twin.spectrum import Spectrum

SPEKPY_TARGETS = ("W", "Mo", "Rh", "Cu", "Ag", "Cr", "Au", "Pt")


def read_spectrum_file(path: Path, current_ma: float, voltage_kv: float) -> Spectrum:
    """Read a CTSimU spectrum CSV/TSV (energy keV, photons / (s sr mA)).

    Raises
    ------
    XrmInputError
        The file is missing, unreadable, or has no valid (energy, photons) rows; the message
        names the path.
    """
    p = Path(path)
    if not p.is_file():
        raise XrmInputError(f"CTSimU spectrum file {str(p)!r} does not exist")
    rows = []
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise XrmInputError(f"cannot read CTSimU spectrum file {str(p)!r}: {exc}") from None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").replace(";", " ").split()
        try:
            rows.append((float(parts[0]), float(parts[1])))
        except (ValueError, IndexError):
            continue  # header line
    if not rows:
        raise XrmInputError(f"CTSimU spectrum file {str(p)!r} has no (energy keV, photons) rows")
    arr = np.array(rows)
    e, n = arr[:, 0], arr[:, 1]
    if np.any(~np.isfinite(arr)) or np.any(n < 0) or np.any(e <= 0) or n.sum() <= 0:
        raise XrmInputError(f"CTSimU spectrum file {str(p)!r}: energies must be > 0 and photon "
                            "numbers >= 0 (not all zero)")
    bin_kev = float(np.median(np.diff(e))) if len(e) > 1 else 0.0
    return Spectrum(e, n * current_ma, bin_kev, voltage_kv, voltage_kv * current_ma)


def spekpy_spectrum(voltage_kv: float, current_ma: float, target: str, *, transmission: bool,
                    emission_angle_deg: float, target_thickness_um: float | None,
                    bin_kev: float = 1.0) -> Spectrum:
    """Unfiltered tube spectrum from SpekPy, photons / (s sr) per bin."""
    if target not in SPEKPY_TARGETS:
        raise XrmInputError(f"CTSimU source.target.material_id {target!r}: SpekPy models targets "
                            f"{', '.join(SPEKPY_TARGETS)}; give a spectrum file instead")
    import spekpy

    kw = {"kvp": float(voltage_kv), "dk": bin_kev, "targ": target, "z": 100.0}
    if transmission:
        if not target_thickness_um:
            raise XrmInputError("CTSimU source.target.thickness is required for a transmission target")
        kw.update(th=-90.0, trans=True, thick=float(target_thickness_um))
    else:
        kw.update(th=float(emission_angle_deg))
    try:
        s = spekpy.Spek(**kw)
        e, flu = s.get_spectrum()
    except Exception as exc:  # SpekPy raises plain Exceptions for out-of-range inputs
        raise XrmInputError(f"SpekPy cannot compute the CTSimU source spectrum ({kw}): {exc}") from None
    per_s_sr = np.asarray(flu, float) * bin_kev * 100.0 ** 2 * current_ma
    return Spectrum(np.asarray(e, float), per_s_sr, bin_kev, voltage_kv, voltage_kv * current_ma)


def write_spectrum_file(path: Path, spectrum: Spectrum, current_ma: float) -> None:
    """Write a CTSimU spectrum CSV (energy keV, photons / (s sr mA))."""
    lines = ["# energy [keV], photons / (s sr mA) per bin"]
    for e, n in zip(spectrum.energy_kev, spectrum.photons_per_s_sr / current_ma):
        lines.append(f"{e:.6g},{n:.8g}")
    write_text_atomic(path, "\n".join(lines) + "\n")
