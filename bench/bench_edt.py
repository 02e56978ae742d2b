"""Exact Euclidean distance transforms: recon.distance (Taichi) vs SciPy and the `edt` package.

Run:  python bench/bench_edt.py [--n 128 256] [--repeat 2] [--json OUT]

Masks: a "foam" (Gaussian-smoothed noise thresholded at 30 % solid, sigma 4 voxels, as in
bench_thickness.py) and random voxels (90 % True: many short runs, the hard case for the
envelope passes). Each tool's result is checked equal to SciPy's squared distances before it is
timed (best of ``--repeat`` after a warm-up). ``feature`` rows time the nearest-background
index too (SciPy: ``return_indices=True``). Memory: the traced peak (tracemalloc: numpy
allocations) in bytes per voxel; recon.distance's Taichi scratch lines (at most 64 MiB on a
CPU) are not traced and are listed apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.atomic import write_text_atomic  # noqa: E402


def masks(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    f = ndi.gaussian_filter(rng.random((n, n, n), dtype=np.float32), 4)
    return {"foam": f > np.quantile(f, 0.7), "random90": rng.random((n, n, n)) < 0.9}


def tools(threads: int):
    """(transform, tool) -> (function of the mask, its result -> squared distances)."""
    from recon.distance import nearest_background, squared_edt

    same = lambda r: r  # noqa: E731
    square = lambda r: r * r  # noqa: E731
    out = {
        ("distance", "xrm-twin"): (squared_edt, same),
        ("distance", "scipy"): (ndi.distance_transform_edt, square),
        ("feature", "xrm-twin"): (nearest_background, lambda r: r[0]),
        ("feature", "scipy"): (lambda m: ndi.distance_transform_edt(m, return_indices=True),
                               lambda r: r[0] * r[0]),
    }
    try:
        import edt
        from importlib.metadata import version

        out[("distance", f"edt {version('edt')}")] = (lambda m: edt.edtsq(m, parallel=threads), same)
    except ImportError:
        pass
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    a = ap.parse_args(argv)
    from twin.runtime import host_threads

    threads = host_threads()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  "
          f"{platform.processor() or platform.machine()}  cpus={os.cpu_count()} threads={threads}")
    print("| mask | n | transform | tool | seconds | vs SciPy | traced peak (bytes/voxel) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for n in a.n:
        for name, m in masks(n).items():
            ref = np.rint(ndi.distance_transform_edt(m) ** 2).astype(np.int64)
            scipy_s = {}
            for (kind, tool), (fn, to_d2) in tools(threads).items():
                res = fn(m)  # warm-up (Taichi compiles once) and correctness
                if not np.array_equal(np.rint(to_d2(res)), ref):
                    raise SystemExit(f"{tool} {kind} on {name} {n}^3 differs from SciPy")
                del res
                best = float("inf")
                for _ in range(a.repeat):
                    t0 = time.perf_counter()
                    fn(m)
                    best = min(best, time.perf_counter() - t0)
                tracemalloc.start()
                fn(m)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                if tool == "scipy":
                    scipy_s[kind] = best
                rows.append({"mask": name, "n": n, "kind": kind, "tool": tool, "seconds": best,
                             "peak_bytes_per_voxel": peak / m.size})
            for r in rows:
                if r["mask"] == name and r["n"] == n:
                    r["vs_scipy"] = scipy_s[r["kind"]] / r["seconds"]
                    print(f"| {name} | {n} | {r['kind']} | {r['tool']} | {r['seconds']:.3f} | "
                          f"{r['vs_scipy']:.2f}x | {r['peak_bytes_per_voxel']:.1f} |", flush=True)
    print("\nrecon.distance scratch (Taichi ndarrays, not traced): at most 64 MiB per pass on a CPU, "
          "1 GiB on a GPU")
    if a.json:
        import json

        write_text_atomic(a.json, json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                      "machine": platform.platform(), "cpus": os.cpu_count(),
                                      "threads": threads, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
