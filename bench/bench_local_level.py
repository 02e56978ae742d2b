"""Time of the masked Gaussian local level (recon.local_level), in one or several checkouts.

Run:  python bench/bench_local_level.py [--n 512] [--sigma 8] [--repeat 2] [--trees . OLD ...]

The volume is random float32 (seed 0), the mask its inner box of 3/4 of the edge, ``fill``
0.5. Each tree (a checkout of this repository, e.g. ``git worktree add /tmp/old REV``) is
timed in its own process, the trees alternated ``--repeat`` times, so that an old and a new
version share one sitting. Every run prints the sum of the result: equal sums say the versions
agree (the slabbed paths are bit-identical by ``tests/test_recon_local_level.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_ONE_RUN = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from recon.local_level import masked_gaussian_mean
n, sigma = int(sys.argv[2]), float(sys.argv[3])
v = np.random.default_rng(0).random((n, n, n), dtype=np.float32)
m = np.zeros((n, n, n), bool)
e = n // 8
m[e:n - e, e:n - e, e:n - e] = True
t0 = time.perf_counter()
r = masked_gaussian_mean(v, m, sigma, fill=0.5)
print(json.dumps({"seconds": time.perf_counter() - t0, "sum": float(np.nansum(r, dtype=np.float64))}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="edge of the cubic volume (voxels)")
    ap.add_argument("--sigma", type=float, default=8.0, help="Gaussian sigma (voxels)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over the trees")
    ap.add_argument("--trees", nargs="+", default=["."], help="checkouts to time")
    args = ap.parse_args(argv)
    trees = [str(Path(t).resolve()) for t in args.trees]
    for t in trees:
        if not (Path(t) / "recon" / "local_level.py").is_file():
            ap.error(f"--trees: {t} has no recon/local_level.py (a checkout of this repository?)")
    env = dict(os.environ, PYTHONPATH="")
    for k in range(args.repeat):
        for t in trees:
            out = subprocess.run([sys.executable, "-c", _ONE_RUN, t, str(args.n), str(args.sigma)],
                                 check=True, capture_output=True, text=True, env=env).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"round {k + 1}  {t}  {args.n}^3 sigma {args.sigma:g}: "
                  f"{r['seconds']:.2f} s  sum {r['sum']:.6e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
