"""Procedural battery phantoms (coin, pouch, NiMH) with microstructure, defects and ageing.

``phantoms.build(kind, params, seed)`` returns a :class:`~phantoms.base.Phantom` that can be
rasterised at any voxel size on the whole cell or a volume of interest; see ``docs/phantoms.md``.
"""

from phantoms.base import Phantom, Rendering
from phantoms.registry import KINDS, build, defaults

__all__ = ["build", "defaults", "KINDS", "Phantom", "Rendering"]
