"""Wall time of `xrm-twin run NAME --preview` for every built-in scenario (issues 6 and 10).

Run:  python bench/bench_previews.py [--json OUT] [--only NAME ...]

Each built-in runs in its own process, one after the other, into a fresh temporary folder,
exactly as a user types it (`xrm-twin --quiet run NAME --preview --out DIR`); the goal is
<= 5 minutes each on 2 CPU cores. Prints a markdown table (wall time, exit code, the preview's
voxel and the full scale's, the stages' times from report.json) with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--only", nargs="+", default=None)
    a = ap.parse_args()
    from twin.scenario import builtin_names

    names = a.only or builtin_names()
    exe = [sys.executable, "-m", "twin.cli"]
    rows = []
    load0 = os.getloadavg()
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"preview-{name}-") as tmp:
            out = Path(tmp) / "run"
            t0 = time.perf_counter()
            res = subprocess.run(exe + ["--quiet", "run", name, "--preview", "--out", str(out),
                                        "--arch", "cpu"], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            row = {"scenario": name, "exit": res.returncode, "wall_s": round(wall, 1)}
            rp = out / "report.json"
            if rp.exists():
                rep = json.loads(rp.read_text())
                g = rep["geometry"]
                row.update(voxel_um=round(g["voxel_size_um"], 3),
                           full_scale_voxel_um=round(g.get("full_scale_voxel_size_um", g["voxel_size_um"]), 3),
                           timing_s={k: round(v, 1) for k, v in rep["timing_s"].items()},
                           preview=rep.get("preview"))
            else:
                row["error"] = (res.stdout + res.stderr)[-500:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "host": platform.node(),
           "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load0],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()], "runs": rows}
    print(f"\n{out['date_utc']} UTC, {os.cpu_count()} CPUs, load average {out['loadavg_before'][0]} -> "
          f"{out['loadavg_after'][0]}\n")
    print("| scenario | exit | wall (s) | preview voxel (um) | full-scale voxel (um) | simulate / reconstruct / measure (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        t = r.get("timing_s", {})
        print(f"| {r['scenario']} | {r['exit']} | {r['wall_s']} | {r.get('voxel_um', '-')} | "
              f"{r.get('full_scale_voxel_um', '-')} | {t.get('simulate', '-')} / {t.get('reconstruct', '-')} / "
              f"{t.get('measure', '-')} |")
    if a.json:
        from twin.atomic import write_text_atomic

        write_text_atomic(a.json, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
