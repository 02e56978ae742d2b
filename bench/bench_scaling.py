"""Benchmark (issue 10, must-show 3): how time and memory scale with the size of the job.

Three curves, each timed as the best of ``--repeat`` runs after a warm-up (Taichi compiles a
kernel once per shape class):

* **FDK against volume size**: N^3 voxels from a fixed number of views of N^2 pixels (cone beam).
  Backprojection is O(N^3 V), filtering O(V N^2 log N): the time should grow as N^3 at most.
* **FDK against views**: the same N^3 volume from V views: O(V).
* **Label-volume projection against size**: N^3 labels onto N^2 pixels (twin projector,
  ray-samples grow as N^3 per view).

For each curve: the log-log slope of time against the size variable over the curve (fitted
on all points; the smallest job carries fixed overheads, so the slope at the top end is also
given), and the time per unit of work (``t / (N^3 V)``) at each point.

Memory: the input (projections, labels) plus the peak of the Python-tracked allocations made
during one FDK or one projection (``tracemalloc``; NumPy reports its buffers to it, Taichi's
CPU kernels work on those buffers in place), against the arrays the stage must hold: FDK the
projections and the volume; projection the label volume and the path-length output.

Usage::

    python bench/bench_scaling.py [--sizes 64 96 128 160 192] [--views 64 128 256 512]
                                  [--fixed-views 128] [--fixed-size 128] [--repeat 2]
                                  [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc

import numpy as np


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up (kernel compilation, caches)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def peak_bytes(fn) -> int:
    """Peak traced allocation during ``fn()`` above what was allocated before it."""
    from recon.slabs import forked_peak_bytes

    tracemalloc.start()
    tracemalloc.reset_peak()
    forked_peak_bytes(reset=True)
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = max(tracemalloc.get_traced_memory()[1], forked_peak_bytes(reset=True))  # forked work too
    tracemalloc.stop()
    return int(peak - base)


def cone_geometry(n: int, views: int):
    from twin.geometry import ScanGeometry

    return ScanGeometry(source_object_mm=20.0, object_detector_mm=60.0, objective="flat-panel",
                        pixel_um=100.0 * 128 / n, cols=n, rows=n, n_views=views)


def fdk_job(n: int, views: int):
    from recon.fdk import fdk

    g = cone_geometry(n, views)
    proj = np.abs(np.random.default_rng(0).standard_normal((views, n, n))).astype(np.float32)
    return (lambda: fdk(proj, g, arch="cpu")), proj.nbytes, 4 * n ** 3


def projection_job(n: int, views: int):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.bench_projector import voxel_scene
    from twin.projector import grid_path_lengths

    vec, lab, lut, lower, sp = voxel_scene(n, views, n)
    out_bytes = 4 * 3 * views * n * n  # float32 path lengths per material
    return (lambda: grid_path_lengths(vec, lab, lut, 3, lower, (sp,) * 3, n, n, arch="cpu")), \
        lab.nbytes, out_bytes


def slope(x, t) -> float:
    return float(np.polyfit(np.log(x), np.log(t), 1)[0])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 160, 192])
    ap.add_argument("--views", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--fixed-views", type=int, default=128)
    ap.add_argument("--fixed-size", type=int, default=128)
    ap.add_argument("--proj-sizes", type=int, nargs="+", default=[64, 96, 128, 192, 256])
    ap.add_argument("--proj-views", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from twin.runtime import init_taichi

    init_taichi("cpu")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.node() or 'vm'} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {load:.1f}, taichi arch cpu")
    res: dict = {"load_start": load, "fdk_size": [], "fdk_views": [], "projection_size": []}

    print(f"\nFDK, N^3 from {args.fixed_views} views of N^2 (cone beam):")
    print("| N | time (s) | ns per voxel-view | input + peak traced (MiB) | projections + volume (MiB) | ratio |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        fn, pb, vb = fdk_job(n, args.fixed_views)
        t = best_time(fn, args.repeat)
        pk = pb + peak_bytes(fn)  # the projections exist before the call
        row = {"n": n, "views": args.fixed_views, "time_s": t,
               "ns_per_voxel_view": t / (n ** 3 * args.fixed_views) * 1e9, "peak_bytes": pk,
               "held_bytes": pb + vb, "peak_over_held": pk / (pb + vb)}
        res["fdk_size"].append(row)
        print(f"| {n} | {t:.3f} | {row['ns_per_voxel_view']:.3f} | {pk / 2**20:.1f} | "
              f"{(pb + vb) / 2**20:.1f} | {row['peak_over_held']:.2f} |", flush=True)
    xs = [r["n"] for r in res["fdk_size"]]
    ts = [r["time_s"] for r in res["fdk_size"]]
    res["fdk_size_slope"] = slope(xs, ts)
    res["fdk_size_slope_top"] = slope(xs[-3:], ts[-3:])
    print(f"slope of log t against log N: {res['fdk_size_slope']:.2f} over the curve, "
          f"{res['fdk_size_slope_top']:.2f} over the top three (order of the algorithm: 3)")

    m = args.fixed_size
    print(f"\nFDK, {m}^3 from V views of {m}^2:")
    print("| V | time (s) | ns per voxel-view |")
    print("|---|---|---|")
    for v in args.views:
        fn, _, _ = fdk_job(m, v)
        t = best_time(fn, args.repeat)
        row = {"n": m, "views": v, "time_s": t, "ns_per_voxel_view": t / (m ** 3 * v) * 1e9}
        res["fdk_views"].append(row)
        print(f"| {v} | {t:.3f} | {row['ns_per_voxel_view']:.3f} |", flush=True)
    xs = [r["views"] for r in res["fdk_views"]]
    ts = [r["time_s"] for r in res["fdk_views"]]
    res["fdk_views_slope"] = slope(xs, ts)
    print(f"slope of log t against log V: {res['fdk_views_slope']:.2f} (order: 1)")

    print(f"\nLabel-volume projection, N^3 labels onto N^2 pixels, {args.proj_views} views:")
    print("| N | time (s) | ns per ray-sample (N^3 per view) | input + peak traced (MiB) | labels + output (MiB) | ratio |")
    print("|---|---|---|---|---|---|")
    for n in args.proj_sizes:
        fn, lb, ob = projection_job(n, args.proj_views)
        t = best_time(fn, args.repeat)
        pk = lb + peak_bytes(fn)  # the labels exist before the call
        work = n ** 3 * args.proj_views
        row = {"n": n, "views": args.proj_views, "time_s": t, "ns_per_sample": t / work * 1e9,
               "peak_bytes": pk, "held_bytes": lb + ob, "peak_over_held": pk / (lb + ob)}
        res["projection_size"].append(row)
        print(f"| {n} | {t:.3f} | {row['ns_per_sample']:.3f} | {pk / 2**20:.1f} | "
              f"{(lb + ob) / 2**20:.1f} | {row['peak_over_held']:.2f} |", flush=True)
    xs = [r["n"] for r in res["projection_size"]]
    ts = [r["time_s"] for r in res["projection_size"]]
    res["projection_size_slope"] = slope(xs, ts)
    res["projection_size_slope_top"] = slope(xs[-3:], ts[-3:])
    print(f"slope of log t against log N: {res['projection_size_slope']:.2f} over the curve, "
          f"{res['projection_size_slope_top']:.2f} over the top three (order: 3)")
    res["load_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        from twin.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
