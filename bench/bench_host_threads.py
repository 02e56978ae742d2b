"""The host work around the GPU kernels against the number of threads (issue 10).

On a GPU node the projector and the backprojector are Taichi kernels; what is left on the host
scales with the views x pixels of the scan and, at the paper's 3201 views of 1024^2, is the long
pole of `simulate` and `reconstruct` unless it uses every core. Two parts, each in a fresh
process per thread count (``XRM_TWIN_THREADS``), each printing its time per view and a digest
of its output (the digests must be equal: the threads change the time and nothing else):

- ``readout``: the detector read-out of a chunk of views (:func:`twin.acquisition.read_out`):
  focal-spot blur of the four spectral sums, quanta and screen-gain noise (Poisson and Gamma
  draws), optical blur, dark current, read noise and the ADC, from synthetic spectral sums (the
  flat field times a smooth transmission that moves with the view).
- ``fdk-host``: what ``xrm-twin reconstruct`` does on the host to a stack of views before the
  backprojection, on one slab of the scenario's detector rows: flat/dark correction and -log
  (:func:`recon.preprocess.line_integrals_from_counts`), the interior-scan extension
  (:func:`recon.truncation.extend_truncated`, the detector 3x as wide) and the FDK weights and
  ramp filter (:func:`recon.fdk.weight_and_filter`). On CUDA the pipeline does this to the
  whole stack of a slab at once.

The default scenario is the full-scale NiMH zoom scan (1024^2 pixels, 3201 views); the time
for the whole scan is the time per view times its views.

Usage::

    python bench/bench_host_threads.py --part readout --views 16 --threads 1,2 --json OUT
    python bench/bench_host_threads.py --part fdk-host --views 32 --rows 256 --threads 1,2 --json OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from thread_counts import finish, run_thread_counts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("readout", "fdk-host")


def synthetic_sums(plan, n_views: int):
    """Per-steradian spectral sums of ``n_views`` views, shape (n, k, rows, cols), float32:
    each weight row's flat-field sum times a transmission between 0.05 and 0.95 that moves
    with the view (a smooth blob, so the blurs and the noise see a realistic image)."""
    import numpy as np

    from twin.acquisition import weight_rows_needed

    need = list(weight_rows_needed(plan))
    g = plan.geometry
    flat = plan.weights[need].sum(axis=1).astype(np.float32)  # (k,)
    out = np.empty((n_views, len(need), g.rows, g.cols), np.float32)
    for v in range(n_views):
        out[v] = flat[:, None, None] * transmission(g.rows, g.cols, v, n_views)[None]
    return out


def transmission(rows: int, cols: int, view: int, n_views: int):
    """A smooth transmission image in [0.05, 0.95] that reaches the detector edges (an interior
    scan) and moves with the view, float32 (rows, cols)."""
    import numpy as np

    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    cx = 0.4 * np.cos(2 * np.pi * view / max(n_views, 1))
    return 0.05 + 0.9 * (1.0 - np.exp(-((x - cx) ** 2 + y ** 2) / 0.3))


def one_run(part: str, scenario: str, n_views: int, n_rows: int) -> dict:
    """Run one part in this process: {"wall_s", "s_per_view", "digest", ...}."""
    import hashlib

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from twin.plan import resolve
    from twin.runtime import host_threads
    from twin.scenario import load_scenario

    plan = resolve(load_scenario(scenario), with_scene=False)
    g = plan.geometry
    info = {"rows": g.rows, "cols": g.cols, "scan_views": g.n_views, "host_threads": host_threads()}
    if part == "readout":
        from twin.acquisition import read_out

        sums = synthetic_sums(plan, n_views)
        gain = dthick = None
        if not plan.detector.ideal:
            gain, dthick = plan.detector.pixel_maps((g.rows, g.cols), plan.spec.seed)
        t0 = time.perf_counter()
        out = read_out(plan, sums, 0, gain, dthick)
        wall = time.perf_counter() - t0
        h = hashlib.sha256(out.tobytes())
    else:
        from recon.fdk import plan_fdk, plan_views, weight_and_filter
        from recon.preprocess import line_integrals_from_counts
        from recon.truncation import extend_truncated, extended_geometry

        rows = min(int(n_rows), g.rows)
        r0 = (g.rows - rows) // 2
        rng = np.random.default_rng(0)
        flats = np.full((4, rows, g.cols), 20000.0, np.float32)
        darks = np.full((2, rows, g.cols), 100.0, np.float32)
        counts = np.stack([100 + 19900 * transmission(g.rows, g.cols, v, n_views)[r0:r0 + rows]
                           for v in range(n_views)])
        counts = (counts + rng.normal(0.0, 30.0, counts.shape)).astype(np.uint16)
        pad = g.cols
        fplan = plan_views(plan_fdk(extended_geometry(g, pad)), 0, n_views)
        t0 = time.perf_counter()
        p = line_integrals_from_counts(counts, flats, darks)
        t1 = time.perf_counter()
        ext = extend_truncated(p, pad_cols=pad, method="chord")
        t2 = time.perf_counter()
        filt = weight_and_filter(ext, fplan, row0=r0)
        t3 = time.perf_counter()
        wall = t3 - t0
        info.update(slab_rows=rows, minus_log_s=t1 - t0, extension_s=t2 - t1, weight_filter_s=t3 - t2)
        h = hashlib.sha256(filt.tobytes())
        info["scan_rows"] = g.rows
        wall_full_rows = wall * g.rows / rows
        info["scan_host_s"] = wall_full_rows / n_views * g.n_views
    per_view = wall / n_views
    info.setdefault("scan_host_s", per_view * g.n_views)
    return {"wall_s": wall, "s_per_view": per_view, "digest": h.hexdigest()[:16], **info}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=PARTS, default="readout")
    ap.add_argument("--scenario", default="nimh-zoom", help="built-in scenario or TOML file")
    ap.add_argument("--views", type=int, default=16, help="views in the chunk")
    ap.add_argument("--rows", type=int, default=256, help="detector rows of the slab (fdk-host)")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.part, args.scenario, args.views, args.rows)))
        return {}
    rows = run_thread_counts(__file__, ["--part", args.part, "--scenario", args.scenario, "--views",
                                        str(args.views), "--rows", str(args.rows)], args.threads,
                             lambda r: f"{args.part}, {args.scenario} ({r['rows']}x{r['cols']}): "
                                       f"{r['s_per_view'] * 1e3:.1f} ms/view, {r['scan_host_s']:.0f} s for "
                                       f"the whole scan ({r['scan_views']} views)")
    return finish(rows, {"part": args.part, "scenario": args.scenario, "views": args.views}, args.json)

if __name__ == "__main__":
    main()
