"""Local thickness: recon.thickness vs PoreSpy and localthickness (speed and mean value).

Run:  python bench/bench_thickness.py [--n 128 256] [--repeat 1]

Structures: a random "foam" (Gaussian-smoothed noise thresholded at 30 % solid, sigma 4 voxels)
and a 20-voxel plate. Prints one row per (structure, size, tool): seconds and mean thickness
(diameter, voxels; peers' radii x 2). Peers are optional and skipped when absent.
PoreSpy "legacy" with every distinct EDT value is its exact mode (slow: one EDT per value);
its default "dt" mode uses integer radii (faster, biased low).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from scipy import ndimage as ndi


def structures(n: int):
    rng = np.random.default_rng(1)
    f = ndi.gaussian_filter(rng.random((n, n, n), dtype=np.float32), 4)
    foam = f > np.quantile(f, 0.7)
    plate = np.zeros((n, n, n), bool)
    plate[n // 2 - 10:n // 2 + 10] = True
    return {"foam": foam, "plate20": plate}


def run(tool: str, m: np.ndarray):
    t0 = time.perf_counter()
    if tool == "xrm-twin":
        from recon.thickness import local_thickness_um

        t = local_thickness_um(m, 1.0)
    elif tool == "porespy-dt":
        import porespy as ps

        t = 2 * ps.filters.local_thickness(m, method="dt")
    elif tool == "porespy-legacy-exact":
        import porespy as ps

        dt = ndi.distance_transform_edt(m)
        t = 2 * ps.filters.local_thickness(m, dt=dt, method="legacy", sizes=np.unique(dt[m]))
    elif tool == "localthickness":
        import localthickness as lt

        t = 2 * lt.local_thickness(m)
    else:
        raise ValueError(tool)
    return time.perf_counter() - t0, float(np.asarray(t)[m].mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--tools", nargs="+", default=["xrm-twin", "porespy-dt", "localthickness",
                                                   "porespy-legacy-exact"])
    ap.add_argument("--max-legacy-n", type=int, default=128)
    a = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  "
          f"{platform.processor() or platform.machine()}  cpus={__import__('os').cpu_count()}")
    from recon.thickness import local_thickness_um

    local_thickness_um(np.pad(np.ones((4, 4, 4), bool), 2), 1.0)  # compile the kernels once
    print(f"{'structure':10s} {'n':>5s} {'tool':24s} {'seconds':>8s} {'mean_diam_vox':>14s}")
    for n in a.n:
        for name, m in structures(n).items():
            for tool in a.tools:
                if tool == "porespy-legacy-exact" and n > a.max_legacy_n:
                    continue
                try:
                    sec, mean = run(tool, m)
                except ImportError:
                    print(f"{name:10s} {n:5d} {tool:24s} {'absent':>8s}")
                    continue
                print(f"{name:10s} {n:5d} {tool:24s} {sec:8.2f} {mean:14.3f}", flush=True)


if __name__ == "__main__":
    main()
