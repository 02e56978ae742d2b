"""Fast model vs full simulation at settings spanning kV, filter, exposure and voxel size.

``python -m twin.optimise.validate [--out DIR] [--quick]`` simulates each setting with
:func:`twin.optimise.fullsim.full_simulation` (a 15 um electrolyte-filled void in an LFP-cathode
cylinder, the pouch scenario's instrument on a small detector), measures d' and CNR on the FDK
reconstruction and prints them beside the fast model's predictions, the relative error and the
two rankings (Spearman rho). Results go to ``DIR/validation.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from twin.optimise.fullsim import full_simulation
from twin.scenario import load_scenario

SCENARIO = "pouch-highres"
TASK = "void:15um@cathode"
COMMON = {"geometry.projections": 180}
#: 8 settings: kV + filter (4), exposure (2 more), voxel size via binning (2 more).
SETTINGS = [
    {"source.kvp": 60, "source.filter": "LE2", "detector.exposure_s": 2.0, "geometry.binning": 2},
    {"source.kvp": 40, "source.filter": "LE1", "detector.exposure_s": 2.0, "geometry.binning": 2},
    {"source.kvp": 90, "source.filter": "LE4", "detector.exposure_s": 2.0, "geometry.binning": 2},
    {"source.kvp": 130, "source.filter": "HE2", "detector.exposure_s": 4.0, "geometry.binning": 2},
    {"source.kvp": 60, "source.filter": "LE2", "detector.exposure_s": 0.5, "geometry.binning": 2},
    {"source.kvp": 60, "source.filter": "LE2", "detector.exposure_s": 8.0, "geometry.binning": 2},
    {"source.kvp": 60, "source.filter": "LE2", "detector.exposure_s": 2.0, "geometry.binning": 1},
    {"source.kvp": 60, "source.filter": "LE2", "detector.exposure_s": 2.0, "geometry.binning": 4},
]
QUICK = [SETTINGS[1], SETTINGS[3], SETTINGS[7]]


def compare(settings=SETTINGS, *, pixels: int = 96, scenario: str = SCENARIO, task: str = TASK,
            common=COMMON) -> dict:
    """Run the comparison; returns rows and summary statistics."""
    base = load_scenario(scenario)
    rows = []
    for s in settings:
        t0 = time.perf_counter()
        ov = {**common, **s}
        r = full_simulation(base, ov, task, pixels=pixels, max_views=None)
        r.update({"setting": s, "seconds": time.perf_counter() - t0,
                  "rel_err_dprime": r["d_prime_model"] / r["d_prime"] - 1.0,
                  "rel_err_cnr": r["cnr_model"] / r["cnr"] - 1.0})
        rows.append(r)
    meas = np.array([r["d_prime"] for r in rows])
    pred = np.array([r["d_prime_model"] for r in rows])
    rho = float(spearmanr(meas, pred).statistic) if len(rows) > 2 else float("nan")
    return {"scenario": scenario, "task": task, "pixels": pixels, "common": common, "rows": rows,
            "max_abs_rel_err_dprime": float(np.max(np.abs(pred / meas - 1))),
            "max_abs_rel_err_cnr": float(np.max(np.abs([r["rel_err_cnr"] for r in rows]))),
            "spearman_dprime": rho,
            "same_ranking": bool(np.array_equal(np.argsort(meas), np.argsort(pred)))}


def to_markdown(res: dict) -> str:
    lines = [f"Scenario `{res['scenario']}`, task `{res['task']}`, {res['pixels']}^2 detector, "
             f"{res['common']}.", "",
             "| # | kV | filter | exposure s | binning | voxel um | d' measured | d' model | error | "
             "CNR measured | CNR model | error |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(res["rows"]):
        s = r["setting"]
        lines.append(f"| {i + 1} | {s['source.kvp']} | {s['source.filter']} | {s['detector.exposure_s']} | "
                     f"{s['geometry.binning']} | {r['voxel_um']:.2f} | {r['d_prime']:.2f} | "
                     f"{r['d_prime_model']:.2f} | {100 * r['rel_err_dprime']:+.1f} % | {r['cnr']:.2f} | "
                     f"{r['cnr_model']:.2f} | {100 * r['rel_err_cnr']:+.1f} % |")
    lines += ["", f"Largest |error| of d': {100 * res['max_abs_rel_err_dprime']:.1f} %; of CNR: "
              f"{100 * res['max_abs_rel_err_cnr']:.1f} %. Spearman rank correlation of d': "
              f"{res['spearman_dprime']:.3f}; identical ranking: {res['same_ranking']}."]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="3 settings only")
    ap.add_argument("--pixels", type=int, default=96)
    a = ap.parse_args(argv)
    res = compare(QUICK if a.quick else SETTINGS, pixels=a.pixels)
    md = to_markdown(res)
    print(md)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "validation.json").write_text(json.dumps(res, indent=1, default=str))
        (a.out / "validation.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
