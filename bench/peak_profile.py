"""Where a function's memory peak is: the stack and the live allocations at the traced peak.

A helper for the memory benchmarks (issue 10, must-show 3), not a benchmark itself. A
thread polls ``tracemalloc`` every ``poll_s`` seconds; whenever the traced memory passes
the highest value seen so far by ``step`` (a fraction), it records the main thread's Python
stack and a snapshot of the live allocations (grouped by the line that allocated them).
What it reports is the record of the highest peak it saw: the stack says *when* the peak
happens, the allocations say *what* is alive then. Numpy reports its arrays to
``tracemalloc``, so arrays appear by the line that created them. The poll may miss a peak
shorter than ``poll_s``; the exact peak (``tracemalloc.get_traced_memory``) is reported
beside it so that the gap is visible.

Usage (the quickstart's simulate stage; the measure stage of a 128^3 zoom-like VOI)::

    python bench/peak_profile.py --stage simulate --scenario quickstart
    python bench/peak_profile.py --stage measure --n 128
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def profile_peak(fn: Callable[[], Any], *, poll_s: float = 0.002, step: float = 0.02,
                 frames: int = 12, top: int = 12, min_bytes: int = 1 << 20) -> dict[str, Any]:
    """Run ``fn()`` under ``tracemalloc`` and describe its memory peak.

    Parameters
    ----------
    fn : callable
        What to profile; it runs in the calling (main) thread.
    poll_s : float
        Poll interval of the watching thread, s.
    step : float
        A new record is taken when the traced memory exceeds the last record by this fraction.
    frames : int
        Frames kept per allocation traceback.
    top : int
        Allocation sites reported (largest first).
    min_bytes : int
        Smallest allocation site reported, bytes.

    Returns
    -------
    dict
        ``result`` (what ``fn`` returned), ``peak_bytes`` (the exact traced peak),
        ``recorded_bytes`` (the traced memory when the reported record was taken),
        ``stack`` (list of "file:line function" strings, innermost last) and ``alive``
        (list of ``(bytes, [file:line, ...])``, largest first).
    """
    main = threading.main_thread().ident
    best: dict[str, Any] = {"bytes": 0, "stack": [], "snapshot": None}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            cur, _ = tracemalloc.get_traced_memory()
            if cur > best["bytes"] * (1.0 + step) and cur > min_bytes:
                frame = sys._current_frames().get(main)
                stack = []
                while frame is not None:
                    stack.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
                    frame = frame.f_back
                best.update(bytes=cur, stack=stack[::-1], snapshot=tracemalloc.take_snapshot())
            time.sleep(poll_s)

    tracemalloc.start(frames)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        result = fn()
    finally:
        stop.set()
        t.join()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    alive = []
    if best["snapshot"] is not None:
        for s in best["snapshot"].statistics("traceback")[:top]:
            if s.size < min_bytes:
                break
            alive.append((s.size, [f"{f.filename}:{f.lineno}" for f in s.traceback]))
    return {"result": result, "peak_bytes": peak, "recorded_bytes": best["bytes"],
            "stack": best["stack"], "alive": alive}


def report(prof: dict[str, Any], *, root: str = str(Path(__file__).resolve().parents[1])) -> str:
    """The profile as text: exact and recorded peak (MiB), the stack and the live sites,
    with the repository's own frames only (others are library internals)."""
    mib = 2 ** 20
    own = [s for s in prof["stack"] if s.startswith(root) and "/.venv/" not in s]
    lines = [f"exact traced peak {prof['peak_bytes'] / mib:.1f} MiB; recorded at "
             f"{prof['recorded_bytes'] / mib:.1f} MiB, in:"]
    lines += ["    " + s.replace(root + "/", "") for s in own]
    lines.append("alive then:")
    for size, tb in prof["alive"]:
        mine = [f.replace(root + "/", "") for f in tb if f.startswith(root) and "/.venv/" not in f]
        lines.append(f"  {size / mib:8.1f} MiB  " + " <- ".join(mine[::-1][:4]))
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=("simulate", "reconstruct", "measure"), default="simulate")
    ap.add_argument("--scenario", default="quickstart")
    ap.add_argument("--preview", action="store_true")
    ap.add_argument("--n", type=int, default=128,
                    help="measure: edge of the NiMH zoom-like VOI of bench/bench_measure_memory.py")
    ap.add_argument("--cycles", type=int, default=0, help="measure: charge cycles of the cell")
    ap.add_argument("--center-mm", default="2.5,0,10", help="measure: VOI centre x,y,z in mm")
    args = ap.parse_args(argv)
    if args.stage == "measure":  # the volume of bench/bench_measure_memory.py, measured as there
        from bench.bench_measure_memory import zoom_like
        from twin.measure import measure

        vol, truth, vs_um, origin = zoom_like(args.n, cycles=args.cycles,
                                            center_mm=[float(c) for c in args.center_mm.split(",")])
        truth["instances"] = None
        prof = profile_peak(lambda: measure(vol, vs_um, origin, truth=truth, kvp=160.0,
                                            smooth_sigma_vox=0.5, thickness_maps=["ni_foam"]))
        print(f"input volume {vol.nbytes / 2**20:.1f} MiB (not traced)")
        print(report(prof))
        return
    import tempfile

    from twin.preview import preview_spec
    from twin.reconstruct import reconstruct_nxtomo
    from twin.runtime import init_taichi
    from twin.scenario import load_scenario
    from twin.simulate import simulate_to

    spec = load_scenario(args.scenario)
    if args.preview:
        spec, _ = preview_spec(spec)
    init_taichi("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if args.stage == "simulate":
            prof = profile_peak(lambda: simulate_to(spec, tmp, arch="cpu", quiet=True))
        else:
            simulate_to(spec, tmp, arch="cpu", quiet=True)
            prof = profile_peak(lambda: reconstruct_nxtomo(Path(tmp) / "projections.h5", tmp,
                                                           arch="cpu", quiet=True))
    print(report(prof))


if __name__ == "__main__":
    main()
