"""POD(a) of the cathode voids of the LFP pouch cell, against exposure and voxel size.

Run:  python bench/pouch_pod_study.py [--out /tmp/pouch_pod] [--quick] [--only LABEL ...]

The paper's pouch scan (``pouch-highres``: 60 kV, 6.5 W, LE2, 4x objective) on a 256^2-pixel
window of the detector (a 0.96 mm field of view, the cell 4 mm wide: an interior scan as in the
paper), the phantom always rasterised at 3.74 um in a VOI over the cathode so the voids (lognormal,
mean 15 um) exist whatever the scan voxel. Each setting is a full ``xrm-twin run`` (simulate with
noise, FDK, segment, detect voids in the cathode, match to the truth table, POD fit):

* at 3.74 um (binning 2, 256 pixels, 800 views: the paper's 3.1 views per detector column):
  the paper's dose (3201 views of 15 s; here 800 views of 4 averaged 15-s frames: FDK noise
  goes as 1 / sqrt(views x frames x exposure)), 1/8 and 1/80 of it, and 4 times it;
* binning 4 (7.48 um voxels, 128 pixels, 400 views) and 6 (11.2 um, 85 pixels, 266 views) at
  the paper's dose.

Prints one line per setting (voids in view, recall of voids >= 3 voxels across, a50, a90,
a90/95 in um, d' of the median void) and writes ``results.json`` and a POD-curve figure in the
output folder. The numbers are quoted in docs/notes-metrology.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def settings(quick: bool) -> list[dict]:
    """The scans: the paper's views-per-pixel ratio (3201 views for 1024 columns, 3.1) and its
    dose (3201 views of 15 s: FDK noise goes as 1 / sqrt(views x frames x exposure)) kept on a
    256-pixel window: 800 views of 4 averaged 15-s frames."""
    base = [{"label": "3.74 um, paper dose", "binning": 2, "pixels": 256, "views": 800,
             "exposure_s": 15.0, "frames": 4},
            {"label": "3.74 um, dose / 8", "binning": 2, "pixels": 256, "views": 800,
             "exposure_s": 7.5, "frames": 1},
            {"label": "3.74 um, dose / 80", "binning": 2, "pixels": 256, "views": 800,
             "exposure_s": 0.75, "frames": 1},
            {"label": "7.48 um, paper dose", "binning": 4, "pixels": 128, "views": 400,
             "exposure_s": 15.0, "frames": 8},
            {"label": "11.2 um, paper dose", "binning": 6, "pixels": 85, "views": 266,
             "exposure_s": 15.0, "frames": 12},
            {"label": "3.74 um, dose x 4", "binning": 2, "pixels": 256, "views": 800,
             "exposure_s": 15.0, "frames": 16},
            # the phantom at half the scan voxel and 2 x 2 rays per pixel ("auto"): are the
            # clean cathode's mottle and the 3-voxel recall from sampling the phantom at the
            # scan voxel with one ray per pixel?
            {"label": "3.74 um, paper dose, phantom 1.87 um", "binning": 2, "pixels": 256,
             "views": 800, "exposure_s": 15.0, "frames": 4, "phantom_voxel_um": 1.87},
            {"label": "3.74 um, paper dose, phantom 1.25 um", "binning": 2, "pixels": 256,
             "views": 800, "exposure_s": 15.0, "frames": 4, "phantom_voxel_um": 1.25}]
    return base[:1] + base[3:4] if quick else base


def run_one(s: dict, out: Path, seed: int) -> dict:
    from twin.run import run_scenario
    from twin.scenario import load_scenario

    over = [f"detector.pixels=[{s['pixels']}, {s['pixels']}]", f"geometry.binning={s['binning']}",
            f"detector.exposure_s={s['exposure_s']}", f"detector.frames={s['frames']}",
            f"geometry.projections={s['views']}",
            f"phantom.voxel_um={s.get('phantom_voxel_um', 3.74)}",
            "phantom.voi={center_mm=[0.0, 0.0, -0.125], size_mm=[1.0, 1.0, 0.16]}",
            "measure.render_3d=false", "measure.thickness_maps=[]", f"seed={seed}"]
    spec = load_scenario("pouch-highres", over)
    t0 = time.perf_counter()
    rep = run_scenario(spec, out, arch="cpu", quiet=True)
    return _row(s, rep["geometry"]["voxel_size_um"], time.perf_counter() - t0,
                rep["detectability"], rep["defects"])


def _row(s: dict, voxel_um: float, wall_s: float, det: dict, defects: dict) -> dict:
    """One result row: the setting, the void POD and the median void's d'."""
    pod = det["pod"].get("void", {})
    task = next((t for t in det.get("tasks", []) if t["kind"] == "void"), {})
    return {**s, "voxel_um": voxel_um, "wall_s": wall_s, "n": pod.get("n"), "hits": pod.get("n_hits"),
            "recall_at_least_3_vox": pod.get("recall_at_least_3_vox"),
            "recall_by_size": pod.get("recall_by_size"), "a50_um": pod.get("a50_um"),
            "a90_um": pod.get("a90_um"), "a90_95_um": pod.get("a90_95_um"), "fit": pod.get("fit"),
            "a_um": pod.get("a_um"), "hit": pod.get("hit"), "dprime_npw": task.get("dprime_npw"),
            "task_size_um": task.get("size_um"), "false_positives": defects["matched"].get("fp"),
            "false_positives_on_other_defects": len(defects["matched"].get("mistyped") or []),
            "edge_blur_sigma_um": (det.get("edge_blur") or {}).get("sigma_um")}


def remeasure_one(s: dict, out: Path) -> dict:
    """Measure an existing run folder again (same scan, current detector and scoring)."""
    from recon.io import read_volume
    from twin.measure import measure
    from twin.truth_io import read_truth

    t0 = time.perf_counter()
    old = json.loads((out / "report.json").read_text())
    rec = read_volume(out / "recon.h5")
    meas = measure(rec["volume"], float(rec["voxel_size_um"]), rec["origin_mm"],
                   truth=read_truth(out / "truth.h5"), kvp=60.0, thickness_maps=[])
    row = _row(s, old["geometry"]["voxel_size_um"], time.perf_counter() - t0,
               meas["detectability"], meas["defects"])
    row["remeasured"] = True
    return row


def figure(rows: list[dict], path: Path) -> None:
    from recon.figures import _fig, _save
    from recon.pod import pod_curve

    fig = _fig((6.5, 4.2))
    ax = fig.add_subplot(111)
    xs = np.geomspace(4, 40, 200)
    for r in rows:
        if r.get("fit"):
            ax.plot(xs, pod_curve(r["fit"], xs), label=f"{r['label']}: a90 {r['a90_um']:.1f} um")
    ax.axhline(0.9, color="0.6", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("void diameter a, um")
    ax.set_ylabel("POD")
    ax.set_title("Pouch cathode voids: POD(a) vs exposure and voxel")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/pouch_pod"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="two settings only")
    ap.add_argument("--only", nargs="+", default=None, help="labels of the settings to run "
                    "(results.json then gains or replaces those rows)")
    ap.add_argument("--remeasure", action="store_true",
                    help="measure the existing run folders again instead of scanning")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    res_p = a.out / "results.json"
    if (a.only or a.remeasure) and res_p.exists():
        rows = [r for r in json.loads(res_p.read_text())
                if a.only and r["label"] not in a.only]
    for s in settings(a.quick):
        if a.only and s["label"] not in a.only:
            continue
        folder = a.out / s["label"].replace(" ", "").replace(",", "_").replace("/", "over")
        r = remeasure_one(s, folder) if a.remeasure else run_one(s, folder, a.seed)
        rows.append(r)
        fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        print(f"{r['label']:16s} voxel {r['voxel_um']:.2f} um: {r['n']} voids, {r['hits']} hits, "
              f"recall(>=3 vox) {fmt(r['recall_at_least_3_vox'])}, a50 {fmt(r['a50_um'])}, "
              f"a90 {fmt(r['a90_um'])}, a90/95 {fmt(r['a90_95_um'])} um, d' {fmt(r['dprime_npw'])}, "
              f"fp {r['false_positives']} [{r['wall_s']:.0f} s]", flush=True)
    order = [s["label"] for s in settings(False)]
    rows.sort(key=lambda r: order.index(r["label"]) if r["label"] in order else len(order))
    from twin.atomic import write_text_atomic

    write_text_atomic(res_p, json.dumps(rows, indent=1, default=float))
    figure(rows, a.out / "pod_vs_settings.png")


if __name__ == "__main__":
    main()
