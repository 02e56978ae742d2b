"""Shared driver of the per-thread-count benches (``bench_measure_threads``, ``bench_host_threads``).

Each thread count runs the bench's ``--one`` child in a fresh process with ``XRM_TWIN_THREADS``
set (Taichi's CPU threads and the host threads of :mod:`recon.slabs` and the read-out); the
child prints one JSON line with at least ``wall_s`` and ``digest``. The digests must be equal:
the threads change the time and nothing else.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence


def run_thread_counts(script: str, child_args: Sequence[str], threads: str,
                      describe: Callable[[dict], str]) -> list[dict]:
    """Run ``script --one child_args`` once per thread count (``"1,2"``); rows with speed-ups."""
    rows = []
    for t in [int(s) for s in threads.split(",")]:
        env = dict(os.environ, XRM_TWIN_THREADS=str(t))
        proc = subprocess.run([sys.executable, script, "--one", *child_args], env=env,
                              capture_output=True, text=True, check=True)
        row = {"threads": t, **json.loads(proc.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{describe(row)}, {t} thread(s): digest {row['digest']}", flush=True)
    for r in rows:
        r["speedup"] = rows[0]["wall_s"] / r["wall_s"]
    return rows


def finish(rows: list[dict], meta: dict, json_path: Path | None) -> dict:
    """Print whether the digests agree, write the JSON atomically, exit 1 when they differ."""
    same = len({r["digest"] for r in rows}) == 1
    print("outputs identical across thread counts" if same else "OUTPUTS DIFFER across thread counts")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
           "processor": platform.processor(), "cores": os.cpu_count(), **meta, "rows": rows,
           "identical": same}
    if json_path:
        from twin.atomic import write_text_atomic

        write_text_atomic(json_path, json.dumps(out, indent=1))
    if not same:
        raise SystemExit(1)
    return out
