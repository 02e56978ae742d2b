"""Samples per hour of `xrm-twin dataset` with 1 and 2 LocalCluster workers (issue 9: >= 1.7x
on 2 cores).

    python bench/bench_dataset.py                      # the example spec, 24 samples per run
    python bench/bench_dataset.py --count 16 --set scenario.detector.pixels=[64,64]

With --repeat N the 1- and 2-worker runs alternate N times and the ratios compare the best
run of each (the least disturbed by other jobs). Two rates per run: overall (wall clock from the call, cluster start included) and steady
(samples finished after the first `workers` ones, over the time since the `workers`-th
finished: no worker start-up or Taichi compilation), and the median CPU and wall seconds of one
task (CPU close to wall: the task had its core to itself). A control measures what a second
process gains on this machine at that moment (the same pure-Python work in 1 then 2
processes; 2.0 when 2 cores are free): on a shared machine other jobs take cores away, and the
dataset ratio can be read against it. Each run writes to a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from twin.datasets.runner import run_dataset
from twin.datasets.spec import load_dataset_spec


def one(spec, workers: int, root: Path) -> dict:
    stamps: list[float] = []
    cpu: list[float] = []
    elapsed: list[float] = []

    def seen(row):
        stamps.append(time.perf_counter())
        cpu.append(row["_cpu_s"])
        elapsed.append(row["_elapsed_s"])

    t0 = time.perf_counter()
    r = run_dataset(spec, root / f"w{workers}", workers=workers, quiet=True, figure=False, on_sample=seen)
    wall = time.perf_counter() - t0
    n = len(stamps)
    steady = (n - workers) / (stamps[-1] - stamps[workers - 1]) * 3600 if n > workers else float("nan")
    return {"workers": workers, "samples": n, "wall_s": round(wall, 2),
            "overall_per_hour": round(n / wall * 3600, 1), "steady_per_hour": round(steady, 1),
            "task_cpu_s_median": round(sorted(cpu)[n // 2], 2),
            "task_wall_s_median": round(sorted(elapsed)[n // 2], 2),
            "made": r["made"]}


def _spin(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i % 7
    return s


def control(n: int = 6_000_000) -> dict:
    """What 2 processes gain over 1 on this machine right now: the same pure-Python CPU work
    (2 units) done by 1 process, then by 2 in parallel. 2.0 on an idle 2-core machine."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_spin, [1000, 1000]))  # start the processes
        t0 = time.perf_counter()
        list(pool.map(_spin, [n]))
        list(pool.map(_spin, [n]))
        t1 = time.perf_counter()
        list(pool.map(_spin, [n, n]))
        t2 = time.perf_counter()
    return {"one_process_s": round(t1 - t0, 2), "two_processes_s": round(t2 - t1, 2),
            "ratio": round((t1 - t0) / (t2 - t1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default="example")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--set", dest="set_", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate 1- and 2-worker runs this many times; ratios of the best runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    spec = load_dataset_spec(a.spec, a.set_ + [f"count={a.count}"])
    out = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "host": platform.node(),
           "cpus": os.cpu_count(), "spec": a.spec, "set": a.set_, "count": a.count,
           "loadavg_before": [round(x, 2) for x in os.getloadavg()], "runs": []}
    out["control"] = []
    for rep in range(a.repeat):
        out["control"].append(control())
        print(json.dumps({"control": out["control"][-1]}), flush=True)
        for w in (1, 2):
            with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
                res = one(spec, w, Path(tmp))
            res["repeat"] = rep
            out["runs"].append(res)
            print(json.dumps(res), flush=True)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    best = {w: {k: max(r[k] for r in out["runs"] if r["workers"] == w)
                for k in ("overall_per_hour", "steady_per_hour")} for w in (1, 2)}
    out["best"] = best
    out["ratio_steady"] = round(best[2]["steady_per_hour"] / best[1]["steady_per_hour"], 2)
    out["ratio_overall"] = round(best[2]["overall_per_hour"] / best[1]["overall_per_hour"], 2)
    out["control_ratio_median"] = sorted(c["ratio"] for c in out["control"])[len(out["control"]) // 2]
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}))
    if a.json:
        from twin.atomic import write_text_atomic

        write_text_atomic(a.json, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
