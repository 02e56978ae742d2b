"""Benchmark: FDK/FBP throughput vs scikit-image ``iradon`` on the same 2-D job.

Prints, for a parallel-beam 2-D job (N x N image from V views):
* scikit-image ``iradon`` time (filter + backprojection, linear interpolation),
* our FBP of the same single sinogram (``recon.fbp.fbp_slice``),
* our FBP per slice when a stack of slices is reconstructed at once (how a volume is done),
and the ratio iradon / ours and giga-voxel-updates per second (N^2 V / t).
Then the time and GVU/s of a cone-beam FDK of an N^3 volume.

Usage::

    python bench/bench_recon.py [--size 256] [--views 360] [--slices 16] [--fdk-size 128]
                                [--arch cpu|cuda|auto] [--repeat 3]

Timings exclude Taichi's one-off kernel compilation (a warm-up call runs first) and include
filtering. The machine, thread count and load average are printed with the numbers, since a
shared machine's load changes them.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=360)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--fdk-size", type=int, default=128)
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from skimage.transform import iradon

    from recon.fbp import fbp, fbp_slice, slice_geometry
    from recon.fdk import fdk
    from twin.geometry import ScanGeometry
    from twin.runtime import init_taichi

    arch = init_taichi(args.arch)
    n, v = args.size, args.views
    angles = np.arange(v) * 180.0 / v
    rng = np.random.default_rng(0)
    # a sinogram of a few discs (content does not change the timing)
    sino = np.abs(rng.standard_normal((v, n))).astype(np.float32)

    iradon(sino.T, theta=angles, filter_name="ramp", circle=True)
    t_sk = best_time(lambda: iradon(sino.T, theta=angles, filter_name="ramp", circle=True), args.repeat)
    fbp_slice(sino, angles, pixel_um=1000.0, arch=arch)
    t_ours = best_time(lambda: fbp_slice(sino, angles, pixel_um=1000.0, arch=arch), args.repeat)

    s = args.slices
    stack = np.repeat(sino[:, None, :], s, axis=1)
    g = slice_geometry(n, angles, 1000.0)
    import dataclasses

    g = dataclasses.replace(g, rows=s)
    fbp(stack, g, angles_deg=angles, vol_shape=(s, n, n), voxel_size_um=1000.0, arch=arch)
    t_stack = best_time(lambda: fbp(stack, g, angles_deg=angles, vol_shape=(s, n, n), voxel_size_um=1000.0,
                                    arch=arch), args.repeat) / s

    m = args.fdk_size
    gc = ScanGeometry(source_object_mm=20.0, object_detector_mm=60.0, objective="flat-panel", pixel_um=100.0,
                      cols=m, rows=m, n_views=v)
    proj = np.abs(rng.standard_normal((v, m, m))).astype(np.float32)
    fdk(proj, gc, vol_shape=(8, m, m), arch=arch)  # warm-up / compile
    t_fdk = best_time(lambda: fdk(proj, gc, arch=arch), max(1, args.repeat - 2))

    upd2 = n * n * v
    res = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, taichi arch {arch}",
        "job_2d": f"{n}x{n} from {v} views (parallel)",
        "iradon_s": t_sk, "fbp_slice_s": t_ours, "fbp_per_slice_in_stack_s": t_stack,
        "ratio_single": t_sk / t_ours, "ratio_per_slice": t_sk / t_stack,
        "gvups_iradon": upd2 / t_sk / 1e9, "gvups_single": upd2 / t_ours / 1e9,
        "gvups_stack": upd2 / t_stack / 1e9,
        "fdk_job": f"{m}^3 from {v} x {m}^2 (cone)", "fdk_s": t_fdk, "gvups_fdk": m ** 3 * v / t_fdk / 1e9,
    }
    print(f"machine: {res['machine']}")
    print(f"2-D job {res['job_2d']}:")
    print(f"  skimage iradon           {t_sk * 1e3:9.1f} ms   {res['gvups_iradon']:.3f} GVU/s")
    print(f"  ours, one slice          {t_ours * 1e3:9.1f} ms   {res['gvups_single']:.3f} GVU/s   "
          f"x{res['ratio_single']:.2f} vs iradon")
    print(f"  ours, per slice of {s:3d}   {t_stack * 1e3:9.1f} ms   {res['gvups_stack']:.3f} GVU/s   "
          f"x{res['ratio_per_slice']:.2f} vs iradon")
    print(f"FDK {res['fdk_job']}: {t_fdk:.2f} s, {res['gvups_fdk']:.3f} GVU/s")
    return res


if __name__ == "__main__":
    main()
