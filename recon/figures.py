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
           "detectability_table_figure", "mtf_figure", "components_3d_figure",
           "thickness_histogram", "thickness_map", "detectability_table"]


def _fig(figsize=(6.0, 4.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    """Write the figure as PNG atomically (temporary name, then rename)."""
    from twin.atomic import atomic_path

    p = Path(path)
    fig.tight_layout()
    with atomic_path(p) as tmp:
        fig.savefig(tmp, format="png")
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
        t = d.get("task", d)
        size = t.get("size_um")
        name = f"{t.get('kind', t.get('type', '?'))} {size:.3g} um" if size else str(t.get("kind"))
        if t.get("thickness_um"):
            name += f" x {t['thickness_um']:.3g} um"
        rows.append(["d' NPW", name, f"{d['dprime_npw']:.2f}", f"AUC {d['auc_npw']:.3f}"])
    if not rows:
        raise XrmInputError("detectability_table: nothing to show (no CNR pair, no task)")
    fig = _fig((7.0, 0.5 + 0.22 * len(rows)))
    ax = fig.add_subplot(111)
    ax.axis("off")
    tab = ax.table(cellText=rows, colLabels=["quantity", "what", "value", ""], loc="upper center",
                   cellLoc="left", colWidths=[0.13, 0.55, 0.12, 0.2])
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


def _shade(verts: np.ndarray, faces: np.ndarray, rgb, light=(0.4, -0.5, 0.77)) -> np.ndarray:
    """Lambertian face colours (RGBA, N x 4) for a mesh lit from ``light`` (x, y, z)."""
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    lv = np.asarray(light, float) / np.linalg.norm(light)
    k = 0.35 + 0.65 * np.abs(n @ lv)
    out = np.empty((len(faces), 4))
    out[:, :3] = np.clip(np.outer(k, rgb), 0, 1)
    out[:, 3] = 1.0
    return out


def components_3d_figure(labels: np.ndarray, names: Mapping[int, str], voxel_size_um: float, path,
                         *, origin_mm=None, max_faces: int = 100_000, max_components: int = 8,
                         title: str = "Segmented components") -> Path:
    """A 3-D rendering of each segmented component on its own (the paper's Fig. 6a: every
    component digitally isolated from the assembly), one panel per component.

    Surfaces are marching-cubes meshes (skimage) of each component's mask, with a step size
    chosen so all panels together hold at most about ``max_faces`` triangles; Lambertian
    shading, axes in mm. Components are taken largest first, at most ``max_components``.

    Parameters
    ----------
    labels : ndarray of int, shape (nz, ny, nx)
    names : dict of int to str
        Label -> component name (0 is background and never drawn).
    voxel_size_um : float
    path : path-like
        PNG to write.
    origin_mm : (x, y, z), optional
        Centre of voxel [0, 0, 0] (axes then show sample coordinates).
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage import measure

    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise XrmInputError(f"labels must be 3-D, got shape {lab.shape}")
    counts = {int(k): int(np.count_nonzero(lab == k)) for k in names if int(k) > 0}
    keep = sorted((k for k, c in counts.items() if c >= 8), key=lambda k: -counts[k])[:max_components]
    if not keep:
        raise XrmInputError("components_3d_figure: no component with at least 8 voxels")
    vs_mm = float(voxel_size_um) / 1000.0
    origin = np.zeros(3) if origin_mm is None else np.asarray(origin_mm, float)
    ncol = min(4, len(keep))
    nrow = int(np.ceil(len(keep) / ncol))
    fig = _fig((3.2 * ncol, 3.0 * nrow + 0.4))
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    budget = max_faces / len(keep)
    steps = []
    for i, k in enumerate(keep):
        ax = fig.add_subplot(nrow, ncol, i + 1, projection="3d")
        m = lab == k
        # each panel gets an equal share of the triangles: block-average the mask by `step`
        # (a smoother surface than marching-cubes steps) where its boundary is too large
        faces_est = sum(int(np.count_nonzero(np.diff(m, axis=a))) for a in range(3))
        step = max(1, int(np.ceil(np.sqrt(2.0 * faces_est / budget))))
        mf = np.pad(m, 1).astype(np.float32)
        if step > 1:
            pad = [(0, (-n) % step) for n in mf.shape]
            mf = np.pad(mf, pad)
            nz, ny, nx = (n // step for n in mf.shape)
            mf = mf.reshape(nz, step, ny, step, nx, step).mean(axis=(1, 3, 5))
            mf = np.pad(mf, 1)
        # a part thinner than half a block (a separator, foam struts) averages below 0.5
        # everywhere: draw it at half its largest block fill instead (full resolution would
        # be millions of triangles, the cost this budget exists to avoid)
        level = min(0.5, 0.5 * float(mf.max()))
        steps.append(step)
        sp = vs_mm * step
        verts, faces, _, _ = measure.marching_cubes(mf, level, spacing=(sp,) * 3)
        # back to sample coordinates: index 0 of the padded grid is one (block) voxel out
        shift = (step - 1) / 2.0 * vs_mm - (sp if step > 1 else 0.0) - vs_mm
        verts = verts + shift
        xyz = verts[:, ::-1] + origin  # (z, y, x) -> (x, y, z) mm
        col = Poly3DCollection(xyz[faces], facecolors=_shade(xyz, faces, cmap(i % 10)[:3]),
                               edgecolor="none")
        ax.add_collection3d(col)
        lo, hi = xyz.min(0), xyz.max(0)
        half = 0.5 * float((hi - lo).max())
        mid = 0.5 * (lo + hi)
        ax.set_xlim(mid[0] - half, mid[0] + half)
        ax.set_ylim(mid[1] - half, mid[1] + half)
        ax.set_zlim(mid[2] - half, mid[2] + half)
        ax.view_init(elev=22, azim=-60)
        ax.set_title(f"{names[k]}\n{counts[k] * vs_mm ** 3:.3g} mm3", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("x (mm)", fontsize=6)
        ax.set_ylabel("y (mm)", fontsize=6)
        ax.set_zlabel("z (mm)", fontsize=6)
    fig.suptitle(f"{title} (marching cubes; blocks of {min(steps)}-{max(steps)} voxels)", fontsize=9)
    return _save(fig, path)


# short names (same functions)
thickness_histogram = thickness_histogram_figure
thickness_map = thickness_map_figure
detectability_table = detectability_table_figure
