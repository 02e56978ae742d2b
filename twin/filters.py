"""Source filters: the named Versa library (Air, LE1-LE6, HE1-HE6) and custom stacks.

The compositions of Zeiss's LE/HE filters are not published. We use the documented estimates
of ``shared/reference/battery_instrument.md`` (section 1b): LE filters as aluminium of the
given Al-equivalent thickness, HE filters as copper of the given Cu-equivalent thickness.
Any name can be overridden with an explicit stack (scenario key
``source.filter_overrides``), and a stack of any materials can be given directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from twin.errors import XrmInputError, require_positive, unknown
from twin.materials import Material, get_material

#: name -> list of (material, thickness_mm). Estimates (see module docstring).
FILTER_LIBRARY: dict[str, tuple[tuple[str, float], ...]] = {
    "Air": (),
    "LE1": (("Al", 0.15),), "LE2": (("Al", 0.30),), "LE3": (("Al", 0.60),),
    "LE4": (("Al", 1.00),), "LE5": (("Al", 1.70),), "LE6": (("Al", 2.50),),
    "HE1": (("Cu", 0.10),), "HE2": (("Cu", 0.20),), "HE3": (("Cu", 0.30),),
    "HE4": (("Cu", 0.50),), "HE5": (("Cu", 0.75),), "HE6": (("Cu", 1.00),),
}


@dataclass(frozen=True)
class FilterLayer:
    """One layer of a filter stack: a material and its thickness in mm."""

    material: Material
    thickness_mm: float

    def __post_init__(self) -> None:
        require_positive(f"thickness_mm of filter layer {self.material.name!r}", self.thickness_mm)


def stack_transmission(layers: Sequence[FilterLayer], energy_kev: np.ndarray) -> np.ndarray:
    """Transmission ``exp(-sum mu_i t_i)`` of a filter stack at ``energy_kev``, shape like it."""
    e = np.asarray(energy_kev, dtype=float)
    tau = np.zeros(e.shape)
    for layer in layers:
        tau += layer.material.mu_per_mm(e) * layer.thickness_mm
    return np.exp(-tau)


def _layers_from_list(items: Sequence[Mapping[str, Any]], where: str) -> tuple[FilterLayer, ...]:
    layers = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise XrmInputError(f"{where}[{i}] must be a table like "
                                f"{{material = \"Al\", thickness_mm = 1.0}}, got {item!r}")
        extra = set(item) - {"material", "thickness_mm", "density_g_cm3"}
        if extra:
            raise unknown(f"key in {where}[{i}]", sorted(extra)[0],
                          ["material", "thickness_mm", "density_g_cm3"])
        if "material" not in item or "thickness_mm" not in item:
            raise XrmInputError(f"{where}[{i}] needs 'material' and 'thickness_mm' "
                                f"(thickness in mm), got {dict(item)!r}")
        mat = get_material(item["material"], item.get("density_g_cm3"))
        t = require_positive(f"{where}[{i}].thickness_mm", item["thickness_mm"])
        layers.append(FilterLayer(mat, t))
    return tuple(layers)


def resolve_filter(spec: str | Sequence[Mapping[str, Any]],
                   overrides: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                   ) -> tuple[FilterLayer, ...]:
    """Turn a filter name or a custom stack into filter layers.

    Parameters
    ----------
    spec : str or list of dict
        A name of :data:`FILTER_LIBRARY` (case-insensitive) or a list of
        ``{material, thickness_mm[, density_g_cm3]}`` tables.
    overrides : dict, optional
        Name -> custom stack, replacing the library's estimate for that name.
    """
    if isinstance(spec, str):
        names = {k.lower(): k for k in list(FILTER_LIBRARY) + list(overrides or {})}
        key = names.get(spec.strip().lower())
        if key is None:
            raise unknown("filter (source.filter)", spec, FILTER_LIBRARY)
        if overrides and key in overrides:
            return _layers_from_list(overrides[key], f"source.filter_overrides.{key}")
        return tuple(FilterLayer(get_material(m), t) for m, t in FILTER_LIBRARY[key])
    if isinstance(spec, (list, tuple)):
        return _layers_from_list(spec, "source.filter")
    raise XrmInputError(f"source.filter must be a name ({', '.join(FILTER_LIBRARY)}) or a list "
                        f"of {{material, thickness_mm}} tables, got {spec!r}")


def describe_stack(layers: Sequence[FilterLayer]) -> str:
    """Human-readable stack, e.g. ``"Al 2.50 mm"`` or ``"none"``."""
    return " + ".join(f"{l.material.name} {l.thickness_mm:.3g} mm" for l in layers) or "none"
