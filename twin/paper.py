"""The numbers a paper reports beside what this run measured (``report.json`` ``paper``).

A built-in scenario that reproduces a published scan carries the published numbers in its
``[paper]`` table (``docs/scenarios.md``); the report then puts, for each, the paper's value,
the value measured on the reconstruction (the segmented components) and on the phantom's truth
(the same measurement on the truth labels), and the relative differences. The vocabulary:

==================================================  ============================================
``[paper]`` key                                     measured as
==================================================  ============================================
``voxel_size_um``                                   the scan's voxel at full scale (and this run's)
``metrology.<component>.thickness_mean_um``          mean local thickness (sphere diameter), um
``metrology.<component>.thickness_std_um``           its standard deviation, um
``metrology.<component>.surface_to_volume_per_mm``   marching-cubes surface / volume, 1/mm
``metrology.<component>.volume_mm3``                 voxel count x voxel volume
``metrology.<component>.layer_thickness_um``         mean count of component voxels per z column
``metrology.<component>.projected_diameter_mm``      equivalent-circle diameter of its z projection
``metrology.<component>.height_mm``                  its extent along z
``stack = {from, to, thickness_um}``                 mean z distance, per column, from the bottom of
                                                    ``from`` to the top of ``to``
``particles.<component>.mean_diameter_um``           mean equivalent-sphere diameter of its
                                                    connected pieces (>= 8 voxels)
``defects.<type>.mean_diameter_um``                  mean ``size_um`` of the detected defects
``defects.<type>.found = true``                      at least one defect of that type detected
==================================================  ============================================

A quantity that could not be measured (the component is not resolved at a preview voxel, no
defect was detected) gets ``measured = None`` and a note.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from twin.errors import XrmInputError, unknown

COMPONENT_QUANTITIES = ("thickness_mean_um", "thickness_std_um", "surface_to_volume_per_mm",
                        "volume_mm3", "layer_thickness_um", "projected_diameter_mm", "height_mm")
DEFECT_QUANTITIES = ("mean_diameter_um", "found")
PAPER_KEYS = ("reference", "voxel_size_um", "metrology", "stack", "particles", "defects", "notes")


def check_paper_table(paper: Mapping[str, Any], where: str = "[paper]") -> None:
    """Refuse unknown keys in a scenario's ``[paper]`` table (naming the allowed ones)."""
    for key in paper:
        if key not in PAPER_KEYS:
            raise XrmInputError(f"{where}: " + str(unknown("key", key, PAPER_KEYS)))
    for section, allowed in (("metrology", COMPONENT_QUANTITIES), ("particles", ("mean_diameter_um",)),
                             ("defects", DEFECT_QUANTITIES)):
        table = paper.get(section, {})
        if not isinstance(table, Mapping):
            raise XrmInputError(f"{where}.{section} must be a table of tables")
        for comp, qs in table.items():
            if not isinstance(qs, Mapping):
                raise XrmInputError(f"{where}.{section}.{comp} must be a table, got {qs!r}")
            for q in qs:
                if q not in allowed:
                    raise XrmInputError(f"{where}.{section}.{comp}: " + str(unknown("quantity", q, allowed)))
    stack = paper.get("stack")
    if stack is not None:
        missing = {"from", "to", "thickness_um"} - set(stack)
        if missing:
            raise XrmInputError(f"{where}.stack needs from, to and thickness_um (missing {sorted(missing)})")


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b) - 1.0


def _entry(paper_value, measured, truth) -> dict[str, Any]:
    return {"paper": paper_value, "measured": measured, "truth": truth,
            "measured_vs_paper": _rel(measured, paper_value) if not isinstance(paper_value, bool) else None,
            "measured_vs_truth": _rel(measured, truth) if not isinstance(paper_value, bool) else None}


def _component_value(q: str, rec: Mapping[str, Any] | None, mask: np.ndarray | None,
                     vs: float) -> float | None:
    """One quantity of one component: from its metrology record or its mask."""
    if q in ("thickness_mean_um", "thickness_std_um"):
        th = (rec or {}).get("thickness_um") or {}
        return th.get("mean" if q == "thickness_mean_um" else "std")
    if q in ("surface_to_volume_per_mm", "volume_mm3"):
        return (rec or {}).get(q)
    if mask is None or not mask.any():
        return None
    if q == "layer_thickness_um":
        col = np.count_nonzero(mask, axis=0)
        return float(col[col > 0].mean() * vs)
    if q == "projected_diameter_mm":
        area_mm2 = np.count_nonzero(mask.any(axis=0)) * (vs / 1000.0) ** 2
        return float(2.0 * np.sqrt(area_mm2 / np.pi))
    if q == "height_mm":
        z = np.nonzero(mask.any(axis=(1, 2)))[0]
        return float((z[-1] - z[0] + 1) * vs / 1000.0)
    raise XrmInputError(f"unknown component quantity {q!r}")


def stack_thickness_um(labels: np.ndarray, names: Mapping[int, str], bottom: str, top: str,
                       vs: float) -> float | None:
    """Mean over z columns of the distance from the lowest ``bottom`` voxel to the highest
    ``top`` voxel (both edges included), um; None when no column holds both."""
    inv = {v: k for k, v in names.items()}
    if bottom not in inv or top not in inv:
        return None
    lo_m, hi_m = labels == inv[bottom], labels == inv[top]
    both = lo_m.any(axis=0) & hi_m.any(axis=0)
    if not both.any():
        return None
    nz = labels.shape[0]
    z_lo = np.argmax(lo_m, axis=0)
    z_hi = nz - 1 - np.argmax(hi_m[::-1], axis=0)
    t = np.abs(z_hi - z_lo) + 1
    return float(t[both].mean() * vs)


def _particles_mean_um(mask: np.ndarray | None, vs: float) -> float | None:
    from recon.metrology import size_distribution_um

    if mask is None or not mask.any():
        return None
    return size_distribution_um(mask, vs, min_voxels=8).get("mean_um")


def compare_with_paper(paper: Mapping[str, Any], *, voxel_full_um: float, voxel_run_um: float,
                       metrology: Mapping[str, Any], metrology_truth: Mapping[str, Any] | None,
                       labels: np.ndarray, names: Mapping[int, str],
                       truth_labels: np.ndarray | None, truth_names: Mapping[int, str] | None,
                       defects: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``paper`` section of report.json (see the module docstring).

    Parameters
    ----------
    paper : dict
        The scenario's ``[paper]`` table.
    voxel_full_um, voxel_run_um : float
        Voxel of the scan at full scale and of this run (a preview is coarser).
    metrology, metrology_truth : dict
        ``report.json`` ``metrology`` and ``metrology_truth``.
    labels : ndarray of int
        Segmented components of the reconstruction (``names`` maps label -> name).
    truth_labels : ndarray of int, optional
        Truth on the same grid (``truth_names``), for the same measurements on the truth.
    defects : dict, optional
        ``report.json`` ``defects`` (``truth`` and ``detected`` rows).
    """
    check_paper_table(paper)
    vs = float(voxel_run_um)
    out: dict[str, Any] = {"reference": paper.get("reference", ""), "notes": paper.get("notes", "")}
    if paper.get("voxel_size_um") is not None:
        pv = float(paper["voxel_size_um"])
        out["voxel_size_um"] = {"paper": pv, "full_scale": voxel_full_um, "this_run": voxel_run_um,
                                "full_scale_vs_paper": _rel(voxel_full_um, pv)}
    inv = {v: k for k, v in names.items()}
    tinv = {v: k for k, v in (truth_names or {}).items()}

    def masks(comp):
        m = labels == inv[comp] if comp in inv else None
        t = truth_labels == tinv[comp] if truth_labels is not None and comp in tinv else None
        return m, t

    met = {}
    for comp, qs in (paper.get("metrology") or {}).items():
        m, t = masks(comp)
        met[comp] = {}
        for q, pv in qs.items():
            meas = _component_value(q, metrology.get(comp), m, vs)
            tru = _component_value(q, (metrology_truth or {}).get(comp), t, vs)
            met[comp][q] = _entry(float(pv), meas, tru)
            if meas is None:
                met[comp][q]["note"] = (f"{comp} not segmented in this run" if m is None or not m.any()
                                        else f"{q} not measured")
    if met:
        out["metrology"] = met
    if paper.get("stack"):
        st = paper["stack"]
        meas = stack_thickness_um(labels, names, st["from"], st["to"], vs)
        tru = (stack_thickness_um(truth_labels, truth_names, st["from"], st["to"], vs)
               if truth_labels is not None else None)
        out["stack"] = {"from": st["from"], "to": st["to"],
                        "thickness_um": _entry(float(st["thickness_um"]), meas, tru)}
    parts = {}
    for comp, qs in (paper.get("particles") or {}).items():
        m, t = masks(comp)
        parts[comp] = {"mean_diameter_um": _entry(float(qs["mean_diameter_um"]),
                                                  _particles_mean_um(m, vs), _particles_mean_um(t, vs))}
    if parts:
        out["particles"] = parts
    dfs = {}
    for kind, qs in (paper.get("defects") or {}).items():
        det = [d for d in (defects or {}).get("detected", []) if d.get("type") == kind]
        tru = [d for d in (defects or {}).get("truth", []) if d.get("type") == kind]
        dfs[kind] = {"n_detected": len(det), "n_truth_in_view": len(tru)}
        for q, pv in qs.items():
            if q == "found":
                dfs[kind]["found"] = {"paper": bool(pv), "measured": bool(det), "truth": bool(tru)}
            else:
                md = float(np.mean([d["size_um"] for d in det])) if det else None
                mt = float(np.mean([d["size_um"] for d in tru if d.get("size_um")])) if tru else None
                dfs[kind][q] = _entry(float(pv), md, mt)
    if dfs:
        out["defects"] = dfs
    return out
