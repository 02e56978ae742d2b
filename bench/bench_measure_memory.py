"""Peak memory and time of the ``measure`` stage against the volume size (issue 10).

A zoom-scan-like volume is made from the NiMH phantom's truth at the paper's 3.62 um voxel
(an N^3 VOI in the winding): attenuation at 60 keV per material (xraydb), Gaussian blur of
1 voxel, Gaussian noise of 8 % of the attenuation range. ``twin.measure.measure`` then runs
with the truth, as ``xrm-twin measure --truth`` does, under ``tracemalloc`` (numpy reports
its arrays to it; the surface slabs meshed on forked workers are counted as well, through
:func:`recon.slabs.forked_peak_bytes`). The figures quoted are the traced peak in float32
volumes of the input, and the input plus that peak against the arrays the stage must hold
(its inputs: the volume, the truth on its grid and the field-of-view mask; its outputs:
labels, truth labels, defect map and thickness maps; issue 10 asks for at most 1.5x). The first figure is what
``twin.resources.MEASURE_PEAK_VOLUMES`` is set from, so that ``xrm-twin run`` refuses
a scan whose measurement cannot fit before it simulates for hours.

Usage::

    python bench/bench_measure_memory.py --sizes 256,384 --json bench/results/measure_memory.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def zoom_like(n: int, seed: int = 1, cycles: int = 0, center_mm=(2.5, 0.0, 10.0)):
    """An N^3 NiMH VOI at 3.623 um: (volume 1/mm float32, truth dict, voxel um, origin mm).

    ``cycles`` ages the cell (120: the paper's cracks and delamination, which the measurement
    then searches for, the plane filter of the cracks included)."""
    import phantoms
    from scipy import ndimage
    from twin.truth_io import read_truth, write_truth
    import tempfile

    vs_um = 3.623
    size_mm = n * vs_um / 1000.0
    ph = phantoms.build("nimh_aaa", {"cycles": int(cycles)}, seed=seed)
    grid, defects, instances = ph.truth(vs_um, tuple(float(c) for c in center_mm), (size_mm,) * 3)
    with tempfile.TemporaryDirectory() as tmp:  # the truth as `measure` reads it
        write_truth(Path(tmp) / "truth.h5", grid, defects, instances)
        truth = read_truth(Path(tmp) / "truth.h5")
    lut = np.zeros(len(grid.materials), np.float32)
    for i, m in enumerate(grid.materials[1:], start=1):
        lut[i] = m.mu_per_mm(np.array([60.0]))[0]
    vol = lut[grid.labels]
    ndimage.gaussian_filter(vol, 1.0, output=vol)
    vol += np.random.default_rng(0).standard_normal(vol.shape, dtype=np.float32) * 0.08 * float(np.ptp(lut))
    return vol, truth, vs_um, grid.origin_mm


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,384", help="VOI edges in voxels, comma separated")
    ap.add_argument("--cycles", type=int, default=0,
                    help="charge cycles of the cell (120: cracks and delamination to search for)")
    ap.add_argument("--center-mm", default="2.5,0,10",
                    help="VOI centre x,y,z in mm (2.28,0.98,10.62 is on a crack of the 120-cycle cell)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from recon.slabs import forked_peak_bytes
    from twin.measure import measure
    from twin.resources import MEASURE_PEAK_VOLUMES, MEASURE_PEAK_VOLUMES_CRACKS

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        vol, truth, vs_um, origin = zoom_like(n, cycles=args.cycles,
                                            center_mm=[float(c) for c in args.center_mm.split(",")])
        truth["instances"] = None  # not used by measure
        tracemalloc.start()
        forked_peak_bytes(reset=True)
        t0 = time.perf_counter()
        res = measure(vol, vs_um, origin, truth=truth, kvp=160.0, smooth_sigma_vox=0.5,
                      thickness_maps=["ni_foam"])
        wall = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        forked = forked_peak_bytes(reset=True)
        peak = max(peak, forked)  # the surface slabs meshed on forked workers counted too
        tracemalloc.stop()
        # what the stage must hold: its inputs (the volume, the truth on the volume's grid,
        # int16, and the field-of-view mask, bool) and its outputs
        outputs = (res["labels"].nbytes + res["truth_labels"].nbytes + res["defect_map"].nbytes
                   + sum(m.nbytes for m, _ in res["thickness_maps"].values()))
        must_hold = vol.nbytes + res["truth_labels"].nbytes + vol.size + outputs
        del res
        row = {"n": n, "cycles": args.cycles, "center_mm": args.center_mm, "defect_kinds": sorted({str(d.get("type", d.get("kind")))
                                                                      for d in truth.get("defects", [])}),
               "volume_bytes": vol.nbytes, "wall_s": wall, "peak_traced_bytes": peak,
               "peak_during_forked_work_bytes": forked,
               "peak_over_input_volumes": peak / vol.nbytes, "must_hold_bytes": must_hold,
               "input_plus_peak_over_must_hold": (vol.nbytes + peak) / must_hold}
        rows.append(row)
        used = MEASURE_PEAK_VOLUMES_CRACKS if "crack" in row["defect_kinds"] else MEASURE_PEAK_VOLUMES
        print(f"{n}^3: {wall:.1f} s, peak {peak / 2**30:.2f} GiB above the input = "
              f"{peak / vol.nbytes:.2f} volumes (the estimate uses {used:g} - 1 above the input); "
              f"input + peak = {row['input_plus_peak_over_must_hold']:.2f}x the "
              f"{must_hold / vol.nbytes:.2f} volumes the stage must hold", flush=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
           "processor": platform.processor(), "rows": rows, "MEASURE_PEAK_VOLUMES": MEASURE_PEAK_VOLUMES,
           "MEASURE_PEAK_VOLUMES_CRACKS": MEASURE_PEAK_VOLUMES_CRACKS}
    if args.json:
        from twin.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
