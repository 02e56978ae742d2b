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
import math
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from twin.atomic import write_text_atomic
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
#: Millimetre paths (strong attenuation and beam hardening): 0.4x objective (CsI screen), a
#: 2.5 mm LFP-cathode cylinder with an 80 um void, 96^2 detector, 50 ms exposures (the 0.4x
#: screen pixel collects 100x the flux of the 4x one: longer exposures saturate the flats).
LONG_PATH = {
    "scenario": "pouch-highres", "task": "void:80um@cathode", "pixels": 96,
    "common": {"geometry.projections": 180, "geometry.objective": "0.4x", "geometry.binning": 2},
    "settings": [
        {"source.kvp": 40, "source.filter": "LE1", "detector.exposure_s": 0.05, "geometry.binning": 2},
        {"source.kvp": 60, "source.filter": "LE2", "detector.exposure_s": 0.05, "geometry.binning": 2},
        {"source.kvp": 90, "source.filter": "LE6", "detector.exposure_s": 0.05, "geometry.binning": 2},
        {"source.kvp": 150, "source.filter": "HE4", "detector.exposure_s": 0.05, "geometry.binning": 2},
    ]}
#: A planar task (the NiMH question): a 5 um electrolyte gap, 100 um across, normal in the x-y
#: plane, in a Ni(OH)2 positive-electrode cylinder, on the NiMH zoom scan's instrument.
DELAMINATION = {
    "scenario": "nimh-zoom", "task": "delamination:5um@nimh_positive;extent=100um", "pixels": 128,
    "settings": [
        {"source.kvp": 160, "source.filter": "HE6", "detector.exposure_s": 8.0, "geometry.binning": 2},
        {"source.kvp": 160, "source.filter": "HE6", "detector.exposure_s": 2.0, "geometry.binning": 4},
        {"source.kvp": 100, "source.filter": "HE2", "detector.exposure_s": 8.0, "geometry.binning": 2},
        {"source.kvp": 60, "source.filter": "LE4", "detector.exposure_s": 8.0, "geometry.binning": 2},
    ]}


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
    se = np.array([r["d_prime_se"] for r in rows])
    rho = float(spearmanr(meas, pred).statistic) if len(rows) > 2 else float("nan")
    # pairs whose measured d' differ by more than twice their combined standard error must be
    # ordered the same way by the model; closer pairs are ties of the measurement
    resolved, discordant = 0, []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if abs(meas[i] - meas[j]) > 2.0 * math.hypot(se[i], se[j]):
                resolved += 1
                if np.sign(meas[i] - meas[j]) != np.sign(pred[i] - pred[j]):
                    discordant.append((i + 1, j + 1))
    return {"scenario": scenario, "task": task, "pixels": pixels, "common": common, "rows": rows,
            "max_abs_rel_err_dprime": float(np.max(np.abs(pred / meas - 1))),
            "max_abs_rel_err_cnr": float(np.max(np.abs([r["rel_err_cnr"] for r in rows]))),
            "spearman_dprime": rho,
            "same_ranking": bool(np.array_equal(np.argsort(meas), np.argsort(pred))),
            "resolved_pairs": resolved, "discordant_resolved_pairs": discordant,
            "same_ranking_within_uncertainty": not discordant}


def to_markdown(res: dict) -> str:
    lines = [f"Scenario `{res['scenario']}`, task `{res['task']}`, {res['pixels']}^2 detector, "
             f"{res['common']}.", "",
             "| # | kV | filter | exposure s | binning | voxel um | d' measured (+- SE) | d' model | error | "
             "CNR measured | CNR model | error |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(res["rows"]):
        s = r["setting"]
        lines.append(f"| {i + 1} | {s['source.kvp']} | {s['source.filter']} | {s['detector.exposure_s']} | "
                     f"{s['geometry.binning']} | {r['voxel_um']:.2f} | {r['d_prime']:.2f} +- {r['d_prime_se']:.2f} | "
                     f"{r['d_prime_model']:.2f} | {100 * r['rel_err_dprime']:+.1f} % | {r['cnr']:.2f} | "
                     f"{r['cnr_model']:.2f} | {100 * r['rel_err_cnr']:+.1f} % |")
    lines += ["", f"Largest |error| of d': {100 * res['max_abs_rel_err_dprime']:.1f} %; of CNR: "
              f"{100 * res['max_abs_rel_err_cnr']:.1f} %. Spearman rank correlation of d': "
              f"{res['spearman_dprime']:.3f}; identical ranking: {res['same_ranking']}; pairs resolved by "
              f"the measurement (|difference| > 2 SE): {res['resolved_pairs']}, of which ordered "
              f"differently by the model: {len(res['discordant_resolved_pairs'])}."]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="3 settings only")
    ap.add_argument("--pixels", type=int, default=96)
    ap.add_argument("--delamination", action="store_true",
                    help="the planar NiMH task (DELAMINATION) instead of the pouch void")
    ap.add_argument("--long-path", action="store_true",
                    help="millimetre paths with a 0.4x objective (LONG_PATH)")
    a = ap.parse_args(argv)
    if a.delamination or a.long_path:
        D = DELAMINATION if a.delamination else LONG_PATH
        res = compare(D["settings"], pixels=D["pixels"], scenario=D["scenario"], task=D["task"],
                      common=D.get("common", COMMON))
    else:
        res = compare(QUICK if a.quick else SETTINGS, pixels=a.pixels)
    md = to_markdown(res)
    print(md)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(a.out / "validation.json", json.dumps(res, indent=1, default=str))
        write_text_atomic(a.out / "validation.md", md + "\n")


if __name__ == "__main__":
    main()
