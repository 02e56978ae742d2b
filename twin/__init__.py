"""xrm-twin: the instrument (spectrum, materials, filters, geometry, detector, projector)."""

import os as _os

# Taichi prints a banner at import; the CLI prints what matters itself.
_os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "false")

__version__ = "0.1.0"
