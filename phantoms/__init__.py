"""Procedural battery phantoms (coin, pouch, NiMH) with microstructure, defects and ageing."""
