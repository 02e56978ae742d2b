"""``--preview``: a coarser version of a scenario that runs in minutes on 2 CPU cores.

The field of view is kept; the detector is binned further so it has at most
:data:`PREVIEW_MAX_PIXELS` columns and rows, the number of views is cut to at most
:data:`PREVIEW_MAX_VIEWS`, and the phantom is rasterised at the (coarser) scan voxel. The
changes are returned so the report can state them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from twin.scenario import ScanSpec

PREVIEW_MAX_PIXELS = 256
PREVIEW_MAX_VIEWS = 300


def preview_spec(spec: ScanSpec) -> tuple[ScanSpec, dict[str, Any]]:
    """Return the preview scenario and a dict of ``key -> (full value, preview value)``."""
    geometry, detector, phantom = dict(spec.geometry), dict(spec.detector), dict(spec.phantom)
    cols, rows = detector["pixels"]
    factor = max(1, math.ceil(max(cols, rows) / PREVIEW_MAX_PIXELS))
    changes: dict[str, Any] = {}
    if factor > 1:
        new_pixels = [max(1, cols // factor), max(1, rows // factor)]
        changes["detector.pixels"] = (list(detector["pixels"]), new_pixels)
        changes["geometry.binning"] = (geometry["binning"], geometry["binning"] * factor)
        detector["pixels"] = new_pixels
        geometry["binning"] = geometry["binning"] * factor
    views = min(geometry["projections"], PREVIEW_MAX_VIEWS)
    if views != geometry["projections"]:
        changes["geometry.projections"] = (geometry["projections"], views)
        geometry["projections"] = views
    if phantom.get("voxel_um") is None and phantom["kind"] != "parts":
        from twin.plan import resolve_geometry

        g = resolve_geometry(dataclasses.replace(spec, geometry=geometry, detector=detector))
        phantom["voxel_um"] = g.voxel_size_um
        changes["phantom.voxel_um"] = ("scan voxel", g.voxel_size_um)
    new = dataclasses.replace(spec, geometry=geometry, detector=detector, phantom=phantom,
                              name=spec.name)
    return new, changes
