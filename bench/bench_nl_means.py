"""Non-local means, the paper's kernel 17 and patch 5: recon.nl_means (Taichi) vs scikit-image.

Run:  python bench/bench_nl_means.py [--n 256 1024] [--slices 8] [--arch cpu|cuda] [--json OUT]

A disc of unit contrast with Gaussian noise (sigma 0.2, h = 0.5 sigma) in ``--slices`` slices of
n^2. scikit-image's ``denoise_nl_means(fast_mode=True)`` runs slice by slice on every host
thread (:func:`recon.denoise.nl_means`, backend "skimage", the CPU default); the Taichi kernels
on ``--arch`` (backend "taichi", the CUDA default). Best of ``--repeat`` after a warm-up that
compiles the kernels; the largest difference between the two outputs is printed beside the
times (float rounding: scikit-image sums in float32 integral images).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.atomic import write_text_atomic  # noqa: E402


def slices(n: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    y, x = np.ogrid[:n, :n]
    disc = ((x - n / 2) ** 2 + (y - n / 2) ** 2 < (0.3 * n) ** 2).astype(np.float32)
    return np.stack([disc + 0.2 * rng.standard_normal((n, n), dtype=np.float32) for _ in range(count)])


def best_of(fn, repeat: int) -> tuple[float, np.ndarray]:
    out, best = None, float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--arch", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    a = ap.parse_args(argv)
    import skimage

    from recon.denoise import nl_means
    from twin.runtime import host_threads, init_taichi

    init_taichi(a.arch)
    threads = host_threads()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  "
          f"{platform.processor() or platform.machine()}  cpus={os.cpu_count()} threads={threads}  "
          f"scikit-image {skimage.__version__}  Taichi on {a.arch}")
    print("| slices | scikit-image, threads (s) | Taichi (s) | Taichi vs scikit-image | max abs diff |")
    print("|---|---|---|---|---|")
    kw = dict(kernel_size=17, smoothing=0.5, patch_size=5, sigma=0.2)
    rows = []
    for n in a.n:
        vol = slices(n, a.slices)
        nl_means(vol[:1, :64, :64], backend="taichi", **kw)  # compile the kernels
        sk_s, sk = best_of(lambda: nl_means(vol, backend="skimage", **kw), a.repeat)
        ti_s, ti_out = best_of(lambda: nl_means(vol, backend="taichi", **kw), a.repeat)
        row = {"n": n, "slices": a.slices, "skimage_s": sk_s, "taichi_s": ti_s, "arch": a.arch,
               "taichi_vs_skimage": sk_s / ti_s, "max_abs_diff": float(np.abs(sk - ti_out).max())}
        rows.append(row)
        print(f"| {a.slices} x {n}^2 | {sk_s:.2f} | {ti_s:.2f} | {row['taichi_vs_skimage']:.2f}x | "
              f"{row['max_abs_diff']:.1e} |", flush=True)
    if a.json:
        import json

        write_text_atomic(a.json, json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                              "machine": platform.platform(), "cpus": os.cpu_count(),
                                              "threads": threads, "skimage": skimage.__version__,
                                              "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
