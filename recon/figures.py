"""Report figures (PNG) for metrology and detectability.

Thin plotting layer: every function takes already-computed results and a path, draws with
Matplotlib's object API on an Agg canvas (no global backend switch, no display needed) and
returns the written path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from twin.errors import XrmInputError

__all__ = ["thickness_histogram_figure", "thickness_map_figure", "pod_curve_figure",
           "detectability_table_figure", "mtf_figure", "thickness_histogram", "thickness_map",
           "detectability_table"]


def _fig(figsize=(6.0, 4.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p)
    return p


def thickness_histogram_figure(stats: Mapping[str, Mapping[str, Any]] | Mapping[str, Any], path, *,
                        title: str = "Local thickness") -> Path:
    """Histogram(s) of local thickness (um, sphere diameter), from :func:`thickness_stats` output
    or ``{component: thickness_stats}`` (e.g. ``measure_components``' ``thickness_um``)."""
    items = {"": stats} if "histogram" in stats else dict(stats)
    fig = _fig()
    ax = fig.add_subplot(111)
    for name, st in items.items():
        if not st or "histogram" not in st:
            continue
        e = np.asarray(st["histogram"]["edges_um"], float)
        c = np.asarray(st["histogram"]["counts"], float)
        frac = c / max(c.sum(), 1)
        lab = f"{name} mean {st['mean']:.1f} um, sd {st['std']:.1f}" if name else \
            f"mean {st['mean']:.1f} um, sd {st['std']:.1f}"
        ax.stairs(frac, e, label=lab)
    ax.set_xlabel("local thickness (sphere diameter), um")
    ax.set_ylabel("voxel fraction")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def thickness_map_figure(thickness_um: np.ndarray, path, *, axis: int = 0, index: int | None = None,
                  voxel_size_um: float | None = None, title: str = "Local thickness map") -> Path:
    """One slice of a thickness map (um) with a colour bar; ``index`` defaults to the slice with
    the most structure."""
    t = np.asarray(thickness_um)
    if t.ndim != 3:
        raise XrmInputError(f"thickness map must be 3-D, got shape {t.shape}")
    if index is None:
        other = tuple(i for i in range(3) if i != axis)
        index = int(np.argmax(np.count_nonzero(t, axis=other)))
    sl = np.take(t, index, axis=axis)
    fig = _fig((6.0, 5.0))
    ax = fig.add_subplot(111)
    extent = None
    if voxel_size_um:
        h, w = sl.shape
        extent = (0, w * voxel_size_um / 1000.0, h * voxel_size_um / 1000.0, 0)
        ax.set_xlabel("mm")
        ax.set_ylabel("mm")
    masked = np.ma.masked_where(sl <= 0, sl)
    im = ax.imshow(masked, cmap="viridis", extent=extent, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="thickness, um")
    ax.set_title(f"{title} ({'zyx'[axis]} = {index})")
    return _save(fig, path)


def pod_curve_figure(fit: Mapping[str, Any], path, *, a: Sequence[float] | None = None,
                     hit: Sequence[bool] | None = None, unit: str = "um",
                     title: str = "POD(a)") -> Path:
    """POD curve with a50, a90 and a90/95 marked, and the hit/miss data when given."""
    from recon.pod import pod_curve

    lo = min(fit["a50"] / 4, min(a) if a is not None else np.inf)
    hi = max(fit.get("a90_95", fit["a90"]) * 2 if np.isfinite(fit.get("a90_95", np.inf))
             else fit["a90"] * 3, max(a) if a is not None else 0)
    xs = np.geomspace(lo, hi, 300)
    fig = _fig()
    ax = fig.add_subplot(111)
    ax.plot(xs, pod_curve(fit, xs), "k-", label=f"POD fit ({fit.get('link', 'a-hat')})")
    if a is not None and hit is not None:
        ax.plot(a, np.asarray(hit, float), "o", ms=3, alpha=0.4, label="hit/miss")
    ax.axhline(0.9, color="0.6", lw=0.8)
    ax.axvline(fit["a90"], color="C0", ls="--", label=f"a90 = {fit['a90']:.3g} {unit}")
    if fit.get("a90_95") is not None and np.isfinite(fit["a90_95"]):
        ax.axvline(fit["a90_95"], color="C3", ls=":", label=f"a90/95 = {fit['a90_95']:.3g} {unit}")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(f"defect size a, {unit}")
    ax.set_ylabel("probability of detection")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def detectability_table_figure(cnr: Mapping[str, Any], dprime: Sequence[Mapping[str, Any]] | None,
                        path, *, title: str = "CNR and detectability") -> Path:
    """A table figure: CNR per touching pair, and d'/AUC per task."""
    rows = []
    for pair, v in cnr.items():
        val = v["cnr"] if isinstance(v, Mapping) else float(v)
        rows.append(["CNR", pair, f"{val:.2f}", ""])
    for d in dprime or ():
        t = d.get("task", {})
        name = f"{t.get('kind', t.get('type', '?'))} {t.get('size_um', '?')} um"
        rows.append(["d' NPW", name, f"{d['dprime_npw']:.2f}", f"AUC {d['auc_npw']:.3f}"])
    if not rows:
        raise XrmInputError("detectability_table: nothing to show (no CNR pair, no task)")
    fig = _fig((6.5, 0.6 + 0.32 * len(rows)))
    ax = fig.add_subplot(111)
    ax.axis("off")
    tab = ax.table(cellText=rows, colLabels=["quantity", "what", "value", ""], loc="center",
                   cellLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    ax.set_title(title)
    return _save(fig, path)


def mtf_figure(mtf: Mapping[str, Any], path, *, title: str = "MTF (edge of a cylinder)") -> Path:
    """MTF vs spatial frequency (cycles/mm) with MTF50/MTF10 marked."""
    fig = _fig()
    ax = fig.add_subplot(111)
    ax.plot(mtf["freq_per_mm"], mtf["mtf"], "k-")
    for key, lev in (("mtf50_per_mm", 0.5), ("mtf10_per_mm", 0.1)):
        if mtf.get(key):
            ax.plot([mtf[key]], [lev], "o", label=f"{key[:5].upper()} {mtf[key]:.1f} /mm")
    ax.set_xlabel("spatial frequency, cycles/mm")
    ax.set_ylabel("MTF")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


# short names (same functions)
thickness_histogram = thickness_histogram_figure
thickness_map = thickness_map_figure
detectability_table = detectability_table_figure
