"""xrm-twin: the instrument (spectrum, materials, filters, geometry, detector, projector)."""

__version__ = "0.1.0"
