"""CTSimU 2D qualification tests through the toolbox's own evaluation.

Runs the 2D tests whose scenarios ship in the ``ctsimu`` package (2D-FB-1, 2D-FB-2, 2D-HS-1,
2D-WE-1, 2D-WE-2, 2D-DW-1) with xrm-twin (``twin.ctsimu.run``), evaluates the output with
``ctsimu.toolbox.Toolbox`` and writes the toolbox's numbers and plots into
``docs/validation.md`` and ``docs/figures/ctsimu_*.png``.

Usage::

    python scripts/ctsimu_validation.py [--work DIR] [--tests FB-2,HS-1] [--supersample 4]
                                        [--no-docs]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: test -> (toolbox name, {subtest keyword: scenario file in ctsimu/evaluation/scenarios})
TESTS = {
    "FB-2": ("2D-FB-2", {None: "2D-FB-2_2021-03-24v06r00dp.json"}),
    "HS-1": ("2D-HS-1", {None: "2D-HS-1_2021-03-24v02r00dp.json"}),
    "FB-1": ("2D-FB-1", {"SNR100": "2D-FB-1_Detektor1_SNR100_2021-05-25v06r00dp.json",
                         "SNR250": "2D-FB-1_Detektor2_SNR250_2021-05-25v06r00dp.json"}),
    "WE-2": ("2D-WE-2", {None: "2D-WE-2_2021-10-13v02r03dp.json"}),
    "WE-1": ("2D-WE-1", {"spot1": "2D-WE-1_Spot1_2021-10-13v02r04dp.json",
                         "spot2": "2D-WE-1_Spot2_2021-10-13v02r04dp.json"}),
    "DW-1": ("2D-DW-1", {"SR75": "2D-DW-1_Detektor1_2021-05-26v01r01dp.json",
                         "SR150": "2D-DW-1_Detektor2_2021-05-26v01r01dp.json"}),
}


def scenario_dir() -> Path:
    import ctsimu

    return Path(ctsimu.__file__).parent / "evaluation" / "scenarios"


def patch_toolbox_for_numpy2() -> None:
    """Work around a NumPy-2 incompatibility of ctsimu 1.7.0's 2D-HS-1 report.

    ``test2D_HS_1.followUp`` formats ``" " * (scale >= 0)`` where ``scale`` is a NumPy float,
    so the comparison is a ``numpy.bool``, which NumPy 2 no longer accepts as a repeat count.
    Returning Python floats from ``Vector.distance`` and ``Vector.angle`` fixes the report; the
    numbers are unchanged.
    """
    from ctsimu.primitives import Vector

    if getattr(Vector, "_xrm_twin_patched", False):
        return
    dist, ang = Vector.distance, Vector.angle
    Vector.distance = lambda self, *a, **k: float(dist(self, *a, **k))
    Vector.angle = lambda self, *a, **k: float(ang(self, *a, **k))
    Vector._xrm_twin_patched = True


def run_test(key: str, work: Path, *, supersample: int = 2, arch: str = "auto",
             edge_tilts_deg: tuple[float, float] | None = None) -> dict:
    """Simulate one test's subtests and evaluate them with the toolbox.

    ``edge_tilts_deg`` (diagnostics): tilts (near-horizontal, near-vertical image edge) of the
    two edges of the WE stand-in edge instead of 3 deg
    (:func:`twin.ctsimu.assets.prepare_test_folder`).

    Returns a dict with ``test``, ``result_dir``, ``timing_s`` and ``log`` (toolbox output).
    """
    from ctsimu.toolbox import Toolbox

    from twin.ctsimu.assets import prepare_test_folder
    from twin.ctsimu.reader import read_scenario
    from twin.ctsimu.run import run_to

    name, subs = TESTS[key]
    folder = work / name
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    metas = {}
    notes = []
    for sub, file in subs.items():
        scen = prepare_test_folder(scenario_dir() / file, folder / "scenario", edge_tilts_deg=edge_tilts_deg)
        sc = read_scenario(scen, approximate=False)
        tag = sub or name
        res = run_to(sc, folder, supersample=supersample, arch=arch, name=tag)
        metas[sub] = res["metadata"]
        notes += res["notes"]
    t_sim = time.perf_counter() - t0
    patch_toolbox_for_numpy2()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if None in metas:
            Toolbox(name, metas[None])
        else:
            Toolbox(name, **metas)
    res = {"test": name, "result_dir": folder / f"{name}-results", "log": buf.getvalue(),
           "timing_s": {"simulate": t_sim, "evaluate": time.perf_counter() - t0 - t_sim},
           "notes": sorted(set(notes)), "supersample": supersample,
           "edge_tilts_deg": list(edge_tilts_deg) if edge_tilts_deg else None}
    (folder / "run.json").write_text(json.dumps({k: v for k, v in res.items() if k not in ("result_dir", "log")},
                                                indent=1))
    (folder / "toolbox.log").write_text(buf.getvalue())
    return res


def load_run(key: str, work: Path) -> dict | None:
    """A finished run of ``key`` in ``work`` (``--reuse``), or None."""
    name = TESTS[key][0]
    f = work / name / "run.json"
    if not f.is_file():
        return None
    res = json.loads(f.read_text())
    res["result_dir"] = work / name / f"{name}-results"
    log = work / name / "toolbox.log"
    res["log"] = log.read_text() if log.is_file() else ""
    return res


# ------------------------------------------------------------------------------ parsing
def _num(pattern: str, text: str):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def _read(d: Path, glob: str) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in sorted(d.glob(glob))}


#: Acceptance used in docs/validation.md where the toolbox itself applies no pass/fail.
CRITERIA = {
    "2D-FB-2": "max |analytical - measured| <= 1 GV on the profile (uint16 rounding is 0.5 GV), "
               "relative deviation <= 0.1 %",
    "2D-FB-1": "|SNR / nominal - 1| <= 2 % and |mean / 60000 - 1| <= 0.1 %",
    "2D-HS-1": "|scale deviation| <= 1e-3, |rotation| <= 0.05 deg, |mean translation| <= 0.5 px",
    "2D-WE-1": "|MTF20 / analytical MTF20 - 1| <= 5 %",
    "2D-WE-2": "ratio r >= 99 % and |M| within 2 % of |A|",
    "2D-DW-1": "|iSRb / nominal SRb - 1| <= 10 %",
}


#: Cause of results outside the criterion (written under the test's table when a row fails).
DISCUSSION = {
    "2D-DW-1": (
        "**Outside.** The detector PSF comes from the duplex-wire model of `twin.ctsimu.unsharpness` "
        "(docs/ctsimu.md); a failure here means the simulated profile departs from that model "
        "(sub-pixel integration, contrast) or the toolbox's interpolation does."),
    "2D-WE-2": (
        "**Outside: r is below 99 % because the toolbox's reference edges are not at 3 deg.** "
        "`test2D_WE_2` builds its clipping polygon by rotating (0, 300) and (-300, 0) by 3 deg with "
        "`Vector.rotate_2D_xy`, which in ctsimu 1.7.0 computes the new y from the already rotated x "
        "(a 90 deg turn of (1, 0) gives (0, 0); `tests/test_ctsimu_toolbox.py`). Its reference edges "
        "are therefore at 3.0082 deg (the near-vertical edge, from (0, 300)) and 2.9959 deg (the "
        "near-horizontal one, from (-300, 0)): the analytical image matches the exact shadow of those "
        "tilts to 6 GV RMS (3577 GV with the two tilts swapped) and differs from the 3 deg shadow by "
        "1900 GV RMS (rows *xrm-twin check*). "
        "The scenario's edge is tilted by 3 deg, and so is the stand-in: the edges of the two images "
        "drift apart linearly from the corner, to 0.07 px at the far end (500 px at 8 um), and pixels "
        "near the ends are partly covered in one image and not the other. Against the exact 3 deg "
        "shadow the simulated image has every partly covered pixel right (|E| = 1053, none missing, "
        "none extra; the toolbox's documentation of this test also gives |A| = 1053) and an RMSD of "
        "118 GV, within the coverage resolution of 24 sub-ray steps per pixel. With the stand-in edge drawn "
        "at the reference polygon's tilts instead (diagnostic run below) the toolbox finds r = 100 % "
        "(|M| = 1053 against |A| = 1050 there: the three extra pixels are clipped by 0.6, 4.5 and "
        "0.3 GV of the exact shadow, and the analytical image reads -91, -65 and 60000 GV for them)."),
}

#: Notes written under a test's table whatever the outcome.
NOTES = {
    "2D-DW-1": (
        "Detector PSF: Gaussian with sigma from the scenario's SRb by the duplex-wire model "
        "`twin.ctsimu.unsharpness.sigma_for_srb_mm` (Gaussian PSF, pixel aperture and the phase "
        "average of the tilted read-out; derived and checked against the toolbox's own "
        "`isrb.Interpolation` and `Image.lineProfile` in docs/ctsimu.md, not fitted to this test): "
        "48.9 um for SRb 75 um and 104.1 um for 150 um at 50 um pixels. The former mapping, sigma = "
        "0.571 SRb, gave iSRb 64.24 and 122.38 um here."),
    "2D-WE-2": (
        "Sub-pixel integration: 24 sub-ray steps per pixel side with the pixel's edges and corners "
        "included (`twin.ctsimu.run.subpixel_rule`), so a pixel the edge clips however little reads "
        "partly covered. The former interior 24 x 24 grid gave |M| = 1207, r = 95.24 % (with the "
        "float32 ray set-up of the projector at the time)."),
}


def rows_for(res: dict) -> list[dict]:
    """Table rows (quantity, measured, reference, ok) from the toolbox's result files."""
    d, name = res["result_dir"], res["test"]
    rows = []

    def row(q, meas, ref, ok, unit=""):
        rows.append({"quantity": q, "measured": meas, "reference": ref, "unit": unit,
                     "ok": None if ok is None else bool(ok)})

    if name == "2D-FB-2":
        for fn, t in _read(d, "*summary.txt").items():
            mx = _num(r"Max Absolute GV Difference:\s*([-\d.eE+]+)", t)
            rms = _num(r"RMS GV Difference:\s*([-\d.eE+]+)", t)
            rel = [abs(float(l.split("\t")[4])) for l in t.splitlines() if l and l[0].isdigit()]
            row("max |analytical - measured| on the central row", mx, 0.0, mx is not None and mx <= 1.0, "GV")
            row("RMS difference", rms, 0.0, rms is not None and rms <= 1.0, "GV")
            row("max relative deviation (inverse square x cos alpha profile)", max(rel) if rel else None, 0.0,
                bool(rel) and max(rel) <= 0.1, "%")
    elif name == "2D-FB-1":
        for fn, t in _read(d, "*summary.txt").items():
            sub = fn.split("_")[1]
            snr, nom = _num(r"Overall projection SNR:\s*([-\d.]+)", t), _num(r"Nominal SNR:\s*([-\d.]+)", t)
            mean = _num(r"Mean grey value:\s*([-\d.]+)", t)
            row(f"{sub}: SNR", snr, nom, snr and abs(snr / nom - 1) <= 0.02)
            row(f"{sub}: mean grey value (flat-field corrected)", mean, 60000.0, mean and abs(mean / 6e4 - 1) <= 1e-3, "GV")
            row(f"{sub}: RMSD", _num(r"Measured RMSD:\s*([-\d.]+)", t), _num(r"Nominal RMSD:\s*([-\d.]+)", t),
                snr and abs(snr / nom - 1) <= 0.02, "GV")
    elif name == "2D-HS-1":
        for fn, t in _read(d, "*summary.txt").items():
            sc = _num(r"Mean scale deviation:\s*([-\d.eE+]+)", t)
            ang = _num(r"Mean rotation angle:.*?=\s*([-\d.eE+]+)\s*deg", t)
            m = re.search(r"Mean translation vector \[px\]: \[\s*([-\d.eE+]+)\s+([-\d.eE+]+)", t)
            row("mean scale deviation 1 - d_ideal/d_real", sc, 0.0, sc is not None and abs(sc) <= 1e-3)
            row("mean in-plane rotation", ang, 0.0, ang is not None and abs(ang) <= 0.05, "deg")
            if m:
                tx, ty = float(m.group(1)), float(m.group(2))
                row("mean translation x", tx, 0.0, abs(tx) <= 0.5, "px")
                row("mean translation y", ty, 0.0, abs(ty) <= 0.5, "px")
        if not rows:
            row("ten holes identified", 0, 10, False)
    elif name == "2D-WE-1":
        for fn, t in _read(d, "*summary.txt").items():
            sub = fn.split("_")[1]
            mm = re.findall(r"MTF20 (?:measured|analytical):.*?\n\s*\[cycles/mm\] = ([-\d.]+)", t)
            sig = re.findall(r"(?:measured|analytical):\s+sigma \[px\].*?\n\s*\[mm\] = ([-\d.eE+]+)", t)
            if len(mm) == 2:
                a, b = float(mm[0]), float(mm[1])
                row(f"{sub}: MTF20", a, b, abs(a / b - 1) <= 0.05, "cycles/mm")
            if len(sig) == 2:
                a, b = float(sig[0]) * 1000, float(sig[1]) * 1000
                row(f"{sub}: Gaussian LSF sigma", a, b, abs(a / b - 1) <= 0.05, "um")
    elif name == "2D-WE-2":
        for fn, t in _read(d, "*summary.txt").items():
            a = _num(r"\|A\| = .*?:\s*(\d+)", t)
            m = _num(r"\|M\| = .*?:\s*(\d+)", t)
            r = _num(r"r = .*?:\s*([-\d.]+)%", t)
            rmsd = _num(r"RMSD .*?:\s*([-\d.]+) GV", t)
            row("partly covered pixels |M| (measured) vs |A| (analytical)", m, a, a and m and abs(m / a - 1) <= 0.02)
            row("ratio r = covered in both / covered in analytical", r, 100.0, r is not None and r >= 99.0, "%")
            row("RMSD of partly covered pixels (reported, no criterion)", rmsd, 0.0, None, "GV")
        rows += we2_exact_rows(res)
    elif name == "2D-DW-1":
        for fn, t in _read(d, "*_results.txt").items():
            sub = fn.split("_")[1]
            isrb = _num(r"iSRb:\s*([-\d.]+) mm", t)
            nom = {"SR75": 0.075, "SR150": 0.150}.get(sub)
            row(f"{sub}: interpolated basic spatial resolution iSRb", isrb * 1000 if isrb is not None else None,
                nom * 1000 if nom else None, isrb and nom and abs(isrb / nom - 1) <= 0.10, "um")
    return rows


def toolbox_we2_polygon_tilts_deg() -> tuple[float, float]:
    """Tilts (deg) of the (near-vertical, near-horizontal) edges of the toolbox's 2D-WE-2
    reference polygon.

    ``test2D_WE_2`` clips its analytical image with the polygon (0, 0), (0, 300), (-300, 300),
    (-300, 0) in detector coordinates (x along the columns, y along the rows, down), its
    corners rotated by 3 deg with ``Vector.rotate_2D_xy``, which in ctsimu 1.7.0 computes the
    new y from the already rotated x. The edge to (0, 300), the image's near-vertical one, comes
    out tilted by ``atan(sin 3 / (cos 3 - sin^2 3)) = 3.0082`` deg to the rows' direction, the
    edge to (-300, 0), the near-horizontal one, by ``atan(sin 3) = 2.9959`` deg to the columns'
    direction, instead of 3 deg each.
    """
    import math

    from ctsimu.primitives import Vector

    b, d = Vector(0, 300, 0), Vector(-300, 0, 0)
    b.rotate_2D_xy(3 * (math.pi / 180.0))
    d.rotate_2D_xy(3 * (math.pi / 180.0))
    return math.degrees(math.atan2(-b.x(), b.y())), math.degrees(math.atan2(d.y(), d.x()) + math.pi)


def we2_exact_rows(res: dict) -> list[dict]:
    """xrm-twin's own check of 2D-WE-2: image and toolbox reference against exact shadows.

    The stand-in edge's shadow is a quadrant (:func:`twin.ctsimu.assets.edge_shadow_coverage`,
    exact pixel clipping, tilts in the order of the run's ``edge_tilts_deg``: near-horizontal,
    near-vertical edge); the toolbox's reference polygon has the tilts of
    :func:`toolbox_we2_polygon_tilts_deg`.
    """
    import numpy as np
    import tifffile

    from twin.ctsimu.assets import edge_shadow_coverage

    folder = Path(res["result_dir"]).parent
    proj, flat = folder / "2D-WE-2_0000.tif", folder / "2D-WE-2_flat_0000.tif"
    ana = Path(res["result_dir"]) / "2D-WE-2_analytical_edge_corrected.tif"
    if not (proj.is_file() and flat.is_file() and ana.is_file()):
        return []
    m = tifffile.imread(proj).astype(float) / tifffile.imread(flat).astype(float) * 60000.0
    a = tifffile.imread(ana).astype(float)
    t1, t2 = res.get("edge_tilts_deg") or (3.0, 3.0)  # near-horizontal, near-vertical edge
    cov = edge_shadow_coverage(*m.shape, t1, t2)
    e = (cov > 0) & (cov < 1)
    pm = (m > 0) & (m < 60000)
    out = []

    def row(q, meas, ref, ok, unit=""):
        out.append({"quantity": q, "measured": meas, "reference": ref, "unit": unit,
                    "ok": None if ok is None else bool(ok)})

    tag = f"exact shadow of the stand-in edge ({t2:.6g} deg near-vertical / {t1:.6g} deg near-horizontal)"
    row(f"xrm-twin check: pixels partly covered in the image and in the {tag} / all partly covered "
        f"in the shadow (|E| = {int(e.sum())})", float(100.0 * (pm & e).sum() / e.sum()), 100.0,
        (pm & e).sum() >= 0.99 * e.sum(), "%")
    row("xrm-twin check: pixels partly covered in the image but not in that shadow",
        int((pm & ~e).sum()), 0, (pm & ~e).sum() <= 0.02 * e.sum())
    row("xrm-twin check: RMSD image - exact shadow on its partly covered pixels (no criterion)",
        float(np.sqrt(np.mean((m - 60000.0 * (1 - cov))[e] ** 2))), 0.0, None, "GV")

    def rmsd_against(th, tv):
        cov_ref = edge_shadow_coverage(*m.shape, th, tv)
        sel = (cov_ref > 0) & (cov_ref < 1)
        return float(np.sqrt(np.mean((a - 60000.0 * (1 - cov_ref))[sel] ** 2)))

    tv, th = toolbox_we2_polygon_tilts_deg()  # from the polygon's construction, not fitted
    rms, rms_swapped = rmsd_against(th, tv), rmsd_against(tv, th)
    rms3 = float(np.sqrt(np.mean((a - 60000.0 * (1 - cov))[e] ** 2)))
    row(f"xrm-twin check: RMSD of the toolbox's analytical image against the exact shadow with the tilts "
        f"of its reference polygon ({tv:.4f} deg near-vertical / {th:.4f} deg near-horizontal edge; "
        f"with the two tilts swapped: {rms_swapped:.0f} GV; against the stand-in's shadow: {rms3:.0f} GV)",
        rms, 0.0, None, "GV")
    return out


#: Toolbox TIFFs rendered as figures for tests whose evaluation draws no plot.
RENDER = ("*_02_cleaned.tif", "*_03_edges.tif", "*_difference.tif")


def _render_tiffs(d: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    import tifffile

    out = []
    for pattern in RENDER:
        for tif in sorted(d.glob(pattern))[:1]:
            img = tifffile.imread(tif).astype(float)
            fig, ax = plt.subplots(figsize=(6, 6))
            im = ax.imshow(img, cmap="gray" if "difference" not in tif.name else "coolwarm")
            ax.set_title(f"{tif.name} (toolbox output)")
            fig.colorbar(im, ax=ax, shrink=0.8)
            png = d / (tif.stem + ".png")
            fig.savefig(png, dpi=90)
            plt.close(fig)
            out.append(png)
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_docs(results: list[dict], docs: Path, command: str) -> None:
    """docs/validation.md (CTSimU section) and docs/figures/ctsimu_*.png from toolbox output."""
    import platform
    from importlib.metadata import version

    figs = docs / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    lines = ["# Validation: CTSimU 2D qualification tests", "",
             f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             f"({platform.machine()}, {platform.system()}), ctsimu toolbox {version('ctsimu')}.",
             "",
             "Each test's scenario JSON is the one shipped in the `ctsimu` package; xrm-twin reads it "
             "(`twin.ctsimu.reader`), simulates it (`twin.ctsimu.run`) and the toolbox's own "
             "evaluation (`ctsimu.toolbox.Toolbox(\"2D-..\", ...)`, flat-field correction included) "
             "measures the output. The numbers below are copied from the toolbox's result files "
             "(rows marked *xrm-twin check* are our own computation beside them); the plots are the "
             "toolbox's.", "",
             "**Stand-in inputs.** The package ships the scenario files but not the STL models and "
             "spectrum CSVs they reference. `twin.ctsimu.assets` rebuilds them from the evaluation "
             "code: spectra with SpekPy (target, voltage, emission angle, window of the scenario), "
             "the tungsten edge of WE-1/WE-2 (corner on the central ray, both edges tilted by 3 deg as "
             "the test's documentation says, block size solved so that its bounding-box centre is the "
             "scenario's placement point), the hole foil of HS-1 (holes placed by ray casting through the "
             "scenario's deviated frames so they project on the evaluation's nominal spots; our frame "
             "code agrees with the toolbox's to 1e-9 mm, `tests/test_ctsimu_reader.py`) and the duplex "
             "wires of DW-1 (ISO 19232-5 diameters, gap = diameter, 15 mm long, 3 deg tilt, centred on the "
             "evaluation's profile; a 20 um marker cube beside the pattern shifts the model's bounding-box "
             "centre as the original's must be). HS-1 therefore checks that sample and detector "
             "deviations are applied consistently in the projector, not an independent foil drawing.", "",
             ("The runs were made with `--no-docs` (same code and settings) and this page assembled from "
              "them with `--reuse`; timings are wall-clock on a 2-core machine shared with other "
              "jobs.\n\n" if "--reuse" in command else "") +
             "**Criteria.** The toolbox reports deviations but applies no pass/fail; the column *ok* "
             "uses the criterion listed per test (ours, stated).", ""]
    for res in results:
        name = res["test"]
        rows = rows_for(res)
        lines += [f"## {name}", "", f"Criterion: {CRITERIA.get(name, '-')}. "
                  f"Simulation {res['timing_s']['simulate']:.0f} s, toolbox evaluation "
                  f"{res['timing_s']['evaluate']:.0f} s (supersampling {res.get('supersample', '?')}).", ""]
        if res.get("notes"):
            lines += ["Reader notes: " + "; ".join(res["notes"]), ""]
        lines += ["| quantity | measured | reference | unit | ok |", "|---|---|---|---|---|"]
        for r in rows:
            ok = "-" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
            q = r["quantity"].replace("|", "\\|")
            lines.append(f"| {q} | {_fmt(r['measured'])} | {_fmt(r['reference'])} | {r['unit']} | {ok} |")
        lines.append("")
        if any(r["ok"] is False for r in rows) and name in DISCUSSION:
            lines += [DISCUSSION[name], ""]
        if name in NOTES:
            lines += [NOTES[name], ""]
        for diag in res.get("diagnostics", []):
            lines += [f"**Diagnostic run** (not the test's input): {diag['title']}. Simulation "
                      f"{diag['timing_s']['simulate']:.0f} s, toolbox evaluation {diag['timing_s']['evaluate']:.0f} s.",
                      "", "| quantity | measured | reference | unit | ok |", "|---|---|---|---|---|"]
            for r in [r for r in rows_for(diag) if not r["quantity"].startswith("xrm-twin check")]:
                ok = "-" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
                q = r["quantity"].replace("|", "\\|")
                lines.append(f"| {q} | {_fmt(r['measured'])} | {_fmt(r['reference'])} | {r['unit']} | {ok} |")
            lines.append("")
        pngs = sorted(res["result_dir"].glob("*.png")) or _render_tiffs(res["result_dir"])
        for png in pngs:
            dst = figs / f"ctsimu_{png.name}"
            shutil.copyfile(png, dst)
            lines += [f"![{png.stem}](figures/{dst.name})", ""]
    lines += ["## Reproduce", "", "```bash", "pip install ctsimu reportlab pandas   # the toolbox imports reportlab and pandas",
              "python scripts/ctsimu_validation.py            # all six tests, writes this page",
              "python scripts/ctsimu_validation.py --tests FB-2,HS-1 --no-docs   # the quick ones",
              "python scripts/ctsimu_validation.py --work /tmp/cv_diag --tests WE-2 --no-docs \\",
              "    --we-edge-tilts-deg 2.995896,3.008236      # WE-2 diagnostic: near-horizontal, near-vertical tilt",
              "python scripts/ctsimu_validation.py --reuse --work /tmp/cv_all --we2-diagnostic-work /tmp/cv_diag",
              "pytest tests/test_ctsimu_*.py                  # CI: FB-2 and HS-1 through the toolbox, the unit checks",
              "```", "",
              "The toolbox's own analytical images for WE-1 and WE-2 are computed pixel by pixel in "
              "Python (about 5 CPU minutes each); most of the run time is that evaluation.", ""]
    (docs / "validation.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "build" / "ctsimu-validation"))
    ap.add_argument("--tests", default=",".join(TESTS))
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--supersample-we2", type=int, default=24,
                    help="supersampling for WE-2 (partial pixel coverage needs more rays)")
    ap.add_argument("--arch", default="auto")
    ap.add_argument("--we-edge-tilts-deg", default=None,
                    help="diagnostics: 'TH,TV' tilts (deg) of the WE stand-in edge's near-horizontal and "
                         "near-vertical image edges (default 3,3)")
    ap.add_argument("--we2-diagnostic-work", default=None,
                    help="a --work folder holding a WE-2 run made with --we-edge-tilts-deg: shown under "
                         "2D-WE-2 as a diagnostic")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="use finished runs found in --work (run.json) instead of running them again")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for key in args.tests.split(","):
        ss = args.supersample if key.strip() != "WE-2" else max(args.supersample, args.supersample_we2)
        r = load_run(key.strip(), work) if args.reuse else None
        if r is None:
            tilts = tuple(float(v) for v in args.we_edge_tilts_deg.split(",")) if args.we_edge_tilts_deg else None
            r = run_test(key.strip(), work, supersample=ss, arch=args.arch, edge_tilts_deg=tilts)
        print(f"{r['test']}: simulate {r['timing_s']['simulate']:.1f} s, evaluate {r['timing_s']['evaluate']:.1f} s")
        if r["test"] == "2D-WE-2" and args.we2_diagnostic_work:
            d = load_run("WE-2", Path(args.we2_diagnostic_work))
            if d is None or not d.get("edge_tilts_deg"):
                raise SystemExit(f"no WE-2 diagnostic run (with --we-edge-tilts-deg) in {args.we2_diagnostic_work}")
            t1, t2 = d["edge_tilts_deg"]
            d["title"] = (f"the stand-in edge drawn at the tilts of the toolbox's reference polygon, "
                          f"{t2:.6g} deg (near-vertical edge) and {t1:.6g} deg (near-horizontal), "
                          f"`--we-edge-tilts-deg {t1:.7g},{t2:.7g}`, same code and settings")
            r["diagnostics"] = [d]
        results.append(r)
    summary = [{"test": r["test"], "rows": rows_for(r), "timing_s": r["timing_s"], "notes": r["notes"]}
               for r in results]
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    for s_ in summary:
        for row in s_["rows"]:
            print(f"  {s_['test']}: {row['quantity']}: {_fmt(row['measured'])} vs {_fmt(row['reference'])} "
                  f"{row['unit']} {'-' if row['ok'] is None else ('ok' if row['ok'] else 'NOT OK')}")
    if not args.no_docs:
        cmd = "python scripts/ctsimu_validation.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_docs(results, ROOT / "docs", cmd.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
