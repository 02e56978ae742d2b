"""Errors raised for bad input, with the offending key and the allowed values named."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


class XrmInputError(ValueError):
    """Bad user input (scenario key, material, unit, file).

    The CLI maps this error to exit code 2. The message always names what was given and
    what is allowed.
    """


def close_matches(name: str, allowed: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``allowed`` that resemble ``name`` (case-insensitive)."""
    allowed = list(allowed)
    lower = {a.lower(): a for a in allowed}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.5)
    return [lower[h] for h in hits]


def unknown(what: str, name: str, allowed: Iterable[str]) -> XrmInputError:
    """Build the error for an unknown ``what`` (e.g. "material") called ``name``."""
    allowed = sorted(set(allowed), key=str.lower)
    hint = close_matches(str(name), allowed)
    msg = f"unknown {what} {name!r}"
    if hint:
        msg += f"; did you mean {', '.join(repr(h) for h in hint)}?"
    shown = ", ".join(allowed) if len(allowed) <= 40 else ", ".join(allowed[:40]) + ", ..."
    msg += f"{'' if hint else ';'} Allowed: {shown}"
    return XrmInputError(msg)


def shown(value: Any) -> str:
    """``repr(value)`` for messages, numpy scalars as plain numbers (``-5.0``, not
    ``np.float64(-5.0)``)."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        value = value.item()
    return repr(value)


def require_positive(key: str, value: float, *, allow_zero: bool = False) -> float:
    """Check that a physical quantity is finite and positive; return it as float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise XrmInputError(f"{key} must be a number, got {shown(value)}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise XrmInputError(f"{key} must be finite, got {shown(value)}")
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise XrmInputError(f"{key} must be {bound}, got {shown(value)}")
    return v
