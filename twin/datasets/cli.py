"""``xrm-twin dataset``: the command function (registered by ``twin/cli.py``).

Register with ``app.command()(dataset)`` (``from twin.datasets.cli import dataset``). Also
runnable alone: ``python -m twin.datasets.cli SPEC --out DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from twin.cli_errors import exit_on_error
from twin.errors import XrmInputError


def dataset(
    spec: str = typer.Argument(..., help="Dataset spec TOML (path or built-in name, e.g. `example`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (shards, manifest, figure)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w",
                                          help="LocalCluster worker processes (1 thread each); "
                                               "default: CPU count; 0: in this process."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="Existing Dask scheduler address, e.g. tcp://10.0.0.5:8786."),
    set_: List[str] = typer.Option([], "--set", help="Override any spec key: --set count=3, "
                                   "--set parameters.source.kvp={uniform=[60,90]}"),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Skip samples already made and verified (default)."),
    verify: bool = typer.Option(False, "--verify", help="Check every shard's SHA-256 at the end."),
    force: bool = typer.Option(False, "--force", help="Delete a dataset of another spec in --out."),
    timeout_s: float = typer.Option(10.0, "--connect-timeout-s", help="Scheduler connection timeout, s."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Generate a labelled training dataset on Dask (one HDF5 shard per sample + manifest).

    Example: `xrm-twin dataset example --out runs/ds --workers 2 --set count=3`
    """
    from rich.console import Console

    console = Console(stderr=True)
    try:
        from twin.datasets.runner import run_dataset
        from twin.datasets.spec import load_dataset_spec

        if workers is not None and scheduler is not None:
            raise XrmInputError("give either --workers or --scheduler, not both")
        ds = load_dataset_spec(spec, list(set_))
        res = run_dataset(ds, out, workers=workers, scheduler=scheduler, resume=resume, verify=verify,
                          force=force, quiet=quiet, connect_timeout_s=timeout_s)
        if not quiet:
            msg = (f"{out}: {res['count']} samples ({res['made']} made, {res['skipped']} resumed) in "
                   f"{res['wall_s']:.1f} s")
            if res["made"]:
                msg += f", {res['samples_per_hour']:.0f} samples/hour"
            if verify:
                msg += "; every checksum verified"
            console.print(msg)
    except BaseException as exc:  # noqa: BLE001 - exit 2 bad input, 1 failure
        from twin.cli import _state

        exit_on_error(exc, verbose=_state["verbose"])


def main() -> None:
    typer.run(dataset)


if __name__ == "__main__":
    main()
