"""The shortest scan that finds a defect: optimiser and Pareto front (scan time vs d' and a90).

Variables (mixed): tube voltage ``source.kvp`` (continuous, 30-160 kV), power ``source.power_w``
(continuous, up to 25 W: more flux but a larger focal spot), ``source.filter`` (LE/HE library),
``geometry.objective`` and ``geometry.binning`` (discrete: voxel size, field of view, screen),
``detector.exposure_s`` (continuous) and ``geometry.projections`` (integer). The sample position
(``source_object_mm``, ``object_detector_mm``) stays the scenario's. The camera keeps its
physical sensor: ``detector.pixels = sensor / binning``.

Constraints: POD >= target (the fast model, :mod:`twin.optimise.fastmodel`); scan time <=
``max_hours`` (:mod:`twin.scan_time`); field of view >= ``min_fov_mm`` (default: the
scenario's, so the same volume is inspected); views >= ``pi/2 x columns`` (angular sampling of
the field's edge, which the fast model does not score); flat field <= 90 % of the full well;
optionally beam hardening along the path <= ``max_hardening`` (the fast model does not score
cupping and streaks, so without it unfiltered beams win).

Method (careful enumeration + local refinement):

1. For every discrete combination (filter x objective x binning) x a kV grid (``kv_step``) x a
   geometric power grid, the fast model at two exposures gives the coefficients of
   ``1/d'^2 = (A/t + B/t^2) / N`` (quantum and read-noise parts; ``t`` exposure, ``N`` views).
2. Given the d' the POD target needs (``d'_th + Phi^-1(POD)``), every (design, t) on a log grid
   of exposures has a least ``N``, hence a scan time; the least over the grid is the design's.
3. The best few designs are refined: kV by an integer golden-section search within one grid
   step, then power by ``scipy.optimize.minimize_scalar`` (bounded), the exposure grid being
   re-solved inside.
4. The Pareto front: for time budgets up to ``max_hours`` the largest d' any design reaches
   (views from the budget), then its a90.

A target no setting meets within ``max_hours`` is reported as infeasible with the best
achievable POD, d' and a90 and the settings that give them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import optimize
from scipy.special import ndtri

from twin.atomic import atomic_path, write_text_atomic
from twin.errors import XrmInputError, unknown
from twin.filters import FILTER_LIBRARY
from twin.geometry import OBJECTIVES
from twin.optimise.fastmodel import (BINNINGS, INSTRUMENT_RANGES, Task, check_ranges,
                                     dprime_threshold, evaluate, parse_task, row_specs)
from twin.scan_time import scan_time_s
from twin.scenario import ScanSpec, load_scenario
from twin.spectrum import KVP_RANGE, MAX_POWER_W

__all__ = ["SearchSpace", "optimise", "paper_point"]

SAT_LIMIT = 0.9
POWER_GRID_W = (1.0, 2.0, 4.0, 6.5, 10.0, 16.0, 25.0)


@dataclass
class SearchSpace:
    """Ranges and choices of the optimisation variables (a fixed value: lo == hi or one choice)."""

    kvp: tuple[float, float] = KVP_RANGE
    power_w: tuple[float, float] = (0.5, MAX_POWER_W)
    filters: tuple[str, ...] = tuple(FILTER_LIBRARY)
    objectives: tuple[str, ...] = ("0.4x", "4x", "20x", "40x")
    binnings: tuple[int, ...] = BINNINGS
    exposure_s: tuple[float, float] = (0.1, 60.0)
    views: tuple[int, int] | None = None  # default (pi/2 x columns, 6401)
    kv_step: float = 5.0

    def check(self) -> None:
        for key, (lo, hi) in (("source.kvp", self.kvp), ("source.power_w", self.power_w),
                              ("detector.exposure_s", self.exposure_s)):
            if lo > hi:
                raise XrmInputError(f"{key} range {lo:g},{hi:g}: give the lower end first (LO,HI)")

        def rng(key, lo, hi, a, b, unit):
            if not (a <= lo <= hi <= b):
                raise XrmInputError(f"{key} range {lo:g}-{hi:g} {unit} is outside the instrument's "
                                    f"range; allowed: {INSTRUMENT_RANGES[key]}")

        rng("source.kvp", *self.kvp, *KVP_RANGE, "kV")
        if not 0 < self.power_w[0] <= self.power_w[1] <= MAX_POWER_W:
            raise XrmInputError(f"source.power_w range {self.power_w} is outside the instrument's "
                                f"range; allowed: {INSTRUMENT_RANGES['source.power_w']}")
        if not 0 < self.exposure_s[0] <= self.exposure_s[1] <= 600:
            raise XrmInputError(f"detector.exposure_s range {self.exposure_s} is outside the "
                                f"instrument's range; allowed: {INSTRUMENT_RANGES['detector.exposure_s']}")
        for f in self.filters:
            if f not in FILTER_LIBRARY:
                raise unknown("filter (source.filter)", f, FILTER_LIBRARY)
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise unknown("objective (geometry.objective)", o, OBJECTIVES)
        for b in self.binnings:
            if b not in BINNINGS:
                raise XrmInputError(f"geometry.binning = {b} is outside the instrument's range; "
                                    f"allowed: {INSTRUMENT_RANGES['geometry.binning']}")
        if self.views is not None and not 1 <= self.views[0] <= self.views[1] <= 20000:
            raise XrmInputError(f"geometry.projections range {self.views} is outside the "
                                f"instrument's range; allowed: {INSTRUMENT_RANGES['geometry.projections']}")
        if not (self.filters and self.objectives and self.binnings):
            raise XrmInputError("the search space needs at least one filter, objective and binning")

    def kv_grid(self) -> np.ndarray:
        lo, hi = self.kvp
        if hi - lo < 1e-9:
            return np.array([lo])
        g = np.arange(lo, hi + 1e-9, self.kv_step)
        return np.unique(np.append(g, hi))

    def power_grid(self) -> np.ndarray:
        lo, hi = self.power_w
        if hi - lo < 1e-9:
            return np.array([lo])
        g = [p for p in POWER_GRID_W if lo <= p <= hi]
        return np.unique(np.array([lo] + g + [hi]))


def _sensor_px(base: ScanSpec) -> tuple[int, int]:
    b = int(base.geometry["binning"])
    return int(base.detector["pixels"][0]) * b, int(base.detector["pixels"][1]) * b


def _design_row(base: ScanSpec, kvp: float, power: float, filt: str, obj: str, binning: int,
                exposure: float = 1.0, views: int = 1) -> dict[str, Any]:
    sc, sr = _sensor_px(base)
    return {"source.kvp": float(kvp), "source.power_w": float(power), "source.filter": filt,
            "geometry.objective": obj, "geometry.binning": int(binning),
            "detector.pixels": [max(1, sc // binning), max(1, sr // binning)],
            "detector.exposure_s": float(exposure), "geometry.projections": int(views),
            "detector.frames": 1}


def _min_views(cols: np.ndarray) -> np.ndarray:
    return np.ceil(np.pi / 2.0 * cols).astype(int)


def _undersampling_notes(space: SearchSpace, des: _Designs, best: Mapping[str, Any] | None) -> list[str]:
    """Notes when a user's ``--views`` range reaches below the ``pi/2 x columns`` floor.

    The floor is kept by default; an explicit range replaces it (a few-view iterative study is a
    fair request), but the fast model does not score the streaks of angular undersampling, so
    the result says so.
    """
    if space.views is None or not len(des.rows):
        return []
    floors = _min_views(des.cols)
    if space.views[0] >= floors.min():
        return []
    notes = [f"--views {space.views[0]},{space.views[1]} reaches below the angular-sampling floor "
             f"pi/2 x columns ({floors.min()}-{floors.max()} views for these designs); the fast "
             "model does not score the streaks of undersampled scans"]
    if best is not None:
        n = int(best["settings"]["geometry.projections"])
        floor = int(_min_views(np.array([best["settings"]["detector.pixels"][0]]))[0])
        if n < floor:
            notes.append(f"the best setting uses {n} views, below its floor of {floor} "
                         f"(pi/2 x {best['settings']['detector.pixels'][0]} columns)")
    return notes


def _time_s(base: ScanSpec, views, exposure):
    d = base.detector
    return scan_time_s(views=views, exposure_s=exposure, frames=1, readout_s=float(d["readout_s"]),
                       flats=int(d["flats"]), darks=int(d["darks"]))


@dataclass
class _Designs:
    rows: list[dict[str, Any]]
    A: np.ndarray  # 1/d'^2 = (A/t + B/t^2)/N
    B: np.ndarray
    t_sat: np.ndarray
    cols: np.ndarray
    fov: np.ndarray
    voxel_um: np.ndarray
    hardening: np.ndarray


def _characterise(base: ScanSpec, task: Task, rows: list[dict[str, Any]], p_fa: float) -> _Designs:
    """``1/d'^2 = (A/t + B/t^2) / N`` per design (quantum + dark, read noise) from the fast model."""
    r1 = [{**r, "detector.exposure_s": 1.0, "geometry.projections": 1} for r in rows]
    e = evaluate(base, r1, task, p_false_call=p_fa, trusted=True)
    A = np.nan_to_num(e["inv_d2_A"], nan=np.inf)
    B = np.nan_to_num(e["inv_d2_B"], nan=np.inf)
    sat1 = e["flat_full_well_fraction"]
    t_sat = np.where(sat1 > 0, SAT_LIMIT / np.maximum(sat1, 1e-300), np.inf)
    return _Designs(rows, A, B, t_sat, e["columns"], e["fov_mm"], e["voxel_um"], e["hardening"])


def _solve_min_time(base: ScanSpec, des: _Designs, d_req: float, t_grid: np.ndarray,
                    vmin: np.ndarray, vmax: np.ndarray, max_s: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least scan time per design reaching d' = d_req: (time_s, exposure, views), inf if none."""
    t = t_grid[None, :]
    need = d_req ** 2 * (des.A[:, None] / t + des.B[:, None] / t ** 2)
    N = np.maximum(np.ceil(need - 1e-9), vmin[:, None])
    ok = (N <= vmax[:, None]) & (t <= des.t_sat[:, None])
    T = np.where(ok, _time_s(base, N, t), np.inf)
    T = np.where(T <= max_s, T, np.inf)
    j = np.argmin(T, axis=1)
    idx = np.arange(len(des.rows))
    return T[idx, j], t_grid[j] * np.ones(len(idx)), N[idx, j]


def _best_dprime_at(base: ScanSpec, des: _Designs, budget_s: float, t_grid: np.ndarray,
                    vmin: np.ndarray, vmax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest d' per design within a scan-time budget: (d', exposure, views)."""
    t = t_grid[None, :]
    over = _time_s(base, 0, t)  # overheads (references, darks, set-up) at this exposure
    per = t + float(base.detector["readout_s"])
    N = np.floor((budget_s - over) / per)
    N = np.minimum(N, vmax[:, None])
    ok = (N >= vmin[:, None]) & (t <= des.t_sat[:, None])
    d2 = np.where(ok, N / (des.A[:, None] / t + des.B[:, None] / t ** 2), 0.0)
    j = np.argmax(d2, axis=1)
    idx = np.arange(len(des.rows))
    return np.sqrt(d2[idx, j]), t_grid[j] * np.ones(len(idx)), N[idx, j]


def paper_point(base: ScanSpec, task: Task, p_fa: float = 1e-4) -> dict[str, Any]:
    """The scenario's own settings scored by the fast model."""
    e = evaluate(base, None, task, a90=True, p_false_call=p_fa)
    s, g, d = base.source, base.geometry, base.detector
    return {"settings": {"source.kvp": s["kvp"], "source.power_w": s["power_w"],
                         "source.filter": s["filter"], "geometry.objective": g["objective"],
                         "geometry.binning": g["binning"], "detector.exposure_s": d["exposure_s"],
                         "geometry.projections": g["projections"], "detector.frames": d["frames"]},
            **{k: float(v[0]) for k, v in e.items()}}


def optimise(scenario: str | ScanSpec, task: str | Task, *, pod: float = 0.9,
             max_hours: float = 12.0, space: SearchSpace | None = None,
             p_false_call: float = 1e-4, objective: str = "time", min_fov_mm: float | None = None,
             refine: int = 3, front_points: int = 24, out: str | Path | None = None,
             max_hardening: float | str | None = None,
             overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Best settings for a task and the Pareto front.

    Parameters
    ----------
    scenario : str or ScanSpec
    task : str or Task
    pod : float
        POD target in (0, 1).
    max_hours : float
        Longest acceptable scan.
    space : SearchSpace, optional
        Variables' ranges (default: the instrument's).
    objective : {"time", "dprime"}
        ``"time"``: least scan time reaching the POD target; ``"dprime"``: largest d' within
        ``max_hours``.
    min_fov_mm : float, optional
        Smallest acceptable field of view (default: the scenario's).
    max_hardening : float, optional
        Largest acceptable beam hardening along the task's path (the fast model's
        ``hardening``; it scores noise and blur, not cupping or streaks, so without this bound
        it favours unfiltered beams). ``"paper"``: the scenario's own settings' value.
    refine : int
        Designs refined locally.
    out : folder, optional
        Writes ``optimise.json`` and ``figures/pareto.png``.

    Returns
    -------
    dict
        ``feasible``, ``best`` (settings and scores), ``paper`` (the scenario's settings and
        scores), ``speedup`` (paper time / best time), ``front`` (list of points), ``task``,
        ``dprime_required``, ``seconds``; if infeasible, ``best_achievable``.
    """
    t_start = time.perf_counter()
    base = scenario if isinstance(scenario, ScanSpec) else load_scenario(scenario, list(overrides))
    task = parse_task(task) if isinstance(task, str) else task
    if not 0 < pod < 1:
        raise XrmInputError(f"--pod must be in (0, 1), got {pod}")
    if not max_hours > 0:
        raise XrmInputError(f"--max-hours must be > 0, got {max_hours}")
    if objective not in ("time", "dprime"):
        raise unknown("objective", objective, ("time", "dprime"))
    space = space or SearchSpace()
    space.check()  # every proposed row is checked against the instrument (check_ranges)
    d_req = dprime_threshold(p_false_call) + float(ndtri(pod))
    max_s = max_hours * 3600.0
    paper = paper_point(base, task, p_false_call)
    fov_min = paper["fov_mm"] * 0.999 if min_fov_mm is None else float(min_fov_mm)
    if isinstance(max_hardening, str):
        if max_hardening.strip().lower() != "paper":
            try:
                max_hardening = float(max_hardening)
            except ValueError:
                raise XrmInputError(f"max_hardening must be a number in (0, 1) or 'paper', got "
                                    f"{max_hardening!r}") from None
        else:
            max_hardening = paper["hardening"] * (1.0 + 1e-6)
    if max_hardening is not None and not 0 < float(max_hardening) <= 1:
        raise XrmInputError(f"max_hardening must be in (0, 1], got {max_hardening!r}")

    # ---- 1. enumerate designs
    from twin.plan import resolve_geometry

    combos = []
    fovs = {}
    for o in space.objectives:
        for b in space.binnings:
            sp = row_specs(base, [_design_row(base, base.source["kvp"], base.source["power_w"],
                                              space.filters[0], o, b)], trusted=True)[0]
            fovs[(o, b)] = min(resolve_geometry(sp).field_of_view_mm)
            if fovs[(o, b)] >= fov_min:
                combos.append((o, b))
    if not combos:
        raise XrmInputError(f"no objective/binning in the search space gives a field of view >= "
                            f"{fov_min:.3g} mm (largest {max(fovs.values()):.3g} mm); lower --min-fov-mm")
    rows = [_design_row(base, kv, p, f, o, b) for o, b in combos
            for f in space.filters for kv in space.kv_grid() for p in space.power_grid()]
    des = _characterise(base, task, rows, p_false_call)
    keep = des.fov >= fov_min * 0.999
    if max_hardening is not None:
        keep &= des.hardening <= max_hardening
        if not keep.any():
            raise XrmInputError(f"no design keeps beam hardening <= {max_hardening:g} (least "
                                f"{des.hardening.min():.3f}); raise --max-hardening or widen the filters")
    des = _Designs([r for r, k in zip(des.rows, keep) if k], des.A[keep], des.B[keep],
                   des.t_sat[keep], des.cols[keep], des.fov[keep], des.voxel_um[keep],
                   des.hardening[keep])
    if space.views is None:
        vmin = _min_views(des.cols)
        vmax = np.full(vmin.shape, 6401)
        vmax = np.maximum(vmax, vmin)
    else:
        vmin = np.full(len(des.rows), space.views[0])
        vmax = np.full(len(des.rows), space.views[1])
    lo_t, hi_t = space.exposure_s
    t_grid = np.array([lo_t]) if hi_t - lo_t < 1e-12 else np.geomspace(lo_t, hi_t, 64)

    def score(d: _Designs, vmn, vmx):
        if objective == "time":
            T, t, N = _solve_min_time(base, d, d_req * 1.003, t_grid, vmn, vmx, max_s)
            return T, t, N
        dp, t, N = _best_dprime_at(base, d, max_s, t_grid, vmn, vmx)
        return -dp, t, N

    S, tt, NN = score(des, vmin, vmax)

    # ---- 3. local refinement of the best designs (distinct discrete combinations)
    order = np.argsort(S)
    seen, picks = set(), []
    for i in order:
        if not np.isfinite(S[i]):
            break
        r = des.rows[i]
        key = (r["source.filter"], r["geometry.objective"], r["geometry.binning"])
        if key in seen:
            continue
        seen.add(key)
        picks.append(i)
        if len(picks) >= refine:
            break
    candidates = []
    for i in picks:
        r = des.rows[i]
        vmn, vmx = int(vmin[i]), int(vmax[i])

        def at(kv: float, p: float):
            row = _design_row(base, kv, p, r["source.filter"], r["geometry.objective"],
                              r["geometry.binning"])
            d1 = _characterise(base, task, [row], p_false_call)
            if max_hardening is not None and d1.hardening[0] > max_hardening:
                return math.inf, 0.0, 0, row
            s_, t_, n_ = score(d1, np.array([vmn]), np.array([vmx]))
            return float(s_[0]), float(t_[0]), int(n_[0]), row

        kv0, p0 = r["source.kvp"], r["source.power_w"]
        # kV: integer golden-section within one grid step
        lo_k = max(space.kvp[0], kv0 - space.kv_step)
        hi_k = min(space.kvp[1], kv0 + space.kv_step)
        cache: dict[float, tuple] = {}

        def fk(kv):
            kv = float(round(kv))
            kv = min(max(kv, space.kvp[0]), space.kvp[1])
            if kv not in cache:
                cache[kv] = at(kv, p0)
            return cache[kv][0]

        if hi_k - lo_k >= 2:
            a, b = math.ceil(lo_k), math.floor(hi_k)
            while b - a > 2:
                m1 = a + (b - a) // 3
                m2 = b - (b - a) // 3
                if fk(m1) <= fk(m2):
                    b = m2
                else:
                    a = m1
            for kv in range(a, b + 1):
                fk(kv)
        fk(kv0)
        kv_best = min(cache, key=lambda k: cache[k][0])
        # power: bounded scalar minimisation on log P
        lp = (math.log(space.power_w[0]), math.log(space.power_w[1]))
        if lp[1] - lp[0] > 1e-9:
            pc: dict[float, tuple] = {}

            def fp(x):
                p = round(math.exp(x), 3)
                if p not in pc:
                    pc[p] = at(kv_best, p)
                v = pc[p][0]
                return v if np.isfinite(v) else 1e30

            optimize.minimize_scalar(fp, bounds=lp, method="bounded", options={"xatol": 0.03, "maxiter": 20})
            pc[p0] = at(kv_best, p0)
            p_best = min(pc, key=lambda k: pc[k][0])
            res = pc[p_best]
        else:
            res = cache[kv_best]
        candidates.append(res)
    # also the unrefined best (in case refinement found nothing better)
    if picks:
        i = picks[0]
        candidates.append((float(S[i]), float(tt[i]), int(NN[i]), des.rows[i]))

    best = None
    if candidates:
        s_, t_, n_, row = min(candidates, key=lambda c: c[0])
        if np.isfinite(s_):
            final = {**row, "detector.exposure_s": math.ceil(float(t_) * 1000.0) / 1000.0,
                     "geometry.projections": int(n_)}
            e = evaluate(base, [final], task, a90=True, p_false_call=p_false_call, trusted=True)
            best = {"settings": final, **{k: float(v[0]) for k, v in e.items()}}
    feasible = best is not None and (objective == "dprime" or best["pod"] >= pod - 1e-6)

    # ---- 4. Pareto front: best d' per time budget
    budgets = np.geomspace(max(0.2, _time_s(base, 1, lo_t) / 3600 * 1.05), max_hours, front_points)
    front_rows = []
    for T in budgets:
        dp, t, N = _best_dprime_at(base, des, T * 3600.0, t_grid, vmin, vmax)
        i = int(np.argmax(dp))
        if dp[i] <= 0:
            continue
        front_rows.append({**des.rows[i], "detector.exposure_s": round(float(t[i]), 3),
                           "geometry.projections": int(N[i])})
    front = []
    if front_rows:
        e = evaluate(base, front_rows, task, a90=True, p_false_call=p_false_call, trusted=True)
        for k, r in enumerate(front_rows):
            front.append({"settings": r, **{c: float(v[k]) for c, v in e.items()}})
    result = {"scenario": base.name, "task": task.text or task.describe(),
              "task_description": task.describe(), "pod_target": pod, "max_hours": max_hours,
              "objective": objective, "p_false_call": p_false_call, "dprime_required": d_req,
              "min_fov_mm": fov_min, "max_hardening": max_hardening, "n_designs": len(des.rows),
              "feasible": bool(feasible),
              "best": best, "paper": paper, "front": front}
    if best is not None and objective == "time":
        result["speedup"] = paper["scan_time_h"] / best["scan_time_h"]
    result["notes"] = _undersampling_notes(space, des, best)
    if not feasible:
        top = max(front, key=lambda f: f["d_prime"]) if front else None
        result["best_achievable"] = top
        result["why"] = (f"no setting in the search space reaches d' = {d_req:.2f} (POD {pod:g}) within "
                         f"{max_hours:g} h; the best reaches d' = "
                         f"{top['d_prime']:.2f} (POD {top['pod']:.3f}, a90 {top['a90_um']:.3g} um)"
                         if top else "no setting is feasible (views, exposure or saturation limits)")
    result["seconds"] = time.perf_counter() - t_start
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "optimise.json", json.dumps(result, indent=1, default=float))
        plot_front(result, out / "figures" / "pareto.png")
    return result


def plot_front(result: Mapping[str, Any], path: Path) -> Path:
    """Scan time vs d' and vs a90: the front, the optimum and the paper's settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fr = result["front"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    th = [f["scan_time_h"] for f in fr]
    axes[0].plot(th, [f["d_prime"] for f in fr], "o-", ms=3, label="Pareto front (best d' per time)")
    axes[1].plot(th, [f["a90_um"] for f in fr], "o-", ms=3, label="a90 of the front")
    pp = result["paper"]
    for ax, key in ((axes[0], "d_prime"), (axes[1], "a90_um")):
        ax.plot([pp["scan_time_h"]], [pp[key]], "r*", ms=14, label="paper's settings")
        if result.get("best"):
            b = result["best"]
            ax.plot([b["scan_time_h"]], [b[key]], "gD", ms=9, label="optimum")
        ax.axvline(result["max_hours"], color="gray", ls="--", lw=1)
        ax.set_xlabel("scan time (h)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].axhline(result["dprime_required"], color="k", ls=":", lw=1,
                    label=f"d' for POD {result['pod_target']:g}")
    axes[0].set_ylabel("d' (NPW)")
    axes[1].set_ylabel("a90 (um)")
    try:
        size = float(result["task_description"].split()[1])
        axes[1].axhline(size, color="k", ls=":", lw=1, label=f"task size {size:g} um")
    except (ValueError, IndexError):
        pass
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{result['scenario']}: {result['task']}"
                 + ("" if result["feasible"] else "  (target not reachable)"), fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
