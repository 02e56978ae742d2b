"""Files and figures of a measurement (``run`` and ``measure`` alike).

From the dict of :func:`twin.measure.measure` and the volume it measured, write into an output
folder:

* ``figures/slices.png``, ``figures/segmentation.png`` (orthogonal slices, with the components
  over them), ``figures/histogram.png`` (with the thresholds), ``figures/components_3d.png``
  (each component rendered on its own, the paper's Fig. 6a);
* per component: ``figures/thickness_<name>.png`` (histogram); for the components with a
  thickness map: ``figures/thickness_map_<name>.png`` (a slice), ``thickness/<name>.tif`` (the
  map, float32 um, for Dragonfly/Avizo/ImageJ) and ``thickness/<name>.ply`` (the surface
  coloured by thickness, the paper's Fig. 6b);
* ``figures/pod_<type>.png`` (POD(a) with the hit/miss data) and
  ``figures/detectability.png`` (CNR and d' table) when the truth was given.

Every file is written atomically. Returns ``[(title, path)]`` for the HTML report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from twin.atomic import atomic_path
from twin.errors import XrmInputError

_log = logging.getLogger("xrm_twin")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))


def write_measure_outputs(out_dir: str | Path, meas: Mapping[str, Any], volume: np.ndarray,
                          voxel_size_um: float, origin_mm, *, title: str = "",
                          render_3d: bool = True, figures_too: bool = True) -> list[tuple[str, Path]]:
    """Write the measurement's figures and thickness files; see the module docstring.

    Parameters
    ----------
    out_dir : path
        Output folder (``figures/`` and ``thickness/`` are made inside).
    meas : dict
        :func:`twin.measure.measure` result (``labels``, ``segmentation``, ``metrology``,
        ``thickness_maps``, ``detectability``).
    volume : ndarray, shape (nz, ny, nx)
        The reconstruction that was measured (1/mm).
    voxel_size_um : float
    origin_mm : (x, y, z)
    title : str
        Figure title (the scenario name).
    render_3d : bool
        Draw ``components_3d.png`` (about 10-25 s for eight components).
    figures_too : bool
        False: only the thickness files (TIFF, PLY), no figure (no matplotlib needed).

    Returns
    -------
    list of (caption, path)
        The figures written.
    """
    from recon.metrology import write_thickness_ply, write_thickness_tiff

    out = Path(out_dir)
    if figures_too:
        figures = _figures(out / "figures", meas, volume, voxel_size_um, origin_mm, title=title,
                           render_3d=render_3d)
    else:
        figures = []
    for name, (tmap, vox_um) in (meas.get("thickness_maps") or {}).items():
        safe = _safe(name)
        with atomic_path(out / "thickness" / f"{safe}.tif") as tmp:
            write_thickness_tiff(tmp, tmap, voxel_size_um=vox_um)
        mask = tmap > 0
        if np.count_nonzero(mask) >= 8:
            # a block-downsampled map's voxel 0 is centred (factor - 1) / 2 fine voxels in
            factor = vox_um / float(voxel_size_um)
            o = np.asarray(origin_mm, float) + (factor - 1.0) / 2.0 * float(voxel_size_um) / 1000.0
            with atomic_path(out / "thickness" / f"{safe}.ply") as tmp:
                write_thickness_ply(tmp, mask, tmap, vox_um, origin_mm=o)
    return figures


def _figures(fig_dir: Path, meas: Mapping[str, Any], volume: np.ndarray, voxel_size_um: float,
             origin_mm, *, title: str, render_3d: bool) -> list[tuple[str, Path]]:
    from recon import figures as rfig
    from twin.report import histogram_figure, orthoslices_figure

    labels = meas["labels"]
    names = {int(k): v for k, v in meas["segmentation"]["components"].items()}
    figures: list[tuple[str, Path]] = [
        ("Orthogonal slices of the reconstruction",
         orthoslices_figure(volume, voxel_size_um, origin_mm, fig_dir / "slices.png", title=title)),
        ("Segmented components (colours) over the reconstruction",
         orthoslices_figure(volume, voxel_size_um, origin_mm, fig_dir / "segmentation.png",
                            title=f"{title}: segmentation", labels=labels)),
        ("Histogram and segmentation thresholds",
         histogram_figure(volume, fig_dir / "histogram.png",
                          thresholds=meas["segmentation"]["thresholds_per_mm"])),
    ]
    if render_3d and names and np.any(labels > 0):
        figures.append(("Segmented components, each on its own (3-D rendering)",
                        rfig.components_3d_figure(labels, names, voxel_size_um,
                                                  fig_dir / "components_3d.png",
                                                  origin_mm=origin_mm, title=title or "components")))
    for name, m in meas["metrology"].items():
        th = m.get("thickness_um") or {}
        if th.get("histogram"):
            figures.append((f"Local thickness of {name}",
                            rfig.thickness_histogram_figure(th, fig_dir / f"thickness_{_safe(name)}.png",
                                                            title=name)))
    for name, (tmap, vox_um) in (meas.get("thickness_maps") or {}).items():
        safe = _safe(name)
        figures.append((f"Local thickness map of {name} (slice with the most structure)",
                        rfig.thickness_map_figure(tmap, fig_dir / f"thickness_map_{safe}.png",
                                                  voxel_size_um=vox_um,
                                                  title=f"{name}: local thickness")))
    det = meas.get("detectability") or {}
    for kind, pod in (det.get("pod") or {}).items():
        if pod.get("fit"):
            fit = dict(pod["fit"])
            figures.append((f"POD(a) of {kind}s ({pod['size_key']})",
                            rfig.pod_curve_figure(fit, fig_dir / f"pod_{_safe(kind)}.png",
                                                  a=pod["a_um"], hit=pod["hit"],
                                                  title=f"POD of {kind}s vs {pod['size_key']}")))
    if det.get("cnr_detail") or det.get("tasks"):
        try:
            figures.append(("CNR between touching phases and d' per defect task",
                            rfig.detectability_table_figure(det.get("cnr_detail") or {},
                                                            det.get("tasks"),
                                                            fig_dir / "detectability.png")))
        except XrmInputError as exc:  # nothing to tabulate
            _log.info("no detectability table: %s", exc)
    return figures
