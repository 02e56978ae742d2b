"""Benchmarks of the battery phantoms (not part of the test run).

    python bench/bench_phantoms.py                  # 3.6 um 1024^3 VOI of the AAA cell
    python bench/bench_phantoms.py --threads 2      # limit Taichi to 2 threads (the issue's 2 cores)
    python bench/bench_phantoms.py --calibrate-foam # re-measure the foam calibration table
    python bench/bench_phantoms.py --figures        # docs/figures/phantom_*.png

Reports wall time, peak resident memory (ru_maxrss) and whether two runs with the same seed give
identical grids (SHA-256 of the label array).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import time

import numpy as np


def bench_voi(threads: int, n: int, repeat: int) -> dict:
    from twin.runtime import init_taichi

    init_taichi("cpu", cpu_threads=threads)
    import phantoms

    ph = phantoms.build("nimh_aaa", {"cycles": 120}, seed=1)
    size = n * 3.6 / 1000.0
    out = {"kind": "nimh_aaa", "cycles": 120, "voxel_um": 3.6, "shape": [n, n, n],
           "center_mm": [2.5, 0.0, 10.0], "threads": threads, "runs": []}
    digests = []
    for _ in range(repeat):
        t = time.perf_counter()
        c0 = resource.getrusage(resource.RUSAGE_SELF)
        g = ph.rasterize(3.6, (2.5, 0.0, 10.0), (size, size, size))
        dt = time.perf_counter() - t
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        digests.append(hashlib.sha256(g.labels.data).hexdigest())
        counts = np.zeros(len(ph.component_names), np.int64)
        for plane in g.labels:  # per plane: bincount would cast 1 G voxels to int64
            counts += np.bincount(plane.ravel(), minlength=len(counts))
        out["runs"].append({"wall_s": round(dt, 2), "cpu_s": round(cpu, 2),
                            "load_avg_1min": round(os.getloadavg()[0], 1)})
        del g
    out["label_voxels"] = {n_: int(c) for n_, c in zip(ph.component_names, counts) if c}
    out["identical"] = len(set(digests)) == 1
    out["sha256"] = digests[0]
    out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    out["note"] = "peak_rss_gib includes the Python/Taichi runtime and the returned 1 GiB grid"
    out["machine"] = f"{platform.node()} {platform.processor() or platform.machine()}, " \
                     f"{os.cpu_count()} CPUs"
    out["date_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    return out


def calibrate_foam(seeds: int, n: int) -> list:
    """Measured/model ratios of the foam generator over bead spacings (paper-like request)."""
    from phantoms import foam as F
    from phantoms.grid import GridSpec

    mean, sd = 35.88, 7.66
    rows = []
    for beta in (0.0, 0.35, 0.6, 0.8, 1.0):
        k = (mean / sd) ** 2
        th = sd ** 2 / mean
        sv = 4000 / (th * (k - 1))
        spec = F.FoamSpec(mean, sd, sv, F.RHO * mean, F.FOAM_DEFAULTS["jitter"], k - 2, th,
                          beta, 0.05)
        r = []
        for seed in range(seeds):
            m = F.rasterize_foam(spec, GridSpec(1.5, (0, 0, 0), (n, n, n)), seed)
            q = F.measure_foam(m, 1.5)
            r.append((q["thickness_mean_um"] / mean, q["thickness_std_um"] / sd,
                      q["surface_to_volume_per_mm"] / sv))
        r = np.mean(r, 0)
        rows.append([beta, *np.round(r, 4).tolist()])
        print(rows[-1], flush=True)
    return rows


def _show(ax, ph, labels2d, extent, title, present):
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    n = len(ph.component_names)
    cmap = mcolors.ListedColormap(plt.cm.tab20(np.linspace(0, 1, 20))[:n] if n <= 20 else
                                  plt.cm.gist_ncar(np.linspace(0, 1, n)))
    cmap.colors[0] = (1, 1, 1, 1) if hasattr(cmap.colors, "__setitem__") else cmap.colors[0]
    ax.imshow(labels2d, origin="lower", extent=extent, cmap=cmap, vmin=-0.5, vmax=n - 0.5,
              interpolation="nearest", aspect="equal")
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    present.update(np.unique(labels2d).tolist())


def _legend(fig, ph, present):
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    n = len(ph.component_names)
    cols = plt.cm.tab20(np.linspace(0, 1, 20))[:n]
    handles = [mpatches.Patch(color=(1, 1, 1, 1) if i == 0 else cols[i], ec="k", lw=0.3,
                              label=f"{i} {ph.component_names[i]}") for i in sorted(present)]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=6, frameon=False)


def _ext(g, a, b):
    lo, hi = g.box_mm
    return [lo[a], hi[a], lo[b], hi[b]]


def figures(out_dir="docs/figures") -> list[str]:
    """Orthogonal slices of each cell, whole cell and zoom VOI (like the paper's Figs. 1, 3-5, 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import phantoms

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    # ---- coin
    ph = phantoms.build("coin_na_ion", seed=0)
    g = ph.rasterize(25.0)
    z = ph.z + ph.offset_mm[2]
    fig, axs = plt.subplots(2, 3, figsize=(11, 7.5))
    pres: set = set()
    kz = int(round(((z[1] + z[2]) / 2 - g.origin_mm[2]) / 0.025))
    ky = g.labels.shape[1] // 2
    _show(axs[0, 0], ph, g.labels[kz], _ext(g, 0, 1), f"XY at z = {(z[1] + z[2]) / 2:.2f} mm (cathode, 25 um)", pres)
    zs = 2.3 + ph.offset_mm[2]
    _show(axs[0, 1], ph, g.labels[int(round((zs - g.origin_mm[2]) / 0.025))], _ext(g, 0, 1),
          f"XY at z = {zs:.2f} mm (wave spring)", pres)
    _show(axs[0, 2], ph, g.labels[:, ky, :], _ext(g, 0, 2), "XZ at y = 0 (25 um)", pres)
    axs[0, 2].set_aspect(2.0)
    sx, sy = ph.short_xy
    f = ph.rasterize(4.0, (sx, sy, z[3]), (1.2, 0.02, 0.7))
    _show(axs[1, 0], ph, f.labels[:, f.labels.shape[1] // 2, :], _ext(f, 0, 2),
          "XZ through the short (4 um): Na through both separators", pres)
    f2 = ph.rasterize(1.0, (0.0, 0.0, z[2] + 0.02), (0.16, 0.002, 0.2))
    _show(axs[1, 1], ph, f2.labels[:, 1, :], _ext(f2, 0, 2), "XZ 1 um: cathode particles, GF/A fibres", pres)
    f3 = ph.rasterize(1.0, (0.0, 0.0, (z[2] + z[3]) / 2), (0.4, 0.4, 0.002))
    _show(axs[1, 2], ph, f3.labels[1], _ext(f3, 0, 1), "XY 1 um in separator 1: glass fibres", pres)
    _legend(fig, ph, pres)
    fig.suptitle("CR2032 Na-ion coin cell phantom (seed 0; misalignment 0.4 mm, short, 4 gas voids)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    paths.append(os.path.join(out_dir, "phantom_coin.png"))
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)
    # ---- pouch
    ph = phantoms.build("pouch_lfp", seed=0)
    z = ph.z + ph.offset_mm[2]
    fig, axs = plt.subplots(2, 2, figsize=(10, 8))
    pres = set()
    f = ph.rasterize(3.7, (0.0, 0.0, 0.0), (1.0, 0.004, z[-1] - z[0] + 0.01))
    _show(axs[0, 0], ph, f.labels[:, 0, :], _ext(f, 0, 2), "XZ cross-section, 3.7 um (paper Fig. 3)", pres)
    for ax, (name, zz) in zip([axs[0, 1], axs[1, 0], axs[1, 1]],
                              [("cathode: voids + cracks", (z[4] + z[5]) / 2),
                               ("separator: glass fibres", (z[5] + z[6]) / 2),
                               ("anode: graphite particles", (z[6] + z[7]) / 2)]):
        s_ = ph.rasterize(2.0, (0.0, 0.0, zz), (1.0, 1.0, 0.002))
        _show(ax, ph, s_.labels[0], _ext(s_, 0, 1), f"XY at z = {zz * 1000:.0f} um, 2 um: {name}", pres)
    _legend(fig, ph, pres)
    fig.suptitle("LFP/graphite pouch phantom (4 mm coupon, stack 390 um)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    paths.append(os.path.join(out_dir, "phantom_pouch.png"))
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)
    # ---- NiMH
    ph = phantoms.build("nimh_aaa", {"cycles": 120}, seed=1)
    g = ph.rasterize(54.0)
    fig, axs = plt.subplots(2, 3, figsize=(12, 9))
    pres = set()
    kz = int(round((0.0 - g.origin_mm[2]) / 0.054))
    _show(axs[0, 0], ph, g.labels[kz], _ext(g, 0, 1), "XY at z = 0 (54 um): spiral winding", pres)
    _show(axs[0, 1], ph, g.labels[:, g.labels.shape[1] // 2, :], _ext(g, 0, 2), "XZ at y = 0 (54 um)", pres)
    t = ph.rasterize(15.0, (0.0, 0.0, 20.25), (10.6, 0.03, 4.2))
    _show(axs[0, 2], ph, t.labels[:, 1, :], _ext(t, 0, 2), "XZ top, 15 um: cap, vent valve, exhaust, tab", pres)
    d = ph.damage()
    th, zc = d["crack"]["theta"][3], d["crack"]["z_mm"][3]
    r = ph.spiral().radius_at(th, np.mean(ph.geometry["t_pos"]))
    c = (r * np.cos(th), r * np.sin(th), zc)
    v = ph.rasterize(3.6, (2.5, 0.0, 10.0), (3.7, 3.7, 0.004))
    _show(axs[1, 0], ph, v.labels[0], _ext(v, 0, 1), "zoom VOI XY, 3.6 um at (2.5, 0, 10) mm", pres)
    for ax, cyc in zip(axs[1, 1:], (0, 120)):
        pc = phantoms.build("nimh_aaa", {"cycles": cyc}, seed=1)
        w = pc.rasterize(3.6, (c[0], c[1], zc), (1.2, 1.2, 0.004))
        _show(ax, pc, w.labels[0], _ext(w, 0, 1), f"XY 3.6 um at a crack site, {cyc} cycles", pres)
    _legend(fig, ph, pres)
    fig.suptitle("AAA NiMH (HR03) phantom: whole cell, cap, zoom VOI, before/after 120 cycles")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    paths.append(os.path.join(out_dir, "phantom_nimh.png"))
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=1024, help="VOI edge in voxels")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--calibrate-foam", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--figures", action="store_true")
    a = ap.parse_args(argv)
    if a.figures:
        print("\n".join(figures()))
        return 0
    if a.calibrate_foam:
        print(json.dumps(calibrate_foam(a.seeds, 400)))
        return 0
    print(json.dumps(bench_voi(a.threads, a.n, a.repeat), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
