"""Phantom registry: :func:`build` by kind name."""

from __future__ import annotations

from typing import Any

from twin.errors import XrmInputError, unknown

from phantoms.base import Phantom

__all__ = ["build", "KINDS", "defaults"]


def _classes() -> dict[str, type]:
    from phantoms.coin import CoinCell
    from phantoms.nimh import NiMHCell
    from phantoms.pouch import PouchCell

    return {"coin_na_ion": CoinCell, "pouch_lfp": PouchCell, "nimh_aaa": NiMHCell}


KINDS = ("coin_na_ion", "pouch_lfp", "nimh_aaa")


def build(kind: str, params: dict[str, Any] | None = None, seed: int = 0) -> Phantom:
    """Build a battery phantom.

    Parameters
    ----------
    kind : {"coin_na_ion", "pouch_lfp", "nimh_aaa"}
    params : dict, optional
        The scenario's ``[phantom]`` table without the common keys (kind, voi, voxel_um, ...):
        e.g. ``{"cycles": 120, "foam": {"thickness_mean_um": 35.88}}``. Missing keys take the
        documented defaults (:func:`defaults`).
    seed : int
        Seed of every microstructure and defect draw.

    Raises
    ------
    XrmInputError
        Unknown kind or parameter (the message lists the valid ones), or values that cannot be
        realised; raised before any rasterisation work.
    """
    classes = _classes()
    if kind not in classes:
        raise unknown("phantom kind", kind, classes)
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            if int(seed) != seed:
                raise ValueError
            seed = int(seed)
        except (TypeError, ValueError):
            raise XrmInputError(f"seed must be an integer, got {seed!r}") from None
    return classes[kind](dict(params or {}), seed)


def defaults(kind: str) -> dict[str, Any]:
    """The default parameters of a kind (a copy)."""
    import copy

    from phantoms import coin, nimh, pouch

    table = {"coin_na_ion": coin.DEFAULTS, "pouch_lfp": pouch.DEFAULTS, "nimh_aaa": nimh.DEFAULTS}
    if kind not in table:
        raise unknown("phantom kind", kind, table)
    return copy.deepcopy(table[kind])
