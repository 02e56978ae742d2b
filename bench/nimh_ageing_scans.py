"""0 vs 120 cycles of the AAA NiMH cell on simulated scans at the paper's 3.62 um (issue 5).

Run:  python bench/nimh_ageing_scans.py [--out /tmp/nimh_ageing] [--pixels 320] [--views 1000]

Two ``xrm-twin run`` scans of one cell (the same phantom seed; independent noise; 1000 views of
3 averaged 8-s frames: the paper's 3.1 views per detector column and the dose of its 3201 views
of 8 s) through the
whole cell (steel can, winding) onto a ``pixels``^2 window of the paper's 4x / binning-2 detector
(3.62 um voxels), centred on a part of the winding where a crack of the positive electrode and
a delamination of the negative active layer from its Ni foil grow between 0 and 120 cycles
(site list: ``phantoms.ageing``). The second scan is remounted 30 / -20 / 15 um off (x, y, z).
Then ``xrm-twin compare`` registers the two, maps the changes and measures the growth of the
detected delamination and crack volumes against the phantom's truth.

Prints the registration, the detected and truth volumes and the growth error; the numbers are
quoted in docs/notes-metrology.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# between a crack of the positive electrode at (-2.441, 1.467, 15.666) and a delamination at
# (-2.245, 0.866, 15.920) mm, 0.68 mm apart (phantom seed 1, 120 cycles; listed by
# ``build("nimh_aaa", {"cycles": 120}, seed=1).truth(20.0, (0, 0, 14), (10.6, 10.6, 4),
# resolve=True)``)
CENTER_MM = (-2.343, 1.167, 15.793)
REMOUNT_MM = (0.030, -0.020, 0.015)


def run(name: str, out: Path, pixels: int, views: int, frames: int, seed: int, center,
        extra=()) -> dict:
    from twin.run import run_scenario
    from twin.scenario import load_scenario

    c = ", ".join(f"{v:.4f}" for v in center)
    size = 1.1 * pixels * 3.62e-3
    over = [f"detector.pixels=[{pixels}, {pixels}]", f"geometry.projections={views}",
            f"phantom.voi={{center_mm=[{', '.join(f'{v:.4f}' for v in CENTER_MM)}], "
            f"size_mm=[{size:.3f}, {size:.3f}, {size:.3f}]}}",
            f"geometry.sample_center_mm=[{c}]", "phantom.seed=1", f"seed={seed}",
            f"detector.frames={frames}", "measure.render_3d=false", *extra]
    spec = load_scenario(name, over)
    t0 = time.perf_counter()
    rep = run_scenario(spec, out, arch="cpu", quiet=True)
    print(f"{name}: {time.perf_counter() - t0:.0f} s, voxel {rep['geometry']['voxel_size_um']:.3f} um, "
          f"timing {rep['timing_s']}", flush=True)
    return rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/nimh_ageing"))
    ap.add_argument("--pixels", type=int, default=320)
    ap.add_argument("--views", type=int, default=1000,
                    help="views (1000 for 320 columns: the paper's 3.1 views per column)")
    ap.add_argument("--frames", type=int, default=3,
                    help="frames averaged per view (1000 views x 3 frames: the dose of the paper's 3201 views)")
    ap.add_argument("--reuse", action="store_true", help="keep existing run folders")
    a = ap.parse_args()
    from twin.compare import compare_runs

    before, after = a.out / "cycles0", a.out / "cycles120"
    moved = tuple(c + d for c, d in zip(CENTER_MM, REMOUNT_MM))
    if not (a.reuse and (before / "report.json").exists()):
        run("nimh-zoom", before, a.pixels, a.views, a.frames, 1, CENTER_MM)
    if not (a.reuse and (after / "report.json").exists()):
        run("nimh-zoom-120cycles", after, a.pixels, a.views, a.frames, 2, moved)
    t0 = time.perf_counter()
    res = compare_runs(before, after, a.out / "compare", levels=(4, 2))
    print(f"compare: {time.perf_counter() - t0:.0f} s")
    r = res["registration"]
    print(f"registration: rotation {[round(x, 3) for x in r['rotation_deg']]} deg, translation "
          f"{[round(x, 4) for x in r['translation_mm']]} mm (applied remount {list(REMOUNT_MM)}), "
          f"NCC {r['ncc']:.4f}")
    for k, v in res["damage_growth"].items():
        err = v["growth_rel_error"]
        print(f"{k:13s} detected {v['before_detected_volume_mm3']:.5f} -> {v['after_detected_volume_mm3']:.5f} mm3 "
              f"({v['before_n_detected']} -> {v['after_n_detected']}), truth "
              f"{v['before_truth_volume_mm3']:.5f} -> {v['after_truth_volume_mm3']:.5f} mm3, growth error "
              f"{'-' if err is None else f'{100 * err:+.1f} %'}")
    print(f"new detections: {len(res['new_detections'])}")
    from twin.atomic import write_text_atomic

    write_text_atomic(a.out / "summary.json", json.dumps({k: res[k] for k in ("registration", "damage_growth")},
                                                   indent=1, default=float))


if __name__ == "__main__":
    main()
