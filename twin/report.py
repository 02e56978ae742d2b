"""Reports: ``report.json`` (the contract) and ``report.html`` with figures.

The HTML is a single file that references ``figures/*.png`` beside it; tables are generated
from the same dict that becomes ``report.json``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from twin.atomic import atomic_path, write_text_atomic


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _mpl().close(fig)
    return path


def orthoslices_figure(volume: np.ndarray, voxel_size_um: float, origin_mm, path: Path, *,
                       title: str = "", labels: np.ndarray | None = None, unit: str = "1/mm") -> Path:
    """XY, XZ and YZ slices through the centre of a [z, y, x] volume, axes in mm."""
    plt = _mpl()
    nz, ny, nx = volume.shape
    vs = voxel_size_um / 1000.0
    ox, oy, oz = origin_mm
    ext_x = (ox - vs / 2, ox + (nx - 0.5) * vs)
    ext_y = (oy - vs / 2, oy + (ny - 0.5) * vs)
    ext_z = (oz - vs / 2, oz + (nz - 0.5) * vs)
    finite = volume[np.isfinite(volume)]
    lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0, 1))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    views = [(volume[nz // 2], ext_x + ext_y, "XY (z = centre)", "x (mm)", "y (mm)"),
             (volume[:, ny // 2, :], ext_x + ext_z, "XZ (y = centre)", "x (mm)", "z (mm)"),
             (volume[:, :, nx // 2], ext_y + ext_z, "YZ (x = centre)", "y (mm)", "z (mm)")]
    for ax, (img, ext, name, xl, yl) in zip(axes, views):
        im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=ext)
        ax.set_title(name)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    if labels is not None:
        lab = [labels[nz // 2], labels[:, ny // 2, :], labels[:, :, nx // 2]]
        cmap = plt.get_cmap("tab20").copy()
        cmap.set_under(alpha=0.0)
        for ax, l, (_, ext, *_r) in zip(axes, lab, views):
            ax.imshow(np.where(l > 0, l % 20 + 0.5, -1), cmap=cmap, vmin=0, vmax=20, alpha=0.45,
                      origin="lower", extent=ext, interpolation="nearest")
    fig.colorbar(im, ax=axes, shrink=0.8, label=unit)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def histogram_figure(volume: np.ndarray, path: Path, *, thresholds: Sequence[float] = (),
                     title: str = "Histogram of the reconstruction") -> Path:
    plt = _mpl()
    v = volume[np.isfinite(volume)].ravel()
    if v.size > 2_000_000:
        v = v[:: v.size // 2_000_000 + 1]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.hist(v, bins=256, color="0.3", log=True)
    for t in thresholds:
        ax.axvline(t, color="tab:red", lw=1)
    ax.set_xlabel("linear attenuation (1/mm)")
    ax.set_ylabel("voxels")
    ax.set_title(title)
    return save_figure(fig, path)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.4g}"
        return html.escape(str(x))

    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{fmt(x)}</td>" for x in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _flat(d: Mapping[str, Any], prefix: str = "") -> list[list[Any]]:
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            rows.extend(_flat(v, key + "."))
        elif isinstance(v, (list, tuple)) and len(v) > 8:
            rows.append([key, f"[{len(v)} values]"])
        else:
            rows.append([key, v])
    return rows


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:0.9em}th{background:#f0f0f0}img{max-width:100%;margin:0.5em 0}
h2{border-bottom:1px solid #ddd}.note{color:#a60}"""


def write_report(out_dir: Path, report: Mapping[str, Any], figures: Sequence[tuple[str, Path]], *,
                 sections: Sequence[tuple[str, str]] = ()) -> None:
    """Write ``report.json`` and ``report.html`` (atomically); ``sections`` are extra
    ``(title, html)`` blocks placed after the figures."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2, sort_keys=True, default=_json_default))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>xrm-twin: "
             f"{html.escape(str(report.get('scenario', '')))}</title><style>{CSS}</style></head><body>",
             f"<h1>xrm-twin report: {html.escape(str(report.get('scenario', '')))}</h1>"]
    if report.get("preview"):
        parts.append("<p class='note'>Preview run: coarser than the full scan. Changes: "
                     + html.escape(json.dumps(report["preview"], default=str)) + "</p>")
    for w in report.get("warnings", []):
        parts.append(f"<p class='note'>Warning: {html.escape(str(w))}</p>")
    for title, path in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{html.escape(str(Path(path).relative_to(out_dir)))}'>")
    for title, block in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>{block}")
    metrology = report.get("metrology", {})
    if metrology:
        parts.append("<h2>Metrology</h2>")
        rows = []
        for name, m in metrology.items():
            th = m.get("thickness_um") or {}
            truth = (report.get("metrology_truth") or {}).get(name, {})
            tth = truth.get("thickness_um") or {}
            rows.append([name, m.get("volume_mm3"), truth.get("volume_mm3", ""), m.get("surface_mm2"),
                         m.get("surface_to_volume_per_mm"), truth.get("surface_to_volume_per_mm", ""),
                         th.get("mean", ""), th.get("std", ""), tth.get("mean", "")])
        parts.append(_table(rows, ["component", "volume (mm3)", "truth volume", "surface (mm2)",
                                   "S/V (1/mm)", "truth S/V", "thickness mean (um)", "thickness sd (um)",
                                   "truth thickness mean"]))
    if report.get("paper"):
        parts.append("<h2>Comparison with the paper</h2>")
        parts.append(paper_html(report["paper"]))
    det = report.get("detectability", {})
    if det:
        parts.append("<h2>Detectability</h2>")
        parts.append(detectability_html(det))
    defects = report.get("defects", {})
    if defects:
        parts.append("<h2>Defects</h2>")
        parts.append(_table(_flat({k: v for k, v in defects.items() if not isinstance(v, list)}),
                            ["quantity", "value"]))
    for section in ("geometry", "source", "detector", "scan", "timing_s", "software"):
        if section in report:
            parts.append(f"<h2>{section.replace('_', ' ').title()}</h2>")
            parts.append(_table(_flat(report[section]), ["key", "value"]))
    parts.append("</body></html>")
    write_text_atomic(out_dir / "report.html", "\n".join(parts))


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:+.1f} %"


def paper_html(paper: Mapping[str, Any]) -> str:
    """Tables of ``report.json`` ``paper``: the paper's value, measured, truth, differences."""
    rows = []
    vox = paper.get("voxel_size_um")
    if vox:
        rows.append(["voxel size (um)", vox["paper"], vox["full_scale"], "", _pct(vox["full_scale_vs_paper"]),
                     f"this run: {vox['this_run']:.4g} um"])

    def add(what, e):
        rows.append([what, e.get("paper"), e.get("measured") if e.get("measured") is not None else "-",
                     e.get("truth") if e.get("truth") is not None else "-",
                     _pct(e.get("measured_vs_paper")),
                     (f"vs truth {_pct(e['measured_vs_truth'])}" if e.get("measured_vs_truth") is not None
                      else e.get("note", ""))])

    for comp, qs in (paper.get("metrology") or {}).items():
        for q, e in qs.items():
            add(f"{comp}: {q}", e)
    if paper.get("stack"):
        st = paper["stack"]
        add(f"stack {st['from']} to {st['to']}: thickness_um", st["thickness_um"])
    for comp, qs in (paper.get("particles") or {}).items():
        add(f"{comp} particles: mean_diameter_um", qs["mean_diameter_um"])
    for kind, qs in (paper.get("defects") or {}).items():
        for q, e in qs.items():
            if isinstance(e, Mapping):
                add(f"{kind}: {q}", e)
    head = (f"<p>{html.escape(str(paper.get('reference', '')))}</p>" if paper.get("reference") else "")
    return head + _table(rows, ["quantity", "paper", "measured (full scale / this run)", "truth",
                                "measured vs paper", "note"])


def detectability_html(det: Mapping[str, Any]) -> str:
    """CNR pairs, the measured blur, d' per defect task and POD summaries as tables."""
    out = []
    cnr = det.get("cnr") or {}
    if cnr:
        out.append(_table([[k, v] for k, v in sorted(cnr.items())], ["touching phases", "CNR"]))
    blur = det.get("edge_blur")
    if blur:
        out.append(f"<p>Blur of the whole chain fitted on the {html.escape(str(blur['pair']))} "
                   f"interface: Gaussian sigma {blur['sigma_um']:.3g} um ({blur['sigma_vox']:.3g} voxel).</p>")
    tasks = det.get("tasks") or []
    if tasks:
        out.append(_table([[t["kind"], t["size_um"], t.get("thickness_um", ""), t["host"],
                            t["contrast_per_mm"], t["dprime_npw"], t.get("dprime_pw") or "", t["auc_npw"]]
                           for t in tasks],
                          ["defect", "size (um)", "thickness (um)", "host", "contrast (1/mm)",
                           "d' NPW", "d' PW", "AUC"]))
    pods = det.get("pod") or {}
    if pods:
        rows = []
        for kind, p in pods.items():
            rows.append([kind, p["size_key"], p["n"], p["n_hits"],
                         p.get("recall_at_least_3_vox") if p.get("recall_at_least_3_vox") is not None else "-",
                         p.get("a50_um", "-"), p.get("a90_um", "-"), p.get("a90_95_um", "-"),
                         p.get("note", "")])
        out.append(_table(rows, ["defect", "size a", "n", "hits", "recall (a >= 3 voxels)", "a50 (um)",
                                 "a90 (um)", "a90/95 (um)", "note"]))
    return "\n".join(out)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)
