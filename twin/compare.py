"""``xrm-twin compare``: two scans of the same cell, before and after (cycling, ageing).

What the paper did between 0 and 120 cycles, reproducibly: register the later scan onto the
earlier one, map what changed, and say how much each kind of damage grew.

1. **Registration** (:func:`recon.registration.register_rigid`): rotation and translation of
   the *after* reconstruction onto the *before* one, in index space (each scan in its own
   instrument frame, as after a remount); the after volume and its segmentation are resampled
   into the before grid (linear / nearest).
2. **Change map** (:func:`recon.registration.change_map`): per component (matched by name),
   the volume that appeared and disappeared; ``figures/change_map.png`` shows before, after and
   the difference with the appeared damage outlined.
3. **Damage growth**: per defect type (delamination, crack, void, ...), the volume of the
   defects *detected* in each scan (``report.json`` ``defects.detected`` of the two runs) and
   its growth, beside the same on the truth (the defect labels of each phantom inside the
   measured region, ``metrology_truth``); detections of the after scan not within
   ``tol_vox`` voxels of one of the before scan are listed as new.
4. **Growth by difference** (:func:`difference_growth`): where the runs kept their defect maps
   (``segmentation.h5`` ``/defects``), the volume of new low-attenuation material over the
   detections, measured on ``after_registered - before`` (what did not change cancels, so
   the faint crack in a foam-filled paste is measured without a model of the foam). This is
   ``growth_mm3`` when measured: a segmented volume reads a thin gap wide under the scan's
   blur (the NiMH delamination +58 %), a deficit does not.

Writes ``report.json`` and ``report.html`` (with the figures) into the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from recon import slabs
from twin.errors import XrmInputError

DAMAGE_TYPES = ("delamination", "crack", "void", "short")


def _load_run(folder: Path) -> dict[str, Any]:
    from recon.io import read_volume

    folder = Path(folder)
    rep_p, rec_p, seg_p = folder / "report.json", folder / "recon.h5", folder / "segmentation.h5"
    for p in (rep_p, rec_p):
        if not p.is_file():
            raise XrmInputError(f"{folder}: no {p.name}: give the output folder of `xrm-twin run`")
    rec = read_volume(rec_p)
    if "volume" not in rec:
        raise XrmInputError(f"{rec_p}: no /volume")
    out = {"folder": folder, "report": json.loads(rep_p.read_text(encoding="utf-8")),
           "volume": rec["volume"], "voxel_size_um": float(np.asarray(rec["voxel_size_um"]).ravel()[0]),
           "origin_mm": np.asarray(rec["origin_mm"], float),
           "undenoised": rec.get("volume_undenoised"),
           "truth_path": folder / "truth.h5" if (folder / "truth.h5").is_file() else None}
    if seg_p.is_file():
        seg = read_volume(seg_p)
        out["labels"], out["names"] = seg["labels"], seg.get("names", {})
        out["defect_map"] = seg.get("defects")
    else:
        out["labels"], out["names"], out["defect_map"] = None, {}, None
    return out


def difference_growth(before: Mapping[str, Any], after: Mapping[str, Any], reg: Mapping[str, Any],
                      *, grow_vox: int = 6, fov_margin_vox: int = 12) -> dict[str, dict[str, Any]]:
    """Growth of each damage type from the registered difference of the two scans.

    For every type that the after scan detected with a voxel map (``segmentation.h5``
    ``/defects``) and a contrast (``contrast_mu`` of its rows: host minus fill, from the tables
    at the scan's effective energy), :func:`recon.registration.deficit_volume` over the
    detections of both scans (the after ones resampled into the before frame), on the
    undenoised volumes where both runs kept them. Apertures of the other types are excluded.

    Where both run folders hold their ``truth.h5``, the truth's growth is counted in the same
    region (``truth_overlap_mm3``: the voxels seen by both scans, away from the field of view's
    edge): growth outside it cannot be measured by a difference, and the report's truth
    volumes count each scan's whole field of view.

    Returns
    -------
    dict
        ``{type: {"volume_mm3", "noise_mm3", "contrast_per_mm", "aperture_voxels",
        "annulus_level_per_mm", "volumes": "undenoised" | "volume", "truth_overlap_mm3"}}``.
    """
    from recon.registration import apply_rigid, deficit_volume

    from twin.measure import field_of_view_mask

    if after.get("defect_map") is None:
        return {}
    rows_a = after["report"].get("defects", {}).get("detected", [])
    rows_b = before["report"].get("defects", {}).get("detected", [])
    use_raw = before.get("undenoised") is not None and after.get("undenoised") is not None
    vb = before["undenoised"] if use_raw else before["volume"]
    va = apply_rigid(after["undenoised"] if use_raw else after["volume"], reg)
    shape = vb.shape
    fov = field_of_view_mask(shape, margin_vox=fov_margin_vox)
    valid = fov & (apply_rigid(fov.astype(np.float32), reg, order=0) > 0.5)
    map_a = np.rint(apply_rigid(after["defect_map"].astype(np.float32), reg, order=0)).astype(np.int64)
    map_b = before.get("defect_map")
    masks: dict[str, np.ndarray] = {}
    contrast: dict[str, list[tuple[float, float]]] = {}
    for tag, rows, dmap in (("after", rows_a, map_a), ("before", rows_b, map_b)):
        if dmap is None:
            continue
        types = np.array([""] + [str(r.get("type")) for r in rows], dtype=object)
        ids = np.clip(dmap, 0, len(rows))
        for kind in DAMAGE_TYPES:
            if kind not in types[1:]:
                continue
            m = types[ids] == kind
            masks[kind] = masks[kind] | m if kind in masks else m
            if tag == "after":
                contrast.setdefault(kind, []).extend(
                    (float(r["contrast_mu"]), float(r.get("n_voxels") or 1))
                    for r in rows if r.get("type") == kind and r.get("contrast_mu"))
    diff = (va - vb).astype(np.float32)
    out = {}
    for kind, m in masks.items():
        if not contrast.get(kind) or not m.any():
            continue
        c = np.array(contrast[kind])
        mu = float(np.average(c[:, 0], weights=c[:, 1]))
        others = [slabs.binary_dilation(o, iterations=grow_vox + 3) for k, o in masks.items() if k != kind]
        exclude = np.logical_or.reduce(others) if others else None
        r = deficit_volume(diff, m, before["voxel_size_um"], mu, valid=valid, exclude=exclude,
                           grow_vox=grow_vox)
        out[kind] = {**r, "contrast_per_mm": mu, "volumes": "undenoised" if use_raw else "volume"}
    truth_counts = _truth_in_overlap(before, after, reg, valid, list(out))
    for kind, v in truth_counts.items():
        out[kind]["truth_overlap_mm3"] = v
    return out


def _truth_in_overlap(before: Mapping[str, Any], after: Mapping[str, Any], reg: Mapping[str, Any],
                      valid: np.ndarray, kinds: list[str]) -> dict[str, float]:
    """Truth growth (after - before, mm^3) of each defect type inside ``valid`` (before frame)."""
    from recon.registration import apply_rigid

    from twin.measure import truth_on_grid
    from twin.truth_io import read_truth

    if not kinds or before.get("truth_path") is None or after.get("truth_path") is None:
        return {}
    dv = (before["voxel_size_um"] / 1000.0) ** 3
    counts: dict[str, float] = {k: 0.0 for k in kinds}
    for sign, run in ((-1.0, before), (1.0, after)):
        truth = read_truth(run["truth_path"], instances=False)
        t = truth_on_grid(truth, run["volume"].shape, run["voxel_size_um"], run["origin_mm"])
        if run is after:
            t = np.rint(apply_rigid(t.astype(np.float32), reg, order=0, cval=-1.0)).astype(np.int32)
        for kind in kinds:
            labels = sorted({int(r["label"]) for r in truth.get("defects", [])
                             if r.get("type") == kind and "label" in r})
            if labels:
                counts[kind] += sign * float(np.count_nonzero(np.isin(t, labels) & valid)) * dv
    return counts


def _to_before_mm(x_mm, after: Mapping[str, Any], before: Mapping[str, Any],
                  reg: Mapping[str, Any], shape) -> np.ndarray:
    """Map an (x, y, z) mm position of the after scan into the before scan's frame."""
    vs = before["voxel_size_um"] / 1000.0
    p_a = (np.asarray(x_mm, float) - after["origin_mm"])[::-1] / vs           # (z, y, x) index
    R = np.asarray(reg["matrix_zyx"])
    c = (np.asarray(shape, float) - 1) / 2.0
    t = np.asarray(reg["translation_vox"], float)[::-1]                       # (z, y, x)
    p_b = R.T @ (p_a - c - t) + c
    return before["origin_mm"] + p_b[::-1] * vs


def damage_growth(before_rep: Mapping[str, Any], after_rep: Mapping[str, Any],
                  difference: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Per defect type: detected and truth volumes (mm^3) in each scan and their growth.

    ``growth_mm3`` is the growth from the registered difference (:func:`difference_growth`,
    ``difference`` here) where it was measured, else the growth of the detected volumes
    (``growth_detected_mm3``); ``growth_rel_error`` is that of ``growth_mm3`` against the truth
    (``growth_truth_overlap_mm3``, the truth in the region both scans saw, for a growth by
    difference where the run folders hold their truth; ``growth_truth_mm3`` otherwise).
    """
    difference = difference or {}
    out = {}
    for kind in DAMAGE_TYPES:
        rows = {}
        for tag, rep in (("before", before_rep), ("after", after_rep)):
            det = [d for d in rep.get("defects", {}).get("detected", []) if d.get("type") == kind]
            truth = (rep.get("metrology_truth") or {}).get(kind) or {}
            rows[tag] = {"n_detected": len(det),
                         "detected_volume_mm3": float(sum(d.get("volume_mm3") or 0.0 for d in det)),
                         "truth_volume_mm3": float(truth.get("volume_mm3") or 0.0),
                         "n_truth_in_view": sum(1 for d in rep.get("defects", {}).get("truth", [])
                                                if d.get("type") == kind)}
        if not any(r["n_detected"] or r["truth_volume_mm3"] for r in rows.values()):
            continue
        g_det = rows["after"]["detected_volume_mm3"] - rows["before"]["detected_volume_mm3"]
        g_tru = rows["after"]["truth_volume_mm3"] - rows["before"]["truth_volume_mm3"]
        dif = difference.get(kind) or {}
        g_dif = dif.get("volume_mm3")
        g = g_det if g_dif is None else float(g_dif)
        rel = lambda x, ref=g_tru: (x / ref - 1.0) if ref > 0 else None  # noqa: E731
        g_ovl = dif.get("truth_overlap_mm3")
        out[kind] = {**{f"{t}_{k}": v for t, r in rows.items() for k, v in r.items()},
                     "growth_detected_mm3": g_det, "growth_truth_mm3": g_tru,
                     "growth_detected_rel_error": rel(g_det),
                     "growth_difference_mm3": g_dif,
                     "growth_difference": {k: v for k, v in dif.items() if k != "volume_mm3"} or None,
                     "growth_truth_overlap_mm3": g_ovl,
                     "growth_mm3": g, "growth_method": "difference" if g_dif is not None else "detected",
                     # like with like: the difference against the truth in the region both
                     # scans saw, where the run folders hold their truth
                     "growth_rel_error": rel(g, g_ovl) if g_dif is not None and g_ovl else rel(g),
                     "found": rows["after"]["n_detected"] > rows["before"]["n_detected"] or g_det > 0}
    return out


def _change_figure(before: np.ndarray, after_reg: np.ndarray, appeared: Mapping[str, np.ndarray],
                   path: Path, vs_um: float) -> Path:
    from recon.figures import _fig, _save

    masks = [m for m in appeared.values() if m is not None and m.any()]
    if masks:  # the slice with the most appeared damage
        tot = np.sum([m.sum(axis=(1, 2)) for m in masks], axis=0)
        z = int(np.argmax(tot))
    else:
        z = before.shape[0] // 2
    lo, hi = np.percentile(before[z], [1, 99])
    fig = _fig((12.0, 4.2))
    ext = (0, before.shape[2] * vs_um / 1000, 0, before.shape[1] * vs_um / 1000)
    for i, (img, title) in enumerate(((before[z], "before"), (after_reg[z], "after (registered)"),
                                      (after_reg[z] - before[z], "after - before"))):
        ax = fig.add_subplot(1, 3, i + 1)
        kw = {"cmap": "gray", "vmin": lo, "vmax": hi} if i < 2 else {"cmap": "coolwarm"}
        if i == 2:
            d = float(np.percentile(np.abs(img), 99.5)) or 1.0
            kw.update(vmin=-d, vmax=d)
        ax.imshow(img, origin="lower", extent=ext, **kw)
        if i > 0:
            for k, (name, m) in enumerate(appeared.items()):
                if m is not None and m[z].any():
                    ax.contour(m[z].astype(float), levels=[0.5], colors=[f"C{k + 1}"],
                               linewidths=0.8, origin="lower", extent=ext)
        ax.set_title(f"{title}, z index {z}", fontsize=9)
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("y (mm)")
    fig.suptitle("Change map (contours: appeared " + ", ".join(appeared) + ")", fontsize=9)
    return _save(fig, path)


def compare_runs(before_dir: str | Path, after_dir: str | Path, out_dir: str | Path, *,
                 levels=(4, 2), tol_vox: float = 5.0, min_voxels: int = 8) -> dict[str, Any]:
    """Register, map changes and measure damage growth; see the module docstring."""
    from recon.registration import apply_rigid, change_map, register_rigid
    from twin.report import _table, write_report

    before, after = _load_run(Path(before_dir)), _load_run(Path(after_dir))
    if abs(before["voxel_size_um"] / after["voxel_size_um"] - 1) > 1e-6:
        raise XrmInputError(f"before and after have different voxels ({float(before['voxel_size_um']):.4g} "
                            f"and {float(after['voxel_size_um']):.4g} um): scan both at the same settings")
    if before["volume"].shape != after["volume"].shape:
        raise XrmInputError(f"before {before['volume'].shape} and after {after['volume'].shape} "
                            "volumes differ in shape: reconstruct both on the same grid")
    vs = before["voxel_size_um"]
    reg = register_rigid(before["volume"], after["volume"], vs, levels=levels, refine_translation=True)
    after_reg = apply_rigid(after["volume"], reg)
    out: dict[str, Any] = {"before": str(before["folder"]), "after": str(after["folder"]),
                           "voxel_size_um": vs,
                           "registration": {k: reg[k] for k in ("rotation_deg", "translation_vox",
                                                                "translation_mm", "ncc", "levels")}}
    appeared = {}
    if before["labels"] is not None and after["labels"] is not None:
        lab_a = apply_rigid(after["labels"].astype(np.float32), reg, order=0).astype(np.int32)
        name_to_b = {v: k for k, v in before["names"].items()}
        # after labels renumbered onto the before numbering, by component name
        relabel = np.zeros(int(max(after["names"], default=0)) + 1, np.int32)
        for k, v in after["names"].items():
            relabel[k] = name_to_b.get(v, 0)
        lab_a = relabel[np.clip(lab_a, 0, len(relabel) - 1)]
        names = {k: v for k, v in before["names"].items() if k > 0}
        cm = change_map(before["volume"], after_reg, vs, labels_before=before["labels"],
                        labels_after=lab_a, names=names, min_voxels=min_voxels)
        out["change_map"] = {"rms_difference_per_mm": cm["rms_difference"],
                             "components": {n: {k: v for k, v in d.items() if not k.endswith("_mask")}
                                            for n, d in cm["labels"].items()}}
        appeared = {n: cm["labels"][n]["appeared_mask"] for n in DAMAGE_TYPES if n in cm["labels"]}
    out["damage_growth"] = damage_growth(before["report"], after["report"],
                                         difference_growth(before, after, reg))
    shape = before["volume"].shape
    det_b = [d for d in before["report"].get("defects", {}).get("detected", [])]
    new = []
    for d in after["report"].get("defects", {}).get("detected", []):
        x_b = _to_before_mm(d["center_mm"], after, before, reg, shape)
        near = [np.linalg.norm(np.asarray(b["center_mm"]) - x_b) for b in det_b if b.get("type") == d.get("type")]
        if not near or min(near) * 1000.0 / vs > tol_vox:
            new.append({**{k: d[k] for k in ("type", "size_um", "volume_mm3") if k in d},
                        "center_mm_before_frame": x_b.tolist()})
    out["new_detections"] = new
    out_dir = Path(out_dir)
    figures = [("Change map", _change_figure(before["volume"], after_reg, appeared,
                                             out_dir / "figures" / "change_map.png", vs))]
    out["scenario"] = f"compare: {before['report'].get('scenario')} -> {after['report'].get('scenario')}"
    pct = lambda x: "" if x is None else f"{100 * x:+.1f} %"  # noqa: E731
    rows = [[k, v.get("before_detected_volume_mm3"), v.get("after_detected_volume_mm3"),
             v.get("growth_detected_mm3"), pct(v.get("growth_detected_rel_error")),
             v.get("growth_difference_mm3"), v.get("growth_truth_mm3"),
             v.get("growth_truth_overlap_mm3"), pct(v.get("growth_rel_error"))]
            for k, v in out["damage_growth"].items()]
    reg_txt = (f"<p>Rotation (x, y, z) {np.round(reg['rotation_deg'], 3).tolist()} deg, translation "
               f"{np.round(reg['translation_mm'], 4).tolist()} mm, NCC {reg['ncc']:.4f}.</p>")
    sections = [("Registration", reg_txt)]
    if rows:
        sections.append(("Damage growth", _table(rows, ["defect", "detected before (mm3)",
                                                        "detected after (mm3)", "detected growth (mm3)",
                                                        "detected vs truth", "growth by difference (mm3)",
                                                        "truth growth (mm3)", "truth growth, overlap (mm3)",
                                                        "growth vs truth"])))
    write_report(out_dir, out, figures, sections=sections)
    return out
