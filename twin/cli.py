"""``xrm-twin`` command line (Typer). A thin layer: parse, call the library, print, exit.

Exit codes: 0 ok, 2 bad input (:class:`~twin.errors.XrmInputError`), 1 any other failure.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape

from twin.cli_errors import exit_on_error
from twin.errors import XrmInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="xrm-twin: a digital twin of a laboratory X-ray microscope and of the "
                       "batteries it images.")
console = Console(stderr=True)
_state = {"quiet": False, "verbose": False}

ARCH_HELP = "Taichi backend: auto (CUDA if present, else CPU), cpu or cuda."


@app.callback()
def _main(quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or messages."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="More messages.")) -> None:
    _state["quiet"], _state["verbose"] = quiet, verbose
    # xrm-twin's own messages at INFO; the libraries it drives (Dask distributed, ...) only
    # show their warnings unless --verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("xrm_twin").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet
                                           else logging.INFO)


def _fail(exc: BaseException) -> None:
    exit_on_error(exc, verbose=_state["verbose"])


#: What xrm-twin writes into an output folder (run, simulate, compare; scout-and-zoom runs add
#: their two scans' folders): the entries ``--force`` replaces. Anything else is left in place.
OUTPUT_NAMES = frozenset({"projections.h5", "truth.h5", "recon.h5", "recon.tif", "report.json",
                          "report.html", "segmentation.h5", "figures", "thickness", "scout", "zoom"})


def _check_out(out: Path, force: bool) -> None:
    """Refuse a non-empty output folder without ``--force`` (checked before any work)."""
    if out.exists() and not out.is_dir():
        raise XrmInputError(f"output folder {str(out)!r} is a file")
    if out.exists() and any(out.iterdir()) and not force:
        raise XrmInputError(f"output folder {str(out)!r} exists and is not empty; "
                            "use --force to overwrite it")


def _prepare_out(out: Path, force: bool) -> None:
    """Make the output folder; with ``force``, remove the outputs of an earlier run in it.

    Only the entries xrm-twin writes (:data:`OUTPUT_NAMES`) are removed: a user's own files in
    the folder are kept (and named in a notice). Called after the input has been checked, so a
    bad scenario leaves the folder as it was.
    """
    _check_out(out, force)
    if out.exists():
        kept = []
        for child in sorted(out.iterdir()):
            if child.name not in OUTPUT_NAMES:
                kept.append(child.name)
            elif child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        if kept and not _state["quiet"]:
            console.print(f"--force: kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} that "
                          f"xrm-twin does not write: {', '.join(map(escape, kept[:5]))}"
                          f"{', ...' if len(kept) > 5 else ''}")
    out.mkdir(parents=True, exist_ok=True)


@app.command()
def simulate(
    scenario: str = typer.Argument(..., help="Scenario TOML path or built-in name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    arch: str = typer.Option("auto", help=ARCH_HELP),
    seed: Optional[int] = typer.Option(None, help="Override the scenario's seed."),
    set_: List[str] = typer.Option([], "--set", help="Override a key: --set geometry.projections=90"),
    force: bool = typer.Option(False, help="Overwrite a non-empty output folder."),
) -> None:
    """Simulate projections (`projections.h5`, NXtomo) and the ground truth (`truth.h5`).

    SCENARIO may also be a plan file (`.pkl`, from `xrm-twin plan`).

    Example: `xrm-twin simulate nimh-zoom --set geometry.projections=90 --out runs/zoom`
    """
    try:
        from twin.scenario import load_scenario
        from twin.runtime import init_taichi
        from twin.simulate import check_plan_fits, check_simulate_fits, simulate_plan

        overrides = list(set_) + ([f"seed={seed}"] if seed is not None else [])
        if scenario.endswith(".pkl"):
            from twin.planfile import load_plan

            if overrides:
                raise XrmInputError("--set and --seed do not apply to a resolved plan file")
            _check_out(out, force)
            init_taichi(arch)
            plan, t0 = load_plan(scenario), None
            check_plan_fits(plan, out)
        else:
            from twin.plan import resolve

            spec = load_scenario(scenario, overrides)  # keys, types, materials
            _check_out(out, force)
            check_simulate_fits(spec, out)  # memory and disk, before anything is allocated
            t0 = time.perf_counter()
            init_taichi(arch)  # the phantom is built on the chosen backend
            plan = resolve(spec)  # every value checked, before the folder is touched
        _prepare_out(out, force)
        result = simulate_plan(plan, out, arch=arch, quiet=_state["quiet"], t0=t0)
        for w in result.get("warnings", []):
            console.print(f"[yellow]warning:[/] {escape(w)}")
        if not _state["quiet"]:
            console.print(f"wrote {out / 'projections.h5'}: {result['geometry']['projections']} views, "
                          f"voxel {result['geometry']['voxel_size_um']:.3f} um, "
                          f"{result['timing_s']['simulate']:.1f} s")
    except BaseException as exc:  # noqa: BLE001 - mapped to exit codes
        _fail(exc)


@app.command()
def plan(
    scenario: str = typer.Argument(..., help="Scenario TOML path or built-in name."),
    out: Path = typer.Option(..., "--out", "-o", help="Plan file to write (.pkl)."),
    set_: List[str] = typer.Option([], "--set", help="Override a key."),
    preview: bool = typer.Option(False, help="Resolve the preview version."),
    phantom: str = typer.Option("grids", help="Carry the phantom's label grids (grids) or rebuild "
                                "them on the worker from the scenario, checked by digest (recipe: "
                                "a small file; built-in battery phantoms only)."),
) -> None:
    """Resolve a scenario into a plan file (spectra, attenuation, phantom grids, geometry) that
    `xrm-twin simulate PLAN.pkl` runs where SpekPy, xraydb and trimesh are absent (GPU nodes).

    Example: `xrm-twin plan nimh-zoom --out zoom.pkl --phantom recipe`, then on the GPU node
    `xrm-twin simulate zoom.pkl --arch cuda --out runs/zoom`
    """
    try:
        from twin.plan import resolve
        from twin.planfile import save_plan
        from twin.preview import preview_spec
        from twin.scenario import load_scenario

        spec = load_scenario(scenario, list(set_))
        if preview:
            spec, _ = preview_spec(spec)
        if phantom not in ("grids", "recipe"):
            raise XrmInputError(f"--phantom must be grids or recipe, got {phantom!r}")
        from twin.simulate import check_simulate_fits

        check_simulate_fits(spec)  # the memory the plan's scan needs, before resolving it
        save_plan(resolve(spec), out, phantom=phantom)
        if not _state["quiet"]:
            size = out.stat().st_size
            console.print(f"wrote {out} ({size / 2**20:.1f} MiB)" if size >= 2**20
                          else f"wrote {out} ({size / 1024:.0f} KiB)")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def spectrum(
    kvp: float = typer.Option(..., help="Tube voltage, kV (30-160)."),
    filter_: str = typer.Option("Air", "--filter", help="Air, LE1-LE6 or HE1-HE6."),
    power_w: float = typer.Option(10.0, "--power-w", help="Tube power, W."),
    bin_kev: float = typer.Option(1.0, "--bin-kev", help="Energy bin width, keV."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the source spectrum after the filter.

    Example: `xrm-twin spectrum --kvp 100 --filter LE6 --power-w 14 --json`
    """
    try:
        from twin.filters import resolve_filter
        from twin.spectrum import tube_spectrum

        spec = tube_spectrum(kvp, power_w, bin_kev=bin_kev).filtered(resolve_filter(filter_))
        payload = {"kvp": kvp, "power_w": power_w, "filter": filter_,
                   "energy_kev": spec.energy_kev.tolist(), "photons": spec.photons_per_s_sr.tolist(),
                   "photons_unit": "photons / s / sr per bin", "mean_energy_kev": spec.mean_energy_kev}
        if as_json:
            sys.stdout.write(json.dumps(payload) + "\n")
        else:
            Console().print(f"{kvp:g} kV, {power_w:g} W, filter {escape(filter_)}: mean energy "
                            f"{spec.mean_energy_kev:.2f} keV, {spec.total_photons_per_s_sr:.3e} photons/s/sr")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def scenarios(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a list of objects)."),
) -> None:
    """List the built-in scenarios: a table on a terminal, tab-separated lines (a header, then
    one line per scenario, its name first) when the output goes to a pipe or a file.

    Example: `xrm-twin scenarios`, or `xrm-twin scenarios --json`
    """
    try:
        from twin.plan import resolve_geometry
        from twin.resources import estimate, gib
        from twin.scan_time import scenario_scan_time_s
        from twin.scenario import builtin_names, load_scenario

        rows = []
        for name in builtin_names():
            s = load_scenario(name)
            g = resolve_geometry(s)
            est = estimate(s)
            rows.append({"name": name, "phantom": s.phantom["kind"], "kvp": s.source["kvp"],
                         "filter": str(s.source["filter"]), "voxel_size_um": g.voxel_size_um,
                         "projections": g.n_views, "pixels": [g.cols, g.rows],
                         "peak_memory_bytes": int(est["peak_bytes"]), "cpu_time_s": est["cpu_time_s"],
                         "scan_time_s": scenario_scan_time_s(s.geometry, s.detector),
                         "description": s.description})
        header = ("name", "phantom", "kV", "filter", "voxel um", "views", "pixels", "memory (full)",
                  "CPU time (full)", "scan time", "description")
        cells = [(r["name"], r["phantom"], f"{r['kvp']:g}", r["filter"], f"{r['voxel_size_um']:.2f}",
                  str(r["projections"]), f"{r['pixels'][0]}x{r['pixels'][1]}", gib(r["peak_memory_bytes"]),
                  f"{r['cpu_time_s'] / 3600:.1f} h", f"{r['scan_time_s'] / 3600:.1f} h", r["description"])
                 for r in rows]
        if as_json:
            sys.stdout.write(json.dumps(rows) + "\n")
        elif sys.stdout.isatty():
            from rich.table import Table

            table = Table(*header)
            for c in cells:
                table.add_row(*map(escape, c))
            Console().print(table)
        else:  # a pipe or a file: whole names, one line each, nothing cut to a terminal's width
            for c in [header] + cells:
                sys.stdout.write("\t".join(v.replace("\t", " ").replace("\n", " ") for v in c) + "\n")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


def _section_overrides(texts: List[str], section: str) -> dict:
    """``--set`` values of one section as a nested dict (``--set a.b=1`` -> {"a": {"b": 1}}).

    A leading ``section.`` is optional: ``--set recon.denoise=nlm`` = ``--set denoise=nlm``.
    """
    from twin.scenario import parse_override

    out: dict = {}
    for text in texts:
        path, value = parse_override(text)
        if len(path) > 1 and path[0] == section:
            path = path[1:]
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise XrmInputError(f"--set {text}: {k} is not a table")
        node[path[-1]] = value
    return out


def _floats(text: Optional[str], key: str, n: int = 3):
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise XrmInputError(f"{key} must be {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n:
        raise XrmInputError(f"{key} must be {n} comma-separated numbers, got {text!r}")
    return vals


@app.command()
def phantom(
    kind: str = typer.Argument(..., help="coin_na_ion, pouch_lfp or nimh_aaa."),
    voxel_um: float = typer.Option(..., "--voxel-um", help="Voxel size, um."),
    out: Path = typer.Option(..., "--out", "-o", help="truth.h5 to write."),
    voi_center_mm: Optional[str] = typer.Option(None, "--voi-center-mm", help="x,y,z of the VOI centre, mm."),
    voi_size_mm: Optional[str] = typer.Option(None, "--voi-size-mm", help="a,b,c size of the VOI, mm."),
    set_: List[str] = typer.Option([], "--set", help="Phantom parameter: --set cycles=120"),
    seed: int = typer.Option(0, help="Seed of the microstructure."),
) -> None:
    """Write a phantom's ground truth (`truth.h5`) for any voxel size and VOI.

    Example: `xrm-twin phantom nimh_aaa --voxel-um 54 --out truth.h5`
    """
    try:
        import phantoms
        from twin.truth_io import write_truth

        params = _section_overrides(set_, "phantom")
        ph = phantoms.build(kind, params, seed=seed)
        grid, defects, instances = ph.truth(voxel_um, _floats(voi_center_mm, "--voi-center-mm"),
                                            _floats(voi_size_mm, "--voi-size-mm"))
        write_truth(out, grid, defects, instances, attrs={"phantom": kind, "seed": seed,
                                                          "params": json.dumps(params)})
        if not _state["quiet"]:
            console.print(f"wrote {out}: {grid.labels.shape[::-1]} voxels (x, y, z) of {voxel_um:g} um, "
                          f"{len(defects)} defects")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def run(
    scenario: str = typer.Argument(..., help="Scenario TOML path or built-in name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    preview: bool = typer.Option(False, help="Coarser, faster version (stated in the report)."),
    arch: str = typer.Option("auto", help=ARCH_HELP),
    seed: Optional[int] = typer.Option(None, help="Override the scenario's seed."),
    set_: List[str] = typer.Option([], "--set", help="Override a key: --set source.kvp=120"),
    force: bool = typer.Option(False, help="Overwrite a non-empty output folder."),
) -> None:
    """Run the whole pipeline: simulate, reconstruct, measure, score, report.

    SCENARIO may also be a plan file (`.pkl`, from `xrm-twin plan`), e.g. on a GPU node.

    Example: `xrm-twin run nimh-zoom --preview --out runs/nimh-zoom`
    """
    try:
        from twin.run import prepare_run, run_plan, run_prepared
        from twin.scenario import load_raw, load_scenario
        from twin.scout_zoom import check_scout_zoom, is_scout_zoom, run_scout_zoom

        overrides = list(set_) + ([f"seed={seed}"] if seed is not None else [])
        raw, _origin = (None, None) if scenario.endswith(".pkl") else load_raw(scenario)
        if raw is None:
            from twin.planfile import load_plan
            from twin.runtime import init_taichi

            if overrides or preview:
                raise XrmInputError("--set, --seed and --preview do not apply to a resolved plan "
                                    "file (give them to `xrm-twin plan`)")
            from twin.simulate import check_plan_fits

            _check_out(out, force)
            init_taichi(arch)
            plan = load_plan(scenario)
            check_plan_fits(plan, out)
            _prepare_out(out, force)
            report = run_plan(plan, out, arch=arch, quiet=_state["quiet"])
        elif is_scout_zoom(raw):
            if overrides:
                raise XrmInputError("--set applies to single scans; in a scout-and-zoom file give "
                                    "set = [...] in [scout] or [zoom]")
            _check_out(out, force)
            check_scout_zoom(raw, Path(_origin).parent)  # both stages, before the folder
            _prepare_out(out, force)
            report = run_scout_zoom(raw, out, preview=preview, arch=arch, quiet=_state["quiet"],
                                    base_dir=Path(_origin).parent)
        else:
            spec = load_scenario(scenario, overrides)  # keys, types and the [recon] values
            _check_out(out, force)
            prepared = prepare_run(spec, preview=preview, arch=arch, out_dir=out)  # values, memory, disk
            _prepare_out(out, force)
            report = run_prepared(prepared, out, quiet=_state["quiet"])
        for w in report.get("warnings", []):
            console.print(f"[yellow]warning:[/] {escape(w)}")
        if not _state["quiet"]:
            t = report["timing_s"]
            console.print(f"report: {out / 'report.html'} (simulate {t['simulate']:.0f} s, "
                          f"reconstruct {t['reconstruct']:.0f} s, measure {t['measure']:.0f} s)")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def reconstruct(
    source: Path = typer.Argument(..., help="A run folder (with projections.h5) or an NXtomo file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for recon.h5."),
    arch: str = typer.Option("auto", help=ARCH_HELP),
    set_: List[str] = typer.Option([], "--set", help="Reconstruction option: --set algorithm=sirt"),
    tiff: bool = typer.Option(False, help="Also write recon.tif (ImageJ/Dragonfly/Avizo)."),
) -> None:
    """Reconstruct projections into `recon.h5` (linear attenuation, 1/mm).

    Example: `xrm-twin reconstruct runs/zoom --out runs/zoom --set denoise=nlm --tiff`
    """
    try:
        from twin.reconstruct import reconstruct_nxtomo

        path = source / "projections.h5" if source.is_dir() else source
        opts = _section_overrides(set_, "recon")
        if tiff:
            opts["tiff"] = True
        res = reconstruct_nxtomo(path, out, options=opts, arch=arch, quiet=_state["quiet"])
        if not _state["quiet"]:
            console.print(f"wrote {out / 'recon.h5'}: {res['shape_zyx'][::-1]} voxels of "
                          f"{res['voxel_size_um']:.3f} um in {res['timing_s']['reconstruct']:.1f} s")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def measure(
    volume: Path = typer.Argument(..., help="recon.h5 (segmented here) or an HDF5 with /labels."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for report.json."),
    truth: Optional[Path] = typer.Option(None, help="truth.h5 of the phantom, to score against."),
    classes: Optional[int] = typer.Option(None, help="Number of phases for multi-Otsu."),
    thickness_map: Optional[list[str]] = typer.Option(
        None, "--thickness-map", help="Component whose thickness map to write (TIFF, PLY, figure); "
        "repeatable. Default: the one of highest surface-to-volume ratio."),
    no_3d: bool = typer.Option(False, "--no-3d", help="Skip the 3-D rendering of the components."),
    smooth_sigma_vox: float = typer.Option(1.0, help="Gaussian pre-smoothing for the segmentation, "
                                           "voxels (0.5 after a denoiser)."),
    arch: str = typer.Option("auto", help=ARCH_HELP + " Runs the distance transforms, local "
                             "thickness and crack filters."),
) -> None:
    """Segment and measure a volume; with `--truth`, score it (report.json, report.html, figures).

    Example: `xrm-twin measure runs/zoom/recon.h5 --truth runs/zoom/truth.h5 --out runs/zoom/m`
    """
    try:
        from twin.runtime import init_taichi

        init_taichi(arch)  # before any work: --arch cuda without a GPU is an error here
        from recon.io import read_volume
        from twin.measure import measure as measure_volume
        from twin.measure_outputs import write_measure_outputs
        from twin.report import write_report
        from twin.truth_io import read_truth

        data = read_volume(volume)
        t = read_truth(truth, instances=False) if truth is not None else None
        out.mkdir(parents=True, exist_ok=True)
        figures = []
        attrs = data.get("attrs", {})
        if "volume" in data:
            kvp = attrs.get("kvp")  # bounds the contrast model's effective energy, as in `run`
            res = measure_volume(data["volume"], data["voxel_size_um"], data["origin_mm"], truth=t,
                                 classes=classes, thickness_maps=thickness_map or None,
                                 smooth_sigma_vox=smooth_sigma_vox, kvp=None if kvp is None else float(kvp),
                                 undenoised=data.get("volume_undenoised"))
            vs = float(np.asarray(data["voxel_size_um"]).ravel()[0])
            figures = write_measure_outputs(out, res, data["volume"], vs, data["origin_mm"],
                                            title=volume.stem, render_3d=not no_3d)
            from recon.io import write_segmentation

            write_segmentation(out / "segmentation.h5", res["labels"],
                               {int(k): v for k, v in res["segmentation"]["components"].items()},
                               vs, data["origin_mm"], defects=res.get("defect_map"))
            for key in ("labels", "truth_labels", "truth_names", "thickness_maps", "defect_map"):
                res.pop(key, None)
        else:
            from recon.metrology import measure_components
            from recon.segmentation import present_labels

            names = {k: v for k, v in data.get("names", {}).items() if k > 0} or \
                {int(k): f"label{int(k)}" for k in present_labels(data["labels"]) if k > 0}
            vs = float(np.asarray(data["voxel_size_um"]).ravel()[0])
            res = {"metrology": measure_components(data["labels"], vs, names, allow_missing=True)}
        res["source_file"] = str(volume)
        res.update(_provenance_keys(attrs, float(np.asarray(data["voxel_size_um"]).ravel()[0])))
        write_report(out, res, figures)
        if not _state["quiet"]:
            console.print(f"wrote {out / 'report.json'}: {len(res['metrology'])} components")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


def _provenance_keys(attrs: dict, voxel_size_um: float) -> dict:
    """report.json's ``scenario``, ``geometry`` and ``source`` keys from a recon.h5's attributes
    (written by ``xrm-twin reconstruct``; only what the file says)."""
    out: dict = {"geometry": {"voxel_size_um": voxel_size_um}}
    if "magnification" in attrs:
        out["geometry"]["magnification"] = float(attrs["magnification"])
    if attrs.get("scenario"):
        out["scenario"] = str(attrs["scenario"])
    source = {k: float(attrs[k]) for k in ("kvp", "mean_energy_kev") if k in attrs}
    if source:
        out["source"] = source
    return out


@app.command()
def compare(
    before: Path = typer.Argument(..., help="Run folder of the earlier scan (xrm-twin run)."),
    after: Path = typer.Argument(..., help="Run folder of the later scan of the same cell."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for report.json/html."),
    force: bool = typer.Option(False, help="Overwrite an existing output folder."),
) -> None:
    """Register two scans of one cell and report what changed (damage growth, change map).

    Example: `xrm-twin compare runs/zoom-0 runs/zoom-120 --out runs/ageing`
    """
    try:
        from twin.compare import compare_runs

        _check_out(out, force)
        _prepare_out(out, force)
        res = compare_runs(before, after, out)
        if not _state["quiet"]:
            g = ", ".join(f"{k} {v['growth_mm3']:+.4g} mm3" for k, v in res["damage_growth"].items())
            console.print(f"report: {out / 'report.html'} (growth: {g or 'none detected'})")
    except BaseException as exc:  # noqa: BLE001
        _fail(exc)


def _register_subcommands() -> None:
    """Commands that live in their own packages (datasets, optimisation, CTSimU)."""
    from twin.ctsimu.cli import ctsimu_app
    from twin.datasets.cli import dataset
    from twin.optimise.cli import optimise, sweep

    app.add_typer(ctsimu_app, name="ctsimu")
    app.command("dataset")(dataset)
    app.command("sweep")(sweep)
    app.command("optimise")(optimise)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
