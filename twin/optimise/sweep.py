"""Sweeps: a grid over any scenario keys, scored by the fast model or by full simulations, on Dask.

``xrm-twin sweep SCENARIO --vary source.kvp=60,80,100 --vary source.filter=LE1,LE2,LE4 --out DIR``
writes ``DIR/sweep.csv`` and ``DIR/sweep.json`` (one row per setting: a column per varied key,
then ``cnr``, ``d_prime``, ``pod``, ``scan_time_h`` and diagnostics) and figures
``DIR/figures/heatmap_*.png`` and ``DIR/figures/dprime_vs_time.png``.

Values: ``key=v1,v2,...`` (TOML scalars: numbers, true/false, bare words as strings) or a numeric
range ``key=start:stop:step`` (stop included when on the grid). Keys are scenario keys
(``source.kvp``, ``geometry.projections``, ``detector.exposure_s``, ...); an unknown key or a
value outside the instrument's range is an :class:`~twin.errors.XrmInputError` naming the
allowed ones.

Parallelism: settings are split into chunks that run on Dask workers: a ``LocalCluster`` by
default (``scheduler="local"``), an existing scheduler (``scheduler="tcp://host:8786"``), or in
this process (``scheduler="none"``). Full simulations are one task per setting; each result is
written to ``DIR/rows/NNNNN.json`` atomically with a digest of its inputs (scenario, setting,
task, sizes), and a rerun into the same folder skips the rows already done with the same inputs
(a crashed sweep resumes; a row of another grid is recomputed, not reused).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from twin.atomic import atomic_path, write_text_atomic
from twin.errors import XrmInputError
from twin.optimise.fastmodel import _set_dotted, evaluate, parse_task, row_specs
from twin.scenario import ScanSpec, load_scenario

__all__ = ["parse_vary", "grid_rows", "default_task", "run_sweep", "SCORE_COLUMNS"]

SCORE_COLUMNS = ("cnr", "d_prime", "pod", "auc", "scan_time_h")
DIAG_COLUMNS = ("a90_um", "delta_mu_per_mm", "sigma_voxel_per_mm", "voxel_um", "resolution_fwhm_um",
                "transmission", "hardening", "detected_mean_kev", "quanta_per_pixel_view",
                "flat_full_well_fraction", "fov_mm")
#: Task used when none is given, by phantom kind (the paper's questions).
DEFAULT_TASKS = {"pouch_lfp": "void:15um@cathode", "nimh_aaa": "delamination:5um@nimh_positive",
                 "coin_na_ion": "void:20um@na_cathode"}


def _scalar(text: str) -> Any:
    t = text.strip()
    try:
        return tomllib.loads(f"v = {t}")["v"]
    except tomllib.TOMLDecodeError:
        return t


def parse_vary(items: Iterable[str]) -> list[tuple[str, list[Any]]]:
    """``["source.kvp=60,80", "detector.exposure_s=1:4:1"]`` -> ``[(key, values), ...]``."""
    out: list[tuple[str, list[Any]]] = []
    probe: dict[str, Any] = {}
    for text in items:
        if "=" not in text:
            raise XrmInputError(f"--vary expects key=v1,v2,... or key=start:stop:step, got {text!r}")
        key, vals = (s.strip() for s in text.split("=", 1))
        _set_dotted(probe, key, None)  # unknown keys raise, listing the allowed ones
        if any(k == key for k, _ in out):
            raise XrmInputError(f"--vary {key} is given twice")
        if ":" in vals and "," not in vals:
            parts = vals.split(":")
            if len(parts) != 3:
                raise XrmInputError(f"--vary {key}: a range is start:stop:step, got {vals!r}")
            try:
                a, b, s = (float(p) for p in parts)
            except ValueError:
                raise XrmInputError(f"--vary {key}: range values must be numbers, got {vals!r}") from None
            if s <= 0 or b < a:
                raise XrmInputError(f"--vary {key}: need step > 0 and stop >= start, got {vals!r}")
            n = int(math.floor((b - a) / s + 1e-9)) + 1
            values = [a + i * s for i in range(n)]
            if all(float(v).is_integer() for v in (a, b, s)):
                values = [int(round(v)) for v in values]
        else:
            values = [_scalar(v) for v in vals.split(",") if v.strip()]
        if not values:
            raise XrmInputError(f"--vary {key}: no values")
        out.append((key, values))
    return out


def grid_rows(vary: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """Cartesian product of the varied values, one dict per setting."""
    if not vary:
        return [{}]
    keys = [k for k, _ in vary]
    return [dict(zip(keys, combo)) for combo in itertools.product(*[v for _, v in vary])]


def default_task(spec: ScanSpec) -> str:
    kind = spec.phantom.get("kind")
    if kind not in DEFAULT_TASKS:
        raise XrmInputError(f"phantom kind {kind!r} has no default task; give --task, e.g. "
                            "'void:15um@lfp_cathode'")
    return DEFAULT_TASKS[kind]


# ---------------------------------------------------------------------------- workers


def _fast_chunk(spec_json: str, origin: str, rows: list[dict], task: str, a90: bool) -> dict:
    from twin.scenario import validate

    base = validate(json.loads(spec_json), origin)
    res = evaluate(base, rows, task, a90=a90)
    return {k: np.asarray(v).tolist() for k, v in res.items()}


def _full_row(spec_json: str, origin: str, row: dict, task: str, pixels: int, max_views: int,
              path: str | None) -> dict:
    from twin.optimise.fullsim import full_simulation
    from twin.scenario import validate

    import hashlib

    # a row file answers for its exact inputs: a rerun with another grid, scenario, task or
    # size recomputes the row instead of reusing a result that belongs to other settings
    key = hashlib.sha256(json.dumps([spec_json, row, task, int(pixels), int(max_views)], sort_keys=True,
                                    default=str).encode()).hexdigest()
    if path and Path(path).exists():
        try:
            saved = json.loads(Path(path).read_text())
        except ValueError:
            saved = None
        if isinstance(saved, dict) and saved.get("inputs_sha256") == key:
            return saved
    base = validate(json.loads(spec_json), origin)
    res = full_simulation(base, row, task, pixels=pixels, max_views=max_views)
    spec = row_specs(base, [row])[0]
    from twin.scan_time import scenario_scan_time_s
    from twin.optimise.fastmodel import pod_from_dprime

    res["pod"] = float(pod_from_dprime(res["d_prime"]))
    res["scan_time_h"] = scenario_scan_time_s(spec.geometry, spec.detector) / 3600.0
    res["inputs_sha256"] = key
    if path:
        write_text_atomic(path, json.dumps(res, default=float))
    return res


def quiet_dask() -> None:
    """Hold Dask distributed's loggers at WARNING unless xrm-twin runs with ``--verbose``.

    Importing ``distributed`` sets its logger to INFO, and a LocalCluster restores the level it
    found while it closes: without this a sweep ends with a screenful of "Closing Nanny ...".
    """
    import logging

    if not logging.getLogger("xrm_twin").isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)


class _Runner:
    """Runs functions on Dask (local cluster or a scheduler address) or in this process."""

    def __init__(self, scheduler: str | None, n_workers: int = 2):
        self.client = None
        self.cluster = None
        if scheduler in (None, "", "none", "sync") or (scheduler == "local" and n_workers == 0):
            return  # in this process (--workers 0, as for datasets)
        if n_workers < 0:
            raise XrmInputError(f"--workers must be >= 0 (0: in this process), got {n_workers}")
        from dask.distributed import Client, LocalCluster

        quiet_dask()
        if scheduler == "local":
            # as the dataset runner: loopback only, no dashboard (a sweep on a shared login or
            # compute node must not open a port on every interface)
            self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None,
                                        scheduler_kwargs={"dashboard": False})
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(scheduler, timeout="10s")
            except OSError as exc:
                raise XrmInputError(f"cannot reach the Dask scheduler {scheduler!r}: {exc}") from None

    @property
    def n_workers(self) -> int:
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(self, fn, arg_lists: list[tuple]) -> list:
        if self.client is None:
            return [fn(*a) for a in arg_lists]
        futs = [self.client.submit(fn, *a, pure=False) for a in arg_lists]
        return self.client.gather(futs)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# ---------------------------------------------------------------------------- sweep


def run_sweep(scenario: str | ScanSpec, vary: Sequence[str] | Sequence[tuple[str, Sequence[Any]]], *,
              task: str | None = None, full: bool = False, scheduler: str | None = "local",
              out: str | Path | None = None, a90: bool = False, pixels: int = 96,
              max_views: int = 180, n_workers: int = 2, plots: bool = True,
              overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Score every setting of a grid.

    Parameters
    ----------
    scenario : str or ScanSpec
        Scenario path or built-in name (or a spec).
    vary : list of "key=v1,v2" strings or (key, values) pairs
    task : str, optional
        Task string (default by phantom kind, :data:`DEFAULT_TASKS`).
    full : bool
        Simulate + reconstruct + measure each setting (:mod:`twin.optimise.fullsim`) instead of
        the fast model; d' and CNR are rescaled from ``max_views`` simulated views.
    scheduler : "local", "none" or a Dask scheduler address
    out : folder, optional
        Where to write sweep.csv, sweep.json and figures.
    a90 : bool
        Add the ``a90_um`` column (fast model).

    Returns
    -------
    dict
        ``columns`` (list), ``rows`` (list of dicts), ``task``, ``seconds``, ``n_settings``.
    """
    t0 = time.perf_counter()
    if full:  # the sizes of the small simulations, named by their options, before any work
        for option, value in (("--full-pixels", pixels), ("--full-views", max_views)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 8:
                raise XrmInputError(f"{option} must be an integer >= 8, got {value!r}")
    base = scenario if isinstance(scenario, ScanSpec) else load_scenario(scenario, list(overrides))
    pairs = parse_vary(vary) if vary and isinstance(next(iter(vary)), str) else list(vary or [])
    keys = [k for k, _ in pairs]
    rows = grid_rows(pairs)
    task = task or default_task(base)
    parse_task(task)
    row_specs(base, rows[:1] + rows[-1:])  # fail early on bad keys / values (all checked below)
    spec_json = base.to_json()
    runner = _Runner(scheduler, n_workers)
    try:
        if not full:
            row_specs(base, rows)
            n_chunks = max(1, min(len(rows), 2 * runner.n_workers))
            size = math.ceil(len(rows) / n_chunks)
            chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
            parts = runner.map(_fast_chunk, [(spec_json, base.origin, c, task, a90) for c in chunks])
            cols = [k for k in SCORE_COLUMNS + DIAG_COLUMNS if k in parts[0]]
            results = []
            for c, p in zip(chunks, parts):
                for i, r in enumerate(c):
                    results.append({**r, **{k: p[k][i] for k in cols}})
        else:
            row_dir = Path(out) / "rows" if out else None
            if row_dir:
                row_dir.mkdir(parents=True, exist_ok=True)
            args = [(spec_json, base.origin, r, task, pixels, max_views,
                     str(row_dir / f"{i:05d}.json") if row_dir else None) for i, r in enumerate(rows)]
            res = runner.map(_full_row, args)
            cols = ["cnr", "d_prime", "pod", "scan_time_h", "d_prime_model", "cnr_model", "voxel_um",
                    "views_simulated"]
            results = [{**r, **{k: x[k] for k in cols}} for r, x in zip(rows, res)]
    finally:
        runner.close()
    columns = keys + cols
    result = {"scenario": base.name, "task": task, "mode": "full" if full else "fast",
              "varied": {k: list(v) for k, v in pairs}, "columns": columns, "rows": results,
              "n_settings": len(results), "seconds": time.perf_counter() - t0}
    if out:
        write_outputs(result, Path(out), plots=plots)
    return result


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.6g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


def write_outputs(result: Mapping[str, Any], out: Path, *, plots: bool = True) -> None:
    """sweep.csv, sweep.json and figures."""
    out.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(result["columns"])
    for r in result["rows"]:
        w.writerow([_fmt(r.get(c)) for c in result["columns"]])
    write_text_atomic(out / "sweep.csv", buf.getvalue())
    write_text_atomic(out / "sweep.json", json.dumps(result, indent=1, default=str, allow_nan=True))
    if plots:
        plot_sweep(result, out / "figures")


def pareto_mask(time_h: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Settings not beaten by another that is both faster (or as fast) and better."""
    order = np.lexsort((-score, time_h))
    keep = np.zeros(time_h.size, bool)
    best = -np.inf
    for i in order:
        if score[i] > best:
            keep[i] = True
            best = score[i]
    return keep


def plot_sweep(result: Mapping[str, Any], fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    keys = list(result["varied"])
    written = []
    t = np.array([r["scan_time_h"] for r in rows], float)
    d = np.array([r["d_prime"] for r in rows], float)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(t, d, s=10, alpha=0.5, label="settings")
    pm = pareto_mask(t, np.nan_to_num(d, posinf=1e9))
    o = np.argsort(t[pm])
    ax.plot(t[pm][o], d[pm][o], "r-", lw=1.5, label="Pareto front")
    ax.axhline(5.0, color="k", ls=":", lw=1, label="d' = 5 (POD 0.9)")
    ax.set_xlabel("scan time (h)")
    ax.set_ylabel("d' (NPW)")
    ax.set_yscale("log")
    ax.set_title(f"{result['scenario']}: {result['task']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = fig_dir / "dprime_vs_time.png"
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    written.append(p)
    # heatmaps: each pair of varied keys, best d' over the other keys
    for i, j in itertools.combinations(range(len(keys)), 2):
        ki, kj = keys[i], keys[j]
        vi, vj = result["varied"][ki], result["varied"][kj]
        M = np.full((len(vi), len(vj)), np.nan)
        for r in rows:
            a, b = vi.index(r[ki]), vj.index(r[kj])
            v = r["d_prime"]
            M[a, b] = v if np.isnan(M[a, b]) else max(M[a, b], v)
        fig, ax = plt.subplots(figsize=(1.2 + 0.5 * len(vj), 1.2 + 0.4 * len(vi)))
        im = ax.imshow(np.log10(np.maximum(M, 1e-3)), origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(vj)), [str(v) for v in vj], rotation=90, fontsize=7)
        ax.set_yticks(range(len(vi)), [str(v) for v in vi], fontsize=7)
        ax.set_xlabel(kj)
        ax.set_ylabel(ki)
        fig.colorbar(im, ax=ax, label="log10 d' (best over other keys)")
        fig.tight_layout()
        p = fig_dir / f"heatmap_{ki}__{kj}.png".replace("/", "_")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        written.append(p)
    return written
