"""CTSimU scenarios (file format 1.x) in and out of xrm-twin.

* :mod:`twin.ctsimu.reader` reads a CTSimU scenario JSON into a :class:`CtsimuScenario`
  (an xrm-twin :class:`~twin.scenario.ScanSpec` plus explicit per-view vectors, placed mesh
  parts, spectrum and the CTSimU detector model).
* :mod:`twin.ctsimu.run` simulates it and writes TIFF projections, the CTSimU metadata
  JSON the toolbox reads and an NXtomo file.
* :mod:`twin.ctsimu.writer` exports an xrm-twin scenario as CTSimU JSON.

See ``docs/ctsimu.md`` for the mapping, the approximations and what is refused.
"""

from twin.ctsimu.reader import CtsimuScenario, read_scenario

__all__ = ["CtsimuScenario", "read_scenario"]
