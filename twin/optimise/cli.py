"""Typer command functions ``sweep`` and ``optimise`` (registered in :mod:`twin.cli`).

Register with::

    from twin.optimise.cli import optimise as _optimise_cmd, sweep as _sweep_cmd
    app.command("sweep")(_sweep_cmd)
    app.command("optimise")(_optimise_cmd)

Exit codes follow :mod:`twin.cli`: 0 ok, 2 bad input (:class:`~twin.errors.XrmInputError`,
including an unknown parameter or a value outside the instrument's range), 1 other failures.
An infeasible task is not an error: ``optimise`` prints why and the best achievable, writes
its files and exits 0 (``--strict``: exit 3).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from twin.cli_errors import exit_on_error
from twin.errors import XrmInputError

console = Console(stderr=True)


def _fail(exc: BaseException) -> None:
    from twin.cli import _state

    exit_on_error(exc, verbose=_state["verbose"])


def _range(text: Optional[str], key: str, cast=float):
    if text is None:
        return None
    try:
        parts = [cast(v) for v in text.split(",")]
    except ValueError:
        raise XrmInputError(f"{key} must be LO,HI (or one value), got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise XrmInputError(f"{key} must be LO,HI (or one value), got {text!r}")
    return tuple(parts)


def sweep(
    scenario: str = typer.Argument(..., help="Scenario TOML path or built-in name."),
    vary: List[str] = typer.Option([], "--vary", help="key=v1,v2,... or key=start:stop:step; repeat "
                                   "for a grid, e.g. --vary source.kvp=60,80,100"),
    task: Optional[str] = typer.Option(None, "--task", help="Task, e.g. 'void:15um@cathode' "
                                       "(default by phantom kind)."),
    full: bool = typer.Option(False, "--full", help="Simulate + reconstruct + measure each setting "
                              "on a small phantom of the task instead of the fast model."),
    scheduler: str = typer.Option("local", "--scheduler", help="'local' (Dask LocalCluster), "
                                  "'none' (this process) or a Dask scheduler address."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (sweep.csv, sweep.json, figures/)."),
    a90: bool = typer.Option(False, "--a90", help="Add the a90_um column (fast model)."),
    workers: int = typer.Option(2, "--workers", help="Workers of the local cluster (0: in this process)."),
    pixels: int = typer.Option(96, "--full-pixels", help="Detector size of --full simulations."),
    max_views: int = typer.Option(180, "--full-views", help="Views simulated at most with --full "
                                  "(d' rescaled to the setting's views)."),
    set_: List[str] = typer.Option([], "--set", help="Override a key of the scenario first."),
) -> None:
    """Score a grid of settings: CNR, d', POD and scan time per setting.

    Example: `xrm-twin sweep pouch-highres --vary source.kvp=40,60,80,100 --vary source.filter=LE1,LE2,LE4
    --vary detector.exposure_s=1,4,15 --out runs/sweep` (a range: LO:HI:STEP)
    """
    try:
        from twin.optimise.sweep import run_sweep

        if not vary:
            raise XrmInputError("give at least one --vary key=v1,v2,...")
        res = run_sweep(scenario, list(vary), task=task, full=full, scheduler=scheduler, out=out,
                        a90=a90, pixels=pixels, max_views=max_views, n_workers=workers,
                        overrides=list(set_))
        best = max(res["rows"], key=lambda r: r["d_prime"])
        console.print(f"{res['n_settings']} settings ({res['mode']}) in {res['seconds']:.1f} s; "
                      f"task {res['task']}; best d' {best['d_prime']:.3g} at "
                      + ", ".join(f"{k}={best[k]}" for k in res["varied"])
                      + f"; wrote {out / 'sweep.csv'}")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


def optimise(
    scenario: str = typer.Argument(..., help="Scenario TOML path or built-in name."),
    task: Optional[str] = typer.Option(None, "--task", help="Task, e.g. 'void:15um@cathode' or "
                                       "'delamination:5um@nimh_positive' (default by phantom kind)."),
    pod: float = typer.Option(0.9, "--pod", help="POD target."),
    max_hours: float = typer.Option(12.0, "--max-hours", help="Longest acceptable scan, hours."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (optimise.json, figures/pareto.png)."),
    objective: str = typer.Option("time", "--objective", help="time (least time reaching the POD) "
                                  "or dprime (largest d' within --max-hours)."),
    kvp: Optional[str] = typer.Option(None, "--kvp", help="kV range LO,HI (default 30,160)."),
    power_w: Optional[str] = typer.Option(None, "--power-w", help="Power range LO,HI W (default 0.5,25)."),
    exposure_s: Optional[str] = typer.Option(None, "--exposure-s", help="Exposure range LO,HI s "
                                             "(default 0.1,60)."),
    views: Optional[str] = typer.Option(None, "--views", help="Views range LO,HI (default pi/2 x columns, 6401)."),
    filters: Optional[str] = typer.Option(None, "--filters", help="Comma-separated filters (default all)."),
    objectives: Optional[str] = typer.Option(None, "--objectives", help="Comma-separated objectives."),
    binnings: Optional[str] = typer.Option(None, "--binnings", help="Comma-separated binnings (1,2,4)."),
    min_fov_mm: Optional[float] = typer.Option(None, "--min-fov-mm", help="Smallest field of view "
                                               "(default: the scenario's)."),
    p_false_call: float = typer.Option(1e-4, "--p-false-call", help="False-call probability per "
                                       "location (POD threshold)."),
    max_hardening: Optional[str] = typer.Option(None, "--max-hardening", help="Largest beam "
                                                "hardening along the path (0-1) or 'paper' (the "
                                                "scenario's own)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 when the target cannot be met."),
    set_: List[str] = typer.Option([], "--set", help="Override a key of the scenario first."),
) -> None:
    """Best settings reaching a POD target in the least scan time, and the Pareto front.

    Example: `xrm-twin optimise pouch-highres --task "void:15um@cathode" --pod 0.9 --max-hours 12 --out runs/opt`
    """
    try:
        from twin.optimise.optimise import SearchSpace, optimise as run
        from twin.optimise.sweep import default_task
        from twin.scenario import load_scenario

        spec = load_scenario(scenario, list(set_))
        space = SearchSpace()
        if kvp:
            space.kvp = _range(kvp, "source.kvp")
        if power_w:
            space.power_w = _range(power_w, "source.power_w")
        if exposure_s:
            space.exposure_s = _range(exposure_s, "detector.exposure_s")
        if views:
            space.views = _range(views, "geometry.projections", int)
        if filters:
            space.filters = tuple(f.strip() for f in filters.split(",") if f.strip())
        if objectives:
            space.objectives = tuple(o.strip() for o in objectives.split(",") if o.strip())
        if binnings:
            try:
                space.binnings = tuple(int(b) for b in binnings.split(","))
            except ValueError:
                raise XrmInputError(f"--binnings must be integers, got {binnings!r}") from None
        res = run(spec, task or default_task(spec), pod=pod, max_hours=max_hours, space=space,
                  p_false_call=p_false_call, objective=objective, min_fov_mm=min_fov_mm, out=out,
                  max_hardening=max_hardening)
        pp = res["paper"]
        if res["feasible"]:
            b = res["best"]
            console.print(f"best: {escape(json.dumps(b['settings']))}: {b['scan_time_h']:.2f} h, d' {b['d_prime']:.2f}, "
                          f"POD {b['pod']:.3f}, a90 {b['a90_um']:.3g} um")
        else:
            console.print(f"[yellow]infeasible:[/] {escape(str(res['why']))}")
        console.print(f"scenario's settings: {pp['scan_time_h']:.2f} h, d' {pp['d_prime']:.2f}, "
                      f"POD {pp['pod']:.3f}, a90 {pp['a90_um']:.3g} um"
                      + (f"; speed-up x{res['speedup']:.1f}" if res.get("speedup") else "")
                      + f"; wrote {out / 'optimise.json'}")
        for note in res.get("notes", []):
            console.print(f"[yellow]note:[/] {escape(note)}")
        if strict and not res["feasible"]:
            raise typer.Exit(3)
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


def _standalone() -> None:  # pragma: no cover - for trying the commands before registration
    app = typer.Typer(add_completion=False)
    app.command("sweep")(sweep)
    app.command("optimise")(optimise)
    app()


if __name__ == "__main__":  # pragma: no cover
    _standalone()
    sys.exit(0)
