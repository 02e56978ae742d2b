"""``xrm-twin ctsimu run|export``: CTSimU scenarios through xrm-twin.

Registered by the main CLI with ``app.add_typer(ctsimu_app, name="ctsimu")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from twin.cli_errors import exit_on_error

ctsimu_app = typer.Typer(help="CTSimU scenario files (BAM/PTB format 1.x): run and export.",
                         no_args_is_help=True)


def _fail(exc: BaseException) -> None:
    from twin.cli import _state

    exit_on_error(exc, verbose=_state["verbose"])


@ctsimu_app.command("run")
def run(
    scenario: Path = typer.Argument(..., help="CTSimU scenario JSON."),
    out: Path = typer.Option(..., "--out", help="Output folder (TIFFs, <name>_metadata.json, projections.h5)."),
    approximate: bool = typer.Option(False, "--approximate",
                                     help="Run unsupported CTSimU features with the documented approximation "
                                          "instead of refusing them."),
    supersample: int = typer.Option(2, "--supersample", min=1, max=32,
                                    help="Sub-ray steps per pixel side: 1 = one central ray; N >= 2 = rays "
                                         "at k/N of the pixel, edges included, intensities integrated "
                                         "(docs/ctsimu.md)."),
    arch: str = typer.Option("auto", "--arch", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise."),
    force: bool = typer.Option(False, "--force", help="Replace the files of an earlier run of this "
                               "scenario in --out (other files are kept)."),
) -> None:
    """Simulate a CTSimU scenario; the output is readable by the ctsimu toolbox."""
    from twin.ctsimu.reader import read_scenario
    from twin.ctsimu.run import run_to

    try:
        sc = read_scenario(scenario, approximate=approximate)
        res = run_to(sc, out, supersample=supersample, arch=arch, seed=seed, force=force)
    except BaseException as exc:  # noqa: BLE001 - exit 2 bad input, 1 failure
        _fail(exc)
    for n in res["notes"]:
        typer.echo(f"note: {n}", err=True)
    typer.echo(json.dumps({"metadata": res["metadata"], "magnification": res["magnification"],
                           "max_grey": res["max_grey"]}))


@ctsimu_app.command("export")
def export(
    scenario: str = typer.Argument(..., help="xrm-twin scenario TOML (path or built-in name)."),
    out: Optional[Path] = typer.Option(None, "--out", help="CTSimU JSON to write (default: <name>_ctsimu.json)."),
) -> None:
    """Write a CTSimU scenario JSON (and STL/spectrum files beside it) of an xrm-twin scenario."""
    from twin.ctsimu.writer import export_scenario
    from twin.scenario import load_scenario

    try:
        spec = load_scenario(scenario)
        res = export_scenario(spec, out or Path(f"{spec.name}_ctsimu.json"))
    except BaseException as exc:  # noqa: BLE001 - exit 2 bad input, 1 failure
        _fail(exc)
    for n in res["notes"]:
        typer.echo(f"note: {n}", err=True)
    typer.echo(res["path"])
