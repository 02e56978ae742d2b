"""Scan-parameter optimisation: a fast linear-systems detectability model, sweeps and an optimiser.

* :mod:`twin.optimise.fastmodel` -- CNR, d' (NPW) and POD of a defect task for thousands of
  settings in seconds (spectra x attenuation x detector noise x resolution x FDK noise transfer);
* :mod:`twin.optimise.sweep` -- grids over scenario keys, fast model or full simulation, on Dask;
* :mod:`twin.optimise.optimise` -- the shortest scan that reaches a POD target, and the Pareto
  front of scan time vs d' / a90;
* :mod:`twin.optimise.cli` -- Typer commands ``sweep`` and ``optimise``.
"""

from twin.optimise.fastmodel import Task, evaluate, parse_task

__all__ = ["Task", "evaluate", "parse_task"]
