"""0 vs 120 cycles on the NiMH phantom's truth labels: delamination, cracks, change maps.

Run:  python bench/nimh_ageing_check.py [--voxel-um 10]

Not a scan: the truth label grids of the two ageing states (same VOI, same seed) are measured
directly for delamination (recon.defects.detect_delamination, 3-D mode for the curved winding)
and change maps (recon.registration.change_map); cracks are searched on a synthetic grey volume
made from the labels (a grey level per label, Gaussian blur 0.8 voxel, 5 % noise). The numbers
printed are the detector's agreement with the phantom's defect table inside the VOI.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

from phantoms.registry import build
from recon import defects as df
from recon import registration as rg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxel-um", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    vs = a.voxel_um
    voi = dict(center_mm=(2.5, 0.0, 22.0), size_mm=(2.0, 2.0, 3.0))
    grids = {}
    for cyc in (0, 120):
        g, defects, _ = build("nimh_aaa", {"cycles": cyc}, seed=a.seed).truth(vs, **voi)
        grids[cyc] = (g, defects)
    g1, d1 = grids[120]
    lab0, lab1 = grids[0][0].labels, g1.labels
    name = {n: i for i, n in enumerate(g1.component_names)}
    origin = g1.origin_mm
    print(f"grid {lab1.shape} at {vs} um, origin {origin}")

    t = time.perf_counter()
    det = df.detect_delamination(lab1, name["negative_active"], name["negative_foil"], vs,
                                 origin_mm=origin, axis=None, max_gap_um=60.0)
    truth_del = [d for d in d1 if d["type"] == "delamination"]
    m = df.match_defects(det, truth_del, vs)
    vol_det = sum(d["volume_mm3"] for d in det)
    vol_truth = float((lab1 == name["delamination"]).sum()) * (vs / 1000) ** 3
    print(f"delamination: {len(truth_del)} truth, {len(det)} detected, tp {m['tp']} fp {m['fp']} "
          f"fn {m['fn']}; gap volume detected {vol_det:.5f} vs truth {vol_truth:.5f} mm3 "
          f"({100 * (vol_det / vol_truth - 1):+.1f} %) [{time.perf_counter() - t:.1f} s]")

    c = rg.change_map(lab0.astype(np.float32), lab1.astype(np.float32), vs, labels_before=lab0,
                      labels_after=lab1, names={name["delamination"]: "delamination",
                                                name["crack"]: "crack"})
    for k, v in c["labels"].items():
        print(f"change map {k}: appeared {v['appeared_mm3']:.5f} mm3 (after {v['volume_after_mm3']:.5f})")

    lut = np.zeros(len(g1.component_names), np.float32)
    for n, val in (("negative_active", 1.0), ("negative_foil", 2.0), ("separator", 0.3),
                   ("positive_electrode", 1.2), ("ni_foam", 2.5), ("electrolyte", 0.3),
                   ("delamination", 0.3), ("crack", 0.3), ("positive_paste", 1.2)):
        lut[name[n]] = val
    rng = np.random.default_rng(0)
    grey = ndi.gaussian_filter(lut[lab1], 0.8) + rng.normal(0, 0.05, lab1.shape).astype(np.float32)
    host = np.isin(lab1, [name["positive_electrode"], name["positive_paste"], name["ni_foam"],
                          name["crack"]])
    t = time.perf_counter()
    cr = df.detect_cracks(grey, host, vs, origin_mm=origin)
    truth_cr = [d for d in d1 if d["type"] == "crack"]
    m = df.match_defects(cr, truth_cr, vs)
    print(f"cracks: {len(truth_cr)} truth rows (centres may lie outside the VOI), {len(cr)} "
          f"detected, tp {m['tp']} fp {m['fp']} fn {m['fn']}; false positives' sizes (voxels): "
          f"{sorted(cr[i]['n_voxels'] for i in m['false_positives'])} "
          f"[{time.perf_counter() - t:.1f} s]")


if __name__ == "__main__":
    main()
