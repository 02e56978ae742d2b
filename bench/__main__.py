"""One entry point for the benchmarks: ``python -m bench [--quick] [--json OUT] [--only NAME ...]``.

Runs each benchmark script of this folder in its own process (so Taichi, OpenGL and Dask
start clean), with the arguments of the chosen size, and collects what each prints (markdown
tables with the machine, date and peer versions) into one markdown report on stdout, plus a
JSON summary (command, return code, wall time, output) with ``--json``. Figures quoted in
``docs/benchmarks.md`` come from these runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

#: name -> (quick arguments, full arguments)
BENCHES = {
    "projector": (["-m", "bench.bench_projector", "--quick"], ["-m", "bench.bench_projector"]),
    "recon": (["bench/bench_recon.py", "--size", "128", "--views", "180", "--fdk-size", "64", "--repeat", "1"],
              ["bench/bench_recon.py"]),
    "thickness": (["bench/bench_thickness.py", "--n", "96"], ["bench/bench_thickness.py"]),
    "edt": (["bench/bench_edt.py", "--n", "96", "--repeat", "1"], ["bench/bench_edt.py"]),
    "nl_means": (["bench/bench_nl_means.py", "--n", "256", "--slices", "8"],
                 ["bench/bench_nl_means.py", "--n", "256", "1024", "--slices", "16"]),
    "scaling": (["bench/bench_scaling.py", "--sizes", "48", "64", "96", "128", "--views", "32", "64", "128",
                 "--fixed-views", "64", "--fixed-size", "64", "--proj-sizes", "48", "64", "96", "128",
                 "--repeat", "1"], ["bench/bench_scaling.py"]),
    "phantoms": (["bench/bench_phantoms.py", "--n", "256", "--repeat", "1"], ["bench/bench_phantoms.py"]),
    "measure_memory": (["bench/bench_measure_memory.py", "--sizes", "128"],
                       ["bench/bench_measure_memory.py", "--sizes", "256,384,512"]),
    # simulate, reconstruct and measure of the quickstart, each stage's peak (about 2 minutes)
    "stage_memory": (None, ["bench/bench_stage_memory.py", "--scenario", "quickstart"]),
    "sweep": (["bench/bench_sweep.py", "--scheduler", "none"], ["bench/bench_sweep.py"]),
    "dataset": (["bench/bench_dataset.py", "--count", "4"], ["bench/bench_dataset.py"]),
    # every built-in with --preview (about 20 minutes): full runs only
    "previews": (None, ["bench/bench_previews.py"]),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes in all)")
    ap.add_argument("--json", type=Path, default=None, help="write a JSON summary here")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=None)
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="per benchmark")
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    results = []
    print(f"# xrm-twin benchmarks ({'quick' if args.quick else 'full'})\n")
    print(f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, {machine()}\n")
    for name in args.only or BENCHES:
        chosen = BENCHES[name][0 if args.quick else 1]
        if chosen is None:
            print(f"## {name}: not part of --quick (run `python -m bench --only {name}`)\n")
            continue
        cmd = [sys.executable] + chosen
        t0 = time.perf_counter()
        try:
            res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=args.timeout_s)
            rc, out = res.returncode, res.stdout + (res.stderr[-2000:] if res.returncode else "")
        except subprocess.TimeoutExpired as exc:
            rc, out = -1, f"timed out after {args.timeout_s:.0f} s\n{exc.stdout or ''}"
        wall = time.perf_counter() - t0
        print(f"## {name} (`{' '.join(cmd[1:])}`, {wall:.0f} s, exit {rc})\n")
        print(out.strip() + "\n")
        results.append({"name": name, "command": " ".join(cmd[1:]), "returncode": rc, "wall_s": wall,
                        "output": out})
    if args.json:  # atomically: a crash never leaves a half-written summary
        from twin.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(),
                                         "machine": machine(), "quick": args.quick,
                                         "results": results}, indent=1))
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
