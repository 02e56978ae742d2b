"""The ``measure`` stage against the number of threads (issue 10: every core busy).

The zoom-scan-like NiMH volume of :mod:`bench_measure_memory` (an N^3 VOI at 3.623 um) is
measured with its truth, as ``xrm-twin measure --truth`` does, in a fresh process per thread
count (``XRM_TWIN_THREADS``: Taichi's CPU threads and the host threads of
:mod:`recon.slabs`, NL-means and the surface slabs). Each run prints its wall time and a
digest of everything it measured (the report's metrology, segmentation, defects and
detectability, the label volumes, defect map and thickness map): the digests must be equal,
so the threads change the time and nothing else.

Usage::

    python bench/bench_measure_threads.py --n 256 --threads 1,2 --json bench/results/measure_threads.json
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


def one_run(n: int, cycles: int, center_mm: str) -> dict:
    """Measure the N^3 volume in this process: {"wall_s", "digest"}."""
    import hashlib

    import numpy as np

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_measure_memory import zoom_like
    from twin.measure import measure

    vol, truth, vs_um, origin = zoom_like(n, cycles=cycles, center_mm=[float(c) for c in center_mm.split(",")])
    truth["instances"] = None
    t0 = time.perf_counter()
    res = measure(vol, vs_um, origin, truth=truth, kvp=160.0, smooth_sigma_vox=0.5,
                  thickness_maps=["ni_foam"])
    wall = time.perf_counter() - t0
    h = hashlib.sha256()
    for key in ("metrology", "metrology_truth", "segmentation", "defects", "detectability"):
        h.update(json.dumps(res.get(key), sort_keys=True, default=str).encode())
    for key in ("labels", "truth_labels", "defect_map"):
        h.update(np.ascontiguousarray(res[key]).tobytes())
    for name in sorted(res["thickness_maps"]):
        h.update(res["thickness_maps"][name][0].tobytes())
    return {"wall_s": wall, "digest": h.hexdigest()[:16]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="VOI edge in voxels")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--cycles", type=int, default=0, help="charge cycles (120: cracks to search for)")
    ap.add_argument("--center-mm", default="2.5,0,10")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.n, args.cycles, args.center_mm)))
        return {}
    rows = run_thread_counts(__file__, ["--n", str(args.n), "--cycles", str(args.cycles),
                                        "--center-mm", args.center_mm], args.threads,
                             lambda r: f"{args.n}^3: {r['wall_s']:.1f} s")
    return finish(rows, {"n": args.n, "cycles": args.cycles}, args.json)

if __name__ == "__main__":
    main()
