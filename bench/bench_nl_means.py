"""Non-local means, the paper's kernel 17 and patch 5: recon.nl_means (Taichi) vs scikit-image.

Run:  python bench/bench_nl_means.py [--n 256 1024] [--slices 8] [--arch cpu|cuda] [--json OUT]

A disc of unit contrast with Gaussian noise (sigma 0.2, h = 0.5 sigma) in ``--slices`` slices of
n^2. scikit-image's ``denoise_nl_means(fast_mode=True)`` runs slice by slice on every host
thread (:func:`recon.denoise.nl_means`, backend "skimage", the CPU default); the Taichi kernels
on ``--arch`` (backend "taichi", the CUDA default). Best of ``--repeat`` after a warm-up that
compiles the kernels; the largest difference between the two outputs is printed beside the
times. ``--reference`` also compares both with a float64 evaluation of the definition
(:func:`direct_float64`, written here: every shift of the whole window, patch sums from float64
integral images, Schraudolph's published constants) on the first slice.
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


def _schraudolph_expf(y: np.ndarray) -> np.ndarray:
    """exp(y) as the int32 bits A*y + B read as float32 (A = 2^23/ln 2, B = 127*2^23 - 486411)."""
    a = np.float32(2.0 ** 23 / np.log(2.0))
    bits = (a * np.maximum(y, -80.0).astype(np.float32)).astype(np.int32) + np.int32(127 * 2 ** 23 - 486411)
    return bits.view(np.float32).astype(np.float64)


def direct_float64(img: np.ndarray, patch_size: int, patch_distance: int, h: float, sigma: float) -> np.ndarray:
    """Fast-mode NL-means of one 2-D slice in float64, over the whole search window.

    The patch distance of a shift is the sum of ``(P[q] - P[q + t])^2 - 2 sigma^2`` over the
    rows and columns ``(p - o, p + o]`` of the reflect-padded slice (o = patch_size // 2),
    divided by ``h^2 s^2``; patches beyond 5.0 weigh 0; the result is the weighted mean.
    """
    s = patch_size + (1 - patch_size % 2)
    o, d = s // 2, patch_distance
    pad = o + d + 1
    p = np.pad(img.astype(np.float64), pad, mode="reflect")
    ny, nx = img.shape
    rr, cc = np.arange(ny) + pad, np.arange(nx) + pad
    num, den = np.zeros((ny, nx)), np.zeros((ny, nx))
    for tr in range(-d, d + 1):
        for tc in range(-d, d + 1):
            shifted = np.roll(p, (-tr, -tc), axis=(0, 1))  # shifted[q] = p[q + t] where both exist
            c = np.cumsum(np.cumsum((p - shifted) ** 2 - 2 * sigma ** 2, 0), 1)
            window = (c[np.ix_(rr + o, cc + o)] - c[np.ix_(rr - o, cc + o)]
                      - c[np.ix_(rr + o, cc - o)] + c[np.ix_(rr - o, cc - o)])
            dist = np.maximum(window, 0) / (h * h * s * s)
            w = np.where(dist <= 5.0, _schraudolph_expf(-dist), 0.0)
            num += w * p[pad + tr:pad + tr + ny, pad + tc:pad + tc + nx]
            den += w
    return num / den


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
    ap.add_argument("--reference", action="store_true",
                    help="compare both with a float64 evaluation on the first slice")
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
        if a.reference:  # the first slice; shifts wrap around only outside the compared rows
            ref = direct_float64(vol[0], 5, 8, 0.5 * 0.2, 0.2)
            row["skimage_vs_float64"] = float(np.abs(sk[0] - ref).max())
            row["taichi_vs_float64"] = float(np.abs(ti_out[0] - ref).max())
        rows.append(row)
        print(f"| {a.slices} x {n}^2 | {sk_s:.2f} | {ti_s:.2f} | {row['taichi_vs_skimage']:.2f}x | "
              f"{row['max_abs_diff']:.1e} |", flush=True)
    if a.json:
        import json

        write_text_atomic(a.json, json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                              "machine": platform.platform(), "cpus": os.cpu_count(),
                                              "threads": threads, "skimage": skimage.__version__,
                                              "rows": rows}, indent=1))
    if a.reference:
        print("\nagainst a float64 evaluation of the definition, first slice: "
              + "; ".join(f"{r['n']}^2 scikit-image {r['skimage_vs_float64']:.1e}, Taichi {r['taichi_vs_float64']:.1e}"
                          for r in rows))
    return rows


if __name__ == "__main__":
    main()
