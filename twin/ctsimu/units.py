"""CTSimU parameters (``{"value": ..., "unit": ...}``) converted to xrm-twin units.

Lengths to mm, angles to degrees, voltages to kV, currents to mA, times to s, densities to
g/cm^3. An unknown unit is an :class:`~twin.errors.XrmInputError` naming the key.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from twin.errors import XrmInputError

#: unit -> factor to the xrm-twin unit of its kind.
FACTORS: dict[str, dict[str, float]] = {
    "length": {"nm": 1e-6, "um": 1e-3, "µm": 1e-3, "mm": 1.0, "cm": 10.0, "dm": 100.0, "m": 1000.0},
    "angle": {"deg": 1.0, "rad": 180.0 / math.pi},
    "voltage": {"V": 1e-3, "kV": 1.0, "MV": 1e3},
    "current": {"nA": 1e-6, "uA": 1e-3, "µA": 1e-3, "mA": 1.0, "A": 1e3},
    "time": {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0},
    "density": {"g/cm^3": 1.0, "g/cm3": 1.0, "kg/m^3": 1e-3, "kg/m3": 1e-3, "g/ml": 1.0},
}
DEFAULT_UNIT = {"length": "mm", "angle": "deg", "voltage": "kV", "current": "mA",
                "time": "s", "density": "g/cm^3"}


def raw_value(node: Any) -> Any:
    """The ``value`` of a parameter node (or the node itself if it is a plain value)."""
    if isinstance(node, Mapping):
        return node.get("value")
    return node


def has_drifts(node: Any) -> bool:
    """True when a parameter node carries a non-empty ``drifts`` (or ``drift``) list."""
    if not isinstance(node, Mapping):
        return False
    for key in ("drifts", "drift"):
        d = node.get(key)
        if d:
            return True
    return False


def quantity(node: Any, kind: str, where: str, default: float | None = None) -> float | None:
    """A parameter converted to the xrm-twin unit of ``kind``.

    Parameters
    ----------
    node : dict or number or None
        ``{"value": v, "unit": u}``, a bare number, or None.
    kind : str
        One of :data:`FACTORS`.
    where : str
        Key path for messages, e.g. ``"geometry.detector.center.x"``.
    default : float, optional
        Returned when the node or its value is missing or null.
    """
    value = raw_value(node)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise XrmInputError(f"CTSimU {where}: expected a number, got {value!r}")
    unit = node.get("unit") if isinstance(node, Mapping) else None
    unit = unit or DEFAULT_UNIT[kind]
    table = FACTORS[kind]
    if unit not in table:
        raise XrmInputError(f"CTSimU {where}: unknown {kind} unit {unit!r}; allowed: {', '.join(table)}")
    return float(value) * table[unit]


def number(node: Any, where: str, default: float | None = None) -> float | None:
    """A dimensionless parameter (``{"value": v}`` or a bare number)."""
    value = raw_value(node)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise XrmInputError(f"CTSimU {where}: expected a number, got {value!r}")
    return float(value)
