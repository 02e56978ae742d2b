"""The GPU checks of issues 2, 4 and 10 in one run, for a session that is lent an NVIDIA GPU.

Needs only numpy and Taichi (no SpekPy, xraydb or trimesh, which the GPU machine lacks):

1. **Agreement** (issue 2 must-show 7): exact path lengths through a 256^3 label scene (a
   cylinder, a sphere and 1 % random voxels of a third material; 8 views onto 256^2 pixels,
   2 x 2 sub-rays) and FDK of 256^3 from 360 views, each run on the CPU and on CUDA in
   separate processes (Taichi picks its backend once per process): maximum relative
   difference (goal <= 1e-4). The measure stage's kernels on the same scene's cylinder (the
   exact squared distance transform and the nearest-background features, integers, so equal;
   the local thickness in um) are compared the same way.
2. **Forward throughput** (issue 2 must-show 8, issue 10 must-show 1): ray-samples per second
   through a 1024^3 label volume onto 1024^2 pixels (goal >= 300 G/s on an H100).
3. **FDK at paper scale** (issue 4 must-show 7, issue 10 must-show 1): 1024^3 from 1601 views
   of 1024^2 (goal <= 10 s), transfers included, kernel compiled by a warm-up call first;
   again with the filtered projections held in float16 (``recon.filtered_dtype``: half the
   bytes per bilinear tap), and the two volumes' largest difference.
4. **Non-local means at paper scale** (issue 10 must-show 1: the nimh-zoom denoiser): 1024
   slices of 1024^2 with the paper's kernel 17 and patch 5 in the Taichi kernels, transfers
   included, against scikit-image on 16 slices with every core of the machine (its
   agreement with scikit-image is checked on one slice; CPU vs CUDA in step 1).

Usage (on the GPU machine, with the Taichi wheel carried, see docs/benchmarks.md)::

    python bench/gpu_check.py --arch cuda --json $OUT/gpu_check.json
    python bench/gpu_check.py --arch cpu --small     # a dry run of every step, small sizes

Prints one line per step, and the JSON with every figure and the device's name.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def scene(n: int) -> np.ndarray:
    """The agreement scene: labels 0 (air), 1 (cylinder), 2 (sphere), 3 (1 % random voxels)."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:n, :n, :n]
    c = n / 2
    lab = np.zeros((n, n, n), np.uint8)
    lab[np.broadcast_to((x - c) ** 2 + (y - c) ** 2 < (0.39 * n) ** 2, lab.shape)] = 1
    lab[(x - 0.39 * n) ** 2 + (y - 0.55 * n) ** 2 + (z - c) ** 2 < (0.16 * n) ** 2] = 2
    lab[rng.random(lab.shape) < 0.01] = 3
    return lab


def _worker(arch: str, n: int, out: str) -> None:
    """One process: path lengths and FDK of the agreement scene on ``arch``."""
    sys.path.insert(0, str(ROOT))
    from recon.fdk import fdk
    from twin.geometry import ScanGeometry
    from twin.projector import grid_path_lengths
    from twin.runtime import init_taichi

    init_taichi(arch)
    lab = scene(n)
    vs_mm = 2.56 / n
    g = ScanGeometry(source_object_mm=20.0, object_detector_mm=30.0, objective="flat-panel",
                     pixel_um=20.0 * 256 / n, cols=n, rows=n, n_views=8)
    lut = np.array([-1, 0, 1, 2], np.int32)
    L, _ = grid_path_lengths(g.vectors(), lab, lut, 3, (-1.28, -1.28, -1.28), (vs_mm,) * 3, n, n,
                             arch=arch, supersample=2)
    gf = ScanGeometry(source_object_mm=20.0, object_detector_mm=60.0, objective="flat-panel",
                      pixel_um=100.0 * 128 / n, cols=n, rows=n, n_views=360 if n >= 128 else 90)
    proj = np.abs(np.random.default_rng(1).standard_normal((gf.n_views, n, n))).astype(np.float32)
    vol = fdk(proj, gf, arch=arch)
    vol_half = fdk(proj, gf, arch=arch, filtered_dtype="float16")
    # the measure stage's kernels (xrm-twin measure --arch cuda, and run's measure on a GPU)
    from recon.distance import nearest_background, squared_edt
    from recon.thickness import local_thickness_um

    solid = lab == 1
    d2 = squared_edt(solid)
    _, feat = nearest_background(solid)
    thick = local_thickness_um(solid, 10.0)
    # the reconstruct stage's denoiser (recon.denoise backend "auto" on CUDA)
    from recon.nl_means import nl_means_slices

    rng = np.random.default_rng(3)
    noisy = lab[:8].astype(np.float32) + 0.2 * rng.standard_normal((8, n, n), dtype=np.float32)
    nlm = nl_means_slices(noisy, patch_size=5, patch_distance=8, h=0.1, sigma=0.2)
    np.savez(out, path_lengths=np.asarray(L, np.float32), fdk=vol, edt_squared=d2, nearest_feature=feat,
             local_thickness_um=np.asarray(thick, np.float32), nl_means=nlm, fdk_float16=vol_half)


def agreement(n: int, arches=("cpu", "cuda")) -> dict:
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for arch in arches:
            files[arch] = os.path.join(tmp, f"{arch}.npz")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--worker", arch, "--n", str(n), "--out", files[arch]],
                           check=True)
            res[f"{arch}_wall_s"] = time.perf_counter() - t0
        a, b = (np.load(files[k]) for k in arches)
        for key in ("path_lengths", "fdk", "fdk_float16", "local_thickness_um", "nl_means"):
            scale = float(np.abs(a[key]).max())
            res[f"{key}_max_rel_diff"] = float(np.abs(a[key] - b[key]).max() / scale)
        for key in ("edt_squared", "nearest_feature"):  # integers: equal or not
            res[f"{key}_equal"] = bool(np.array_equal(a[key], b[key]))
    return res


def forward_throughput(n: int, det: int, views: int, arch: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from bench.bench_projector import bench_voxels

    return bench_voxels(n, views, det=det, arch=arch, repeats=2)


def fdk_paper_scale(n: int, views: int, arch: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from recon.fdk import fdk
    from twin.geometry import ScanGeometry

    g = ScanGeometry(source_object_mm=20.0, object_detector_mm=60.0, objective="flat-panel",
                     pixel_um=100.0 * 128 / n, cols=n, rows=n, n_views=views)
    proj = np.empty((views, n, n), np.float32)
    rng = np.random.default_rng(2)
    for v0 in range(0, views, 64):  # filled in blocks: no float64 copy of the whole stack
        proj[v0:v0 + 64] = np.abs(rng.standard_normal((min(64, views - v0), n, n), dtype=np.float32))
    res = {"job": f"{n}^3 from {views} x {n}^2"}
    vols = {}
    for dtype in ("float32", "float16"):  # how the filtered projections are held on the GPU
        fdk(proj, g, vol_shape=(1, n, n), arch=arch, filtered_dtype=dtype)  # warm-up: compile (one slice)
        t0 = time.perf_counter()
        vols[dtype] = fdk(proj, g, arch=arch, filtered_dtype=dtype)
        dt = time.perf_counter() - t0
        key = "" if dtype == "float32" else "float16_"
        res.update({f"{key}time_s": dt, f"{key}gvups": n ** 3 * views / dt / 1e9,
                    f"{key}finite": bool(np.isfinite(vols[dtype]).all())})
    scale = float(np.abs(vols["float32"]).max())
    res["float16_max_rel_diff"] = float(np.abs(vols["float16"] - vols["float32"]).max() / scale)
    return res


def nl_means_paper_scale(n: int, slices: int, arch: str) -> dict:
    """The paper's non-local means (kernel 17, patch 5) on ``slices`` slices of n^2: Taichi on
    ``arch`` against scikit-image on 16 slices threaded over every core."""
    sys.path.insert(0, str(ROOT))
    from recon.denoise import nl_means
    from recon.nl_means import nl_means_slices
    from twin.runtime import host_threads, init_taichi

    init_taichi(arch)
    rng = np.random.default_rng(4)
    y, x = np.ogrid[:n, :n]
    disc = ((x - n / 2) ** 2 + (y - n / 2) ** 2 < (0.3 * n) ** 2).astype(np.float32)
    vol = np.empty((slices, n, n), np.float32)
    for z in range(slices):
        vol[z] = disc + 0.2 * rng.standard_normal((n, n), dtype=np.float32)
    kw = dict(patch_size=5, patch_distance=8, h=0.5 * 0.2, sigma=0.2)
    nl_means_slices(vol[:1, :64, :64], **kw)  # warm-up: compile the kernels
    t0 = time.perf_counter()
    out = nl_means_slices(vol, **kw)
    dt = time.perf_counter() - t0
    few = min(16, slices)
    t1 = time.perf_counter()
    ref = nl_means(vol[:few], kernel_size=17, smoothing=0.5, sigma=0.2, backend="skimage")
    dt_sk = time.perf_counter() - t1
    return {"job": f"{slices} x {n}^2, kernel 17, patch 5", "time_s": dt,
            "pixels_per_s": slices * n * n / dt,
            "skimage_threads": host_threads(), "skimage_s_per_slice": dt_sk / few,
            "skimage_whole_job_s": dt_sk / few * slices, "speedup_vs_skimage": dt_sk / few * slices / dt,
            "max_abs_diff_vs_skimage": float(np.abs(out[:few] - ref).max()),
            "finite": bool(np.isfinite(out).all())}


def device_name(arch: str) -> str:
    if arch != "cuda":
        return "cpu"
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except Exception as exc:  # noqa: BLE001
        return f"unknown ({exc})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--small", action="store_true", help="small sizes (a dry run on a CPU)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        _worker(a.worker, a.n, a.out)
        return 0
    sizes = dict(agree=64, fwd=128, fwd_det=128, fwd_views=4, fdk=128, fdk_views=180, nlm=128, nlm_slices=32) \
        if a.small else dict(agree=256, fwd=1024, fwd_det=1024, fwd_views=8, fdk=1024, fdk_views=1601,
                             nlm=1024, nlm_slices=1024)
    res = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "arch": a.arch,
           "device": device_name(a.arch), "sizes": sizes}
    t0 = time.perf_counter()
    res["agreement"] = agreement(sizes["agree"], ("cpu", a.arch))
    print(f"agreement {sizes['agree']}^3 cpu vs {a.arch}: path lengths "
          f"{res['agreement']['path_lengths_max_rel_diff']:.2e}, FDK {res['agreement']['fdk_max_rel_diff']:.2e} "
          f"(goal <= 1e-4); measure kernels: local thickness {res['agreement']['local_thickness_um_max_rel_diff']:.2e}, "
          f"EDT equal {res['agreement']['edt_squared_equal']}, features equal {res['agreement']['nearest_feature_equal']}, "
          f"non-local means {res['agreement']['nl_means_max_rel_diff']:.2e}, "
          f"FDK float16 {res['agreement']['fdk_float16_max_rel_diff']:.2e}", flush=True)
    res["forward"] = forward_throughput(sizes["fwd"], sizes["fwd_det"], sizes["fwd_views"], a.arch)
    print(f"forward {res['forward']['volume']} onto {res['forward']['detector']}: "
          f"{res['forward']['ray_samples_per_s'] / 1e9:.1f} G ray-samples/s (goal >= 300 on an H100)", flush=True)
    res["fdk"] = fdk_paper_scale(sizes["fdk"], sizes["fdk_views"], a.arch)
    print(f"FDK {res['fdk']['job']}: {res['fdk']['time_s']:.2f} s, {res['fdk']['gvups']:.1f} GVU/s "
          f"(goal <= 10 s on an H100); float16 filtered projections {res['fdk']['float16_time_s']:.2f} s, "
          f"max rel diff {res['fdk']['float16_max_rel_diff']:.1e}", flush=True)
    res["nl_means"] = nl_means_paper_scale(sizes["nlm"], sizes["nlm_slices"], a.arch)
    r = res["nl_means"]
    print(f"non-local means {r['job']}: {r['time_s']:.2f} s, {r['speedup_vs_skimage']:.1f}x scikit-image on "
          f"{r['skimage_threads']} threads ({r['skimage_whole_job_s']:.0f} s), max |diff| {r['max_abs_diff_vs_skimage']:.1e}",
          flush=True)
    res["wall_s"] = time.perf_counter() - t0
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        sys.path.insert(0, str(ROOT))
        from twin.atomic import write_text_atomic

        write_text_atomic(a.json, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
