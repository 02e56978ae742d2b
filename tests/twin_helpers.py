"""Small scenario builders shared by the twin tests."""

from __future__ import annotations

import copy

from twin.scenario import validate


def slab_scenario(material: str, thickness_mm: float, kvp: float, filt, *, ideal=True,
                  scintillator=None, monochromatic_kev=None, pixels=(4, 4), noise=True, **det):
    """A parallel-beam scan of one large slab (thickness along the beam), one view."""
    d = {
        "name": "slab", "seed": 1,
        "source": {"kvp": kvp, "power_w": 10, "filter": filt},
        "geometry": {"source_object_mm": 100.0, "object_detector_mm": 10.0, "objective": "flat-panel",
                     "projections": 1, "beam": "parallel"},
        "detector": {"pixels": list(pixels), "pixel_um": 100.0, "ideal": ideal, "noise": noise,
                     "flats": 1, "darks": 1, **det},
        "phantom": {"kind": "parts", "parts": [
            {"shape": "box", "material": material, "size_mm": [20.0, thickness_mm, 20.0]}]},
    }
    if scintillator is not None:
        d["detector"]["scintillator"] = scintillator
    if monochromatic_kev is not None:
        d["source"]["monochromatic_kev"] = monochromatic_kev
    return validate(d)


def parts_scenario(parts, *, pixels=(64, 64), pixel_um=50.0, beam="parallel", projections=1,
                   supersample=1, source=None, detector=None, seed=1, **geometry):
    d = {
        "name": "parts", "seed": seed,
        "source": {"kvp": 80, "power_w": 10, "filter": "LE2", **(source or {})},
        "geometry": {"source_object_mm": 50.0, "object_detector_mm": 50.0, "objective": "flat-panel",
                     "projections": projections, "beam": beam, "supersample": supersample, **geometry},
        "detector": {"pixels": list(pixels), "pixel_um": pixel_um, "ideal": True, "flats": 1,
                     "darks": 1, **(detector or {})},
        "phantom": {"kind": "parts", "parts": copy.deepcopy(list(parts))},
    }
    return validate(d)
