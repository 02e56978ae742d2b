"""Peak memory of each stage of an end-to-end run: simulate, reconstruct, measure (issue 10).

A built-in scenario (default ``quickstart``; ``--preview`` for its preview) runs stage by
stage in one process, as ``xrm-twin run`` does, each stage under its own ``tracemalloc``
(numpy reports its arrays to it; Taichi's kernels allocate nothing per call on the CPU).
For each stage the table gives the traced peak and the arrays the stage must hold:

* simulate: it streams views to ``projections.h5`` a chunk at a time, so what it must hold is
  the scene (label grids and mesh triangles) and one chunk of views in flight
  (``Plan.bytes_per_view_chunk`` of ``twin.acquisition.views_per_chunk`` views: per-material
  path lengths, spectral sums, output); the frames it writes are given beside (a peak below
  them means it streams);
* reconstruct: the frames it reads (projections, flats, darks as stored), the float32 line
  integrals of the projections it filters and back-projects, and the volume it returns (two
  when a denoiser keeps the undenoised one);
* measure: its input volume (allocated before the stage, not traced, added), the truth on the
  volume's grid and the field-of-view mask, and its outputs (labels, truth labels, defect
  map, thickness maps), as in ``bench/bench_measure_memory.py``.

Usage::

    python bench/bench_stage_memory.py --scenario quickstart --json bench/results/stage_memory.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _frames_bytes(path: Path) -> tuple[int, int]:
    """(bytes of all frames as stored, float32 bytes of the projections' line integrals)."""
    import h5py

    with h5py.File(path, "r") as f:
        d = f["entry/instrument/detector/data"]
        key = np.asarray(f["entry/instrument/detector/image_key"])
        projection_pixels = int(np.count_nonzero(key == 0)) * int(np.prod(d.shape[1:]))
        return int(np.prod(d.shape)) * d.dtype.itemsize, 4 * projection_pixels


def _simulate_must_hold(spec) -> tuple[int, int]:
    """(scene bytes: label grids + mesh triangles, bytes of one chunk of views in flight)."""
    from twin.acquisition import views_per_chunk
    from twin.plan import resolve

    plan = resolve(spec)
    scene = plan.scene
    scene_bytes = (sum(int(g.labels.nbytes) for g in scene.grids)
                   + sum(int(np.asarray(p.triangles).nbytes) for p in scene.parts))
    return scene_bytes, int(plan.bytes_per_view_chunk(views_per_chunk(plan)))


def run_stages(scenario: str, preview: bool, out: Path) -> list[dict]:
    from twin.measure import measure
    from twin.preview import preview_spec
    from twin.reconstruct import reconstruct_nxtomo
    from twin.runtime import init_taichi
    from twin.scenario import load_scenario
    from twin.simulate import simulate_to
    from twin.truth_io import read_truth

    spec = load_scenario(scenario)
    if preview:
        spec, _ = preview_spec(spec)
    init_taichi("cpu")
    rows = []

    def stage(name, fn):
        from recon.slabs import forked_peak_bytes

        tracemalloc.start()
        forked_peak_bytes(reset=True)
        t0 = time.perf_counter()
        res = fn()
        wall = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        peak = max(peak, forked_peak_bytes(reset=True))  # work on forked workers counted too
        tracemalloc.stop()
        return res, wall, peak

    sim, wall, peak = stage("simulate", lambda: simulate_to(spec, out, arch="cpu", quiet=True))
    frames, line_integrals = _frames_bytes(out / "projections.h5")
    scene_bytes, chunk_bytes = _simulate_must_hold(spec)
    held = scene_bytes + chunk_bytes
    rows.append({"stage": "simulate", "wall_s": wall, "peak_traced_bytes": peak,
                 "held_bytes": held, "held": "scene + one chunk of views in flight",
                 "scene_bytes": scene_bytes, "chunk_bytes": chunk_bytes,
                 "frames_written_bytes": frames, "ratio": peak / held})
    rec, wall, peak = stage("reconstruct", lambda: reconstruct_nxtomo(out / "projections.h5", out,
                                                                      arch="cpu", quiet=True))
    volume, undenoised = rec["volume"], rec.get("volume_undenoised")
    held = frames + line_integrals + volume.nbytes + (undenoised.nbytes if undenoised is not None else 0)
    rows.append({"stage": "reconstruct", "wall_s": wall, "peak_traced_bytes": peak, "held_bytes": held,
                 "held": "frames read + float32 line integrals + volume(s)",
                 "line_integrals_bytes": line_integrals, "ratio": peak / held})
    truth = read_truth(out / "truth.h5", instances=False)
    maps = spec.measure.get("thickness_maps")
    if maps is None and spec.paper.get("metrology"):
        maps = [c for c, q in spec.paper["metrology"].items()
                if any(k.startswith("thickness") for k in q)] or None
    truth_bytes = int(np.asarray(truth["labels"]).nbytes)
    meas, wall, peak = stage("measure", lambda: measure(
        volume, rec["voxel_size_um"], rec["origin_mm"], truth=truth, kvp=float(spec.source["kvp"]),
        thickness_maps=maps, undenoised=undenoised,
        smooth_sigma_vox=float(spec.measure.get("smooth_sigma_vox", 1.0))))
    outputs = (meas["labels"].nbytes + meas["truth_labels"].nbytes + meas["defect_map"].nbytes
               + sum(m.nbytes for m, _ in meas["thickness_maps"].values()))
    inputs = volume.nbytes + (undenoised.nbytes if undenoised is not None else 0)
    held = inputs + meas["truth_labels"].nbytes + volume.size + outputs
    rows.append({"stage": "measure", "wall_s": wall, "peak_traced_bytes": peak + inputs,
                 "held_bytes": held, "held": "volume(s) + truth on grid + mask + outputs",
                 "ratio": (peak + inputs) / held, "truth_file_labels_bytes": truth_bytes})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="quickstart")
    ap.add_argument("--preview", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_stages(args.scenario, args.preview, Path(tmp))
    mib = 2 ** 20
    print(f"Stage memory, `{args.scenario}`{' --preview' if args.preview else ''}, "
          f"{platform.platform()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| stage | time (s) | peak (MiB) | must hold (MiB) | what | peak / must hold |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['wall_s']:.1f} | {r['peak_traced_bytes'] / mib:.0f} | "
              f"{r['held_bytes'] / mib:.0f} | {r['held']} | {r['ratio']:.2f} |")
    sim = rows[0]
    print(f"\nsimulate: scene {sim['scene_bytes'] / mib:.0f} MiB, one chunk of views "
          f"{sim['chunk_bytes'] / mib:.0f} MiB; frames written {sim['frames_written_bytes'] / mib:.0f} MiB")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
           "scenario": args.scenario, "preview": args.preview, "rows": rows}
    if args.json:
        from twin.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
