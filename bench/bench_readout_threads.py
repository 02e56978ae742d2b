"""The detector read-out of a scan against the number of threads (issue 10: every core busy).

After the projector has traced a chunk of views, every view is read out on the host: the
focal-spot blur of its four spectral sums, the quanta and screen-gain noise (Poisson and
Gamma draws), the optical blur, dark current, read noise and the ADC
(:func:`twin.acquisition.read_out`). That is numpy and SciPy work, about 0.2-0.3 s per
1024^2 view on one core, so at the paper's 3201 views it is the simulate stage's long pole
on a GPU node unless it runs on every core.

This bench reads out a chunk of views of a built-in scenario's detector (default the
full-scale NiMH zoom scan, 1024^2 pixels) from synthetic spectral sums (the flat field times
a smooth transmission that changes with the view), in a fresh process per thread count
(``XRM_TWIN_THREADS``), and prints the time per view and a digest of the images: the digests
must be equal, since each view draws from its own generator.

Usage::

    python bench/bench_readout_threads.py --scenario nimh-zoom --views 16 --threads 1,2 --json OUT
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_sums(plan, n_views: int):
    """Per-steradian spectral sums of ``n_views`` views, shape (n, k, rows, cols), float32:
    each weight row's flat-field sum times a transmission between 0.05 and 0.95 that moves
    with the view (a smooth blob, so the blurs and the noise see a realistic image)."""
    import numpy as np

    from twin.acquisition import weight_rows_needed

    need = list(weight_rows_needed(plan))
    g = plan.geometry
    flat = plan.weights[need].sum(axis=1).astype(np.float32)  # (k,)
    y = np.linspace(-1.0, 1.0, g.rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, g.cols, dtype=np.float32)[None, :]
    out = np.empty((n_views, len(need), g.rows, g.cols), np.float32)
    for v in range(n_views):
        cx = 0.4 * np.cos(2 * np.pi * v / max(n_views, 1))
        t = 0.05 + 0.9 * (1.0 - np.exp(-((x - cx) ** 2 + y ** 2) / 0.3))
        out[v] = flat[:, None, None] * t[None]
    return out


def one_run(scenario: str, n_views: int) -> dict:
    """Read out the chunk in this process: {"wall_s", "s_per_view", "digest", ...}."""
    import hashlib

    sys.path.insert(0, str(ROOT))
    from twin.acquisition import read_out
    from twin.plan import resolve
    from twin.runtime import host_threads
    from twin.scenario import load_scenario

    plan = resolve(load_scenario(scenario), with_scene=False)
    g = plan.geometry
    part = synthetic_sums(plan, n_views)
    gain = dthick = None
    if not plan.detector.ideal:
        gain, dthick = plan.detector.pixel_maps((g.rows, g.cols), plan.spec.seed)
    t0 = time.perf_counter()
    images = read_out(plan, part, 0, gain, dthick)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "s_per_view": wall / n_views, "digest": hashlib.sha256(images.tobytes()).hexdigest()[:16],
            "rows": g.rows, "cols": g.cols, "scan_views": g.n_views, "host_threads": host_threads(),
            "scan_readout_s": wall / n_views * g.n_views}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="nimh-zoom", help="built-in scenario or TOML file")
    ap.add_argument("--views", type=int, default=16, help="views in the chunk read out")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.scenario, args.views)))
        return {}
    rows = []
    for t in [int(s) for s in args.threads.split(",")]:
        env = dict(os.environ, XRM_TWIN_THREADS=str(t))
        proc = subprocess.run([sys.executable, __file__, "--one", "--scenario", args.scenario,
                               "--views", str(args.views)], env=env, capture_output=True, text=True, check=True)
        row = {"threads": t, **json.loads(proc.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{args.scenario} ({row['rows']}x{row['cols']}), {t} thread(s): {row['s_per_view'] * 1e3:.1f} ms/view, "
              f"{row['scan_readout_s']:.0f} s for the scan's {row['scan_views']} views, digest {row['digest']}",
              flush=True)
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup"] = base / r["wall_s"]
    same = len({r["digest"] for r in rows}) == 1
    print("images identical across thread counts" if same else "IMAGES DIFFER across thread counts")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
           "processor": platform.processor(), "cores": os.cpu_count(), "scenario": args.scenario,
           "views": args.views, "rows": rows, "identical": same}
    if args.json:
        from twin.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(out, indent=1))
    if not same:
        raise SystemExit(1)
    return out


if __name__ == "__main__":
    main()
