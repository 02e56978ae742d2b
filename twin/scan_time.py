"""Scan-time model: how long the instrument takes for a scenario.

``t = views x frames x (exposure + readout)          projections
    + n_ref_blocks x flats x (exposure + readout)     reference (flat) images, sample moved out
    + darks x (exposure + readout)
    + n_ref_blocks x 2 x stage_move_s                 moving the sample out and back in
    + setup_s``                                       warm-up, alignment, scout

Versa scans take references before and after the projections (``n_ref_blocks = 2``). Readout
(``detector.readout_s``, 0.5 s default) includes the rotation step. The constants are estimates
(``docs/instrument.md``); the paper's pouch scan, 3201 views x 15 s, comes out above 13 hours.
"""

from __future__ import annotations

from typing import Mapping

STAGE_MOVE_S = 20.0
SETUP_S = 600.0
REFERENCE_BLOCKS = 2


def scan_time_s(*, views: int, exposure_s: float, frames: int = 1, readout_s: float = 0.5,
                flats: int = 10, darks: int = 5, stage_move_s: float = STAGE_MOVE_S,
                setup_s: float = SETUP_S, reference_blocks: int = REFERENCE_BLOCKS) -> float:
    """Instrument time of one scan, seconds (see the module docstring)."""
    per_frame = exposure_s + readout_s
    return (views * frames * per_frame + reference_blocks * flats * per_frame + darks * per_frame
            + reference_blocks * 2 * stage_move_s + setup_s)


def scenario_scan_time_s(geometry: Mapping, detector: Mapping) -> float:
    """Scan time of a scenario's ``[geometry]`` and ``[detector]`` tables, seconds."""
    return scan_time_s(views=int(geometry["projections"]), exposure_s=float(detector["exposure_s"]),
                       frames=int(detector["frames"]), readout_s=float(detector["readout_s"]),
                       flats=int(detector["flats"]), darks=int(detector["darks"]))
