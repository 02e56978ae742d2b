"""Phantom parameters: defaults, validation and merging of the TOML ``[phantom]`` table."""

from __future__ import annotations

import copy
from typing import Any, Mapping

from twin.errors import XrmInputError, require_positive, unknown

__all__ = ["merge_params", "positive", "fraction", "choice", "integer"]


def merge_params(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, where: str
                 ) -> dict[str, Any]:
    """Defaults overridden by ``given``; unknown keys raise, nested tables merge recursively.

    A default of None marks an optional key (any value accepted here, checked by the caller).

    Raises
    ------
    XrmInputError
        An unknown key (the message lists the valid ones) or a table given as a scalar.
    """
    out = copy.deepcopy(dict(defaults))
    if given is None:
        return out
    if not isinstance(given, Mapping):
        raise XrmInputError(f"{where} must be a table of parameters, got {given!r}")
    for key, val in given.items():
        if key not in defaults:
            raise unknown(f"{where} parameter", key, list(defaults))
        if isinstance(defaults[key], Mapping) and key != "foam":
            out[key] = merge_params(defaults[key], val, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(val)
    return out


def positive(p: Mapping[str, Any], key: str, where: str, *, allow_zero: bool = False) -> float:
    return require_positive(f"{where}.{key}", p[key], allow_zero=allow_zero)


def fraction(p: Mapping[str, Any], key: str, where: str, *, hi: float = 1.0) -> float:
    v = require_positive(f"{where}.{key}", p[key], allow_zero=True)
    if v > hi:
        raise XrmInputError(f"{where}.{key} must be in [0, {hi}], got {v}")
    return v


def integer(p: Mapping[str, Any], key: str, where: str, *, lo: int = 0) -> int:
    v = p[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < lo:
        raise XrmInputError(f"{where}.{key} must be an integer >= {lo}, got {v!r}")
    return int(v)


def choice(p: Mapping[str, Any], key: str, where: str, allowed) -> str:
    v = p[key]
    if v not in allowed:
        raise unknown(f"{where}.{key} value", str(v), allowed)
    return v
